"""Kalman filter + RTS smoother and one EM iteration of a linear-Gaussian state-space model:
latentfit vs statsmodels and pykalman, side by side in one process.

A seeded sample of T = 100,000 steps (one sequence), state k = 4, observations d = 8, full
noise covariances. All libraries get the same parameters and must agree on the
log-likelihood and the smoothed means. statsmodels has no EM for this model: its "EM
iteration" is its smoother (with the lag-one covariances) plus the closed-form M-step written
in numpy below. Prints best-of-``repeats`` wall and CPU times and the ratios.

    .venv/bin/python benchmarks/ssm.py [--steps 100000] [--repeats 3]

pykalman is in the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch


def model(k: int, d: int, seed: int):
    """A stable rotation-like system with correlated noises: (A, C, Q, R, d, mu0, V0)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, k))
    A *= 0.95 / np.abs(np.linalg.eigvals(A)).max()

    def spd(n, s):
        M = rng.normal(size=(n, n))
        return s * (M @ M.T / n + 0.2 * np.eye(n))

    return A, rng.normal(size=(d, k)), spd(k, 0.2), spd(d, 0.5), rng.normal(size=d), \
        np.zeros(k), np.eye(k)  # fmt: skip


def perturbed(params, seed):
    """The same starting point for every library's EM iteration."""
    rng = np.random.default_rng(seed)
    A, C, Q, R, d, mu0, V0 = params
    return 0.9 * A, C + 0.1 * rng.normal(size=C.shape), 1.5 * Q, 1.2 * R, d + 0.1, mu0, V0


def best_of(fn, repeats):
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), out


def latentfit_model(params, **kwargs):
    from latentfit import LinearGaussianSSM

    m = LinearGaussianSSM(params[0].shape[0], init_params="", **kwargs)
    names = ("transition_matrix_", "observation_matrix_", "transition_covariance_",
             "observation_covariance_", "observation_offset_", "initial_state_mean_",
             "initial_state_covariance_")  # fmt: skip
    for n, v in zip(names, params, strict=True):
        setattr(m, n, np.array(v))
    return m


def statsmodels_smoother(params, Y):
    from statsmodels.tsa.statespace.kalman_smoother import KalmanSmoother

    A, C, Q, R, d, mu0, V0 = params
    k = A.shape[0]
    ks = KalmanSmoother(k_endog=C.shape[0], k_states=k, k_posdef=k)
    ks.bind(Y)
    ks["design"], ks["obs_intercept"], ks["obs_cov"] = C, d[:, None], R
    ks["transition"], ks["selection"], ks["state_cov"] = A, np.eye(k), Q
    ks.initialize_known(mu0, V0)
    return ks


def numpy_m_step(res, Y):
    """The closed-form M-step (Shumway & Stoffer 1982) from statsmodels' smoother output."""
    m = res.smoothed_state.T  # (T, k)
    V = res.smoothed_state_cov.transpose(2, 0, 1)  # (T, k, k)
    cross = res.smoothed_state_autocov.transpose(2, 0, 1)[:-1]  # Cov[x_{t+1}, x_t]
    T = len(m)
    xx = V.sum(0) + m.T @ m
    head = xx - (V[-1] + np.outer(m[-1], m[-1]))
    tail = xx - (V[0] + np.outer(m[0], m[0]))
    x1x0 = cross.sum(0) + m[1:].T @ m[:-1]
    A = np.linalg.solve(head, x1x0.T).T
    Q = (tail - A @ x1x0.T) / (T - 1)
    u = np.hstack([m, np.ones((T, 1))])
    Suu = u.T @ u
    Suu[:-1, :-1] += V.sum(0)
    Ct = np.linalg.solve(Suu, (Y.T @ u).T).T
    R = (Y.T @ Y - Ct @ (u.T @ Y)) / T
    return A, Ct[:, :-1], Q, R, Ct[:, -1], m[0], V[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pykalman-repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    k, d, T = 4, 8, args.steps
    truth = model(k, d, seed=0)
    Y, _ = latentfit_model(truth).sample(T, random_state=1)
    start = perturbed(truth, seed=2)
    print(f"T = {T:,} steps, state k = {k}, observations d = {d}, one sequence, float64; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip

    lf = latentfit_model(start)
    lf.smooth(Y[:100])  # compile / load the kernel outside the timing
    w_lf, c_lf, (ms, _) = best_of(lambda: lf.smooth(Y), args.repeats)
    ll_lf = lf.score(Y)

    ks = statsmodels_smoother(start, Y)
    w_sm, c_sm, res = best_of(ks.smooth, args.repeats)

    rows = [("filter + smoother", "latentfit", w_lf, c_lf), ("", "statsmodels", w_sm, c_sm)]
    diff_sm = np.abs(ms - res.smoothed_state.T).max()
    print(f"log-likelihood: latentfit {ll_lf:.6f}, statsmodels {res.llf:.6f}; "
          f"smoothed means differ by {diff_sm:.1e}")  # fmt: skip

    try:
        from pykalman import KalmanFilter
    except ImportError:
        KalmanFilter = None
        print("pykalman is not installed (pip install -e .[bench]): its rows are left out")
    if KalmanFilter is not None:
        A, C, Q, R, off, mu0, V0 = start
        kf = KalmanFilter(transition_matrices=A, observation_matrices=C, transition_covariance=Q,
                          observation_covariance=R, observation_offsets=off,
                          initial_state_mean=mu0, initial_state_covariance=V0)  # fmt: skip
        w_pk, c_pk, (mp, _) = best_of(lambda: kf.smooth(Y), args.pykalman_repeats)
        rows.append(("", "pykalman", w_pk, c_pk))
        print(f"pykalman's smoothed means differ by {np.abs(ms - mp).max():.1e}")

    # one EM iteration from the same start: E-step (smoother + statistics) and M-step
    def lf_iteration():
        m = latentfit_model(start, n_iter=1, tol=-np.inf)
        return m.fit(Y)

    w, c, fitted = best_of(lf_iteration, args.repeats)
    rows.append(("one EM iteration", "latentfit", w, c))

    def lf_ten():  # iterations 2-10 reuse the kernel's buffers of the first
        return latentfit_model(start, n_iter=10, tol=-np.inf).fit(Y)

    w10, c10, _ = best_of(lf_ten, args.repeats)

    def sm_iteration():
        return numpy_m_step(statsmodels_smoother(start, Y).smooth(), Y)

    w, c, sm_new = best_of(sm_iteration, args.repeats)
    rows.append(("", "statsmodels + numpy M-step", w, c))
    print("EM iteration: latentfit and statsmodels+numpy A differ by "
          f"{np.abs(fitted.transition_matrix_ - sm_new[0]).max():.1e}")  # fmt: skip
    if KalmanFilter is not None:

        def pk_iteration():
            kf2 = KalmanFilter(transition_matrices=A, observation_matrices=C,
                               transition_covariance=Q, observation_covariance=R,
                               observation_offsets=off, initial_state_mean=mu0,
                               initial_state_covariance=V0,
                               em_vars=["transition_matrices", "observation_matrices",
                                        "transition_covariance", "observation_covariance",
                                        "observation_offsets", "initial_state_mean",
                                        "initial_state_covariance"])  # fmt: skip
            return kf2.em(Y, n_iter=1)

        w, c, kf2 = best_of(pk_iteration, args.pykalman_repeats)
        rows.append(("", "pykalman", w, c))
        print("EM iteration: latentfit and pykalman A differ by "
              f"{np.abs(fitted.transition_matrix_ - kf2.transition_matrices).max():.1e}")  # fmt: skip

    print(f"\n{'task':18s} {'library':28s} {'wall s':>9s} {'cpu s':>9s} {'ratio (cpu)':>12s}")
    ref = None
    for task, lib, w, c in rows:
        if task:
            ref = c
        ratio = "" if lib == "latentfit" else f"{c / ref:10.1f}x"
        print(f"{task:18s} {lib:28s} {w:9.3f} {c:9.3f} {ratio:>12s}")
    print(f"latentfit, a fit of 10 EM iterations: {w10:.3f} s wall, {c10:.3f} s CPU "
          f"({c10 / 10:.3f} s CPU per iteration)")  # fmt: skip


if __name__ == "__main__":
    main()
