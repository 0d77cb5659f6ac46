"""Online EM for the HMMs (Cappé 2011): partial_fit.

References: the batch E-step (forward-backward of em/hmm/inference) for Cappé's identity, one
batch Baum-Welch iteration (fit with n_iter=1) for the M-step with priors, the whole series
for chunks of it, and the batch EM optimum for the long-series acceptance test."""

import itertools

import numpy as np
import pytest
import torch

import latentfit
from latentfit.em.hmm import (
    GMMHMM,
    AutoregressiveHMM,
    CategoricalHMM,
    GaussianHMM,
    MultinomialHMM,
    PoissonHMM,
)
from latentfit.em.hmm.base import _HMMHooks
from latentfit.em.hmm.online import expected_statistics
from latentfit.errors import DataError, ParameterError

LENGTHS = [150, 250, 200]  # three sequences, 600 rows
# the same rows fed in three calls that cut the sequences: (rows, lengths, new_sequence)
CHUNKS = [((0, 100), None, True), ((100, 300), [50, 150], False), ((300, 600), [100, 200], False)]


def _gaussian_truth(covariance_type="full"):
    m = GaussianHMM(3, covariance_type="full")
    m.startprob_ = np.array([0.5, 0.3, 0.2])
    m.transmat_ = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]])
    m.means_ = np.array([[0.0, 0.0], [3.0, 1.0], [-2.0, 3.0]])
    m.covars_ = np.array([np.eye(2), [[1.0, 0.5], [0.5, 2.0]], 0.5 * np.eye(2)])
    m.n_features = 2
    return m


def _ar_truth():
    m = AutoregressiveHMM(2, order=2)
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.95, 0.05], [0.1, 0.9]])
    m.coefs_ = np.array(
        [
            [[[0.5, 0.1], [0.0, 0.3]], [[0.1, 0.0], [0.0, 0.1]]],
            [[[-0.3, 0.0], [0.2, 0.4]], [[0.0, 0.1], [0.0, 0.0]]],
        ]
    )
    m.intercepts_ = np.array([[1.0, 0.0], [0.0, 2.0]])
    m.covars_, m.n_features = np.array([np.eye(2), 0.5 * np.eye(2)]), 2
    return m


def _data(kind, n=600, seed=1):
    """(model to fit, X) for a kind of HMM."""
    if kind == "ar":
        X = _ar_truth().sample(n, random_state=seed)[0]
        return AutoregressiveHMM(2, order=2, random_state=0), X
    if kind == "poisson":
        truth = PoissonHMM(2)
        truth.startprob_, truth.transmat_ = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]])
        truth.lambdas_, truth.n_features = np.array([[1.0, 5.0], [6.0, 0.5]]), 2
        return PoissonHMM(2, random_state=0), truth.sample(n, random_state=seed)[0]
    if kind == "categorical":
        truth = CategoricalHMM(2)
        truth.startprob_, truth.transmat_ = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]])
        truth.emissionprob_ = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.1, 0.3, 0.5]])
        return CategoricalHMM(2, n_features=4, random_state=0), truth.sample(n, random_state=seed)[
            0
        ]
    if kind == "multinomial":
        truth = MultinomialHMM(2, n_trials=5)
        truth.startprob_, truth.transmat_ = np.array([0.6, 0.4]), np.array([[0.9, 0.1], [0.2, 0.8]])
        truth.emissionprob_ = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
        return MultinomialHMM(2, random_state=0), truth.sample(n, random_state=seed)[0]
    X = _gaussian_truth().sample(n, random_state=seed)[0]
    if kind.startswith("gmm-"):
        return GMMHMM(2, n_mix=2, covariance_type=kind[4:], random_state=0), X
    if kind == "missing":
        X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
        return GaussianHMM(3, covariance_type="full", missing="marginalize", random_state=0), X
    return GaussianHMM(3, covariance_type=kind, random_state=0), X


KINDS = ["spherical", "diag", "full", "tied", "missing", "categorical", "poisson", "multinomial"]
KINDS += ["gmm-spherical", "gmm-diag", "gmm-full", "gmm-tied", "ar"]


@pytest.mark.parametrize("kind", KINDS)
def test_statistics_equal_forward_backward(kind):
    """Cappé's identity: with γ_t = 1/t and no M-step, Σ_k ρ_t(·, k) φ_t(k) is (1/t) × the
    smoothed statistics of the batch E-step, over sequences cut across the calls."""
    model, X = _data(kind)
    for (a, b), lengths, new in CHUNKS:
        model.partial_fit(X[a:b], lengths, new_sequence=new, learning_decay=1.0, burn_in=10**9)
    state = model._online_state
    assert model.n_steps_ == len(X) and model.n_updates_ == 0
    # (GaussianHMM's are averaged about each state's mean and given to the M-step as batch)
    online = model._online_mstep_stats(state.params, expected_statistics(state, len(X)))
    X_t = model._checked_X(X, fitting=False)
    if kind == "ar":  # the design rows (lags) of the whole data
        X_t = model._design(X_t, LENGTHS)
    batch = _HMMHooks(model, X_t).estep(state.params, (X_t, LENGTHS))
    assert set(online) == set(batch) - {"log_likelihood"}
    for key, value in online.items():
        ref = batch[key]
        assert value.shape == ref.shape, key
        torch.testing.assert_close(value, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()))


def _start(model, X, lengths):
    """The parameters a first partial_fit on X starts from (no M-step), set on a clone."""
    init = type(model)(**model.get_params()).partial_fit(X, lengths, burn_in=10**9)
    return {n: getattr(init, n) for n in ("startprob_", "transmat_", *init._emission_attributes)}


@pytest.mark.parametrize(
    "model",
    [
        GaussianHMM(
            2,
            covariance_type="full",
            means_prior=0.5,
            means_weight=2.0,
            covars_prior=0.3,
            covars_weight=3.0,
            startprob_prior=2.0,
            transmat_prior=3.0,
            random_state=0,
        ),
        GaussianHMM(2, covariance_type="diag", params="tm", covars_prior=0.2, random_state=0),
        PoissonHMM(2, lambdas_prior=2.0, lambdas_weight=0.5, transmat_prior=1.5, random_state=0),
        CategoricalHMM(2, n_features=4, emissionprob_prior=1.5, params="se", random_state=0),
        MultinomialHMM(2, emissionprob_prior=1.5, transmat_prior=2.0, random_state=0),
        GMMHMM(
            2,
            n_mix=2,
            covariance_type="full",
            weights_prior=2.0,
            means_weight=0.5,
            random_state=0,
        ),
        AutoregressiveHMM(2, order=2, ridge=0.5, transmat_prior=2.0, random_state=0),
    ],
    ids=[
        "gaussian-map",
        "gaussian-params",
        "poisson-map",
        "categorical-params",
        "multinomial-map",
        "gmm-map",
        "ar",
    ],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_one_update_is_one_baum_welch_iteration(model):
    """With γ_t = 1/t and the first M-step after the last row, the update is the batch M-step
    on t × (1/t) Σ statistics: one Baum-Welch iteration, priors and ``params`` included."""
    kind = {
        "GaussianHMM": "diag",
        "PoissonHMM": "poisson",
        "CategoricalHMM": "categorical",
        "MultinomialHMM": "multinomial",
        "GMMHMM": "gmm-full",
        "AutoregressiveHMM": "ar",
    }
    X = _data(kind[type(model).__name__])[1]
    lengths = [200, 400]
    start = _start(model, X, lengths)
    online = type(model)(**model.get_params())
    online.partial_fit(X, lengths, learning_decay=1.0, burn_in=len(X))
    assert online.n_updates_ == 1
    batch = type(model)(**{**model.get_params(), "init_params": "", "n_iter": 1, "tol": -np.inf})
    for name, value in start.items():
        setattr(batch, name, value)
    batch.fit(X, lengths)
    for name in start:
        np.testing.assert_allclose(
            getattr(online, name), getattr(batch, name), rtol=1e-9, atol=1e-12
        )
    if "s" not in model.params:
        np.testing.assert_array_equal(online.startprob_, start["startprob_"])


@pytest.mark.parametrize("kind", ["diag", "tied", "categorical", "multinomial", "gmm-diag", "ar"])
def test_chunks_of_a_series_equal_the_whole(kind):
    """A long series fed in uneven chunks (new_sequence=False) gives the fit of the whole
    series fed at once, M-steps included (they fall on the same global steps)."""
    model, X = _data(kind, n=900)
    opts = dict(learning_decay=0.7, burn_in=30, mstep_every=10)
    # both start from the same parameters (a first chunk of one row cannot initialise)
    start = _start(model, X, None)
    whole, chunked = (type(model)(**model.get_params()) for _ in range(2))
    for name, value in start.items():
        setattr(whole, name, value)
        setattr(chunked, name, value)
    whole.partial_fit(X, **opts)
    cuts = [0, 1, 38, 438, 500, 900]
    for a, b in itertools.pairwise(cuts):
        chunked.partial_fit(X[a:b], new_sequence=a == 0, **opts)
    assert chunked.n_steps_ == whole.n_steps_ == len(X)
    assert chunked.n_updates_ == whole.n_updates_ == (len(X) - 30) // 10 + 1
    for name in ("startprob_", "transmat_", *model._emission_attributes):
        np.testing.assert_allclose(
            getattr(chunked, name), getattr(whole, name), rtol=1e-8, atol=1e-10
        )
    assert chunked.online_log_likelihood_ == pytest.approx(whole.online_log_likelihood_, rel=1e-9)


def test_long_series_reaches_the_batch_optimum():
    """The issue's acceptance test: 50,000 steps of a 3-state GaussianHMM fed in chunks end
    within 1 nat per 1,000 steps of batch EM started at the true parameters."""
    truth = _gaussian_truth()
    T = 50_000
    X = truth.sample(T, random_state=3)[0]
    batch = GaussianHMM(3, covariance_type="full", init_params="", n_iter=100, tol=1e-4)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        setattr(batch, name, getattr(truth, name))
    batch.fit(X)
    online = GaussianHMM(3, covariance_type="full", random_state=0)
    for i in range(0, T, 10_000):
        online.partial_fit(X[i : i + 10_000], new_sequence=i == 0)
    assert online.n_steps_ == T
    gap = (batch.score(X) - online.score(X)) / T * 1000
    assert gap < 1.0, gap


def test_save_load_and_continue(tmp_path):
    model, X = _data("full", n=900)
    model.partial_fit(X[:600], burn_in=50, mstep_every=20)
    path = model.save(tmp_path / "online.safetensors")
    loaded = latentfit.load(path)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.score(X) == pytest.approx(model.score(X), rel=1e-12)
    # the file keeps the running state: the loaded model continues the run (steps 601..900,
    # M-steps after 620, 640, ...) as the one in memory does, not a run afresh
    for m in (loaded, model):
        m.partial_fit(X[600:], burn_in=50, mstep_every=20, new_sequence=False)
    assert loaded.n_steps_ == model.n_steps_ == 900
    assert loaded.n_updates_ == model.n_updates_ == 43  # after steps 50, 70, ..., 890
    np.testing.assert_array_equal(loaded.means_, model.means_)


def test_partial_fit_after_fit_starts_from_the_fit():
    model, X = _data("diag")
    model.fit(X, LENGTHS)
    fitted = model.means_.copy()
    model.partial_fit(X[:100], burn_in=10**9)
    assert model.n_steps_ == 100
    np.testing.assert_allclose(model.means_, fitted, rtol=1e-12)


def test_bad_input_names_the_problem():
    model, X = _data("full")
    model.partial_fit(X[:200])
    with pytest.raises(DataError, match="3 features"):
        model.partial_fit(np.ones((5, 3)))
    bad = X[200:220].copy()
    bad[4, 1] = np.nan
    with pytest.raises(DataError, match="row 4, column 1"):
        model.partial_fit(bad, new_sequence=False)
    for decay in (0.5, 1.2):
        with pytest.raises(ParameterError, match="learning_decay"):
            model.partial_fit(X[200:220], learning_decay=decay)
    with pytest.raises(ParameterError, match="new_sequence"):
        model.partial_fit(X[200:220], new_sequence="no")
    with pytest.raises(ParameterError, match="mstep_every"):
        model.partial_fit(X[200:220], mstep_every=0)
    with pytest.raises(ParameterError, match="burn_in"):
        model.partial_fit(X[200:220], burn_in=-1)
    with pytest.raises(DataError, match="lengths"):
        model.partial_fit(X[200:220], [5, 5])
    with pytest.raises(DataError, match="fewer than n_components"):
        GaussianHMM(3).partial_fit(X[:2])
    cat, S = _data("categorical")
    cat.partial_fit(S[:100])
    with pytest.raises(DataError, match="symbol 7"):
        cat.partial_fit(np.array([[0], [7]]))
    # a symbol no state emits (within n_features) is learnt, as MultinomialHMM learns a
    # category (test_multinomial_hmm.py), not refused
    cat.emissionprob_ = np.array([[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    cat.partial_fit(np.array([[0], [3], [1]]), burn_in=0, mstep_every=1)
    assert (cat.emissionprob_[:, 3] > 0).any() and np.isfinite(cat.emissionprob_).all()


def test_parameters_changed_by_hand_restart_the_statistics():
    model, X = _data("diag")
    model.partial_fit(X[:300], burn_in=10**9)
    assert model.n_steps_ == 300
    model.partial_fit(X[300:400], new_sequence=False, burn_in=10**9)
    assert model.n_steps_ == 400  # the same run
    model.means_[0] += 1.0  # edited in place: the statistics of the old means no longer apply
    model.partial_fit(X[400:500], burn_in=10**9)
    assert model.n_steps_ == 100
    assert model.means_[0] == pytest.approx(model._online_state.params["means"][0].numpy())


@pytest.mark.parametrize(
    ("make", "setting", "value", "msg"),
    [
        (lambda: AutoregressiveHMM(2, order=2), "order", 1, "coefs_ must have shape"),
        (lambda: GaussianHMM(2), "covariance_type", "full", "'full' covars must have shape"),
    ],
)
def test_a_setting_changed_between_calls_is_checked_against_the_parameters(
    make, setting, value, msg
):
    # Before, the running statistics of the old shapes went on: torch's RuntimeError
    # "Expected size for first two dimensions of batch2 tensor to be: [2, 3] but got: [2, 5]"
    # (order) or "permute(sparse_coo): number of dimensions ..." (covariance_type).
    X = np.cumsum(np.random.default_rng(0).normal(size=(40, 2)), 0)
    model = make().partial_fit(X[:20])
    model.set_params(**{setting: value})
    with pytest.raises(ParameterError, match=msg):
        model.partial_fit(X[20:], new_sequence=False)


def test_a_symbol_first_seen_after_the_m_steps():
    """Without pseudo-counts the M-steps give a symbol not seen yet probability 0; a later row
    holding it is learnt, as the one-trial MultinomialHMM learns the category (it was refused
    with a DataError); with emissionprob_prior > 1 every symbol stays possible."""
    from latentfit import MultinomialHMM

    S = np.zeros((400, 1), dtype=int)
    S[::3] = 1
    S[350] = 2
    plain = CategoricalHMM(2, n_features=3, random_state=0)
    plain.partial_fit(S[:300], burn_in=50, mstep_every=10)
    assert np.all(plain.emissionprob_[:, 2] == 0)
    counts = MultinomialHMM(2, n_trials=1, random_state=0)
    counts.partial_fit(np.eye(3, dtype=int)[S[:300, 0]], burn_in=50, mstep_every=10)
    plain.partial_fit(S[300:], new_sequence=False)
    counts.partial_fit(np.eye(3, dtype=int)[S[300:, 0]], new_sequence=False)
    assert np.all(plain.emissionprob_[:, 2] > 0)
    np.testing.assert_allclose(plain.emissionprob_, counts.emissionprob_, rtol=1e-8, atol=1e-14)
    prior = CategoricalHMM(2, n_features=3, emissionprob_prior=2.0, random_state=0)
    prior.partial_fit(S[:300], burn_in=50, mstep_every=10)
    prior.partial_fit(S[300:], new_sequence=False)
    assert prior.n_steps_ == 400 and np.all(prior.emissionprob_[:, 2] > 0)


def test_autoregressive_sequences_shorter_than_the_order():
    """fit refuses a sequence of at most ``order`` rows (it has nothing to score); partial_fit
    refuses the sequences a call completes that short, and a chunk of any length that
    continues a sequence (new_sequence=False) takes its lags from the calls before, so that
    one-row chunks give the fit of the whole series."""
    # Before, partial_fit took X of 300 rows with lengths [100, 1, 199] (fit: "sequence 1 has
    # 1 row(s)"), and a 2-row call followed by a new sequence, both with order=2.
    model, X = _data("ar", n=300)
    opts = dict(learning_decay=0.7, burn_in=30, mstep_every=10)
    start = _start(model, X, None)

    def make():
        m = type(model)(**model.get_params())
        for name, value in start.items():
            setattr(m, name, value)
        return m

    whole = make().partial_fit(X, **opts)
    chunked = make()
    for a, b in itertools.pairwise([0, 1, 2, 3, 4, 50, 51, 300]):
        chunked.partial_fit(X[a:b], new_sequence=a == 0, **opts)
    for name in ("transmat_", *model._emission_attributes):
        np.testing.assert_allclose(
            getattr(chunked, name), getattr(whole, name), rtol=1e-8, atol=1e-10
        )
    for lengths, bad in (([100, 1, 199], 1), ([2, 298], 0)):
        with pytest.raises(DataError, match=rf"sequence {bad} of this partial_fit call has"):
            make().partial_fit(X, lengths, **opts)
    short = make().partial_fit(X[:1], **opts)
    with pytest.raises(DataError, match=r"2 row\(s\) \(1 of them from the previous call\)"):
        short.partial_fit(X[1:10], [1, 8], new_sequence=False, **opts)
    short.partial_fit(X[1:2], new_sequence=False, **opts)  # 2 rows so far: may go on
    with pytest.raises(DataError, match=r"previous partial_fit call has 2 row\(s\).*at least 3"):
        short.partial_fit(X[2:10], **opts)
    assert short.n_steps_ == 2  # refused before reading: new_sequence=False continues it
    short.partial_fit(X[2:10], new_sequence=False, **opts)
    assert short.n_steps_ == 10


def _far_start(covariance_type, **options):
    """A two-state GaussianHMM started with one state on each group of ``_far_rows``, the
    covariance prior off, so that the batch and the online fit find the same optimum."""
    model = GaussianHMM(
        2, covariance_type=covariance_type, covars_prior=0, min_covar=1e-9, init_params="",
        **options,
    )  # fmt: skip
    model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    model.means_ = np.array([[4.0, 1.0], [1e8, 1e8]])
    ones = {"full": np.array([np.eye(2)] * 2), "tied": np.eye(2), "diag": np.ones((2, 2))}
    model.covars_ = ones.get(covariance_type, np.ones(2))
    return model


# every update after a whole pass, steps 1/t: the running statistics are the batch E-step's
ONE_PASS = dict(learning_decay=1.0, burn_in=6, mstep_every=6)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_partial_fit_keeps_the_variance_of_a_tight_group_far_from_the_centre(ct):
    """Three rows near the origin and three within 1e-3 of 1e8: the running statistics were
    all about the data's centre (5e7), where the tight group's variances (1e-6) are lost to
    rounding (±56), and the first update raised a DegenerateComponentError; each state's
    statistics are now about its own mean, as the batch fit takes a far state's."""
    from tests.em.test_missing import _far_rows

    X = _far_rows(missing=False)
    batch = _far_start(ct, n_iter=100, tol=1e-12).fit(X)
    online = _far_start(ct)
    for _ in range(20):
        online.partial_fit(X, **ONE_PASS)
    assert online.score(X) == pytest.approx(batch.score(X), rel=1e-9)
    np.testing.assert_allclose(online.covars_, batch.covars_, rtol=1e-6)
    np.testing.assert_allclose(online.transmat_, batch.transmat_, rtol=1e-9)
    # the group's own maximum-likelihood covariance (its deviations from 1e8 are exact)
    group = np.cov((X[3:] - 1e8).T, bias=True)
    if ct == "full":
        np.testing.assert_allclose(online.covars_[1], group, rtol=1e-6)
    elif ct == "diag":
        np.testing.assert_allclose(online.covars_[1], np.diag(np.diag(group)), rtol=1e-6)


@pytest.mark.parametrize("ct", ["tied", "diag", "spherical"])
def test_partial_fit_after_a_fit_with_missing_values_keeps_a_far_group(ct):
    """The same rows with a value missing near the origin: a partial_fit after a converged
    fit raised the DegenerateComponentError; it keeps the fit now. (Full covariances have no
    optimum here: the near group's two complete rows and the third's free value lie on a
    line, and the likelihood grows as its covariance collapses.)"""
    from tests.em.test_missing import _far_rows

    X = _far_rows(missing=True)
    model = _far_start(ct, missing="marginalize", n_iter=1000, tol=1e-13).fit(X)
    before, score = model.covars_.copy(), model.score(X)
    for _ in range(5):
        model.partial_fit(X, **ONE_PASS)
    assert model.score(X) == pytest.approx(score, rel=1e-9)
    np.testing.assert_allclose(model.covars_, before, rtol=1e-6)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_gmmhmm_partial_fit_keeps_the_variance_of_a_tight_group_far_from_the_centre(ct):
    """GMMHMM kept its running moments about the data's centre and moved them to the
    component means at every M-step: the tight group at 1e8 lost its variances, and
    partial_fit raised a DegenerateComponentError (full, tied) or scored -2.5e8 where the fit
    scores 21.8 (diag). Twenty passes equal the batch fit of twenty copies of the rows (the
    same weight against the priors, hmmlearn's GMMHMM defaults)."""
    from tests.em.test_missing import _far_rows

    def start(**options):
        model = GMMHMM(2, n_mix=1, covariance_type=ct, min_covar=1e-9, init_params="", **options)
        model.startprob_, model.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
        model.means_, model.weights_ = np.array([[[4.0, 1.0]], [[1e8, 1e8]]]), np.ones((2, 1))
        eye = np.array([[np.eye(2)]] * 2)
        model.covars_ = {"full": eye, "tied": eye[:, 0], "diag": np.ones((2, 1, 2))}.get(
            ct, np.ones((2, 1))
        )
        return model

    X = _far_rows(missing=False)
    batch = start(n_iter=100, tol=1e-12).fit(np.tile(X, (20, 1)), [6] * 20)
    online = start()
    for _ in range(20):
        online.partial_fit(X, **ONE_PASS)
    assert online.score(X) == pytest.approx(batch.score(X), rel=1e-9)
    np.testing.assert_allclose(online.covars_, batch.covars_, rtol=1e-6)
    if ct == "full":  # the group's own covariance (its deviations from 1e8 are exact)
        group = np.cov((X[3:] - 1e8).T, bias=True)
        np.testing.assert_allclose(online.covars_[1, 0], group, rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianHMM(2, dtype="float32", random_state=0),
        lambda: GMMHMM(2, n_mix=2, dtype="float32", random_state=0),
        lambda: AutoregressiveHMM(2, dtype="float32", random_state=0),
    ],
    ids=["gaussian", "gmmhmm", "autoregressive"],
)
def test_partial_fit_of_a_fitted_float32_model_refuses_a_batch_that_overflows_as_fit_does(make):
    # before: the batch was taken without a word, and a state's variance became 1.4e35
    X = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    batch = X[:100].copy()
    batch[40, 1] = 3e18
    with pytest.raises(DataError) as from_fit:
        make().fit(batch)
    model = make().fit(X)
    before = {k: np.array(v) for k, v in vars(model).items() if k.endswith("_")}
    with pytest.raises(DataError) as from_partial:
        model.partial_fit(batch)
    assert str(from_partial.value) == str(from_fit.value)
    assert "column 1 of X spans 3e+18 (row 40 holds 3e+18)" in str(from_partial.value)
    for k, v in before.items():  # nothing of the batch was taken in
        np.testing.assert_array_equal(np.array(getattr(model, k)), v)
