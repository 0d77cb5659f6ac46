"""Hamiltonian transitions for a batch of chains: NUTS (multinomial, generalised no-U-turn) and
static HMC, with a diagonal or dense Euclidean metric.

Every tensor carries the chain dimension first: positions ``u`` (c, p), momenta (c, p), the
inverse metric (c, p) or (c, p, p). A NUTS transition follows Stan's ``base_nuts``
(Betancourt 2017, *A Conceptual Introduction to Hamiltonian Monte Carlo*, appendix A; Hoffman &
Gelman 2014): the trajectory doubles in a random direction; a new subtree of ``2**j`` leapfrog
steps is built for all still-growing chains at once, its states kept, and its internal checks
evaluated level by level on the stored momenta. Inside a subtree a state is drawn with
probability proportional to ``exp(-H)`` (uniform progressive sampling, which is the multinomial
draw), and the subtree's draw replaces the current one with probability
``min(1, W_subtree / W_old)`` (biased progressive sampling). The generalised criterion
``p#_minus·rho > 0 and p#_plus·rho > 0`` is checked on every merged subtree and, as Stan does
since 2.26, across each merge (left subtree plus the first state of the right one, and the last
state of the left plus the right subtree). A leaf whose energy error exceeds 1000 is a divergence:
the subtree is rejected and the trajectory ends.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit.mcmc.target import Target

__all__ = ["Metric", "State", "TransitionStats", "hmc_transition", "nuts_transition"]

MAX_DELTA_H = 1000.0  # Stan's divergence threshold on the energy error


class State(NamedTuple):
    """Where each chain is: position (c, p), log-density (c,) and its gradient (c, p)."""

    u: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor


class TransitionStats(NamedTuple):
    """Per-chain statistics of one transition, each (c,)."""

    accept_stat: torch.Tensor
    n_leapfrog: torch.Tensor
    tree_depth: torch.Tensor
    diverging: torch.Tensor
    energy: torch.Tensor
    divergence_u: torch.Tensor  # (c, p): the first divergent leaf's position (NaN when none)


class Metric:
    """A Euclidean metric per chain: ``inv`` is the inverse mass matrix, (c, p) diagonal or
    (c, p, p) dense. Kinetic energy ``p' M⁻¹ p / 2``; momenta drawn from ``N(0, M)``."""

    def __init__(self, inv: torch.Tensor):
        self.inv = inv
        self.dense = inv.dim() == 3
        if self.dense:
            self.chol = torch.linalg.cholesky(inv)  # inv = L L'

    def __getitem__(self, idx) -> Metric:
        return Metric(self.inv[idx])

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ p`` for p of shape (c, p) or (c, L, p)."""
        if not self.dense:
            return p * (self.inv if p.dim() == 2 else self.inv[:, None])
        return torch.einsum("cij,c...j->c...i", self.inv, p)

    def kinetic(self, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * self.velocity(p)).sum(-1)

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(self.inv.shape[:2], generator=gen, dtype=self.inv.dtype, device=gen.device)
        if not self.dense:
            return z / self.inv.sqrt()
        # p = L^{-T} z has covariance (L L')^{-1} = M
        return torch.linalg.solve_triangular(self.chol.transpose(-1, -2), z[..., None], upper=True)[
            ..., 0
        ]


def leapfrog(target: Target, metric: Metric, state: State, p: torch.Tensor, eps: torch.Tensor):
    """One velocity-Verlet step of size ``eps`` (c,) (negative: backwards in time)."""
    e = eps[:, None]
    p = p + 0.5 * e * state.grad
    u = state.u + e * metric.velocity(p)
    lp, grad = target.log_prob_and_grad(u)
    p = p + 0.5 * e * grad
    return State(u, lp, grad), p


def _energy(lp: torch.Tensor, kinetic: torch.Tensor) -> torch.Tensor:
    h = kinetic - lp
    return torch.where(torch.isnan(h), torch.full_like(h, math.inf), h)


def _criterion(p_sharp_minus, p_sharp_plus, rho) -> torch.Tensor:
    """The generalised no-U-turn criterion: True while the trajectory keeps going."""
    return ((p_sharp_plus * rho).sum(-1) > 0) & ((p_sharp_minus * rho).sum(-1) > 0)


def _subtree_turn_time(P: torch.Tensor, PS: torch.Tensor) -> torch.Tensor:
    """For leaves in build order (a, L, p), the index of the leaf after which the recursive
    build first fails a U-turn check (L when none fails). A node covering leaves [b, b+s) is
    checked once its last leaf is built, on the node and across the join of its two halves."""
    a, L, d = P.shape
    turn = torch.full((a,), L, dtype=torch.long, device=P.device)
    s = 2
    while s <= L:
        n, h = L // s, s // 2
        Pr, PSr = P.reshape(a, n, s, d), PS.reshape(a, n, s, d)
        rho_i, rho_f = Pr[:, :, :h].sum(2), Pr[:, :, h:].sum(2)  # (a, n, d)
        ok = _criterion(PSr[:, :, 0], PSr[:, :, -1], rho_i + rho_f)
        ok &= _criterion(PSr[:, :, 0], PSr[:, :, h], rho_i + Pr[:, :, h])
        ok &= _criterion(PSr[:, :, h - 1], PSr[:, :, -1], rho_f + Pr[:, :, h - 1])
        end = torch.arange(n, device=P.device) * s + s - 1  # (n,)
        first = torch.where(~ok, end, L).min(1).values  # (a,)
        turn = torch.minimum(turn, first)
        s *= 2
    return turn


def nuts_transition(
    target: Target,
    metric: Metric,
    state: State,
    step_size: torch.Tensor,
    gen: torch.Generator,
    max_depth: int = 10,
) -> tuple[State, TransitionStats]:
    """One multinomial NUTS transition of every chain (Stan's ``base_nuts::transition``)."""
    c, d = state.u.shape
    dev, dt = state.u.device, state.u.dtype
    p0 = metric.sample(gen)  # (c, p)
    H0 = _energy(state.log_prob, metric.kinetic(p0))  # (c,)
    v0 = metric.velocity(p0)
    # the two ends of the trajectory: (state, momentum, p#)
    back, front = state, state
    p_back, p_front, ps_back, ps_front = p0, p0, v0, v0
    rho = p0.clone()
    log_w = torch.zeros(c, dtype=dt, device=dev)  # log of the summed weights exp(H0 - H)
    sample, p_sample = state, p0
    depth = torch.zeros(c, dtype=torch.long, device=dev)
    n_leap = torch.zeros(c, dtype=torch.long, device=dev)
    sum_metro = torch.zeros(c, dtype=dt, device=dev)
    diverging = torch.zeros(c, dtype=torch.bool, device=dev)
    div_u = torch.full((c, d), math.nan, dtype=dt, device=dev)
    active = torch.ones(c, dtype=torch.bool, device=dev)

    for j in range(max_depth):
        idx = active.nonzero().squeeze(1)
        a = idx.numel()
        if a == 0:
            break
        L = 2**j
        forward = torch.rand(a, generator=gen, dtype=dt, device=dev) > 0.5  # (a,)
        f2 = forward[:, None]
        cur = State(
            torch.where(f2, front.u[idx], back.u[idx]),
            torch.where(forward, front.log_prob[idx], back.log_prob[idx]),
            torch.where(f2, front.grad[idx], back.grad[idx]),
        )
        p = torch.where(f2, p_front[idx], p_back[idx])
        eps = step_size[idx] * torch.where(forward, 1.0, -1.0).to(dt)
        m = metric[idx]
        Us, Ps, LPs, Gs = [], [], [], []
        for _ in range(L):
            cur, p = leapfrog(target, m, cur, p, eps)
            Us.append(cur.u)
            Ps.append(p)
            LPs.append(cur.log_prob)
            Gs.append(cur.grad)
        U, P = torch.stack(Us, 1), torch.stack(Ps, 1)  # (a, L, p)
        LP, G = torch.stack(LPs, 1), torch.stack(Gs, 1)  # (a, L), (a, L, p)
        H = _energy(LP, m.kinetic(P))  # (a, L)
        h0 = H0[idx]
        leaf = torch.arange(L, device=dev)
        div_leaf = (H - h0[:, None]) > MAX_DELTA_H
        first_div = torch.where(div_leaf, leaf, L).min(1).values  # (a,)
        PS = m.velocity(P)
        # NaN momenta after a divergence must not hide a turn before it
        turn = _subtree_turn_time(torch.nan_to_num(P), torch.nan_to_num(PS))
        # a leaf's divergence is found before the checks of the nodes it closes
        sub_div = (first_div < L) & (first_div <= turn)
        n_built = torch.clamp(torch.minimum(first_div, turn) + 1, max=L)
        valid = (first_div == L) & (turn == L)
        built = leaf[None] < n_built[:, None]
        n_leap[idx] += n_built
        sum_metro[idx] += torch.where(
            built, torch.exp(torch.clamp(h0[:, None] - H, max=0.0)), 0
        ).sum(1)
        newly = sub_div & ~diverging[idx]
        if bool(newly.any()):
            where = idx[newly]
            div_u[where] = U[newly, first_div[newly]]
        diverging[idx] |= sub_div

        # multinomial draw inside the subtree (Gumbel-max), then biased progressive sampling
        logw = h0[:, None] - H  # (a, L)
        log_w_sub = torch.logsumexp(logw, 1)
        gumbel = -torch.log(-torch.log(torch.rand(a, L, generator=gen, dtype=dt, device=dev)))
        pick = torch.argmax(logw + gumbel, 1)  # (a,)
        accept = torch.exp(torch.clamp(log_w_sub - log_w[idx], max=0.0))
        take = valid & (torch.rand(a, generator=gen, dtype=dt, device=dev) < accept)
        if bool(take.any()):
            ti, rows = idx[take], take.nonzero().squeeze(1)
            k = pick[take]
            sample = State(
                _put(sample.u, ti, U[rows, k]),
                _put(sample.log_prob, ti, LP[rows, k]),
                _put(sample.grad, ti, G[rows, k]),
            )
            p_sample = _put(p_sample, ti, P[rows, k])
        log_w[idx] = torch.where(valid, torch.logaddexp(log_w[idx], log_w_sub), log_w[idx])

        # merge: the criterion on the whole tree and across the join
        rho_sub = P.sum(1)
        rho_old = rho[idx]
        near_ps = torch.where(f2, ps_front[idx], ps_back[idx])
        near_p = torch.where(f2, p_front[idx], p_back[idx])
        far_ps = torch.where(f2, ps_back[idx], ps_front[idx])
        last_ps = PS[:, -1]
        ok = _criterion(far_ps, last_ps, rho_old + rho_sub)
        ok &= _criterion(far_ps, PS[:, 0], rho_old + P[:, 0])
        ok &= _criterion(near_ps, last_ps, rho_sub + near_p)
        depth[idx] += valid.long()
        active[idx] = valid & ok

        # the new end of the trajectory, for chains that keep their subtree
        vi, rows = idx[valid], valid.nonzero().squeeze(1)
        if vi.numel():
            fw = forward[rows]
            end = State(U[rows, -1], LP[rows, -1], G[rows, -1])
            fi, bi = vi[fw], vi[~fw]
            fr, br = rows[fw], rows[~fw]
            front = State(*(_put(t, fi, e[fw]) for t, e in zip(front, end, strict=True)))
            back = State(*(_put(t, bi, e[~fw]) for t, e in zip(back, end, strict=True)))
            p_front, ps_front = _put(p_front, fi, P[fr, -1]), _put(ps_front, fi, PS[fr, -1])
            p_back, ps_back = _put(p_back, bi, P[br, -1]), _put(ps_back, bi, PS[br, -1])
            rho = _put(rho, vi, rho_old[valid] + rho_sub[valid])

    energy = _energy(sample.log_prob, metric.kinetic(p_sample))
    stats = TransitionStats(
        accept_stat=sum_metro / n_leap.clamp(min=1).to(dt),
        n_leapfrog=n_leap,
        tree_depth=depth,
        diverging=diverging,
        energy=energy,
        divergence_u=div_u,
    )
    return sample, stats


def _put(t: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    out = t.clone()
    out[idx] = values
    return out


def hmc_transition(
    target: Target,
    metric: Metric,
    state: State,
    step_size: torch.Tensor,
    gen: torch.Generator,
    num_steps: int = 10,
) -> tuple[State, TransitionStats]:
    """Static HMC: ``num_steps`` leapfrog steps and a Metropolis correction (Neal 2011)."""
    c, d = state.u.shape
    dt, dev = state.u.dtype, state.u.device
    p0 = metric.sample(gen)
    H0 = _energy(state.log_prob, metric.kinetic(p0))
    cur, p = state, p0
    div_u = torch.full((c, d), math.nan, dtype=dt, device=dev)
    diverging = torch.zeros(c, dtype=torch.bool, device=dev)
    for _ in range(num_steps):
        cur, p = leapfrog(target, metric, cur, p, step_size)
        H = _energy(cur.log_prob, metric.kinetic(p))
        newly = ((H - H0) > MAX_DELTA_H) & ~diverging
        div_u[newly] = cur.u[newly]
        diverging |= newly
    H1 = _energy(cur.log_prob, metric.kinetic(p))
    accept = torch.exp(torch.clamp(H0 - H1, max=0.0))
    take = (torch.rand(c, generator=gen, dtype=dt, device=dev) < accept) & ~diverging
    t2 = take[:, None]
    new = State(
        torch.where(t2, cur.u, state.u),
        torch.where(take, cur.log_prob, state.log_prob),
        torch.where(t2, cur.grad, state.grad),
    )
    energy = torch.where(take, H1, H0)
    stats = TransitionStats(
        accept_stat=torch.where(diverging, torch.zeros_like(accept), accept),
        n_leapfrog=torch.full((c,), num_steps, dtype=torch.long, device=dev),
        tree_depth=torch.zeros(c, dtype=torch.long, device=dev),
        diverging=diverging,
        energy=energy,
        divergence_u=div_u,
    )
    return new, stats
