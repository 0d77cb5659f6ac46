"""LinearGaussianSSM: EM's monotonicity and recovery, sequences, float32, save/load, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import latentfit
from latentfit import LinearGaussianSSM
from latentfit.em.driver import EMMonotonicityWarning
from latentfit.em.ssm.kalman import SSMParams
from latentfit.em.ssm.model import infer
from latentfit.em.ssm.steps import m_step, sufficient_statistics
from latentfit.errors import DataError, ModelFileError, ParameterError
from tests.em.ssm.helpers import model_from, random_params, with_missing


def quiet_fit(model, X, lengths=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", EMMonotonicityWarning)
        return model.fit(X, lengths)


@pytest.mark.parametrize(
    ("covariance_type", "ridge", "missing"),
    [("full", 0.0, False), ("diag", 0.0, True), ("full", 2.0, True)],
)
def test_em_never_decreases_the_objective(covariance_type, ridge, missing):
    truth = model_from(random_params(seed=0, k=2, d=3))
    Y, _ = truth.sample(300, random_state=1)
    if missing:
        Y = with_missing(Y, seed=2)
    m = quiet_fit(
        LinearGaussianSSM(
            2, covariance_type=covariance_type, ridge=ridge, n_iter=40, tol=-np.inf,
            random_state=0,
        ),
        Y,
        [100, 200],
    )  # fmt: skip
    lb = np.array(m.lower_bounds_)
    assert len(lb) == 40
    # EM is monotone up to rounding (float64 sums of 300 steps: far below 1e-9 relative)
    assert np.all(np.diff(lb) >= -1e-9 * np.abs(lb[1:]))
    assert lb[-1] > lb[0] + 1.0
    if ridge == 0:  # the recorded objective is the log-likelihood of the parameters before
        # the last M-step; the fitted model's is at least as high
        assert m.score(Y, [100, 200]) >= lb[-1] - 1e-9 * abs(lb[-1])
    if covariance_type == "diag":
        R = m.observation_covariance_
        np.testing.assert_array_equal(R, np.diag(np.diag(R)))


def test_one_m_step_maximises_the_expected_complete_log_likelihood():
    """The closed-form M-step's output beats random perturbations of every parameter on the
    expected complete-data log-likelihood, written out directly from the statistics."""
    params = random_params(seed=3, k=2, d=3)
    p = SSMParams(*(torch.tensor(v) for v in params))
    Y = torch.tensor(with_missing(model_from(params).sample(60, random_state=4)[0], seed=5))
    _, s = infer(p, Y, [60])
    st = sufficient_statistics(p, Y, s, [60])
    best = m_step(p, st, "acqrdmv")

    def expected_cll(q: SSMParams) -> float:
        Qi, Ri, Vi = (torch.linalg.inv(M) for M in (q.Q, q.R, q.V0))
        N, b = st["n_steps"], st["n_sequences"]
        # transitions: Σ E[(x_t − A x_{t-1})ᵀ Q⁻¹ (x_t − A x_{t-1})]
        Et = st["xx_tail"] - q.A @ st["x1x0"].T - st["x1x0"] @ q.A.T + q.A @ st["xx_head"] @ q.A.T
        # observations: Σ E[(y − C x − d)(...)ᵀ]
        yxC = st["yx"] @ q.C.T
        yd = st["y"][:, None] * q.d[None]
        Cxd = (q.C @ st["x"])[:, None] * q.d[None]
        Eo = (st["yy"] - yxC - yxC.T - yd - yd.T + q.C @ st["xx"] @ q.C.T + Cxd + Cxd.T
              + N * q.d[:, None] * q.d[None])  # fmt: skip
        xm = st["x_first"][:, None] * q.mu0[None]
        E0 = st["xx_first"] - xm - xm.T + b * q.mu0[:, None] * q.mu0[None]
        return float(
            -0.5 * (N - b) * torch.logdet(q.Q) - 0.5 * torch.trace(Qi @ Et)
            - 0.5 * N * torch.logdet(q.R) - 0.5 * torch.trace(Ri @ Eo)
            - 0.5 * b * torch.logdet(q.V0) - 0.5 * torch.trace(Vi @ E0)
        )  # fmt: skip

    top = expected_cll(best)
    gen = torch.Generator().manual_seed(0)
    for field in best._fields:
        for _ in range(3):
            v = getattr(best, field)
            e = 1e-3 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
            if v.dim() == 2 and v.shape[0] == v.shape[1] and field in ("Q", "R", "V0"):
                e = e + e.T
            assert expected_cll(best._replace(**{field: v + e})) < top


def stationary_observation_moments(m):
    """Cov[y_t] and Cov[y_{t+1}, y_t] of the stationary model: invariant to the state basis."""
    A, C, Q, R = (
        m.transition_matrix_, m.observation_matrix_, m.transition_covariance_,
        m.observation_covariance_,
    )  # fmt: skip
    from scipy.linalg import solve_discrete_lyapunov

    S = solve_discrete_lyapunov(A, Q)
    return C @ S @ C.T + R, C @ A @ S @ C.T


def test_recovers_the_model_up_to_its_invariances():
    params = random_params(seed=6, k=2, d=4)
    truth = model_from(params)
    Y, _ = truth.sample(20000, random_state=7)
    Y_test, _ = truth.sample(5000, random_state=8)
    m = quiet_fit(LinearGaussianSSM(2, n_iter=300, tol=1e-4, random_state=0), Y)
    # the fitted model is at least as likely as the truth on the data (the MLE), and on new
    # data it is within sampling error of it (a few nats over 5,000 steps; the first steps
    # are left out: with one training sequence, mu0 and V0 describe that sequence's start)
    assert m.score(Y) >= truth.score(Y) - 1.0
    assert m.score_samples(Y_test)[20:].sum() >= truth.score_samples(Y_test)[20:].sum() - 10.0
    for fitted, true in zip(
        stationary_observation_moments(m), stationary_observation_moments(truth), strict=True
    ):
        # 20,000 correlated steps: moments within a few percent of the truth's scale
        assert np.abs(fitted - true).max() < 0.05 * np.abs(true).max() + 0.05
    np.testing.assert_allclose(m.observation_offset_, params[4], atol=0.15)
    # eigenvalues of A are basis-invariant
    np.testing.assert_allclose(
        np.sort_complex(np.linalg.eigvals(m.transition_matrix_)),
        np.sort_complex(np.linalg.eigvals(params[0])),
        atol=0.05,
    )


def test_several_sequences_are_the_sum_of_separate_ones():
    truth = model_from(random_params(seed=9, k=2, d=3))
    parts = [with_missing(truth.sample(n, random_state=n)[0], seed=n) for n in (40, 7, 23)]
    Y = np.vstack(parts)
    lengths = [len(p) for p in parts]
    assert truth.score(Y, lengths) == pytest.approx(sum(truth.score(p) for p in parts), rel=1e-12)
    terms = truth.score_samples(Y, lengths)
    np.testing.assert_allclose(terms, np.concatenate([truth.score_samples(p) for p in parts]))
    means, covs = truth.smooth(Y, lengths)
    m2, c2 = truth.smooth(parts[2])
    np.testing.assert_allclose(means[47:], m2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(covs[47:], c2, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(truth.predict(Y, lengths), means)
    fm, fc = truth.filter(Y, lengths)
    np.testing.assert_allclose(fm[:40], truth.filter(parts[0])[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fc[40:47], truth.filter(parts[1])[1], rtol=1e-12, atol=1e-12)


def test_float32_fit_close_to_float64():
    truth = model_from(random_params(seed=10, k=2, d=3))
    Y, _ = truth.sample(500, random_state=11)
    m64 = quiet_fit(LinearGaussianSSM(2, n_iter=15, tol=-np.inf, random_state=0), Y)
    m32 = quiet_fit(
        LinearGaussianSSM(2, n_iter=15, tol=-np.inf, random_state=0, dtype="float32"), Y
    )
    assert m32.transition_matrix_.dtype == np.float32
    # 15 iterations of float32 rounding (1e-7) amplified by the M-step's solves
    assert m32.score(Y) == pytest.approx(m64.score(Y), rel=1e-4)
    np.testing.assert_allclose(m32.lower_bounds_, m64.lower_bounds_, rtol=1e-4)


def test_fixed_parameters_are_kept(tmp_path):
    params = random_params(seed=12, k=2, d=3)
    truth = model_from(params)
    Y, _ = truth.sample(200, random_state=13)
    m = model_from(params, n_iter=5, tol=-np.inf)
    m.set_params(params="cqrdmv", init_params="cqrdmv")
    quiet_fit(m, Y)
    np.testing.assert_array_equal(m.transition_matrix_, params[0])
    assert not np.allclose(m.observation_matrix_, params[1])


def test_save_load_round_trip(tmp_path):
    truth = model_from(random_params(seed=14, k=2, d=3))
    Y, _ = truth.sample(100, random_state=15)
    df = pd.DataFrame(Y, columns=["a", "b", "c"])
    m = quiet_fit(LinearGaussianSSM(2, n_iter=3, random_state=0, covariance_type="diag"), df)
    path = m.save(tmp_path / "ssm.safetensors")
    back = latentfit.load(path)
    assert type(back) is LinearGaussianSSM and back.covariance_type == "diag"
    assert back.score(df) == m.score(df)
    np.testing.assert_array_equal(back.smooth(Y)[1], m.smooth(Y)[1])
    assert back.lower_bounds_ == m.lower_bounds_
    assert list(back.feature_names_in_) == ["a", "b", "c"]
    with pytest.raises(DataError, match="feature names"):
        back.score(df[["b", "a", "c"]])


def test_sample_has_the_model_moments():
    truth = model_from(random_params(seed=16, k=2, d=3))
    Y, X = truth.sample(20000, random_state=17)
    assert Y.shape == (20000, 3) and X.shape == (20000, 2)
    cov, lag = stationary_observation_moments(truth)
    # 20,000 correlated draws: moments within 10% of their scale
    np.testing.assert_allclose(np.cov(Y.T), cov, atol=0.1 * np.abs(cov).max())
    Yc = Y - Y.mean(0)
    np.testing.assert_allclose(Yc[1:].T @ Yc[:-1] / 19999, lag, atol=0.1 * np.abs(cov).max())
    np.testing.assert_allclose(Y.mean(0), truth.observation_offset_, atol=0.1)


def test_bad_input_names_the_problem():
    truth = model_from(random_params(seed=18, k=2, d=3))
    Y, _ = truth.sample(50, random_state=19)
    m = LinearGaussianSSM(2, n_iter=2)
    with pytest.raises(DataError, match="NaN everywhere"):
        m.fit(np.full((10, 3), np.nan))
    bad = Y.copy()
    bad[:, 1] = np.nan
    with pytest.raises(DataError, match="column 1"):
        m.fit(bad)
    with pytest.raises(DataError, match="lengths sum to 40"):
        m.fit(Y, [20, 20])
    with pytest.raises(DataError, match=r"lengths\[1\]"):
        m.fit(Y, [50, 0])
    with pytest.raises(DataError, match="2-D"):
        m.fit(Y[:, 0])
    with pytest.raises(DataError, match="infinite"):
        m.fit(np.where(np.arange(3) == 2, np.inf, Y))
    with pytest.raises(DataError, match="2 features but the model was fitted with 3"):
        truth.score(Y[:, :2])
    with pytest.raises(NotFittedError):
        LinearGaussianSSM(2).score(Y)
    for kwargs, word in [
        ({"n_components": 0}, "n_components"),
        ({"covariance_type": "tied"}, "covariance_type"),
        ({"params": "acx"}, "params"),
        ({"ridge": -1.0}, "ridge"),
        ({"dtype": "int8"}, "dtype"),
    ]:
        with pytest.raises(ParameterError, match=word):
            LinearGaussianSSM(**{"n_components": 2, **kwargs}).fit(Y)
    wrong = model_from(random_params(seed=18, k=2, d=3))
    wrong.observation_matrix_ = np.ones((3, 3))
    with pytest.raises(ParameterError, match=r"observation_matrix_ must have shape \(3, 2\)"):
        wrong.score(Y)
    wrong = model_from(random_params(seed=18, k=2, d=3))
    wrong.transition_covariance_ = -np.eye(2)
    with pytest.raises(
        ParameterError, match="transition_covariance_ must be positive semi-definite"
    ):
        wrong.score(Y)


def test_damaged_file_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    truth = model_from(random_params(seed=20, k=2, d=3))
    truth.n_features = 3
    path = truth.save(tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = {"latentfit": f.metadata()["latentfit"]}  # no checksum: a crafted file
    tensors = load_file(str(path))
    tensors["observation_matrix_"] = torch.ones(3, 3, dtype=torch.float64)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="observation_matrix_"):
        latentfit.load(path)


def test_tracking_example_smooths_below_the_reading_noise():
    import matplotlib

    matplotlib.use("Agg")
    from latentfit.em.ssm.tracking import tracking_example

    ax, summary = tracking_example(n_steps=300, random_state=0)  # 300 readings, 20% hidden
    assert ax.get_ylabel() == "x position"
    # smoothing a slow target averages many readings: well below the reading noise (1.0)
    assert summary["rmse_smoothed"] < 0.5 * summary["rmse_readings"]
    # EM learns the reading noise from a start 3x too large (300 steps: within 15%)
    assert abs(summary["obs_std_fitted"] - 1.0) < 0.15


@pytest.mark.parametrize("compiled", [True, False])
def test_degenerate_covariances_name_the_row(compiled, monkeypatch):
    """No noise and a known start: the predicted covariances are all zero, and the smoother
    (which inverts them, last row first) refuses with the row, not a raw linear-algebra error;
    the torch functions (off the CPU, or without numba) name the same row."""
    from latentfit import _compiled

    if not compiled:
        monkeypatch.setattr(_compiled, "available", lambda: False)
    params = list(random_params(seed=21, k=2, d=3))
    params[2] = np.zeros((2, 2))  # Q
    params[6] = np.zeros((2, 2))  # V0
    m = model_from(params)
    Y = np.random.default_rng(0).normal(size=(5, 3))
    assert np.isfinite(m.score(Y))  # the filter only needs C P Cᵀ + R positive definite
    with pytest.raises(ParameterError, match="positive definite at row 4"):
        m.smooth(Y)


def test_torch_path_fits_as_the_compiled_kernel(monkeypatch):
    """The device-agnostic torch filter/smoother (used off the CPU or without numba) gives the
    same EM run as the compiled CPU kernel, missing values and several sequences included."""
    from latentfit import _compiled

    truth = model_from(random_params(seed=22, k=2, d=3))
    Y = with_missing(truth.sample(80, random_state=23)[0], seed=24)
    kw = dict(n_iter=4, tol=-np.inf, random_state=0)
    compiled = quiet_fit(LinearGaussianSSM(2, **kw), Y, [50, 30])
    monkeypatch.setattr(_compiled, "available", lambda: False)
    plain = quiet_fit(LinearGaussianSSM(2, **kw), Y, [50, 30])
    np.testing.assert_allclose(plain.lower_bounds_, compiled.lower_bounds_, rtol=1e-11)
    np.testing.assert_allclose(
        plain.smooth(Y, [50, 30])[1], compiled.smooth(Y, [50, 30])[1], rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize(("dtype", "scale"), [("float32", 1e30), ("float32", 1e19)])
def test_data_too_large_for_the_dtype_is_refused_naming_the_column(dtype, scale):
    X = np.random.default_rng(0).normal(size=(100, 3))
    with pytest.raises(DataError, match=r"column 1 of X spans.*standardise the columns"):
        LinearGaussianSSM(2, n_iter=3, dtype=dtype, random_state=0).fit(X * scale)
    # just inside what float32 holds: a finite fit
    m = quiet_fit(LinearGaussianSSM(2, n_iter=3, dtype=dtype, random_state=0), X * 1e15)
    assert np.isfinite(m.transition_matrix_).all() and np.isfinite(m.lower_bounds_).all()


def test_a_state_of_more_dimensions_than_rows_is_refused_before_any_work():
    X = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(DataError, match="100 rows, fewer than n_components=1000"):
        LinearGaussianSSM(1000, n_iter=1).fit(X)


def test_filtering_with_a_state_too_large_for_memory_is_refused(monkeypatch):
    """The moments of the filter and smoother are sized against the free memory before they
    are allocated, for a model set by hand as for a fit (ResourceLimitError)."""
    from latentfit import _memory
    from latentfit.errors import ResourceLimitError

    X = np.random.default_rng(0).normal(size=(50, 2))
    m = quiet_fit(LinearGaussianSSM(2, n_iter=2, random_state=0), X)
    monkeypatch.setattr(_memory, "available_memory", lambda device=None: 10_000)
    with pytest.raises(ResourceLimitError, match="n_components=2 state dimensions on 50 rows"):
        m.smooth(X)


def test_a_float32_overflow_is_refused_not_scored_minus_inf():
    """A float32 model scoring data far off its scale overflowed the innovation's square:
    score and score_samples returned -inf (float64 gives a finite number) without a word."""
    params = random_params(seed=0, k=2, d=3)
    m32 = model_from(params, dtype="float32")
    Y, _ = model_from(params).sample(50, random_state=1)
    for method in (m32.score, m32.score_samples):
        with pytest.raises(DataError, match=r"not finite.*overflows float32.*float64"):
            method(Y * 1e20)
    m32.filter(Y * 1e20)  # the states themselves stay finite: they are returned


def test_a_float32_score_adds_its_steps_in_float64():
    """Every step of a float32 model can be finite while their total is beyond float32's
    range: the total was summed in float32 and came back -inf."""
    params = random_params(seed=0, k=2, d=3)
    Y, _ = model_from(params).sample(200, random_state=1)
    m32 = model_from(params, dtype="float32")
    steps = m32.score_samples(Y * 1e18)
    assert np.isfinite(steps).all()
    total = m32.score(Y * 1e18)
    assert np.isfinite(total)
    assert total == pytest.approx(model_from(params).score(Y * 1e18), rel=1e-4)  # float32 steps


def test_the_statistics_of_incomplete_rows_are_reduced_in_bounded_blocks(monkeypatch):
    """The moments of the rows with a NaN took a dozen (r, d, d) arrays at once, r the number
    of such rows: 8,000 x 100 data with 5% of entries missing (6 MB) peaked at 2.2 GB in one
    E-step, 100,000 rows would need about 100 GB. They are summed in blocks of at most
    MOMENT_BLOCK entries per array, and the blocks add up to the same statistics."""
    from latentfit.em.ssm import steps

    params = random_params(seed=3, k=2, d=30)
    p = SSMParams(*(torch.tensor(v) for v in params))
    Y = model_from(params).sample(3000, random_state=4)[0]
    Y[np.random.default_rng(5).random(Y.shape) < 0.05] = np.nan  # most rows incomplete
    Y = torch.tensor(Y)
    _, s = infer(p, Y, [3000])
    largest = []
    inv = torch.linalg.inv

    def spy(M, *args, **kwargs):
        largest.append(M.numel())
        return inv(M, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "inv", spy)
    st = sufficient_statistics(p, Y, s, [3000])
    assert 0 < max(largest) <= steps.MOMENT_BLOCK < 3000 * 30 * 30
    monkeypatch.setattr(steps, "MOMENT_BLOCK", 7 * 30 * 30)  # blocks of 7 rows
    blocks = sufficient_statistics(p, Y, s, [3000])
    for name in ("y", "yx", "yy"):
        torch.testing.assert_close(blocks[name], st[name], rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("n_rows", "covariance_type", "n_params"), [(1, "full", 11), (5, "full", 11), (4, "diag", 10)]
)
def test_no_more_values_than_parameters_is_refused_not_scored(n_rows, covariance_type, n_params):
    """A one-row series fitted with a log-likelihood of +12 and a BIC of -24 that beat every
    real fit in select_model: with no more observed values than parameters (here k = 1, d = 2:
    A 1, C 2, Q 1, R 3 or 2, d 2, mu0 1, V0 1) the noise shrinks to zero and the likelihood
    has no maximum."""
    X = np.random.default_rng(0).normal(size=(n_rows, 2))
    needle = rf"{n_rows} row\(s\) of 2 column\(s\), {2 * n_rows} observed value\(s\), no more than the {n_params} parameters"
    with pytest.raises(DataError, match=needle):
        LinearGaussianSSM(1, n_iter=2, covariance_type=covariance_type).fit(X)
    with pytest.raises(DataError, match=needle):
        latentfit.select_model(
            X, family=LinearGaussianSSM, n_components=[1], covariance_type=covariance_type, n_iter=2
        )
    # one value more than parameters: fitted (the smallest data the rule lets through)
    more = np.random.default_rng(1).normal(size=(n_params // 2 + 1, 2))
    assert np.isfinite(
        quiet_fit(LinearGaussianSSM(1, n_iter=2, covariance_type=covariance_type), more).score(more)
    )


@pytest.mark.parametrize(
    ("dtype", "c", "missing", "rel"),
    [  # float32: 10 iterations of its rounding (1e-7) through the M-step's solves
        ("float32", 2.0**10, False, 1e-5),
        ("float32", 2.0**20, False, 1e-5),
        ("float64", 2.0**30, False, 1e-10),
        ("float64", 2.0**46, True, 1e-10),
    ],
)
def test_a_fit_of_data_far_from_the_origin_is_that_of_the_data_near_it(dtype, c, missing, rel):
    """The model moves with the data (y + c has offset d + c): a fit of rows near c is the
    fit of the same rows near the origin, offset moved by c. The M-step's sums of y yᵀ were
    taken about the origin, so R lost its digits: float32 rows 300 from the origin fitted a
    log-likelihood 10 below, rows near 1e3 (float32) or 1e9 (float64) stopped with "a state
    or innovation covariance stopped being positive definite". They are now taken about the
    columns' means."""
    params = random_params(seed=3, k=1, d=2)
    params = (*params[:4], np.round(4 * params[4]) / 4, *params[5:])  # d + c exact in dtype
    Y, _ = model_from(params).sample(300, random_state=0)
    shift = np.array([c, -2 * c])
    Y_far = (Y + shift).astype(dtype)
    Y_near = (Y_far.astype(np.float64) - shift).astype(dtype)  # exact: within a factor 2
    if missing:
        Y_far, Y_near = with_missing(Y_far), with_missing(Y_near)
    for init_params in ("", "acqrdmv"):  # from equivalent starts, and from the default one
        fits = []
        for X, offset in ((Y_near, 0.0), (Y_far, shift)):
            m = model_from(params, dtype=dtype, n_iter=10, random_state=0)
            m.init_params = init_params
            m.observation_offset_ = params[4] + offset
            fits.append(quiet_fit(m, X))
        near, far = fits
        np.testing.assert_allclose(far.lower_bounds_, near.lower_bounds_, rtol=rel)
        np.testing.assert_allclose(
            far.observation_covariance_, near.observation_covariance_, rtol=1e3 * rel
        )
        spacing = np.spacing(np.array(2 * c, dtype))  # the offsets' own rounding
        moved = near.observation_offset_ + shift
        np.testing.assert_allclose(far.observation_offset_, moved, rtol=0, atol=4 * spacing)
        # the fitted far model, moved back to the origin in float64 (exact), scores the rows
        # near it as the far model scores the far rows
        back = LinearGaussianSSM(1)
        for name in ("transition_matrix_", "observation_matrix_", "transition_covariance_",
                     "observation_covariance_", "initial_state_mean_",
                     "initial_state_covariance_"):  # fmt: skip
            setattr(back, name, getattr(far, name).astype(np.float64))
        back.observation_offset_ = far.observation_offset_.astype(np.float64) - shift
        assert far.score(Y_far) == pytest.approx(back.score(Y_near.astype(np.float64)), rel=rel)


def test_a_sequence_with_nothing_observed_scores_zero_and_filters_to_the_prior():
    """Scoring X with every entry NaN raised "X (3 x 3) is NaN everywhere", though the same
    rows score 0 as one sequence among others, and the Gaussian models score such rows 0."""
    m = model_from(random_params(seed=18, k=2, d=3))
    Y, _ = m.sample(20, random_state=19)
    empty = np.full((3, 3), np.nan)
    assert m.score(empty) == 0.0
    np.testing.assert_array_equal(m.score_samples(empty), 0.0)
    assert m.score(np.vstack([Y, empty]), [20, 3]) == pytest.approx(m.score(Y), rel=1e-12)
    means, covs = m.filter(empty)  # nothing observed: the prior, carried forward
    A, Q = m.transition_matrix_, m.transition_covariance_
    mean, cov = m.initial_state_mean_, m.initial_state_covariance_
    for t in range(3):
        np.testing.assert_allclose(means[t], mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(covs[t], cov, rtol=1e-12, atol=1e-14)
        mean, cov = A @ mean, A @ cov @ A.T + Q


def test_a_value_beyond_every_other_is_named_not_fitted_into_an_unusable_model():
    # Found by the property tests: an int64 column holding -2**63 (how a missing value can
    # reach numpy from an integer column) beside values of 0-3 gave a fit whose observation
    # covariance spanned 2.5e33 to 0.47, not positive definite in float64: the fit ended, and
    # score and save then refused the fitted model. The fit now stops, naming the value.
    X = np.array([[0, -3, -(2**63)], [-1, -2, 0], [0, -3, 1], [0, -1, 1], [1, -3, 2], [1, -2, 1]])
    with pytest.raises(DataError, match=r"row 0, column 2 \(-7\.69e\+18 from the column's mean\)"):
        LinearGaussianSSM(n_iter=5, random_state=0).fit(X)
    X[0, 2] = 2  # the same data with a value in range fit, score and save
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = LinearGaussianSSM(n_iter=5, random_state=0).fit(X)
    assert np.isfinite(m.score(X))


def _creeping_series() -> np.ndarray:
    """300 steps of two columns: a random walk and twice it plus noise. EM's gains shrink by
    ~2% an iteration near the maximum, whose observation noise of the first column is ~3e-4."""
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=300)) * 0.3
    return np.column_stack([x, 2 * x + rng.normal(scale=0.5, size=300)])


def test_em_that_creeps_stops_near_the_maximum_not_where_a_gain_fell_below_tol():
    # Found by a fit that "converged" in 77 iterations (a last gain below tol=1e-2), 1.6
    # nats short of the maximum, with the first column's noise variance 3.2e-3 against the
    # maximum's 3.0e-4. The model now stops by Aitken's estimate of the gain to come.
    Y = _creeping_series()
    m = LinearGaussianSSM(1, n_iter=5000, tol=1e-2, random_state=0).fit(Y)
    assert m.converged_ and m.monitor_.converged
    far = quiet_fit(LinearGaussianSSM(1, n_iter=4000, tol=-np.inf, random_state=0), Y)
    gap = far.score(Y) - m.score(Y)
    assert 0 <= gap < 0.05, gap
    r, r_far = m.observation_covariance_[0, 0], far.observation_covariance_[0, 0]
    assert abs(r / r_far - 1) < 0.05, (r, r_far)
    # the same fit's history, stopped by hmmlearn's rule instead, ends >1 nat short
    gains = np.diff(m.lower_bounds_)
    first = int(np.argmax(gains < 1e-2)) + 1
    assert far.score(Y) - m.lower_bounds_[first] > 1.0


def test_aitken_estimate_of_the_gain_to_come():
    from latentfit.em.driver import _aitken_remaining

    # gains 1, 0.5: ratio 0.5, so 1 from the iteration before to the limit (0.5 + 0.25 + ...)
    assert _aitken_remaining(1.0, 0.5) == pytest.approx(1.0)
    assert _aitken_remaining(0.01, 0.0099) == pytest.approx(0.99)
    # gains that do not shrink, or before two are known: no estimate (EM goes on)
    assert _aitken_remaining(0.5, 0.5) == np.inf and _aitken_remaining(0.1, 0.2) == np.inf
    assert _aitken_remaining(np.nan, 0.1) == np.inf and _aitken_remaining(-0.1, 0.1) == np.inf
