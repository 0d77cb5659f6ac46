"""GaussianMixture: scikit-learn's estimator, fitted by the one EM driver in torch.

Same parameters, methods and fitted attributes as ``sklearn.mixture.GaussianMixture``, plus
``sample_weight``, ``device``, ``dtype`` and the whole per-iteration history. The math lives
in :mod:`latentfit.em.gaussian`; this class holds parameters and adapts.
"""

from __future__ import annotations

import warnings

import torch
from sklearn.base import BaseEstimator, DensityMixin

from latentfit._validation import (
    check_choice,
    check_em_counts,
    check_missing,
    check_non_negative,
    check_tol,
)
from latentfit.em.base import CriteriaMixin, EMFit, MixtureMixin
from latentfit.em.edited import PUBLIC, fitted_params, is_edited, params_from_attributes
from latentfit.em.flat_columns import warn_constant_columns, warn_dependent_columns
from latentfit.em.gaussian import (
    COVARIANCE_TYPES,
    PassOverflowCheck,
    check_overflow,
    check_variance_floor,
    covariances_from_precisions,
    degenerate_components,
    direct_is_faster,
    direct_log_prob,
    direct_moments,
    far_components,
    far_factors,
    gaussian_estep_stats,
    gaussian_features,
    gaussian_mstep,
    mixture_covariance,
    moment_stats,
    n_covariance_parameters,
    natural_parameters,
    precision_cholesky,
    precision_cholesky_from_precisions,
    precisions_from_cholesky,
    put_direct_moments,
    weighted_mean,
)
from latentfit.em.initialize import INIT_PARAMS, initial_resp, kmeans_plusplus, nearest_center
from latentfit.em.missing import (
    direct_missing_log_prob,
    gaussian_missing_estep_stats,
    has_missing,
    impute_mean,
    log_gaussian_prob_missing,
)
from latentfit.em.mixture.base import (
    check_weighted_rows,
    fit_arrays,
    fix_labelled,
    refuse_source_labels,
)
from latentfit.em.online import OnlineEMMixin, translate_moment_stats
from latentfit.em.sources.tensors import TensorChunks, default_chunk_rows
from latentfit.errors import (
    DataError,
    DegenerateComponentWarning,
    LatentfitError,
    ModelFileError,
    ParameterError,
    user_stacklevel,
)
from latentfit.io import Stored, serializable

__all__ = ["GaussianMixture"]


def _shift_of(params: dict) -> torch.Tensor:
    """The point the statistics of ``params`` are centred on: the fit's fixed ``shift`` (the
    weighted data mean, set at initialisation) or, for parameters without one, the mixture mean."""
    shift = params.get("shift")
    return _shift(params["weights"], params["means"]) if shift is None else shift


def _centred_means(params: dict, shift: torch.Tensor) -> torch.Tensor:
    """μ_k − c (k, d). A fit keeps them as ``delta``: in float32 the absolute means of data far
    from the origin are rounded to the spacing of the offset (1.0 at 1e7), which would move
    every E-step's component by up to half of it, while the differences keep their digits."""
    delta = params.get("delta")
    if delta is not None and params.get("shift") is shift:
        return delta
    return params["means"] - shift


def _shift(weights: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """The point statistics are centred on: the mixture mean Σ π_k μ_k (d,)."""
    return weights @ means


@serializable
class GaussianMixture(OnlineEMMixin, MixtureMixin, CriteriaMixin, DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted by EM (Dempster et al. 1977; Bishop 2006 §9.2).

    Parameters are those of ``sklearn.mixture.GaussianMixture``; in addition:

    device : torch device for the fit (``"cpu"``, ``"cuda"``...), default CPU.
    dtype : ``"float64"`` (default) or ``"float32"``.
    chunk_rows : rows per E-step chunk (default: sized so the work stays in cache).
    learning_decay, learning_offset : step sizes ρ_t = (t + offset)^(−decay) of
        ``partial_fit`` (stepwise EM, :mod:`latentfit.em.online`).

    ``fit`` also takes a source of :mod:`latentfit.em.sources.chunks` (a memory-mapped .npy,
    Parquet, a stream of arrays, a :class:`~latentfit.em.sources.distributed.DistributedSource`)
    in place of X: the data is read chunk by chunk on every pass.
    missing : ``"error"`` (default) refuses NaN; ``"marginalize"`` fits, scores and predicts
        rows with NaN entries exactly, marginalising the missing coordinates
        (:mod:`latentfit.em.missing`).

    Fitted attributes: ``weights_`` (k,), ``means_`` (k, d), ``covariances_``,
    ``precisions_``, ``precisions_cholesky_`` (shapes by covariance type as in scikit-learn),
    ``converged_``, ``n_iter_``, ``lower_bound_`` (mean log-likelihood per sample of the best
    run), ``lower_bounds_`` (its value at every iteration), ``all_lower_bounds_`` (every
    restart's history), ``n_features_in_``. Attributes are numpy arrays.

    ``warm_start=True`` continues from the fitted parameters for up to ``max_iter`` more
    iterations, as scikit-learn: ``n_iter_`` and ``lower_bounds_`` then cover that call only
    (the calls' histories concatenated are the history of one longer fit), and its first
    change is measured from the fitted ``lower_bound_``, so a converged fit continued makes
    one more iteration, the next of one longer fit, and stops there when its change is
    within ``tol``.

    A component that no sample is responsible for keeps its previous mean and covariance (its
    weight goes to zero); a covariance that is not positive definite raises
    :class:`~latentfit.em.gaussian.DegenerateComponentError` naming the component.
    """

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        device=None,
        dtype="float64",
        chunk_rows=None,
        learning_decay=0.6,
        learning_offset=0.0,
        missing="error",
    ):
        self._set_arguments(locals())

    # ------------------------------------------------------------------ validation
    def _check_parameters(self):
        check_em_counts(self.n_components, self.n_init, self.max_iter)
        check_choice(self.covariance_type, "covariance_type", COVARIANCE_TYPES)
        check_choice(self.init_params, "init_params", INIT_PARAMS)
        check_tol(self.tol)
        check_missing(self.missing)
        check_non_negative(self.reg_covar, "reg_covar")

    def _chunk_rows(self, d: int) -> int:
        """Rows per E-step chunk. Full and tied covariances: sized by the (rows, k, d) work of
        the densities; diagonal and spherical ones have (k + 2d) numbers per row only, and
        fewer, longer chunks save per-chunk overhead (benchmarks/README.md)."""
        if self.chunk_rows:
            return self.chunk_rows
        if self.covariance_type in ("diag", "spherical"):
            return default_chunk_rows(1, self.n_components + 2 * d)
        return default_chunk_rows(d, self.n_components)

    def _chunks(self, X: torch.Tensor, w: torch.Tensor, labels=None) -> TensorChunks:
        return TensorChunks(X, w, self._chunk_rows(X.shape[1]), labels)

    # ------------------------------------------------------------------ EM hooks
    def _hooks(self, cache_features: bool = False) -> _GMMHooks:
        return _GMMHooks(self, cache_features)

    def _online_hooks(self) -> _GMMHooks:
        """Stepwise EM keeps every component's statistics about its own mean (it moves them
        with recenter as the means move)."""
        return _OnlineGMMHooks(self)

    def _cache_fits(self, X: torch.Tensor, budget_bytes: int = 1 << 30) -> bool:
        """Keep the E-step features of in-memory data when they take at most ``budget_bytes``."""
        d = X.shape[1]
        if direct_is_faster(d, self.n_components, self.covariance_type):
            return False  # its E-step reads the rows themselves
        m = d * (d + 1) // 2 + d if self.covariance_type in ("full", "tied") else 2 * d
        return X.shape[0] * m * X.element_size() <= budget_bytes and not has_missing(X)

    def fit(self, X, y=None, sample_weight=None, labels=None):
        """Estimate the parameters by EM.

        ``sample_weight`` (n,) weights each sample's likelihood. ``labels`` (n,) makes the fit
        semi-supervised: a sample labelled k ≥ 0 belongs to component k (its responsibility is
        fixed to one-hot and its complete-data likelihood enters the bound); -1 means unknown.
        ``y`` is ignored, as in scikit-learn, so pipelines that pass a target keep working.
        """
        self._fit(X, sample_weight=sample_weight, labels=labels)
        return self

    def fit_predict(self, X, y=None, sample_weight=None, labels=None):
        """Fit, then return the component of each sample (after a final E-step)."""
        fit = self._fit(X, sample_weight=sample_weight, labels=labels)
        if fit.X is None:  # one more pass over the stream
            return torch.cat([self._log_joint(Xc).argmax(1) for Xc, _ in fit.data]).cpu().numpy()
        return self._log_joint(fit.X).argmax(1).cpu().numpy()

    def _prepare_source_fit(self, source, sample_weight=None, labels=None) -> EMFit:
        refuse_source_labels(labels, "labels")
        return self._stream(source, sample_weight)

    def _prepare_fit(self, X, sample_weight=None, labels=None) -> EMFit:
        kept = {
            n: self.__dict__[n] for n in ("n_features_in_", "feature_names_in_") if n in vars(self)
        }
        X, w, y = fit_arrays(self, X, sample_weight, labels, self.n_components, "labels")
        try:
            self._check_warm_start(X.shape[1])
        except LatentfitError:
            for name in ("n_features_in_", "feature_names_in_"):  # the fitted model, unchanged
                self.__dict__.pop(name, None)
            self.__dict__.update(kept)
            raise
        if X.shape[0] == 1:
            raise DataError(
                "GaussianMixture needs at least 2 samples (rows of X), got n_samples=1: one row "
                "gives no spread to estimate a covariance from; pass more rows"
            )
        check_overflow(X, w)
        check_variance_floor(X, w, self.reg_covar, "reg_covar", type(self).__name__)
        warn_constant_columns(X, w, type(self).__name__, "components")
        warn_dependent_columns(X, w, type(self).__name__, self.covariance_type)
        hooks = self._hooks(cache_features=self._cache_fits(X))
        return EMFit(hooks, self._chunks(X, w, y), X=X)

    def _online_batch(self, X, w):
        check_overflow(X, w)  # every batch's moments, as fit checks the data's
        return (X, w)

    def _online_init_data(self, X, w):
        check_weighted_rows(w, self.n_components, "the first batch of partial_fit")
        check_overflow(X, w)
        self._check_floor(X, w)
        return super()._online_init_data(X, w)

    def _check_floor(self, X, w):
        check_variance_floor(X, w, self.reg_covar, "reg_covar", type(self).__name__)

    def _stream(self, source, sample_weight) -> EMFit:
        """A source read chunk by chunk on this model's device (see em/sources/chunks.py). The
        variance floor is judged on the in-memory initialisation sample (all rows up to
        ``init_rows``), once however many inits read it, as MixtureModel learns its settings;
        a warm start, which reads no such sample, judges the first block it reads."""
        self._check_warm_start(source.n_features)
        rows = self._chunk_rows(source.n_features)
        min_rows = max(2, self.n_components)
        warm = bool(self.warm_start) and hasattr(self, "_params")  # the driver's test
        judged = [False]

        def init_data(sample):
            check_weighted_rows(
                sample.weights, self.n_components, "the rows a data source gives to initialise from"
            )  # as fit(X, w)
            if not judged[0]:
                judged[0] = True
                self._check_floor(sample.X, sample.weights)
            return sample

        def floor(X):
            if warm and not judged[0] and X.shape[0]:
                judged[0] = True
                self._check_floor(X, None)

        # the moments of a whole pass, as fit checks the data's
        check = PassOverflowCheck(then=floor)

        return self._prepare_source(
            source, sample_weight, self._hooks(), chunk_rows=rows, min_rows=min_rows,
            init_data=init_data, check=check,
        )  # fmt: skip

    def _check_warm_start(self, d: int) -> None:
        """A warm start continues from the fitted parameters: the settings they were fitted
        with (checked when ``_params`` is read) and the data's width must be theirs."""
        fitted = vars(self).get("_fitted_params")
        if not self.warm_start or fitted is None:
            return
        self._check_fitted_settings()
        d_fit = fitted["means"].shape[1]
        if d != d_fit:
            raise DataError(
                f"X has {d} features, but warm_start=True continues from the fitted "
                f"GaussianMixture, which has {d_fit}: pass data of {d_fit} columns, or set "
                "warm_start=False to fit afresh"
            )

    def _after_fit(self, fit: EMFit, result, X, **args) -> None:
        self._check_degenerate(fit.X)

    def _check_degenerate(self, X: torch.Tensor | None) -> None:
        """Set ``degenerate_components_`` and warn about components collapsed onto a handful
        of (near-)identical points (:func:`~latentfit.em.gaussian.degenerate_components`),
        naming their rows when the data is in memory."""
        p, ct = self._params, self.covariance_type
        shift = _shift_of(p)
        cov = covariances_from_precisions(p["prec_chol"].double(), ct)
        scatter = cov - self.reg_covar  # what the data give, before reg_covar
        if ct in ("full", "tied"):
            scatter = cov - self.reg_covar * torch.eye(
                cov.shape[-1], dtype=cov.dtype, device=cov.device
            )
        total = mixture_covariance(  # the data covariance, unregularised
            p["weights"].double(), _centred_means(p, shift).double(), scatter, ct
        )
        self._record_degenerate(degenerate_components(scatter, ct, total, self.reg_covar), X)
        if X is not None and ct in ("full", "tied") and X.shape[0] <= X.shape[1]:
            # the data's own covariance is singular: no component is to blame, so none is
            # flagged above, but the likelihood is reg_covar's, not the data's
            warnings.warn(
                f"GaussianMixture: {X.shape[0]} rows for {X.shape[1]} columns: a {ct} "
                "covariance estimated from no more rows than columns is singular, invertible "
                f"only through reg_covar ({self.reg_covar:g}), so the log-likelihood and "
                "BIC/AIC are set by reg_covar, not by the data. Use covariance_type='diag' or "
                "'spherical', fewer columns, or a model of n < d (PPCA, FactorAnalysis).",
                DegenerateComponentWarning,
                stacklevel=user_stacklevel(),
            )

    # ------------------------------------------------------------------ parameters
    def _initial_params(self, data: TensorChunks, gen: torch.Generator) -> dict:
        """Starting parameters plus the fit's fixed ``shift``, the weighted mean of the data.

        Initialisation works on data centred on the shift, so k-means distances and the first
        moments keep their precision for data far from the origin (float32 included).
        """
        X, w = impute_mean(data.X, data.weights), data.weights  # NaNs only to start EM
        shift = weighted_mean(X, w)  # (d,) accumulated in float64
        params = self._initial_estimates(X, w, shift, gen, getattr(data, "labels", None))
        params["shift"] = shift
        if "delta" not in params:  # means given by the user
            params["delta"] = params["means"] - shift
        return params

    def _initial_estimates(self, X, w, shift, gen: torch.Generator, labels=None) -> dict:
        """Starting parameters from the data ``X`` (n, d), worked on about ``shift`` (d,)."""
        given = (self.weights_init, self.means_init, self.precisions_init)
        Xc = X - shift  # (n, d)
        if all(v is not None for v in given):
            resp = None
        else:
            resp = initial_resp(self.init_params, Xc, w, self.n_components, gen)
        if resp is not None and labels is not None and bool((labels >= 0).any()):
            resp = fix_labelled(self._resp_from_labels(Xc, w, labels, gen), labels)
        if resp is None:  # every parameter is given: nothing to estimate
            return self._given_params(X.shape[1])
        ct, dt = self.covariance_type, X.dtype
        rw = resp * w.unsqueeze(1)  # (n, k)
        stats = moment_stats(Xc, w, rw, ct)
        zero = torch.zeros_like(shift)
        weights, delta, cov = gaussian_mstep(stats, zero, self.reg_covar, ct)
        given = self._given_params(X.shape[1])
        means = shift + delta  # (k, d)
        if "prec_chol" in given:
            pc = given["prec_chol"]
        else:
            pc = precision_cholesky(cov, ct)
            far = far_components(delta, pc, ct)
            if len(far):
                # about the shift a tight group far from it keeps no digits of its variance
                # (a start at reg_covar, which the E-step then empties into a broad
                # neighbour), nor in float32 of its mean: x − c rounds to the spacing of c
                # (rows near 0 beside one row at 2e18 with weights 0.1: c is 1e16, spaced by
                # 1e9, and the group started at -6.4e9, where EM never found it again). Its
                # mean and moments are taken from the data themselves, as the E-step's are.
                mu = torch.stack([weighted_mean(X, rw[:, j], dtype=torch.float64) for j in far])
                S1, S2 = direct_moments(X, rw[:, far].T, mu.to(dt), ct)
                put_direct_moments(stats, far, S1, S2, ct)
                pc = precision_cholesky(gaussian_mstep(stats, zero, self.reg_covar, ct)[2], ct)
                means[far] = mu.to(dt)
                delta[far] = (mu - shift.double()).to(dt)
        out = {"weights": given.get("weights", weights), "prec_chol": pc}
        if "means" in given:
            out["means"] = given["means"]
        else:  # centred means kept as they are (see _centred_means)
            out["means"], out["delta"] = means, delta
        return out

    def _resp_from_labels(self, X, w, labels, gen) -> torch.Tensor:
        """Hard starting responsibilities that agree with the labels: component k starts at the
        mean of the samples labelled k (k-means++ seeds for components without labels) and every
        sample joins its nearest start."""
        k = self.n_components
        centers = X[kmeans_plusplus(X, k, w, gen)].clone()  # (k, d)
        for j in range(k):
            mine = labels == j
            if bool(mine.any()):
                centers[j] = (w[mine] @ X[mine]) / w[mine].sum()
        return torch.nn.functional.one_hot(nearest_center(X, centers), k).to(X.dtype)

    def _given_params(self, d: int) -> dict:
        """The user's weights_init / means_init / precisions_init, checked, as tensors."""
        k = self.n_components
        out = {}
        if self.weights_init is not None:
            weights = self._user_tensor(self.weights_init, "weights_init", (k,))
            if bool((weights < 0).any()) or abs(float(weights.sum()) - 1) > 1e-6:
                raise ParameterError("weights_init must be non-negative and sum to 1")
            out["weights"] = weights
        if self.means_init is not None:
            out["means"] = self._user_tensor(self.means_init, "means_init", (k, d))
        if self.precisions_init is not None:
            prec = self._user_tensor(self.precisions_init, "precisions_init", self._cov_shape(d))
            out["prec_chol"] = precision_cholesky_from_precisions(prec, self.covariance_type)
        return out

    def _cov_shape(self, d: int) -> tuple[int, ...]:
        k = self.n_components
        return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
            self.covariance_type
        ]

    _stored_specs_exact = True

    def _stored_specs(self, d: int) -> dict[str, Stored]:
        """A model file's tensors: weights on the simplex, finite means (and the fit's centre
        and the means relative to it), and precision Cholesky factors of positive diagonal
        (upper triangular for full/tied, positive standard-deviation inverses otherwise)."""
        k = self.n_components
        chol = "precision_cholesky" if self.covariance_type in ("full", "tied") else "positive"
        return {
            **super()._stored_specs(d),
            "weights": Stored((k,), "simplex"),
            "means": Stored((k, d)),
            "prec_chol": Stored(self._cov_shape(d), chol),
            "shift": Stored((d,), required=False),
            "delta": Stored((k, d), required=False),
        }

    def _restore_params(self, tensors: dict, extra: dict) -> None:
        """A model file's tensors, whose redundant ones agree: the means are the fit's centre
        plus the means relative to it (``shift`` + ``delta``), which the densities use."""
        shift, delta = tensors.get("shift"), tensors.get("delta")
        if (shift is None) != (delta is None):
            has, lacks = ("shift", "delta") if delta is None else ("delta", "shift")
            raise ModelFileError(
                f"the model file holds the tensor {has!r} but not {lacks!r}; a fit stores both "
                "or neither. The file was altered or is damaged"
            )
        if shift is not None:
            means = tensors["means"].double()
            rebuilt = shift.double() + delta.double()
            # a fit stores means = shift + delta rounded once to its dtype
            eps = torch.finfo(tensors["means"].dtype).eps
            tol = 8 * eps * (shift.double().abs() + delta.double().abs() + means.abs())
            off = (means - rebuilt).abs() > tol
            if bool(off.any()):
                i, j = (int(v) for v in off.nonzero()[0])
                raise ModelFileError(
                    f"the tensor 'means' disagrees with 'shift' + 'delta' (component {i}, "
                    f"feature {j}: {float(means[i, j]):.6g} against "
                    f"{float(rebuilt[i, j]):.6g}); a fit stores means = shift + delta. The file "
                    "was altered or is damaged"
                )
        super()._restore_params(tensors, extra)

    def _set_params_tensors(self, params: dict) -> None:
        params = {k: v.detach() for k, v in params.items()}
        self._params = params
        pc = params["prec_chol"]
        ct = self.covariance_type
        self.weights_ = params["weights"].cpu().numpy()
        self.means_ = params["means"].cpu().numpy()
        self.precisions_cholesky_ = pc.cpu().numpy()
        self.precisions_ = precisions_from_cholesky(pc, ct).cpu().numpy()
        self.covariances_ = covariances_from_precisions(pc, ct).cpu().numpy()
        # what the attributes were set to, to find the user's edits (see _params)
        self._published = {name: getattr(self, name).copy() for name in PUBLIC}
        self._fitted_settings = (ct, int(params["weights"].shape[0]))

    # ------------------------------------------------------------------ fitted attributes
    @property
    def _params(self) -> dict:
        """The fitted tensors. As the HMMs read their public attributes, an edit to
        ``weights_``, ``means_``, ``covariances_``, ``precisions_`` or
        ``precisions_cholesky_`` (scikit-learn users set ``means_`` and predict) is taken up
        here, checked (ParameterError naming the attribute), and the other attributes follow
        it; a change of ``covariance_type`` or ``n_components`` since the fit is refused."""
        fitted = fitted_params(self)
        self._check_fitted_settings()
        published = vars(self).get("_published", {})
        edited = [
            n for n in PUBLIC if n in published and is_edited(vars(self).get(n), published[n])
        ]
        if edited:
            self._set_params_tensors(params_from_attributes(self, fitted, edited))
        return fitted_params(self)  # as edited, in the model's dtype

    @_params.setter
    def _params(self, params: dict) -> None:
        vars(self)["_fitted_params"] = params

    def _check_fitted_settings(self) -> None:
        ct, k = vars(self).get("_fitted_settings", (self.covariance_type, self.n_components))
        for name, now, then in (
            ("covariance_type", self.covariance_type, ct),
            ("n_components", self.n_components, k),
        ):
            if now != then:
                raise ParameterError(
                    f"{name} was set to {now!r} after the fit, whose parameters have "
                    f"{name} = {then!r}: fit again (warm_start=False starts afresh; a warm "
                    f"start continues from the fitted parameters), or set {name} back to "
                    f"{then!r}"
                )

    # ------------------------------------------------------------------ inference
    def _log_joint(self, X: torch.Tensor) -> torch.Tensor:
        """log π_k + log N(x_n | μ_k, Σ_k): (n, k), marginal over NaN coordinates."""
        p = self._params
        shift = _shift_of(p)
        if has_missing(X):
            ct = self.covariance_type
            cov = covariances_from_precisions(p["prec_chol"], ct)
            mc = _centred_means(p, shift)
            lp = log_gaussian_prob_missing(X - shift, mc, cov, ct)  # (n, k)
            far = far_components(mc, p["prec_chol"], ct)
            if len(far):  # too far from the shift for that form: from x − μ_k (as the E-step)
                cov_far = cov if ct == "tied" else cov[far]
                lp[:, far] = direct_missing_log_prob(X, p["means"][far], cov_far, ct)
            return lp + p["weights"].log()
        ct = self.covariance_type
        if direct_is_faster(X.shape[1], p["means"].shape[0], ct):  # as the E-step: from x − μ_k
            return direct_log_prob(X, p["means"], p["prec_chol"], ct) + p["weights"].log()
        # as the E-step computes them: log π_k + W_k · T(x − c) + b_k, one product per chunk of
        # rows (4-5x faster than the (n, k·d) Mahalanobis form for the whole of X at once)
        W, b = natural_parameters(_centred_means(p, shift), p["prec_chol"], self.covariance_type)
        b = (b + p["weights"].log()).unsqueeze(1)  # (k, 1)
        out = torch.empty(W.shape[0], X.shape[0], dtype=X.dtype, device=X.device)  # (k, n)
        rows = self._chunk_rows(X.shape[1])
        for i in range(0, X.shape[0], rows):
            G = gaussian_features(X[i : i + rows] - shift, self.covariance_type)  # (m, r)
            torch.addmm(b, W, G, out=out[:, i : i + rows])
        mc = _centred_means(p, shift)
        far = far_components(mc, p["prec_chol"], self.covariance_type)
        if len(far):  # too far from the shift for that form: from x − μ_k (as the E-step)
            pc = far_factors(p["prec_chol"], far, self.covariance_type)
            lp = direct_log_prob(X, p["means"][far], pc, self.covariance_type)
            out[far] = lp.T + p["weights"].log()[far].unsqueeze(1)
        # (n, k) in memory order: reductions over components on the transposed view are slow
        return out.T.contiguous()

    _weighted_log_prob = _log_joint  # scikit-learn's name
    _log_joint_chunks = _log_joint  # it works through chunks of rows itself

    def _sample_component(self, params, k, count, gen):
        means = params["means"]
        z = torch.randn(
            count, means.shape[1], generator=gen, dtype=means.dtype, device=means.device
        )
        P = params["prec_chol"]
        if self.covariance_type in ("full", "tied"):
            # Σ = P⁻ᵀ P⁻¹ (P upper, see gaussian.precision_cholesky): rows z P⁻¹ have covariance
            # Σ. Solved with the fitted factor itself: the covariance recomputed from it can
            # lose positive definiteness in float32 (eigenvalue -8.5e-7 on a component of
            # three points in three dimensions), and its Cholesky factor then fails.
            P = P[k] if self.covariance_type == "full" else P
            return means[k] + torch.linalg.solve_triangular(P, z, upper=True, left=False)
        cov = covariances_from_precisions(P, self.covariance_type)
        return means[k] + z * cov[k].sqrt()  # diag (d,) or spherical scalar standard deviations

    # ------------------------------------------------------------------ model selection
    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return n_covariance_parameters(self.covariance_type, k, d) + k * d + k - 1


class _GMMHooks:
    """The EM hooks of a GaussianMixture: pure functions of (params, batch)."""

    def __init__(self, model: GaussianMixture, cache_features: bool = False, direct: bool = True):
        self.model = model
        self.ct = model.covariance_type
        # components too far from the shift for the affine E-step are computed from x − μ_k
        # and their moments taken about μ_k (em.gaussian.far_components); stepwise EM keeps
        # all of its statistics about the shift (it moves them with recenter)
        self.direct = direct
        self._far_key = None
        # T(x − shift) of in-memory chunks, kept across iterations: the shift is fixed for a fit,
        # so the features never change and the E-step is two matrix products per chunk.
        self._features: dict | None = {} if cache_features else None
        self._natural_key = None

    def initialize(self, data, generator):
        return self.model._initial_params(data, generator)

    def estep(self, params, batch):
        X, w, *rest = batch  # (X, w) or (X, w, labels)
        labels = rest[0] if rest else None
        shift = _shift_of(params)
        args = (X, w, params["weights"].log(), params["means"], params["prec_chol"], self.ct, shift)
        if self.model.missing == "marginalize" and has_missing(X):
            if labels is not None:
                raise ParameterError("labels and missing values cannot be combined yet")
            return gaussian_missing_estep_stats(
                *args, delta=_centred_means(params, shift), direct=self._far(params, shift)
            )
        return gaussian_estep_stats(
            *args,
            features=self._cached_features(X, shift),
            natural=self._natural(params, shift),
            labels=labels,
            direct=self._far(params, shift),
        )

    def _far(self, params, shift):
        """(indices, means) of the components the E-step computes directly, or None;
        found once per set of parameters (the M-step asks again with the same ones)."""
        if not self.direct:
            return None
        key = (params["means"], params["prec_chol"], shift)
        if self._far_key is None or any(
            a is not b for a, b in zip(key, self._far_key, strict=True)
        ):
            self._far_key = key
            centred = _centred_means(params, shift)
            k, d = centred.shape
            if direct_is_faster(d, k, self.ct):  # every component, without features
                idx = torch.arange(k, device=centred.device)
            else:
                idx = far_components(centred, params["prec_chol"], self.ct)
            self._far_value = (idx, params["means"][idx]) if len(idx) else None
        return self._far_value

    def _natural(self, params, shift):
        """Natural parameters of ``params``, computed once per E-step rather than per chunk."""
        key = (params["means"], params["prec_chol"], shift)
        if self._natural_key is None or any(
            a is not b for a, b in zip(key, self._natural_key, strict=True)
        ):
            self._natural_key = key
            self._natural_value = natural_parameters(
                _centred_means(params, shift), params["prec_chol"], self.ct
            )
        return self._natural_value

    def _cached_features(self, X, shift):
        if self._features is None:
            return None
        if self._features.get("shift") is not shift:
            self._features = {"shift": shift}
        key = (X.data_ptr(), X.shape[0])
        if key not in self._features:
            self._features[key] = gaussian_features(X - shift, self.ct)
        return self._features[key]

    def mstep(self, params, stats):
        shift = _shift_of(params)
        S0 = stats["S0"]
        # unused: less mass than the rounding of the total (exactly zero in float64)
        empty = (
            S0 <= 10 * torch.finfo(S0.dtype).eps * S0.sum()
            if S0.dtype != torch.float64
            else S0 <= 0
        )
        stats = {k: v.double() for k, v in stats.items()}
        zero = torch.zeros_like(shift, dtype=torch.float64)
        weights, step, cov = gaussian_mstep(stats, zero, self.model.reg_covar, self.ct)
        delta = step.clone()  # (k, d) μ_k − c
        own = self._about_own_means(params, shift)
        if own is not None:  # their moments were about their own means
            delta[own[0]] += own[1]
        means = shift.double() + delta  # (k, d)
        far = self._far(params, shift)
        if far is not None:
            # moments about the stored μ_k themselves: the new mean is μ_k + step, kept
            # absolute. Through μ_k − c it would round to the spacing of c (rows near 2.4
            # with one row at 1e17 fitted a mean of 2.5: c is 1.7e15, spaced by 0.25)
            means[far[0]] = far[1].double() + step[far[0]]
            delta[far[0]] = means[far[0]] - shift.double()
        if bool(empty.any()):
            # Documented recovery: an unused component keeps its mean and covariance.
            delta[empty] = _centred_means(params, shift).double()[empty]
            means[empty] = params["means"].double()[empty]
            old_cov = covariances_from_precisions(params["prec_chol"].double(), self.ct)
            if self.ct != "tied":
                cov[empty] = old_cov[empty]
        dt = params["means"].dtype
        new = {
            "weights": weights.to(dt),
            "means": means.to(dt),
            "prec_chol": precision_cholesky(cov, self.ct).to(dt),
        }
        if "shift" in params:
            new["shift"] = params["shift"]
            new["delta"] = delta.to(dt)
        return new

    def _about_own_means(self, params, shift):
        """(indices, μ_k − c in float64) of the components whose statistics the E-step took
        about their own means μ_k, or None."""
        far = self._far(params, shift)
        return None if far is None else (far[0], far[1].double() - shift.double())

    def lower_bound(self, params, stats):
        return float(stats["loglik"].double() / stats["weight"].double())

    def decrease_slack(self, params):
        """reg_covar makes the M-step a near-maximiser: adding ε·I to Σ_k changes the expected
        log-likelihood by about ½ ε tr(Λ_k), so the bound may dip by up to ε Σ_k π_k tr(Λ_k)."""
        reg = self.model.reg_covar
        if reg == 0:
            return 0.0
        prec = precisions_from_cholesky(params["prec_chol"], self.ct)
        if self.ct in ("full", "tied"):
            tr = prec.diagonal(dim1=-2, dim2=-1).sum(-1)
        else:
            tr = prec.sum(-1) if self.ct == "diag" else prec * params["means"].shape[1]
        return float(reg * (params["weights"] * tr).sum()) if tr.dim() else float(reg * tr)

    def recenter(self, stats, old, new):
        """Statistics around the shift of ``old`` moved to that of ``new`` (online EM)."""
        delta = _shift_of(old) - _shift_of(new)
        return translate_moment_stats(stats, delta, self.ct)


class _OnlineGMMHooks(_GMMHooks):
    """Stepwise EM's hooks: every component's statistics are about its own mean μ_k.

    The running average mixes statistics of many E-steps, so they must share their centres;
    about the fit's shift c, a component far from it (a cluster of sd 1e-3 at 1e8) keeps no
    digit of its variance (~eps ‖μ_k − c‖² / σ_k² of it is rounding). The E-step computes as
    the batch one does (far components directly), then moves the others' moments from c to
    μ_k, which costs them nothing (they are near c by definition); recenter moves every
    component's moments from its old mean to its new one, a step of the order of σ_k.
    """

    def __init__(self, model: GaussianMixture):
        super().__init__(model, direct=True)

    def estep(self, params, batch):
        stats = super().estep(params, batch)
        shift = _shift_of(params)
        delta = -_centred_means(params, shift).to(stats["S1"].dtype)  # (k, d): c − μ_k
        far = self._far(params, shift)
        if far is not None:
            delta[far[0]] = 0  # already about μ_k
        return translate_moment_stats(stats, delta, self.ct)

    def recenter(self, stats, old, new):
        """Statistics about the means of ``old`` moved to the means of ``new``."""
        c_old, c_new = _shift_of(old), _shift_of(new)
        d_old, d_new = _centred_means(old, c_old).double(), _centred_means(new, c_new).double()
        m_old, m_new = old["means"].double(), new["means"].double()
        step = c_old.double() - c_new.double()
        # (k, d): μ_k(old) − μ_k(new) from the smaller of the two forms, each exact to the
        # rounding of what it differences: the means relative to c keep the digits of
        # components near c (float32 data at 1e7), the absolute ones those of components
        # far from it (the M-step keeps those absolute)
        absolute = m_old.abs() + m_new.abs() < d_old.abs() + d_new.abs() + step.abs()
        delta = torch.where(absolute, m_old - m_new, step + d_old - d_new)
        return translate_moment_stats(stats, delta.to(stats["S1"].dtype), self.ct)

    def _about_own_means(self, params, shift):
        k = params["weights"].shape[0]
        return torch.arange(k, device=shift.device), _centred_means(params, shift).double()
