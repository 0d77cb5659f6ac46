"""raising.py's choice between the compiled and the replayed leapfrog, from counts of raises:
the schedule it follows, written out call by call."""

from __future__ import annotations

from latentfit.mcmc.raising import BLOCK, FIRST_WAIT, RaiseCounter


def _run(counter: RaiseCounter, raises_at, calls: int) -> list[str]:
    """Which step took each of ``calls`` calls; a compiled call raises where its index is in
    ``raises_at`` (a set of call indices, counting every call)."""
    took = []
    for i in range(calls):
        if counter.use_compiled():
            counter.record(i in raises_at)
            took.append("c")
        else:
            counter.replayed_call()
            took.append("r")
    return took


def test_one_raise_a_block_keeps_the_compiled_step():
    counter = RaiseCounter()
    took = _run(counter, set(range(5, 20 * BLOCK, BLOCK)), 20 * BLOCK)
    assert took == ["c"] * (20 * BLOCK) and counter.handed == 0


def test_two_raises_in_a_block_hand_over_then_tries_double_the_wait():
    counter = RaiseCounter()
    # raises at calls 10 and 11: the step goes replayed from call 12 for FIRST_WAIT blocks
    took = _run(counter, {10, 11}, 12 + FIRST_WAIT * BLOCK)
    assert took == ["c"] * 12 + ["r"] * (FIRST_WAIT * BLOCK)
    # the try: its first two calls raise again, so the wait doubles
    start = len(took)
    took = _run(counter, {0, 1}, 2 + 2 * FIRST_WAIT * BLOCK)
    assert took == ["c"] * 2 + ["r"] * (2 * FIRST_WAIT * BLOCK), start
    # the next try raises once in its block: the compiled step stays, and the wait is reset
    took = _run(counter, {3}, 3 * BLOCK)
    assert took == ["c"] * (3 * BLOCK)
    assert counter.handed == 2 and counter.wait == FIRST_WAIT
    # the raises of two blocks do not add up: one at the end of one, one at the start of the next
    took = _run(counter, {BLOCK - 1, BLOCK}, 2 * BLOCK)
    assert took == ["c"] * (2 * BLOCK) and counter.handed == 2


def test_the_choices_follow_the_raises_alone():
    raises = {3, 7, 70, 71, 400, 401, 402, 900, 1500, 1501}
    runs = [_run(RaiseCounter(), raises, 3000) for _ in range(2)]
    assert runs[0] == runs[1] and "r" in runs[0]


def _step_raising_above(limit: float):
    """A leapfrog of log p(u) = -u²/2 (unit metric) that raises where a chain's new |u| > limit."""

    def step(u, grad, p, e, half, inv):
        p = p + half * grad
        u = u + e * inv * p
        if bool((u.abs() > limit).any()):
            raise RuntimeError("outside the support")
        lp, grad = -0.5 * u.square().sum(1), -u
        return u, lp, grad, p + half * grad

    return step


def test_the_chains_that_raise_are_rejected_as_the_eager_step_rejects_them():
    import torch

    from latentfit.mcmc.kernels import Metric, State
    from latentfit.mcmc.raising import rejecting

    u = torch.tensor([[0.1], [0.2], [0.9], [-0.3], [0.95]], dtype=torch.float64)
    cur = State(u, -0.5 * u.square().sum(1), -u)
    metric = Metric(torch.ones(5, 1, dtype=torch.float64))
    p = torch.full((5, 1), 1.0, dtype=torch.float64)
    e = torch.full((5, 1), 0.2, dtype=torch.float64)
    step = _step_raising_above(1.0)
    state, p_new = rejecting(step, metric, cur, p, e, 0.5 * e)
    failing = torch.tensor([False, False, True, False, True])
    assert torch.equal(state.log_prob[failing], torch.full((2,), -torch.inf, dtype=torch.float64))
    assert bool((state.grad[failing] == 0).all())
    # the others: the step's own values, chain by chain
    for i in (0, 1, 3):
        one = step(u[i : i + 1], cur.grad[i : i + 1], p[i : i + 1], e[i : i + 1],
                   0.5 * e[i : i + 1], metric.inv[i : i + 1])  # fmt: skip
        assert torch.equal(state.u[i], one[0][0]) and torch.equal(state.log_prob[i], one[1][0])
        assert torch.equal(p_new[i], one[3][0])
    # the rejected ones: moved by the half step's momentum, which the zero gradient keeps
    p_half = p + 0.5 * e * cur.grad
    assert torch.equal(state.u[failing], (u + e * p_half)[failing])
    assert torch.equal(p_new[failing], p_half[failing])

    # chains that raise only together (a step that compares chains, which the sampler's never
    # does) cannot be told apart: the eager step is left to do it
    def coupled(u, grad, p, e, half, inv):
        if float(u.max() - u.min()) > 1.0:
            raise RuntimeError("the chains spread too far")
        return _step_raising_above(100.0)(u, grad, p, e, half, inv)

    assert rejecting(coupled, metric, cur, p, e, 0.5 * e) is None
