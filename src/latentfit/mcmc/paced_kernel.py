"""The compiled CPU kernel of NUTS with every chain at its own pace (mcmc/paced.py): one leaf
of every chain's tree, after the batched leapfrog step that made it.

A chain's tree is built leaf by leaf, as Stan's iterative form of its recursion: the leaf's
weight exp(H0 - H) and divergence; the multinomial draw inside the subtree (progressive
uniform sampling, which draws each leaf with probability proportional to its weight, as the
recursive draw does); the U-turn check of every node the leaf closes, with Stan's two checks
across each node's halves (Betancourt 2017; Stan's ``base_nuts::build_tree``), from
checkpoints per level of the subtree's cumulative momentum, p# and momentum at the first leaf
of each open node (``ck``, (c, max_depth, 3p)) and the p# and momentum of the last leaf of the
node that closed last at each level (``last``, (c, max_depth, 2p)); at a full subtree, biased
progressive sampling into the trajectory and the six checks across the join (as
``kernels.merge_subtree``); at a trajectory's end, the draw and its statistics recorded at the
chain's own transition count, the step size's dual averaging (Stan's, per chain, while the
warm-up adapts), a new momentum and the next direction. Every chain's arrays are written in
place; ``cu, cg, cp, clp, e, half`` are the next leapfrog step's inputs.

Op by op in torch the same bookkeeping is ~360 tensor operations, 220-610 µs a leaf
(benchmarks/README.md); here 2-10 µs.
"""

from __future__ import annotations

import math

import numpy as np

from latentfit._compiled import jit
from latentfit._kernel_ops import minimum

__all__ = ["leaf", "start", "warm", "warm_args"]


@jit
def leaf(
    u, g, p, lp, invd, inv, dense, cholt, eps, seed, t0,
    H0, k, j, S, ck, last, lws, dsub, lwt, draw, rho, ends, side, depth, n_leap, sm, maxd,
    da, adapt, delta,
    cu, cg, cp, clp, e, half,
    rec_u, rec_g, rec_lp, rec_stat, rec_div, t_c,
):  # fmt: skip
    """One leaf of every chain. Leaf: ``u, g, p`` (c, p), ``lp`` (c,). Metric: ``invd`` (c, p)
    diagonal or ``inv`` (c, p, p) dense (``dense``) with ``cholt`` (c, p, p) the transposed
    Cholesky factor of ``inv``. ``eps`` (c,) step sizes. Random numbers: ``uniform(seed,
    chain, t0 + transition, slot)``. Tree: ``H0`` (c,) the start's energy, ``k``, ``j`` (c,)
    the leaf's index in its subtree and the subtree's depth, ``S`` (c, p) the subtree's
    momentum sum,
    ``ck``/``last`` (above), ``lws`` (c,) the subtree's log-weight, ``dsub`` (c, 3p + 1) its
    draw, ``lwt``/``draw``/``rho`` the trajectory's, ``ends`` (c, 2, 4p + 1) its ends (u, g, p,
    p#, lp; backward, forward), ``side`` (c,) the end being extended, ``depth``, ``n_leap``,
    ``sm`` (summed acceptance) (c,). ``da`` (c, 4): dual averaging's mu, s_bar, x_bar, count,
    updated where ``adapt``. Records (c, n, ...) at ``t_c`` (c,): position, log-density,
    statistics (accept_stat, n_leapfrog, tree_depth, diverging, energy), divergent leaf, and the
    draw's gradient (``rec_g``: where a chain stands after its m-th draw, to go on from).
    Returns the fewest transitions any chain has made."""
    c, d = u.shape
    D = ck.shape[1]
    n = rec_u.shape[1]
    ps = np.empty(d)
    p0 = np.empty(d)
    v0 = np.empty(d)
    for i in range(c):
        for a in range(d):  # p# = M^-1 p
            if dense:
                s = 0.0
                for b in range(d):
                    s += p[i, b] * inv[i, b, a]
                ps[a] = s
            else:
                ps[a] = p[i, a] * invd[i, a]
        K = 0.0
        for a in range(d):
            K += p[i, a] * ps[a]
        lw = lp[i] - 0.5 * K
        if lw != lw:  # NaN: a divergence
            lw = -np.inf
        logw = H0[i] + lw
        div = logw < -1000.0
        n_leap[i] += 1
        sm[i] += math.exp(minimum(logw, 0.0))
        lws1 = np.logaddexp(lws[i], logw)
        nl = n_leap[i]  # leaves so far in this transition, this one included
        tt = t0 + t_c[i]
        # the subtree's draw: this leaf with probability w / (summed w); a leaf of log-density
        # +inf (a density unbounded there) takes all the weight, as the batched draw's argmax
        # does, so that the run is refused where it is recorded (sampler.check_bounded)
        if lws1 == np.inf:
            take = 1.0 if logw == np.inf else 0.0
        else:
            take = math.exp(logw - lws1)
        if uniform(seed, i, tt, 4 * nl) < take:
            for a in range(d):
                dsub[i, a] = u[i, a]
                dsub[i, d + a] = g[i, a]
                dsub[i, 2 * d + a] = p[i, a]
            dsub[i, 3 * d] = lp[i]
        kk = k[i]
        jj = j[i]
        for m in range(D):  # the nodes that start at this leaf
            if kk & ((1 << m) - 1) == 0:
                for a in range(d):
                    ck[i, m, a] = S[i, a]
                    ck[i, m, d + a] = ps[a]
                    ck[i, m, 2 * d + a] = p[i, a]
        for a in range(d):
            S[i, a] += p[i, a]
        turn = False
        for m in range(1, jj + 1):  # the nodes that close at this leaf, smallest first
            if (kk + 1) & ((1 << m) - 1) != 0:
                break
            c1 = c2 = c3 = c4 = c5 = c6 = 0.0
            for a in range(d):
                rn = S[i, a] - ck[i, m, a]  # the node's momentum
                ra = ck[i, m - 1, a] - ck[i, m, a] + ck[i, m - 1, 2 * d + a]  # left + right's first
                rb = S[i, a] - ck[i, m - 1, a] + last[i, m - 1, d + a]  # right + left's last
                c1 += rn * ck[i, m, d + a]
                c2 += rn * ps[a]
                c3 += ra * ck[i, m, d + a]
                c4 += ra * ck[i, m - 1, d + a]
                c5 += rb * last[i, m - 1, a]
                c6 += rb * ps[a]
            if not (c1 > 0 and c2 > 0 and c3 > 0 and c4 > 0 and c5 > 0 and c6 > 0):
                turn = True
        for m in range(jj + 1):
            if (kk + 1) & ((1 << m) - 1) != 0:
                break
            for a in range(d):
                last[i, m, a] = ps[a]
                last[i, m, d + a] = p[i, a]
        done = kk + 1 == (1 << jj) and not (turn or div)
        end = turn or div
        if done:  # the subtree joins the trajectory
            if uniform(seed, i, tt, 4 * nl + 1) < math.exp(minimum(lws1 - lwt[i], 0.0)):
                for a in range(3 * d + 1):
                    draw[i, a] = dsub[i, a]
            lwt[i] = np.logaddexp(lwt[i], lws1)
            sd = side[i]
            t1 = t2 = t3 = t4 = t5 = t6 = 0.0
            for a in range(d):
                rnew = rho[i, a] + S[i, a]
                rl = rho[i, a] + ck[i, jj, 2 * d + a]
                rr = S[i, a] + ends[i, sd, 2 * d + a]
                far = ends[i, 1 - sd, 3 * d + a]
                t1 += rnew * far
                t2 += rnew * ps[a]
                t3 += rl * far
                t4 += rl * ck[i, jj, d + a]
                t5 += rr * ends[i, sd, 3 * d + a]
                t6 += rr * ps[a]
                rho[i, a] = rnew
            for a in range(d):
                ends[i, sd, a] = u[i, a]
                ends[i, sd, d + a] = g[i, a]
                ends[i, sd, 2 * d + a] = p[i, a]
                ends[i, sd, 3 * d + a] = ps[a]
            ends[i, sd, 4 * d] = lp[i]
            depth[i] += 1
            ok = t1 > 0 and t2 > 0 and t3 > 0 and t4 > 0 and t5 > 0 and t6 > 0
            end = (not ok) or depth[i] >= maxd
        go = done and not end
        if end:
            accept = sm[i] / n_leap[i]
            t = t_c[i]
            if t < n:
                kd = 0.0  # the draw's energy
                for a in range(d):
                    if dense:
                        s = 0.0
                        for b in range(d):
                            s += draw[i, 2 * d + b] * inv[i, b, a]
                    else:
                        s = draw[i, 2 * d + a] * invd[i, a]
                    kd += draw[i, 2 * d + a] * s
                for a in range(d):
                    rec_u[i, t, a] = draw[i, a]
                    rec_g[i, t, a] = draw[i, d + a]
                    if div:
                        rec_div[i, t, a] = u[i, a]
                rec_lp[i, t] = draw[i, 3 * d]
                rec_stat[i, t, 0] = accept
                rec_stat[i, t, 1] = n_leap[i]
                rec_stat[i, t, 2] = depth[i]
                rec_stat[i, t, 3] = 1.0 if div else 0.0
                rec_stat[i, t, 4] = 0.5 * kd - draw[i, 3 * d]
            t_c[i] = t + 1
            if adapt and t < n:  # Stan's dual averaging of the step size
                da[i, 3] += 1.0
                count = da[i, 3]
                eta = 1.0 / (count + 10.0)
                da[i, 1] = (1.0 - eta) * da[i, 1] + eta * (delta - minimum(accept, 1.0))
                x = da[i, 0] - da[i, 1] * math.sqrt(count) / 0.05
                w = count**-0.75
                da[i, 2] = (1.0 - w) * da[i, 2] + w * x
                eps[i] = math.exp(x)
            begin(
                i,
                seed,
                t0 + t_c[i],
                dense,
                invd,
                inv,
                cholt,
                eps,
                H0,
                draw,
                ends,
                rho,
                lwt,
                depth,
                n_leap,
                sm,
                j,
                side,
                lws,
                k,
                S,
                cu,
                cg,
                cp,
                clp,
                e,
                half,
                p0,
                v0,
            )
        elif go:  # the next subtree: its direction, the end it grows from
            j[i] = jj + 1
            side[i] = 1 if uniform(seed, i, tt, 4 * nl + 2) > 0.5 else 0
            _from_end(i, ends, side, eps, lws, k, S, cu, cg, cp, clp, e, half)
        elif not end:
            lws[i] = lws1
            k[i] = kk + 1
            for a in range(d):
                cu[i, a] = u[i, a]
                cg[i, a] = g[i, a]
                cp[i, a] = p[i, a]
            clp[i] = lp[i]
    fewest = t_c[0]
    for i in range(1, c):
        if t_c[i] < fewest:
            fewest = t_c[i]
    return fewest


@jit
def start(
    seed, t0, dense, invd, inv, cholt, eps, H0, draw, ends, rho, lwt, depth, n_leap, sm, j,
    side, lws, k, S, cu, cg, cp, clp, e, half,
):  # fmt: skip
    """Every chain's transition ``t0`` begun from ``draw``'s position, gradient and
    log-density (c, 3p + 1), as ``leaf`` begins the next one at a transition's end."""
    d = S.shape[1]
    p0 = np.empty(d)
    v0 = np.empty(d)
    for i in range(S.shape[0]):
        begin(i, seed, t0, dense, invd, inv, cholt, eps, H0, draw, ends, rho, lwt, depth,
              n_leap, sm, j, side, lws, k, S, cu, cg, cp, clp, e, half, p0, v0)  # fmt: skip


@jit
def begin(
    i, seed, t, dense, invd, inv, cholt, eps, H0, draw, ends, rho, lwt, depth, n_leap, sm, j,
    side, lws, k, S, cu, cg, cp, clp, e, half, p0, v0,
):  # fmt: skip
    """Chain ``i``'s transition ``t`` begun at its draw: a momentum p0 ~ N(0, M) (M^-1 =
    ``inv``: the solve of ``cholt`` p0 = z, or z / sqrt(invd)), both ends of the trajectory
    there, its first direction. ``p0, v0`` (p,) are scratch."""
    d = S.shape[1]
    for a in range(0, d, 2):  # Box-Muller: two normals from two uniforms
        r = math.sqrt(-2.0 * math.log(uniform(seed, i, t, MOMENTUM + a)))
        w = 2.0 * math.pi * uniform(seed, i, t, MOMENTUM + a + 1)
        p0[a] = r * math.cos(w)
        if a + 1 < d:
            p0[a + 1] = r * math.sin(w)
    if dense:
        for a in range(d - 1, -1, -1):
            s = p0[a]
            for b in range(a + 1, d):
                s -= cholt[i, a, b] * p0[b]
            p0[a] = s / cholt[i, a, a]
        for a in range(d):
            s = 0.0
            for b in range(d):
                s += p0[b] * inv[i, b, a]
            v0[a] = s
    else:
        for a in range(d):
            p0[a] = p0[a] / math.sqrt(invd[i, a])
            v0[a] = p0[a] * invd[i, a]
    k0 = 0.0
    for a in range(d):
        k0 += p0[a] * v0[a]
    dlp = draw[i, 3 * d]
    H0[i] = 0.5 * k0 - dlp
    for sd in range(2):
        for a in range(d):
            ends[i, sd, a] = draw[i, a]
            ends[i, sd, d + a] = draw[i, d + a]
            ends[i, sd, 2 * d + a] = p0[a]
            ends[i, sd, 3 * d + a] = v0[a]
        ends[i, sd, 4 * d] = dlp
    for a in range(d):
        rho[i, a] = p0[a]
        draw[i, 2 * d + a] = p0[a]
    lwt[i] = 0.0
    depth[i] = 0
    n_leap[i] = 0
    sm[i] = 0.0
    j[i] = 0
    side[i] = 1 if uniform(seed, i, t, 2) > 0.5 else 0
    _from_end(i, ends, side, eps, lws, k, S, cu, cg, cp, clp, e, half)


@jit
def _from_end(i, ends, side, eps, lws, k, S, cu, cg, cp, clp, e, half):
    """Chain ``i``'s next subtree begun at the end ``side``: the leapfrog's inputs there."""
    d = S.shape[1]
    lws[i] = -np.inf
    k[i] = 0
    sd = side[i]
    for a in range(d):
        S[i, a] = 0.0
        cu[i, a] = ends[i, sd, a]
        cg[i, a] = ends[i, sd, d + a]
        cp[i, a] = ends[i, sd, 2 * d + a]
    clp[i] = ends[i, sd, 4 * d]
    e[i, 0] = eps[i] if sd == 1 else -eps[i]
    half[i, 0] = 0.5 * e[i, 0]


#: the slots of a transition's random numbers: 4 per leaf (the subtree's draw, the
#: trajectory's draw, the next direction), the momentum's from here
MOMENTUM = 1 << 40


@jit
def uniform(seed, chain, t, slot):
    """A uniform in (0, 1) for ``(seed, chain, t, slot)``: splitmix64's finaliser applied
    along the key (a counter-based generator, as Salmon et al. 2011's: every chain's numbers
    depend on its own transitions only, not on the batch, its pace or where a run resumed)."""
    x = _mix(np.uint64(seed) + np.uint64(chain) * np.uint64(0x9E3779B97F4A7C15))
    x = _mix(x + np.uint64(t))
    x = _mix(x + np.uint64(slot))
    return (np.float64(x >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@jit
def _mix(x):
    """splitmix64's finaliser (Steele et al. 2014): a bijection of 64-bit words."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def warm() -> None:
    """Both kernels compiled, or loaded from numba's cache, for the argument types that
    ``paced.run_paced`` gives them (any model, any dtype: float64 arrays, int64 counters):
    one chain of two parameters begun and stepped one leaf. ``latentfit compile`` and
    paced_compile.py's child call it."""
    begun, stepped = warm_args()
    start(*begun)
    leaf(*stepped)


def warm_args() -> tuple[tuple, tuple]:
    """Arguments of ``start`` and ``leaf`` of the types ``paced.run_paced`` gives them."""
    c, d, D = 1, 2, 3

    def z(*shape, dtype=np.float64):
        return np.zeros(shape, dtype=dtype)

    k, j, side, depth, n_leap, t_c = (z(c, dtype=np.int64) for _ in range(6))
    eps, invd, inv, cholt = np.ones(c), np.ones((c, d)), z(1, 1, 1), z(1, 1, 1)
    H0, S, ck, last, lws, dsub = (
        z(c),
        z(c, d),
        z(c, D, 3 * d),
        z(c, D, 2 * d),
        z(c),
        z(c, 3 * d + 1),
    )
    lwt, draw, rho, ends, sm = z(c), z(c, 3 * d + 1), z(c, d), z(c, 2, 4 * d + 1), z(c)
    cu, cg, cp, clp, e, half = z(c, d), z(c, d), z(c, d), z(c), z(c, 1), z(c, 1)
    seed = np.uint64(0)
    begun = (seed, 0, False, invd, inv, cholt, eps, H0, draw, ends, rho, lwt, depth, n_leap,
             sm, j, side, lws, k, S, cu, cg, cp, clp, e, half)  # fmt: skip
    stepped = (cu, cg, cp, clp, invd, inv, False, cholt, eps, seed, 0, H0, k, j, S, ck, last,
               lws, dsub, lwt, draw, rho, ends, side, depth, n_leap, sm, D, z(c, 4), False,
               0.8, cu, cg, cp, clp, e, half, z(c, 1, d), z(c, 1, d), z(c, 1), z(c, 1, 5),
               z(c, 1, d), t_c)  # fmt: skip
    return begun, stepped
