"""MultinomialHMM: against hmmlearn's from identical starting parameters, against brute-force
enumeration of the state paths of a tiny model, against CategoricalHMM (one trial per row),
and its checks of counts, numbers of trials and settings; save/load, pickle and sampling."""

import itertools
import logging
import pickle
import warnings

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hl
from scipy.special import logsumexp
from scipy.stats import multinomial
from sklearn.base import clone

import latentfit
from latentfit import CategoricalHMM, MultinomialHMM
from latentfit.em.hmm.emissions import multinomial_sample
from latentfit.em.sources.chunks import IterableSource
from latentfit.errors import DataError, ParameterError
from latentfit.select import select_model

# hmmlearn logs a warning about its 0.3 change of MultinomialHMM at every construction
logging.getLogger("hmmlearn").setLevel(logging.ERROR)

K, D = 3, 4
PROBS = np.array([[0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6], [0.25, 0.25, 0.25, 0.25]])


def counts(n_trials, n=400, seed=0):
    """Rows of counts from three regimes in blocks of 40 rows; ``n_trials`` a number or an
    array (n,) of the rows' numbers of trials."""
    rng = np.random.default_rng(seed)
    z = (np.arange(n) // 40) % K
    trials = np.broadcast_to(n_trials, (n,))
    return np.stack([rng.multinomial(trials[t], PROBS[z[t]]) for t in range(n)])


def start_params(seed=1):
    rng = np.random.default_rng(seed)
    return dict(
        startprob_=rng.dirichlet(np.ones(K)),
        transmat_=rng.dirichlet(np.ones(K) * 2, size=K),
        emissionprob_=rng.dirichlet(np.ones(D), size=K),
    )


def set_params(model, params):
    for name, value in params.items():
        setattr(model, name, np.array(value))
    return model


def quiet_fit(model, X, lengths=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, lengths, **kw)


@pytest.fixture(scope="module")
def fixed():
    """Ten trials per row, three sequences."""
    return counts(10), [150, 1, 249]


# ---------------------------------------------------------------------- against hmmlearn
@pytest.mark.parametrize("n_trials", [10, None], ids=["n_trials=10", "n_trials=None"])
def test_baum_welch_equals_hmmlearn(fixed, n_trials):
    X, lengths = fixed
    kw = dict(n_trials=n_trials, n_iter=15, tol=-np.inf, init_params="", transmat_prior=1.5)
    ref = quiet_fit(set_params(hl.MultinomialHMM(K, **kw), start_params()), X, lengths)
    ours = quiet_fit(set_params(MultinomialHMM(K, **kw), start_params()), X, lengths)
    # exact algorithms in float64 from the same start: the log-likelihood before every M-step
    # (about -1760 here) and the parameters, to rounding
    assert len(ours.lower_bounds_) == 15
    np.testing.assert_allclose(ours.lower_bounds_, list(ref.monitor_.history), rtol=0, atol=1e-9)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=0, atol=1e-9)
    assert ours.score(X, lengths) == pytest.approx(ref.score(X, lengths), abs=1e-9)
    ll, post = ours.score_samples(X, lengths)
    ref_ll, ref_post = ref.score_samples(X, lengths)
    assert ll == pytest.approx(ref_ll, abs=1e-9)
    np.testing.assert_allclose(post, ref_post, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X, lengths), ref_post, rtol=0, atol=1e-9)
    for algorithm in ("viterbi", "map"):
        lp, path = ours.decode(X, lengths, algorithm=algorithm)
        ref_lp, ref_path = ref.decode(X, lengths, algorithm=algorithm)
        np.testing.assert_array_equal(path, ref_path)
        assert lp == pytest.approx(ref_lp, abs=1e-9)
    np.testing.assert_array_equal(ours.predict(X, lengths), ref.predict(X, lengths))
    assert ours.bic(X, lengths) == pytest.approx(ref.bic(X, lengths), rel=1e-12)
    assert ours.aic(X, lengths) == pytest.approx(ref.aic(X, lengths), rel=1e-12)


def test_rows_of_different_totals_equal_hmmlearn():
    """n_trials=None: every row its own number of trials (hmmlearn reads them from X)."""
    trials = np.random.default_rng(5).integers(1, 30, 300)
    X, lengths = counts(trials, n=300, seed=6), [100, 200]
    kw = dict(n_iter=10, tol=-np.inf, init_params="")
    ref = quiet_fit(set_params(hl.MultinomialHMM(K, **kw), start_params(2)), X, lengths)
    ours = quiet_fit(set_params(MultinomialHMM(K, **kw), start_params(2)), X, lengths)
    np.testing.assert_allclose(ours.lower_bounds_, list(ref.monitor_.history), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, rtol=0, atol=1e-9)
    assert ours.n_trials is None and ours.n_trials_ is None  # totals differ
    # the same with the totals given per row
    given = quiet_fit(
        set_params(MultinomialHMM(K, n_trials=trials, **kw), start_params(2)), X, lengths
    )
    np.testing.assert_array_equal(given.lower_bounds_, ours.lower_bounds_)


def test_one_trial_per_row_is_the_categorical_model_with_its_prior():
    """Mult(1, p) of a one-hot row is Cat(p) of its symbol: the fits agree, prior included."""
    rng = np.random.default_rng(7)
    symbols = np.concatenate([rng.integers(0, 2, 150), rng.integers(1, 4, 150)])
    onehot = np.eye(D, dtype=np.int64)[symbols]
    kw = dict(n_iter=12, tol=-np.inf, init_params="", emissionprob_prior=1.7)
    cat = quiet_fit(set_params(CategoricalHMM(K, **kw), start_params(3)), symbols[:, None])
    mult = quiet_fit(set_params(MultinomialHMM(K, n_trials=1, **kw), start_params(3)), onehot)
    np.testing.assert_allclose(mult.lower_bounds_, cat.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(mult.emissionprob_, cat.emissionprob_, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mult.transmat_, cat.transmat_, rtol=1e-10, atol=1e-14)


def test_bic_of_model_selection_equals_hmmlearns(fixed):
    X, lengths = fixed
    res = select_model(X, lengths, family="multinomial_hmm", n_components=[1, 2, 3], n_iter=5)
    assert [r["label"] for r in res.rows] == [f"MultinomialHMM K={k}" for k in (1, 2, 3)]
    for row, model in zip(res.rows, res.models, strict=True):
        ref = hl.MultinomialHMM(model.n_components, n_trials=10)
        for name in ("startprob_", "transmat_", "emissionprob_"):
            setattr(ref, name, getattr(model, name))
        ref.n_features = D
        assert row["n_parameters"] == sum(ref._get_n_fit_scalars_per_param().values())
        assert row["bic"] == pytest.approx(ref.bic(X, lengths), rel=1e-10)


# ---------------------------------------------------------------------- brute force
def test_log_likelihood_posteriors_and_path_equal_enumeration():
    """T = 4 steps, K = 2 states: log p(X) = log Σ over the 2^4 state paths of p(X, path),
    the posteriors the paths' normalised weights, Viterbi the best path."""
    X = np.array([[3, 1, 0], [0, 2, 2], [4, 0, 0], [1, 1, 2]])
    model = MultinomialHMM(2)
    model.startprob_ = np.array([0.3, 0.7])
    model.transmat_ = np.array([[0.8, 0.2], [0.35, 0.65]])
    model.emissionprob_ = np.array([[0.7, 0.2, 0.1], [0.15, 0.35, 0.5]])
    emit = np.array([[multinomial.logpmf(x, x.sum(), p) for p in model.emissionprob_] for x in X])
    paths = list(itertools.product(range(2), repeat=len(X)))
    joint = np.array(
        [
            np.log(model.startprob_[z[0]])
            + sum(np.log(model.transmat_[a, b]) for a, b in itertools.pairwise(z))
            + sum(emit[t, s] for t, s in enumerate(z))
            for z in paths
        ]
    )
    total = logsumexp(joint)
    assert model.score(X) == pytest.approx(total, rel=1e-12)
    weights = np.exp(joint - total)  # (16,) p(path | X)
    states = np.array(paths)  # (16, T)
    post = np.stack([weights @ (states == k) for k in range(2)], 1)  # (T, 2) p(z_t = k | X)
    np.testing.assert_allclose(model.predict_proba(X), post, rtol=1e-10)
    lp, path = model.decode(X)
    assert tuple(path) == paths[int(np.argmax(joint))]
    assert lp == pytest.approx(joint.max(), rel=1e-12)


# ---------------------------------------------------------------------- bad input
def _fitted(X=None, **kw):
    return quiet_fit(
        MultinomialHMM(2, n_iter=3, random_state=0, **kw), counts(10) if X is None else X
    )


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda X: X.__setitem__((5, 2), -1), r"non-negative; X\[5, 2\] = -1"),
        (lambda X: X.__setitem__((7, 1), 2.5), r"whole numbers; X\[7, 1\] = 2.5"),
        (lambda X: X.__setitem__((3, 0), np.nan), "NaN at row 3, column 0"),
        (lambda X: X.__setitem__((4, 3), np.inf), "inf at row 4, column 3"),
        (lambda X: X.__setitem__((9, 0), 2.0**60), "row 9 of X counts .* beyond the 2\\^53"),
    ],
    ids=["negative", "fraction", "nan", "inf", "huge"],
)
def test_bad_counts_are_named_by_row_and_column(edit, match):
    X = counts(10).astype(float)
    edit(X)
    with pytest.raises(DataError, match=match):
        MultinomialHMM(2, random_state=0).fit(X)
    fitted = _fitted()
    for call in (fitted.score, fitted.predict, fitted.predict_proba, fitted.score_samples):
        with pytest.raises(DataError, match=match):
            call(X)


def test_rows_whose_total_is_not_n_trials_are_named():
    X = counts(10)
    X[12, 0] += 1
    with pytest.raises(DataError, match=r"row 12 of X counts 11 trials .* n_trials says 10"):
        MultinomialHMM(2, n_trials=10).fit(X)
    with pytest.raises(DataError, match="n_trials=None"):
        _fitted(n_trials=10).score(X)
    per_row = np.full(len(X), 10)
    with pytest.raises(DataError, match=r"row 12 of X counts 11 trials .* n_trials says 10"):
        MultinomialHMM(2, n_trials=per_row).fit(X)
    with pytest.raises(DataError, match=r"n_trials holds 399 per-row numbers .* X has 400 rows"):
        MultinomialHMM(2, n_trials=per_row[1:]).fit(counts(10))
    _fitted(n_trials=None).score(X)  # None: every row its own total


def test_wrong_columns_at_predict_and_wrong_shapes_are_named():
    fitted = _fitted()
    with pytest.raises(
        DataError, match=r"X has 3 features \(categories\) but the model was fitted with 4"
    ):
        fitted.predict(counts(10)[:, :3])
    with pytest.raises(DataError, match="2-D"):
        fitted.score(counts(10)[:, 0])
    with pytest.raises(DataError, match="3-D"):
        MultinomialHMM(2).fit(counts(10)[:, :, None])
    with pytest.raises(DataError, match="0 sample"):
        MultinomialHMM(2).fit(np.zeros((0, 3)))
    with pytest.raises(DataError):
        MultinomialHMM(2).fit([["a", "b"], ["c", "d"]])
    m = MultinomialHMM(2, init_params="st")
    m.emissionprob_ = np.full((2, 3), 1 / 3)
    with pytest.raises(ParameterError, match=r"emissionprob_ must have shape \(2, 4\)"):
        m.fit(counts(10))


@pytest.mark.parametrize(
    ("n_trials", "match"),
    [
        (0, "n_trials is 0, which must be at least 1"),
        (-3, "must be at least 1"),
        (2.5, "must be a whole number"),
        (np.nan, "must be a whole number"),
        (True, "got True"),
        ("ten", "got 'ten'"),
        ([[10, 10]], r"got \[\[10, 10\]\]"),
        ([10, 0, 10], r"n_trials \(entry 1\) is 0, "),
        (2**60, "whole number <= 2\\^53"),
    ],
)
def test_bad_n_trials_are_parameter_errors(n_trials, match):
    with pytest.raises(ParameterError, match=match):
        MultinomialHMM(2, n_trials=n_trials).fit(counts(10))


def test_sample_asks_for_n_trials_when_the_rows_have_none():
    X = counts(np.random.default_rng(0).integers(1, 20, 400))
    model = _fitted(X)
    assert model.n_trials_ is None
    with pytest.raises(ParameterError, match=r"set_params\(n_trials=10\)"):
        model.sample(5)
    with pytest.raises(ParameterError, match="one number of trials"):
        model.set_params(n_trials=X.sum(1)).sample(5)
    model.set_params(n_trials=7)
    assert (model.sample(5, random_state=0)[0].sum(1) == 7).all()


def test_unfitted_model_and_bad_prior_are_named():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MultinomialHMM(2).predict(counts(10))
    with pytest.raises(NotFittedError):
        MultinomialHMM(2, n_trials=3).sample(3)
    with pytest.raises(ParameterError, match=r"emissionprob_prior has shape \(2, 3\)"):
        MultinomialHMM(2, emissionprob_prior=np.ones((2, 3))).fit(counts(10))
    with pytest.raises(ParameterError, match="emissionprob_prior must hold finite, positive"):
        MultinomialHMM(2, emissionprob_prior=0.0).fit(counts(10))
    with pytest.raises(ParameterError, match="'x', which names no parameter"):
        MultinomialHMM(2, params="stx").fit(counts(10))


# ---------------------------------------------------------------------- persistence, sampling
def test_sklearn_conventions_save_load_and_pickle(tmp_path, fixed):
    X, lengths = fixed
    model = MultinomialHMM(3, n_iter=5, random_state=0, emissionprob_prior=1.2)
    params = model.get_params()
    assert {"n_trials", "n_init", "device", "dtype", "params", "init_params"} <= set(params)
    quiet_fit(model, X, lengths)
    assert model.get_params() == params  # fit never changes a constructor argument
    assert model.n_trials is None and model.n_trials_ == 10 and model.n_features == D
    assert clone(model).get_params() == params
    path = model.save(tmp_path / "multinomial.lf")
    for back in (latentfit.load(path), pickle.loads(pickle.dumps(model))):
        assert type(back) is MultinomialHMM
        assert back.n_trials_ == 10 and back.n_features == D
        assert back.score(X, lengths) == model.score(X, lengths)
        np.testing.assert_array_equal(back.predict(X, lengths), model.predict(X, lengths))
        np.testing.assert_array_equal(back.emissionprob_, model.emissionprob_)
        np.testing.assert_array_equal(back.lower_bounds_, model.lower_bounds_)
        a, b = back.sample(20, random_state=4), model.sample(20, random_state=4)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    per_row = MultinomialHMM(2, n_trials=X.sum(1), n_iter=2, random_state=0)
    quiet_fit(per_row, X, lengths)
    back = latentfit.load(per_row.save(tmp_path / "per_row.lf"))
    np.testing.assert_array_equal(back.n_trials, X.sum(1))
    assert back.score(X, lengths) == per_row.score(X, lengths)


def test_sample_shapes_totals_and_frequencies():
    model = MultinomialHMM(2, n_trials=25)
    model.startprob_ = np.array([1.0, 0.0])
    model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    model.emissionprob_ = np.array([[0.5, 0.3, 0.2, 0.0], [0.05, 0.05, 0.1, 0.8]])
    X, z = model.sample(4000, random_state=0)
    assert X.shape == (4000, 4) and z.shape == (4000,) and X.dtype == np.int64
    assert (X.sum(1) == 25).all() and (X >= 0).all() and (X[z == 0, 3] == 0).all()
    for k in range(2):
        # the mean counts of a state's rows: N p within 6 standard errors (sqrt(N p (1 - p) / m))
        rows = X[z == k]
        p = model.emissionprob_[k]
        se = np.sqrt(25 * p * (1 - p) / len(rows))
        assert np.all(np.abs(rows.mean(0) - 25 * p) <= 6 * se + 1e-12)
    X1, z1 = model.sample(3, random_state=1, currstate=1)
    assert z1[0] == 1 and X1.shape == (3, 4)
    np.testing.assert_array_equal(
        model.sample(30, random_state=2)[0], model.sample(30, random_state=2)[0]
    )


def test_conditional_binomials_keep_zeros_and_totals():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    out = multinomial_sample(1e6, probs.double(), g)
    assert (out.sum(1) == 1e6).all()
    assert (out[probs.double() == 0] == 0).all()


# ---------------------------------------------------------------------- other ways to fit
def test_a_streamed_fit_equals_the_in_memory_fit(fixed):
    X, lengths = fixed
    ref = quiet_fit(MultinomialHMM(3, random_state=0, n_iter=10, tol=-np.inf), X, lengths)
    source = IterableSource(lambda: (X[i : i + 64] for i in range(0, len(X), 64)))
    got = quiet_fit(MultinomialHMM(3, random_state=0, n_iter=10, tol=-np.inf), source, lengths)
    np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(got.emissionprob_, ref.emissionprob_, rtol=1e-9, atol=1e-12)
    assert got.n_trials_ is None  # a source's rows are not kept: n_trials was not given
    bad = X.astype(float)
    bad[200, 1] += 0.5
    with pytest.raises(DataError, match="whole numbers"):
        MultinomialHMM(3, random_state=0).fit(
            IterableSource(lambda: (bad[i : i + 64] for i in range(0, len(bad), 64))), lengths
        )
    with pytest.raises(ParameterError, match="not one per row"):
        MultinomialHMM(3, n_trials=X.sum(1)).fit(source, lengths)


def test_partial_fit_and_labels(fixed):
    X, lengths = fixed
    model = MultinomialHMM(3, random_state=0)
    model.partial_fit(X[:200], burn_in=50, mstep_every=20)
    model.partial_fit(X[200:], new_sequence=False)
    assert model.n_steps_ == len(X) and model.n_trials_ == 10
    assert np.isfinite(model.score(X, lengths))
    model.partial_fit(counts(3, n=50))
    assert model.n_trials_ is None  # two totals read
    y = np.full(len(X), -1)
    y[[0, 45, 90]] = [0, 1, 2]  # a row of each regime: states start from their rows
    labelled = quiet_fit(MultinomialHMM(3, n_iter=20, random_state=0), X, lengths, y=y)
    assert labelled.predict(X[:120]).tolist() == [0] * 40 + [1] * 40 + [2] * 40


def test_float32_and_device(fixed, device):
    X, lengths = fixed
    kw = dict(n_iter=5, tol=-np.inf, init_params="")
    m64 = quiet_fit(set_params(MultinomialHMM(K, **kw), start_params()), X, lengths)
    m32 = quiet_fit(
        set_params(MultinomialHMM(K, dtype="float32", device=device, **kw), start_params()),
        X,
        lengths,
    )
    # float32 rounding (~1e-7 relative per operation) over 400 steps and 5 iterations
    np.testing.assert_allclose(m32.lower_bounds_, m64.lower_bounds_, rtol=1e-5)
    np.testing.assert_allclose(m32.emissionprob_, m64.emissionprob_, atol=1e-4)
    assert m32.emissionprob_.dtype == np.float32
    dev = quiet_fit(set_params(MultinomialHMM(K, device=device, **kw), start_params()), X, lengths)
    np.testing.assert_allclose(dev.lower_bounds_, m64.lower_bounds_, rtol=1e-10)


# ---------------------------------------------------------------------- zero probabilities
def _zero_model():
    model = MultinomialHMM(2)
    model.startprob_ = np.array([0.3, 0.7])
    model.transmat_ = np.array([[0.8, 0.2], [0.35, 0.65]])
    model.emissionprob_ = np.array([[0.7, 0.3, 0.0], [0.001, 0.001, 0.998]])
    return model


def test_a_category_a_state_gives_probability_zero_is_impossible_there():
    """Enumeration of the 2^4 paths with scipy's multinomial, which gives a count of a
    category of probability 0 log-probability -inf. Row 1 counts category 2 once: log 0 was
    clamped to about -708, so state 0 (p = 0 there) took the row with probability 1 and
    the score was -774.6 (-3744.9 is right)."""
    X = np.array([[3, 1, 0], [300, 300, 1], [4, 0, 0], [1, 1, 2]])
    model = _zero_model()
    emit = np.array([[multinomial.logpmf(x, x.sum(), p) for p in model.emissionprob_] for x in X])
    assert np.isneginf(emit[1, 0]) and np.isneginf(emit[3, 0])
    paths = list(itertools.product(range(2), repeat=len(X)))
    with np.errstate(divide="ignore"):
        joint = np.array(
            [
                np.log(model.startprob_[z[0]])
                + sum(np.log(model.transmat_[a, b]) for a, b in itertools.pairwise(z))
                + sum(emit[t, s] for t, s in enumerate(z))
                for z in paths
            ]
        )
    total = logsumexp(joint)
    assert total < -3000
    assert model.score(X) == pytest.approx(total, rel=1e-12)
    weights = np.exp(joint - total)
    states = np.array(paths)
    post = np.stack([weights @ (states == k) for k in range(2)], 1)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba, post, rtol=1e-10, atol=1e-300)
    assert proba[1, 0] == 0.0 and proba[3, 0] == 0.0 and not np.isnan(proba).any()
    lp, path = model.decode(X)
    assert tuple(path) == paths[int(np.argmax(joint))]
    assert lp == pytest.approx(joint.max(), rel=1e-12)


def test_a_row_no_state_can_emit_names_its_category():
    model = _zero_model()
    model.emissionprob_ = np.array([[0.7, 0.3, 0.0], [0.5, 0.5, 0.0]])
    X = np.array([[3, 1, 0], [2, 1, 1]])
    assert model.score(X) == -np.inf  # impossible: score's answer, hmmlearn's too
    for call in (model.score_samples, model.predict_proba, model.decode):
        with pytest.raises(DataError, match=r"row 1 of X .* counts 1 in category 2 \(column 2\)"):
            call(X)


def test_fit_and_partial_fit_learn_a_category_no_state_gave_probability():
    rng = np.random.default_rng(0)
    old = np.c_[rng.multinomial(10, [0.5, 0.5], 100), np.zeros(100)]
    new = rng.multinomial(10, [0.4, 0.4, 0.2], 100)
    model = quiet_fit(MultinomialHMM(2, n_iter=5, random_state=0), old)
    assert (model.emissionprob_[:, 2] == 0).all()
    model.init_params = ""  # go on from the fitted parameters
    quiet_fit(model, new)
    assert (model.emissionprob_[:, 2] > 0.1).all() and np.isfinite(model.score(new))
    online = quiet_fit(MultinomialHMM(2, n_iter=5, random_state=0), old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        online.partial_fit(old)
        online.partial_fit(new)
    assert (online.emissionprob_[:, 2] > 0).all() and np.isfinite(online.score(new))


def test_categorical_hmm_learns_a_symbol_no_state_gave_probability_as_one_trial_counts():
    """CategoricalHMM(n_features=4) fitted on symbols 0..2 and continued (init_params="") or
    updated (partial_fit) on rows showing symbol 3 refused with "row 150 of X has zero
    probability under every state", where MultinomialHMM on the same one-hot rows learns the
    category. It learns the symbol now, exactly as the one-trial MultinomialHMM does; a symbol
    beyond n_features is still refused, by name."""
    rng = np.random.default_rng(0)
    old = rng.integers(0, 3, size=(200, 1))
    new = old.copy()
    new[150, 0] = 3
    onehot = np.eye(4, dtype=np.int64)

    def both(update):
        cat = quiet_fit(CategoricalHMM(2, n_features=4, random_state=0, n_iter=20), old)
        mult = quiet_fit(
            MultinomialHMM(2, n_trials=1, random_state=0, n_iter=20), onehot[old[:, 0]]
        )
        assert (cat.emissionprob_[:, 3] == 0).all()
        np.testing.assert_allclose(cat.emissionprob_, mult.emissionprob_, rtol=1e-10, atol=1e-14)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            update(cat, new)
            update(mult, onehot[new[:, 0]])
        return cat, mult

    def go_on(model, X):
        model.set_params(init_params="").fit(X)

    for update in (go_on, lambda model, X: model.partial_fit(X)):
        cat, mult = both(update)
        assert (cat.emissionprob_[:, 3] > 0).all()
        np.testing.assert_allclose(cat.emissionprob_, mult.emissionprob_, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(cat.transmat_, mult.transmat_, rtol=1e-8)
        assert cat.score(new) == pytest.approx(mult.score(onehot[new[:, 0]]), rel=1e-10)
    inferred = quiet_fit(CategoricalHMM(2, random_state=0, n_iter=5), old)  # symbols 0..2
    for update in (go_on, lambda model, X: model.partial_fit(X)):
        with pytest.raises(DataError, match=r"row 150 of X holds symbol 3 .* n_features=4 or"):
            update(inferred, new)


def test_categorical_hmm_with_a_symbol_of_probability_zero_equals_enumeration():
    # the one-trial case: symbol 2 is impossible in state 0
    model = CategoricalHMM(2)
    model.startprob_ = np.array([0.3, 0.7])
    model.transmat_ = np.array([[0.8, 0.2], [0.35, 0.65]])
    model.emissionprob_ = np.array([[0.7, 0.3, 0.0], [0.2, 0.1, 0.7]])
    x = np.array([0, 2, 1, 2, 0])
    with np.errstate(divide="ignore"):
        log_b = np.log(model.emissionprob_)
        joint = np.array(
            [
                np.log(model.startprob_[z[0]])
                + sum(np.log(model.transmat_[a, b]) for a, b in itertools.pairwise(z))
                + sum(log_b[s, x[t]] for t, s in enumerate(z))
                for z in itertools.product(range(2), repeat=len(x))
            ]
        )
    total = logsumexp(joint)
    X = x[:, None]
    assert model.score(X) == pytest.approx(total, rel=1e-12)
    states = np.array(list(itertools.product(range(2), repeat=len(x))))
    post = np.stack([np.exp(joint - total) @ (states == k) for k in range(2)], 1)
    np.testing.assert_allclose(model.predict_proba(X), post, rtol=1e-10, atol=1e-300)
    assert model.decode(X)[0] == pytest.approx(joint.max(), rel=1e-12)
