"""What a sampling result says about its own draws: every diagnostic a result offers returns
numbers for a valid request (none fails inside ArviZ), and no warning or diagnostic line
blames the user for a shape latentfit built."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import constraints

from latentfit.errors import ParameterError
from latentfit.mcmc import gibbs_gmm, gibbs_hmm, sample

X = np.random.default_rng(0).normal(size=(30, 2))


def _normal(mu, sigma):
    return torch.distributions.Normal(mu, sigma).log_prob(torch.tensor([0.1, 0.5, -0.3])).sum()


def _nuts(**kw):
    kw = {"num_warmup": 20, "progress_bar": False, "generator": 0, **kw}
    return sample(
        _normal, {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": constraints.positive}, **kw
    )


RESULTS = {
    "nuts": lambda: _nuts(num_draws=30, num_chains=2),
    "gibbs_gmm": lambda: gibbs_gmm(X, 2, num_warmup=5, num_draws=30, num_chains=2, generator=0),
    "gibbs_hmm": lambda: gibbs_hmm(X, 2, num_warmup=5, num_draws=30, num_chains=2, generator=0),
}


@pytest.mark.parametrize("run", list(RESULTS))
def test_mcse_of_the_sd_equals_the_summary_column(run):
    # ArviZ 0.x's mcse(method="sd") failed with numba installed under numpy 2 (float() of a
    # one-element array), said as "ArviZ refused the arguments" for a documented method
    res = RESULTS[run]()
    got = res.mcse("sd")
    table = res.summary(round_to="none")["mcse_sd"]
    for name, values in got.items():
        flat = np.asarray(values).reshape(-1)
        rows = [r for r in table.index if r == name or r.startswith(f"{name}[")]
        np.testing.assert_allclose(flat, table[rows].to_numpy(), rtol=1e-10)
    assert all(np.isfinite(np.asarray(v)).any() for v in got.values())


SHORT = {
    "nuts": lambda: _nuts(num_draws=1, num_chains=2),
    "nuts_one_chain": lambda: _nuts(num_draws=1, num_chains=1),
    "gibbs_gmm": lambda: gibbs_gmm(X, 2, num_warmup=2, num_draws=1, num_chains=3, generator=0),
    "gibbs_hmm": lambda: gibbs_hmm(X, 2, num_warmup=2, num_draws=1, num_chains=3, generator=0),
}


@pytest.mark.parametrize("run", list(SHORT))
def test_a_one_draw_run_converts_and_summarises_without_warnings(run, recwarn):
    # ArviZ took (chains=2, draws=1) for a transposed array and warned 8 times a call "Passed
    # array should have shape (chains, draws, *shape)"; one draw's sd warned numpy's
    # "Degrees of freedom <= 0": the table's NaN says it, and diagnostics() says why
    res = SHORT[run]()
    res.to_arviz()
    table = res.summary()
    assert [str(w.message) for w in recwarn] == []
    assert table["r_hat"].isna().all()
    assert np.isfinite(table["mean"]).all()


def test_diagnostics_of_one_chain_say_r_hat_is_not_computed():
    # ArviZ's rank R-hat needs 2 chains: one chain's R-hat is NaN in the summary, while
    # diagnostics() said "no problems found"
    res = _nuts(num_draws=40, num_chains=1)
    assert np.isnan(res.rhat()["mu"])
    assert "R-hat needs at least 2 chains, got 1" in res.diagnostics()
    assert "R-hat needs" not in _nuts(num_draws=40, num_chains=2).diagnostics()


@pytest.mark.parametrize(
    "run",
    [
        lambda g: _nuts(num_draws=2, generator=g),
        lambda g: gibbs_gmm(X, 2, num_warmup=1, num_draws=2, generator=g),
        lambda g: gibbs_hmm(X, 2, num_warmup=1, num_draws=2, generator=g),
    ],
)
@pytest.mark.parametrize(
    "generator, match",
    [("abc", "generator must be None, an int seed"), (2**70, r"generator=\d+ is out of range")],
)
def test_a_bad_generator_is_named_by_its_argument(run, generator, match):
    # the samplers take generator=; their messages named random_state, which they do not take
    with pytest.raises(ParameterError, match=match) as err:
        run(generator)
    assert "random_state" not in str(err.value)


def _svgd():
    from latentfit.mcmc.svgd import svgd

    return svgd(_normal, {"mu": 0.0, "sigma": 1.0}, constraints={"sigma": constraints.positive},
                num_particles=5, num_iter=2, generator=0, progress_bar=False)  # fmt: skip


@pytest.mark.parametrize("run", [*RESULTS, "svgd"])
def test_an_unknown_name_is_a_key_error_listing_the_parameters(run):
    # result["nope"] raised a bare KeyError: 'nope' (a tuple's TypeError for the Gibbs results)
    from latentfit.errors import LatentfitError

    res = _svgd() if run == "svgd" else RESULTS[run]()
    with pytest.raises(KeyError) as info:
        res["nope"]
    assert isinstance(info.value, LatentfitError)
    names = {"gibbs_gmm": ("weights", "means", "covariances")}.get(run, ("mu", "sigma"))
    if run == "gibbs_hmm":
        names = ("start", "transmat", "means", "covariances")
    text = str(info.value)
    assert "'nope'" in text and all(n in text for n in names), text
    assert not text.startswith('"'), text  # KeyError's repr-quoting of its message
    first = names[0]
    assert torch.equal(res[first], (res.particles if run == "svgd" else res.draws)[first])


@pytest.mark.parametrize(
    "keyword", ["seed", "generator", "num_chains", "chains", "num_warmup", "target_accept"]
)
def test_resume_refuses_a_new_seed_or_chains_saying_it_continues_the_run(keyword):
    # resume(10, seed=1) raised Python's "got an unexpected keyword argument 'seed'"
    res = _nuts(num_draws=5, num_chains=2)
    with pytest.raises(ParameterError) as info:
        res.resume(5, progress_bar=False, **{keyword: 1})
    text = str(info.value)
    assert f"{keyword}=" in text and "continues" in text and "sample(" in text, text
    assert res.resume(5, progress_bar=False).num_draws == 10  # the refusal moved nothing


def test_resume_names_an_unknown_keyword_and_what_it_takes():
    res = _nuts(num_draws=5, num_chains=2)
    with pytest.raises(ParameterError, match=r"nope=.*num_draws, progress_bar and max_work"):
        res.resume(5, nope=True)


def test_chains_whose_halves_never_move_summarise_without_warnings(recwarn):
    # split R-hat of chains [0, 0, 1, 1]: each half holds one value, so the within-chain
    # variance is 0 and the between-half variance is not; numpy warned "divide by zero
    # encountered in scalar divide" from inside ArviZ, at the console
    from latentfit.mcmc.gibbs import GibbsGMMResult

    c, n = 2, 4
    means = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).expand(c, n)[..., None, None]
    ones = torch.ones(c, n, 1, dtype=torch.float64)
    res = GibbsGMMResult(ones, means, ones[..., None, None], torch.zeros(c, 3).long(), None)
    table = res.summary()
    assert [str(w.message) for w in recwarn] == []
    assert table.loc["means[0, 0]", "r_hat"] > 1e6  # inf or as good as: never converged
    assert table.loc["means[0, 0]", "mean"] == 0.5
