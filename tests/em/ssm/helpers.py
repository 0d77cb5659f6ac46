"""Small state-space models and data shared by the tests."""

from __future__ import annotations

import numpy as np

from latentfit import LinearGaussianSSM


def random_spd(rng, n, scale=1.0):
    M = rng.normal(size=(n, n))
    return scale * (M @ M.T / n + 0.2 * np.eye(n))


def random_params(seed=0, k=3, d=4):
    """A stable model with correlated noises: (A, C, Q, R, d, mu0, V0) as float64 arrays."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, k))
    A *= 0.8 / np.abs(np.linalg.eigvals(A)).max()
    return (
        A,
        rng.normal(size=(d, k)),
        random_spd(rng, k, 0.3),
        random_spd(rng, d, 0.5),
        rng.normal(size=d),
        rng.normal(size=k),
        random_spd(rng, k),
    )


def model_from(params, **kwargs) -> LinearGaussianSSM:
    m = LinearGaussianSSM(n_components=params[0].shape[0], **kwargs)
    names = (
        "transition_matrix_",
        "observation_matrix_",
        "transition_covariance_",
        "observation_covariance_",
        "observation_offset_",
        "initial_state_mean_",
        "initial_state_covariance_",
    )
    for name, value in zip(names, params, strict=True):
        setattr(m, name, np.array(value))
    return m


def with_missing(Y, seed=0):
    """Y with whole NaN rows and scattered NaN entries."""
    rng = np.random.default_rng(seed)
    Y = Y.copy()
    Y[rng.random(Y.shape) < 0.15] = np.nan
    Y[rng.choice(len(Y), size=max(1, len(Y) // 10), replace=False)] = np.nan
    return Y
