"""The U-turn checks of a NUTS subtree, all of its nodes at once (kernels.nuts_transition).

A subtree of ``L`` leaves built by repeated doubling has ``L - 1`` internal nodes; a node
covering leaves [b, b + s) is checked once its last leaf is built, on the node and across the
join of its two halves (Stan's checks since 2.26), with the generalised criterion
``p#_minus·rho > 0 and p#_plus·rho > 0``. The recursive build stops after the first leaf that
closes a failing node. Here every node of every level is checked at once: each rho is a
difference of rows of the momenta's cumulative sums, read through node tables made once per
``L`` (``_subtree_nodes``), so the whole subtree costs a dozen tensor operations whatever its
depth, or, for deep subtrees of many chains, a level of nodes at a time through strided views
(``_turn_by_levels``). ``_leaf_consts`` holds the per-depth constants the kernel reads.
"""

from __future__ import annotations

import torch

_NODE_CHUNK = 1 << 22  # elements of one (a, nodes, 6, d) block of the subtree checks


def _subtree_nodes(L: int, device) -> tuple[torch.Tensor, ...]:
    """Every internal node of a subtree of ``L`` leaves (``L - 1`` of them, all levels): the
    leaves whose p# enter its three checks, two for each (N, 6: the first and last leaf of
    each check's span, check by check), the cumulative-sum rows bounding each check's rho
    (N, 3) twice, and the leaf after which it is checked, once per p# (N, 6)."""
    key = (L, str(device))
    if key not in _NODE_CACHE:
        ps, hi, lo, last = [], [], [], []
        s = 2
        while s <= L:
            h = s // 2
            for b in range(0, L, s):
                e = b + s - 1
                # whole node; left half + first of right; last of left + right half
                ps.append([b, e, b, b + h, b + h - 1, e])
                hi.append([e + 1, b + h + 1, e + 1])
                lo.append([b, b, b + h - 1])
                last.append([e] * 6)
            s *= 2
        _NODE_CACHE[key] = tuple(
            torch.tensor(v, dtype=torch.long, device=device) for v in (ps, hi, lo, last)
        )
    return _NODE_CACHE[key]


_NODE_CACHE: dict = {}


#: elements of the leaves' momenta (a, L, p) from which the U-turn checks run level by level
#: (``_turn_by_levels``): all nodes at once then read and write tensors past the caches. At 32
#: chains x 26 parameters, 512 leaves: 24.9 ms against 9.4 alone, 33 against 15 ms inside a
#: run; 256 leaves: 4.8 against 4.6 ms alone, 9.1-9.9 against 6.5 ms inside a run; 128
#: leaves: 2.4 against 2.5 ms alone, the tables ahead from there down
LEVELS_FROM = 1 << 17


def _turn_by_levels(P: torch.Tensor, PS: torch.Tensor) -> torch.Tensor:
    """``_subtree_turn_time`` a level of nodes at a time: the nodes of span ``s`` start every
    ``s`` leaves, so each check's rows of the cumulative sums and the p# at its ends are
    strided views, and nothing is gathered; ~25 operations a level. The same dot products,
    so the same turn."""
    a, L, _ = P.shape
    C = torch.nn.functional.pad(P.cumsum(1), (0, 0, 1, 0))  # (a, L + 1, p), row 0 zero
    turn = torch.full((a,), L, dtype=torch.long, device=P.device)
    s = 2
    while s <= L:
        h = s // 2
        ends = torch.arange(s - 1, L, s, device=P.device)  # each node's last leaf
        lo, hi = C[:, 0:L:s], C[:, s : L + 1 : s]  # rows b and e + 1 of the nodes [b, e]
        whole, left = hi - lo, C[:, h + 1 : L + 1 : s] - lo  # node; left half + first of right
        right = hi - C[:, h - 1 : L : s]  # last of left + right half
        first, last = PS[:, 0:L:s], PS[:, s - 1 : L : s]
        checks = (
            (first, whole), (last, whole), (first, left), (PS[:, h:L:s], left),
            (PS[:, h - 1 : L : s], right), (last, right),
        )  # fmt: skip
        ok = torch.stack([(x * r).sum(-1) > 0 for x, r in checks]).all(0)  # (a, L / s)
        turn = torch.minimum(turn, torch.where(ok, L, ends).amin(1))
        s *= 2
    return turn


def _subtree_turn_time(P: torch.Tensor, PS: torch.Tensor) -> torch.Tensor:
    """For leaves in build order (a, L, p), the index of the leaf after which the recursive
    build first fails a U-turn check (L when none fails). A node covering leaves [b, b+s) is
    checked once its last leaf is built, on the node and across the join of its two halves.

    All nodes of all levels are checked at once: each rho is a difference of cumulative sums of
    the momenta, so the whole subtree costs a dozen tensor operations whatever its depth; level
    by level (``_turn_by_levels``) from ``LEVELS_FROM`` elements."""
    a, L, d = P.shape
    if L == 1:
        return torch.full((a,), L, dtype=torch.long, device=P.device)
    if a * L * d >= LEVELS_FROM:
        return _turn_by_levels(P, PS)
    ps_i, hi, lo, last = _subtree_nodes(L, P.device)
    L_t = _leaf_consts(L, P.device, P.dtype)[1]
    C = torch.nn.functional.pad(P.cumsum(1), (0, 0, 1, 0))  # (a, L + 1, p), row 0 zero
    n = ps_i.shape[0]
    step = max(1, _NODE_CHUNK // max(1, a * 6 * d))
    if n <= step:  # the usual case: every node in one block
        return _turn_of_nodes(P, PS, ps_i, hi, lo, last, L_t, C)
    turn = torch.full((a,), L, dtype=torch.long, device=P.device)
    for k in range(0, n, step):
        sl = slice(k, k + step)
        rho = C[:, hi[sl]] - C[:, lo[sl]]  # (a, N, 3, p)
        ends = PS[:, ps_i[sl]].view(a, -1, 3, 2, d)  # (a, N, 3, 2, p)
        ok = (ends * rho.unsqueeze(3)).sum(-1) > 0  # (a, N, 3, 2)
        turn = torch.minimum(turn, torch.where(ok.flatten(2), L_t, last[sl]).amin((1, 2)))
    return turn


def _turn_of_nodes(P, PS, ps_i, hi, lo, last, L_t, C=None) -> torch.Tensor:
    """``_subtree_turn_time`` in one block, from the node tables of ``_subtree_nodes``."""
    if C is None:
        C = torch.nn.functional.pad(P.cumsum(1), (0, 0, 1, 0))  # (a, L + 1, p), row 0 zero
    # the tables flattened and read by index_select, not advanced indexing: the same rows, and
    # ~25 µs less a replayed merge at 4 chains (advanced indexing costs several operations)
    # each check's rho once, dotted with the p# at both ends of its span: (a, 3N, p) rows
    # rather than (a, 6N, p), half the subtraction and reads of C at depth (bit for bit)
    a, d = P.shape[0], P.shape[2]
    rho = C.index_select(1, hi.view(-1)) - C.index_select(1, lo.view(-1))  # (a, 3N, p)
    ends = PS.index_select(1, ps_i.view(-1)).view(a, -1, 2, d)  # (a, 3N, 2, p)
    ok = (ends * rho.unsqueeze(2)).sum(-1) > 0  # (a, 3N, 2)
    return torch.where(ok.view(a, -1), L_t, last.view(-1)).amin(1)


def _leaf_consts(L: int, device, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    """Per-depth constants, made once: the leaf indices ``arange(L)``; ``L``, ``L + 1``, ``-1``
    and ``2`` (long); a zero of ``dtype``. (A Python scalar in ``torch.where`` costs an
    operation of its own every call.)"""
    key = (L, str(device), dtype)
    if key not in _LEAF_CACHE:
        long = dict(dtype=torch.long, device=device)
        _LEAF_CACHE[key] = (
            torch.arange(L, device=device),
            torch.tensor(L, **long),
            torch.tensor(L + 1, **long),
            torch.tensor(-1, **long),
            torch.tensor(0.0, dtype=dtype, device=device),
            torch.tensor(2, **long),
        )
    return _LEAF_CACHE[key]


_LEAF_CACHE: dict = {}
