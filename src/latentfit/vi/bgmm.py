"""BayesianGaussianMixture: variational Bayes for Gaussian mixtures by coordinate ascent (CAVI).

scikit-learn's ``sklearn.mixture.BayesianGaussianMixture`` (same parameters, attributes and
lower bound) run by the one EM driver: the "E-step" updates q(z), the "M-step" updates
q(π) q(μ, Λ), and the monitored objective is the ELBO. The math lives in
:mod:`latentfit.vi.bgmm_math`; this class holds parameters and adapts.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from latentfit._validation import (
    check_choice,
    check_em_counts,
    check_n_samples,
    check_non_negative,
    check_positive,
    check_sample_weight,
    check_tol,
)
from latentfit.em.base import EMFit, MixtureMixin
from latentfit.em.edited import fitted_params, refuse_edits, snapshot, warm
from latentfit.em.gaussian import (
    COVARIANCE_TYPES,
    check_overflow,
    check_variance_floor,
    degenerate_components,
    direct_log_prob,
    direct_moments,
    far_components,
    far_factors,
    gaussian_mstep,
    moment_stats,
    precisions_from_cholesky,
    put_direct_moments,
    weighted_mean,
)
from latentfit.em.initialize import INIT_PARAMS, initial_resp
from latentfit.em.mixture.gmm import GaussianMixture
from latentfit.em.sources.tensors import TensorChunks, default_chunk_rows
from latentfit.errors import DataError, ModelFileError, ParameterError
from latentfit.io import Stored, serializable
from latentfit.vi.bgmm_math import (
    WEIGHT_PRIOR_TYPES,
    BGMMPrior,
    NormalWishart,
    elbo_constant,
    expected_log_gaussian,
    expected_log_gaussian_offset,
    expected_log_weights,
    lower_bound,
    normal_wishart_update,
    weight_concentration_update,
    weights_from_concentration,
)

__all__ = [
    "BayesianGaussianMixture",
    "check_covariance_prior",
    "check_degrees_of_freedom",
    "check_prior",
]

_PARAM_KEYS = ("wc", "beta", "means", "dof", "cov", "prec_chol")
# kept when present: the fit's fixed centre (the data mean) and the means about it, which in
# float32 keep digits the absolute means lose far from the origin
_CENTRE_KEYS = ("shift", "delta")


def _covariance_prior_shape(covariance_type: str, d: int) -> tuple[int, ...]:
    """The shape of W₀⁻¹ for ``d`` features: (d, d) full and tied, (d,) diag, () spherical."""
    return {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[covariance_type]


def check_degrees_of_freedom(nu0, d: int) -> None:
    """ν₀ of the Wishart prior: a finite number > d − 1, so that the Wishart is proper
    (Bishop 2006, B.78). ParameterError naming ``degrees_of_freedom_prior``."""
    check_positive(
        nu0, "degrees_of_freedom_prior", above=d - 1.0, bound=f"n_features - 1 = {d - 1}"
    )


def check_covariance_prior(cov0: torch.Tensor, covariance_type: str) -> None:
    """W₀⁻¹ (shaped by :func:`_covariance_prior_shape`): a symmetric positive-definite
    matrix (full, tied; the Cholesky test in float64, where the updates use it) or positive
    variances (diag, spherical). ParameterError naming ``covariance_prior``."""
    if covariance_type in ("full", "tied"):
        sym = torch.allclose(cov0, cov0.T)
        if not sym or torch.linalg.cholesky_ex(cov0.double())[1] != 0:
            raise ParameterError(
                f"{covariance_type} covariance_prior must be a symmetric, positive-definite matrix"
            )
    elif bool((cov0 <= 0).any()):
        raise ParameterError(f"{covariance_type} covariance_prior must be positive")


def check_prior(prior: BGMMPrior, d: int, covariance_type: str) -> None:
    """The hyper-parameters of ``prior`` for ``d`` features, each by the rule ``fit`` applies
    to the constructor argument that sets it (ParameterError naming that argument): the
    weight prior's type, γ₀ and β₀ finite and > 0, ν₀ finite and > d − 1 (a proper Wishart,
    Bishop 2006 B.78), W₀⁻¹ by :func:`check_covariance_prior`. The shapes and the finiteness
    of m₀ and W₀⁻¹ are their tensors' (``_user_tensor`` in fit, the stored specs at load)."""
    check_choice(prior.weight_type, "weight_concentration_prior_type", WEIGHT_PRIOR_TYPES)
    check_positive(prior.weight_concentration, "weight_concentration_prior")
    check_positive(prior.mean_precision, "mean_precision_prior")
    check_degrees_of_freedom(prior.dof, d)
    check_covariance_prior(prior.covariance, covariance_type)


@serializable
class BayesianGaussianMixture(MixtureMixin, DensityMixin, BaseEstimator):
    """Variational Bayesian Gaussian mixture (Bishop 2006 §10.2; Blei & Jordan 2006).

    Parameters are those of ``sklearn.mixture.BayesianGaussianMixture``
    (``weight_concentration_prior_type`` ``"dirichlet_process"`` — stick-breaking, truncated
    at ``n_components`` — or ``"dirichlet_distribution"``); in addition ``device``, ``dtype``
    and ``chunk_rows`` as in :class:`latentfit.GaussianMixture`, and ``sample_weight`` in
    ``fit`` (frequency weights). ``fit`` finds q(z) q(π) q(μ, Λ) by CAVI. ``verbose`` shows a progress bar; ``verbose_interval`` is
    accepted for compatibility.

    Fitted attributes are scikit-learn's (``weights_``, ``means_``, ``covariances_``,
    ``precisions_``, ``precisions_cholesky_``, ``weight_concentration_`` — a pair (a, b) for
    the Dirichlet process —, ``mean_precision_``, ``degrees_of_freedom_``, the ``*_prior_``
    values, ``converged_``, ``n_iter_``, ``lower_bound_``, ``lower_bounds_``), plus
    ``elbo_`` and ``elbos_``: the same bound with its constants restored, i.e. the ELBO in
    nats, a lower bound on log p(X) comparable with log-likelihoods. A warm start counts as
    scikit-learn's: ``n_iter_`` and ``lower_bounds_`` cover its own iterations, which continue
    those of the fit before it.

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
        self._set_arguments(locals())

    # ------------------------------------------------------------------ validation
    def _check_parameters(self):
        check_em_counts(self.n_components, self.n_init, self.max_iter)
        check_choice(self.covariance_type, "covariance_type", COVARIANCE_TYPES)
        check_choice(self.init_params, "init_params", INIT_PARAMS)
        wtype = self.weight_concentration_prior_type
        check_choice(wtype, "weight_concentration_prior_type", WEIGHT_PRIOR_TYPES)
        check_tol(self.tol)
        check_non_negative(self.reg_covar, "reg_covar")
        for name in ("weight_concentration_prior", "mean_precision_prior"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name)

    def _given_prior(self, d: int) -> tuple:
        """The prior the constructor's arguments make for ``d`` features, checked as
        :func:`check_prior` checks it (ParameterError naming the argument): (γ₀, β₀, m₀ (d,)
        in float64, ν₀, W₀⁻¹), with scikit-learn's defaults γ₀ = 1/k, β₀ = 1, ν₀ = d for
        arguments left None, and m₀, W₀⁻¹ None where theirs are (taken from the data)."""
        gamma0 = self.weight_concentration_prior
        gamma0 = 1.0 / self.n_components if gamma0 is None else float(gamma0)
        beta0 = 1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior)
        m0 = cov0 = None
        if self.mean_prior is not None:
            m0 = self._user_tensor(self.mean_prior, "mean_prior", (d,), dtype=torch.float64)
        nu0 = float(d)
        if self.degrees_of_freedom_prior is not None:
            check_degrees_of_freedom(self.degrees_of_freedom_prior, d)
            nu0 = float(self.degrees_of_freedom_prior)
        if self.covariance_prior is not None:
            shape = _covariance_prior_shape(self.covariance_type, d)
            cov0 = self._user_tensor(self.covariance_prior, "covariance_prior", shape)
            check_covariance_prior(cov0, self.covariance_type)
        return gamma0, beta0, m0, nu0, cov0

    def _make_prior(self, X: torch.Tensor, w: torch.Tensor) -> BGMMPrior:
        """scikit-learn's defaults: γ₀ = 1/k, β₀ = 1, m₀ = mean of X, ν₀ = d, W₀⁻¹ = cov(X)."""
        d = X.shape[1]
        ct = self.covariance_type
        wsum = w.sum()
        # the prior's mean (d,), the data's or the user's, is kept in float64: float32 cannot
        # hold a mean far from the origin (1e7 + 1.468 rounds to 1e7 + 1), and it enters every
        # component's covariance through beta0 (x_k - m0)(x_k - m0)'
        m64 = weighted_mean(X, w, dtype=torch.float64)
        xbar = m64.to(X.dtype)
        gamma0, beta0, m0, nu0, cov0 = self._given_prior(d)
        m0 = m64 if m0 is None else m0
        if cov0 is None:
            if float(wsum) <= 1:
                raise DataError(
                    "the default covariance_prior needs a total sample_weight above 1 (it is "
                    "the unbiased covariance of X); pass covariance_prior or larger weights"
                )
            Xc = X - xbar
            emp = (Xc * w.unsqueeze(1)).T @ Xc / (wsum - 1)  # (d, d) unbiased, as np.cov
            flat = (emp.diagonal() <= 0).nonzero().flatten().tolist()
            if flat:
                raise DataError(
                    f"column {flat[0]} of X is constant, so the default covariance_prior (the "
                    "covariance of X) is singular; drop the column or pass covariance_prior"
                )
            if ct in ("full", "tied") and d > 1:
                lam = torch.linalg.eigvalsh(emp.double())  # ascending
                var = emp.diagonal().double()
                if float(var.max()) > 1e12 * float(var.min()):  # scales, not a subspace
                    big, small = int(var.argmax()), int(var.argmin())
                    i = int(Xc[:, big].abs().nan_to_num(nan=0.0).argmax())
                    raise DataError(
                        f"the columns of X vary on scales too far apart for the default "
                        f"covariance_prior (the covariance of X, singular in {ct!r} form at "
                        f"this precision): column {big}'s variance is {float(var[big]):.3g}, "
                        f"column {small}'s {float(var[small]):.3g}. Column {big}'s largest "
                        f"value lies in row {i} ({float(Xc[i, big]):.3g} from its mean): check "
                        "it (a value standing for a missing one?), or rescale the columns "
                        "(e.g. standardise them), or pass covariance_prior"
                    )
                if not float(lam[0]) > 1e-12 * float(lam[-1]):
                    raise DataError(
                        "the rows of X (with positive sample_weight) lie in a lower-dimensional "
                        "subspace (e.g. fewer distinct points than features + 1, or collinear "
                        "columns), so the default covariance_prior (the covariance of X) is "
                        f"singular for covariance_type={ct!r}; pass covariance_prior, use "
                        "covariance_type='diag', or drop the redundant columns"
                    )
            cov0 = {
                "full": emp,
                "tied": emp,
                "diag": emp.diagonal().clone(),
                "spherical": emp.diagonal().mean(),
            }[ct]
        return BGMMPrior(self.weight_concentration_prior_type, gamma0, beta0, m0, nu0, cov0)

    # ------------------------------------------------------------------ fitting
    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each sample."""
        return self._log_joint(self._fit(X, sample_weight=sample_weight).X).argmax(1).cpu().numpy()

    def _prepare_fit(self, X, y=None, sample_weight=None) -> EMFit:
        kept = {n: vars(self)[n] for n in ("feature_names_in_",) if n in vars(self)}
        X = self._validate_X(X, reset=True)
        n, d = X.shape
        if self.warm_start and hasattr(self, "_params") and d != self.n_features_in_:
            vars(self).pop("feature_names_in_", None)  # the fitted model, unchanged
            vars(self).update(kept)
            raise DataError(
                f"X has {d} features, but warm_start=True continues from the fitted "
                f"{type(self).__name__}, which has {self.n_features_in_}: pass data of "
                f"{self.n_features_in_} columns, or set warm_start=False to fit afresh"
            )
        if n < 2:
            raise DataError(
                f"{type(self).__name__} needs at least 2 samples (rows of X), got n_samples={n}: one row "
                "gives no spread to estimate a covariance from; pass more rows"
            )
        check_n_samples(n, self.n_components)
        w = check_sample_weight(sample_weight, n, dtype=X.dtype, device=X.device)
        check_overflow(X, w)
        check_variance_floor(X, w, self.reg_covar, "reg_covar", type(self).__name__)
        prior = self._make_prior(X, w)
        self.n_features_in_ = d
        self._prior = prior  # read when the result is stored
        hooks = _BGMMHooks(self, prior, weighted_mean(X, w))
        rows = self.chunk_rows or default_chunk_rows(d, self.n_components)
        return EMFit(hooks, TensorChunks(X, w, rows), X=X)

    def _after_fit(self, fit, result, X, **args) -> None:
        prior, w = fit.hooks.prior, fit.data.weights
        self._check_degenerate(fit.X, w, result.params)
        const = float(
            elbo_constant(
                prior, self.n_components, float(w.sum()), fit.X.shape[1], self.covariance_type
            )
        )
        self.elbo_ = self.lower_bound_ + const
        self.elbos_ = [b + const for b in self.lower_bounds_]

    def _check_degenerate(self, X: torch.Tensor, w: torch.Tensor, params: dict) -> None:
        """``degenerate_components_``: components holding data (Σ r ≥ 1) whose posterior-mean
        covariance sits at the reg_covar floor on (near-)identical points. The Wishart prior
        keeps them off the floor unless ``covariance_prior`` is tiny (the default, the data
        covariance, never lets one collapse); warns naming them and their rows."""
        ct = self.covariance_type
        cov = params["cov"].double()
        if ct in ("full", "tied"):
            scatter = cov - self.reg_covar * torch.eye(
                cov.shape[-1], dtype=cov.dtype, device=cov.device
            )
        else:
            scatter = cov - self.reg_covar
        shift = params.get("shift", weighted_mean(X, w))
        Xc = (X - shift).double()
        wd = w.double() / w.double().sum()
        data_cov = (Xc * wd.unsqueeze(1)).T @ Xc - torch.outer(wd @ Xc, wd @ Xc)  # (d, d)
        found = degenerate_components(scatter, ct, data_cov, self.reg_covar)
        nk = params["nk"].double() if "nk" in params else None
        found = {k: j for k, j in found.items() if nk is None or float(nk[k]) >= 1}
        self._record_degenerate(found, X)

    def _initial_resp(self, X: torch.Tensor, w: torch.Tensor, gen: torch.Generator):
        """Starting responsibilities (n, k), by the same methods as GaussianMixture."""
        return initial_resp(self.init_params, X, w, self.n_components, gen)

    # ------------------------------------------------------------------ parameters
    def _set_params_tensors(self, params: dict) -> None:
        keys = _PARAM_KEYS + tuple(k for k in _CENTRE_KEYS if k in params)
        p, ct = {k: params[k].detach() for k in keys}, self.covariance_type
        self._params = p
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
        # what the attributes were set to, to find the user's edits (see _params)
        self._published = {name: snapshot(getattr(self, name)) for name in _PUBLISHED}
        self._fitted_settings = (ct, int(p["means"].shape[0]), wtype)

    @property
    def _params(self) -> dict:
        """The fitted tensors of the variational posterior. Its public attributes summarise it
        and are not read back: where one was changed since the fit (scikit-learn users set
        ``means_`` and predict), or ``n_components``, ``covariance_type`` or the weight prior's
        type, the model refuses to predict rather than ignore the change (GaussianMixture takes
        such edits up)."""
        fitted = fitted_params(self)
        published = vars(self).get("_published", {})
        settings = ("covariance_type", "n_components", "weight_concentration_prior_type")
        then = vars(self).get("_fitted_settings")
        for name, was in zip(settings, then or (), strict=False):
            if getattr(self, name) != was:
                raise ParameterError(
                    f"{name} was set to {getattr(self, name)!r} after the fit, whose posterior "
                    f"has {name}={was!r}; fit again{warm(self)}"
                )
        refuse_edits(
            self,
            published,
            "a BayesianGaussianMixture's fitted attributes summarise its variational posterior "
            "and are not read back. Fit again, or use GaussianMixture, which takes edited "
            "parameters up",
        )
        return fitted

    @_params.setter
    def _params(self, params: dict) -> None:
        vars(self)["_fitted_params"] = params

    # ------------------------------------------------------------------ inference
    def _log_joint(self, X: torch.Tensor) -> torch.Tensor:
        """E_q[log π_k + log N(x | μ_k, Λ_k)] (n, k), as scikit-learn's BayesianGaussianMixture."""
        p = self._params
        shift = p["shift"] if "shift" in p else p["means"].mean(0)  # centred, for precision
        far = far_components(_centred(p, shift), p["prec_chol"], self.covariance_type)
        return _expected_log_joint(
            X, p, self.covariance_type, self.weight_concentration_prior_type, shift, far
        )

    def score_samples(self, X):
        """log Σ_k exp E_q[log π_k N(x | μ_k, Λ_k)] per sample (n,), as scikit-learn."""
        return super().score_samples(X)

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
        gm.n_features_in_ = self.n_features_in_
        return gm.sample(n_samples)

    # ------------------------------------------------------------------ persistence
    _state_fields: ClassVar[dict[str, str]] = {
        "prior": "list",
        "elbo_": "float",
        "elbos_": "floats",
    }
    # the prior fit derived from X, beside the number of features
    _required_state_fields: ClassVar[tuple[str, ...]] = ("n_features_in_", "prior")

    def _extra_state(self) -> dict:
        pr = self._prior
        return {
            "prior": [pr.weight_type, pr.weight_concentration, pr.mean_precision, pr.dof],
            "elbo_": float(self.elbo_),
            "elbos_": [float(v) for v in self.elbos_],
        }

    def _get_state(self):
        tensors, extra = super()._get_state()
        pr = self._prior
        tensors.update(prior_mean=pr.mean, prior_covariance=pr.covariance)
        return tensors, extra

    _stored_specs_exact = True
    _float64_tensors = ("prior_mean",)  # as _make_prior keeps it: float32 cannot hold it

    def _stored_specs(self, d: int) -> dict[str, Stored]:
        """A model file's tensors: the weights' concentrations, the means' precision scales
        ``beta`` and the degrees of freedom > 0, finite means (and the fit's centre and the
        means about it), the Wishart scales ``cov`` and the prior's covariance positive
        (definite) and ``prec_chol`` precision Cholesky factors of positive diagonal, all
        shaped by ``covariance_type``."""
        k, ct = self.n_components, self.covariance_type
        matrix = ct in ("full", "tied")
        cov = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ct]
        wc = (2, k) if self.weight_concentration_prior_type == "dirichlet_process" else (k,)
        prior_cov = _covariance_prior_shape(ct, d)
        return {
            "wc": Stored(wc, "positive"),
            "beta": Stored((k,), "positive"),
            "means": Stored((k, d)),
            "dof": Stored(() if ct == "tied" else (k,), "positive"),
            "cov": Stored(cov, "pd" if matrix else "positive"),
            "prec_chol": Stored(cov, "precision_cholesky" if matrix else "positive"),
            "shift": Stored((d,), required=False),
            "delta": Stored((k, d), required=False),
            "prior_mean": Stored((d,)),
            "prior_covariance": Stored(prior_cov, "pd" if matrix else "positive"),
        }

    def _restore_params(self, tensors, extra):
        # The prior is held to the rules fit holds the constructor's arguments to: the
        # arguments themselves (those fit checks only once it knows d), then the prior the
        # file stores, whose numbers no other check reads (they are only reported, as the
        # *_prior_ attributes, so out-of-range ones would load silently)
        d, ct = extra["n_features_in_"], self.covariance_type
        try:
            given = self._given_prior(d)
        except (ParameterError, DataError) as err:
            raise ModelFileError(
                f"the model file's header field 'params' holds a prior {type(self).__name__} "
                f"refuses for n_features_in_ = {d}: {err}. The file was altered or is damaged"
            ) from None
        stored = extra.pop("prior", None)
        if not isinstance(stored, list) or len(stored) != 4:
            raise ModelFileError(
                "the model file's header field 'extra.prior' must be the list [weight "
                "concentration prior type, weight concentration, mean precision, degrees of "
                f"freedom], got {stored!r:.80}; the file was altered or is damaged"
            )
        wtype, g0, b0, nu0 = stored
        prior = BGMMPrior(wtype, g0, b0, tensors["prior_mean"], nu0, tensors["prior_covariance"])
        try:
            check_prior(prior, d, ct)
        except ParameterError as err:
            raise ModelFileError(
                "the model file's prior (the header field 'extra.prior', the tensors "
                f"'prior_mean' and 'prior_covariance') holds a value fit refuses: {err}. The "
                "file was altered or is damaged"
            ) from None
        if wtype != self.weight_concentration_prior_type:
            raise ModelFileError(
                f"the model file's header field 'extra.prior' names the weight prior {wtype!r}, "
                "but 'params.weight_concentration_prior_type' (which shapes the tensor 'wc') is "
                f"{self.weight_concentration_prior_type!r}; the file was altered or is damaged"
            )
        _check_stored_prior(prior, given, self.get_params())
        self._prior = prior
        self._set_params_tensors(tensors)


def _check_stored_prior(prior: BGMMPrior, given: tuple, params: dict) -> None:
    """A model file's prior is the one fit makes from the constructor's arguments the file
    also stores (``given``, from :meth:`BayesianGaussianMixture._given_prior`): each stored
    value that disagrees with them is refused, naming both, as an altered or damaged file.
    m₀ and W₀⁻¹ are compared only where their argument was given: else fit took them from the
    data, which the file does not hold (they are checked by :func:`check_prior` alone)."""
    gamma0, beta0, m0, nu0, cov0 = given
    defaults = {  # how fit chooses each where its argument is None
        "weight_concentration_prior": "1/n_components = ",
        "mean_precision_prior": "",
        "degrees_of_freedom_prior": "n_features_in_ = ",
    }
    stored_numbers = (prior.weight_concentration, prior.mean_precision, prior.dof)
    for (name, default), entry, stored, want in zip(
        defaults.items(), (1, 2, 3), stored_numbers, (gamma0, beta0, nu0), strict=True
    ):
        if stored != want:
            arg = params[name]
            said = repr(arg) if arg is not None else f"None (default {default}{want!r})"
            raise ModelFileError(
                f"the model file's header field 'extra.prior' holds {name} = {stored!r} (entry "
                f"{entry}), but 'params.{name}', from which fit makes it, is {said}; the file "
                "was altered or is damaged"
            )
    for name, tensor, stored, want in (
        ("mean_prior", "prior_mean", prior.mean, m0),
        ("covariance_prior", "prior_covariance", prior.covariance, cov0),
    ):
        if want is None:
            continue
        want = want.to(stored.dtype)  # as fit stored it, in the dtype load reads it in
        if not torch.equal(stored, want):
            index = tuple(int(i) for i in (stored != want).nonzero()[0])
            at = f" at index {index[0] if len(index) == 1 else index}" if index else ""
            raise ModelFileError(
                f"the model file's tensor {tensor!r} holds {float(stored[index]):.6g}{at}, but "
                f"'params.{name}', from which fit makes it, gives {float(want[index]):.6g} "
                "there; the file was altered or is damaged"
            )


#: The fitted attributes that describe the posterior (edits to them are refused: _params).
_PUBLISHED = (
    "weights_", "weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_",
    "covariances_", "precisions_cholesky_", "precisions_",
)  # fmt: skip


def _q_theta(params: dict) -> NormalWishart:
    return NormalWishart(
        params["beta"], params["means"], params["dof"], params["cov"], params["prec_chol"]
    )


def _centred(params, shift) -> torch.Tensor:
    """μ_k − c (k, d): the fit's own ``delta`` when ``shift`` is its centre, else computed."""
    delta = params.get("delta")
    if delta is not None and params.get("shift") is shift:
        return delta
    return params["means"] - shift


def _expected_log_joint(
    X, params, covariance_type, weight_type, shift=None, far=None
) -> torch.Tensor:
    """E_q[log π_k] + E_q[log N(x_n | μ_k, Λ_k)] (n, k), optionally around ``shift``; the
    components ``far`` (indices (f,), from :func:`~latentfit.em.gaussian.far_components`)
    from x − m_k, as :func:`~latentfit.em.gaussian.direct_log_prob`."""
    q = _q_theta(params)
    Xc, qc = X, q
    if shift is not None:
        Xc, qc = X - shift, q._replace(means=_centred(params, shift))
    elw = expected_log_weights(params["wc"], weight_type)  # (k,)
    out = expected_log_gaussian(Xc, qc, covariance_type) + elw  # (n, k)
    if far is not None and len(far):
        pc = far_factors(q.prec_chol, far, covariance_type)
        lp = direct_log_prob(X, q.means[far], pc, covariance_type)  # (n, f)
        out[:, far] = lp + (expected_log_gaussian_offset(q, X.shape[1]) + elw)[far]
    return out


class _BGMMHooks:
    """CAVI as EM hooks: estep updates q(z), mstep updates q(θ), lower_bound is the ELBO."""

    def __init__(self, model: BayesianGaussianMixture, prior: BGMMPrior, shift: torch.Tensor):
        self.model, self.prior = model, prior
        self.ct = model.covariance_type
        self.wtype = model.weight_concentration_prior_type
        # Every statistic and q(μ) is taken about one fixed point, the weighted data mean, so
        # float32 keeps the precision of data far from the origin; the prior is moved with it
        # (the updates and the bound are translation invariant).
        self.shift = shift  # (d,)
        self.prior_c = prior._replace(
            mean=(prior.mean - shift).double(), covariance=prior.covariance.double()
        )
        self.prior_mean = prior.mean.double()  # (d,) m₀ itself, for components far from c
        self._far_key = None

    def initialize(self, data, generator):
        Xc, w = data.X - self.shift, data.weights
        resp = self.model._initial_resp(Xc, w, generator) * w.unsqueeze(1)  # (n, k)
        return self._update(moment_stats(Xc, w, resp, self.ct))

    def estep(self, params, batch):
        X, w = batch
        shift = self.shift
        if params.get("shift") is not shift:  # a warm start: the previous fit's centre
            params = {**params, "shift": shift, "delta": _centred(params, shift)}
        far = self._far(params)
        idx = None if far is None else far[0]
        logp = _expected_log_joint(X, params, self.ct, self.wtype, shift, idx)  # (n, k)
        lse = torch.logsumexp(logp, 1)  # (n,)
        log_resp = logp - lse.unsqueeze(1)  # (n, k)
        resp = log_resp.exp()
        rw = resp * w.unsqueeze(1)  # (n, k)
        stats = moment_stats(X - shift, w, rw, self.ct)
        if far is not None:  # their moments about their own means (the M-step moves them back)
            S1, S2 = direct_moments(X, rw[:, idx].T, far[1], self.ct)
            put_direct_moments(stats, idx, S1, S2, self.ct)
        stats["neg_entropy"] = (w * (resp * log_resp).sum(1)).sum()
        stats["loglik"] = (w * lse).sum()
        stats["weight"] = w.sum()
        return stats

    def _far(self, params):
        """(indices (f,), means (f, d)) of the components too far from the shift, compared
        with their spread, for moments and log-densities about it (their rounding is
        eps ‖m_k − c‖² λ_max: a cluster of sd 0.01 a hundred from the others gave float32 a
        bound 7 nats off float64's), or None; found once per set of parameters (the bound
        and the M-step ask again with the same ones)."""
        key = (params["means"], params["prec_chol"])
        if self._far_key is None or any(
            a is not b for a, b in zip(key, self._far_key, strict=True)
        ):
            self._far_key = key
            idx = far_components(_centred(params, self.shift), params["prec_chol"], self.ct)
            self._far_value = (idx, params["means"][idx]) if len(idx) else None
        return self._far_value

    def _update(self, stats, far=None) -> dict:
        """q(π), q(μ, Λ) from statistics about the shift, in float64 (as GaussianMixture's
        M-step), returned in the data's dtype with q(μ)'s means both absolute and centred.
        ``far`` (indices, means) names components whose S1, S2 are about their means."""
        dt = stats["S0"].dtype
        eps = torch.finfo(dt).eps
        stats = {k: v.double() for k, v in stats.items()}
        nk = stats["S0"] + 10 * eps  # (k,) as scikit-learn
        zero = torch.zeros_like(self.prior_c.mean)
        _, xk, sk = gaussian_mstep(stats, zero, self.model.reg_covar, self.ct)
        step = xk.clone()  # (k, d) x̄_k − the point the moments are about
        if far is not None:
            xk[far[0]] += far[1].double() - self.shift.double()
        q = normal_wishart_update(nk, xk, sk, self.prior_c, self.ct)
        means, delta = self.shift.double() + q.means, q.means  # (k, d)
        if far is not None:
            # moments about m_k itself: its update (β₀ m₀ + N_k x̄_k) / β_k kept absolute.
            # Through m_k − c it would round to the spacing of c (rows near 2.4 with one
            # row at 1e17 and a weak prior fitted a mean of 2.5: c is 1.7e15)
            i = far[0]
            x_abs = far[1].double() + step[i]  # (f, d)
            b0 = self.prior_c.mean_precision
            means[i] = (b0 * self.prior_mean + nk[i].unsqueeze(1) * x_abs) / q.mean_precision[
                i
            ].unsqueeze(1)
            delta = delta.clone()
            delta[i] = means[i] - self.shift.double()
        out = {
            "wc": weight_concentration_update(nk, self.prior_c),
            "beta": q.mean_precision,
            "means": means,
            "dof": q.dof,
            "cov": q.covariances,
            "prec_chol": q.prec_chol,
            "delta": delta,
        }
        out = {k: v.to(dt) for k, v in out.items()}
        out["shift"] = self.shift
        out["nk"] = stats["S0"].to(dt)  # (k,) for the degenerate-component check
        return out

    def mstep(self, params, stats):
        return self._update(stats, self._far(params))

    def lower_bound(self, params, stats):
        # scikit-learn evaluates the bound after the update of q(θ): recompute it here
        # (cheap: k small matrices) so the hooks stay pure.
        new = self.mstep(params, stats)
        return float(
            lower_bound(stats["neg_entropy"], new["wc"], _q_theta(new), self.wtype, self.ct)
        )
