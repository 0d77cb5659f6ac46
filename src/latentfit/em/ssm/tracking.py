"""A tracking example: a target moving in the plane with nearly constant velocity, seen through
noisy, partly missing position readings, smoothed by the Kalman smoother after EM has learnt
the noise levels (the state-space model's counterpart of the HMM's geyser example)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from latentfit.em.ssm.model import LinearGaussianSSM

__all__ = ["constant_velocity", "tracking_example"]


def constant_velocity(
    dt: float = 1.0, accel_std: float = 0.1, obs_std: float = 1.0, **kwargs
) -> LinearGaussianSSM:
    """The nearly-constant-velocity model in 2-D (Bar-Shalom, Li & Kirubarajan 2001, §6.3.2):
    state (px, py, vx, vy), white-noise acceleration of standard deviation ``accel_std``,
    positions observed with noise ``obs_std``. ``kwargs`` go to :class:`LinearGaussianSSM`."""
    one = np.array([[1.0, dt], [0.0, 1.0]])
    A = np.kron(one, np.eye(2))  # (4, 4) positions then velocities
    g = np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]])
    m = LinearGaussianSSM(4, **kwargs)
    m.transition_matrix_ = A
    m.transition_covariance_ = accel_std**2 * np.kron(g, np.eye(2))
    m.observation_matrix_ = np.hstack([np.eye(2), np.zeros((2, 2))])
    m.observation_offset_ = np.zeros(2)
    m.observation_covariance_ = obs_std**2 * np.eye(2)
    m.initial_state_mean_ = np.zeros(4)
    m.initial_state_covariance_ = np.diag([1.0, 1.0, 0.01, 0.01])
    m.n_features = 2
    return m


def tracking_example(n_steps: int = 150, missing: float = 0.2, random_state: int = 0, ax=None):
    """Simulate a track, hide a fraction ``missing`` of the readings, learn the noise levels Q
    and R by EM (the dynamics A, C known) from a deliberately wrong start, and smooth.

    Returns ``(ax, summary)``: the Axes showing the true path, the readings and the smoothed
    path with its 95% band (x coordinate over time), and a dict of root-mean-square position
    errors (readings, smoothed) and the fitted against the true noise standard deviations.
    """
    import matplotlib.pyplot as plt

    truth = constant_velocity(accel_std=0.05, obs_std=1.0)
    Y, X = truth.sample(n_steps, random_state=random_state)
    rng = np.random.default_rng(random_state)
    Y = Y.copy()
    Y[rng.random(n_steps) < missing] = np.nan
    model = constant_velocity(
        accel_std=0.5, obs_std=3.0, params="qr", init_params="", n_iter=200, tol=1e-4
    )
    with warnings.catch_warnings():  # a few hundred iterations reach the figure's precision
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(Y)
    means, covs = model.smooth(Y)
    seen = ~np.isnan(Y[:, 0])
    summary = {
        "rmse_readings": float(np.sqrt(np.mean((Y[seen] - X[seen, :2]) ** 2))),
        "rmse_smoothed": float(np.sqrt(np.mean((means[:, :2] - X[:, :2]) ** 2))),
        "obs_std_fitted": float(np.sqrt(np.diag(model.observation_covariance_).mean())),
        "obs_std_true": 1.0,
    }
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    t = np.arange(n_steps)
    band = 1.96 * np.sqrt(covs[:, 0, 0])
    ax.fill_between(t, means[:, 0] - band, means[:, 0] + band, alpha=0.25, label="95% band")
    ax.plot(t, X[:, 0], color="black", lw=1, label="true position")
    ax.plot(t, Y[:, 0], ".", ms=3, color="grey", label="readings (gaps: missing)")
    ax.plot(t, means[:, 0], lw=1.5, label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("x position")
    ax.set_title(
        f"Kalman smoother after EM: RMSE {summary['rmse_smoothed']:.2f} "
        f"(readings {summary['rmse_readings']:.2f})"
    )
    ax.legend(loc="best", fontsize="small")
    return ax, summary
