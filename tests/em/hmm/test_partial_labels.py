"""Partial labels (known states, -1 unknown) for every HMM: the likelihood, posteriors and
Viterbi path conditioned on the known states against brute-force enumeration of the paths
that pass through them, on every kernel the dispatcher can choose; supervised closed forms;
the unlabelled fit recovered exactly; label switching fixed by a few labels; the errors."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from latentfit.em.hmm.discrete import CategoricalHMM, PoissonHMM
from latentfit.em.hmm.gaussian import GaussianHMM
from latentfit.em.hmm.gmmhmm import GMMHMM
from latentfit.em.hmm.inference import posterior as K
from latentfit.em.sources.chunks import ArraySource
from latentfit.errors import DataError, ParameterError

F64 = torch.float64


def brute_force(ll, pi, A, lengths, y):
    """Enumerate the state paths of every sequence that agree with the known states ``y``
    (-1: any state): log Σ p(x, z), the posteriors p(z_t | x, y), Σ ξ, start counts, the best
    path and its log p(x, z)."""
    ll, pi, A = np.asarray(ll, float), np.asarray(pi, float), np.asarray(A, float)
    k = ll.shape[1]
    logz_total, gammas, xi, start, best_lp, best_paths = (
        0.0,
        [],
        np.zeros((k, k)),
        np.zeros(k),
        0.0,
        [],
    )
    offset = 0
    with np.errstate(divide="ignore"):
        lpi, lA = np.log(pi), np.log(A)
    for n in lengths:
        seg, lab = ll[offset : offset + n], y[offset : offset + n]
        paths = [
            p
            for p in itertools.product(range(k), repeat=n)
            if all(lab[i] < 0 or lab[i] == p[i] for i in range(n))
        ]
        lp = np.array(
            [
                lpi[p[0]]
                + seg[0, p[0]]
                + sum(lA[p[i - 1], p[i]] + seg[i, p[i]] for i in range(1, n))
                for p in paths
            ]
        )
        logz = np.logaddexp.reduce(lp)
        w = np.exp(lp - logz)
        g = np.zeros((n, k))
        for wi, p in zip(w, paths, strict=True):
            g[np.arange(n), p] += wi
            start[p[0]] += wi
            for i in range(1, n):
                xi[p[i - 1], p[i]] += wi
        logz_total += logz
        gammas.append(g)
        best_lp += lp.max()
        best_paths.append(paths[int(lp.argmax())])
        offset += n
    return logz_total, np.concatenate(gammas), xi, start, best_lp, np.concatenate(best_paths)


def gaussian_model():
    m = GaussianHMM(3, covariance_type="diag")
    m.startprob_ = np.array([0.5, 0.3, 0.2])
    m.transmat_ = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
    m.means_ = np.array([[0.0, 0.0], [1.5, -1.0], [-1.0, 2.0]])
    m.covars_ = np.array([[1.0, 0.5], [0.7, 1.2], [2.0, 0.8]])
    return m


def gaussian_ll(m, X):  # scipy's densities, independent of latentfit's
    return np.stack(
        [
            stats.multivariate_normal(m.means_[j], np.diag(m._covars_[j])).logpdf(X)
            for j in range(3)
        ],
        1,
    )


def categorical_model():
    m = CategoricalHMM(3)
    m.startprob_ = np.array([0.6, 0.3, 0.1])
    m.transmat_ = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    m.emissionprob_ = np.array([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1], [0.2, 0.1, 0.3, 0.4]])
    return m


LENGTHS = [4, 3, 2]
Y = np.array([-1, 2, -1, -1, 0, -1, 1, -1, -1])  # a known state in every sequence but the last


def check_against_brute_force(m, X, ll):
    ref_ll, ref_g, _, _, ref_best, ref_path = brute_force(ll, m.startprob_, m.transmat_, LENGTHS, Y)
    assert m.score(X, LENGTHS, y=Y) == pytest.approx(ref_ll, rel=1e-10)
    score, post = m.score_samples(X, LENGTHS, y=Y)
    assert score == pytest.approx(ref_ll, rel=1e-10)
    np.testing.assert_allclose(post, ref_g, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.predict_proba(X, LENGTHS, y=Y), ref_g, rtol=1e-9, atol=1e-12)
    lp, path = m.decode(X, LENGTHS, y=Y)
    assert lp == pytest.approx(ref_best, rel=1e-10)
    np.testing.assert_array_equal(path, ref_path)
    np.testing.assert_array_equal(m.predict(X, LENGTHS, y=Y), ref_path)
    lp_map, states = m.decode(X, LENGTHS, algorithm="map", y=Y)
    np.testing.assert_array_equal(states, ref_g.argmax(1))
    assert lp_map == pytest.approx(ref_g.max(1).sum(), rel=1e-10)
    # the labels matter: without them the results differ (the test can fail)
    assert abs(m.score(X, LENGTHS) - ref_ll) > 1e-3


def test_gaussian_against_brute_force():
    m = gaussian_model()
    X = np.random.default_rng(0).normal(size=(9, 2)) * 1.5
    check_against_brute_force(m, X, gaussian_ll(m, X))


def test_categorical_against_brute_force():
    m = categorical_model()
    X = np.array([[0], [1], [2], [3], [0], [1], [1], [2], [0]])
    ll = np.log(m.emissionprob_[:, X[:, 0]].T.clip(1e-300)) + np.where(
        m.emissionprob_[:, X[:, 0]].T > 0, 0, -np.inf
    )
    check_against_brute_force(m, X, ll)


def test_poisson_and_gmm_against_brute_force():
    rng = np.random.default_rng(1)
    p = PoissonHMM(3)
    p.startprob_, p.transmat_ = gaussian_model().startprob_, gaussian_model().transmat_
    p.lambdas_ = np.array([[1.0, 4.0], [3.0, 0.5], [6.0, 2.0]])
    p.n_features = 2
    X = rng.poisson(3, size=(9, 2)).astype(float)
    ll = np.stack([stats.poisson(p.lambdas_[j]).logpmf(X).sum(1) for j in range(3)], 1)
    check_against_brute_force(p, X, ll)

    g = GMMHMM(3, n_mix=2, covariance_type="diag")
    g.startprob_, g.transmat_ = p.startprob_, p.transmat_
    g.weights_ = np.array([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])
    g.means_ = rng.normal(size=(3, 2, 2)) * 2
    g.covars_ = rng.uniform(0.5, 2.0, size=(3, 2, 2))
    X = rng.normal(size=(9, 2)) * 2
    ll = np.stack(
        [
            np.logaddexp.reduce(
                [
                    np.log(g.weights_[j, c])
                    + stats.multivariate_normal(g.means_[j, c], np.diag(g.covars_[j, c])).logpdf(X)
                    for c in range(2)
                ],
                axis=0,
            )
            for j in range(3)
        ],
        1,
    )
    check_against_brute_force(g, X, ll)


# ---------------------------------------------------------------------- every kernel
def random_kernel_inputs(t, k, seed):
    g = torch.Generator().manual_seed(seed)
    pi = torch.rand(k, generator=g, dtype=F64) + 0.1
    A = torch.rand(k, k, generator=g, dtype=F64) + torch.eye(k, dtype=F64)
    ll = torch.randn(t, k, generator=g, dtype=F64) * 3
    y = torch.randint(-1, k, (t,), generator=g)
    y[torch.rand(t, generator=g) < 0.5] = -1  # about a third of the steps known
    return ll, pi / pi.sum(), A / A.sum(1, keepdim=True), y


POSTERIOR_PATHS = {
    "sequential": dict(parallel=False),
    "chunked, one chunk": dict(compiled=False),
    "chunked, chunks of 2": dict(compiled=False, chunk=2),
    "chunked, chunks of 3": dict(compiled=False, chunk=3),
    "compiled": dict(compiled=True),
}
OTHER_PATHS = {  # score and decode take compiled= and chunk=
    "chunked, one chunk": dict(compiled=False),
    "chunked, chunks of 2": dict(compiled=False, chunk=2),
    "chunked, chunks of 3": dict(compiled=False, chunk=3),
    "compiled": dict(compiled=True),
    "compiled, chunks of 2": dict(compiled=True, chunk=2),
}


@pytest.mark.parametrize("path", list(POSTERIOR_PATHS))
def test_every_posterior_kernel_against_brute_force(path):
    lengths = [5, 4, 1]
    ll, pi, A, y = random_kernel_inputs(10, 3, 3)
    ref = brute_force(ll.numpy(), pi.numpy(), A.numpy(), lengths, y.numpy())
    post = K.posterior(ll.clone(), pi, A, lengths, states=y, **POSTERIOR_PATHS[path])
    assert float(post.log_likelihood) == pytest.approx(ref[0], rel=1e-10)
    np.testing.assert_allclose(post.posteriors, ref[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.transition_counts, ref[2], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.start_counts, ref[3], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("path", list(OTHER_PATHS))
def test_every_score_and_viterbi_kernel_against_brute_force(path):
    lengths = [5, 4, 1]
    ll, pi, A, y = random_kernel_inputs(10, 3, 4)
    ref = brute_force(ll.numpy(), pi.numpy(), A.numpy(), lengths, y.numpy())
    fwd = K.log_likelihood(ll.clone(), pi, A, lengths, states=y, **OTHER_PATHS[path])
    assert float(fwd.log_likelihood) == pytest.approx(ref[0], rel=1e-10)
    v = K.decode(lambda a, b: ll[a:b], 10, pi, A, lengths, states=y, **OTHER_PATHS[path])
    assert float(v.log_prob) == pytest.approx(ref[4], rel=1e-10)
    np.testing.assert_array_equal(v.path, ref[5])


@pytest.mark.parametrize("zeros", [False, True])
def test_kernels_agree_with_labels_on_a_long_stream(zeros):
    """Many chunks and sequences, a third of the steps known: the chunked and compiled
    E-steps, filters and decoders equal the sequential recursions; also with structural
    zeros in the transitions (a cycle 0 → 1 → 2 → 3 → 0), where from some starts a known
    state cannot be reached and the chunked kernels' boundary windows see zero rows."""
    lengths = [700, 1, 1299, 500]
    ll, pi, A, y = random_kernel_inputs(2500, 4, 5)
    if zeros:
        A = 0.9 * torch.eye(4, dtype=F64) + 0.1 * torch.eye(4, dtype=F64).roll(1, 1)
        g = torch.Generator().manual_seed(6)
        z = torch.zeros(2500, dtype=torch.int64)  # a path the cycle allows, labelled at 5%
        for i in range(1, 2500):
            z[i] = (z[i - 1] + int(torch.rand(1, generator=g) < 0.1)) % 4
        y = torch.where(torch.rand(2500, generator=g) < 0.05, z, -1)
    ref = K.posterior(ll.clone(), pi, A, lengths, states=y, parallel=False)
    ref_path = K.viterbi(K.condition_on_states(ll, y), pi, A, lengths)
    assert bool(torch.isfinite(ref.log_likelihood))
    for kw in (dict(compiled=False), dict(compiled=False, chunk=37), dict(compiled=True)):
        post = K.posterior(ll.clone(), pi, A, lengths, states=y, **kw)
        assert float(post.log_likelihood) == pytest.approx(float(ref.log_likelihood), rel=1e-11)
        np.testing.assert_allclose(post.posteriors, ref.posteriors, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(post.transition_counts, ref.transition_counts, rtol=1e-9)
        fwd = K.log_likelihood(ll.clone(), pi, A, lengths, states=y, **kw)
        assert float(fwd.log_likelihood) == pytest.approx(float(ref.log_likelihood), rel=1e-11)
        v = K.decode(lambda a, b: ll[a:b], 2500, pi, A, lengths, states=y, **kw)
        np.testing.assert_array_equal(v.path, ref_path.path)
        assert float(v.log_prob) == pytest.approx(float(ref_path.log_prob), rel=1e-11)
    known = y >= 0
    np.testing.assert_array_equal(ref_path.path[known], y[known])  # the path keeps the labels


def test_labelled_long_fit_uses_the_compiled_path_and_equals_the_torch_kernels():
    """A sequence past the dispatcher's compile threshold with labels: the model's results
    (compiled kernels) equal the torch kernels on the conditioned log-likelihoods."""
    m = gaussian_model()
    t = K.COMPILE_MIN_STEPS + 100
    X, _ = m.sample(t, random_state=0)
    y = np.full(t, -1)
    y[::7] = np.random.default_rng(0).integers(0, 3, size=len(y[::7]))
    params = m._given_params()
    ll = K.condition_on_states(
        m._emission_log_likelihood(params, torch.as_tensor(X)), torch.as_tensor(y)
    )
    sp, tm = params["startprob"], params["transmat"]
    ref = K.posterior(ll.clone(), sp, tm, compiled=False)
    assert m.score(X, y=y) == pytest.approx(float(ref.log_likelihood), rel=1e-11)
    np.testing.assert_allclose(m.predict_proba(X, y=y), ref.posteriors, rtol=1e-8, atol=1e-12)
    v = K.decode(lambda a, b: ll[a:b], t, sp, tm, compiled=False)
    np.testing.assert_array_equal(m.predict(X, y=y), v.path)


# ---------------------------------------------------------------------- fitting
def fitted_pair(cls, X, lengths, **kw):
    a = cls(**kw).fit(X, lengths)
    b = cls(**kw).fit(X, lengths, y=np.full(len(X), -1))
    return a, b


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_all_unknown_equals_the_unlabelled_fit_exactly():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 2)) + np.repeat([[0, 0], [3, 3], [0, 3]], 40, axis=0)
    a, b = fitted_pair(GaussianHMM, X, [60, 60], n_components=3, random_state=1, n_iter=5)
    for name in ("startprob_", "transmat_", "means_", "covars_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(
        a.predict_proba(X, [60, 60]), b.predict_proba(X, [60, 60], y=np.full(120, -1))
    )
    assert a.score(X, [60, 60]) == b.score(X, [60, 60], y=np.full(120, -1))
    S = rng.integers(0, 4, size=(80, 1))
    a, b = fitted_pair(CategoricalHMM, S, None, n_components=2, random_state=0, n_iter=5)
    np.testing.assert_array_equal(a.emissionprob_, b.emissionprob_)
    np.testing.assert_array_equal(a.transmat_, b.transmat_)


def supervised_counts(y, lengths, k):
    start, trans = np.zeros(k), np.zeros((k, k))
    offset = 0
    for n in lengths:
        seg = y[offset : offset + n]
        start[seg[0]] += 1
        for a, b in itertools.pairwise(seg):
            trans[a, b] += 1
        offset += n
    return start / start.sum(), trans / trans.sum(1, keepdims=True)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fully_labelled_gives_the_supervised_estimates_after_one_m_step():
    truth = gaussian_model()
    lengths = [150, 100, 50]
    parts = [truth.sample(n, random_state=s) for s, n in enumerate(lengths)]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    start, trans = supervised_counts(y, lengths, 3)
    m = GaussianHMM(3, n_iter=1, random_state=0, means_weight=0).fit(X, lengths, y=y)
    np.testing.assert_allclose(m.startprob_, start, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(m.transmat_, trans, rtol=1e-10)
    means = np.stack([X[y == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(m.means_, means, rtol=1e-10)

    c = categorical_model()
    parts = [c.sample(n, random_state=10 + s) for s, n in enumerate(lengths)]
    S = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    start, trans = supervised_counts(y, lengths, 3)
    f = CategoricalHMM(3, n_iter=1, random_state=0, n_features=4).fit(S, lengths, y=y)
    freq = np.stack([np.bincount(S[y == j, 0], minlength=4) / (y == j).sum() for j in range(3)])
    np.testing.assert_allclose(f.emissionprob_, freq, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(f.transmat_, trans, rtol=1e-10)
    np.testing.assert_allclose(f.startprob_, start, rtol=1e-10, atol=1e-14)

    p = PoissonHMM(3, n_iter=1, random_state=0).fit(S.astype(float), lengths, y=y)
    rates = np.stack([S[y == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(p.lambdas_, rates, rtol=1e-10)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_few_labels_fix_label_switching():
    """Simulated data whose states are numbered by the truth: unlabelled fits number them as
    k-means happens to, a few known steps per state make every fit number them as the truth."""
    truth = GaussianHMM(3)
    truth.startprob_ = np.full(3, 1 / 3)
    truth.transmat_ = np.full((3, 3), 0.05) + np.eye(3) * 0.85
    truth.means_ = np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    truth.covars_ = np.ones((3, 2))
    X, z = truth.sample(600, random_state=3)
    y = np.full(600, -1)
    for j in range(3):
        y[np.flatnonzero(z == j)[:2]] = j  # two known steps per state
    orders_free, orders_labelled = [], []
    for seed in range(4):
        free = GaussianHMM(3, random_state=seed, n_iter=20).fit(X)
        lab = GaussianHMM(3, random_state=seed, n_iter=20).fit(X, y=y)
        orders_free.append(tuple(np.abs(free.means_[:, None] - truth.means_).sum(2).argmin(1)))
        orders_labelled.append(tuple(np.abs(lab.means_[:, None] - truth.means_).sum(2).argmin(1)))
        # the truth's numbering, close to the truth's means (600 steps: se about 0.07)
        np.testing.assert_allclose(lab.means_, truth.means_, atol=0.4)
        assert (lab.predict(X) == z).mean() > 0.95
    assert any(o != (0, 1, 2) for o in orders_free)  # unlabelled fits do switch labels
    assert all(o == (0, 1, 2) for o in orders_labelled)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_labels_that_name_every_state_seed_the_emissions():
    truth = gaussian_model()
    X, z = truth.sample(300, random_state=5)
    y = np.full(300, -1)
    y[:60] = z[:60]
    m = GaussianHMM(3, n_iter=0, random_state=0).fit(X, y=y)  # the start itself
    means = np.stack([X[:60][z[:60] == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(m.means_, means, rtol=1e-10)
    # GMMHMM: centres from the labelled rows, the others to the nearest, labelled rows kept
    g = GMMHMM(3, n_mix=1, n_iter=0, random_state=0).fit(X, y=y)
    assign = ((X[:, None] - means) ** 2).sum(2).argmin(1)
    assign[:60] = z[:60]
    np.testing.assert_allclose(
        g.means_[:, 0], np.stack([X[assign == j].mean(0) for j in range(3)]), rtol=1e-10
    )
    p = PoissonHMM(3, n_iter=0, random_state=0).fit(np.abs(np.round(X * 3)), y=y)
    rates = np.stack([np.abs(np.round(X[:60] * 3))[z[:60] == j].mean(0) for j in range(3)])
    np.testing.assert_allclose(p.lambdas_, rates, rtol=1e-12)
    counts = CategoricalHMM(3, n_iter=0, random_state=0, n_features=4)
    S, s = categorical_model().sample(200, random_state=1)
    y = np.where(np.arange(200) < 100, s, -1)
    counts.fit(S, y=y)
    freq = np.stack([np.bincount(S[:100][s[:100] == j, 0], minlength=4) + 1.0 for j in range(3)])
    np.testing.assert_allclose(counts.emissionprob_, freq / freq.sum(1, keepdims=True), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_every_model_fits_with_labels_and_em_does_not_lower_the_labelled_likelihood():
    rng = np.random.default_rng(4)
    X, z = gaussian_model().sample(200, random_state=2)
    y = np.where(rng.random(200) < 0.2, z, -1)
    for model, data in (
        (GaussianHMM(3, random_state=0, n_iter=8), X),
        (GMMHMM(3, n_mix=2, random_state=0, n_iter=8), X),
        (PoissonHMM(3, random_state=0, n_iter=8), np.abs(np.round(X * 3))),
        (CategoricalHMM(3, random_state=0, n_iter=8), (np.abs(X[:, :1]) * 2).astype(int) % 4),
    ):
        model.fit(data, [120, 80], y=y)
        lb = np.asarray(model.lower_bounds_)
        assert np.all(np.diff(lb) > -1e-8 * np.abs(lb[1:]))
        known = y >= 0
        np.testing.assert_array_equal(model.predict(data, [120, 80], y=y)[known], y[known])
        # the lower bounds are log p(X, y), not log p(X)
        assert model.score(data, [120, 80], y=y) < model.score(data, [120, 80])


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "y, match",
    [
        (np.zeros(8, int), r"y has 8 entries but X has 9 rows"),
        (np.full(9, 3), r"y\[0\] = 3 is not a state"),
        (np.r_[-1, -2, np.zeros(7, int)], r"y\[1\] = -2 is not a state"),
        (np.zeros(9), r"integer state indices"),
        # NaN where the state is unknown (a label column read from a table): -1 is advised,
        # not astype(int), which makes the NaN a stray integer
        (
            np.r_[0.0, 1.0, np.nan, np.zeros(6)],
            r"y\[2\] is NaN: mark a sample whose state is unknown with -1",
        ),
        (np.zeros((9, 1), int), r"1-D array"),
    ],
)
def test_bad_labels_are_named(y, match):
    m = gaussian_model()
    X = np.zeros((9, 2))
    for call in (m.score, m.predict_proba, m.predict, lambda X, y: m.decode(X, y=y)):
        with pytest.raises(DataError, match=match):
            call(X, y=y)
    with pytest.raises(DataError, match=match):
        GaussianHMM(3).fit(X, y=y)


def test_impossible_labels_name_the_step():
    m = gaussian_model()
    m.transmat_ = np.array([[0.7, 0.0, 0.3], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
    m.startprob_ = np.array([0.5, 0.5, 0.0])
    X = np.zeros((6, 2))
    y = np.array([-1, -1, 0, 1, -1, -1])  # 0 -> 1 has zero probability
    for call in (
        m.score,
        m.predict_proba,
        m.predict,
        lambda X, lengths, y: m.decode(X, lengths, algorithm="map", y=y),
    ):
        with pytest.raises(DataError, match=r"y\[3\] = 1.*step 3 of sequence 0.*transmat_"):
            call(X, None, y=y)
    y = np.array([-1, -1, -1, 2, -1, -1])  # state 2 cannot start the second sequence
    with pytest.raises(DataError, match=r"y\[3\] = 2.*step 0 of sequence 1.*startprob_\[2\] is 0"):
        m.score(X, [3, 3], y=y)
    c = categorical_model()  # state 0 never emits symbol 3
    S = np.array([[0], [3], [1]])
    with pytest.raises(DataError, match=r"y\[1\] = 0.*state 0 gives that row zero probability"):
        c.score(S, y=np.array([-1, 0, -1]))
    # an unknown step that only state 1 emits, right after a known state 0 that cannot go there
    c.transmat_ = np.array([[0.8, 0.0, 0.2], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    c.emissionprob_ = np.array([[0.7, 0.0, 0.3, 0.0], [0.1, 0.6, 0.2, 0.1], [0.2, 0.0, 0.4, 0.4]])
    with pytest.raises(
        DataError, match=r"row 1 of X \(step 1 of sequence 0\), whose state is unknown"
    ):
        c.score(np.array([[0], [1]]), y=np.array([0, -1]))
    with pytest.raises(DataError, match=r"y\[3\] = 1"):  # also when fitting from such a start
        fit = GaussianHMM(3, init_params="mc", params="mc", n_iter=2)
        fit.startprob_, fit.transmat_ = m.startprob_, m.transmat_
        fit.fit(np.random.default_rng(0).normal(size=(6, 2)), y=np.array([-1, -1, 0, 1, -1, -1]))


def test_impossible_labels_name_the_step_on_a_long_sequence():
    """Past the compile threshold (the compiled forward filter finds the step)."""
    m = gaussian_model()
    m.transmat_ = np.array([[0.7, 0.0, 0.3], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
    t = K.COMPILE_MIN_STEPS + 1000
    X, _ = m.sample(t, random_state=1)
    y = np.full(t, -1)
    y[4500], y[4501] = 0, 1
    with pytest.raises(DataError, match=r"y\[4501\] = 1.*step 4501 of sequence 0"):
        m.score(X, y=y)
    with pytest.raises(DataError, match=r"y\[4501\] = 1.*step 501 of sequence 1"):
        m.predict(X, [4000, t - 4000], y=y)


def test_labels_are_refused_with_a_data_source():
    with pytest.raises(ParameterError, match="in-memory X only"):
        GaussianHMM(2).fit(ArraySource(np.zeros((10, 2))), y=np.zeros(10, int))
