"""The NUTS transition against a frozen copy of itself: the bookkeeping of a doubling was
rewritten for fewer tensor operations (issue 15), and a rewrite of bookkeeping must not move a
single draw. ``_ref_nuts_transition`` below is ``nuts_transition`` as it was before that
rewrite, copied verbatim with its helpers (only renamed); both share ``_leapfrog`` and
``Metric``. Same seed, same generator stream: states and statistics must be bit-identical
(``torch.equal``, NaN where NaN), and the generator must end in the same state (the same
random numbers were drawn, in the same order).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from latentfit.mcmc import Target, kernels
from latentfit.mcmc.kernels import (
    MAX_DELTA_H,
    Metric,
    State,
    TransitionStats,
    _leapfrog,
    nuts_transition,
)

F64 = torch.float64

# ---------------------------------------------------------------------------------------------
# the reference: kernels.py's nuts_transition and helpers before the rewrite, frozen
# ---------------------------------------------------------------------------------------------


def _ref_energy(lp: torch.Tensor, kinetic: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(kinetic - lp, nan=math.inf, posinf=math.inf, neginf=-math.inf)


def _ref_criterion(p_sharp_minus, p_sharp_plus, rho) -> torch.Tensor:
    """The generalised no-U-turn criterion: True while the trajectory keeps going."""
    return ((p_sharp_plus * rho).sum(-1) > 0) & ((p_sharp_minus * rho).sum(-1) > 0)


_ref_NODE_CHUNK = 1 << 22  # elements of one (a, nodes, 6, d) block of the subtree checks


def _ref_subtree_nodes(L: int, device) -> tuple[torch.Tensor, ...]:
    """Every internal node of a subtree of ``L`` leaves (``L - 1`` of them, all levels): the
    leaves whose p# enter its three checks (N, 6), the cumulative-sum rows bounding the
    matching rho (N, 6) twice, and the leaf after which it is checked (N,)."""
    key = (L, str(device))
    if key not in _ref_NODE_CACHE:
        ps, hi, lo, last = [], [], [], []
        s = 2
        while s <= L:
            h = s // 2
            for b in range(0, L, s):
                e = b + s - 1
                # whole node; left half + first of right; last of left + right half
                ps.append([b, e, b, b + h, b + h - 1, e])
                hi.append([e + 1, e + 1, b + h + 1, b + h + 1, e + 1, e + 1])
                lo.append([b, b, b, b, b + h - 1, b + h - 1])
                last.append(e)
            s *= 2
        _ref_NODE_CACHE[key] = tuple(
            torch.tensor(v, dtype=torch.long, device=device) for v in (ps, hi, lo, last)
        )
    return _ref_NODE_CACHE[key]


_ref_NODE_CACHE: dict = {}


def _ref_subtree_turn_time(P: torch.Tensor, PS: torch.Tensor) -> torch.Tensor:
    """For leaves in build order (a, L, p), the index of the leaf after which the recursive
    build first fails a U-turn check (L when none fails). A node covering leaves [b, b+s) is
    checked once its last leaf is built, on the node and across the join of its two halves.

    All nodes of all levels are checked at once: each rho is a difference of cumulative sums of
    the momenta, so the whole subtree costs a dozen tensor operations whatever its depth."""
    a, L, d = P.shape
    if L == 1:
        return torch.full((a,), L, dtype=torch.long, device=P.device)
    ps_i, hi, lo, last = _ref_subtree_nodes(L, P.device)
    C = torch.cat([P.new_zeros(a, 1, d), P.cumsum(1)], 1)  # (a, L + 1, p)
    n = ps_i.shape[0]
    step = max(1, _ref_NODE_CHUNK // max(1, a * 6 * d))
    turn = torch.full((a,), L, dtype=torch.long, device=P.device)
    for k in range(0, n, step):
        sl = slice(k, k + step)
        rho = C[:, hi[sl]] - C[:, lo[sl]]  # (a, N, 6, p)
        ok = ((PS[:, ps_i[sl]] * rho).sum(-1) > 0).all(-1)  # (a, N)
        turn = torch.minimum(turn, torch.where(ok, L, last[sl]).min(1).values)
    return turn


def _ref_nuts_transition(
    target: Target,
    metric: Metric,
    state: State,
    step_size: torch.Tensor,
    gen: torch.Generator,
    max_depth: int = 10,
) -> tuple[State, TransitionStats]:
    """One multinomial NUTS transition of every chain (Stan's ``base_nuts::transition``).

    All chains step together: a chain whose trajectory has ended takes steps of size zero (it
    stays at a point already evaluated) and its results are masked out, so a doubling costs the
    same handful of tensor operations for 1 chain or 1,000 and asks the device one question
    (is any chain still growing?)."""
    c, d = state.u.shape
    dev, dt = state.u.device, state.u.dtype
    p0 = metric.sample(gen)  # (c, p)
    v0 = metric.velocity(p0)
    H0 = _ref_energy(state.log_prob, 0.5 * (p0 * v0).sum(-1))  # (c,)
    # the two ends of the trajectory: position, log-density, gradient, momentum, p#
    fu, flp, fg, fp, fps = state.u, state.log_prob, state.grad, p0, v0
    bu, blp, bg, bp, bps = fu, flp, fg, fp, fps
    rho = p0
    log_w = torch.zeros(c, dtype=dt, device=dev)  # log of the summed weights exp(H0 - H)
    su, slp, sg, sp = fu, flp, fg, p0  # the current draw
    depth = torch.zeros(c, dtype=torch.long, device=dev)
    n_leap = torch.zeros(c, dtype=torch.long, device=dev)
    sum_metro = torch.zeros(c, dtype=dt, device=dev)
    diverging = torch.zeros(c, dtype=torch.bool, device=dev)
    div_u = torch.full((c, d), math.nan, dtype=dt, device=dev)
    active = torch.ones(c, dtype=torch.bool, device=dev)
    rows = torch.arange(c, device=dev)

    for j in range(max_depth):
        if j and not bool(active.any()):  # the one host sync of a doubling
            break
        L = 2**j
        forward = torch.rand(c, generator=gen, dtype=dt, device=dev) > 0.5  # (c,)
        f2 = forward[:, None]
        near_p, near_ps = torch.where(f2, fp, bp), torch.where(f2, fps, bps)
        far_ps = torch.where(f2, bps, fps)
        cur = State(
            torch.where(f2, fu, bu), torch.where(forward, flp, blp), torch.where(f2, fg, bg)
        )
        e = (torch.where(forward, step_size, -step_size) * active)[:, None]  # (c, 1)
        half = 0.5 * e
        p = near_p
        Us, Ps, LPs, Gs = [], [], [], []
        for _ in range(L):
            cur, p = _leapfrog(target, metric, cur, p, e, half)
            Us.append(cur.u)
            Ps.append(p)
            LPs.append(cur.log_prob)
            Gs.append(cur.grad)
        U, P = torch.stack(Us, 1), torch.stack(Ps, 1)  # (c, L, p)
        LP, G = torch.stack(LPs, 1), torch.stack(Gs, 1)  # (c, L), (c, L, p)
        PS = metric.velocity(P)
        logw = H0[:, None] - _ref_energy(LP, 0.5 * (P * PS).sum(-1))  # (c, L): log exp(H0 - H)
        leaf = torch.arange(L, device=dev)
        first_div = torch.where(logw < -MAX_DELTA_H, leaf, L).min(1).values  # (c,)
        # NaN momenta after a divergence must not hide a turn before it
        turn = _ref_subtree_turn_time(torch.nan_to_num(P), torch.nan_to_num(PS))
        # a leaf's divergence is found before the checks of the nodes it closes
        sub_div = active & (first_div < L) & (first_div <= turn)
        stop = torch.minimum(first_div, turn)
        valid = active & (stop == L)
        n_built = torch.clamp(stop + 1, max=L) * active
        n_leap += n_built
        built = leaf < n_built[:, None]
        sum_metro += torch.where(built, logw.clamp(max=0.0).exp(), 0).sum(1)
        newly = (sub_div & ~diverging)[:, None]
        div_u = torch.where(newly, U[rows, first_div.clamp(max=L - 1)], div_u)
        diverging |= sub_div

        # multinomial draw inside the subtree (Gumbel-max), then biased progressive sampling
        if L == 1:
            log_w_sub, pick = logw[:, 0], 0
        else:
            log_w_sub = torch.logsumexp(logw, 1)
            gumbel = -torch.log(-torch.log(torch.rand(c, L, generator=gen, dtype=dt, device=dev)))
            pick = torch.argmax(logw + gumbel, 1)  # (c,)
        accept = torch.exp(torch.clamp(log_w_sub - log_w, max=0.0))
        take = valid & (torch.rand(c, generator=gen, dtype=dt, device=dev) < accept)
        t2 = take[:, None]
        su, sg, sp = (
            torch.where(t2, X[rows, pick] if L > 1 else X[:, 0], x)
            for X, x in ((U, su), (G, sg), (P, sp))
        )
        slp = torch.where(take, LP[rows, pick] if L > 1 else LP[:, 0], slp)
        log_w = torch.where(valid, torch.logaddexp(log_w, log_w_sub), log_w)

        # merge: the criterion on the whole tree and across the join, six dot products at once
        rho_sub = P.sum(1)
        rho_new = rho + rho_sub
        last_ps = PS[:, -1]
        A = torch.stack([far_ps, last_ps, far_ps, PS[:, 0], near_ps, last_ps], 1)
        R = torch.stack([rho_new, rho + P[:, 0], rho_sub + near_p], 1)  # (c, 3, p)
        ok = ((A.view(c, 3, 2, d) * R[:, :, None]).sum(-1) > 0).all(-1).all(-1)
        depth += valid
        active = valid & ok

        # the new end of the trajectory (the subtree's last leaf) for chains that keep it
        vf, vb = (valid & forward)[:, None], (valid & ~forward)[:, None]
        fu, fg, fp, fps = (
            torch.where(vf, x, y)
            for x, y in zip((cur.u, cur.grad, p, last_ps), (fu, fg, fp, fps), strict=True)
        )
        bu, bg, bp, bps = (
            torch.where(vb, x, y)
            for x, y in zip((cur.u, cur.grad, p, last_ps), (bu, bg, bp, bps), strict=True)
        )
        flp = torch.where(vf[:, 0], cur.log_prob, flp)
        blp = torch.where(vb[:, 0], cur.log_prob, blp)
        rho = torch.where(valid[:, None], rho_new, rho)

    energy = _ref_energy(slp, metric.kinetic(sp))
    stats = TransitionStats(
        accept_stat=sum_metro / n_leap.clamp(min=1).to(dt),
        n_leapfrog=n_leap,
        tree_depth=depth,
        diverging=diverging,
        energy=energy,
        divergence_u=div_u,
    )
    return State(su, slp, sg), stats


# ---------------------------------------------------------------------------------------------
# the targets and the comparison
# ---------------------------------------------------------------------------------------------

_COV = torch.tensor(
    [
        [1.0, 0.9, 0.3, 0.0],
        [0.9, 1.0, 0.2, 0.1],
        [0.3, 0.2, 2.0, -0.5],
        [0.0, 0.1, -0.5, 0.5],
    ],
    dtype=F64,
)
_PREC = torch.linalg.inv(_COV)


def _gauss(x):  # (c, 4): a correlated Gaussian
    return -0.5 * ((x @ _PREC) * x).sum(-1)


def _funnel(v, x):  # (c,), (c, 4): Neal's funnel, whose neck makes large steps diverge
    return -0.5 * (v / 3) ** 2 - 0.5 * (x**2).sum(-1) * torch.exp(-v) - 2.0 * v


TARGETS = {
    "gauss": (lambda: Target(_gauss, {"x": (4,)}, vectorized=True), 4),
    "funnel": (lambda: Target(_funnel, {"v": (), "x": (4,)}, vectorized=True), 5),
}


def _metric(kind: str, c: int, d: int, g: torch.Generator) -> Metric:
    if kind == "diag":
        return Metric(torch.rand(c, d, generator=g, dtype=F64) + 0.5)
    a = torch.randn(c, d, d, generator=g, dtype=F64) / math.sqrt(d)
    return Metric(a @ a.transpose(-1, -2) + 0.5 * torch.eye(d, dtype=F64))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN matching NaN."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.isnan(), b.isnan())
        and (torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))
    )


def _run_both(name, metric_kind, c, max_depth, n_trans=12, seed=0, step_fn=None, merge_fn=None):
    """``n_trans`` transitions from the same start with both kernels, each transition from the
    same generator state; returns the new kernel's statistics for the coverage checks. The new
    kernel steps with ``step_fn`` and merges with ``merge_fn`` where given (eagerly
    otherwise)."""
    make, d = TARGETS[name]
    target = make()
    g = torch.Generator().manual_seed(seed)
    metric = _metric(metric_kind, c, d, g)
    # one step size per chain, from small (deep trees) to large (shallow, diverging)
    step = torch.linspace(0.08, 1.6, c, dtype=F64) if c > 1 else torch.tensor([0.3], dtype=F64)
    u = torch.randn(c, d, generator=g, dtype=F64)
    state = State(u, *target.log_prob_and_grad(u))
    seen = []
    for t in range(n_trans):
        g_ref = torch.Generator().manual_seed(1000 * seed + t)
        g_new = torch.Generator().manual_seed(1000 * seed + t)
        ref_state, ref_stats = _ref_nuts_transition(target, metric, state, step, g_ref, max_depth)
        new_state, new_stats = nuts_transition(
            target, metric, state, step, g_new, max_depth, step_fn, merge_fn
        )
        for field, x, y in zip(State._fields, new_state, ref_state, strict=True):
            assert _same(x, y), f"transition {t}: state.{field} differs"
        for field, x, y in zip(TransitionStats._fields, new_stats, ref_stats, strict=True):
            assert _same(x, y), f"transition {t}: stats.{field} differs"
        assert torch.equal(g_new.get_state(), g_ref.get_state()), f"transition {t}: stream"
        seen.append(new_stats)
        state = new_state
    return seen


@pytest.mark.parametrize("metric_kind", ["diag", "dense"])
@pytest.mark.parametrize("c", [1, 4, 7])
@pytest.mark.parametrize("name", ["gauss", "funnel"])
def test_new_kernel_draws_exactly_what_the_old_one_drew(name, metric_kind, c):
    seen = _run_both(name, metric_kind, c, max_depth=6)
    depth = torch.stack([s.tree_depth for s in seen])  # (n_trans, c)
    if c > 1:
        # chains end their trajectories at different doublings within one transition
        assert bool((depth.max(1).values > depth.min(1).values).any())
    if name == "funnel" and c > 1:
        assert bool(torch.stack([s.diverging for s in seen]).any())


@pytest.mark.parametrize("metric_kind", ["diag", "dense"])
def test_new_kernel_matches_when_trees_saturate_or_diverge_at_the_last_doubling(metric_kind):
    # funnel, two doublings at most: divergences in the last doubling a transition may build
    seen = _run_both("funnel", metric_kind, 7, max_depth=2, n_trans=20, seed=2)
    last = torch.stack([s.diverging & (s.n_leapfrog > 1) for s in seen])
    assert bool(last.any())


@pytest.mark.parametrize("metric_kind", ["diag", "dense"])
def test_new_kernel_matches_when_trees_saturate(metric_kind):
    # tiny steps on the Gaussian: no U-turn within three doublings, every tree saturates
    seen = _run_both("gauss", metric_kind, 4, max_depth=3, seed=1)
    depth = torch.stack([s.tree_depth for s in seen])
    assert bool((depth == 3).any())


@pytest.mark.parametrize("rows_merged", [True, False])
@pytest.mark.parametrize("metric_kind", ["diag", "dense"])
def test_doublings_of_few_growing_chains_step_only_them_and_draw_the_same(
    metric_kind, rows_merged, monkeypatch
):
    # a step that offers steps for fewer chains (narrow.py): the eager step, which takes any
    # number of rows; deep doublings where at most half of the 16 chains grow step only
    # those (padded to a power of two), the other chains' leaves filled in as a step of size
    # zero leaves them; the draws must be the frozen kernel's, bit for bit. (The funnel's rows
    # round alike in a batch of any size; a matrix product or a reduction may round a row
    # differently in a batch of another size, and the draws then differ by rounding.)
    sizes = []

    def step(target, metric, state, p, e, half):
        return _leapfrog(target, metric, state, p, e, half)

    def narrow(target, metric, state):
        sizes.append(state.u.shape[0])
        return step

    step.narrow = narrow
    # the narrowed rows merged alone (the eager bookkeeping, as the replayed one), or, by a
    # bookkeeping of every chain (a compiled one), with the other chains' leaves filled in
    merge = (
        None if rows_merged else functools.partial(kernels.merge_in_blocks, metric_kind == "dense")
    )
    diverged = []
    record = kernels._record_divergence

    def spy(div_u, sub_div, U, rows, first_div, index):
        diverged.append(index is not None and bool(sub_div.any()))
        return record(div_u, sub_div, U, rows, first_div, index)

    monkeypatch.setattr(kernels, "_record_divergence", spy)
    _run_both("funnel", metric_kind, 16, max_depth=7, n_trans=8, step_fn=step, merge_fn=merge)
    assert sizes and set(sizes) <= {1, 2, 4, 8} and len(set(sizes)) > 1
    if rows_merged:  # a narrowed doubling diverged: its position written back by row
        assert any(diverged)


def test_subtree_turn_time_level_by_level_matches_the_frozen_one():
    # deep subtrees of many chains check their nodes a level at a time (strided views, no
    # gathered rows): the same turn as the frozen copy, at every depth and for the whole run
    from latentfit.mcmc import uturn

    g = torch.Generator().manual_seed(4)
    for depth in range(1, 10):
        L = 2**depth
        for d in (1, 3, 26):
            P = torch.randn(8, L, d, generator=g, dtype=F64)
            P += torch.linspace(1, -1, L, dtype=F64)[:, None] * (0.02 * depth)
            PS = P * (torch.rand(8, d, generator=g, dtype=F64) + 0.5)[:, None]
            assert torch.equal(uturn._turn_by_levels(P, PS), _ref_subtree_turn_time(P, PS))


@pytest.mark.parametrize("metric_kind", ["diag", "dense"])
def test_new_kernel_matches_with_every_subtree_checked_level_by_level(metric_kind, monkeypatch):
    from latentfit.mcmc import uturn

    monkeypatch.setattr(uturn, "LEVELS_FROM", 1)
    _run_both("funnel", metric_kind, 7, max_depth=6)


@pytest.mark.parametrize("chunk", [1, 50, 1 << 22])
def test_subtree_turn_time_matches_the_frozen_one_in_blocks(monkeypatch, chunk):
    # the subtree's node checks are cut in blocks when they would not fit in one; the blocked
    # and the one-block passes must find the same turn as the frozen copy
    from latentfit.mcmc import uturn

    monkeypatch.setattr(uturn, "_NODE_CHUNK", chunk)
    g = torch.Generator().manual_seed(3)
    for depth in range(1, 7):
        L = 2**depth
        P = torch.randn(16, L, 3, generator=g, dtype=F64) + torch.linspace(1, -1, L)[:, None]
        PS = P * (torch.rand(16, 3, generator=g, dtype=F64) + 0.5)[:, None]
        assert torch.equal(uturn._subtree_turn_time(P, PS), _ref_subtree_turn_time(P, PS))
