"""Switching to latentfit is a change of import: every class standing in for one of
scikit-learn's or hmmlearn's takes all of that class's constructor arguments, by name and in
the same positional order (a call ``GaussianHMM(3, "full", 1e-3)`` must mean what it meant), and
has all of its public methods; a fitted HMM has all of hmmlearn's fitted attributes."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import sklearn.decomposition as skd
import sklearn.mixture as skm

import latentfit

hmm = pytest.importorskip("hmmlearn.hmm")
vhmm = pytest.importorskip("hmmlearn.vhmm")

PAIRS = [
    (skm.GaussianMixture, "GaussianMixture"),
    (skm.BayesianGaussianMixture, "BayesianGaussianMixture"),
    (skd.FactorAnalysis, "FactorAnalysis"),
    *[
        (getattr(hmm, n), n)
        for n in ("GaussianHMM", "GMMHMM", "CategoricalHMM", "PoissonHMM", "MultinomialHMM")
    ],
    (vhmm.VariationalGaussianHMM, "VariationalGaussianHMM"),
    (vhmm.VariationalCategoricalHMM, "VariationalCategoricalHMM"),
]


def _arguments(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    return positional, {p.name: p for p in params}


@pytest.mark.parametrize("ref, name", PAIRS, ids=[n for _, n in PAIRS])
def test_every_argument_of_the_reference_in_its_order(ref, name):
    ours = getattr(latentfit, name)
    ref_positional, ref_all = _arguments(ref)
    our_positional, our_all = _arguments(ours)
    assert set(ref_all) <= set(our_all), sorted(set(ref_all) - set(our_all))
    # the reference's positional arguments come first, in its order; ours follow
    assert our_positional[: len(ref_positional)] == ref_positional


@pytest.mark.parametrize("ref, name", PAIRS, ids=[n for _, n in PAIRS])
def test_every_public_method_of_the_reference(ref, name):
    ours = getattr(latentfit, name)
    methods = {m for m in dir(ref) if not m.startswith("_") and callable(getattr(ref, m))}
    assert methods - set(dir(ours)) == set()


@pytest.mark.parametrize(
    "name", ["GaussianHMM", "GMMHMM", "CategoricalHMM", "PoissonHMM", "MultinomialHMM"]
)
def test_a_fitted_hmm_has_every_fitted_attribute_of_hmmlearns(name):
    rng = np.random.default_rng(0)
    data = {
        "GaussianHMM": rng.normal(size=(120, 2)),
        "GMMHMM": rng.normal(size=(120, 2)),
        "CategoricalHMM": rng.integers(0, 4, size=(120, 1)),
        "PoissonHMM": rng.poisson(3, size=(120, 2)),
        "MultinomialHMM": rng.multinomial(5, [0.2, 0.3, 0.5], size=120),
    }[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(hmm, name)(2, random_state=0, n_iter=3).fit(data)
        ours = getattr(latentfit, name)(2, random_state=0, n_iter=3).fit(data)
    fitted = {k for k in vars(ref) if k.endswith("_") and not k.startswith("_")}
    assert fitted - set(dir(ours)) == set()
    for attribute in ("converged", "history", "iter"):
        assert hasattr(ours.monitor_, attribute)


def _estimators():
    """Every estimator class latentfit exports (scikit-learn's BaseEstimator)."""
    from sklearn.base import BaseEstimator

    out = []
    for name in latentfit.__all__:
        obj = getattr(latentfit, name)
        if isinstance(obj, type) and issubclass(obj, BaseEstimator):
            out.append(obj)
    return out


@pytest.mark.parametrize("cls", _estimators(), ids=lambda c: c.__name__)
def test_every_setting_is_in_the_signature(cls):
    # help(), editors and scikit-learn read the constructor's signature: it names every
    # setting get_params reports, and hides none behind **kwargs
    from sklearn.utils.estimator_checks import check_do_not_raise_errors_in_init_or_set_params

    params = inspect.signature(cls).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert set(cls._get_param_names()) == set(params)
    check_do_not_raise_errors_in_init_or_set_params(cls.__name__, cls())


#: scikit-learn's estimator checks each scikit-learn-shaped class passes (the HMMs take
#: hmmlearn's ``fit(X, lengths)``, where the checks pass labels as ``y``), with the checks
#: expected to fail and why
SKLEARN_CHECKED = {
    "GaussianMixture": (
        latentfit.GaussianMixture(n_components=2, max_iter=20),
        # as scikit-learn itself expects of KMeans: k-means++ seeding draws rows at random and
        # the check shuffles the weighted rows, so the seeds (and the local optimum) differ.
        # Weights equal repetition from a shared start: tests/em/test_gmm.py
        # test_integer_sample_weights_equal_repeated_rows.
        {
            "check_sample_weight_equivalence_on_dense_data": (
                "random k-means++ seeding depends on row order, as for sklearn's KMeans"
            )
        },
    ),
    "BayesianGaussianMixture": (
        latentfit.BayesianGaussianMixture(n_components=2, max_iter=30),
        # the check draws 15 rows of 30 columns: the default covariance_prior (the covariance
        # of X) is then singular, which the fit refuses with a DataError saying so
        {
            "check_sample_weight_equivalence_on_dense_data": (
                "15 rows of 30 columns: the default covariance_prior is singular and refused"
            )
        },
    ),
    "FactorAnalysis": (latentfit.FactorAnalysis(2, max_iter=50), {}),
    "PPCA": (latentfit.PPCA(2, max_iter=50), {}),
    "FactorAnalysis-varimax": (latentfit.FactorAnalysis(2, rotation="varimax"), {}),
}


@pytest.mark.parametrize("name", list(SKLEARN_CHECKED))
def test_passes_sklearn_check_estimator(name):
    """The conventions a user of the scikit-learn class relies on: clone, get_params, fit
    returning self, n_features_in_, pickling, read-only and F-ordered input, ..."""
    from sklearn.utils.estimator_checks import check_estimator

    model, expected = SKLEARN_CHECKED[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(model, expected_failed_checks=expected, on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert failed == [], failed
    assert len(results) > 40  # the suite did run
