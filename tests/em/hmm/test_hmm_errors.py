"""Bad input gets a clear error naming the problem."""

import warnings

import numpy as np
import pytest
import torch

import latentfit
from latentfit import (
    GMMHMM,
    AutoregressiveHMM,
    CategoricalHMM,
    GaussianHMM,
    MultinomialHMM,
    PoissonHMM,
)
from latentfit.em.hmm import emissions as E
from latentfit.em.hsmm.models import CategoricalHSMM, GaussianHSMM, PoissonHSMM
from latentfit.errors import (
    DataError,
    DegenerateComponentWarning,
    ParameterError,
    PriorWarning,
)

X = np.random.default_rng(0).normal(size=(50, 2))


def fitted():
    m = GaussianHMM(2, n_iter=2, random_state=0)
    with pytest.warns():
        return m.fit(X)


@pytest.mark.parametrize(
    ("lengths", "match"),
    [
        ([20, 20], "lengths sum to 40 but X has 50 rows"),
        ([60, -10], r"lengths\[1\] = -10"),
        ([25.5, 24.5], "lengths must be integers"),
        ([[25, 25]], "1-D"),
        # past int64: said as too long, not as "must be integers, got dtype object"
        ([10**20], r"lengths\[0\] = 1e\+20 is more than the 50 rows"),
        ([1e20], r"lengths\[0\] = 1e\+20 is more than the 50 rows"),
        ([10, -(10**20)], r"at least one step; lengths\[1\] = -1e\+20"),
    ],
)
def test_bad_lengths(lengths, match):
    with pytest.raises(ValueError, match=match):
        GaussianHMM(2).fit(X, lengths)
    with pytest.raises(ValueError, match=match):
        fitted().score(X, lengths)


def test_nan_and_inf_name_the_row():
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7, column 1"):
        GaussianHMM(2).fit(bad)
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match="row 7, column 1"):
        fitted().predict(bad)


def test_categorical_symbols():
    with pytest.raises(ValueError, match=r"symbols must be integers; row 2 of X holds 1.5"):
        CategoricalHMM(2).fit(np.array([[0], [1], [1.5], [2]]))
    with pytest.raises(ValueError, match="non-negative; row 1 of X holds -1"):
        CategoricalHMM(2).fit(np.array([[0], [-1], [2]]))
    with pytest.raises(
        ValueError, match=r"row 2 of X holds symbol 3 but the model emits symbols 0..2"
    ):
        CategoricalHMM(2, n_features=3).fit(np.array([[0], [1], [3]]))
    with pytest.raises(ValueError, match="column"):
        CategoricalHMM(2).fit(np.zeros((5, 2), dtype=int))
    m = CategoricalHMM(2, n_iter=3, random_state=0)
    with pytest.warns():
        m.fit(np.array([[0], [1], [2], [1], [0]]))
    with pytest.raises(ValueError, match="symbol 5"):
        m.predict(np.array([[0], [5]]))


def test_poisson_counts():
    with pytest.raises(ValueError, match=r"non-negative; X\[1, 0\] = -2"):
        PoissonHMM(2).fit(np.array([[1, 2], [-2, 3], [0, 0]]))
    with pytest.raises(ValueError, match=r"whole numbers; X\[2, 1\] = 0.5 is fractional"):
        PoissonHMM(2).fit(np.array([[1, 2], [2, 3], [0, 0.5]]))


def test_start_and_transition_rows_must_sum_to_one():
    m = fitted()
    m.transmat_ = np.array([[0.5, 0.5], [0.3, 0.6]])
    with pytest.raises(ValueError, match=r"transmat_ rows must sum to 1; row 1 sums to 0\.9"):
        m.score(X)
    m = fitted()
    m.startprob_ = np.array([0.7, 0.7])
    with pytest.raises(ValueError, match=r"startprob_ must sum to 1, got 1\.4"):
        m.decode(X)
    m = GaussianHMM(2, init_params="mc")
    m.startprob_ = np.array([0.2, 0.2])
    with pytest.raises(ValueError, match="startprob_ must sum to 1"):
        m.fit(X)


def test_settings_are_checked_at_fit():
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianHMM(2, covariance_type="diagonal").fit(X)
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        GaussianHMM(0).fit(X)
    with pytest.raises(ValueError, match="n_init must be a positive integer"):
        GaussianHMM(2, n_init=0).fit(X)
    with pytest.raises(ValueError, match="Unknown decoder 'best'"):
        fitted().decode(X, algorithm="best")
    # True is an int to Python: n_components=True sized the priors by it (numpy's bare
    # "an integer is required"), n_init=True ran one restart
    for cls in (GaussianHMM, GaussianHSMM):
        with pytest.raises(
            ParameterError, match="n_components must be a positive integer, got True"
        ):
            cls(True).fit(X)
        with pytest.raises(ParameterError, match="n_init must be a positive integer, got True"):
            cls(2, n_init=True).fit(X)
    with pytest.raises(ValueError, match="fewer than n_components"):
        GaussianHMM(5).fit(X[:3])
    with pytest.raises(ValueError, match="3 features but the model was fitted with 2"):
        fitted().score(np.zeros((4, 3)))


_START = dict(startprob_=np.array([0.5, 0.5]), transmat_=np.array([[0.9, 0.1], [0.2, 0.8]]))
# a row no state can emit (a symbol, category or count of probability 0 in every state) in the
# second sequence, row 4 = its step 1; the first sequence is possible
_IMPOSSIBLE = {
    "CategoricalHMM": (
        {"n_features": 3},
        {"emissionprob_": np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])},
        np.array([[0], [1], [1], [0], [2], [1]]),
    ),
    "MultinomialHMM": (
        {"n_trials": 3},
        {"emissionprob_": np.array([[0.5, 0.5, 0.0], [0.3, 0.7, 0.0]])},
        np.array([[3, 0, 0], [1, 2, 0], [2, 1, 0], [0, 3, 0], [1, 1, 1], [2, 1, 0]]),
    ),
    "PoissonHMM": (
        {},
        {"lambdas_": np.array([[1.0, 0.0], [3.0, 0.0]])},
        np.array([[1, 0], [0, 0], [4, 0], [2, 0], [1, 2], [0, 0]]),
    ),
}


@pytest.mark.parametrize("name", sorted(_IMPOSSIBLE))
def test_a_row_no_state_can_emit_scores_minus_inf_and_has_no_posteriors(name):
    """score gives -inf for a sequence with a row no state can emit, as hmmlearn does on the
    same parameters (and the mixtures for an outcome of probability 0); it raised a DataError.
    Posteriors and paths of that sequence are undefined (hmmlearn's are NaN): refused, naming
    the row and its sequence."""
    import latentfit

    hl = pytest.importorskip("hmmlearn.hmm")
    options, emissions, X = _IMPOSSIBLE[name]
    ours = getattr(latentfit, name)(2, init_params="", **options)
    ref = getattr(hl, name)(2, init_params="", **options)
    for m in (ours, ref):
        for attr, value in {**_START, **emissions}.items():
            setattr(m, attr, value)
    lengths = [3, 3]
    assert ours.score(X[:3]) == pytest.approx(ref.score(X[:3]), rel=1e-12)
    assert np.isfinite(ours.score(X[:3]))
    assert ours.score(X, lengths) == ref.score(X, lengths) == -np.inf
    assert ours.score(X) == ref.score(X) == -np.inf
    calls = (
        ours.score_samples,
        ours.predict_proba,
        ours.predict,
        ours.decode,
        lambda X, lengths: ours.decode(X, lengths, algorithm="map"),
    )
    for call in calls:
        with pytest.raises(
            DataError,
            match=r"row 4 of X \(step 1 of sequence 1\) has zero probability under every state",
        ):
            call(X, lengths)


@pytest.mark.parametrize("name", sorted(_IMPOSSIBLE))
def test_a_fit_that_keeps_its_emissions_names_a_row_no_state_can_emit(name):
    """fit and partial_fit weighed such a row with log 0 clamped to about -708 and went on:
    with the emissions kept (params without their letter) the fit reported a log-likelihood
    of -711.9 for data of probability 0 and learnt its transitions from them. They name the
    row (of the user's X, whatever the E-step's groups of sequences) and say what to change;
    a fit that re-estimates the emissions still learns the value."""
    import latentfit

    options, emissions, X = _IMPOSSIBLE[name]
    cls = getattr(latentfit, name)
    letter = cls._emission_letters

    def model(params):
        m = cls(2, init_params="", params=params, n_iter=3, **options)
        for attr, value in {**_START, **emissions}.items():
            setattr(m, attr, value)
        return m

    where = r"row 4 of X \(step 1 of sequence 1\) has zero probability under every state"
    for batch_steps in (3, 100):  # one group of sequences, or one per sequence
        with pytest.raises(DataError, match=rf"{where}.*add '{letter}' to params"):
            model("st").fit(X, [3, 3], batch_steps=batch_steps)
    with pytest.raises(DataError, match=rf"row 4 of X has zero .*add '{letter}' to params"):
        model("st").partial_fit(X, [3, 3], burn_in=0, mstep_every=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learnt = model("st" + letter).fit(X, [3, 3])
    assert np.isfinite(learnt.score(X, [3, 3]))


def test_a_step_no_path_reaches_is_named_not_given_zero_posteriors():
    """A left-right model (structural zeros in transmat_, hmmlearn's classic example) and a
    sequence every row of which some state can emit, but no path can: hmmlearn's posteriors
    are NaN; ours were rows of zeros and a Viterbi path of log-probability -inf."""
    hl = pytest.importorskip("hmmlearn.hmm")
    start = dict(
        startprob_=np.array([1.0, 0.0, 0.0]),
        transmat_=np.array([[0.4, 0.3, 0.3], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]),
        emissionprob_=np.array([[0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
    )
    ours, ref = CategoricalHMM(3, init_params=""), hl.CategoricalHMM(3, init_params="")
    for m in (ours, ref):
        for name, value in start.items():
            setattr(m, name, value)
    ok = np.array([[0], [1], [2]])
    X = np.array([[0], [1], [2], [0], [2], [1]])  # row 5: symbol 1 after state 2
    np.testing.assert_allclose(ours.predict_proba(ok), ref.predict_proba(ok), atol=1e-12)
    assert ours.score(X, [3, 3]) == ref.score(X, [3, 3]) == -np.inf  # score's answer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # hmmlearn's 0/0
        assert np.isnan(ref.predict_proba(X, [3, 3])[3:]).all()  # the second sequence
    calls = (
        ours.predict_proba,
        ours.score_samples,
        ours.decode,
        ours.predict,
        lambda X, lengths: ours.decode(X, lengths, algorithm="map"),
    )
    for call in calls:
        with pytest.raises(DataError, match=r"row 5 of X \(step 2 of sequence 1\) is impossible"):
            call(X, [3, 3])
    with pytest.raises(DataError, match=r"row 0 of X \(step 0 of sequence 0\).*startprob_ 0"):
        ours.predict_proba(np.array([[2], [2]]))


def test_convergence_warning_names_n_iter_not_max_iter():
    """An HMM's argument is n_iter (hmmlearn's name): the warning must advise that one."""
    import warnings

    import numpy as np

    from latentfit import GaussianHMM

    X = np.random.default_rng(0).normal(size=(200, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GaussianHMM(3, n_iter=1, tol=0.0, random_state=0).fit(X)
    texts = [str(w.message) for w in caught if "did not converge" in str(w.message)]
    assert texts and "larger n_iter" in texts[0] and "max_iter" not in texts[0]


@pytest.mark.parametrize(
    "cls",
    [GaussianHMM, GMMHMM, PoissonHMM, CategoricalHMM, MultinomialHMM, AutoregressiveHMM],
    ids=lambda c: c.__name__,
)
def test_implementation_is_checked_and_selects_nothing(cls):
    # hmmlearn's argument, kept for drop-in use: only "log" and "scaling", and the same fit
    rng = np.random.default_rng(3)
    X = rng.poisson(2.0, size=(80, 1)) if cls in (PoissonHMM, CategoricalHMM) else None
    if cls is MultinomialHMM:
        X = rng.multinomial(6, [0.2, 0.3, 0.5], size=80)
    if X is None:
        X = rng.normal(size=(80, 2))
    with pytest.raises(ParameterError, match="implementation must be 'log' or 'scaling', got 'lg'"):
        cls(n_components=2, implementation="lg").fit(X)
    fits = [
        cls(n_components=2, implementation=impl, n_iter=3, random_state=0).fit(X)
        for impl in ("log", "scaling")
    ]
    for name in ("startprob_", "transmat_"):
        np.testing.assert_array_equal(getattr(fits[0], name), getattr(fits[1], name))
    assert fits[0].score(X) == fits[1].score(X)


@pytest.mark.parametrize(
    ("covariance_type", "covars", "match"),
    [
        ("full", [[[1, 2], [2, 1]], [[1, 0], [0, 1]]], "state 0 is not positive definite"),
        ("full", [[[1, 0], [0, 1]], [[1, 0], [0, -1]]], "state 1 is not positive definite"),
        ("tied", [[1, 2], [2, 1]], "the tied covariance is not positive definite"),
        ("diag", [[1, 1], [1, -1]], "state 1 has a variance <= 0"),
        ("spherical", [0.0, 1.0], "state 0 has a variance <= 0"),
        ("diag", [[1, np.nan], [1, 1]], "covars_ must hold finite numbers"),
    ],
)
def test_covariances_set_by_hand_are_checked_by_state(covariance_type, covars, match):
    """A covars_ that is no covariance is the user's argument, named as such (it was a
    DegenerateComponentError about a collapse, suggesting the mixtures' reg_covar)."""
    m = GaussianHMM(2, covariance_type=covariance_type, init_params="")
    m.startprob_, m.transmat_ = np.full(2, 0.5), np.full((2, 2), 0.5)
    m.means_, m.covars_ = np.zeros((2, 2)), np.array(covars, dtype=float)
    for call in (m.score, m.predict, lambda X: m.fit(X)):
        with pytest.raises(ParameterError, match=match):
            call(X)


#: Runs of 10 rows of sd 1 about 0 and 5 by turns (200 rows, 100 about each centre)
_TWO = np.random.default_rng(0).normal(size=(200, 2)) + np.repeat([0.0, 5.0] * 10, 10)[:, None]


@pytest.mark.parametrize("cls", [GaussianHMM, GaussianHSMM])
def test_covariances_or_means_set_by_hand_start_a_fit_that_initialises_the_other(cls):
    """covars_ set by hand with 'm' in init_params (k-means starts the means) stopped fit
    with AttributeError: 'GaussianHMM' object has no attribute 'means_' (the covariances
    were checked together with means not set yet); means_ set by hand with 'c' in
    init_params, the same for covars_. Each is checked and kept on its own, as hmmlearn."""
    letters = "std" if cls is GaussianHSMM else "st"
    m = cls(2, covariance_type="diag", params=letters + "m", init_params=letters + "m")
    m.set_params(n_iter=50, random_state=0)
    m.covars_ = np.array([[1.0, 1.0], [2.0, 2.0]])
    m.fit(_TWO)
    np.testing.assert_array_equal(np.diagonal(m.covars_, axis1=1, axis2=2), [[1, 1], [2, 2]])
    # the two clusters' centres, as the k-means start leads to them (sampling error of a
    # mean of 100 rows of sd 1: 0.1; 0.3 is three of it)
    np.testing.assert_allclose(np.sort(m.means_[:, 0]), [0, 5], atol=0.3)
    m = cls(2, covariance_type="diag", params=letters + "c", init_params=letters + "c")
    m.set_params(n_iter=50, random_state=0)
    m.means_ = np.array([[0.0, 0.0], [5.0, 5.0]])
    m.fit(_TWO)
    np.testing.assert_array_equal(m.means_, [[0, 0], [5, 5]])
    # each run's mean square about its centre, by the runs (the states find them: 5 sd
    # apart); 1% for the covariance prior and the few rows a state may share
    labels = np.repeat([0, 1] * 10, 10)
    want = [((_TWO[labels == j] - 5.0 * j) ** 2).mean(0) for j in (0, 1)]
    np.testing.assert_allclose(np.diagonal(m.covars_, axis1=1, axis2=2), want, rtol=1e-2)
    with pytest.raises(ParameterError, match=r"'diag' covars must have shape \(2, 2\)"):
        m.set_params(init_params=letters + "m")
        m.covars_ = np.ones((2, 3))
        m.fit(_TWO)


def test_a_collapse_in_the_fit_names_the_hmms_own_remedy():
    """float32 with a variance floor below its precision: a state collapses onto the 200
    repeated rows. Its variance about the data's centre rounds to noise there, so it is
    computed about its own mean (em.gaussian.far_components): the update gives exactly
    covars_prior / 200, and the warning names the HMM's floors, not reg_covar. (It stopped
    with DegenerateComponentError before that.)"""
    data = np.r_[X, np.zeros((200, 2))] + 1e4
    m = GaussianHMM(2, covariance_type="full", dtype="float32", min_covar=1e-30, random_state=0)
    with pytest.warns(DegenerateComponentWarning, match=r"state \d \(on 200 row\(s\)") as rec:
        m.fit(data)
    text = str(rec[0].message)
    assert "covars_prior/min_covar" in text and "reg_covar" not in text
    state = int(np.argmin(np.abs(m.means_ - 1e4).sum(1)))
    np.testing.assert_allclose(np.diag(m.covars_[state]), [0.01 / 200] * 2, rtol=1e-5)


#: 30 rows about the origin and 5 identical rows at (9, 9): the mixture component of a GMMHMM
#: that takes the five sits on one point
_TIED_ROWS = np.r_[np.random.default_rng(0).normal(0, 1, (30, 2)), np.full((5, 2), 9.0)]


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_a_gmmhmm_component_on_tied_rows_is_named_by_state_component_and_rows(
    covariance_type, tmp_path, monkeypatch
):
    """A mixture component on the five rows (9, 9) had its variance lifted to min_covar and
    the fit said nothing (an EMMonotonicityWarning at most), where GaussianHMM, GaussianHSMM
    and GaussianMixture warn: the warning names the state, the mixture component and its
    rows, and degenerate_components_ lists (state, component), in the model file too."""
    monkeypatch.chdir(tmp_path)
    m = GMMHMM(2, n_mix=2, covariance_type=covariance_type, random_state=0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m.fit(_TIED_ROWS)
    said = [str(w.message) for w in rec if w.category is DegenerateComponentWarning]
    assert len(said) == 1, [str(w.message) for w in rec]
    assert m.degenerate_components_, said
    for s, c in m.degenerate_components_:
        # independently: the component is the point (9, 9), with nothing of the data's spread
        np.testing.assert_allclose(m.means_[s, c], [9.0, 9.0], atol=1e-6)
        assert (
            f"state {s}, mixture component {c} (on 5 row(s): 30, 31, 32, 33, 34) has its "
            "variance" in said[0]
        )
    assert "at the min_covar floor" in said[0], said[0]
    assert "Try fewer mixture components per state (n_mix) or states" in said[0], said[0]
    m.save("m.lf")
    assert latentfit.load("m.lf").degenerate_components_ == m.degenerate_components_


@pytest.mark.parametrize("cls", [GaussianHMM, GMMHMM, GaussianHSMM])
def test_covariances_kept_as_set_are_never_called_a_collapse(cls):
    """With 'c' out of params the covariances are the user's, not the fit's: a state given
    the min_covar floor on the eight rows of 1e8 (its variance there set, not collapsed)
    was warned about as a collapse and listed in degenerate_components_ (a state given 1.0
    there, too). Fitted from the same start ('c' in params), the covariance does collapse
    onto the identical rows, and that is still said."""
    far = np.array([[1e8], [1e8], [3.0], [5.0], [7.0]] * 4)  # rows 0, 1, 5, 6, ... are 1e8
    fixed = "std" if cls is GaussianHSMM else "st"
    mix = (slice(None), None) if cls is GMMHMM else (slice(None),)  # GMMHMM: one component
    m = cls(2, covariance_type="diag", n_iter=50, random_state=0)
    m.set_params(params=fixed + "m", init_params=fixed)
    m.means_ = np.array([[5.0], [1e8]])[mix]
    m.covars_ = np.array([[1.0], [m.min_covar]])[mix]
    if cls is GMMHMM:
        m.weights_ = np.ones((2, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateComponentWarning)
        m.fit(far)
    assert m.degenerate_components_ == []
    np.testing.assert_array_equal(m.covars_.reshape(2, -1), [[1.0], [m.min_covar]])
    m.set_params(params=fixed + "mc")
    m.means_ = np.array([[5.0], [1e8]])[mix]
    m.covars_ = np.array([[1.0], [m.min_covar]])[mix]
    with pytest.warns(DegenerateComponentWarning, match=r"\(on 8 row\(s\): 0, 1, 5, 6, 10,"):
        m.fit(far)
    assert m.degenerate_components_ == ([(1, 0)] if cls is GMMHMM else [1])


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_a_gmmhmm_of_two_clusters_per_state_is_not_called_degenerate(covariance_type):
    """Each state two well separated clusters of unit spread: no component is degenerate."""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [0.0, 8.0], [30.0, 0.0], [30.0, 8.0]])
    runs = [centres[2 * (i % 2) + rng.integers(2, size=25)] for i in range(8)]  # state i % 2
    data = np.concatenate(runs) + rng.normal(size=(200, 2))
    m = GMMHMM(2, n_mix=2, covariance_type=covariance_type, n_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateComponentWarning)
        m.fit(data)
    assert m.degenerate_components_ == []
    # the fit found the four clusters (not a collapse that went unnoticed)
    found = m.means_.reshape(-1, 2)
    assert np.abs(found[:, None] - centres).sum(2).min(0).max() < 0.5


def test_gmmhmms_default_spherical_prior_with_fewer_features_than_n_mix_is_said():
    """hmmlearn's default spherical covars_prior, -(n_mix + 2)/2, is flat only for
    n_features = n_mix: with one feature and n_mix=5 it inflated the variances until two
    clusters at 0 and 8 were fitted as one state of components at the centre (variances 18 to
    2862, log-likelihood -282.6 where the flat prior finds -142.6), without a word. The fit
    says so, and names the value that gives the likelihood's own update."""
    rng = np.random.default_rng(0)
    data = np.r_[rng.normal(0, 1, (50, 1)), rng.normal(8, 1, (50, 1))]

    def prior_warnings(model):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            model.fit(data)
        return [str(w.message) for w in rec if w.category is PriorWarning]

    said = prior_warnings(GMMHMM(2, n_mix=5, covariance_type="spherical", n_iter=5))
    assert len(said) == 1, said
    assert "n_features=1 < n_mix=5: the default covars_prior (hmmlearn's" in said[0], said
    assert "Pass covars_prior=-1.5 (no prior: the likelihood's own update)" in said[0], said
    # a prior given, the covariances kept, or n_features >= n_mix: nothing to say
    for settings in ({"covars_prior": -1.5}, {"params": "stmw"}, {"n_mix": 1}):
        settings = {"n_mix": 5, **settings}
        assert not prior_warnings(GMMHMM(2, covariance_type="spherical", n_iter=5, **settings))
    # the value said is flat: the spherical update is the weighted scatter over d * n (numpy)
    k, n_mix, d = 2, 3, 1
    st = {
        "n": torch.tensor([[4.0, 0.5, 7.0], [2.0, 3.0, 1.5]], dtype=torch.float64),
        "s1": torch.zeros(k, n_mix, d, dtype=torch.float64),
        "s2": torch.tensor([[[3.0], [0.2], [9.0]], [[1.0], [4.0], [0.6]]], dtype=torch.float64),
        "post": torch.tensor([11.5, 6.5], dtype=torch.float64),
    }
    priors = E.gmm_priors(
        "spherical", k, n_mix, d, 1.0, 0.0, 0.0, -(d + 2) / 2, None, torch.float64, "cpu"
    )
    means = torch.zeros(k, n_mix, d, dtype=torch.float64)
    cov = E.gmm_mstep(
        st, torch.full((k, n_mix), 1 / 3), means, torch.ones(k, n_mix), "spherical", priors, "c"
    )[2]
    np.testing.assert_allclose(
        cov.numpy(), st["s2"].sum(2).numpy() / (d * st["n"].numpy()), rtol=1e-12
    )


# ---------------------------------------------------------------------- priors and hand-set
# parameters: one check (latentfit.em.hmm.settings.check_priors) for every prior of every
# HMM and HSMM, its values with the settings and its shape once the data give n_features


def _fit_data(cls):
    """Data each model takes: counts for Poisson, symbols 0..2 for categorical, rows of six
    trials over three categories for multinomial, else reals."""
    rng = np.random.default_rng(0)
    if "Multinomial" in cls.__name__:
        return rng.multinomial(6, [0.2, 0.3, 0.5], size=60)
    if "Poisson" in cls.__name__:
        return rng.poisson(3, size=(60, 1)).astype(float)
    if "Categorical" in cls.__name__:
        return rng.integers(0, 3, size=(60, 1))
    return X


_HSMM = {"n_components": 2, "max_duration": 5}
_BAD_PRIORS = [
    # (model, constructor arguments, the argument the error names, what it says)
    (PoissonHMM, {"lambdas_weight": np.nan}, "lambdas_weight", "finite numbers >= 0"),
    (PoissonHSMM, {"lambdas_weight": np.nan, **_HSMM}, "lambdas_weight", "finite numbers >= 0"),
    (PoissonHMM, {"lambdas_prior": -100.0, "lambdas_weight": 1.0}, "lambdas_prior", ">= 0"),
    (PoissonHMM, {"lambdas_prior": np.nan}, "lambdas_prior", "holds nan"),
    (PoissonHMM, {"lambdas_prior": np.ones((4, 4))}, "lambdas_prior", r"shape \(4, 4\)"),
    (CategoricalHSMM, {"emissionprob_prior": np.nan, **_HSMM}, "emissionprob_prior", "nan"),
    (CategoricalHMM, {"emissionprob_prior": np.nan}, "emissionprob_prior", "positive"),
    (CategoricalHMM, {"emissionprob_prior": np.inf}, "emissionprob_prior", "holds inf"),
    (CategoricalHMM, {"emissionprob_prior": 0.0}, "emissionprob_prior", "holds 0.0"),
    (CategoricalHMM, {"emissionprob_prior": -3.0}, "emissionprob_prior", "holds -3.0"),
    (
        CategoricalHMM,
        {"emissionprob_prior": np.ones((5, 5))},
        "emissionprob_prior",
        r"shape \(5, 5\), which does not broadcast to \(2, 3\)",
    ),
    (MultinomialHMM, {"emissionprob_prior": 0.0}, "emissionprob_prior", "holds 0.0"),
    (
        MultinomialHMM,
        {"emissionprob_prior": np.ones((2, 4))},
        "emissionprob_prior",
        r"shape \(2, 4\), which does not broadcast to \(2, 3\)",
    ),
    (GMMHMM, {"n_mix": 2, "weights_prior": np.nan}, "weights_prior", "positive"),
    (GMMHMM, {"n_mix": 2, "weights_prior": -1.0}, "weights_prior", "holds -1.0"),
    (GMMHMM, {"n_mix": 2, "weights_prior": np.ones((5, 5))}, "weights_prior", r"\(2, 2\)"),
    (GMMHMM, {"n_mix": 2, "means_prior": np.ones((5, 5))}, "means_prior", r"\(2, 2, 2\)"),
    (GMMHMM, {"n_mix": 2, "covars_prior": np.ones((5, 5))}, "covars_prior", r"\(2, 2, 2\)"),
    (GaussianHMM, {"transmat_prior": np.ones((3, 3))}, "transmat_prior", r"\(2, 2\)"),
    (GaussianHMM, {"startprob_prior": np.ones(5)}, "startprob_prior", r"shape \(5,\)"),
    (GaussianHMM, {"means_prior": np.ones((5, 5))}, "means_prior", r"\(2, 2\)"),
    (GaussianHMM, {"covars_prior": np.ones((5, 5))}, "covars_prior", r"\(2, 2\)"),
    (
        GaussianHMM,
        {"covariance_type": "full", "covars_prior": np.array([[1.0, 0.1], [0.1, -1.0]])},
        "covars_prior",
        r"holds -1.0 at index \(0, 1, 1\)",  # a scale matrix's diagonal must be >= 0
    ),
    (GaussianHSMM, {"transmat_prior": np.ones((3, 3)), **_HSMM}, "transmat_prior", r"\(2, 2\)"),
    (GaussianHSMM, {"means_prior": np.ones((5, 5)), **_HSMM}, "means_prior", r"\(2, 2\)"),
]


@pytest.mark.parametrize(("cls", "settings", "name", "says"), _BAD_PRIORS)
def test_every_prior_of_every_hmm_is_checked_for_values_and_shape(cls, settings, name, says):
    """NaN, inf, out-of-range or wrongly shaped priors are a ParameterError naming the
    argument, not silently wrong rates, emission probabilities stuck at 1, weights never
    updated or a tensor error from the M-step."""
    settings = {"n_components": 2, "n_iter": 3, "random_state": 0, **settings}
    with pytest.raises(ParameterError, match=f"^{name} .*{says}"):
        cls(**settings).fit(_fit_data(cls))


@pytest.mark.parametrize(
    ("cls", "settings"),
    [
        # hmmlearn's own defaults, written out: the inverse-gamma shape of a diagonal or
        # spherical GMMHMM and the inverse-Wishart degrees of freedom of a full one are < 0
        (GMMHMM, {"n_mix": 2, "covars_prior": -1.5, "covars_weight": 0.0}),
        (GMMHMM, {"n_mix": 2, "covariance_type": "spherical", "covars_prior": -2.0}),
        (GMMHMM, {"n_mix": 2, "covariance_type": "full", "covars_weight": -4.0}),
        # a scale matrix with negative entries off its diagonal
        (GaussianHMM, {"covariance_type": "full", "covars_prior": [[1.0, -0.1], [-0.1, 1.0]]}),
        # Dirichlet concentrations below 1 (sparse rows), priors per state or broadcast
        (GaussianHMM, {"transmat_prior": 0.5, "startprob_prior": [0.5, 2.0]}),
        (GaussianHMM, {"means_weight": [1.0, 2.0], "means_prior": [0.0, 1.0]}),
        (PoissonHMM, {"lambdas_prior": [[1.0], [2.0]], "lambdas_weight": [0.5, 1.0]}),
        (CategoricalHMM, {"emissionprob_prior": [0.5, 1.0, 2.0]}),
        (MultinomialHMM, {"emissionprob_prior": [0.5, 1.0, 2.0]}),
    ],
)
def test_valid_hmmlearn_prior_settings_stay_accepted(cls, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence in 3 iterations is not the point
        model = cls(2, n_iter=3, random_state=0, **settings).fit(_fit_data(cls))
    assert np.isfinite(model.score(_fit_data(cls)))


def test_a_prior_of_the_wrong_shape_is_named_before_partial_fit_goes_on():
    model = CategoricalHMM(2, n_features=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(_fit_data(CategoricalHMM))
    model.set_params(emissionprob_prior=np.ones((2, 4)))
    with pytest.raises(ParameterError, match=r"emissionprob_prior has shape \(2, 4\)"):
        model.partial_fit(_fit_data(CategoricalHMM))


@pytest.mark.parametrize("name", ["transmat_", "startprob_"])
def test_hand_set_start_and_transitions_of_the_wrong_shape_are_named_in_fit(name):
    model = GaussianHMM(2, init_params="")
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.full((2, 2), 0.5)
    model.means_ = np.zeros((2, 2))
    model.covars_ = np.ones((2, 2))
    setattr(model, name, np.eye(3) if name == "transmat_" else np.full(3, 1 / 3))
    with pytest.raises(ParameterError, match=rf"{name} must have shape .* got \(3,"):
        model.fit(X)


@pytest.mark.parametrize("init_params", [None, "st"])
def test_poisson_models_take_counts_up_to_the_last_exact_whole_number(init_params):
    """Counts of 1e155 and more once overflowed the start's moments (OverflowError), and a
    PoissonHSMM then fitted a count of 1e300 and scored it at a few nats (k log λ − λ −
    log Γ(k + 1) cancels terms of 7e302 to nothing; the exact value is −346). Counts up to
    2^53 − 1, the last whole number float64 holds with all below it, fit with finite rates;
    beyond it the count is named."""
    kw = {} if init_params is None else {"init_params": init_params}
    for big, fits in ((2.0**53 - 1, True), (1e300, False)):
        counts = np.r_[_fit_data(PoissonHMM), [[big]]]
        for make in (
            lambda: PoissonHMM(2, n_iter=3, random_state=0, **kw),
            lambda: PoissonHSMM(2, max_duration=5, n_iter=3, random_state=0, **kw),
        ):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if fits:
                    model = make().fit(counts)
                    assert np.isfinite(model.lambdas_).all() and np.isfinite(model.score(counts))
                    if isinstance(model, PoissonHSMM):
                        continue  # its segments alternate: the count may share one, 5 rows long
                    assert model.lambdas_.max() > 1e15
                else:
                    with pytest.raises(DataError, match=r"X\[\d+, 0\] = 1e\+300 .* 2\^53"):
                        make().fit(counts)


def test_partial_fit_on_rows_far_from_every_state_gives_advice_for_this_model():
    # rows at 1e200: their squares overflow, so the batch is refused as fit refuses it (before
    # any state is asked for its density, which underflows to zero probability for them all)
    model = GaussianHMM(2, random_state=0).partial_fit(X)
    with pytest.raises(
        DataError, match=r"column 1 of X spans 4.21e\+200 .* overflow float64"
    ) as err:
        model.partial_fit(X * 1e200, burn_in=0, mstep_every=1)
    assert "Categorical" not in str(err.value) and "emissionprob_prior" not in str(err.value)
    assert "rescale X" in str(err.value)


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"means_": np.zeros((2, 3, 2))}, r"means_ must have shape \(2, 2, 2\), got \(2, 3, 2\)"),
        ({"weights_": np.array([[0.5, 0.5], [np.nan, 1.0]])}, "weights_ must hold finite"),
        ({"weights_": np.array([[0.5, 0.6], [0.5, 0.5]])}, "weights_ rows must sum to 1"),
        ({"covars_": -np.ones((2, 2, 2))}, "variance <= 0"),
        ({"means_": np.full((2, 2, 2), np.inf)}, "means_ must hold finite"),
    ],
)
def test_gmmhmm_parameters_kept_by_fit_are_checked_before_any_e_step(edit, match):
    # init_params without a letter keeps the parameter set by hand: a wrong shape reached
    # torch's 'size of tensor a must match', a NaN weight was met as the data's overflow
    X = np.random.default_rng(0).normal(size=(100, 2))
    m = GMMHMM(2, n_mix=2, init_params="", random_state=0)
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    m.weights_, m.means_, m.covars_ = np.full((2, 2), 0.5), np.zeros((2, 2, 2)), np.ones((2, 2, 2))
    for name, value in edit.items():
        setattr(m, name, value)
    with pytest.raises(ParameterError, match=match):
        m.fit(X)


def test_gaussianhmm_means_kept_by_fit_must_be_finite():
    X = np.random.default_rng(0).normal(size=(100, 2))
    m = GaussianHMM(2, init_params="", random_state=0)
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    m.means_, m.covars_ = np.array([[0.0, np.nan], [1.0, 1.0]]), np.ones((2, 2))
    with pytest.raises(ParameterError, match="means_ must hold finite numbers"):
        m.fit(X)


@pytest.mark.parametrize("ct", ["spherical", "diag", "full"])
def test_a_state_far_from_the_centre_is_computed_about_its_own_mean(ct):
    # found by hand: rows 3, 5, 7 and two rows of 1e8 (x4) gave a state the variance -0.499
    # (its update about the data's centre rounds to ±36 there) and a bare error; the state is
    # now computed from x - mu_k, its moments about mu_k, and fitted as the update says:
    # (covars_prior + sum (x - 5)^2) / n = (0.01 + 32) / 12 and 0.01 / 8 on the 1e8 rows
    far = np.array([[1e8], [1e8], [3.0], [5.0], [7.0]] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # the rows of 1e8
        m = GaussianHMM(2, covariance_type=ct, random_state=0, n_iter=50).fit(far)
    order = np.argsort(m.means_[:, 0])
    np.testing.assert_allclose(m.means_[order, 0], [5.0, 1e8], rtol=1e-12)
    np.testing.assert_allclose(m.covars_[order, 0, 0], [32.01 / 12, 0.01 / 8], rtol=1e-9)


def test_a_tied_state_far_from_the_centre_is_pooled_about_each_mean():
    # found by hand: tied statistics were pooled about the centre, which rounds by ±56
    # there, and the fit stopped with a DegenerateComponentError; every state is now taken
    # about its own mean: (covars_prior + sum (x - 5)^2) / n = (0.01 + 32) / 20
    far = np.array([[1e8], [1e8], [3.0], [5.0], [7.0]] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        m = GaussianHMM(2, covariance_type="tied", random_state=0, n_iter=50).fit(far)
    np.testing.assert_allclose(np.sort(m.means_[:, 0]), [5.0, 1e8], rtol=1e-12)
    np.testing.assert_allclose(m.covars_[:, 0, 0], [32.01 / 20] * 2, rtol=1e-9)


@pytest.mark.parametrize("ct", ["diag", "full"])
def test_float32_fits_a_tight_state_far_from_the_others_as_float64_does(ct):
    # a cluster of sd 0.01 at 0 and one of sd 1 at 100: float32 stopped with "state 1's
    # variance is below the rounding of its update"
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.01, (200, 2)), rng.normal(100, 1, (200, 2))]
    ref = GaussianHMM(2, covariance_type=ct, random_state=0, n_iter=30).fit(X)
    m = GaussianHMM(2, covariance_type=ct, dtype="float32", random_state=0, n_iter=30).fit(X)
    order, ref_order = np.argsort(m.means_[:, 0]), np.argsort(ref.means_[:, 0])
    np.testing.assert_allclose(m.covars_[order, 0, 0], ref.covars_[ref_order, 0, 0], rtol=2e-3)
    assert m.score(X) == pytest.approx(ref.score(X), rel=1e-4)


def _gmmhmm_direct_score(m, X) -> float:
    """log p(X) of one sequence under a GMMHMM's parameters, in float64 from x − μ_km
    (scipy's densities, the forward recursion in log space)."""
    from scipy import special
    from scipy.stats import multivariate_normal

    X = np.asarray(X, dtype=np.float64)
    k, n_mix, d = m.means_.shape
    cv, ct = np.asarray(m.covars_, dtype=np.float64), m.covariance_type
    ll = np.zeros((len(X), k))
    for s in range(k):
        comps = []
        for j in range(n_mix):
            if ct in ("full", "tied"):
                cov = cv[s, j] if ct == "full" else cv[s]
            else:
                cov = np.diag(cv[s, j]) if ct == "diag" else np.eye(d) * cv[s, j]
            dens = multivariate_normal(m.means_[s, j].astype(np.float64), cov).logpdf(X)
            comps.append(np.log(m.weights_[s, j]) + dens.reshape(-1))
        ll[:, s] = special.logsumexp(np.stack(comps, 1), 1)
    with np.errstate(divide="ignore"):
        log_a = np.log(m.transmat_.astype(np.float64))
        alpha = np.log(m.startprob_.astype(np.float64)) + ll[0]
    for row in ll[1:]:
        alpha = special.logsumexp(alpha[:, None] + log_a, 0) + row
    return float(special.logsumexp(alpha))


@pytest.mark.parametrize("ct", ["spherical", "diag", "full", "tied"])
def test_a_gmmhmm_component_far_from_the_centre_is_computed_from_x_minus_its_mean(ct):
    # GMMHMM's log-densities were the affine form about the mean of the component means for
    # every component: float32 scored a cluster of sd 0.01 a hundred from one of sd 1 at 751.6
    # (diag) and 343.6 (spherical) where 701.6 and 701.4 are right, and float64 scored rows
    # 3, 5, 7 beside two rows of 1e8 (n_mix=2, diag) at -14.028 where -14.624 is right (its
    # fit following those densities). Such components are now computed from x - mu_km.
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.01, (200, 2)), rng.normal(100, 1, (200, 2))]
    far = np.array([[1e8], [1e8], [3.0], [5.0], [7.0]] * 4)
    kw = dict(n_components=2, covariance_type=ct, random_state=0, n_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m64 = GMMHMM(n_mix=2, **kw).fit(far)
        m32 = GMMHMM(n_mix=1, dtype="float32", **kw).fit(X)
    assert m64.score(far) == pytest.approx(_gmmhmm_direct_score(m64, far), abs=1e-9)
    # float32 densities of the wide state, still in the fast form: up to 1e-3 nats each
    # (far_components' limit), 400 rows
    assert m32.score(X) == pytest.approx(_gmmhmm_direct_score(m32, X), abs=400 * 1e-3)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_gmmhmm_start_on_rows_far_apart_is_refused_by_name(covariance_type):
    # two rows of three features, one at -2**63: the data covariance (entries 4e37) is
    # singular once min_covar is lost in its rounding, and the start's Cholesky factor of it
    # raised torch's _LinAlgError; GaussianHMM refuses the same rows by name
    from latentfit import GMMHMM, GaussianHMM
    from latentfit.em.gaussian import DegenerateComponentError

    X = np.array([[1, -(2**63), -(2**63)], [0, -2, 0]])
    for model in (
        GMMHMM(covariance_type=covariance_type, n_iter=5, random_state=0),
        GaussianHMM(covariance_type=covariance_type, n_iter=5, random_state=0),
    ):
        with pytest.raises(DegenerateComponentError, match="not positive definite"):
            model.fit(X)


@pytest.mark.parametrize("ct", ["spherical", "diag", "full"])
@pytest.mark.parametrize(
    ("model", "d", "far"),
    [(GaussianHMM, 1, 3e17), (GaussianHMM, 2, 3e17), (GaussianHSMM, 1, 1e17)],
)
def test_a_far_state_whose_mean_moved_far_in_one_step_is_fitted_not_refused(model, d, far, ct):
    # 59 rows of normal(2.4, 1) and one row far away: from the broad start the far state's
    # mean moved by 3e5 and more in one step, its moments (about the old mean) could not
    # resolve its variance, and the fit stopped with "state 1's variance is below the
    # rounding of its update" although the next E-step takes them about the new mean. The
    # fit is the update's closed form: the rows' mean and (covars_prior + S) / n
    rng = np.random.default_rng(0)
    X = rng.normal(2.4, 1, (60, d))
    X[30, 0] = far
    near = np.delete(X, 30, 0)
    kw = {"max_duration": 60} if model is GaussianHSMM else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateComponentWarning)  # the far state's one row
        m = model(2, covariance_type=ct, random_state=0, n_iter=30, **kw).fit(X)
    order = np.argsort(m.means_[:, 0])
    np.testing.assert_allclose(m.means_[order[0]], near.mean(0), rtol=1e-12)
    np.testing.assert_array_equal(m.means_[order[1]], X[30])
    var = (0.01 + ((near - near.mean(0)) ** 2).sum(0)) / 59  # (d,)
    if ct == "spherical":
        var = np.full(d, var.mean())
    np.testing.assert_allclose(np.diagonal(m.covars_[order[0]]), var, rtol=1e-9)
    # the far state's one row: covars_prior / 1, lifted by min_covar where a full
    # covariance is singular without it
    v = np.diagonal(m.covars_[order[1]])
    assert np.all((v > 0.01 * (1 - 1e-9)) & (v < 0.011 * (1 + 1e-9)))
