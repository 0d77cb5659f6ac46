"""Factor analysis and probabilistic PCA fitted by EM, with exact handling of missing values.

Model (Rubin & Thayer 1982; Tipping & Bishop 1999; Bishop 2006 §12.2):

    z ~ N(0, I_q),   x | z ~ N(W z + μ, Ψ),   so   x ~ N(μ, W Wᵀ + Ψ)

with Ψ diagonal (factor analysis) or σ² I (probabilistic PCA). The E-step is the Gaussian
posterior of z given the observed coordinates x_o of each row,

    M = I + W_oᵀ Ψ_o⁻¹ W_o,   E[z | x_o] = M⁻¹ W_oᵀ Ψ_o⁻¹ (x_o − μ_o),   Cov[z | x_o] = M⁻¹,

and the missing coordinates x_m = W_m z + μ_m + ε_m are latent too (Ghahramani & Hinton
1996). The M-step regresses every coordinate on [z, 1] with the expected moments, which
updates W and μ jointly; Ψ_j is the expected residual variance (averaged over j for PPCA).
On complete data M is shared by all rows and the E-step is a few matrix products.
``partial_fit`` averages the rows' (expected) moments instead (:class:`_FactorMomentHooks`).
The E- and M-step are pure tensor functions in factor_math.py; this module holds the
estimators and their EM hooks.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    DensityMixin,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from latentfit._validation import (
    check_missing,
    check_positive_int,
    check_sample_count,
    check_sample_weight,
    check_tol,
    make_generator,
)
from latentfit.em.base import CriteriaMixin, EMEstimator, EMFit, check_scored, mean_score
from latentfit.em.driver import accumulate_stats
from latentfit.em.edited import fitted_params, is_edited
from latentfit.em.factor_math import (
    FactorPosterior,
    factor_estep_stats,
    factor_moment_em,
    factor_mstep,
    factor_posterior,
    floored_noise,
    positive_weight_rows,
    recenter_factor_stats,
    whitened_loadings,
    with_weak_factors_at,
)
from latentfit.em.gaussian import (
    PassOverflowCheck,
    check_overflow,
    check_underflow,
    weighted_mean,
)
from latentfit.em.missing import impute_mean
from latentfit.em.online import OnlineEMMixin, translate_moment_stats
from latentfit.em.rotation import ROTATIONS, orthogonal_rotation
from latentfit.em.sources.tensors import TensorChunks
from latentfit.errors import (
    DataError,
    HeywoodCaseWarning,
    ModelFileError,
    ParameterError,
    user_stacklevel,
)
from latentfit.io import Stored, serializable

__all__ = [
    "PPCA",
    "FactorAnalysis",
    "FactorPosterior",
    "factor_estep_stats",
    "factor_moment_em",
    "factor_posterior",
    "recenter_factor_stats",
]

_PCA_INIT_MAX_FEATURES = 4096  # above this the d × d eigendecomposition costs more than EM
_ONLINE_MOMENTS_MAX_FEATURES = 4096  # partial_fit keeps a d × d moment matrix up to this d


#: The fitted attributes an edit to which is taken up (``_LinearGaussian._params``).
_PUBLIC = ("components_", "mean_", "noise_variance_")


class _LinearGaussian(
    OnlineEMMixin,
    EMEstimator,
    CriteriaMixin,
    DensityMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    BaseEstimator,
):
    _isotropic = False

    def __init__(
        self,
        n_components=None,
        *,
        tol=1e-6,
        max_iter=1000,
        missing="error",
        init="pca",
        rotation=None,
        random_state=None,
        verbose=0,
        device=None,
        dtype="float64",
        chunk_rows=65536,
        learning_decay=0.6,
        learning_offset=0.0,
    ):
        self._set_arguments(locals())

    def _validate_X(self, X, *, reset: bool) -> torch.Tensor:
        check_missing(self.missing)
        return super()._validate_X(X, reset=reset)

    _records_restarts = False

    def _check_parameters(self) -> None:
        check_missing(self.missing)
        if self.n_components is not None:
            check_positive_int(self.n_components, "n_components")
        check_positive_int(self.max_iter, "max_iter", minimum=0)
        check_tol(self.tol)
        if self.init not in ("pca", "random"):
            raise ParameterError(f"init must be 'pca' or 'random', got {self.init!r}")
        if self.rotation is not None and self.rotation not in ROTATIONS:
            raise ParameterError(
                f"rotation must be None, 'varimax' or 'quartimax', got {self.rotation!r}"
            )

    def _rotate(self) -> None:
        """The fitted loadings rotated by ``rotation`` (the likelihood is unchanged)."""
        if self.rotation is not None:
            p = self._params
            W = orthogonal_rotation(p["W"], self.rotation)
            self._set_params_tensors({**p, "W": W})

    def _after_fit(self, fit, result, X, **args) -> None:
        super()._after_fit(fit, result, X, **args)
        self._warn_stalled_factor(fit)
        self._rotate()
        self._warn_floored_noise()

    def _warn_stalled_factor(self, fit) -> None:
        """ConvergenceWarning (and ``converged_`` False) when EM stopped on a plateau of the
        likelihood, not at its maximum: a factor carries almost nothing (its loadings, scaled
        by the noise, below 1e-2) although the likelihood grows with it. Such a factor shrinks
        while the noise variance is above the data's variance along its direction (as from a
        random start at the mean column variance, far above it when the columns differ by
        orders of magnitude), then grows back by a constant factor an iteration, changing the
        log-likelihood by less than ``tol`` until it matters: Tipping & Bishop (1999, §3.2)'s
        saddle points. One EM iteration from such factors set to 1e-3 along their directions
        tells them apart: it grows where the data vary more than the noise across the other
        factors, and stays or shrinks at a maximum (a factor analysis factor of zero, PPCA
        with as many factors as columns). The set value keeps the ratio clear of the rounding
        of a factor of ~1e-15 (PPCA's fourth factor on iris from a random start "grew" 1.07
        times there, where the likelihood is flat)."""
        p = self._params
        weak = int((whitened_loadings(p["W"], p["psi"]) < 1e-2).sum())
        if not weak:
            return
        probe = {**p, "W": with_weak_factors_at(p["W"], p["psi"], 1e-3)}
        stats = (fit.reduce or (lambda s: s))(accumulate_stats(fit.hooks, probe, fit.data))
        step = fit.hooks.mstep(probe, stats)
        # the largest of the weak factors after the iteration (descending singular values)
        growth = float(whitened_loadings(step["W"], step["psi"])[-weak]) / 1e-3
        if growth < 1.01:
            return
        self.converged_ = False
        which, them = ("one", "it") if weak == 1 else (f"{weak}", "them")
        spread = self._variance_spread()
        spread = f" (here {spread})" if spread else ""
        warnings.warn(
            f"{type(self).__name__}: EM stopped on a plateau of the likelihood (a saddle "
            f"point), not at its maximum: {which} of the {self.n_components_} factors "
            f"carr{'ies' if weak == 1 else 'y'} almost no variance (loadings below 1e-2 of the "
            "noise's scale), though the data vary more than the noise where "
            f"{'it points' if weak == 1 else 'they point'}: an iteration makes {them} "
            f"{growth:.3g} times larger, while the log-likelihood changes by less than tol. A "
            "start whose noise variance lies far above the data's variance along a factor "
            "does this: a random start when the columns' variances differ by orders of "
            f"magnitude{spread}"
            # named only where it was given: the command line has no option for it
            + (
                ", or a large noise_variance_init"
                if getattr(self, "noise_variance_init", None) is not None
                else ""
            )
            + ". Use init='pca' (the "
            "closed-form start), or standardise the columns (divide each by its standard "
            "deviation)",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )

    def _warn_floored_noise(self) -> None:
        """HeywoodCaseWarning naming the columns whose noise variance ended at the floor
        (scikit-learn clamps them silently): their fit is the floor's, not the data's. PPCA's
        σ² is resolved only above the dtype's epsilon of the mean column variance
        (:meth:`_floor_of`): beside one row at 9e8 among values ~2.4 the closed form's 0.7549
        is below it, and the warning names the far column and says to standardise."""
        p = self._params
        floor = self._floor
        explained, constant = floored_noise(p["W"], p["psi"], floor)
        if not bool(explained.any() or constant.any()):
            return
        name = type(self).__name__
        fraction = _floor_fraction(p["psi"].dtype)
        var = self._min_noise / fraction  # (d,): each column's variance (its floor's)
        small = floor > 1e-6 * var  # (d,): the columns whose variance the floor is not small in
        if self._isotropic and bool(small.any()):
            big = int(var.argmax())
            text = (
                f"{name}: the noise variance ended at its floor {float(floor[0]):.3g}, "
                f"{torch.finfo(p['psi'].dtype).eps:.3g} (the dtype's epsilon) of the mean "
                f"column variance (a Heywood case), which {self._columns(var == var[big])} "
                f"sets with a variance of {float(var[big]):.3g}; {self._columns(small)} "
                f"{'varies' if int(small.sum()) == 1 else 'vary'} less than a million times "
                "that floor, so one noise variance for every column "
                "cannot be theirs: the noise variance and the likelihood are the floor's, not "
                "the data's. Standardise the columns (divide each by its standard deviation, "
                "dropping a constant one), or use FactorAnalysis, which gives each column its "
                "own noise variance"
            )
        elif self._isotropic:
            text = (
                f"{name}: the noise variance ended at its floor {float(floor[0]):.3g} (a "
                f"Heywood case): the {self.n_components_} factors explain every column "
                "entirely (the rows lie in a subspace of that many dimensions), so the noise "
                "variance and the likelihood are the floor's, not the data's. Consider fewer "
                "factors (n_components)"
            )
        else:
            parts = []
            if bool(explained.any()):
                them = "it" if int(explained.sum()) == 1 else "them"
                parts.append(
                    f"{self._columns(explained)}: the factors explain {them} entirely (as when "
                    "a column is an exact linear function of others), so the noise variance "
                    "and the likelihood are the floor's, not the data's. Consider fewer "
                    "factors (n_components), or dropping one column of each exact linear "
                    "relation"
                )
            if bool(constant.any()):
                one = int(constant.sum()) == 1
                parts.append(
                    f"{self._columns(constant)}, which {'is' if one else 'are'} constant (no "
                    f"variance to factor): drop {'it' if one else 'them'}"
                )
            text = (
                f"{name}: the noise variance ended at its floor ({fraction:.3g} of the "
                f"column's own variance, a Heywood case) for {'; and for '.join(parts)}"
            )
        warnings.warn(text, HeywoodCaseWarning, stacklevel=user_stacklevel())

    @property
    def _floor(self) -> torch.Tensor:
        """The floor (d,) the fit clamps Ψ at: each column's own (``_min_noise``, set by the
        fit from its data); PPCA's single σ² has one, their mean."""
        return self._floor_of(self._min_noise.to(dtype=self._dtype, device=self._device))

    def _floor_of(self, floor: torch.Tensor) -> torch.Tensor:
        if not self._isotropic:
            return floor  # (d,)
        # σ²'s: the dtype's epsilon of the mean column variance. M = I + Wᵀ W / σ² (entries up
        # to d times that variance over σ²) stays factorable down to it, and the M-step's σ²,
        # taken from the residuals, resolves it: 1e-12 of the mean variance put σ² above the
        # noise of every column next to one far row (53.7 for 0.7549 beside 1e8).
        # The bound this sets: one row at 9e8 among values ~2.4 puts the floor at 0.967, above
        # the closed form's 0.7549 (which the singular values of the centred rows keep to 1e-15
        # up to 1e17, and EM from a lower floor to 1e-15 at 1e9), and PPCA ends there with the
        # warning to standardise. No lower floor: on rows on a line EM's σ² ends at its own
        # rounding, 1e-3 to 0.7 of this floor; at eps of the smallest column variance 10 of 48
        # float64 fits stopped above it without a word and 23 lowered their bound
        # (EMMonotonicityWarning)
        eps = torch.finfo(self._dtype).eps
        kept = floor.mean() * (eps / _floor_fraction(self._dtype))
        return kept.clamp_min(torch.finfo(self._dtype).tiny).expand_as(floor)

    def _variance_spread(self) -> str:
        """'from 0.12 in column 0 to 4.5e+297 in column 2': the columns' least and greatest
        variances (those the fit started from), where they differ by more than 1e6; else ''."""
        floor = getattr(self, "_min_noise", None)
        if floor is None or floor.numel() < 2:
            return ""
        var = floor / _floor_fraction(floor.dtype)  # (d,): the columns' variances
        lo, hi = var.min(), var.max()
        if not bool(hi > 1e6 * lo):
            return ""
        return (
            f"from {float(lo):.3g} in {self._columns(var == lo)} to {float(hi):.3g} in "
            f"{self._columns(var == hi)}"
        )

    def _columns(self, mask: torch.Tensor) -> str:
        """'column(s) 0, 3' (their names, when fit was given them) of the columns in mask."""
        index = mask.nonzero().flatten().tolist()
        names = getattr(self, "feature_names_in_", None)
        words = [f"{j} ({names[j]!r})" if names is not None else str(j) for j in index]
        return ("column " if len(index) == 1 else "columns ") + ", ".join(words)

    def partial_fit(self, X, y=None, sample_weight=None):
        super().partial_fit(X, y=y, sample_weight=sample_weight)
        self._rotate()
        self._warn_floored_noise()  # as fit does: a noise variance at its floor is not the data's
        return self

    def _initial_noise(self, d: int, dtype, device) -> torch.Tensor | None:
        """The noise variances (d,) the fit starts from when the user gives them."""
        return None

    def _n_factors(self, d: int) -> int:
        q = d if self.n_components is None else self.n_components
        if q > d:
            raise ParameterError(f"n_components={q} must be at most n_features={d}")
        return q

    def _hooks(self) -> _FactorHooks:
        return _FactorHooks(self)

    def _prepare_source_fit(self, source, y=None, sample_weight=None) -> EMFit:
        self._n_factors(source.n_features)
        self.n_features_in_ = source.n_features

        def init_data(sample):  # the noise floor comes from the rows the fit starts from
            _check_weighted_rows(
                self, sample.weights, "the rows a data source gives to initialise from"
            )  # as fit(X, sample_weight)
            self._min_noise = _noise_floor(sample.X, sample.weights)
            return sample

        # the moments of a whole pass, as fit checks the data's
        check = PassOverflowCheck(then=check_underflow)
        return self._prepare_source(
            source, sample_weight, self._hooks(), chunk_rows=self.chunk_rows, min_rows=2,
            init_data=init_data, check=check,
        )  # fmt: skip

    def _prepare_fit(self, X, y=None, sample_weight=None) -> EMFit:
        X = self._validate_X(X, reset=True)
        n, d = X.shape
        self._n_factors(d)
        if n < 2:
            raise DataError(
                f"{type(self).__name__} needs at least 2 samples (rows of X), got n_samples={n}: one row "
                "gives no covariance to factor; pass more rows"
            )
        w = check_sample_weight(sample_weight, n, dtype=X.dtype, device=X.device)
        _check_weighted_rows(self, w)
        _check_rows_beyond_factors(self, w, d)
        _check_observed_columns(self, X, w)
        _check_scale(X, w)  # the data's second moments must be representable
        self.n_features_in_ = d
        self._min_noise = _noise_floor(X, w)
        return EMFit(self._hooks(), TensorChunks(X, w, self.chunk_rows), X=X)

    # ------------------------------------------------------------ online EM adapters
    def _online_min_rows(self):
        return 2, "2 samples"

    def _online_init_data(self, X, w):
        _check_weighted_rows(self, w, "the first batch of partial_fit")
        _check_scale(X, w)
        self._min_noise = _noise_floor(X, w)
        return TensorChunks(X, w, self.chunk_rows)

    def _online_batch(self, X, w):
        _check_scale(X, w)  # every batch's moments, as fit checks the data's
        return (X, w)

    #: the noise floor of each column, 1e-12 of its variance (> 0: Ψ must stay invertible);
    #: one number in a file written when the floor was one for all the columns
    _state_fields: ClassVar[dict[str, str]] = {"_min_noise": "positive(s)"}

    def _online_hooks(self) -> _FactorHooks:
        # The moment form keeps a (d, d) matrix: beyond that size, the stepwise EM of the
        # complete-data statistics.
        if self.n_features_in_ > _ONLINE_MOMENTS_MAX_FEATURES:
            return _FactorHooks(self)
        return _FactorMomentHooks(self)

    def _extra_state(self) -> dict:
        return {"_min_noise": self._min_noise.tolist()}

    def _set_state(self, tensors, extra):
        """After the tensors, the noise floor of each column, checked: one the fit could have
        kept. Every fit clamps ψ at it, so a floor above a stored ψ is not the fit's, and a
        later ``partial_fit`` or warm start would lift the noise variance to it."""
        super()._set_state(tensors, extra)
        if "_min_noise" not in extra:  # a file written before the floor was stored
            params = self._params
            self._min_noise = _implied_noise_floor(params["W"], params["psi"])
            return
        # float64 until checked against ψ: a floor beyond float32 is the file's, not a fit's
        floor = torch.as_tensor(extra["_min_noise"], dtype=torch.float64)
        d = self.n_features_in_
        if floor.dim() == 0:  # a file written when the floor was one number for every column
            floor = floor.expand(d).clone()
        if floor.shape != (d,):
            raise ModelFileError(
                f"the model file's noise floor 'extra._min_noise' holds {floor.numel()} "
                f"numbers, but the model has n_features_in_ = {d} columns (one floor each)"
            )
        kept = self._floor_of(floor)  # (d,)
        psi = self._params["psi"].double().cpu()  # (d,)
        above = (kept > psi * (1 + 1e-5)).nonzero().flatten()  # float32 ψ: its rounding
        if len(above):
            j = int(above[0])
            if self._isotropic:  # σ²'s floor is not the file's numbers themselves
                what = (
                    f"'extra._min_noise' (mean {float(floor.mean()):g}) puts the floor of the "
                    f"one noise variance at {float(kept[j]):g}, which is"
                )
            else:
                what = f"'extra._min_noise' = {float(kept[j]):g} is"
            column = "" if self._isotropic else f" of column {j}"
            raise ModelFileError(
                f"the model file's noise floor {what} above its noise variance psi = "
                f"{float(psi[j]):g}{column}; a fit keeps every noise variance at or above the "
                "floor, so the file was not written by a fit"
            )
        self._min_noise = floor.to(dtype=self._dtype, device=self._device)

    _stored_specs_exact = True

    def _stored_specs(self, d: int) -> dict[str, Stored]:
        """A model file's tensors: loadings W (d, q), the mean (d,) and the noise variances
        ψ, which must be positive (the posterior inverts W Wᵀ + diag ψ)."""
        return {
            "W": Stored(None),
            "mu": Stored((d,)),
            "psi": Stored(None, "positive"),
        }

    def _set_params_tensors(self, params: dict) -> None:
        params = {k: v.detach() for k, v in params.items()}
        self._params = params
        self.components_ = params["W"].T.cpu().numpy()  # (q, d), as scikit-learn
        self.mean_ = params["mu"].cpu().numpy()
        psi = params["psi"].cpu().numpy()
        self.noise_variance_ = float(psi[0]) if self._isotropic else psi
        self.n_components_ = self.components_.shape[0]
        # what the attributes were set to, to find the user's edits (see _params)
        self._published = {n: np.array(getattr(self, n), dtype=float) for n in _PUBLIC}

    @property
    def _params(self) -> dict:
        """The fitted tensors. As scikit-learn's FactorAnalysis reads them, an edit to
        ``components_``, ``mean_`` or ``noise_variance_`` is taken up here (transform, score,
        sample), checked: ParameterError naming the attribute."""
        fitted = fitted_params(self)
        published = vars(self).get("_published", {})
        if any(is_edited(vars(self).get(n), published[n]) for n in published):
            self._set_params_tensors(self._from_attributes(fitted))
        return fitted_params(self)  # as edited, in the model's dtype

    @_params.setter
    def _params(self, params: dict) -> None:
        vars(self)["_fitted_params"] = params

    def _from_attributes(self, fitted: dict) -> dict:
        """W, mu, psi from the public attributes as they are now, checked."""
        d, q = fitted["W"].shape
        dt, dev = fitted["W"].dtype, fitted["W"].device

        def given(name, shape):
            value = vars(self).get(name)
            if value is None:
                raise ParameterError(f"{name} was deleted from the fitted model; fit again")
            try:
                return self._user_tensor(value, name, shape, dtype=dt).to(dev)
            except DataError as err:  # NaN/inf, not numbers: a setting, not data
                raise ParameterError(str(err)) from None

        psi = given("noise_variance_", () if self._isotropic else (d,))
        psi = psi.expand(d).clone() if self._isotropic else psi
        if not bool((psi > 0).all()):
            i = int((psi <= 0).nonzero()[0, 0])
            raise ParameterError(
                f"noise_variance_, set after the fit, holds {float(psi[i]):.6g}"
                + ("" if self._isotropic else f" at index {i}")
                + "; noise variances must be > 0 (the posterior inverts W Wᵀ + diag ψ)"
            )
        return {"W": given("components_", (q, d)).T.contiguous(), "mu": given("mean_", (d,)),
                "psi": psi}  # fmt: skip

    def _posterior(self, X) -> FactorPosterior:
        X = self._check(X)  # NotFittedError before fit, before _params is read
        p = self._params
        return factor_posterior(X, p["W"], p["mu"], p["psi"])

    @property
    def _n_features_out(self) -> int:
        """The number of factors, for scikit-learn's ``get_feature_names_out``."""
        return self.n_components_

    def transform(self, X):
        """Posterior mean E[z | x_o] of the latent factors: (n, q). A row whose mean leaves
        the dtype (1e38 in float32) is a DataError naming it, not a row of NaN."""
        X = self._check(X)  # NotFittedError before fit, before _params is read
        p = self._params
        mean = factor_posterior(X, p["W"], p["mu"], p["psi"]).mean  # (n, q)
        check_scored(mean, X, type(self).__name__, "posterior mean")
        return mean.cpu().numpy()

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score_samples(self, X):
        """log p(x_o) of every row (observed coordinates only): (n,)."""
        X = self._check(X)  # NotFittedError before fit, before _params is read
        p = self._params
        loglik = factor_posterior(X, p["W"], p["mu"], p["psi"]).loglik
        check_scored(loglik, X, type(self).__name__)
        return loglik.cpu().numpy()

    def score(self, X, y=None, sample_weight=None):
        """Mean log-likelihood per sample (weighted by ``sample_weight`` when given, as in
        ``fit``)."""
        return mean_score(self.score_samples(X), sample_weight)

    def get_covariance(self):
        """The model covariance W Wᵀ + Ψ: (d, d)."""
        check_is_fitted(self, "_params")
        p = self._params
        return (p["W"] @ p["W"].T + torch.diag(p["psi"])).cpu().numpy()

    def get_precision(self):
        return np.linalg.inv(self.get_covariance())

    def sample(self, n_samples=1):
        """Draw x = W z + μ + ε: (n_samples, d)."""
        check_is_fitted(self, "_params")
        n_samples = check_sample_count(n_samples, 2 * self.n_features_in_)  # x and z (q <= d)
        p = self._params
        gen = make_generator(self.random_state, p["W"].device)
        d, q = p["W"].shape
        z = torch.randn(n_samples, q, generator=gen, dtype=p["W"].dtype, device=p["W"].device)
        eps = torch.randn(n_samples, d, generator=gen, dtype=p["W"].dtype, device=p["W"].device)
        return (z @ p["W"].T + p["mu"] + eps * p["psi"].sqrt()).cpu().numpy()

    def _n_parameters(self) -> int:
        d, q = self._params["W"].shape
        noise = 1 if self._isotropic else d
        return d * q - q * (q - 1) // 2 + d + noise  # W up to rotation, μ, noise


@serializable
class FactorAnalysis(_LinearGaussian):
    """Factor analysis x = W z + μ + ε, ε ~ N(0, diag(ψ)), fitted by EM (Rubin & Thayer 1982).

    scikit-learn's ``FactorAnalysis`` attributes: ``components_`` (q, d) = Wᵀ, ``mean_`` (d,),
    ``noise_variance_`` (d,); plus ``lower_bounds_`` (mean log-likelihood per iteration).
    ``missing="marginalize"`` fits, transforms and scores rows with NaN entries exactly.
    ``init="pca"`` (default) starts from the PPCA closed form of the mean-imputed data,
    ``"random"`` from a random W drawn with ``random_state``; ``noise_variance_init`` (d,)
    replaces the start's noise variances.
    ``rotation="varimax"`` or ``"quartimax"`` rotates the fitted loadings (em/rotation.py), as
    scikit-learn does: the likelihood is unchanged, ``components_`` and ``transform`` are
    rotated.
    ``sample_weight`` weights each row's log-likelihood. ``fit`` also takes a source of
    :mod:`latentfit.em.sources.chunks` (memory-mapped .npy, Parquet, a stream of arrays, a
    :class:`~latentfit.em.sources.distributed.DistributedSource`), read ``chunk_rows`` rows at
    a time on every pass; the start (and the noise floor) then comes from its in-memory
    sample, which is all the data up to ``init_rows`` rows.

    ``svd_method``, ``iterated_power`` and ``copy`` are scikit-learn's settings of its SVD
    algorithm, accepted (and checked) so that its code runs unchanged; EM uses no SVD, and
    never writes to ``X``.
    """

    def __init__(
        self,
        n_components=None,
        *,
        tol=1e-6,
        copy=True,
        max_iter=1000,
        noise_variance_init=None,
        svd_method="randomized",
        iterated_power=3,
        rotation=None,
        missing="error",
        init="pca",
        random_state=None,
        verbose=0,
        device=None,
        dtype="float64",
        chunk_rows=65536,
        learning_decay=0.6,
        learning_offset=0.0,
    ):
        self._set_arguments(locals())

    def _check_parameters(self) -> None:
        super()._check_parameters()
        if self.svd_method not in ("lapack", "randomized"):
            raise ParameterError(
                f"svd_method must be 'lapack' or 'randomized', got {self.svd_method!r}"
            )
        check_positive_int(self.iterated_power, "iterated_power", minimum=0)
        if not isinstance(self.copy, bool | np.bool_):
            raise ParameterError(f"copy must be True or False, got {self.copy!r}")

    def _initial_noise(self, d: int, dtype, device) -> torch.Tensor | None:
        if self.noise_variance_init is None:
            return None
        try:
            psi = self._user_tensor(self.noise_variance_init, "noise_variance_init", (d,), dtype)
        except DataError as err:  # NaN/inf, not numbers: a setting, not data
            raise ParameterError(str(err)) from None
        if not bool((psi > 0).all()):
            i = int((psi <= 0).nonzero()[0, 0])
            raise ParameterError(
                f"noise_variance_init holds {float(psi[i]):.6g} at index {i}; noise variances "
                "must be > 0"
            )
        return psi.to(device)


@serializable
class PPCA(_LinearGaussian):
    """Probabilistic PCA, x = W z + μ + ε with ε ~ N(0, σ² I), by EM (Tipping & Bishop 1999).

    Converges to the closed-form maximum-likelihood solution W = U_q (Λ_q − σ² I)^½ R,
    σ² = mean of the discarded eigenvalues of the sample covariance, up to a rotation R.
    ``noise_variance_`` is the scalar σ²; the rest as :class:`FactorAnalysis`, ``rotation``
    included (``rotation="varimax"`` picks the R whose loadings are easiest to read).
    """

    _isotropic = True


def _check_rows_beyond_factors(model, w: torch.Tensor, d: int) -> None:
    """DataError when the rows (of positive weight), centred, span no more dimensions than
    the factors: the loadings then pass through every row and the noise variances shrink to
    their floor, so the likelihood grows without bound (as for a Gaussian mixture or HMM of no
    fewer parameters than values, and LinearGaussianSSM's refusal)."""
    n, q = int((w > 0).sum()), model._n_factors(d)
    if n > q + 1:
        return
    weighted = " of positive weight" if n < w.shape[0] else ""
    raise DataError(
        f"X has {n} row(s){weighted} of {d} column(s): centred, they span at most {n - 1} "
        f"dimension(s), no more than the n_components={q} factors {type(model).__name__} "
        "estimates: its likelihood grows without bound as the noise variance shrinks to zero "
        f"while the factors pass through every row; give at least {q + 2} rows, or a smaller "
        "n_components"
    )


def _check_weighted_rows(model, w: torch.Tensor, where: str = "X") -> None:
    """DataError unless at least 2 rows have a positive weight: one row (the others weighted
    0) gives no covariance to factor, as a single row does not."""
    n = int((w > 0).sum())
    if n < 2:
        raise DataError(
            f"{type(model).__name__} needs at least 2 samples of positive weight in {where}, "
            f"but sample_weight gives {n}: one row gives no covariance to factor; give more "
            "rows a positive weight"
        )


def _check_observed_columns(model, X: torch.Tensor, w: torch.Tensor) -> None:
    """DataError unless every column is observed (not NaN) in at least 2 rows of positive
    weight: one value of a column gives it no variance or covariance to factor, and its noise
    variance went to the floor, the likelihood growing without bound (as a single row)."""
    seen = (~torch.isnan(X) & (w > 0).unsqueeze(1)).sum(0)  # (d,)
    few = (seen < 2).nonzero().flatten()
    if len(few):
        j = int(few[0])
        rows = (~torch.isnan(X[:, j]) & (w > 0)).nonzero().flatten().tolist()
        where = f" (row {rows[0]})" if rows else ""
        raise DataError(
            f"{type(model).__name__} needs every column observed in at least 2 rows of positive "
            f"weight, but column {j} is observed in {len(rows)}{where}: one value gives it no "
            "variance to factor (its noise variance goes to the floor, the likelihood without "
            "bound). Drop the column or give it more observed rows"
        )


def _noise_floor(X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Smallest noise variance allowed in each column (d,) (as scikit-learn's FactorAnalysis):
    a tiny fraction of that column's variance, so a coordinate explained exactly by the factors
    keeps Ψ invertible. Each column's own: a fraction of the mean variance let one column of
    large variance (a far row) set a floor above the noise of all the others."""
    X = impute_mean(X, w)
    mu = weighted_mean(X, w)  # float64-accumulated: a float32 w @ X drifts far from the origin
    var = (w @ (X - mu).square()) / w.sum()  # (d,)
    # 1e-12 of the variance in float64 (scikit-learn's); in a lower precision its machine
    # epsilon, since W^T Psi^-1 W (of entries up to Σ_j var_j / floor_j) must stay factorable
    # there (at 1e-12 float32's Cholesky failed). A constant column has no variance to take a
    # fraction of: the dtype's smallest normal number keeps Psi invertible (1e-312 is 0 in
    # float32).
    return (_floor_fraction(X.dtype) * var).clamp_min(torch.finfo(X.dtype).tiny)


def _implied_noise_floor(W: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """The noise floor (d,) of a fitted model whose data are gone: :func:`_noise_floor` of the
    column variances the model implies, diag(W Wᵀ + Ψ), which at the maximum-likelihood fit equal
    the data's (FA's diagonal; PPCA's trace). Never above ψ: the fit kept ψ at or above its
    floor, and a floor above it would lift ψ at the next ``partial_fit`` or warm start."""
    var = W.square().sum(1) + psi  # (d,)
    floor = (_floor_fraction(W.dtype) * var).clamp_min(torch.finfo(W.dtype).tiny)
    return torch.minimum(floor, psi)


def _floor_fraction(dtype: torch.dtype) -> float:
    """The fraction of a column's variance below which its noise variance may not go."""
    return 1e-12 if dtype == torch.float64 else torch.finfo(dtype).eps


class _FactorHooks:
    """EM hooks of FactorAnalysis/PPCA: pure functions of (params, batch).

    The statistics are centred on μ and weighted by ``Sw``: stepwise EM finds their weight under
    ``weight_key`` and moves them to a new μ with :meth:`recenter`.
    """

    weight_key = "Sw"

    @property
    def remedy(self) -> str:
        """What the driver (and partial_fit) suggests when the likelihood stops being finite,
        in the arguments these models have (they have no reg_covar)."""
        tail = "" if self.model._dtype == torch.float64 else ", or dtype='float64'"
        spread = self.model._variance_spread()
        spread = f": their variances run {spread}" if spread else ""
        return (
            f"Try scaling the data (standardise the columns{spread}) or fewer factors "
            f"(n_components){tail}."
        )

    def __init__(self, model: _LinearGaussian):
        self.model = model
        self.q = model._n_factors(model.n_features_in_)
        self.isotropic = model._isotropic
        self.init = model.init

    @property
    def min_noise(self) -> torch.Tensor:
        # (d,) Learnt from the data the fit starts from, so read when the hooks run.
        return self.model._floor

    def initialize(self, data, generator):
        X = impute_mean(data.X, data.weights)  # only to start; the fit itself never imputes
        w = data.weights
        # the float64-accumulated data mean: a float32 w @ X drifts by hundreds at 1e7, which
        # then inflates var and the PCA start by its square
        mu = weighted_mean(X, w)  # (d,)
        var = (w @ (X - mu).square()) / w.sum()  # (d,)
        d = X.shape[1]
        if self.init == "pca" and d <= _PCA_INIT_MAX_FEATURES:
            # Tipping & Bishop's closed form on the (mean-imputed) data: the PPCA maximum on
            # complete data, a good start for factor analysis and for data with gaps.
            R = (X - mu) * (w / w.sum()).sqrt().unsqueeze(1)
            lam, U = torch.linalg.eigh(R.T @ R)  # ascending
            lam, U = lam.flip(0).clamp_min(0), U.flip(1)
            s2 = lam[self.q :].mean() if self.q < d else lam.new_tensor(0.0)
            W = U[:, : self.q] * (lam[: self.q] - s2).clamp_min(0).sqrt()
            if self.isotropic:
                psi = s2.expand(d).clone()
            else:
                psi = (var - W.square().sum(1)).clamp_min(1e-3 * var)
        else:
            # A random start: EM then has to find the principal subspace itself.
            W = torch.randn(d, self.q, generator=generator, dtype=X.dtype, device=X.device)
            W = W * (var.sqrt().unsqueeze(1) / math.sqrt(self.q))
            psi = var.mean().expand_as(var).clone() if self.isotropic else var.clone()
        given = self.model._initial_noise(d, X.dtype, X.device)
        psi = psi if given is None else given
        return {"W": W, "mu": mu, "psi": psi.clamp_min(self.min_noise)}

    def estep(self, params, batch):
        X, w = batch
        return factor_estep_stats(X, w, params["W"], params["mu"], params["psi"])

    def mstep(self, params, stats):
        W, mu, psi = factor_mstep(stats, params["W"], params["mu"], self.isotropic, self.min_noise)
        return {"W": W, "mu": mu, "psi": psi}

    def lower_bound(self, params, stats):
        return float(stats["loglik"] / stats["Sw"])

    def recenter(self, stats, old, new):
        """Statistics taken around the prediction of ``old`` moved to that of ``new`` (online
        EM)."""
        return recenter_factor_stats(stats, old["mu"] - new["mu"], old["W"] - new["W"])


class _FactorMomentHooks(_FactorHooks):
    """Stepwise EM of FactorAnalysis/PPCA in the moments of the rows.

    Cappé & Moulines (2009) average the expected complete-data statistics (Σ E[z], Σ x E[z]ᵀ,
    Σ E[z zᵀ], …) of every mini-batch, each taken under the parameters of its own step; the
    M-step then regresses x on [z, 1] with statistics up to many steps stale, and μ and W move
    by one EM iteration's worth per step at most (12 and 22 nats short of the maximum on iris
    after 40 epochs). For complete rows those statistics are linear in the rows' moments
    (Σ w, Σ w x, Σ w x xᵀ), which do not depend on the parameters. So the running average
    here is that of the moments (Cappé & Moulines' recursion on the sufficient statistic of
    the observed data, ρ_t as in :mod:`latentfit.em.online`, taken around μ and moved with
    :func:`~latentfit.em.online.translate_moment_stats`); μ is their running mean, its own
    maximum-likelihood estimate, and W, Ψ make one EM iteration (:func:`factor_moment_em`)
    from the current parameters with the E-step taken afresh on the averaged moments. With
    one batch of all the data the update is exactly one iteration of ``fit``.

    Rows with missing coordinates (``missing="marginalize"``) enter with their expected
    moments given x_o under the current parameters (E[x_m | x_o] = μ_m + W_m E[z | x_o], and
    the conditional covariance W_m Cov[z | x_o] W_mᵀ + Ψ_m): Cappé & Moulines' recursion
    with x_m as the latent data, whose fixed points are those of batch EM.
    """

    weight_key = "S0"

    def estep(self, params, batch):
        X, w = positive_weight_rows(*batch)
        W, mu, psi = params["W"], params["mu"], params["psi"]
        post = factor_posterior(X, W, mu, psi)
        if post.cov.dim() == 2:  # complete rows: the moments need no parameter
            R = X - mu  # (n, d)
            extra = None
        else:
            gap = torch.isnan(X)
            R = torch.where(gap, post.mean @ W.T, X - mu)  # (n, d): E[x − μ | x_o]
            G = gap.to(X.dtype)  # (n, d)
            T = G.unsqueeze(2) * W  # (n, d, q): W_m, zero on observed coordinates
            extra = torch.einsum("n,ndq,nqr,ner->de", w, T, post.cov, T)  # (d, d)
            extra = extra + torch.diag(psi * (w @ G))
        wR = w.unsqueeze(1) * R
        S2 = R.T @ wR if extra is None else R.T @ wR + extra
        return {
            "S0": w.sum().reshape(1),  # (1,): one "component", as the mixtures' moments
            "S1": wR.sum(0, keepdim=True),  # (1, d) = Σ w E[x − μ]
            "S2": S2.unsqueeze(0),  # (1, d, d) = Σ w E[(x − μ)(x − μ)ᵀ]
            "loglik": (w * post.loglik).sum(),
        }

    def mstep(self, params, stats):
        S0 = stats["S0"][0]
        m = stats["S1"][0] / S0  # (d,): running mean − μ
        C = stats["S2"][0] / S0 - torch.outer(m, m)  # (d, d): covariance around the mean
        W, psi = factor_moment_em(C, params["W"], params["psi"], self.isotropic, self.min_noise)
        return {"W": W, "mu": params["mu"] + m, "psi": psi}

    def recenter(self, stats, old, new):
        return translate_moment_stats(stats, old["mu"] - new["mu"], "full")


def _check_scale(X: torch.Tensor, w: torch.Tensor | None = None) -> None:
    """The data's second moments must be representable: neither overflow nor underflow (a
    factor model has no variance floor that would hide the second)."""
    check_overflow(X, w)
    check_underflow(X, w)
