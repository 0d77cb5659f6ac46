"""The sampler's default, ``compile="replay"``, over generated models: the leapfrog step recorded
from one eager step (mcmc/record.py), simplified (mcmc/simplify.py) and replayed by TorchScript
gives the eager step's values, away from the state it was recorded at too.

A model is a sum of log-density terms of torch distributions over parameters of every
constraint the samplers take (real, positive, an interval, the simplex), scalar or vector,
with data closed over, written for one chain (mapped by vmap) or for all chains at once; the
number of chains, the metric (diagonal or dense) and the points are drawn too. A disagreement
would be a default run sampling a different posterior from the eager one, silently.
"""

from __future__ import annotations

import torch
import torch.distributions as D
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import constraints

from latentfit.mcmc import Target
from latentfit.mcmc.compiled import leapfrog_parts, static_graph, wrap_leapfrog
from latentfit.mcmc.kernels import State, _leapfrog
from latentfit.mcmc.replay import replay_graph
from tests.mcmc.test_compiled import random_metric

from .oracle import budget

F64 = torch.float64

# (constraint, a term of the log-density given the value v (c, *shape) and data y)
TERMS = {
    "real": (
        constraints.real,
        lambda v, y: D.Normal(v.unsqueeze(-1), 1.5).log_prob(y).sum(-1),
    ),
    "positive": (
        constraints.positive,
        lambda v, y: D.Gamma(2.0, v.unsqueeze(-1)).log_prob(y.abs() + 0.1).sum(-1),
    ),
    "interval": (
        constraints.interval(-1.0, 3.0),
        lambda v, y: D.StudentT(4.0, v.unsqueeze(-1), 2.0).log_prob(y).sum(-1),
    ),
    "unit": (
        constraints.unit_interval,
        lambda v, y: D.Bernoulli(probs=v.unsqueeze(-1)).log_prob((y > 0).to(F64)).sum(-1),
    ),
}


@st.composite
def models(draw):
    n_params = draw(st.integers(1, 3))
    spec = []
    for i in range(n_params):
        kind = draw(st.sampled_from([*TERMS, "simplex"]))
        size = draw(st.sampled_from([(), (2,), (3,)])) if kind != "simplex" else (3,)
        spec.append((f"p{i}", kind, size))
    n_data = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    return spec, n_data, seed


def _target(spec, n_data, seed, vectorized):
    g = torch.Generator().manual_seed(seed)
    data = {name: torch.randn(n_data, generator=g, dtype=F64) for name, _, _ in spec}
    counts = torch.randint(0, 5, (3,), generator=g).to(F64)

    def one_term(name, kind, value):  # value (c, *size) -> (c,)
        if kind == "simplex":  # a multinomial's kernel and a Dirichlet prior
            prior = D.Dirichlet(torch.full((3,), 1.5, dtype=F64))
            return (counts * value.log()).sum(-1) + prior.log_prob(value)
        lp = TERMS[kind][1](value, data[name])
        return lp.reshape(lp.shape[0], -1).sum(1)

    def batched(**params):
        return sum(one_term(name, kind, params[name]) for name, kind, _ in spec)

    def per_chain(**params):
        return batched(**{k: v.unsqueeze(0) for k, v in params.items()})[0]

    shapes = {name: size for name, _, size in spec}
    cons = {
        name: constraints.simplex if kind == "simplex" else TERMS[kind][0] for name, kind, _ in spec
    }
    return Target(batched if vectorized else per_chain, shapes, cons, vectorized=vectorized)


@budget(15)
@given(models(), st.booleans(), st.integers(1, 4), st.booleans(), st.integers(0, 2**16))
def test_the_replayed_leapfrog_is_the_eager_one(model, vectorized, c, dense, seed):
    target = _target(*model, vectorized)
    d = target.n_free
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(c, d, generator=g, dtype=F64)
    lp, grad = target.log_prob_and_grad(u)
    state = State(u, lp, grad)
    metric = random_metric(c, d, dense, g)
    step = torch.full((c,), 0.05, dtype=F64)
    raw, example, _, check = leapfrog_parts(target, metric, state, step)
    graph = static_graph(raw, example)
    replayed = replay_graph(graph, example)
    assert replayed is not None and check(replayed)
    by_replay = wrap_leapfrog(replayed)
    e = step[:, None]
    for _ in range(3):  # points away from the one it was recorded at
        u2 = u + 0.5 * torch.randn(c, d, generator=g, dtype=F64)
        lp2, grad2 = target.log_prob_and_grad(u2)
        p = torch.randn(c, d, generator=g, dtype=F64)
        at = State(u2, lp2, grad2)
        want, p_want = _leapfrog(target, metric, at, p, e, 0.5 * e)
        got, p_got = by_replay(target, metric, at, p, e, 0.5 * e)
        for x, y in zip((*got, p_got), (*want, p_want), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9, equal_nan=True)


@budget(10)
@given(models(), st.sampled_from([8, 12, 16]), st.booleans(), st.integers(0, 2**16))
def test_doublings_narrowed_to_the_growing_chains_draw_what_every_chain_stepping_draws(
    model, c, dense, seed
):
    # kernels.nuts_transition with a step that offers steps for fewer chains (narrow.py): deep
    # doublings where at most half the chains grow step and merge only those. A row may round
    # differently in a batch of another size (ATen vectorises a reduction by the tensor's
    # shape), so the step offered for s chains takes them in a batch of all c (the others
    # copies of the first) and returns their rows: the transitions must then be those of every
    # chain stepping, bit for bit. (Whether a case narrows depends on its trees: at most half
    # the chains growing at 4 leaves or more; tests/mcmc/test_kernel_equivalence.py holds
    # cases that do.)
    from latentfit.mcmc.kernels import Metric, nuts_transition

    target = _target(*model, True)
    d = target.n_free
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(c, d, generator=g, dtype=F64)
    state = State(u, *target.log_prob_and_grad(u))
    metric = Metric(random_metric(c, d, dense, g).inv)
    step = torch.logspace(-2, 0, c, dtype=F64)  # trees of many depths in one transition

    def stepping(target_, metric_, cur, p, e, half):
        return _leapfrog(target_, metric_, cur, p, e, half)

    def narrow(target_, metric_, state_):
        s = state_.u.shape[0]
        pad = torch.zeros(c, dtype=torch.long)
        pad[:s] = torch.arange(s)
        wide = Metric(metric_.inv[pad], symmetric=True)

        def in_a_full_batch(target_, metric_, cur, p, e, half):
            rows = [x[pad] for x in (*cur, p, e, half)]
            got, q = _leapfrog(target_, wide, State(*rows[:3]), *rows[3:])
            return State(*(x[:s] for x in got)), q[:s]

        return in_a_full_batch

    stepping.narrow = narrow
    a = b = state
    for t in range(3):
        ga, gb = torch.Generator().manual_seed(t), torch.Generator().manual_seed(t)
        a, sa = nuts_transition(target, metric, a, step, ga, max_depth=7)
        b, sb = nuts_transition(target, metric, b, step, gb, max_depth=7, leapfrog_step=stepping)
        for x, y in zip((*a, *sa), (*b, *sb), strict=True):
            assert torch.equal(x.isnan(), y.isnan())
            assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(y))
