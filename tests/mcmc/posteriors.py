"""The four posteriordb posteriors of tests/mcmc/data as torch log-densities.

Each is written from its ``model.stan`` with a leading chain dimension on every parameter
(``vectorized=True``): ``POSTERIORS[name]()`` returns a ``Posterior`` with the log-density, the
parameters' shapes and constraints, and ``reference_draws`` mapping draws to the names of the
gold-standard draws (``theta[1]``, ... 1-based as in Stan, transformed parameters included).
``reference.json`` holds the gold draws' mean, sd and MCSE (ArviZ, all 10 x 1000 draws);
``draws_thinned.npz`` every tenth gold draw.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributions as D
from torch.distributions import constraints

from latentfit.mcmc import ordered_vector

DATA = Path(__file__).parent / "data"
F64 = torch.float64


@dataclass
class Posterior:
    name: str
    log_density: Callable[..., torch.Tensor]  # vectorized: parameters (c, *shape) -> (c,)
    init: dict
    constraints: dict
    reference_draws: Callable[[dict], dict]  # draws (c, n, *shape) -> {"theta[1]": (c, n)}
    numpyro_model: Callable | None = None

    def reference(self) -> dict:
        return json.loads((DATA / self.name / "reference.json").read_text())


def load_data(name: str) -> dict:
    with zipfile.ZipFile(DATA / name / "data.json.zip") as z:
        return json.loads(z.read(z.namelist()[0]))


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=F64)


def _named(prefix: str, x: torch.Tensor) -> dict:
    return {f"{prefix}[{i + 1}]": x[..., i] for i in range(x.shape[-1])}


def eight_schools() -> Posterior:
    d = load_data("eight_schools-eight_schools_noncentered")
    y, sigma = _t(d["y"]), _t(d["sigma"])

    def log_density(theta_trans, mu, tau):  # (c, 8), (c,), (c,)
        theta = theta_trans * tau[:, None] + mu[:, None]
        return (
            D.Normal(0.0, 1.0, validate_args=False).log_prob(theta_trans).sum(-1)
            + D.Normal(theta, sigma, validate_args=False).log_prob(y).sum(-1)
            + D.Normal(0.0, 5.0, validate_args=False).log_prob(mu)
            + D.Cauchy(0.0, 5.0, validate_args=False).log_prob(tau)
        )

    def reference_draws(draws):
        theta = draws["theta_trans"] * draws["tau"][..., None] + draws["mu"][..., None]
        return {**_named("theta", theta), "mu": draws["mu"], "tau": draws["tau"]}

    return Posterior(
        "eight_schools-eight_schools_noncentered",
        log_density,
        {"theta_trans": torch.zeros(8), "mu": 0.0, "tau": 1.0},
        {"tau": constraints.positive},
        reference_draws,
    )


def diamonds() -> Posterior:
    """brms linear regression with centred predictors. The Gaussian likelihood is evaluated
    from sufficient statistics (``X'X``, ``X'y``, ``y'y``): algebraically the same density
    as the sum over the 5,000 rows, 200 times cheaper."""
    d = load_data("diamonds-diamonds")
    X, Y = _t(d["X"]), _t(d["Y"])
    Xc = X[:, 1:] - X[:, 1:].mean(0)  # (n, 24)
    n = Y.shape[0]
    xtx, xty, yty, ysum = Xc.T @ Xc, Xc.T @ Y, Y @ Y, Y.sum()
    t3 = D.StudentT(3.0, 0.0, 10.0, validate_args=False)
    log_ccdf0 = math.log(0.5)  # student_t_lccdf(0 | 3, 0, 10)

    def log_density(b, Intercept, sigma):  # (c, 24), (c,), (c,)
        # ||y - a - Xc b||^2 with Xc'1 = 0
        rss = (
            yty - 2 * Intercept * ysum + n * Intercept**2 - 2 * (b @ xty) + ((b @ xtx) * b).sum(-1)
        )
        loglik = -0.5 * rss / sigma**2 - n * torch.log(sigma) - 0.5 * n * math.log(2 * math.pi)
        return (
            D.Normal(0.0, 1.0, validate_args=False).log_prob(b).sum(-1)
            + D.StudentT(3.0, 8.0, 10.0, validate_args=False).log_prob(Intercept)
            + t3.log_prob(sigma)
            - log_ccdf0
            + loglik
        )

    def reference_draws(draws):
        return {**_named("b", draws["b"]), "Intercept": draws["Intercept"], "sigma": draws["sigma"]}

    return Posterior(
        "diamonds-diamonds",
        log_density,
        {"b": torch.zeros(24), "Intercept": 0.0, "sigma": 1.0},
        {"sigma": constraints.positive},
        reference_draws,
    )


def ark() -> Posterior:
    d = load_data("arK-arK")
    K, y = d["K"], _t(d["y"])
    T = y.shape[0]
    lags = torch.stack([y[K - k : T - k] for k in range(1, K + 1)], -1)  # (T-K, K): y[t-k]
    target = y[K:]

    def log_density(alpha, beta, sigma):  # (c,), (c, K), (c,)
        mu = alpha[:, None] + beta @ lags.T  # (c, T-K)
        return (
            D.Normal(0.0, 10.0, validate_args=False).log_prob(alpha)
            + D.Normal(0.0, 10.0, validate_args=False).log_prob(beta).sum(-1)
            + D.Cauchy(0.0, 2.5, validate_args=False).log_prob(sigma)
            + D.Normal(mu, sigma[:, None], validate_args=False).log_prob(target).sum(-1)
        )

    def reference_draws(draws):
        return {"alpha": draws["alpha"], **_named("beta", draws["beta"]), "sigma": draws["sigma"]}

    return Posterior(
        "arK-arK",
        log_density,
        {"alpha": 0.0, "beta": torch.zeros(K), "sigma": 1.0},
        {"sigma": constraints.positive},
        reference_draws,
    )


def gauss_mix() -> Posterior:
    """Two-component mixture, labels summed out, means ordered (Stan's ``ordered[2]``)."""
    y = _t(load_data("low_dim_gauss_mix-low_dim_gauss_mix")["y"])

    def log_density(mu, sigma, theta):  # (c, 2), (c, 2), (c,)
        comp = D.Normal(mu[:, None, :], sigma[:, None, :], validate_args=False).log_prob(
            y[None, :, None]
        )  # (c, n, 2)
        logw = torch.stack([theta.log(), torch.log1p(-theta)], -1)[:, None, :]
        return (
            D.Normal(0.0, 2.0, validate_args=False).log_prob(sigma).sum(-1)
            + D.Normal(0.0, 2.0, validate_args=False).log_prob(mu).sum(-1)
            + D.Beta(5.0, 5.0, validate_args=False).log_prob(theta)
            + torch.logsumexp(comp + logw, -1).sum(-1)
        )

    def reference_draws(draws):
        return {
            **_named("mu", draws["mu"]),
            **_named("sigma", draws["sigma"]),
            "theta": draws["theta"],
        }

    return Posterior(
        "low_dim_gauss_mix-low_dim_gauss_mix",
        log_density,
        {"mu": torch.tensor([-1.0, 1.0]), "sigma": torch.ones(2), "theta": 0.5},
        {"mu": ordered_vector, "sigma": constraints.positive, "theta": constraints.unit_interval},
        reference_draws,
    )


POSTERIORS = {
    "eight_schools": eight_schools,
    "diamonds": diamonds,
    "arK": ark,
    "gauss_mix": gauss_mix,
}
