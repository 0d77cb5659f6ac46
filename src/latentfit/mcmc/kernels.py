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
from collections.abc import Callable
from typing import NamedTuple

import torch

from latentfit.mcmc.narrow import MIN_LEAVES, narrow_rows
from latentfit.mcmc.target import Target
from latentfit.mcmc.uturn import (
    _leaf_consts,
    _subtree_nodes,
    _subtree_turn_time,
    _turn_of_nodes,
)

__all__ = [
    "Metric",
    "State",
    "TransitionStats",
    "hmc_transition",
    "next_doubling",
    "nuts_transition",
    "velocity",
]

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

    def __init__(self, inv: torch.Tensor, symmetric: bool = False):
        self.dense = inv.dim() == 3
        if self.dense and not symmetric:
            # exactly symmetric, so that p M^-1 is M^-1 p: a batched matmul, half an einsum's cost
            inv = 0.5 * (inv + inv.transpose(-1, -2))
        self.inv = inv
        self._chol: torch.Tensor | None = None  # inv = L L' (dense), made when first drawn from
        self._inv_leaves = None if self.dense else inv[:, None]  # (c, 1, p), for (c, L, p)

    def __getitem__(self, idx) -> Metric:
        return Metric(self.inv[idx])

    def rows(self, index: torch.Tensor) -> Metric:
        """The metric of the chains ``index`` (a long tensor of rows), for stepping only them."""
        return Metric(self.inv.index_select(0, index), symmetric=True)

    @property
    def chol(self) -> torch.Tensor:
        if self._chol is None:
            self._chol = torch.linalg.cholesky(self.inv)
        return self._chol

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ p`` for p of shape (c, p) or (c, L, p)."""
        if not self.dense and p.dim() == 3:
            return p * self._inv_leaves
        return velocity(self.inv, p, self.dense)

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


def velocity(inv: torch.Tensor, p: torch.Tensor, dense: bool) -> torch.Tensor:
    """``M⁻¹ p`` for the inverse metric ``inv`` (c, p) or, dense, (c, p, p) (exactly
    symmetric), and momenta (c, p) or (c, L, p)."""
    if not dense:
        return p * (inv if p.dim() == 2 else inv[:, None])
    # bmm, not matmul: matmul's expand/view wrapping costs a replayed graph five operations
    if p.dim() == 2:
        return torch.bmm(p.unsqueeze(1), inv).squeeze(1)
    return torch.bmm(p, inv)


def leapfrog(target: Target, metric: Metric, state: State, p: torch.Tensor, eps: torch.Tensor):
    """One velocity-Verlet step of size ``eps`` (c,) (negative: backwards in time)."""
    e = eps[:, None]
    return _leapfrog(target, metric, state, p, e, 0.5 * e)


def _leapfrog(target, metric, state, p, e, half):
    """The step with ``e = eps[:, None]`` and ``half = e / 2`` made once per trajectory:
    the integrator itself is three fused multiply-adds around the gradient."""
    p = torch.addcmul(p, half, state.grad)
    u = torch.addcmul(state.u, e, metric.velocity(p))
    lp, grad = target.log_prob_and_grad(u)
    return State(u, lp, grad), torch.addcmul(p, half, grad)


def _energy(lp: torch.Tensor, kinetic: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(kinetic - lp, nan=math.inf, posinf=math.inf, neginf=-math.inf)


def _record_divergence(div_u, sub_div, U, rows, first_div, index):
    """``_divergence_u`` for a doubling's ``pending`` record: ``sub_div`` (c,) of every chain;
    ``U`` (c or s, L, p), ``rows`` and ``first_div`` of every chain, or of the rows ``index``
    only where the doubling was narrowed (narrow.py)."""
    if index is None:
        return _divergence_u(div_u, sub_div, U, rows, first_div)
    own = div_u.index_select(0, index)
    own = _divergence_u(own, sub_div.index_select(0, index), U, rows, first_div)
    return div_u.index_copy(0, index, own)


def _divergence_u(div_u, sub_div, U, rows, first_div):
    """``div_u`` (c, p) with the position of the first divergent leaf ``first_div`` (c,) of
    the subtree ``U`` (c, L, p) written in for the chains ``sub_div`` (c,) that diverged."""
    leaf = first_div.clamp(max=U.shape[1] - 1)  # L + 1 (no divergence) is out of range
    return torch.where(sub_div[:, None], U[rows, leaf], div_u)


def merge_subtree(
    dense: bool,
    leaves, LP, H0c, inv, log_w, rho, draw, draw_lp, n_leap, sum_metro,
    diverging, depth, active, near_p, near_ps, far_ps, u01, u_acc,
    leaf, L_t, no_div, no_stop, zero,
    ps_i=None, hi=None, lo=None, last=None, *, turn=None, PS=None,
):  # fmt: skip
    """A built subtree of ``L`` leaves (c, 3, L, p) and log-densities (c, L) merged into the
    trajectory: its energies and divergences, its U-turn checks, the multinomial draw inside it
    (Gumbel-max with the uniforms ``u01`` (c, L); none for ``L = 1``), biased progressive
    sampling (``u_acc`` (c,)), the checks across the merge. A pure function of tensors, so
    that ``compile=True`` can trace it once for every depth (``L`` symbolic); the subtree's
    node tables ``ps_i, hi, lo, last`` (from ``_subtree_nodes``) are inputs when traced, and
    ``turn`` and ``PS`` are given when called eagerly (the eager U-turn pass works in blocks).

    Returns the new draw (c, 3, p) and its log-density, the summed log-weight, rho (kept only
    where the subtree is), the leapfrog count, the summed acceptance, divergence flags, depth,
    the chains still growing, and the subtree's validity, divergence, first divergent leaf and
    last p#."""
    c = leaves.shape[0]
    P = leaves[:, 2]  # (c, L, p)
    if PS is None:
        PS = velocity(inv, P, dense)
    # log exp(H0 - H) = H0 + (lp - K), with H's NaN read as +inf (a divergence) and -inf as
    # the lowest float (nan_to_num's rule); ``x != x`` for NaN, which inductor vectorises
    lw = torch.sub(LP, (P * PS).sum(-1), alpha=0.5)
    lw = torch.where(
        lw != lw, -math.inf, torch.where(lw == -math.inf, torch.finfo(lw.dtype).min, lw)
    )
    logw = H0c + lw  # (c, L)
    first_div = torch.where(logw < -MAX_DELTA_H, leaf, no_div).amin(1)  # (c,); L + 1: none
    # A node holding a divergent (non-finite) leaf closes at or after the first divergence,
    # so whatever its check says, the turn found before the divergence is the same.
    if turn is None:
        turn = _turn_of_nodes(P, PS, ps_i, hi, lo, last, L_t)
    # a leaf's divergence is found before the checks of the nodes it closes
    stop = torch.minimum(first_div, turn)  # (c,)
    if active is not None:
        stop = torch.where(active, stop, no_stop)  # -1: an idle chain
    sub_div = first_div == stop  # a chain diverges at most once: its trajectory ends
    valid = stop == L_t
    built = leaf <= stop.view(c, 1)  # (c, L)
    n_leap = n_leap + built.sum(1)
    sum_metro = sum_metro + torch.where(built, logw.clamp(max=0.0).exp(), zero).sum(1)
    diverging = diverging | sub_div

    # multinomial draw inside the subtree (Gumbel-max), then biased progressive sampling
    if u01 is None:  # one leaf
        log_w_sub = logw[:, 0]
    else:
        log_w_sub = torch.logsumexp(logw, 1)
        pick = torch.argmax(logw - u01.log().neg_().log_(), 1)  # (c,): + Gumbel noise
    accept = torch.exp(torch.clamp(log_w_sub - log_w, max=0.0))
    take = valid & (u_acc < accept)
    if u01 is None:
        draw = torch.where(take.view(c, 1, 1), leaves[:, :, 0], draw)
        draw_lp = torch.where(take, LP[:, 0], draw_lp)
    else:
        # gather, not leaves[arange(c), :, pick]: no arange, no advanced indexing
        at = pick.view(c, 1, 1, 1).expand(c, 3, 1, leaves.shape[3])
        draw = torch.where(take.view(c, 1, 1), leaves.gather(2, at).view(c, 3, -1), draw)
        draw_lp = torch.where(take, LP.gather(1, pick.view(c, 1)).view(c), draw_lp)
    log_w = torch.where(valid, torch.logaddexp(log_w, log_w_sub), log_w)

    # merge: the criterion on the whole tree and across the join, six dot products at once
    rho_sub = P.sum(1)
    rho_new = rho + rho_sub
    last_ps = PS[:, -1]
    A = torch.stack([far_ps, last_ps, far_ps, PS[:, 0], near_ps, last_ps], 1)  # (c, 6, p)
    r_left, r_right = rho + P[:, 0], rho_sub + near_p
    R = torch.stack([rho_new, rho_new, r_left, r_left, r_right, r_right], 1)  # (c, 6, p)
    ok = ((A * R).sum(-1) > 0).all(1)
    depth = depth + valid
    active = valid & ok
    rho = torch.where(valid.view(c, 1), rho_new, rho)
    return (
        draw, draw_lp, log_w, rho, n_leap, sum_metro, diverging, depth, active,
        valid, sub_div, first_div, last_ps,
    )  # fmt: skip


#: the inputs of ``merge_subtree`` that are None for the first doubling's one-leaf subtree:
#: ``active`` (every chain grows at depth 0) and ``u01`` (no draw inside one leaf)
ONE_LEAF_NONE = (12, 16)


def merge_one_leaf(dense: bool, *kept):
    """``merge_subtree`` for the first doubling's subtree of one leaf, called with its inputs
    less the None ones (``ONE_LEAF_NONE``) and less the node tables, so that it is a function
    of tensors only and can be traced: a one-leaf subtree has no U-turn of its own
    (``turn = L``)."""
    args = list(kept)
    for i in ONE_LEAF_NONE:
        args.insert(i, None)
    return merge_subtree(dense, *args, turn=args[19])


def merge_in_blocks(dense: bool, *args):
    """``merge_subtree`` called as the compiled bookkeeping is, ``(*args, ps_i, hi, lo,
    last)``, but evaluated as the eager sampler does: the node tables are not used, and the
    U-turn checks run in blocks (``_subtree_turn_time``), so that a deep subtree of many chains
    never holds all of its nodes' rows at once."""
    args = args[:23]
    P = args[0][:, 2]  # (c, L, p)
    PS = velocity(args[3], P, dense)
    return merge_subtree(dense, *args, turn=_subtree_turn_time(P, PS), PS=PS)


def next_doubling(
    ends, u, grad, p, last_ps, lp, valid, side, scratch, rows, u_side, step_size, neg_step,
    active, *, d: int,
):  # fmt: skip
    """Between two doublings of ``nuts_transition``: the last subtree's last leaf (``u``,
    ``grad``, ``p``, its p# ``last_ps`` (c, p), log-density ``lp`` (c,)) written into the
    packed ends (c, 3, 4p + 1) at the end it extended (``side``), or at the scratch row where
    the subtree was rejected (``valid`` false); then the next doubling's direction (forward
    where ``u_side > 0.5``), the end it extends, the other end's p#, and its step (c, 1) and
    half step, zero for the chains that stopped growing (``active`` false). A pure function
    of tensors (``d``, the number of parameters, is fixed), so that the replay traces it: a
    doubling's ~20 small operations cost one call.

    Returns the new ends, the side, the near end's position, gradient, momentum, p# and
    log-density, the far end's p#, the step and the half step."""
    end = torch.cat([u, grad, p, last_ps, lp.view(-1, 1)], 1)  # (c, 4p + 1)
    ends = ends.index_put((rows, torch.where(valid, side, scratch)), end)
    forward = u_side > 0.5
    side = forward.long()  # 1 forward, 0 backward
    near = ends[rows, side]  # (c, 4p + 1)
    near_u, near_g, near_p, near_ps = near[:, : 4 * d].split(d, 1)
    far_ps = ends[rows, 1 - side, 3 * d : 4 * d]
    e = (torch.where(forward, step_size, neg_step) * active).view(-1, 1)  # idle chains stay
    return ends, side, near_u, near_g, near_p, near_ps, near[:, 4 * d], far_ps, e, 0.5 * e


def nuts_transition(
    target: Target,
    metric: Metric,
    state: State,
    step_size: torch.Tensor,
    gen: torch.Generator,
    max_depth: int = 10,
    leapfrog_step: Callable | None = None,
    merge_step: Callable | None = None,
) -> tuple[State, TransitionStats]:
    """One multinomial NUTS transition of every chain (Stan's ``base_nuts::transition``).

    All chains step together: a chain whose trajectory has ended takes steps of size zero (it
    stays at a point already evaluated) and its results are masked out, so a doubling costs the
    same handful of tensor operations for 1 chain or 1,000 and asks the device one question
    (is any chain still growing, and did any diverge?). ``leapfrog_step`` replaces
    ``_leapfrog`` (the compiled step of mcmc/compiled.py); where it offers steps for fewer
    chains (its ``narrow``, narrow.py), a doubling of at least ``MIN_LEAVES`` leaves in which at
    most half the chains grow steps only those, padded to a power of two, where that pays.

    On a CPU a doubling's cost is the number of tensor operations launched, not their
    arithmetic, so the state is kept packed: the trajectory's two ends (and a scratch row) as
    one (c, 3, 4p + 1) tensor (position, gradient, momentum, p#, log-density), read and written
    at the chain's direction with one index each; the subtree's leaves as one (c, 3, L, p)
    stack (position, gradient, momentum) from which the multinomial draw takes one row; the
    current draw as (c, 3, p). Every rewrite is exact: tests/mcmc/test_kernel_equivalence.py
    holds the transition to the draws of the unpacked one bit for bit."""
    step_fn = _leapfrog if leapfrog_step is None else leapfrog_step
    c, d = state.u.shape
    dev, dt = state.u.device, state.u.dtype
    p0 = metric.sample(gen)  # (c, p)
    v0 = metric.velocity(p0)
    H0 = _energy(state.log_prob, 0.5 * (p0 * v0).sum(-1))  # (c,)
    H0c = H0[:, None]
    # the ends of the trajectory, [backward, forward, scratch]: u, grad, momentum, p#,
    # log-density; a chain whose subtree is rejected writes its new end to the scratch row
    end0 = torch.cat([state.u, state.grad, p0, v0, state.log_prob[:, None]], 1)  # (c, 4p + 1)
    ends = torch.stack([end0, end0, end0], 1)  # (c, 3, 4p + 1)
    rho = p0
    log_w = torch.zeros(c, dtype=dt, device=dev)  # log of the summed weights exp(H0 - H)
    draw = torch.stack([state.u, state.grad, p0], 1)  # (c, 3, p): the current draw
    draw_lp = state.log_prob
    depth = torch.zeros(c, dtype=torch.long, device=dev)
    n_leap = torch.zeros(c, dtype=torch.long, device=dev)
    sum_metro = torch.zeros(c, dtype=dt, device=dev)
    diverging = torch.zeros(c, dtype=torch.bool, device=dev)
    div_u = torch.full((c, d), math.nan, dtype=dt, device=dev)
    active = None  # every chain grows at depth 0
    rows = _leaf_consts(c, dev, dt)[0]  # arange(c), cached
    neg_step = -step_size
    step_ends = getattr(merge_step, "next_doubling", None)  # replayed (replay.py), or eager
    narrow = getattr(leapfrog_step, "narrow", None)  # steps for fewer chains (narrow.py)

    n_grow = c  # chains still growing, as the host last saw
    pending = None  # the last doubling's divergences, recorded when the host next looks
    p = last_ps = valid = None  # the last doubling's last leaf and validity, for the next
    for j in range(max_depth):
        if j:
            # the one host sync of a doubling: is any chain still growing, did any diverge?
            n_grow, diverged = torch.stack([active, pending[0]]).sum(1).tolist()
            if diverged:  # rare: the divergent leaf's position, from the kept subtree
                div_u = _record_divergence(div_u, *pending)
            pending = None
            if not n_grow:
                break
        L = 2**j
        leaf, L_t, no_div, no_stop, zero, scratch = _leaf_consts(L, dev, dt)
        u_side = torch.rand(c, generator=gen, dtype=dt, device=dev)  # (c,): > 0.5 forward
        if j == 0:  # both ends are the start
            forward = u_side > 0.5
            side = forward.long()  # the end this doubling extends: 1 forward, 0 backward
            cur, near_p, near_ps, far_ps = state, p0, v0, v0
            e = torch.where(forward, step_size, neg_step).view(c, 1)  # (c, 1)
            half = 0.5 * e
        else:  # the last doubling's end written, this one's read
            args = (ends, cur.u, cur.grad, p, last_ps, cur.log_prob, valid, side, scratch, rows)
            args += (u_side, step_size, neg_step, active)
            out = next_doubling(*args, d=d) if step_ends is None else step_ends(*args, d=d)
            ends, side, near_u, near_g, near_p, near_ps, near_lp, far_ps, e, half = out
            cur = State(near_u, near_lp, near_g)
        p = near_p
        index = narrowed = None
        if narrow is not None and L >= MIN_LEAVES:
            index = narrow_rows(active, n_grow, getattr(narrow, "per_chain", math.inf))
        if index is not None:  # few chains grow: only they (and a few idle ones) step
            rows_merged = merge_step is None or getattr(merge_step, "any_rows", False)
            start = (cur, p)
            narrowed = _narrow_subtree(narrow, target, metric, cur, p, e, half, L, index)
        if narrowed is None:
            cur, p, leaves, LP = _subtree(step_fn, target, metric, cur, p, e, half, L)
        else:  # the subtree of the rows ``index``, (s, 3, L, p) and (s, L), narrow.py
            cur, p, leaves, LP, sub = narrowed
            if not rows_merged:  # a compiled bookkeeping of every chain: the others filled in
                leaves, LP = _widen(*start, leaves, LP, index)
        # the subtree's random numbers, in the order the generator has always given them
        u01 = torch.rand(c, L, generator=gen, dtype=dt, device=dev) if L > 1 else None
        u_acc = torch.rand(c, generator=gen, dtype=dt, device=dev)
        args = (leaves, LP, H0c, metric.inv, log_w, rho, draw, draw_lp, n_leap, sum_metro)
        args += (diverging, depth, active, near_p, near_ps, far_ps, u01, u_acc)
        args += (leaf, L_t, no_div, no_stop, zero)
        if narrowed is not None and rows_merged:  # only those rows merged, and written back
            out = _merge_rows(merge_step, sub, args, index)
            own = (leaves[:, 0], _leaf_consts(len(index), dev, dt)[0], out[13], index)
        else:
            out = _merge(merge_step, metric, args)
            own = (leaves[:, 0], rows, out[11], None)
        draw, draw_lp, log_w, rho_kept, n_leap, sum_metro, diverging, depth, active = out[:9]
        valid, sub_div, last_ps = out[9], out[10], out[12]
        pending = (sub_div, *own)  # the divergent leaf's position: (c or s, L, p), rows, leaf
        rho = rho_kept  # the new end (the last leaf) is written by the next doubling, if any

    if pending is not None:  # the trajectories ran to max_depth: record the last doubling's
        div_u = _record_divergence(div_u, *pending)
    su, sg, sp = draw.unbind(1)
    energy = _energy(draw_lp, metric.kinetic(sp))
    stats = TransitionStats(
        accept_stat=sum_metro / n_leap.clamp(min=1).to(dt),
        n_leapfrog=n_leap,
        tree_depth=depth,
        diverging=diverging,
        energy=energy,
        divergence_u=div_u,
    )
    return State(su, draw_lp, sg), stats


def _merge(merge_step, metric: Metric, args: tuple):
    """The subtree merged into the trajectory: ``merge_subtree`` on ``args`` (its inputs up
    to the node tables), replayed or compiled where ``merge_step`` is given, else eagerly."""
    leaves, dev = args[0], args[0].device
    L = leaves.shape[2]
    if L > 1 and merge_step is not None:
        return merge_step(*args, *_subtree_nodes(L, dev))
    if L == 1 and hasattr(merge_step, "one_leaf"):  # the replayed bookkeeping's
        return merge_step.one_leaf(*args)
    P, PS = leaves[:, 2], metric.velocity(leaves[:, 2])
    turn = args[19] if L == 1 else _subtree_turn_time(P, PS)
    return merge_subtree(metric.dense, *args, turn=turn, PS=PS)


#: the inputs of ``merge_subtree`` that hold a value per chain, after the subtree's two
#: (which a narrowed doubling gives for its rows only) and less the metric (``sub``'s)
_PER_CHAIN = (2, *range(4, 18))
#: for the first eight outputs (draw ... depth), the input each keeps for a chain left out
_KEPT_AS = (6, 7, 4, 5, 8, 9, 10, 11)


def _merge_rows(merge_step, sub: Metric, args: tuple, index: torch.Tensor) -> tuple:
    """``_merge`` of the subtree of the rows ``index`` (``args[0]`` (s, 3, L, p), ``args[1]``
    (s, L); every other input of every chain, ``sub`` their metric): the outputs of every
    chain, the others' as the merge leaves an idle chain (its draw, weights, counts and flags
    kept; not growing, not valid, no divergence), and the rows' own first divergent leaf (s,)
    as a fourteenth, for the divergence's position."""
    a = list(args)
    for i in _PER_CHAIN:
        if a[i] is not None:
            a[i] = a[i].index_select(0, index)
    a[3] = sub.inv
    out = _merge(merge_step, sub, tuple(a))
    c = args[4].shape[0]
    kept = [args[i].index_copy(0, index, y) for i, y in zip(_KEPT_AS, out[:8], strict=True)]
    no = torch.zeros(c, dtype=torch.bool, device=index.device)
    flags = [no.index_copy(0, index, y) for y in out[8:11]]  # growing, valid, diverged
    first_div = torch.zeros(c, dtype=out[11].dtype, device=index.device)  # read where diverged
    last_ps = args[14].index_copy(0, index, out[12])  # an idle chain's: its scratch row
    return (*kept, *flags, first_div, last_ps, out[11])


def _subtree(step_fn, target, metric, cur: State, p, e, half, L: int):
    """``L`` leapfrog steps from ``cur``: the last state and momentum, the leaves
    (c, 3, L, p) (position, gradient, momentum) and their log-densities (c, L)."""
    Us, Ps, LPs, Gs = [], [], [], []
    for _ in range(L):
        cur, p = step_fn(target, metric, cur, p, e, half)
        Us.append(cur.u)
        Ps.append(p)
        LPs.append(cur.log_prob)
        Gs.append(cur.grad)
    c, d = p.shape
    leaves = torch.stack(Us + Gs + Ps, 1).view(c, 3, L, d)  # (c, 3, L, p): u, grad, p
    return cur, p, leaves, torch.stack(LPs, 1)


def _narrow_subtree(narrow, target, metric: Metric, cur: State, p, e, half, L, index):
    """``_subtree`` stepping only the chains ``index`` (s,) (narrow.py): the last state and
    momentum of every chain (the others' unchanged: they are idle), the rows' leaves (s, 3, L,
    p) and log-densities (s, L), and their metric; None where no step for ``s`` chains can be
    replayed (every chain steps)."""
    sub = metric.rows(index)
    at = State(*(x.index_select(0, index) for x in cur))
    fn = narrow(target, sub, at)
    if fn is None:
        return None
    pick = (p, e, half)
    at, q, leaves, LP = _subtree(fn, target, sub, at, *(x.index_select(0, index) for x in pick), L)
    last = State(*(x.index_copy(0, index, y) for x, y in zip(cur, at, strict=True)))
    return last, p.index_copy(0, index, q), leaves, LP, sub


def _widen(cur: State, p, leaves_s, LP_s, index):
    """The narrowed subtree's leaves (s, 3, L, p) and log-densities (s, L) as every chain's,
    the others' filled with their state ``cur`` and momentum ``p`` before the subtree, which a
    step of size zero leaves unchanged."""
    c, d = p.shape
    L = LP_s.shape[1]
    start = torch.stack([cur.u, cur.grad, p], 1)  # (c, 3, p)
    leaves = start.unsqueeze(2).expand(c, 3, L, d).contiguous().index_copy_(0, index, leaves_s)
    LP = cur.log_prob.unsqueeze(1).expand(c, L).contiguous().index_copy_(0, index, LP_s)
    return leaves, LP


def hmc_transition(
    target: Target,
    metric: Metric,
    state: State,
    step_size: torch.Tensor,
    gen: torch.Generator,
    num_steps: int = 10,
    leapfrog_step: Callable | None = None,
) -> tuple[State, TransitionStats]:
    """Static HMC: ``num_steps`` leapfrog steps and a Metropolis correction (Neal 2011)."""
    step_fn = _leapfrog if leapfrog_step is None else leapfrog_step
    e = step_size[:, None]
    half = 0.5 * e
    c, d = state.u.shape
    dt, dev = state.u.dtype, state.u.device
    p0 = metric.sample(gen)
    H0 = _energy(state.log_prob, metric.kinetic(p0))
    cur, p = state, p0
    div_u = torch.full((c, d), math.nan, dtype=dt, device=dev)
    diverging = torch.zeros(c, dtype=torch.bool, device=dev)
    for _ in range(num_steps):
        cur, p = step_fn(target, metric, cur, p, e, half)
        H = _energy(cur.log_prob, metric.kinetic(p))
        newly = ((H - H0) > MAX_DELTA_H) & ~diverging
        div_u = torch.where(newly[:, None], cur.u, div_u)
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
