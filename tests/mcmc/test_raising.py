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
