"""Issue 12, estimator side: every public estimator answers bad input with a documented error
that names the problem, checks column names as scikit-learn does, and sizes its memory from
validated inputs."""

import warnings

import numpy as np
import pandas as pd
import pytest
from hmmlearn import hmm as hmmlearn_hmm

import latentfit as lf
from latentfit.errors import (
    DOCUMENTED_ERRORS,
    DataError,
    NotFittedError,
    ParameterError,
    ResourceLimitError,
)

rng = np.random.default_rng(0)
X_REAL = np.vstack([rng.normal(0, 1, (30, 2)), rng.normal(4, 1, (30, 2))]) + 5
X_COUNT = rng.poisson(2.0, size=(60, 2)).astype(float)
X_BIN = (rng.random((60, 2)) < 0.4).astype(float)
X_CAT = rng.integers(0, 3, size=(60, 2)).astype(float)
X_SYM = rng.integers(0, 3, size=(60, 1))
# rows of eight trials (their own generator: the data above stay as they were)
X_TRIALS = np.random.default_rng(1).multinomial(8, [0.4, 0.6], size=60)

ESTIMATORS = {
    "GaussianMixture": (lambda: lf.GaussianMixture(2, max_iter=5, random_state=0), X_REAL),
    "BayesianGaussianMixture": (
        lambda: lf.BayesianGaussianMixture(n_components=2, max_iter=5, random_state=0),
        X_REAL,
    ),
    "BernoulliMixture": (lambda: lf.BernoulliMixture(2, max_iter=5, random_state=0), X_BIN),
    "CategoricalMixture": (lambda: lf.CategoricalMixture(2, max_iter=5, random_state=0), X_CAT),
    "MultinomialMixture": (lambda: lf.MultinomialMixture(2, max_iter=5, random_state=0), X_COUNT),
    "PoissonMixture": (lambda: lf.PoissonMixture(2, max_iter=5, random_state=0), X_COUNT),
    "MixtureModel": (lambda: lf.MixtureModel(["normal", "normal"], max_iter=5), X_REAL),
    "FactorAnalysis": (lambda: lf.FactorAnalysis(1, max_iter=5, random_state=0), X_REAL),
    "PPCA": (lambda: lf.PPCA(1, max_iter=5, random_state=0), X_REAL),
    "GaussianHMM": (lambda: lf.GaussianHMM(2, n_iter=3, random_state=0), X_REAL),
    "GMMHMM": (lambda: lf.GMMHMM(2, n_mix=2, n_iter=3, random_state=0), X_REAL),
    "PoissonHMM": (lambda: lf.PoissonHMM(2, n_iter=3, random_state=0), X_COUNT),
    "CategoricalHMM": (lambda: lf.CategoricalHMM(2, n_iter=3, random_state=0), X_SYM),
    "MultinomialHMM": (lambda: lf.MultinomialHMM(2, n_iter=3, random_state=0), X_TRIALS),
}

# (bad X, words the message must contain)
BAD_X = {
    "path": ("data.csv", "data.csv"),
    "list of paths": (["a.csv", "b.csv"], "strings or paths"),
    "ragged": ([[1.0, 2.0], [3.0]], "rectangular"),
    "3-D": (np.zeros((4, 2, 2)), "shape (4, 2, 2)"),
    "empty": (np.zeros((0, 2)), "0 sample"),
    "object": (np.array([[1.0, "a"], [2.0, 3.0]], dtype=object), "'a'"),
    "None": (None, "None"),
    "dict": ({"a": 1}, "dict"),
    "NaN": (np.array([[np.nan, 1.0], [1.0, 2.0]]), "NaN at row 0, column 0"),
    "inf": (np.array([[1.0, 1.0], [1.0, np.inf]]), "inf at row 1, column 1"),
    "complex": (np.ones((4, 2)) * 1j, "complex"),
    "strings": (np.array([["a", "b"], ["c", "d"]]), "'a'"),
    # each row one record: read as "np.void((0.0, 0.0), ...) ... given as an argument"
    "structured": (np.zeros(4, dtype=[("a", "f8"), ("b", "f8")]), "structured array (fields a, b)"),
    "dates": (np.arange(4).astype("datetime64[D]").reshape(2, 2), "dates or times"),
}


def _fitted(name):
    make, X = ESTIMATORS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few iterations: convergence warnings
        return make().fit(X)


def _scorer(model):
    return model.score if isinstance(model, lf.FactorAnalysis | lf.PPCA) else model.predict


@pytest.mark.parametrize("bad", list(BAD_X))
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_bad_input_to_every_estimator_is_a_documented_error(name, bad):
    X, words = BAD_X[bad]
    make, _ = ESTIMATORS[name]
    with pytest.raises(DOCUMENTED_ERRORS) as fit_error:
        make().fit(X)
    model = _fitted(name)
    with pytest.raises(DOCUMENTED_ERRORS) as use_error:
        _scorer(model)(X)
    for err in (fit_error.value, use_error.value):
        assert isinstance(err, DataError), err
        if name != "CategoricalHMM" or bad not in ("3-D", "empty"):
            assert words in str(err)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_use_before_fit_is_not_fitted_error(name):
    make, X = ESTIMATORS[name]
    with pytest.raises(NotFittedError):
        _scorer(make())(X)
    with pytest.raises(NotFittedError):
        make().sample(3)


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n != "CategoricalHMM"])
def test_wrong_feature_count_names_both_counts(name):
    model = _fitted(name)
    with pytest.raises(DataError, match=r"5 features.*2|2.*5 features"):
        _scorer(model)(np.ones((3, 5)))


@pytest.mark.parametrize("n_samples", [0, -1, 2.5, "a"])
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_sample_refuses_bad_counts(name, n_samples):
    with pytest.raises(ParameterError, match="n_samples"):
        _fitted(name).sample(n_samples)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_sample_refuses_a_count_beyond_the_machine_before_drawing(name, monkeypatch):
    model = _fitted(name)
    with pytest.raises(ResourceLimitError, match=r"n_samples=1,000,000,000,000 draws"):
        model.sample(10**12)
    # the check follows the memory available, and an ordinary draw passes a small machine
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**6)
    with pytest.raises(ResourceLimitError, match="draw in batches"):
        model.sample(10**5)
    drawn = model.sample(500)
    assert len(drawn[0] if isinstance(drawn, tuple) else drawn) == 500  # (X, labels) or X


@pytest.mark.parametrize(
    "make",
    [
        lambda: lf.GaussianHSMM(2, max_duration=5, n_iter=2, random_state=0),
        lambda: lf.AutoregressiveHMM(2, order=1, n_iter=2, random_state=0),
        lambda: lf.LinearGaussianSSM(1, n_iter=2, random_state=0),
    ],
    ids=["GaussianHSMM", "AutoregressiveHMM", "LinearGaussianSSM"],
)
def test_sequence_models_refuse_a_sample_count_beyond_the_machine(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two iterations: not converged
        model = make().fit(X_REAL)
    with pytest.raises(ResourceLimitError, match=r"n_samples=1,000,000,000,000 draws"):
        model.sample(10**12)
    assert len(model.sample(50)[0]) == 50


# ---------------------------------------------------------------------- column names
@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n != "CategoricalHMM"])
def test_reordered_dataframe_columns_are_refused_naming_both_lists(name):
    make, X = ESTIMATORS[name]
    df = pd.DataFrame(X, columns=["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make().fit(df)
    assert list(model.feature_names_in_) == ["a", "b"]
    score = _scorer(model)
    np.testing.assert_array_equal(score(df), score(X))  # same names, same order: accepted
    with pytest.raises(DataError, match=r"\['b', 'a'\].*\['a', 'b'\].*different order"):
        score(df[["b", "a"]])
    renamed = df.rename(columns={"b": "c"})
    with pytest.raises(DataError, match=r"\['a', 'c'\].*\['a', 'b'\].*different"):
        score(renamed)


def test_flipped_columns_used_to_flip_labels():
    # the case: a 2-D mixture separated along "a" only; swapping the columns would
    # silently relabel half of the points
    Xs = np.column_stack([np.r_[rng.normal(0, 0.3, 50), rng.normal(5, 0.3, 50)], np.zeros(100)])
    Xs[:, 1] = rng.normal(2.5, 0.3, 100)
    df = pd.DataFrame(Xs, columns=["a", "b"])
    model = lf.GaussianMixture(2, random_state=0).fit(df)
    with pytest.raises(DataError):
        model.predict(df[["b", "a"]])


def test_a_refit_on_an_array_forgets_the_names():
    model = lf.GaussianMixture(2, random_state=0).fit(pd.DataFrame(X_REAL, columns=["a", "b"]))
    model.fit(X_REAL)
    assert not hasattr(model, "feature_names_in_")


# ---------------------------------------------------------------------- categorical memory
def test_one_stray_symbol_does_not_size_a_categorical_hmm():
    X = np.array([[0], [1], [10**9], [2]] * 10)
    with pytest.raises(DataError, match=r"row 2 of X holds symbol 1000000000.*n_features"):
        lf.CategoricalHMM(2).fit(X)


def test_a_categorical_hmm_too_big_for_memory_is_refused_with_its_size(monkeypatch):
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**9)
    X = np.array([[0], [1], [2]] * 10)
    with pytest.raises(ResourceLimitError, match=r"2 states x 100,000,000 symbols .*9,600,000,000"):
        lf.CategoricalHMM(2, n_features=10**8).fit(X)


def test_dense_symbols_are_still_inferred_and_fit_like_hmmlearn():
    X = rng.integers(0, 4, size=(200, 1))
    ours = lf.CategoricalHMM(2, n_iter=1, init_params="", random_state=0)
    ref = hmmlearn_hmm.CategoricalHMM(2, n_iter=1, init_params="")
    for m in (ours, ref):
        m.startprob_ = np.array([0.6, 0.4])
        m.transmat_ = np.array([[0.7, 0.3], [0.2, 0.8]])
        m.emissionprob_ = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    assert ours.score(X) == pytest.approx(ref.score(X), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(X)
    assert ours.n_features_ == 4


@pytest.mark.parametrize("n_categories", [None, 10**9 + 1])
def test_one_stray_code_does_not_size_a_categorical_mixture(monkeypatch, n_categories):
    monkeypatch.setattr("latentfit._memory.available_memory", lambda device=None: 10**9)
    X = np.array([[0, 0], [1, 1], [10**9, 2], [2, 0]] * 10)
    model = lf.CategoricalMixture(2, n_categories=n_categories)
    if n_categories is None:
        with pytest.raises(DataError, match="row 2, column 0 holds category 1000000000"):
            model.fit(X)
    else:
        with pytest.raises(
            ResourceLimitError, match="1,000,000,001 categories would need 768,000,000,768 bytes"
        ):
            model.fit(X)


# ---------------------------------------------------------------------- hand-set HMMs
def _hand_set(ours, ref, emission):
    for m in (ours, ref):
        m.startprob_ = np.array([0.6, 0.4])
        m.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
        for k, v in emission.items():
            setattr(m, k, v)


def test_hand_set_poisson_hmm_scores_without_fit_as_hmmlearn():
    ours, ref = lf.PoissonHMM(2), hmmlearn_hmm.PoissonHMM(2)
    _hand_set(ours, ref, {"lambdas_": np.array([[1.0, 2.0], [5.0, 0.5]])})
    assert ours.score(X_COUNT) == pytest.approx(ref.score(X_COUNT), rel=1e-12)
    np.testing.assert_array_equal(ours.predict(X_COUNT), ref.predict(X_COUNT))


def test_hand_set_gaussian_hmm_scores_without_fit_as_hmmlearn():
    ours = lf.GaussianHMM(2, covariance_type="diag")
    ref = hmmlearn_hmm.GaussianHMM(2, covariance_type="diag")
    _hand_set(ours, ref, {"means_": np.array([[5.0, 5.0], [9.0, 9.0]])})
    ours.covars_ = ref.covars_ = np.array([[1.0, 2.0], [1.5, 1.0]])
    assert ours.score(X_REAL) == pytest.approx(ref.score(X_REAL), rel=1e-12)


@pytest.mark.parametrize(
    ("attribute", "value", "match"),
    [
        ("transmat_", np.full((3, 3), 1 / 3), r"transmat_ must have shape \(2, 2\)"),
        ("transmat_", np.array([[0.5, 0.6], [0.5, 0.5]]), "row 0 sums to 1.1"),
        ("transmat_", "abc", "transmat_ must be an array of numbers"),
        ("startprob_", np.array([1.0, 0.0, 0.0]), r"startprob_ must have shape \(2,\)"),
        ("startprob_", np.array([np.nan, 1.0]), "startprob_ must hold finite numbers"),
        ("means_", np.zeros((2, 3)), r"means_ must have shape \(2, 2\)"),
    ],
)
def test_wrong_hand_set_parameters_are_parameter_errors(attribute, value, match):
    model = _fitted("GaussianHMM")
    setattr(model, attribute, value)
    with pytest.raises(ParameterError, match=match):
        model.score(X_REAL)


def test_hmm_with_only_some_parameters_set_is_not_fitted():
    model = lf.PoissonHMM(2)
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.full((2, 2), 0.5)
    with pytest.raises(NotFittedError, match="lambdas_"):
        model.score(X_COUNT)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"n_iter": -1}, "n_iter"),
        ({"tol": "a"}, "tol"),
        ({"params": None}, "params"),
        ({"min_covar": -1.0}, "min_covar"),
        ({"covariance_type": "wide"}, "covariance_type"),
    ],
)
def test_hmm_settings_are_parameter_errors(setting, match):
    with pytest.raises(ParameterError, match=match):
        lf.GaussianHMM(2, **setting).fit(X_REAL)


@pytest.mark.parametrize("setting", [{"weight_concentration": "a"}, {"weight_concentration": 0}])
def test_mixture_settings_are_parameter_errors(setting):
    with pytest.raises(ParameterError, match=r"concentration|could not convert"):
        lf.PoissonMixture(2, **setting).fit(X_COUNT)


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n != "CategoricalHMM"])
def test_one_dimensional_x_says_how_to_reshape(name):
    # (CategoricalHMM takes a 1-D array of symbols as hmmlearn does)
    make, _ = ESTIMATORS[name]
    with pytest.raises(DataError, match=r"reshape\(-1, 1\)"):
        make().fit(np.arange(6.0))
    with pytest.raises(DataError, match=r"reshape\(-1, 1\)"):
        _scorer(_fitted(name))(np.arange(6.0))


@pytest.mark.parametrize(
    ("y", "match"),
    [(np.zeros(3), r"shape \(60,\)"), (np.full(60, 0.5), "integer"), (np.full(60, 7), "7")],
)
def test_bad_semi_supervised_labels_are_data_errors(y, match):
    with pytest.raises(DataError, match=match):
        lf.PoissonMixture(2).fit(X_COUNT, y)


@pytest.mark.parametrize("tol", ["a", float("nan"), float("inf"), -1.0, None, True])
@pytest.mark.parametrize("name", [n for n in ESTIMATORS if "HMM" not in n])
def test_tol_must_be_a_finite_non_negative_number(name, tol):
    # FactorAnalysis/PPCA used to raise torch's TypeError for tol="a" and run with NaN;
    # tol=inf stopped every fit after one iteration without a word.
    make, X = ESTIMATORS[name]
    with pytest.raises(ParameterError, match="tol"):
        make().set_params(tol=tol).fit(X)


@pytest.mark.parametrize("tol", ["a", float("nan"), float("inf"), None])
@pytest.mark.parametrize("name", [n for n in ESTIMATORS if "HMM" in n])
def test_hmm_tol_must_be_a_number_below_inf(name, tol):
    make, X = ESTIMATORS[name]
    with pytest.raises(ParameterError, match="tol"):
        make().set_params(tol=tol).fit(X)


def test_hmm_tol_minus_inf_runs_every_iteration():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (not converged: by design, no gain is enough)
        model = lf.GaussianHMM(2, n_iter=4, tol=float("-inf"), random_state=0).fit(X_REAL)
    assert model.monitor_.iter == 4


@pytest.mark.parametrize("reg_covar", [float("inf"), float("nan"), -1e-6, "a"])
def test_reg_covar_must_be_finite_and_non_negative(reg_covar):
    with pytest.raises(ParameterError, match="reg_covar"):
        lf.GaussianMixture(2, reg_covar=reg_covar).fit(X_REAL)


@pytest.mark.parametrize("verbose", ["a", 2.5])
@pytest.mark.parametrize("name", ["GaussianMixture", "PoissonMixture", "BayesianGaussianMixture"])
def test_verbose_must_be_an_integer(name, verbose):
    # "a" reached the caller as Python's TypeError from `verbose > 1`
    make, X = ESTIMATORS[name]
    with pytest.raises(ParameterError, match="verbose"):
        make().set_params(verbose=verbose).fit(X)


@pytest.mark.parametrize("name", ["GaussianMixture", "BayesianGaussianMixture", "PoissonMixture"])
def test_fewer_samples_than_components_is_a_data_error_saying_what_to_do(name):
    make, X = ESTIMATORS[name]
    with pytest.raises(DataError, match=r"n_samples = 3.*smaller n_components"):
        make().set_params(n_components=5).fit(X[:3])


@pytest.mark.parametrize(
    "make, X, words",
    [
        (lambda: lf.CategoricalHMM(10**5, n_iter=1), X_SYM, "100,000 states"),
        (lambda: lf.LinearGaussianSSM(10**5, n_iter=1), X_REAL, "100,000 state dimensions"),
    ],
    ids=["CategoricalHMM", "LinearGaussianSSM"],
)
def test_a_state_count_beyond_the_machine_is_refused_before_the_fit(make, X, words):
    with pytest.raises(ResourceLimitError, match=words):
        make().fit(X)


@pytest.mark.parametrize(
    "make, dtype, limit",
    [
        (lambda dt: lf.PoissonHMM(2, dtype=dt), "float64", 2.0**53),
        (lambda dt: lf.PoissonHMM(2, dtype=dt), "float32", 2.0**24),
        (lambda dt: lf.PoissonHSMM(2, max_duration=3, dtype=dt), "float64", 2.0**53),
        (lambda dt: lf.PoissonMixture(2, dtype=dt), "float64", 2.0**53),
        (lambda dt: lf.MultinomialMixture(2, dtype=dt), "float64", 2.0**53),
        (lambda dt: lf.MultinomialHMM(2, dtype=dt), "float32", 2.0**24),
    ],
    ids=[
        "poisson_hmm",
        "poisson_hmm_f32",
        "poisson_hsmm",
        "poisson_mix",
        "multinomial_mix",
        "mhmm_f32",
    ],
)
def test_a_count_beyond_the_dtype_s_whole_numbers_is_named(make, dtype, limit):
    # found by the property tests: a PoissonHSMM fitted counts of 1e300 and scored them at
    # -11.3 (k log λ - λ - log Γ(k+1) cancelled terms of 7e302 to nothing; the exact value at
    # k = λ = 1e300 is -346); float32 rounded counts from 2^24 on without a word
    X = np.array([[1.0, 2.0], [2.0, 0.0], [limit, 1.0], [3.0, 4.0], [0.0, 1.0], [5.0, 2.0]])
    with pytest.raises(DataError, match=r"X\[2, 0\] = .* at or beyond 2\^(53|24)"):
        make(dtype).fit(X)
    X[2, 0] = limit - 1 if dtype == "float64" else 1000.0  # the largest exact count passes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make(dtype).fit(X)


def test_a_pandas_na_is_a_missing_value_as_in_scikit_learn():
    """Nullable columns (Int64, Float64: read_csv(dtype_backend="numpy_nullable"),
    convert_dtypes()) hold pd.NA where a value is missing. scikit-learn reads it as NaN;
    latentfit refused it as "not a number", even with missing='marginalize'."""
    from sklearn.utils import check_array

    with_na = pd.DataFrame(X_REAL, columns=["a", "b"]).astype("Float64")
    with_na.loc[4, "b"] = pd.NA
    with_nan = pd.DataFrame(X_REAL, columns=["a", "b"])
    with_nan.loc[4, "b"] = np.nan
    read = check_array(with_na, ensure_all_finite="allow-nan")  # scikit-learn's reading
    np.testing.assert_array_equal(np.isnan(read), np.isnan(with_nan.to_numpy()))
    for cls in (lf.GaussianMixture, lf.GaussianHMM):
        ours = cls(2, random_state=0, missing="marginalize").fit(with_na)
        ref = cls(2, random_state=0, missing="marginalize").fit(with_nan)
        assert ours.score(with_na) == ref.score(with_nan)
        with pytest.raises(DataError, match=r"NaN at row 4, column 1 \('b'\)"):
            cls(2).fit(with_na)
    counts = pd.DataFrame(X_SYM, columns=["s"]).astype("Int64")
    counts.loc[7, "s"] = pd.NA
    with pytest.raises(DataError, match=r"NaN at row 7, column 0"):
        lf.PoissonHMM(2).fit(counts)


#: settings several estimators share, each with values fit must refuse, naming the setting
SHARED_SETTINGS = {
    "warm_start": ["no", "False", 1, None],  # a string counted by its truth value: "no" is true
    "verbose_interval": [0, float("nan"), "10", 2.5],
    "learning_decay": ["zzz", float("nan"), 0.3, 2.0],  # partial_fit's steps need (0.5, 1]
    "learning_offset": ["zzz", -1.0, float("inf")],
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_shared_settings_are_checked_by_fit(name):
    """fit checks every setting the estimator has, as scikit-learn's do, including those
    only a warm start, the progress print or partial_fit read: they were accepted."""
    make, X = ESTIMATORS[name]
    checked = 0
    for setting, values in SHARED_SETTINGS.items():
        if setting not in make().get_params():
            continue
        for value in values:
            with pytest.raises(ParameterError, match=setting):
                make().set_params(**{setting: value}).fit(X)
            checked += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make().fit(X)  # the defaults pass
    if name in ("GaussianMixture", "BayesianGaussianMixture", "PoissonMixture"):
        assert checked > 0  # the test reaches the settings
