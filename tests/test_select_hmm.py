"""select_model for hidden Markov models: criteria against the formula and hmmlearn, held-out
likelihood over whole sequences against hand-written loops, K recovered, the result's tables."""

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from hmmlearn import hmm as hl
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import KFold

from latentfit import GMMHMM, AutoregressiveHMM, GaussianHMM, GaussianMixture
from latentfit.errors import DataError, ParameterError
from latentfit.select import COLUMNS, n_free_parameters, select_model, sequence_folds


def sample_hmm(n_seq=6, t=80, seed=0):
    """Three well-separated 2-D Gaussian states, sticky transitions: a clear K = 3."""
    truth = GaussianHMM(3, covariance_type="diag")
    truth.startprob_ = np.array([0.6, 0.3, 0.1])
    truth.transmat_ = np.full((3, 3), 0.05) + np.eye(3) * 0.85
    truth.means_ = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    truth.covars_ = np.ones((3, 2))
    truth.n_features = 2
    parts = [truth.sample(t, random_state=seed + s)[0] for s in range(n_seq)]
    return np.vstack(parts), [t] * n_seq


@pytest.fixture(scope="module")
def sequences():
    return sample_hmm()


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_candidates_of_gaussian_hmms_fit_with_lengths(sequences):
    """The failure this fixes: every HMM candidate failed with numpy's 'inhomogeneous shape'
    (score_samples returns a tuple, and lengths never reached fit or score)."""
    X, lengths = sequences
    res = select_model(X, lengths, candidates=[GaussianHMM(k, random_state=0) for k in (1, 2, 3)])
    assert all(r["error"] is None for r in res.rows), res.summary()
    assert res.n_sequences == len(lengths) and res.n_samples == len(X)
    for row, model in zip(res.rows, res.models, strict=True):
        k, d = row["n_components"], X.shape[1]
        p = (k - 1) + k * (k - 1) + k * d + k * d  # start, transitions, means, diag variances
        assert row["n_parameters"] == p
        loglik = model.score(X, lengths)  # the total over the sequences
        assert row["loglik"] == pytest.approx(loglik, rel=1e-12)
        assert row["bic"] == pytest.approx(-2 * loglik + p * math.log(len(X)), rel=1e-12)
        assert row["aic"] == pytest.approx(-2 * loglik + 2 * p, rel=1e-12)


def _hmmlearn_twin(model):
    """hmmlearn's model of the same class holding our fitted parameters."""
    name = type(model).__name__
    if name == "GaussianHMM":
        ref = hl.GaussianHMM(model.n_components, covariance_type=model.covariance_type)
        ref.means_, ref.covars_ = model.means_, model._covars_
    elif name == "GMMHMM":
        ref = hl.GMMHMM(
            model.n_components, n_mix=model.n_mix, covariance_type=model.covariance_type
        )
        ref.weights_, ref.means_, ref.covars_ = model.weights_, model.means_, model.covars_
    elif name == "PoissonHMM":
        ref = hl.PoissonHMM(model.n_components)
        ref.lambdas_ = model.lambdas_
    else:
        ref = hl.CategoricalHMM(model.n_components, n_features=model.emissionprob_.shape[1])
        ref.emissionprob_ = model.emissionprob_
    ref.startprob_, ref.transmat_ = model.startprob_, model.transmat_
    if name == "CategoricalHMM":
        ref.n_features = model.emissionprob_.shape[1]
    else:
        ref.n_features = (model.lambdas_ if name == "PoissonHMM" else model.means_).shape[-1]
    return ref


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_gaussian_hmm_bic_aic_equal_hmmlearns(sequences, ct):
    X, lengths = sequences
    res = quiet(
        select_model, X, lengths, family="gaussian_hmm", n_components=[2, 3],
        covariance_types=[ct], n_iter=20,
    )  # fmt: skip
    for row, model in zip(res.rows, res.models, strict=True):
        ref = _hmmlearn_twin(model)
        assert row["n_parameters"] == sum(ref._get_n_fit_scalars_per_param().values())
        assert row["bic"] == pytest.approx(ref.bic(X, lengths), rel=1e-9)
        assert row["aic"] == pytest.approx(ref.aic(X, lengths), rel=1e-9)


def test_discrete_hmms_bic_aic_equal_hmmlearns():
    rng = np.random.default_rng(1)
    counts = np.concatenate([rng.poisson([1, 6], (120, 2)), rng.poisson([7, 2], (120, 2))])
    symbols = np.concatenate([rng.integers(0, 3, 150), rng.integers(2, 5, 150)])[:, None]
    for family, X, lengths in [
        ("poisson_hmm", counts, [100, 140]),
        ("categorical_hmm", symbols, [60, 90, 150]),
    ]:
        res = quiet(select_model, X, lengths, family=family, n_components=[1, 2, 3], n_iter=20)
        assert [r["label"] for r in res.rows] == [
            f"{type(res.models[0]).__name__} K={k}" for k in (1, 2, 3)
        ]
        for row, model in zip(res.rows, res.models, strict=True):
            ref = _hmmlearn_twin(model)
            assert row["n_parameters"] == sum(ref._get_n_fit_scalars_per_param().values())
            assert row["bic"] == pytest.approx(ref.bic(X, lengths), rel=1e-9)
            assert row["aic"] == pytest.approx(ref.aic(X, lengths), rel=1e-9)


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_gmmhmm_counts_the_weights_of_every_state(sequences, ct):
    """hmmlearn counts n_mix − 1 weights for a GMMHMM, but weights_ is (K, n_mix) with one
    free simplex per state: K (n_mix − 1). Everything else equals hmmlearn's count and the
    likelihood equals hmmlearn's score on the same parameters."""
    X, lengths = sequences
    res = quiet(
        select_model, X, lengths, family="gmm_hmm", n_components=[2, 3],
        covariance_types=[ct], n_mix=2, n_iter=10,
    )  # fmt: skip
    for row, model in zip(res.rows, res.models, strict=True):
        ref = _hmmlearn_twin(model)
        k, m = model.n_components, model.n_mix
        theirs = sum(ref._get_n_fit_scalars_per_param().values())
        assert row["n_parameters"] == theirs + (k - 1) * (m - 1)
        assert row["loglik"] == pytest.approx(ref.score(X, lengths), rel=1e-10)
        # from the arrays themselves: each probability vector loses one degree of freedom
        free = (
            model.startprob_.size - 1
            + model.transmat_.size - k
            + model.weights_.size - k
            + model.means_.size
            + {"full": k * m * 3, "diag": k * m * 2}[ct]  # d = 2
        )  # fmt: skip
        assert row["n_parameters"] == free


def test_fixed_parameters_are_not_free(sequences):
    """A parameter left out of ``params`` is not estimated: hmmlearn sums its per-letter counts
    over ``params`` (its degenerate-fit check) and so does the count here."""
    X, lengths = sequences
    model = GaussianHMM(3, params="tmc", init_params="tmc", n_iter=5, random_state=0)
    model.startprob_ = np.array([0.6, 0.3, 0.1])
    res = quiet(select_model, X, lengths, candidates=[model])
    ref = _hmmlearn_twin(res.models[0])
    ref.params = "tmc"
    per = ref._get_n_fit_scalars_per_param()
    assert res.rows[0]["n_parameters"] == sum(per[p] for p in ref.params) == 3 * 2 + 3 * 2 + 6
    assert n_free_parameters(res.models[0]) == res.rows[0]["n_parameters"]


def brute_force(x, start, trans, means, sds):
    """log p(x) and max over paths of log p(x, z), enumerating every path of a 1-D HMM."""
    k, t = len(start), len(x)
    logs = []
    for z in itertools.product(range(k), repeat=t):
        lp = np.log(start[z[0]]) + sum(np.log(trans[a, b]) for a, b in itertools.pairwise(z))
        lp += norm.logpdf(x, means[list(z)], sds[list(z)]).sum()
        logs.append(lp)
    return logsumexp(logs), max(logs)


def test_icl_is_bic_minus_twice_the_log_posterior_of_the_best_path():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 1, 5), rng.normal(4, 1, 4), rng.normal(0, 1, 3)])
    X, lengths = x[:, None], [7, 5]
    res = quiet(select_model, X, lengths, candidates=[GaussianHMM(2, n_iter=30, random_state=0)])
    m, row = res.models[0], res.rows[0]
    sds = np.sqrt(m._covars_[:, 0])
    total, best = 0.0, 0.0
    for a, b in [(0, 7), (7, 12)]:  # each sequence on its own
        s, mx = brute_force(x[a:b], m.startprob_, m.transmat_, m.means_[:, 0], sds)
        total, best = total + s, best + mx
    assert row["loglik"] == pytest.approx(total, rel=1e-10)
    assert row["icl"] == pytest.approx(row["bic"] - 2 * (best - total), rel=1e-10)
    assert row["icl"] >= row["bic"]


def test_heldout_over_whole_sequences_equals_a_hand_written_loop(sequences):
    X, lengths = sequences
    est = GaussianHMM(3, covariance_type="diag", n_iter=15, random_state=0)
    res = quiet(select_model, X, lengths, candidates=[est], cv=3, criterion="heldout")
    starts = np.cumsum([0] + lengths)
    total = 0.0
    for train, test in KFold(3, shuffle=True, random_state=0).split(np.arange(len(lengths))):
        tr = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in train])
        te = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in test])
        m = quiet(clone(est).fit, X[tr], [lengths[i] for i in train])
        total += m.score(X[te], [lengths[i] for i in test])
    assert res.rows[0]["cv_loglik"] == pytest.approx(total / len(X), rel=1e-10)
    assert res.criterion == "cv_loglik" and "whole sequences" in res.cv_scheme


def test_one_long_sequence_is_cut_into_contiguous_blocks(sequences):
    X, _ = sequences  # taken as one series of 480 steps
    est = GaussianHMM(2, covariance_type="diag", n_iter=10, random_state=0)
    res = quiet(select_model, X, candidates=[est], cv=4)
    n, total = len(X), 0.0
    for j in range(4):
        a, b = j * n // 4, (j + 1) * n // 4  # 120 steps each
        pieces = [p for p in ((0, a), (b, n)) if p[1] > p[0]]
        tr = np.concatenate([np.arange(*p) for p in pieces])
        m = quiet(clone(est).fit, X[tr], [p[1] - p[0] for p in pieces])
        total += m.score(X[a:b])
    assert res.rows[0]["cv_loglik"] == pytest.approx(total / n, rel=1e-10)
    assert res.n_sequences == 1 and "contiguous blocks" in res.cv_scheme


def test_sequence_folds_cover_every_row_once():
    for lengths, cv in [([5, 9, 4, 7], 3), ([50, 21], 4), ([33], 5)]:
        folds, _ = sequence_folds(lengths, cv, random_state=1)
        assert len(folds) == cv
        held = np.sort(np.concatenate([f.test for f in folds]))
        np.testing.assert_array_equal(held, np.arange(sum(lengths)))
        for f in folds:
            assert sum(f.train_lengths) == len(f.train) and sum(f.test_lengths) == len(f.test)
            assert len(np.intersect1d(f.train, f.test)) == 0
            assert len(f.train) + len(f.test) == sum(lengths)
    with pytest.raises(ParameterError, match="sequence 0 has only 6 steps"):
        sequence_folds([6], 5)


def test_mixtures_and_hmms_compared_on_the_same_folds(sequences):
    """With lengths, a GaussianMixture is scored on the same whole-sequence folds as the HMM,
    and the HMM, which sees the sticky states, wins the held-out comparison."""
    X, lengths = sequences
    gmm = GaussianMixture(3, covariance_type="diag", random_state=0)
    hmm = GaussianHMM(3, covariance_type="diag", n_iter=20, random_state=0)
    res = quiet(select_model, X, lengths, candidates=[gmm, hmm], cv=3, criterion="cv_loglik")
    folds, _ = sequence_folds(lengths, 3, random_state=0)
    total = sum(clone(gmm).fit(X[f.train]).score_samples(X[f.test]).sum() for f in folds)
    assert res.rows[0]["cv_loglik"] == pytest.approx(total / len(X), rel=1e-10)
    assert res.best_index() == 1


def markov_chain(rng, n, stay=0.95, k=3):
    """A sticky k-state Markov chain (uniform start, uniform jumps), drawn with numpy."""
    z = np.empty(n, dtype=int)
    z[0] = rng.integers(k)
    for t in range(1, n):
        z[t] = (
            z[t - 1] if rng.random() < stay else rng.choice([s for s in range(k) if s != z[t - 1]])
        )
    return z


@pytest.mark.parametrize("family", ["gaussian_hmm", "poisson_hmm", "categorical_hmm"])
def test_k_recovered_on_simulated_data(family):
    rng = np.random.default_rng(7)
    lengths = [200] * 4
    z = np.concatenate([markov_chain(rng, n) for n in lengths])
    if family == "gaussian_hmm":
        X = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])[z] + rng.normal(size=(len(z), 2))
        kw = {"covariance_types": ["diag"]}
    elif family == "poisson_hmm":
        X = rng.poisson(np.array([[1.0, 8.0], [8.0, 1.0], [15.0, 15.0]])[z]).astype(float)
        kw = {}
    else:
        probs = np.array([[0.45, 0.45, 0.1, 0, 0, 0], [0, 0, 0.45, 0.45, 0.1, 0],
                          [0.1, 0, 0, 0, 0.45, 0.45]])  # fmt: skip
        X = np.array([rng.choice(6, p=probs[s]) for s in z], dtype=float)[:, None]
        kw = {}
    # K = 3 against its neighbours, which it must beat (K = 1 and 5 are fitted by the tests
    # above and below; here they only added a third of this test's time)
    res = quiet(
        select_model, X, lengths, family=family, n_components=[2, 3, 4], n_iter=100,
        n_init=2, cv=4, **kw,
    )  # fmt: skip
    assert all(r["error"] is None for r in res.rows), res.summary()
    assert res.best_row_["n_components"] == 3, res.summary()
    # Held-out likelihood hardly penalises a fourth state that splits one of the three (its
    # out-of-sample cost is near zero), so it must rule out K < 3 clearly and put K = 3 within
    # 0.005 nats per step of its best; K = 2 is more than 0.1 nats per step worse here (0.2-2).
    heldout = {r["n_components"]: r["cv_loglik"] for r in res.rows}
    assert res.rows[res.best_index("cv_loglik")]["n_components"] >= 3, res.summary()
    assert heldout[3] >= max(heldout.values()) - 0.005, res.summary()
    assert heldout[2] < heldout[3] - 0.1, res.summary()


class IIDGaussian(BaseEstimator):
    """A sequence model written outside latentfit (rows independent, one Gaussian per column;
    ``n_components`` only adds to the parameter count): fit(X, lengths), score(X, lengths) and
    n_parameters_, nothing else."""

    def __init__(self, n_components=1, shrink=0.0):
        self.n_components = n_components
        self.shrink = shrink

    def fit(self, X, lengths=None):
        X = np.asarray(X)
        self.mean_ = X.mean(0) * (1 - self.shrink)
        self.sd_ = X.std(0)
        self.n_parameters_ = 2 * X.shape[1] + self.n_components
        return self

    def score(self, X, lengths=None):
        return float(norm.logpdf(np.asarray(X), self.mean_, self.sd_).sum())


def test_a_new_sequence_model_plugs_in_through_its_own_methods(sequences):
    X, lengths = sequences
    res = select_model(X, lengths, family=IIDGaussian, n_components=[1, 2], cv=3)
    for row, k in zip(res.rows, [1, 2], strict=True):
        ll = norm.logpdf(X, X.mean(0), X.std(0)).sum()
        p = 4 + k
        assert row["label"] == f"IIDGaussian K={k}" and row["icl"] is None
        assert row["bic"] == pytest.approx(-2 * ll + p * math.log(len(X)), rel=1e-12)
    folds, _ = sequence_folds(lengths, 3, random_state=0)
    total = sum(IIDGaussian().fit(X[f.train]).score(X[f.test]) for f in folds)
    assert res.rows[0]["cv_loglik"] == pytest.approx(total / len(X), rel=1e-12)

    class NoCount(IIDGaussian):
        def fit(self, X, lengths=None):
            super().fit(X, lengths)
            del self.n_parameters_
            return self

    res = select_model(X, lengths, candidates=[NoCount()])
    assert "does not say how many free parameters" in res.rows[0]["error"]
    with pytest.raises(ParameterError, match=r"IIDGaussian\(n_components, covariance_type"):
        select_model(X, lengths, family=IIDGaussian, covariance_types=["full"])


def test_result_repr_frame_and_dict_carry_the_same_numbers(sequences):
    X, lengths = sequences
    res = quiet(
        select_model, X, lengths, family="gaussian_hmm", n_components=[1, 2, 3],
        covariance_types=["diag", "spherical"], n_iter=10, cv=3,
    )  # fmt: skip
    text = repr(res)
    lines = text.splitlines()
    assert lines[0].startswith("SelectionResult: 6 candidates on 480 rows in 6 sequence(s)")
    assert len(lines) == 2 + len(res.rows)
    best = res.best_row_
    assert f"best by BIC: {best['label']}" in lines[0]
    starred = [ln for ln in lines[2:] if "*" in ln]
    assert len(starred) == 1 and starred[0].startswith(best["label"])
    assert f"{best['bic']:.2f}*" in starred[0]
    frame = res.to_frame()
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(res.rows)
    for (_, fr), row in zip(frame.iterrows(), res.rows, strict=True):
        for c in ("loglik", "bic", "aic", "icl", "cv_loglik"):
            assert fr[c] == row[c]
        assert fr["n_parameters"] == row["n_parameters"] and fr["label"] == row["label"]
    assert frame["best"].sum() == 1 and frame.loc[frame["best"], "label"].item() == best["label"]
    doc = res.to_dict()
    back = json.loads(json.dumps(doc))
    assert back["best"] == best["label"] and back["n_sequences"] == 6
    assert [r["bic"] for r in back["rows"]] == [r["bic"] for r in res.rows]
    assert set(back["best_by"]) == {"bic", "aic", "icl", "cv_loglik"}


def test_bad_lengths_and_folds_are_errors_naming_the_problem(sequences):
    X, lengths = sequences
    with pytest.raises(DataError, match="lengths sum to 479 but X has 480 rows"):
        select_model(X, [*lengths[:-1], 79], family="gaussian_hmm", n_components=[1])
    with pytest.raises(DataError, match=r"lengths\[1\] = 0"):
        select_model(X, [480, 0], family="gaussian_hmm", n_components=[1])
    with pytest.raises(ParameterError, match="fewer sequences than folds"):
        select_model(X[:9], family="gaussian_hmm", n_components=[1], cv=5)
    with pytest.raises(ParameterError, match="nothing to fit"):
        select_model(X, lengths, family="gaussian_hmm", covariance_types=[])
    with pytest.raises(ParameterError, match="unknown family 'hmm'"):
        select_model(X, family="hmm")


# Free parameters of K states on d = 2 columns, counted by hand: start K - 1, transitions
# K (K - 1), plus the emissions: GaussianHMM diag 2K means + 2K variances; GMMHMM (n_mix=2,
# diag) K weights + 4K means + 4K variances; AutoregressiveHMM (order 1) K (4 + 2)
# coefficients + 3K covariance entries, and its first row of each sequence is a lag only.
@pytest.mark.parametrize(
    ("family", "options", "params", "lags"),
    [
        (GaussianHMM, {}, lambda k: k * k + 4 * k - 1, 0),
        (GMMHMM, {"n_mix": 2}, lambda k: k * k + 9 * k - 1, 0),
        (AutoregressiveHMM, {}, lambda k: k * k + 9 * k - 1, 1),
    ],
)
def test_an_hmm_of_no_fewer_parameters_than_values_is_na_not_best(family, options, params, lags):
    """12 rows of 2 columns: an AutoregressiveHMM with K=3 (35 parameters on 22 scored
    values) scored a log-likelihood the variance floor made (BIC 33.4) and was ranked best
    over K=1 (71.6) and K=2 (61.6); GMMHMM K=3, 4 were ranked too. As for GaussianMixture, a
    candidate of at least as many parameters as observed values is NA, its error naming the
    counts; the fit itself stands, as in hmmlearn."""
    X = np.random.default_rng(0).normal(size=(12, 2))
    values = 2 * (12 - lags)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny fits: convergence and degenerate-state warnings
        res = select_model(X, family=family, n_components=[1, 2, 3, 4], random_state=0, **options)
    for r in res.rows:
        k = r["n_components"]
        assert r["n_parameters"] == params(k)
        refused = r["error"] is not None and f"{values} observed value(s)" in r["error"]
        assert refused == (params(k) >= values), r
        if refused:
            assert f"no more than the {params(k)} parameters {family.__name__}" in r["error"]
            assert math.isnan(r["bic"]) and res.models[k - 1] is None
    assert params(res.best_row_["n_components"]) < values


def test_the_rule_leaves_bounded_models_ranked():
    # a variational HMM's priors keep its variances off zero: its K=4 is ranked on 12 rows
    from latentfit import VariationalGaussianHMM

    X = np.random.default_rng(0).normal(size=(12, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = select_model(X, candidates=[VariationalGaussianHMM(4, random_state=0, n_iter=5)])
    assert res.rows[0]["error"] is None and np.isfinite(res.rows[0]["bic"])
