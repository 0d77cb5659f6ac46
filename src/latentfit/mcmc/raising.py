"""Which leapfrog step runs where a compiled one keeps raising: the compiled step, or the
replayed one (replay.py), decided from how often the compiled calls raise.

A density that raises at some points (a Cholesky factor of a matrix that is not positive
definite) makes the compiled step raise there; that step is then taken eagerly, rejecting the
offending chains, as the eager sampler does. A compiled package's error path is costly: torch
builds the C++ error's message, symbolising its backtrace (``dladdr`` on every frame), for the
package's log line, ~6.4 ms a raise against ~0.03 ms a step that does not raise. On
tests/mcmc/test_compiled.py's semicircle, 4 chains, 300 + 500 iterations, 897 of 10,154 compiled
calls raised (~9%): 7.9 s compiled against 3.2 s replayed, whose raises cost a Python exception
(replay.py runs the density's checks after the graph) and the search of :func:`rejecting`. A
timer could choose between them, but then the draws (the two round differently) would depend on
the machine's load, and a seed must give the same draws: the choice is made from the counts of
raises alone, which the draws fix.

The rule, from the first raise on (before it nothing is counted, so a density that never raises
pays nothing): the compiled step runs in blocks of ``BLOCK`` calls; the second raise within one
block hands the step to the replayed one for ``FIRST_WAIT`` blocks' worth of calls, after which
one block is tried compiled again; a tried block that raises twice again doubles the wait, one
that does not returns the step to the compiled one. Two raises in 64 calls (~3%) add ~0.2 ms a
call to the compiled step, far more than replaying costs beyond compiling on a small model (the
semicircle's step: ~34 µs replayed, ~21 µs compiled). A density that raised once, or rarely,
stays compiled."""

from __future__ import annotations

from collections.abc import Callable

import torch

#: compiled calls judged together
BLOCK = 64
#: raises within one block that hand the step to the replayed one
RAISES = 2
#: blocks of calls the replayed step runs before the compiled one is tried again (doubled
#: each time a tried block raises twice again)
FIRST_WAIT = 4


class RaiseCounter:
    """Which of the two steps runs next: ``use_compiled()`` before a call, ``record(raised)``
    after a compiled one, ``replayed_call()`` after each replayed one. Counts only: the same
    raises give the same choices."""

    def __init__(self) -> None:
        self.compiled = True
        self.calls = 0  # compiled calls in this block
        self.raises = 0  # and raises among them
        self.wait = FIRST_WAIT  # blocks of replayed calls before the next try
        self.left = 0  # replayed calls before the next try
        self.trying = False  # this block is a try of the compiled step after replayed ones
        self.handed = 0  # how many times the step went to the replayed one

    def use_compiled(self) -> bool:
        return self.compiled

    def record(self, raised: bool) -> None:
        """After a compiled call."""
        self.calls += 1
        self.raises += raised
        if self.raises >= RAISES:  # raising often: replayed for a while
            if self.trying:  # a try that failed: wait longer
                self.wait *= 2
            self.handed += 1
            self.compiled, self.trying, self.left = False, False, self.wait * BLOCK
            self.calls = self.raises = 0
        elif self.calls >= BLOCK:  # a block without two raises: the compiled step stays
            self.calls = self.raises = 0
            self.wait, self.trying = FIRST_WAIT, False

    def replayed_call(self) -> None:
        """After a replayed call: the compiled step is tried again after ``left`` of them."""
        self.left -= 1
        if self.left <= 0:
            self.compiled = self.trying = True


def replayed_step(
    raw: Callable, example: tuple, check: Callable[[Callable], bool], graph=None
) -> Callable | None:
    """The leapfrog ``raw`` replayed (replay.py) from its static graph (``graph``, or traced
    now), or None where it cannot be or disagrees with ``raw`` (``check``): the sampler then
    takes the step eagerly (or compiled) instead."""
    from latentfit.mcmc.compiled import quiet, static_graph
    from latentfit.mcmc.replay import replay_graph

    try:
        with quiet():
            replayed = replay_graph(graph or static_graph(raw, example), example)
        return replayed if replayed is not None and check(replayed) else None
    except Exception:  # any failure of the trace or the replay: no replayed step
        return None


def wrap_replayed(replayed: Callable) -> Callable:
    """A replayed ``(u, grad, p, e, half, inv) -> (u, lp, grad, p)`` (replay.py) as the
    sampler calls a leapfrog: ``step(target, metric, state, p, e, half) -> (State, p)``. Where
    it raises (the density raised at some chains' points), those chains are rejected
    (:func:`rejecting`), else the step is taken eagerly; silently, as the eager sampler
    rejects them (a replayed raise costs no more than an eager one)."""
    from latentfit.mcmc.kernels import State, _leapfrog

    def step(target_, metric_, cur, p_, e_, half_):
        args = [x.contiguous() for x in (cur.u, cur.grad, p_, e_, half_, metric_.inv)]
        try:
            u, lp, grad, p_new = replayed(*args)
        except (RuntimeError, ValueError):
            done = rejecting(replayed, metric_, cur, p_, e_, half_)
            return done if done is not None else _leapfrog(target_, metric_, cur, p_, e_, half_)
        return State(u, lp, grad), p_new

    return step


def rejecting(step_fn: Callable, metric, cur, p: torch.Tensor, e: torch.Tensor, half):
    """The step ``step_fn`` (a replayed ``(u, grad, p, e, half, inv) -> (u, lp, grad, p)``)
    that raised for some chains, taken with those chains rejected as the eager step rejects
    them (``Target.log_prob_and_grad``: log-density -inf, gradient 0): ``(State, p)``, or None
    where the raising chains cannot be told apart (the eager step is then taken).

    The chains that raise are found by halving: a call steps some chains, the others' rows
    holding a copy of the first of those (chains are independent, so a row's values are its
    own whatever the others hold); a set of chains that raises is split until single chains
    remain. The eager step instead runs the whole density again, then each chain alone (~1.6
    ms on the semicircle, 4 chains), where these calls take ~0.55 ms. The chains that do not
    raise get the replayed step's values, which are the eager step's (replay.py); those that
    do, the eager rejection's."""
    from latentfit.mcmc.kernels import State

    c = cur.u.shape[0]

    def call(chains: list[int]):
        rows = [chains[0]] * c
        for i in chains:
            rows[i] = i
        index = torch.tensor(rows, device=cur.u.device)
        args = (cur.u, cur.grad, p, e, half, metric.inv)
        return step_fn(*[x.index_select(0, index).contiguous() for x in args])

    def raises(chains: list[int]) -> bool:
        try:
            call(chains)
        except (RuntimeError, ValueError):
            return True
        return False

    failing: list[int] = []

    def search(chains: list[int]) -> bool:  # chains that raise together: which of them alone
        if len(chains) == 1:
            failing.append(chains[0])
            return True
        left, right = chains[: len(chains) // 2], chains[len(chains) // 2 :]
        parts = [part for part in (left, right) if raises(part)]
        # neither half raising alone, or a half none of whose chains does: not independent
        return bool(parts) and all(search(part) for part in parts)

    if not search(list(range(c))):
        return None
    ok = torch.ones(c, dtype=torch.bool, device=cur.u.device)
    ok[failing] = False
    kept = [i for i in range(c) if i not in failing]
    try:
        u, lp, grad, p_new = call(kept or [0])  # all rejected: any values, replaced below
    except (RuntimeError, ValueError):
        if kept:
            return None
        u, lp, grad, p_new = cur.u, cur.log_prob, cur.grad, p
    # the rejected chains as the eager step leaves them: moved, log-density -inf, gradient 0
    p_half = torch.addcmul(p, half, cur.grad)
    moved = torch.addcmul(cur.u, e, metric.velocity(p_half))
    bad = ~ok[:, None]
    u = torch.where(bad, moved, u)
    lp = torch.where(~ok, torch.full_like(lp, -torch.inf), lp)
    grad = torch.where(bad, torch.zeros_like(grad), grad)
    p_new = torch.where(bad, torch.addcmul(p_half, half, torch.zeros_like(grad)), p_new)
    return State(u, lp, grad), p_new
