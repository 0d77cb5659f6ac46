"""The four posteriordb posteriors of tests/mcmc/data as torch log-densities.

Each is written from its ``model.stan`` with a leading chain dimension on every parameter
(``vectorized=True``): ``POSTERIORS[name]()`` returns a ``Posterior`` with the log-density, the
parameters' shapes and constraints, and ``reference_draws`` mapping draws to the names of the
gold-standard draws (``theta[1]``, ... 1-based as in Stan, transformed parameters included).

The log-density is written twice: ``dist_log_density`` from ``torch.distributions``, the
transcription of the Stan model, and ``log_density`` as plain tensor arithmetic with the same
normalising constants (no distribution objects built per call, a third of the operations),
with ``value_and_grad`` its gradient by hand; tests/mcmc/test_posteriors.py holds the three
together (values to 1e-12, gradients against autograd).
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
    dist_log_density: Callable[..., torch.Tensor]  # the same density from torch.distributions
    value_and_grad: Callable[..., tuple]  # (log_density, {name: gradient}) by hand

    def reference(self) -> dict:
        return json.loads((DATA / self.name / "reference.json").read_text())


def load_data(name: str) -> dict:
    with zipfile.ZipFile(DATA / name / "data.json.zip") as z:
        return json.loads(z.read(z.namelist()[0]))


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=F64)


LOG_2PI = math.log(2 * math.pi)


def _normal0(x: torch.Tensor, scale: float) -> torch.Tensor:
    """log N(x | 0, scale), elementwise."""
    return -0.5 * (x / scale) ** 2 - math.log(scale) - 0.5 * LOG_2PI


def _student_t(x, df: float, loc: float, scale: float) -> torch.Tensor:
    """log Student-t(x | df, loc, scale), elementwise."""
    z = (x - loc) / scale
    const = (
        math.lgamma((df + 1) / 2)
        - math.lgamma(df / 2)
        - 0.5 * math.log(df * math.pi)
        - math.log(scale)
    )
    return const - 0.5 * (df + 1) * torch.log1p(z**2 / df)


def _student_t_grad(x, df: float, loc: float, scale: float) -> torch.Tensor:
    """d/dx log Student-t(x | df, loc, scale)."""
    z = (x - loc) / scale
    return -(df + 1) * z / (scale * (df + z**2))


def _named(prefix: str, x: torch.Tensor) -> dict:
    return {f"{prefix}[{i + 1}]": x[..., i] for i in range(x.shape[-1])}


def eight_schools() -> Posterior:
    d = load_data("eight_schools-eight_schools_noncentered")
    y, sigma = _t(d["y"]), _t(d["sigma"])
    # log N(y | theta, sigma) = -z^2 / 2 + const_y; the Cauchy(0, 5) prior on tau
    const = (
        -(sigma.log().sum() + 8 * LOG_2PI).item()  # the likelihood and theta_trans ~ N(0, 1)
        - math.log(5.0)
        - 0.5 * LOG_2PI  # mu ~ N(0, 5)
        - math.log(5 * math.pi)  # tau ~ Cauchy(0, 5)
    )

    def log_density(theta_trans, mu, tau):  # (c, 8), (c,), (c,)
        z = (y - (theta_trans * tau[:, None] + mu[:, None])) / sigma  # (c, 8)
        return (
            const
            - 0.5 * ((theta_trans**2).sum(-1) + (z**2).sum(-1) + (mu / 5) ** 2)
            - torch.log1p((tau / 5) ** 2)
        )

    def value_and_grad(theta_trans, mu, tau):
        z = (y - (theta_trans * tau[:, None] + mu[:, None])) / sigma
        lp = (
            const
            - 0.5 * ((theta_trans**2).sum(-1) + (z**2).sum(-1) + (mu / 5) ** 2)
            - torch.log1p((tau / 5) ** 2)
        )
        dtheta = z / sigma  # d loglik / d theta, (c, 8)
        return lp, {
            "theta_trans": dtheta * tau[:, None] - theta_trans,
            "mu": dtheta.sum(-1) - mu / 25,
            "tau": (dtheta * theta_trans).sum(-1) - 2 * tau / (25 + tau**2),
        }

    def dist_log_density(theta_trans, mu, tau):
        theta = theta_trans * tau[:, None] + mu[:, None]
        return (
            D.Normal(_t(0.0), _t(1.0), validate_args=False).log_prob(theta_trans).sum(-1)
            + D.Normal(theta, sigma, validate_args=False).log_prob(y).sum(-1)
            + D.Normal(_t(0.0), _t(5.0), validate_args=False).log_prob(mu)
            + D.Cauchy(_t(0.0), _t(5.0), validate_args=False).log_prob(tau)
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
        dist_log_density,
        value_and_grad,
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
    log_ccdf0 = math.log(0.5)  # student_t_lccdf(0 | 3, 0, 10): sigma's half-t prior
    const = -12 * LOG_2PI - log_ccdf0 - 0.5 * n * LOG_2PI  # b ~ N(0, 1); the likelihood

    def log_density(b, Intercept, sigma):  # (c, 24), (c,), (c,)
        return _parts(b, Intercept, sigma)[0]

    def _parts(b, Intercept, sigma):
        # ||y - a - Xc b||^2 with Xc'1 = 0
        xtx_b = b @ xtx  # (c, 24)
        rss = yty - 2 * Intercept * ysum + n * Intercept**2 - 2 * (b @ xty) + (xtx_b * b).sum(-1)
        prec = sigma**-2
        lp = (
            const
            - 0.5 * (b**2).sum(-1)
            + _student_t(Intercept, 3.0, 8.0, 10.0)
            + _student_t(sigma, 3.0, 0.0, 10.0)
            - 0.5 * rss * prec
            - n * torch.log(sigma)
        )
        return lp, xtx_b, rss, prec

    def value_and_grad(b, Intercept, sigma):
        lp, xtx_b, rss, prec = _parts(b, Intercept, sigma)
        return lp, {
            "b": (xty - xtx_b) * prec[:, None] - b,
            "Intercept": _student_t_grad(Intercept, 3.0, 8.0, 10.0) + (ysum - n * Intercept) * prec,
            "sigma": _student_t_grad(sigma, 3.0, 0.0, 10.0) + rss * prec / sigma - n / sigma,
        }

    t3 = D.StudentT(_t(3.0), _t(0.0), _t(10.0), validate_args=False)

    def dist_log_density(b, Intercept, sigma):
        rss = (
            yty - 2 * Intercept * ysum + n * Intercept**2 - 2 * (b @ xty) + ((b @ xtx) * b).sum(-1)
        )
        loglik = -0.5 * rss / sigma**2 - n * torch.log(sigma) - 0.5 * n * math.log(2 * math.pi)
        return (
            D.Normal(_t(0.0), _t(1.0), validate_args=False).log_prob(b).sum(-1)
            + D.StudentT(_t(3.0), _t(8.0), _t(10.0), validate_args=False).log_prob(Intercept)
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
        dist_log_density,
        value_and_grad,
    )


def ark() -> Posterior:
    d = load_data("arK-arK")
    K, y = d["K"], _t(d["y"])
    T = y.shape[0]
    lags = torch.stack([y[K - k : T - k] for k in range(1, K + 1)], -1)  # (T-K, K): y[t-k]
    target = y[K:]
    # alpha, beta ~ N(0, 10); sigma ~ Cauchy(0, 2.5); y_t ~ N(mu_t, sigma)
    const = -(K + 1) * (math.log(10.0) + 0.5 * LOG_2PI) - math.log(2.5 * math.pi)
    const -= 0.5 * (T - K) * LOG_2PI

    def log_density(alpha, beta, sigma):  # (c,), (c, K), (c,)
        return _parts(alpha, beta, sigma)[0]

    def _parts(alpha, beta, sigma):
        resid = target - (alpha[:, None] + beta @ lags.T)  # (c, T-K)
        ss = (resid**2).sum(-1)
        prec = sigma**-2
        lp = (
            const
            - 0.005 * (alpha**2 + (beta**2).sum(-1))
            - torch.log1p((sigma / 2.5) ** 2)
            - 0.5 * ss * prec
            - (T - K) * torch.log(sigma)
        )
        return lp, resid, ss, prec

    def value_and_grad(alpha, beta, sigma):
        lp, resid, ss, prec = _parts(alpha, beta, sigma)
        return lp, {
            "alpha": resid.sum(-1) * prec - 0.01 * alpha,
            "beta": (resid @ lags) * prec[:, None] - 0.01 * beta,
            "sigma": ss * prec / sigma - (T - K) / sigma - 2 * sigma / (6.25 + sigma**2),
        }

    def dist_log_density(alpha, beta, sigma):
        mu = alpha[:, None] + beta @ lags.T  # (c, T-K)
        return (
            D.Normal(_t(0.0), _t(10.0), validate_args=False).log_prob(alpha)
            + D.Normal(_t(0.0), _t(10.0), validate_args=False).log_prob(beta).sum(-1)
            + D.Cauchy(_t(0.0), _t(2.5), validate_args=False).log_prob(sigma)
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
        dist_log_density,
        value_and_grad,
    )


def gauss_mix() -> Posterior:
    """Two-component mixture, labels summed out, means ordered (Stan's ``ordered[2]``)."""
    y = _t(load_data("low_dim_gauss_mix-low_dim_gauss_mix")["y"])[:, None]  # (n, 1)
    n = y.shape[0]
    # sigma, mu ~ N(0, 2) (two each); theta ~ Beta(5, 5); the n likelihood terms' 2 pi
    const = -4 * (math.log(2.0) + 0.5 * LOG_2PI) - 0.5 * n * LOG_2PI
    const -= math.lgamma(5.0) * 2 - math.lgamma(10.0)

    def log_density(mu, sigma, theta):  # (c, 2), (c, 2), (c,)
        return _parts(mu, sigma, theta)[0]

    def _parts(mu, sigma, theta):
        logw = torch.stack([theta.log(), torch.log1p(-theta)], -1)  # (c, 2)
        z = (y - mu[:, None, :]) / sigma[:, None, :]  # (c, n, 2)
        comp = (logw - sigma.log())[:, None, :] - 0.5 * z**2
        lse = torch.logsumexp(comp, -1)  # (c, n)
        lp = const - 0.125 * ((sigma**2).sum(-1) + (mu**2).sum(-1)) + 4 * logw.sum(-1) + lse.sum(-1)
        return lp, z, comp, lse

    def value_and_grad(mu, sigma, theta):
        lp, z, comp, lse = _parts(mu, sigma, theta)
        r = (comp - lse[..., None]).exp()  # responsibilities (c, n, 2)
        rz = r * z
        nk = r.sum(1)  # (c, 2)
        return lp, {
            "mu": rz.sum(1) / sigma - mu / 4,
            "sigma": ((rz * z).sum(1) - nk) / sigma - sigma / 4,
            "theta": (nk[:, 0] + 4) / theta - (nk[:, 1] + 4) / (1 - theta),
        }

    def dist_log_density(mu, sigma, theta):
        comp = D.Normal(mu[:, None, :], sigma[:, None, :], validate_args=False).log_prob(
            y[None]
        )  # (c, n, 2)
        logw = torch.stack([theta.log(), torch.log1p(-theta)], -1)[:, None, :]
        return (
            D.Normal(_t(0.0), _t(2.0), validate_args=False).log_prob(sigma).sum(-1)
            + D.Normal(_t(0.0), _t(2.0), validate_args=False).log_prob(mu).sum(-1)
            + D.Beta(_t(5.0), _t(5.0), validate_args=False).log_prob(theta)
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
        dist_log_density,
        value_and_grad,
    )


POSTERIORS = {
    "eight_schools": eight_schools,
    "diamonds": diamonds,
    "arK": ark,
    "gauss_mix": gauss_mix,
}
