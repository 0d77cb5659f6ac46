"""BayesianGaussianMixture: variational Bayes for Gaussian mixtures by coordinate ascent (CAVI).

scikit-learn's ``sklearn.mixture.BayesianGaussianMixture`` (same parameters, attributes and
lower bound) run by the one EM driver: the "E-step" updates q(z), the "M-step" updates
q(π) q(μ, Λ), and the monitored objective is the ELBO. The math lives in
:mod:`latentfit.vi.bgmm_math`; this class holds parameters and adapts.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from latentfit._validation import (
    as_float_tensor,
    check_positive_int,
    check_sample_weight,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from latentfit.em.data import TensorChunks, default_chunk_rows
from latentfit.em.driver import run_em
from latentfit.em.gaussian import (
    COVARIANCE_TYPES,
    gaussian_mstep,
    moment_stats,
    precisions_from_cholesky,
)
from latentfit.em.gmm import INIT_PARAMS, GaussianMixture
from latentfit.em.kmeans import kmeans, kmeans_plusplus, nearest_center
from latentfit.io import save as _save
from latentfit.io import serializable
from latentfit.vi.bgmm_math import (
    WEIGHT_PRIOR_TYPES,
    BGMMPrior,
    NormalWishart,
    elbo_constant,
    expected_log_gaussian,
    expected_log_weights,
    lower_bound,
    normal_wishart_update,
    weight_concentration_update,
    weights_from_concentration,
)

__all__ = ["BayesianGaussianMixture"]

_PARAM_KEYS = ("wc", "beta", "means", "dof", "cov", "prec_chol")


@serializable
class BayesianGaussianMixture(DensityMixin, BaseEstimator):
    """Variational Bayesian Gaussian mixture (Bishop 2006 §10.2; Blei & Jordan 2006).

    Parameters are those of ``sklearn.mixture.BayesianGaussianMixture``
    (``weight_concentration_prior_type`` ``"dirichlet_process"`` — stick-breaking, truncated
    at ``n_components`` — or ``"dirichlet_distribution"``); in addition ``device``, ``dtype``
    and ``chunk_rows`` as in :class:`latentfit.GaussianMixture`, and ``sample_weight`` in
    ``fit`` (frequency weights). ``verbose`` shows a progress bar; ``verbose_interval`` is
    accepted for compatibility.

    Fitted attributes are scikit-learn's (``weights_``, ``means_``, ``covariances_``,
    ``precisions_``, ``precisions_cholesky_``, ``weight_concentration_`` — a pair (a, b) for
    the Dirichlet process —, ``mean_precision_``, ``degrees_of_freedom_``, the ``*_prior_``
    values, ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_``), plus
    ``elbo_`` and ``elbos_``: the same bound with its constants restored, i.e. the ELBO in
    nats, a lower bound on log p(X) comparable with log-likelihoods.

    The driver checks that no iteration lowers the bound (CAVI never does) and warns with
    :class:`~latentfit.em.driver.EMMonotonicityWarning` otherwise.
    """

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        device=None,
        dtype="float64",
        chunk_rows=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.device = device
        self.dtype = dtype
        self.chunk_rows = chunk_rows

    # ------------------------------------------------------------------ validation
    @property
    def _dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @property
    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _check_parameters(self):
        check_positive_int(self.n_components, "n_components")
        check_positive_int(self.n_init, "n_init")
        check_positive_int(self.max_iter, "max_iter", minimum=0)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {COVARIANCE_TYPES}, got {self.covariance_type!r}"
            )
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"init_params must be one of {INIT_PARAMS}, got {self.init_params!r}")
        if self.weight_concentration_prior_type not in WEIGHT_PRIOR_TYPES:
            raise ValueError(
                f"weight_concentration_prior_type must be one of {WEIGHT_PRIOR_TYPES}, "
                f"got {self.weight_concentration_prior_type!r}"
            )
        if not (self.tol >= 0):
            raise ValueError(f"tol must be non-negative, got {self.tol!r}")
        if not (self.reg_covar >= 0):
            raise ValueError(f"reg_covar must be non-negative, got {self.reg_covar!r}")
        for name in ("weight_concentration_prior", "mean_precision_prior"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, numbers.Real) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")

    def _validate_X(self, X, *, reset: bool) -> torch.Tensor:
        if reset and hasattr(X, "columns"):
            names = np.asarray(X.columns, dtype=object)
            if all(isinstance(c, str) for c in names):
                self.feature_names_in_ = names
        X = as_float_tensor(X, dtype=self._dtype, device=self._device)
        if not reset and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X

    def _make_prior(self, X: torch.Tensor, w: torch.Tensor) -> BGMMPrior:
        """scikit-learn's defaults: γ₀ = 1/k, β₀ = 1, m₀ = mean of X, ν₀ = d, W₀⁻¹ = cov(X)."""
        d = X.shape[1]
        ct = self.covariance_type
        gamma0 = self.weight_concentration_prior
        gamma0 = 1.0 / self.n_components if gamma0 is None else float(gamma0)
        beta0 = 1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior)
        wsum = w.sum()
        xbar = (w @ X) / wsum  # (d,)
        if self.mean_prior is None:
            m0 = xbar
        else:
            m0 = self._user_tensor(self.mean_prior, "mean_prior", (d,))
        nu0 = self.degrees_of_freedom_prior
        if nu0 is None:
            nu0 = float(d)
        elif not (isinstance(nu0, numbers.Real) and nu0 > d - 1.0):
            raise ValueError(
                f"degrees_of_freedom_prior must be greater than n_features - 1 = {d - 1}, "
                f"got {nu0!r}"
            )
        if self.covariance_prior is None:
            if float(wsum) <= 1:
                raise ValueError("the default covariance_prior needs a total weight above 1")
            Xc = X - xbar
            emp = (Xc * w.unsqueeze(1)).T @ Xc / (wsum - 1)  # (d, d) unbiased, as np.cov
            flat = (emp.diagonal() <= 0).nonzero().flatten().tolist()
            if flat:
                raise ValueError(
                    f"column {flat[0]} of X is constant, so the default covariance_prior (the "
                    "covariance of X) is singular; drop the column or pass covariance_prior"
                )
            cov0 = {
                "full": emp,
                "tied": emp,
                "diag": emp.diagonal().clone(),
                "spherical": emp.diagonal().mean(),
            }[ct]
        else:
            shape = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[ct]
            cov0 = self._user_tensor(self.covariance_prior, "covariance_prior", shape)
            if ct in ("full", "tied"):
                sym = torch.allclose(cov0, cov0.T)
                if not sym or torch.linalg.cholesky_ex(cov0)[1] != 0:
                    raise ValueError(
                        f"{ct} covariance_prior must be a symmetric, positive-definite matrix"
                    )
            elif bool((cov0 <= 0).any()):
                raise ValueError(f"{ct} covariance_prior must be positive")
        return BGMMPrior(self.weight_concentration_prior_type, gamma0, beta0, m0, float(nu0), cov0)

    def _user_tensor(self, value, name, shape) -> torch.Tensor:
        t = as_float_tensor(value, name=name, dtype=self._dtype, device=self._device, ndim=None)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
        return t

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit q(z) q(π) q(μ, Λ) by CAVI; ``sample_weight`` (n,) are frequency weights."""
        self._fit(X, sample_weight)
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each sample."""
        return self._predict_tensor(self._fit(X, sample_weight)).cpu().numpy()

    def _fit(self, X, sample_weight) -> torch.Tensor:
        self._check_parameters()
        X = self._validate_X(X, reset=True)
        n, d = X.shape
        if n < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples; got {n}")
        if n < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                f"n_samples = {n}"
            )
        w = check_sample_weight(sample_weight, n, dtype=X.dtype, device=X.device)
        warm = self.warm_start and hasattr(self, "_params")
        prior = self._make_prior(X, w)
        self.n_features_in_ = d
        hooks = _BGMMHooks(self, prior)
        rows = self.chunk_rows or default_chunk_rows(d, self.n_components)
        result = run_em(
            hooks,
            TensorChunks(X, w, rows),
            n_init=1 if warm else self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            init_params=self._params if warm else None,
            generator=make_generator(self.random_state, X.device),
            verbose=self.verbose,
            name=type(self).__name__,
        )
        self._prior = prior
        self._set_params_tensors(result.params)
        const = float(
            elbo_constant(prior, self.n_components, float(w.sum()), d, self.covariance_type)
        )
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound
        self.lower_bounds_ = list(result.lower_bounds)
        self.all_lower_bounds_ = [list(b) for b in result.all_lower_bounds]
        self.elbo_ = self.lower_bound_ + const
        self.elbos_ = [b + const for b in self.lower_bounds_]
        return X

    def _initial_resp(self, X: torch.Tensor, w: torch.Tensor, gen: torch.Generator):
        """Starting responsibilities (n, k), by the same methods as GaussianMixture."""
        k, n = self.n_components, X.shape[0]
        if self.init_params == "kmeans":
            labels = kmeans(X, k, w, gen)[1]
        elif self.init_params == "random":
            resp = torch.rand(n, k, generator=gen, dtype=X.dtype, device=X.device)
            return resp / resp.sum(1, keepdim=True)
        else:
            if self.init_params == "k-means++":
                idx = kmeans_plusplus(X, k, w, gen)
            else:  # random_from_data: k distinct samples drawn ∝ weight
                idx = torch.multinomial(w.cpu().double(), k, replacement=False, generator=gen)
            labels = nearest_center(X, X[idx.to(X.device)])
        return torch.nn.functional.one_hot(labels, k).to(X.dtype)

    # ------------------------------------------------------------------ parameters
    def _set_params_tensors(self, params: dict) -> None:
        self._params = {k: params[k].detach() for k in _PARAM_KEYS}
        p, ct = self._params, self.covariance_type
        np_ = lambda t: t.cpu().numpy()
        wtype = self.weight_concentration_prior_type
        self.weights_ = np_(weights_from_concentration(p["wc"], wtype))
        if wtype == "dirichlet_process":
            self.weight_concentration_ = (np_(p["wc"][0]), np_(p["wc"][1]))
        else:
            self.weight_concentration_ = np_(p["wc"])
        self.mean_precision_ = np_(p["beta"])
        self.means_ = np_(p["means"])
        self.degrees_of_freedom_ = np_(p["dof"]) if p["dof"].dim() else float(p["dof"])
        self.covariances_ = np_(p["cov"])
        self.precisions_cholesky_ = np_(p["prec_chol"])
        self.precisions_ = np_(precisions_from_cholesky(p["prec_chol"], ct))
        pr = self._prior
        self.weight_concentration_prior_ = pr.weight_concentration
        self.mean_precision_prior_ = pr.mean_precision
        self.mean_prior_ = np_(pr.mean)
        self.degrees_of_freedom_prior_ = pr.dof
        cov0 = np_(pr.covariance)
        self.covariance_prior_ = float(cov0) if ct == "spherical" else cov0

    # ------------------------------------------------------------------ inference
    def _weighted_log_prob(self, X: torch.Tensor) -> torch.Tensor:
        """E_q[log π_k + log N(x | μ_k, Λ_k)] (n, k), as scikit-learn's BayesianGaussianMixture."""
        return _expected_log_joint(
            X, self._params, self.covariance_type, self.weight_concentration_prior_type
        )

    def _predict_tensor(self, X: torch.Tensor) -> torch.Tensor:
        return self._weighted_log_prob(X).argmax(1)

    def _check(self, X) -> torch.Tensor:
        check_is_fitted(self, "_params")
        return self._validate_X(X, reset=False)

    def score_samples(self, X):
        """log Σ_k exp E_q[log π_k N(x | μ_k, Λ_k)] per sample (n,), as scikit-learn."""
        return torch.logsumexp(self._weighted_log_prob(self._check(X)), 1).cpu().numpy()

    def score(self, X, y=None):
        """Mean of :meth:`score_samples`."""
        return float(self.score_samples(X).mean())

    def predict(self, X):
        """The most probable component of each sample: (n,) int."""
        return self._predict_tensor(self._check(X)).cpu().numpy()

    def predict_proba(self, X):
        """q(z_n = k) for new samples: (n, k), rows sum to one."""
        return torch.softmax(self._weighted_log_prob(self._check(X)), 1).cpu().numpy()

    def sample(self, n_samples=1):
        """Draw from the mixture at the posterior-mean weights, means and covariances:
        returns (X (n, d), labels (n,))."""
        check_is_fitted(self, "_params")
        gm = GaussianMixture(
            self.n_components,
            covariance_type=self.covariance_type,
            random_state=self.random_state,
            device=self.device,
            dtype=self.dtype,
        )
        p = self._params
        wts = weights_from_concentration(p["wc"], self.weight_concentration_prior_type)
        gm._set_params_tensors({"weights": wts, "means": p["means"], "prec_chol": p["prec_chol"]})
        return gm.sample(n_samples)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Write the fitted model (safetensors + JSON header); read it back with latentfit.load."""
        check_is_fitted(self, "_params")
        return _save(self, path)

    def _get_state(self):
        pr = self._prior
        tensors = dict(self._params)
        tensors["prior_mean"], tensors["prior_covariance"] = pr.mean, pr.covariance
        extra = {
            "prior": [pr.weight_type, pr.weight_concentration, pr.mean_precision, pr.dof],
            "converged_": bool(self.converged_),
            "n_iter_": int(self.n_iter_),
            "lower_bound_": float(self.lower_bound_),
            "lower_bounds_": [float(v) for v in self.lower_bounds_],
            "elbo_": float(self.elbo_),
            "elbos_": [float(v) for v in self.elbos_],
            "n_features_in_": int(self.n_features_in_),
        }
        return tensors, extra

    def _set_state(self, tensors, extra):
        dev, dt = self._device, self._dtype
        t = {k: v.to(device=dev, dtype=dt) for k, v in tensors.items()}
        wtype, g0, b0, nu0 = extra.pop("prior")
        self._prior = BGMMPrior(wtype, g0, b0, t["prior_mean"], nu0, t["prior_covariance"])
        self._set_params_tensors(t)
        for k, v in extra.items():
            setattr(self, k, v)


def _q_theta(params: dict) -> NormalWishart:
    return NormalWishart(
        params["beta"], params["means"], params["dof"], params["cov"], params["prec_chol"]
    )


def _expected_log_joint(X, params, covariance_type, weight_type, shift=None) -> torch.Tensor:
    """E_q[log π_k] + E_q[log N(x_n | μ_k, Λ_k)] (n, k), optionally around ``shift``."""
    q = _q_theta(params)
    if shift is not None:
        X, q = X - shift, q._replace(means=q.means - shift)
    return expected_log_gaussian(X, q, covariance_type) + expected_log_weights(
        params["wc"], weight_type
    )


class _BGMMHooks:
    """CAVI as EM hooks: estep updates q(z), mstep updates q(θ), lower_bound is the ELBO."""

    def __init__(self, model: BayesianGaussianMixture, prior: BGMMPrior):
        self.model, self.prior = model, prior
        self.ct = model.covariance_type
        self.wtype = model.weight_concentration_prior_type

    @staticmethod
    def _shift(params) -> torch.Tensor:
        return params["means"].mean(0)  # (d,) any fixed point of params keeps stats additive

    def initialize(self, data, generator):
        X, w = data.X, data.weights
        resp = self.model._initial_resp(X, w, generator) * w.unsqueeze(1)  # (n, k)
        shift = torch.zeros(X.shape[1], dtype=X.dtype, device=X.device)
        stats = moment_stats(X, w, resp, self.ct)
        return self._update(stats, shift)

    def estep(self, params, batch):
        X, w = batch
        shift = self._shift(params)
        logp = _expected_log_joint(X, params, self.ct, self.wtype, shift)  # (n, k)
        lse = torch.logsumexp(logp, 1)  # (n,)
        log_resp = logp - lse.unsqueeze(1)  # (n, k)
        resp = log_resp.exp()
        stats = moment_stats(X - shift, w, resp * w.unsqueeze(1), self.ct)
        stats["neg_entropy"] = (w * (resp * log_resp).sum(1)).sum()
        stats["loglik"] = (w * lse).sum()
        stats["weight"] = w.sum()
        return stats

    def _update(self, stats, shift) -> dict:
        nk = stats["S0"] + 10 * torch.finfo(stats["S0"].dtype).eps  # (k,) as scikit-learn
        _, xk, sk = gaussian_mstep(stats, shift, self.model.reg_covar, self.ct)
        q = normal_wishart_update(nk, xk, sk, self.prior, self.ct)
        return {
            "wc": weight_concentration_update(nk, self.prior),
            "beta": q.mean_precision,
            "means": q.means,
            "dof": q.dof,
            "cov": q.covariances,
            "prec_chol": q.prec_chol,
        }

    def mstep(self, params, stats):
        return self._update(stats, self._shift(params))

    def lower_bound(self, params, stats):
        # scikit-learn evaluates the bound after the update of q(θ): recompute it here
        # (cheap: k small matrices) so the hooks stay pure.
        new = self.mstep(params, stats)
        return float(
            lower_bound(stats["neg_entropy"], new["wc"], _q_theta(new), self.wtype, self.ct)
        )
