"""Bad data, priors and starting values reach every sampler as a named LatentfitError before
the first sweep, never as torch's or numpy's own exception halfway through, and never as
NaN particles: gibbs_gmm and gibbs_hmm check x and the Normal-inverse-Wishart prior they share
(mcmc/gibbs.py, ``observations`` and ``niw_prior``); sample and svgd check ``init``
(mcmc/target.py, ``init_values``); svgd stops at a non-finite density or gradient."""

from __future__ import annotations

import ast
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

from latentfit.errors import (
    DOCUMENTED_ERRORS,
    DataError,
    MissingDependencyError,
    ParameterError,
    ResourceLimitError,
)
from latentfit.mcmc import gibbs_gmm, gibbs_hmm, ordered_vector, sample
from latentfit.mcmc.result import import_arviz
from latentfit.mcmc.svgd import svgd
from tests.gradient_copies import COPIES

X = np.random.default_rng(0).normal(size=(30, 2))
SHORT = {"num_warmup": 2, "num_draws": 2}
GIBBS = {
    "gibbs_gmm": lambda x=X, **kw: gibbs_gmm(x, 2, **SHORT, **kw),
    "gibbs_hmm": lambda x=X, **kw: gibbs_hmm(x, 2, **SHORT, **kw),
}


def _normal(mu, sigma):
    return torch.distributions.Normal(mu, sigma).log_prob(torch.tensor([0.1, 0.5, -0.3])).sum()


@pytest.mark.parametrize("run", list(GIBBS))
@pytest.mark.parametrize(
    "kw, error, match",
    [
        ({"prior_scale": -np.eye(2)}, ParameterError, "positive-definite"),
        ({"prior_scale": [[1.0, 0.9], [0.0, 1.0]]}, ParameterError, "symmetric"),
        ({"prior_scale": np.eye(3)}, ParameterError, r"\(2, 2\)"),
        ({"prior_scale": [[1.0, np.nan], [np.nan, 1.0]]}, DataError, "prior_scale"),
        ({"prior_loc": [0.0, 0.0, 0.0]}, ParameterError, "prior_loc must hold one value"),
        ({"prior_loc": ["a", "b"]}, DataError, "prior_loc"),
        ({"prior_kappa": 0.0}, ParameterError, "prior_kappa"),
        ({"prior_kappa": float("inf")}, ParameterError, "prior_kappa"),
        ({"prior_df": 0.5}, ParameterError, "prior_df must be a finite number > d - 1 = 1"),
        ({"prior_df": "3"}, ParameterError, "prior_df"),
    ],
)
def test_a_bad_prior_is_named_before_the_first_sweep(run, kw, error, match):
    with pytest.raises(error, match=match):
        GIBBS[run](**kw)


@pytest.mark.parametrize("run", list(GIBBS))
@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.array([["a", "b"]] * 5), DataError, "non-numeric value .* row 0, column 0"),
        (
            np.where(np.arange(60).reshape(30, 2) == 7, np.nan, X),
            DataError,
            "NaN at row 3, column 1",
        ),
        (np.vstack([X, [[np.inf, 0.0]]]), DataError, "inf at row 30, column 0"),
        (X * 1e300, DataError, "overflow"),
        (np.c_[X[:, 0], np.full(30, 2.0)], DataError, r"column\(s\) \[1\] of x are constant"),
        (np.c_[X[:, 0], 2 * X[:, 0]], DataError, "linearly dependent"),
        (X[None], DataError, r"\(n, d\)"),
        ("data.csv", DataError, "path or string"),
    ],
)
def test_bad_data_is_named_by_row_and_column(run, x, error, match):
    with pytest.raises(error, match=match):
        GIBBS[run](x=x)


def test_a_constant_column_samples_with_a_prior_scale_given():
    x = np.c_[X[:, 0], np.full(30, 2.0)]
    res = gibbs_gmm(x, 2, prior_scale=np.eye(2), **SHORT, generator=0)
    assert bool(torch.isfinite(res.covariances).all())


def test_a_prior_scale_too_small_for_the_data_is_said_as_such():
    # the data's spread (1e8) swamps a 1e-300 prior scale: the posterior scale's Cholesky
    # factor fails in float64 inside a sweep
    x = np.c_[np.linspace(0, 1e8, 30), np.linspace(0, 1e8, 30) + 1e-300]
    with pytest.raises(ParameterError, match="standardise the columns of x"):
        gibbs_gmm(x, 2, prior_scale=1e-300 * np.eye(2), **SHORT, generator=0)


def test_a_gibbs_alpha_and_the_hmm_init_states_are_checked():
    with pytest.raises(ParameterError, match="alpha must be a finite number > 0"):
        gibbs_gmm(X, 2, alpha=-1.0, **SHORT)
    with pytest.raises(ParameterError, match="alpha_start"):
        gibbs_hmm(X, 2, alpha_start=float("nan"), **SHORT)
    with pytest.raises(DataError, match="init_states must hold 30 integer states"):
        gibbs_hmm(X, 2, init_states=["a"] * 30, **SHORT)
    with pytest.raises(DataError, match="init_states"):
        gibbs_hmm(X, 2, init_states=[[0], [0, 1]], **SHORT)
    with pytest.raises(DataError, match=r"lengths must be integers, got \[10.5, 19.5\]"):
        gibbs_hmm(X, 2, lengths=[10.5, 19.5], **SHORT)
    # refused as the HMM estimators refuse them (em/hmm/sequences.py, check_lengths), not
    # flattened into two sequences
    with pytest.raises(DataError, match=r"1-D list of sequence lengths, got shape \(1, 2\)"):
        gibbs_hmm(X, 2, lengths=[[10, 20]], **SHORT)
    with pytest.raises(DataError, match="lengths must be integers, got dtype bool"):
        gibbs_hmm(X[:2], 2, lengths=[True, True], **SHORT)


@pytest.mark.parametrize("run", ["sample", "svgd"])
@pytest.mark.parametrize(
    "init, error, match",
    [
        ({"mu": "a", "sigma": 1.0}, DataError, r"init\['mu'\]"),
        ({"mu": float("nan"), "sigma": 1.0}, ParameterError, r"init\['mu'\] is NaN"),
        ({"mu": [0.0, float("nan")], "sigma": 1.0}, ParameterError, r"NaN at index \(1,\)"),
        ({"mu": 0.0, "sigma": float("inf")}, DataError, r"init\['sigma'\] has an infinite"),
        ({"mu": 0.0, "sigma": object()}, DataError, r"init\['sigma'\]"),
        ({}, ParameterError, "init must name every parameter"),
    ],
)
def test_a_bad_starting_value_is_named(run, init, error, match):
    cons = {"sigma": constraints.positive}
    with pytest.raises(error, match=match):
        if run == "sample":
            sample(_normal, init, constraints=cons, num_warmup=2, num_draws=2, progress_bar=False)
        else:
            svgd(_normal, init, constraints=cons, num_particles=4, num_iter=2, progress_bar=False)


def _run(run, log_density, init, **options):
    if run == "sample":
        short = {"num_warmup": 2, "num_draws": 2, "num_chains": 2, "progress_bar": False}
        return sample(log_density, init, **short, **options)
    return svgd(log_density, init, num_particles=4, num_iter=2, progress_bar=False, **options)


@pytest.mark.parametrize("run", ["sample", "svgd"])
@pytest.mark.parametrize(
    "cons, match",
    [
        ([constraints.positive], r"constraints must be a dict .* got a list.*parameters: \['mu', "),
        ([("sigma", constraints.positive)], "constraints must be a dict from parameter name"),
        ({"sigma": "positive"}, r"constraints\['sigma'\] must be a torch.distributions.constr"),
    ],
)
def test_constraints_must_be_a_dict_of_constraint_objects(run, cons, match):
    with pytest.raises(ParameterError, match=match):
        _run(run, _normal, {"mu": 0.0, "sigma": 1.0}, constraints=cons)


@pytest.mark.parametrize("run", ["sample", "svgd"])
@pytest.mark.parametrize(
    "con, value, match",
    [
        # biject_to's transforms would read the chain dimension as the vector's entries
        (constraints.simplex, 1.0, r"Simplex\(\) constraint needs a vector .* shape \(\) \(a"),
        (ordered_vector, 0.5, r"ordered_vector constraint needs a vector .* has shape \(\)"),
        (constraints.simplex, torch.zeros(0), r"at least one entry .* has shape \(0,\)"),
        (
            constraints.independent(constraints.simplex, 1),
            [0.5, 0.5],
            r"needs an array of 2 dimensions .* has shape \(2,\)",
        ),
    ],
)
def test_a_vector_constraint_on_a_parameter_without_entries_is_refused(run, con, value, match):
    with pytest.raises(ParameterError, match=rf"parameter 'w': .*{match}"):
        _run(run, lambda w: -(w**2).sum(), {"w": value}, constraints={"w": con})


@pytest.mark.parametrize("run", ["sample", "svgd"])
def test_init_keys_that_are_not_names_are_refused_naming_the_arguments(run):
    match = r"keys must be strings; got the key 1 \(int\); log_density's arguments are \(mu\)"
    with pytest.raises(ParameterError, match=match):
        _run(run, lambda mu: -(mu**2), {1: 0.0})
    with pytest.raises(ParameterError, match=r"no argument named 'nu'; its arguments are \(mu\)"):
        _run(run, lambda mu: -(mu**2), {"mu": 0.0, "nu": 0.0})


def test_sample_target_names_a_start_that_is_not_one_value_per_chain_and_parameter():
    from latentfit.mcmc import Target, sample_target

    target = Target(lambda mu: -(mu**2), {"mu": ()})
    short = {"num_chains": 2, "num_warmup": 2, "num_draws": 2, "progress_bar": False}
    with pytest.raises(ParameterError, match=r"naming every parameter \(\['mu'\]\).*\['nu'\]"):
        sample_target(target, start={"nu": torch.zeros(2)}, **short)
    with pytest.raises(ParameterError, match=r"start\['mu'\] must have shape \(2,\).*got \(3,\)"):
        sample_target(target, start={"mu": torch.zeros(3)}, **short)


def test_a_scalar_starting_value_keeps_its_shape():
    res = sample(
        _normal,
        {"mu": 0.0, "sigma": np.float64(1.0)},
        constraints={"sigma": constraints.positive},
        num_warmup=5,
        num_draws=5,
        progress_bar=False,
    )
    assert res.draws["mu"].shape == (4, 5) and res.draws["sigma"].shape == (4, 5)


def test_svgd_refuses_a_start_outside_the_support():
    with pytest.raises(ParameterError, match=r"sigma=-1\.0 is not"):
        svgd(
            _normal,
            {"mu": 0.0, "sigma": -1.0},
            constraints={"sigma": constraints.positive},
            num_particles=4,
            num_iter=2,
            progress_bar=False,
        )


def test_svgd_stops_at_a_diverging_step_instead_of_returning_nan_particles():
    # a step of 1e10 throws the particles to where sigma = exp(u) overflows
    with pytest.raises(ParameterError, match=r"SVGD iteration 1: .* Try a smaller step_size"):
        svgd(
            _normal,
            {"mu": 0.0, "sigma": 1.0},
            constraints={"sigma": constraints.positive},
            num_particles=10,
            num_iter=50,
            step_size=1e10,
            generator=0,
            progress_bar=False,
        )
    # a density that is NaN where the particles start is named at iteration 0
    with pytest.raises(ParameterError, match=r"SVGD iteration 0: .* smaller init_scale"):
        svgd(lambda mu: mu * float("nan"), {"mu": 0.0}, num_particles=4, progress_bar=False)


PRIORS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 5),
    st.text(max_size=2),
    st.none(),
    st.lists(st.floats(-5, 5), max_size=3),
    st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3), max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(GIBBS)),
    st.sampled_from(["prior_loc", "prior_kappa", "prior_df", "prior_scale"]),
    PRIORS,
)
def test_any_prior_samples_or_is_refused_with_a_documented_error(run, name, value):
    try:
        res = GIBBS[run](**{name: value}, generator=0)
    except DOCUMENTED_ERRORS as exc:
        assert str(exc).strip()
        return
    for draws in res.draws.values():
        assert bool(torch.isfinite(draws).all()), f"{name}={value!r}: non-finite draws"


def test_the_summed_out_targets_check_their_data_and_priors():
    from latentfit.mcmc.gibbs import gmm_log_density, hmm_log_density
    from latentfit.mcmc.gibbs_hmm import hmm_conjugate_log_density

    bad = np.r_[X[:, 0], np.nan]
    for target in (gmm_log_density, hmm_log_density, hmm_conjugate_log_density):
        with pytest.raises(DataError, match="NaN at entry 30"):
            target(bad, 2)
        with pytest.raises(ParameterError, match="n_"):
            target(X[:, 0], 0)
    with pytest.raises(DataError, match="univariate"):
        hmm_log_density(X, 2)
    with pytest.raises(ParameterError, match="prior_scale"):
        gmm_log_density(X, 2, prior_scale=-1.0)
    with pytest.raises(ParameterError, match="prior_df"):
        hmm_conjugate_log_density(X[:, 0], 2, prior_df=float("nan"))
    with pytest.raises(ParameterError, match="prior_loc"):
        hmm_conjugate_log_density(X[:, 0], 2, prior_loc="0")


def test_an_argument_arviz_refuses_is_named_on_every_result():
    nuts = sample(
        _normal,
        {"mu": 0.0, "sigma": 1.0},
        constraints={"sigma": constraints.positive},
        num_warmup=5,
        num_draws=5,
        progress_bar=False,
    )
    for res in (nuts, GIBBS["gibbs_gmm"](), GIBBS["gibbs_hmm"]()):
        with pytest.raises(ParameterError, match=r"summary\(hdi_prob=1.5\): ArviZ refused"):
            res.summary(hdi_prob=1.5)
        with pytest.raises(ParameterError, match="mcse method foo not found"):
            res.mcse(method="foo")
    with pytest.raises(ParameterError, match=r"ess\(method='nope'\)"):
        nuts.ess(method="nope")


def _short_run(**kw):
    return sample(
        _normal,
        {"mu": 0.0, "sigma": 1.0},
        constraints={"sigma": constraints.positive},
        num_warmup=10,
        progress_bar=False,
        **kw,
    )


def test_diagnostics_never_say_no_problems_over_nan_r_hats():
    # ArviZ gives NaN R-hat and ESS below 4 draws a chain: said, not "no problems found"
    too_few = _short_run(num_draws=2, num_chains=2).diagnostics()
    assert "need at least 4 draws per chain, got 2" in too_few
    # a one-entry simplex is the constant 1: its R-hat is NaN and named
    res = sample(
        lambda mu, w: -0.5 * mu**2 + 0.0 * w.sum(),
        {"mu": 0.0, "w": [1.0]},
        constraints={"w": constraints.simplex},
        num_warmup=20,
        num_draws=20,
        num_chains=2,
        progress_bar=False,
    )
    assert bool((res.draws["w"] == 1.0).all())
    assert "R-hat is NaN for ['w']" in res.diagnostics()


def test_arviz_shape_warning_does_not_reach_the_console():
    import logging

    from latentfit.mcmc.result import import_arviz

    res = _short_run(num_draws=2, num_chains=2)
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log = import_arviz()._log
    getattr(log, "cache", []).clear()  # ArviZ's logger says each message once a process
    log.addHandler(handler)
    try:
        res.summary()
        res.rhat()
    finally:
        log.removeHandler(handler)
    assert not [m for m in seen if "Shape validation failed" in m]
    assert "need at least 4 draws per chain" in res.diagnostics()


@pytest.mark.parametrize(
    "missing, says",
    [("arviz", "need ArviZ: pip install arviz"), ("platformdirs", "pip install platformdirs")],
)
def test_an_arviz_that_cannot_be_imported_is_named_with_what_is_missing(monkeypatch, missing, says):
    """ArviZ installed without one of its own dependencies: the message names that one,
    not "pip install arviz" (which would change nothing)."""
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "arviz":
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(MissingDependencyError, match=says):
        import_arviz()


def test_a_start_outside_the_support_is_named_by_nuts():
    with pytest.raises(ParameterError, match=r"sigma=\[-1\.0, -1\.0, -1\.0, -1\.0\] is not"):
        sample(
            _normal,
            {"mu": 0.0, "sigma": -1.0},
            constraints={"sigma": constraints.positive},
            init_strategy="init",
            num_warmup=2,
            num_draws=2,
            progress_bar=False,
        )


@pytest.mark.parametrize("run", ["sample", "svgd"])
@pytest.mark.parametrize("vectorized", [False, True])
@pytest.mark.parametrize(
    "log_density, match",
    [
        # the arguments are not init's names
        (lambda loc, sigma: _normal(loc, sigma), r"takes no argument named 'mu'.*\(loc, sigma\)"),
        (lambda mu, sigma, nu: _normal(mu, sigma), r"requires 'nu', which init does not name"),
        # a Python number, or a value cut off from the parameters' gradient
        (
            lambda mu, sigma: 1.0,
            "must return a torch tensor computed from its arguments, got float",
        ),
        (
            lambda mu, sigma: (mu > 0).double() + sigma.detach(),
            "does not depend on its parameters through torch operations",
        ),
        # a value that is not a real number
        (
            lambda mu, sigma: (-0.5 * mu**2 + 0.0 * sigma).to(torch.complex128),
            r"must return a real floating-point tensor, got torch.complex128: .* \(.real\)",
        ),
        (
            lambda mu, sigma: (mu > sigma).long(),
            "must return a real floating-point tensor, got torch.int64",
        ),
    ],
)
def test_a_log_density_that_cannot_be_sampled_says_why(run, vectorized, log_density, match):
    init = {"mu": 0.0, "sigma": 1.0}
    options = {"constraints": {"sigma": constraints.real}, "vectorized": vectorized}
    with pytest.raises(ParameterError, match=match):
        if run == "sample":
            sample(log_density, init, num_warmup=2, num_draws=2, progress_bar=False, **options)
        else:
            svgd(log_density, init, num_particles=4, num_iter=2, progress_bar=False, **options)


@pytest.mark.parametrize("run", ["sample", "svgd"])
@pytest.mark.parametrize("vectorized", [False, True])
def test_a_density_cut_off_from_its_gradient_is_refused_under_a_constraint(run, vectorized):
    # log|det J| of sigma's positive constraint depends on u whatever the density does: with
    # it added first, a detached density passed the check and sampled the Jacobian's gradient
    y = torch.tensor([0.1, 0.5, -0.3])

    def log_density(mu, sigma):
        at = (mu[..., None], sigma[..., None]) if vectorized else (mu, sigma)
        return torch.distributions.Normal(*at).log_prob(y).sum(-1).detach()

    with pytest.raises(ParameterError, match="does not depend on its parameters"):
        _run(
            run,
            log_density,
            {"mu": 0.0, "sigma": 1.0},
            constraints={"sigma": constraints.positive},
            vectorized=vectorized,
        )


def test_a_log_density_rejecting_every_chain_without_a_gradient_is_a_rejection():
    # a vectorized density may return a constant -inf where it rejects every chain at once:
    # that is a rejection (no start is found), not a density cut off from its gradient
    def log_density(mu):  # (c,)
        return torch.where(mu > 100.0, -0.5 * mu**2, torch.full_like(mu, -torch.inf)).detach()

    with pytest.raises(ParameterError, match="no finite log-density in 100 random starts"):
        sample(
            log_density, {"mu": 0.0}, vectorized=True, num_warmup=2, num_draws=2, progress_bar=False
        )


def test_a_hand_written_gradient_that_is_not_a_tensor_is_named():
    with pytest.raises(
        ParameterError, match=r"gradient for 'mu' must be a tensor .* got float 1\.0"
    ):
        sample(
            lambda mu: -0.5 * mu**2,
            {"mu": 0.0},
            value_and_grad=lambda mu: (-0.5 * mu**2, {"mu": 1.0}),
            vectorized=True,
            **SHORT,
            progress_bar=False,
        )


def _flag_calls():
    from latentfit.mcmc import Target

    short = dict(num_chains=2, num_warmup=2, num_draws=2)

    def density(mu):
        return -0.5 * mu**2

    return {
        "sample vectorized": lambda v: sample(density, {"mu": 0.0}, vectorized=v, **short),
        "sample progress_bar": lambda v: sample(density, {"mu": 0.0}, progress_bar=v, **short),
        "svgd vectorized": lambda v: svgd(density, {"mu": 0.0}, vectorized=v, num_iter=2),
        "svgd progress_bar": lambda v: svgd(density, {"mu": 0.0}, progress_bar=v, num_iter=2),
        "Target vectorized": lambda v: Target(density, {"mu": ()}, vectorized=v),
        "resume progress_bar": lambda v: sample(
            density, {"mu": 0.0}, progress_bar=False, **short
        ).resume(2, progress_bar=v),
        "gibbs co_assignment": lambda v: GIBBS["gibbs_gmm"](co_assignment=v),
    }


@pytest.mark.parametrize("call", list(_flag_calls()))
@pytest.mark.parametrize("value", ["no", 1, 0.0])
def test_flags_must_be_true_or_false(call, value):
    # found by a bug hunt: vectorized="no" and progress_bar="no" counted as true (a string is
    # truthy), as relocate_stranded did before it was checked
    name = call.split()[1]
    with pytest.raises(ParameterError, match=f"{name} must be (None .*)?True or False, got"):
        _flag_calls()[call](value)


def test_the_summed_out_mixture_samples_one_column_data():
    # found by a bug hunt: for one column init['loc_rest'] had shape (k, 0), which sample
    # refused as "init['loc_rest'] has 0 feature(s)", a name the user never wrote
    from latentfit.mcmc.gibbs import gmm_log_density

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, generator=g) - 3, torch.randn(20, generator=g) + 3])
    for data in (x, x[:, None]):
        log_density, init, cons = gmm_log_density(data, 2)
        assert list(init) == ["weights", "loc0", "scales"]  # loc_rest: no other coordinates
        res = sample(
            log_density,
            init,
            constraints=cons,
            vectorized=True,
            num_chains=2,
            num_warmup=30,
            num_draws=30,
            generator=0,
            progress_bar=False,
        )
        shapes = {k: tuple(v.shape) for k, v in res.draws.items()}
        assert shapes == {"weights": (2, 30, 2), "loc0": (2, 30, 2), "scales": (2, 30, 2, 1)}
        assert all(bool(torch.isfinite(v).all()) for v in res.draws.values())
        assert bool((res["loc0"][..., 1] > res["loc0"][..., 0]).all())  # ordered: labels fixed


def test_the_summed_out_mixture_names_a_column_without_spread():
    # a constant column scaled the priors by an sd of 0: every start had a NaN density and
    # sample said "no finite log-density in 100 random starts"
    from latentfit.mcmc.gibbs import gmm_log_density

    with pytest.raises(DataError, match="x column 1 has no spread"):
        gmm_log_density(np.c_[X[:, 0], np.ones(30)], 2)
    with pytest.raises(DataError, match="x column 0 has no spread"):
        gmm_log_density(np.ones((3, 1)), 2)
    with pytest.raises(DataError, match=r"x has 1 sample.*at least 2 are needed"):
        gmm_log_density(np.ones((1, 1)), 2)


def test_the_summed_out_mixture_starts_ordered_on_tied_data():
    # tied quantiles made init['loc0'] not strictly increasing: init_strategy="init" refused
    # the target's own init as "outside the support of the constraints"
    from latentfit.mcmc.gibbs import gmm_log_density

    log_density, init, cons = gmm_log_density(np.r_[np.zeros(10), np.ones(2)], 3)
    assert bool((init["loc0"][1:] > init["loc0"][:-1]).all())
    res = sample(
        log_density,
        init,
        constraints=cons,
        vectorized=True,
        init_strategy="init",
        num_chains=2,
        num_warmup=5,
        num_draws=5,
        generator=0,
        progress_bar=False,
    )
    assert res.num_draws == 5


def test_too_few_rows_say_how_many_each_sampler_needs():
    # gibbs_gmm on 0 rows said "at least 1 are needed" though it needs 2 (1 row is refused
    # too); hmm_log_density on 1 row (or constant data) scaled its priors by an sd of NaN (0)
    # and sample said "no finite log-density in 100 random starts"
    from latentfit.mcmc.gibbs import gmm_log_density, hmm_log_density

    for n in (0, 1):
        for target in (gmm_log_density, hmm_log_density):
            with pytest.raises(DataError, match=rf"x has {n} sample.*at least 2 are needed"):
                target(np.zeros(n), 2)
    # the Gibbs samplers sample the posterior of one row under a given prior_scale (test_gibbs)
    for gibbs in (gibbs_gmm, gibbs_hmm):
        with pytest.raises(DataError, match=r"x has 0 sample.*at least 1 are needed"):
            gibbs(np.zeros((0, 2)), 2)
        with pytest.raises(DataError, match=r"x has 1 row: the default prior_scale .* pass"):
            gibbs(np.zeros((1, 2)), 2)
    with pytest.raises(DataError, match="x column 0 has no spread"):
        hmm_log_density(np.ones(5), 2)


def _plus_inf_beyond_one(mu):
    # +inf where mu[0] > 1: an unbounded density, which no sampler can draw from
    inf = torch.tensor(float("inf"), dtype=mu.dtype)
    return torch.where(mu[..., 0] > 1.0, inf, -0.5 * (mu**2).sum(-1))


@pytest.mark.parametrize("compile_", [False, "replay"])
@pytest.mark.parametrize("vectorized", [False, True])
@pytest.mark.parametrize("num_warmup, stage", [(50, "warm-up iteration"), (0, "draw")])
def test_a_log_density_of_plus_inf_is_refused_not_sampled(compile_, vectorized, num_warmup, stage):
    # a chain that reached +inf stayed there (every trajectory from an energy of -inf
    # diverged): 40 of 40 transitions diverged and the draws came back with lp = +inf
    with pytest.raises(ParameterError, match=rf"\(chain \d, first at {stage} \d+\)") as err:
        sample(
            _plus_inf_beyond_one,
            {"mu": torch.zeros(2)},
            num_chains=2,
            num_warmup=num_warmup,
            num_draws=20,
            vectorized=vectorized,
            compile=compile_,
            generator=0,
            progress_bar=False,
        )
    text = str(err.value)
    assert text.startswith("the log-density is +inf at {'mu': [")
    at = ast.literal_eval(text.split(" at ", 1)[1].split(" (chain")[0])  # the point named
    assert at["mu"][0] > 1.0  # where the density is +inf


def test_resume_refuses_draws_that_reach_plus_inf():
    bounded = [True]

    def log_density(mu):  # eager (compile=False): called at every leapfrog step
        return -0.5 * (mu**2).sum() if bounded else _plus_inf_beyond_one(mu)

    res = sample(log_density, {"mu": torch.zeros(2)}, num_chains=2, num_warmup=20,
                 num_draws=5, compile=False, generator=0, progress_bar=False)  # fmt: skip
    bounded.clear()
    with pytest.raises(ParameterError, match=r"\+inf .*first at draw (\d+)") as err:
        res.resume(50, progress_bar=False)
    assert int(err.value.args[0].split("first at draw ")[1].split(")")[0]) >= 5  # resumed draws


@pytest.mark.parametrize("run", ["sample", "svgd"])
@pytest.mark.parametrize(
    "init, cons, shown",
    [
        ({"mu": torch.zeros(0)}, None, r"mu \(0,\)"),
        ({"mu": torch.ones(1)}, {"mu": constraints.simplex}, r"mu \(1,\)"),  # fixed at [1.0]
    ],
)
def test_a_run_with_nothing_to_sample_is_refused(run, init, cons, shown):
    # no free value: the sampler moved nothing, returned draws of shape (chains, draws, 0)
    # and diagnostics() said "no problems found"
    def log_density(mu):
        return -0.5 * (mu**2).sum()

    with pytest.raises(ParameterError, match=rf"nothing to sample: no parameter .*\({shown};"):
        _run(run, log_density, init, constraints=cons)


@pytest.mark.parametrize("run", list(GIBBS))
@pytest.mark.parametrize(
    "x, says",
    [
        # both were said as "the columns of x are linearly dependent", which they are not
        (X[:2], r"x has 2 rows for 2 columns .*; pass more rows than columns"),
        (
            X * 1e-200,
            r"column\(s\) \[0, 1\] of x vary so little .* underflows float64.*; rescale x",
        ),
        # the covariance of these is singular in exact arithmetic too
        (np.c_[X[:, 0], 2 * X[:, 0]], r"the columns of x are linearly dependent.*; drop those"),
    ],
)
def test_a_singular_default_prior_scale_is_said_with_its_cause(run, x, says):
    # the default prior scale is the data covariance, singular here: its Cholesky factor fails
    cov = np.atleast_2d(np.cov(x.T))
    assert np.linalg.eigvalsh(cov).min() <= 1e-12 * max(np.abs(cov).max(), 1e-300)
    with pytest.raises(DataError, match=says):
        GIBBS[run](x)


@pytest.mark.parametrize(
    "name, k, says",
    [
        ("gmm_log_density", 10**5, "gmm_log_density with 100,000 components of 1 columns"),
        ("hmm_log_density", 2000, "hmm_log_density with 2,000 states on 30 rows"),
        ("hmm_conjugate_log_density", 2000, "hmm_conjugate_log_density with 2,000 states"),
    ],
)
def test_a_summed_out_target_beyond_the_memory_is_refused_before_its_init(
    monkeypatch, name, k, says
):
    # n_components / n_states sized init's tensors unchecked: hmm_log_density(x, 10**5) built
    # a 10**5 x 10**5 transition matrix (80 GB). With 1 MB "available", these few MB show it.
    import latentfit.mcmc.gibbs
    import latentfit.mcmc.gibbs_hmm  # noqa: F401 (the module; latentfit.mcmc names the function)

    modules = [sys.modules["latentfit.mcmc.gibbs"], sys.modules["latentfit.mcmc.gibbs_hmm"]]
    target = next(getattr(m, name) for m in modules if hasattr(m, name))
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**6)
    with pytest.raises(ResourceLimitError, match=rf"{says}.*; use fewer (components|states)"):
        target(X[:, 0], k)
    assert len(target(X[:, 0], 2)) == 3  # a target of the usual size is built


#: Each copy with the values of vectorized it is tested at: under vmap torch.tensor and numpy
#: raise (and are named so already).
_COPIES = {
    how: (cut, (True,) if how in ("torch.tensor", "numpy") else (True, False))
    for how, cut in COPIES.items()
}


@pytest.mark.parametrize("run", ["sample", "svgd"])
@pytest.mark.parametrize(
    "how, vectorized", [(h, v) for h, (_, vs) in sorted(_COPIES.items()) for v in vs]
)
def test_a_log_density_that_copies_a_parameter_is_refused(run, how, vectorized):
    """A log-density whose term in mu was computed from a copy of mu (torch.tensor, numpy, a
    detached tensor, torch.no_grad()) has a gradient of zero in mu: NUTS moved mu without it
    and SVGD's particles in mu only pushed each other apart. Its value follows mu while its
    gradient does not: refused at the start, naming mu."""
    cut = _COPIES[how][0]

    def log_density(mu, sigma):
        return -0.5 * (cut(mu) - 3.0) ** 2 - 0.5 * sigma**2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's copy-construct advice
        with pytest.raises(ParameterError, match=r"log_density depends on 'mu' outside torch"):
            _run(run, log_density, {"mu": 0.0, "sigma": 0.0}, vectorized=vectorized)


def test_a_log_density_in_torch_is_not_refused_at_its_mode():
    """Every chain started at the mode in mu (a gradient of zero there) of a density written
    in torch: sampled, not refused."""
    res = _run(
        "sample",
        _normal,
        {"mu": 0.1, "sigma": 1.0},
        constraints={"sigma": constraints.positive},
        init_strategy="init",
    )
    assert bool(torch.isfinite(res["mu"]).all())


@pytest.mark.parametrize("run", ["sample", "svgd"])
@pytest.mark.parametrize(
    "cut",
    [
        lambda t: torch.tensor(t),
        lambda t: torch.tensor([t])[0],
        lambda t: torch.from_numpy(np.asarray(t.detach().numpy())),
    ],
    ids=["torch.tensor", "torch.tensor([t])", "numpy"],
)
def test_a_copy_that_vmap_cannot_map_is_named_as_a_copy(run, cut):
    """Under vmap torch.tensor(mu), torch.tensor([mu]) and numpy raise at every point, and the
    refusal quoted torch's words only ("Can't detach views in-place ... DDP", "calling .item()"
    with the advice to pass vectorized=True, "Cannot access data pointer"): it now says the
    density takes a parameter out of torch and what to write instead."""

    def log_density(mu, sigma):
        return -0.5 * (cut(mu) - 3.0) ** 2 - 0.5 * sigma**2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ParameterError, match=r"takes a parameter out of torch.*torch\.stack"):
            _run(run, log_density, {"mu": 0.0, "sigma": 0.0})


@pytest.mark.parametrize(
    "run, options",
    [("sample", {}), ("sample", {"init_strategy": "init"}), ("svgd", {})],
    ids=["random starts", "init", "svgd"],
)
def test_a_copy_that_vmap_cannot_map_is_said_first_not_as_a_bad_start(run, options):
    """The cause is known, so it comes first: the refusal began "no finite log-density in 100
    random starts ...; pass init=" (or "not finite at init; choose init inside the support",
    "choose init where the density is finite"), advice about starts that no start follows."""

    def log_density(mu, sigma):
        return -0.5 * (torch.tensor(mu) - 3.0) ** 2 - 0.5 * sigma**2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ParameterError) as info:
            _run(run, log_density, {"mu": 0.0, "sigma": 0.0}, **options)
    said = str(info.value)
    assert said.startswith("the log-density takes a parameter out of torch"), said
    for misleading in ("random starts", "pass init=", "choose init", "DistributedDataParallel"):
        assert misleading not in said, said
