"""Deep doublings of few growing chains step only those chains (mcmc/narrow.py)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentfit.mcmc import SamplerConfig, Target, kernels, sample_target
from latentfit.mcmc.narrow import (
    MIN_ROWS_SAVED,
    MIN_SAVED_ELEMENTS,
    NarrowSteps,
    can_narrow,
    narrow_rows,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=80),
    st.sampled_from([math.inf, 0.0, 300.0, 2000.0, 56000.0]),
)
def test_narrow_rows_are_the_growing_chains_padded_to_a_power_of_two(flags, per_chain):
    active = torch.tensor(flags)
    n = int(active.sum())
    rows = narrow_rows(active, n, per_chain)
    c = len(flags)
    s = 1
    while s < n:
        s *= 2
    if n == 0 or 2 * s > c or c - s < MIN_ROWS_SAVED or (c - s) * per_chain < MIN_SAVED_ELEMENTS:
        assert rows is None
        return
    assert can_narrow(c)  # a run whose set-up skips narrowing would never narrow
    assert rows.shape == (s,) and rows.dtype == torch.long
    assert len(set(rows.tolist())) == s  # distinct: the subtree is written back by row
    assert set(rows[:n].tolist()) == set(torch.nonzero(active).flatten().tolist())
    assert not bool(active[rows[n:]].any())  # the padding is idle chains


_Y = torch.linspace(-3.0, 3.0, 1000, dtype=torch.float64)


def _funnel(v, x):
    # Neal's funnel, whose chains' trees differ in depth, and a weak likelihood of 1,000 points
    # for a step that writes ~10^4 elements a chain; its rows round alike in a batch of any
    # size (not every density's do: ATen may vectorise a reduction differently by shape)
    data = ((_Y - x[:, :1]) ** 2).sum(-1)
    return -0.5 * (v / 3) ** 2 - 0.5 * (x**2).sum(-1) * torch.exp(-v) - 2.0 * v - 1e-6 * data


def test_a_step_that_writes_few_elements_a_chain_is_not_narrowed():
    # eight schools' step writes ~300 elements a chain: at 32 chains a step of one chain is
    # no faster, and only the narrowing's own operations and traces would be paid
    active = torch.zeros(32, dtype=torch.bool)
    active[3] = True
    assert narrow_rows(active, 1, 300.0) is None
    assert narrow_rows(active, 1, 2000.0).tolist() == [3]


def _run(monkeypatch, narrow: bool):
    built = []
    if not narrow:
        monkeypatch.setattr(kernels, "narrow_rows", lambda active, n, per_chain: None)
    original = NarrowSteps.__call__

    def spy(self, target, metric, state):
        fn = original(self, target, metric, state)
        built.append((state.u.shape[0], fn is not None))
        return fn

    monkeypatch.setattr(NarrowSteps, "__call__", spy)
    target = Target(_funnel, {"v": (), "x": (4,)}, vectorized=True)
    res = sample_target(
        target, num_chains=16, num_warmup=60, num_draws=40, generator=3, progress_bar=False,
        config=SamplerConfig(max_depth=8, pace="batch"),  # narrowing is the batched pace's
    )  # fmt: skip
    monkeypatch.undo()
    return res, built


def test_a_replayed_run_narrows_its_deep_doublings_and_draws_what_it_drew_without(monkeypatch):
    res, built = _run(monkeypatch, narrow=True)
    assert res.target.n_free == 5
    assert res.warmup_stats["replayed"] == ("leapfrog", "merge")
    assert built and all(ok for _, ok in built)  # replayed steps for the narrow sizes
    assert {s for s, _ in built} <= {1, 2, 4, 8}
    plain, none_built = _run(monkeypatch, narrow=False)
    assert not none_built
    assert torch.equal(res.unconstrained, plain.unconstrained)
    for k, v in res.sample_stats.items():
        assert torch.equal(v, plain.sample_stats[k]), k
