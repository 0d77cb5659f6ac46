"""Hidden Markov model with Gaussian emissions (hmmlearn's interface), and the helpers the
continuous-emission HMMs share (GMMHMM, in :mod:`latentfit.em.hmm.gmmhmm`, and the
autoregressive and variational models)."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import torch

from latentfit._validation import as_float_tensor
from latentfit.em.flat_columns import warn_constant_columns, warn_dependent_columns
from latentfit.em.gaussian import (
    COVARIANCE_TYPES,
    DegenerateComponentError,
    PassOverflowCheck,
    check_overflow,
    check_variance_floor,
    degenerate_components,
    describe_degenerate,
    describe_unresolved,
    direct_log_prob,
    direct_moments,
    far_components,
    far_factors,
    mixture_covariance,
    unresolved_variances,
    weighted_mean,
)
from latentfit.em.hmm import base as hmm_base
from latentfit.em.hmm import emissions as E
from latentfit.em.hmm.base import BaseHMM
from latentfit.em.hmm.online import OnlineHMMMixin
from latentfit.em.hmm.settings import Prior
from latentfit.em.hmm.stored import covariance_stored
from latentfit.em.initialize import kmeans
from latentfit.em.missing import (
    direct_missing_log_prob,
    gaussian_missing_hmm_stats,
    has_missing,
    impute_mean,
    log_gaussian_prob_missing,
)
from latentfit.em.online import translate_moment_stats
from latentfit.em.sources.chunks import is_source
from latentfit.errors import DataError, DegenerateComponentWarning, ParameterError, user_stacklevel
from latentfit.io import Stored, serializable

__all__ = ["GaussianHMM"]


def _check_covariance_type(covariance_type):
    if covariance_type not in COVARIANCE_TYPES:
        raise ParameterError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}"
        )


def _scatter(stats: dict, covariance_type: str) -> torch.Tensor:
    """Each state's variance as the data give it, before priors (diag/spherical (k, d), full
    (k, d, d)), from the statistics about the shift; empty for tied."""
    post = stats["post"].clamp_min(torch.finfo(stats["post"].dtype).tiny)
    m = stats["obs"] / post.unsqueeze(1)  # (k, d) mean − shift
    if covariance_type in ("diag", "spherical"):
        return (stats["obs2"] / post.unsqueeze(1) - m.square()).clamp_min(0)
    if covariance_type == "full":
        return stats["obsobs"] / post.reshape(-1, 1, 1) - m.unsqueeze(2) * m.unsqueeze(1)
    return stats["obsobs"].new_zeros(0)


def _lift_singular(cov: torch.Tensor, covariance_type: str, min_covar: float) -> torch.Tensor:
    """Covariances with ``min_covar`` in place of a zero variance (diag, spherical) or added
    to a matrix that is not positive definite (full, tied): hmmlearn's update has no floor, so
    a GMMHMM mixture component on identical values (constant data, duplicates, a single row)
    would leave a singular covariance and the next E-step could not run; and a GaussianHMM's
    near-singular float64 update rounded to float32 can lose its positive definiteness."""
    if covariance_type in ("diag", "spherical"):
        # below 1e-12 of the largest variance a variance is rounding, not data (3e-20 on
        # constant data)
        tiny = 1e-12 * float(cov.max().clamp_min(0))
        return torch.where(cov > tiny, cov, torch.full_like(cov, min_covar))
    # singular in the model's dtype: an eigenvalue within its epsilon of the largest (a
    # Cholesky factor of such a float32 matrix may still succeed, and its inverse is noise)
    d = cov.shape[-1]
    cov = (cov + cov.mT) / 2  # the update's rounding leaves it asymmetric by ~eps (float32)
    lam = torch.linalg.eigvalsh(cov.double())  # (..., d), ascending
    limit = torch.finfo(cov.dtype).eps * d * lam[..., -1].clamp_min(0)
    bad = (lam[..., 0] <= limit).reshape(*lam.shape[:-1], 1, 1)
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    # min_covar is lost in the rounding of a matrix whose largest eigenvalue is past
    # min_covar / eps (a first iteration's broad covariance of rows near 0 and 1e8, rank one
    # in float64): the lift is at least ten times that rounding
    lift = (10 * limit).clamp_min(min_covar).to(cov.dtype)  # (...,)
    return torch.where(bad, cov + lift[..., None, None] * eye, cov)


def _data_cov(X: torch.Tensor, min_covar: float) -> torch.Tensor:
    """The data covariance (d, d) plus ``min_covar``, about the float64-accumulated mean (the
    deviations of data far from the origin keep their digits; constant columns give 0)."""
    n, d = X.shape
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    if n < 2:
        return min_covar * eye
    Xc = X - weighted_mean(X)  # (n, d)
    cv = (Xc.T @ Xc) / (n - 1)
    return torch.nan_to_num(cv) + min_covar * eye


def _lift_lost(cv: torch.Tensor, X: torch.Tensor, min_covar: float) -> torch.Tensor:
    """A matrix ``cv`` (d, d) of the covariance's scale estimated from the rows X (n, d) (the
    data covariance that starts a full or tied fit; a VariationalGaussianHMM's Wishart scale
    update), lifted as a singular update is (:func:`_lift_singular`) where its rounding loses
    a direction the rows do spread along: 1000 rows of two regimes at 0 and (1e8, 1e8) with
    unit noise have a data covariance of entries 2.5e15, whose smallest eigenvalue (1, along
    (1, -1)) and min_covar are lost in their rounding (-3.25 computed), and the first E-step
    refused it as a collapsed state. A direction along which the rows' own spread (measured
    from the rows, without that rounding) is no more than the rounding of the rows is a real
    degeneracy (two rows of three features, columns x and x + 1e8): ``cv`` then stays as it
    is, for the E-step to refuse by name. The rows' rounding is each row's own: 59 rows near
    2.4 and one at (1e17, 1e17) spread along (1, -1) by about 1, far below the rounding of
    the far row (22), and a spread measured against the largest row's rounding left that
    start unlifted (refused as collapsed)."""
    lifted = _lift_singular(cv, "tied", min_covar)
    if torch.equal(lifted, cv):
        return cv
    d = cv.shape[-1]
    eps = torch.finfo(cv.dtype).eps
    lam, V = torch.linalg.eigh(cv.double())  # ascending
    lost = V[:, lam <= eps * d * lam[-1].clamp_min(0)]  # (d, l): the directions lost
    Xd = X.double()
    p = Xd @ lost  # (n, l): the rows along them, uncentred (a centre adds its own rounding)
    r = 10 * d * eps * Xd.abs().amax(1, keepdim=True)  # (n, 1): each row's rounding there
    # the rows spread along a direction where two of them differ by more than their
    # rounding: p_i ± r_i do not all share a point (intervals that meet pairwise share one)
    spread = (p - r).amax(0) > (p + r).amin(0)  # (l,)
    return lifted if bool(spread.all()) else cv


class _ContinuousHMM(BaseHMM):
    #: a density of 0 is an underflow far from every state, not an answer score may give
    _exact_zeros = False

    def _allow_nan(self) -> bool:
        return False

    @property
    def _stream_check(self):
        """A source's blocks: a fresh check of the moments of every whole pass, as
        ``_validate_X`` checks an array's (block by block, 3e18 among small values in float32
        passed and surfaced as a state's variance lost in rounding, or fitted)."""
        return PassOverflowCheck()

    def _check_batch(self, X):
        check_overflow(X)  # a batch's moments, as fit checks the data's

    #: whether min_covar floors every M-step's covariances (AutoregressiveHMM), not only the
    #: start's and a singular update's (hmmlearn's GaussianHMM, whose update has covars_prior)
    _min_covar_floors_every_mstep = False

    def _warn_constant_columns(self, X):
        warn_constant_columns(X, None, type(self).__name__, "states")
        # (the autoregressive noise covariance is full)
        warn_dependent_columns(
            X, None, type(self).__name__, getattr(self, "covariance_type", "full")
        )

    def _check_floor(self, X):
        if hasattr(self, "min_covar"):  # the start's covariances: the data's + min_covar
            # min_covar enters the start and the lift of a singular matrix, not every
            # M-step (hmmlearn's update has covars_prior instead): a floor above the
            # column's whole variance swamps it (X * 1e-80), one of 10% does not (a
            # column of sd 0.1 with the default 1e-3)
            name = type(self).__name__
            effect = None if self._min_covar_floors_every_mstep else (
                "every state starts with min_covar's variance there, not the data's: the states "
                "start alike, and EM may not tell them apart (one state fitting every cluster, "
                "the others left unvisited)"
            )  # fmt: skip
            check_variance_floor(
                X, None, self.min_covar, "min_covar", name, fraction=1.0, effect=effect
            )

    def _why_impossible(self, params, X, i: int) -> str:
        """A density is never 0: it underflowed, far from every state."""
        top = float(X[i].double().abs().nan_to_num(nan=0.0).max())
        return (
            "its density underflows to 0 under every state (largest |value| in the row: "
            f"{top:.3g}): it lies too far from every state's emissions. Check the row, or "
            "rescale the data and fit again"
        )

    def _validate_X(self, X, *, fitting: bool) -> torch.Tensor:
        X = as_float_tensor(X, dtype=self._dtype, device=self._device, allow_nan=self._allow_nan())
        if fitting:
            # k-means needs a row per state; means set by hand and kept (init_params without
            # 'm') fit any number of rows, as in hmmlearn
            kmeans = "m" in self.init_params or not self._is_set("means_")
            if kmeans and X.shape[0] < self.n_components:
                raise DataError(
                    f"X has {X.shape[0]} rows, fewer than n_components={self.n_components}: "
                    "k-means needs a row per state to start the means from; pass more rows, "
                    "a smaller n_components, or set means_ by hand and leave 'm' out of "
                    "init_params"
                )
            self.n_features = X.shape[1]
            check_overflow(X)
            self._check_floor(X)
        elif X.shape[1] != self.n_features:
            raise DataError(
                f"X has {X.shape[1]} features but the model was fitted with {self.n_features}"
            )
        return X

    # ---------------------------------------------------------------- degenerate emissions
    def _store_result(self, result, *, restarts: bool = True):
        super()._store_result(result, restarts=restarts)
        # a collapse is the covariance update's: covariances kept as set ('c' not in params)
        # are the user's, whatever rows a state takes, and are never called one
        found = self._find_degenerate(result.params) if "c" in self.params else {}
        self.degenerate_components_ = sorted(found)
        self._degenerate_found = found

    def _find_degenerate(self, params) -> dict:
        """The emissions (states, or a state's mixture components) collapsed onto (near-)
        identical values in the final M-step's ``params``: {which: feature or None}."""
        return {}

    def _after_fit(self, fit, result, X, lengths=None, y=None, **options) -> None:
        """After Baum-Welch, ``degenerate_components_`` lists the emissions whose fitted
        variance ('c' in ``params``) collapsed onto (near-)identical values (a
        :class:`~latentfit.errors.DegenerateComponentWarning` names them and, when the data
        is in memory, their rows)."""
        found = self.__dict__.pop("_degenerate_found", {})
        if found:
            rows = None if is_source(X) else self._degenerate_rows(found, X, lengths, y)
            warnings.warn(
                self._describe_degenerate(found, rows),
                DegenerateComponentWarning,
                stacklevel=user_stacklevel(),
            )

    def _degenerate_rows(self, found, X, lengths, y) -> dict:
        """The rows decoded in each state of ``found``."""
        state = self.predict(X, lengths, y=y)
        return {k: np.flatnonzero(state == k).tolist() for k in found}

    def _describe_degenerate(self, found, rows) -> str:
        floor = "covars_prior/min_covar"
        return describe_degenerate(type(self).__name__, found, rows, floor, "state")


def _normal_prior_specs(model, d: int | None) -> dict[str, Prior]:
    """GaussianHMM's emission priors (hmmlearn's): normal means of any sign (k, d) with a
    weight >= 0 per state, and an inverse-gamma scale >= 0 of the variances (diag,
    spherical; (k, d)) or an inverse-Wishart scale matrix (full (k, d, d), tied (d, d)) with
    a weight of any sign (its meaning depends on the covariance type)."""
    k, ct = model.n_components, model.covariance_type
    known = d is not None and ct in COVARIANCE_TYPES
    matrix = ct in ("full", "tied")
    cov = {"spherical": (k, d), "diag": (k, d), "full": (k, d, d), "tied": (d, d)}.get(ct)
    weight = {"spherical": (k, d), "diag": (k, d), "full": (k, 1, 1), "tied": (d, d)}.get(ct)
    return {
        "means_prior": Prior("any", ((k, d),) if known else None, "the states' prior means"),
        "means_weight": Prior(
            "nonnegative", ((k,), (k, 1)), "the prior means' weight, one per state"
        ),
        "covars_prior": Prior(
            "matrix" if matrix else "nonnegative",
            (cov,) if known else None,
            "the inverse-Wishart prior's scale matrix"
            if matrix
            else "the inverse-gamma prior's scale of every variance",
        ),
        "covars_weight": Prior(
            "any", (weight,) if known else None, "the covariance prior's weight"
        ),
    }


def translate_hmm_stats(stats: dict, delta: torch.Tensor, covariance_type: str) -> dict:
    """A Gaussian HMM's emission statistics (``post``, ``obs`` and ``obs2`` or ``obsobs``, as
    the batch E-step gives them, or Cappé's running ones with a last axis (e,) of end states)
    moved from each state's centre to that centre minus ``delta`` (k, d):
    :func:`~latentfit.em.online.translate_moment_stats` under the HMM's names."""
    second = "obs2" if covariance_type in ("diag", "spherical") else "obsobs"
    post, obs, S2 = stats["post"], stats["obs"], stats[second]
    delta = delta.to(obs.dtype)

    def move(s0, s1, s2):
        out = translate_moment_stats({"S0": s0, "S1": s1, "S2": s2}, delta, covariance_type)
        return out["S1"], out["S2"]

    if post.dim() == 1:
        obs, S2 = move(post, obs, S2)
    else:  # one end state at a time
        moved = [move(post[:, e], obs[..., e], S2[..., e]) for e in range(post.shape[1])]
        obs, S2 = (torch.stack(m, -1) for m in zip(*moved, strict=True))
    return {**stats, "obs": obs, second: S2}


def _check_positive_definite(covars: torch.Tensor, covariance_type: str) -> None:
    """Covariances given by hand (``covars_``) must be finite and positive definite: said
    as a ParameterError naming the state, not found later as a collapse in the fit."""
    if not bool(torch.isfinite(covars).all()):
        raise ParameterError("covars_ must hold finite numbers (it holds NaN or inf)")
    if covariance_type in ("full", "tied"):
        mats = covars if covariance_type == "full" else covars.unsqueeze(0)
        bad = (torch.linalg.cholesky_ex(mats).info != 0).nonzero().flatten().tolist()
        if bad:
            which = "the tied covariance" if covariance_type == "tied" else f"state {bad[0]}"
            raise ParameterError(
                f"covars_: {which} is not positive definite (symmetric with positive "
                "eigenvalues); give a valid covariance matrix or let fit initialise it "
                "(init_params with 'c')"
            )
    elif bool((covars <= 0).any()):
        k = int((covars <= 0).nonzero()[0][0])
        raise ParameterError(f"covars_: state {k} has a variance <= 0; variances must be positive")


@serializable
class GaussianHMM(OnlineHMMMixin, _ContinuousHMM):
    """Hidden Markov model with Gaussian emissions, fitted by Baum-Welch (Rabiner 1989).

    Parameters and attributes are hmmlearn's ``GaussianHMM``: ``covars_`` reads as full
    (k, d, d) matrices and is stored compactly by ``covariance_type`` (spherical (k,), diag
    (k, d), full (k, d, d), tied (d, d)); priors ``means_prior``/``means_weight`` (normal) and
    ``covars_prior``/``covars_weight`` (inverse gamma / inverse Wishart) give MAP-EM with
    hmmlearn's update formulas. In addition: ``n_init`` restarts, ``device``, ``dtype``, and the
    fitted ``lower_bounds_`` (log-likelihood at every iteration), ``converged_``, ``n_iter_``.

    Initialisation (letters in ``init_params``): startprob uniform, transmat rows
    Dirichlet(1), means by k-means, covariances from the data covariance plus ``min_covar``.

    ``missing``: ``"error"`` (default) refuses NaN in X, naming its row and column;
    ``"marginalize"`` treats NaN entries as missing at random and fits, scores and decodes
    exactly: a step's emission likelihood is the marginal density of its observed coordinates
    and the M-step uses their conditional moments (Ghahramani & Jordan 1994;
    :mod:`latentfit.em.missing`). Initialisation then starts from column-mean imputation.
    """

    _emission_letters = "mc"
    _emission_attributes = ("means_", "_covars_")

    def __init__(
        self,
        n_components=1,
        covariance_type="diag",
        min_covar=1e-3,
        startprob_prior=1.0,
        transmat_prior=1.0,
        means_prior=0,
        means_weight=0,
        covars_prior=1e-2,
        covars_weight=1,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stmc",
        init_params="stmc",
        implementation="log",
        n_init=1,
        device=None,
        dtype="float64",
        missing="error",
    ):
        self._set_arguments(locals())

    @property
    def covars_(self):
        """Covariance matrices (k, d, d), whatever the covariance type."""
        c = torch.as_tensor(self._covars_)
        return E.fill_covars(c, self.covariance_type, self.n_components, self.n_features).numpy()

    @covars_.setter
    def covars_(self, covars):
        covars = np.array(covars, dtype=float, copy=True)
        k = self.n_components
        if self.covariance_type == "spherical" and covars.ndim == 2 and covars.shape[0] == k:
            covars = covars.mean(1)  # hmmlearn also stores spherical variances tiled (k, d)
        self._covars_ = covars

    def _check_parameters(self):
        super()._check_parameters()
        _check_covariance_type(self.covariance_type)
        if self.missing not in ("error", "marginalize"):
            raise ParameterError(f"missing must be 'error' or 'marginalize', got {self.missing!r}")

    def _prior_specs(self, d):
        return {**super()._prior_specs(d), **_normal_prior_specs(self, d)}

    def _allow_nan(self) -> bool:
        return self.missing == "marginalize"

    def _emission_params(self):
        d = getattr(self, "n_features", np.shape(self.means_)[-1])
        return {"means": self._checked_means(d), "covars": self._checked_covars(d)}

    def _checked_means(self, d: int) -> torch.Tensor:
        """``means_`` (k, d) as a tensor, checked."""
        means, k = self._tensor(self.means_), self.n_components
        if means.shape != (k, d):
            raise ParameterError(f"means_ must have shape ({k}, {d}), got {tuple(means.shape)}")
        if not bool(torch.isfinite(means).all()):
            raise ParameterError("means_ must hold finite numbers (it holds NaN or inf)")
        return means

    def _checked_covars(self, d: int) -> torch.Tensor:
        """The covariances of ``covariance_type`` as a tensor, checked; on their own, so that
        covars_ set by hand start a fit whose means k-means initialises (init_params with 'm'
        and not 'c', as in hmmlearn)."""
        _check_covariance_type(self.covariance_type)
        covars, k = self._tensor(self._covars_), self.n_components
        shape = {"spherical": (k,), "diag": (k, d), "full": (k, d, d), "tied": (d, d)}
        if covars.shape != shape[self.covariance_type]:
            raise ParameterError(
                f"{self.covariance_type!r} covars must have shape "
                f"{shape[self.covariance_type]}, got {tuple(covars.shape)}"
            )
        _check_positive_definite(covars, self.covariance_type)
        return covars

    def _init_emissions(self, X, gen):
        k, ct = self.n_components, self.covariance_type
        if self._allow_nan():  # validated X is complete otherwise: no scan for NaN
            X = impute_mean(X)  # k-means and the data covariance need complete rows
        out = {}
        if self._needs_init("m", "means_"):
            w = torch.ones(X.shape[0], dtype=X.dtype, device=X.device)
            out["means"], _ = kmeans(X, k, w, gen)
        else:
            out["means"] = self._checked_means(X.shape[1])
        if self._needs_init("c", "covars_"):
            cv = _data_cov(X, self.min_covar)
            if ct in ("full", "tied"):  # positive definite in the dtype (see _lift_lost)
                cv = _lift_lost(cv, X, self.min_covar)
            out["covars"] = {
                "spherical": cv.diagonal().mean().expand(k),
                "diag": cv.diagonal().expand(k, -1),
                "full": cv.expand(k, -1, -1),
                "tied": cv,
            }[ct].clone()
        else:
            out["covars"] = self._checked_covars(X.shape[1])
        # The centre of the statistics for the whole fit: the data mean keeps their precision
        # and, fixed, lets the features of the data be computed once (see _emission_features).
        out["shift"] = weighted_mean(X)
        # μ − c, kept through the fit: in float32 the absolute means of data far from the
        # origin round to the spacing of the offset (1.0 at 1e7), their differences do not
        out["delta"] = out["means"] - out["shift"]
        return out

    def _online_centre(self, params):
        """A fitted model's statistics for ``partial_fit`` are taken about its mean of means,
        fixed from then on (as ``fit`` fixes the data mean, see ``_init_emissions``)."""
        shift = params["means"].mean(0)
        return {**params, "shift": shift, "delta": params["means"] - shift}

    def _online_emission_stats(self, params, X, W):
        """Online statistics (see :mod:`latentfit.em.hmm.online`), every state's moments about
        its own mean μ_k, as stepwise EM keeps them (Cappé's running averages mix the steps
        of many M-steps; about one centre c, a state far from it keeps no digit of its
        variance): ``post`` (k, e), ``obs`` (k, d, e) and ``obs2`` (k, d, e) / ``obsobs``
        ((k, d, d, e) full, (d, d, e) tied, pooled) for the weights W (n, k, e). Missing
        coordinates take one E-step per end state (their moments depend on the state)."""
        ct, shift = self.covariance_type, params["shift"]
        if self._has_missing(X):  # the batch form (far states about μ_k, the others about c)
            stats = self._online_emission_stats_each(params, X, W)
            return translate_hmm_stats(stats, -self._near_offsets(params), ct)
        far = self._far_states(params)
        far = set() if far is None else set(far[0].tolist())
        Xc = X - shift  # (n, d)
        _, k_states, e = W.shape  # (n, k, e)
        d = X.shape[1]
        obs, second = [], []
        for k in range(k_states):
            # far states from x − μ_k (exact near μ_k), the others from (x − c) − (μ_k − c)
            diff = X - params["means"][k] if k in far else Xc - params["delta"][k]  # (n, d)
            w = W[:, k]  # (n, e)
            obs.append(w.T @ diff)  # (e, d)
            if ct in ("diag", "spherical"):
                second.append(w.T @ diff.square())  # (e, d)
            else:
                outer = (w.unsqueeze(2) * diff.unsqueeze(1)).flatten(1).T @ diff  # (e·d, d)
                second.append(outer.view(e, d, d))
        second = torch.stack(second).movedim(1, -1)  # (k, d, e) or (k, d, d, e)
        return {
            "post": W.sum(0),  # (k, e)
            "obs": torch.stack(obs).movedim(1, -1),  # (k, d, e)
            ("obs2" if ct in ("diag", "spherical") else "obsobs"): (
                second.sum(0) if ct == "tied" else second
            ),
        }

    def _near_offsets(self, params) -> torch.Tensor:
        """μ_k − c (k, d) of the states whose batch statistics are about the centre c, 0 for
        those about their own means (:meth:`_direct_stats`)."""
        delta = params["delta"].clone()
        far = self._direct_stats(params)
        if far is not None:
            delta[far[0]] = 0
        return delta

    def _online_mstep_stats(self, params, stats):
        """The averaged statistics (about every state's own mean) in the form of the batch
        E-step, which the M-step takes: the states not far from c moved to it."""
        return translate_hmm_stats(stats, self._near_offsets(params), self.covariance_type)

    def _online_moved(self, rho: dict, old: dict, new: dict) -> dict:
        """The running statistics about the means of ``old`` moved to those of ``new``: a
        step of the order of each state's spread, which costs them no digit."""
        delta = old["delta"] - new["delta"]  # (k, d) μ_k(old) − μ_k(new), c fixed
        return translate_hmm_stats(rho, delta, self.covariance_type)

    def _init_emissions_from_labels(self, params, X, labels, gen):
        """The means of the labelled rows of every state (Seeded k-means of Basu, Banerjee &
        Mooney 2002, without Lloyd iterations: the seeds are the states' own rows) in place of
        the k-means centres, when ``init_params`` asks for means; the covariances keep their
        data-covariance start (a few labelled rows would give a degenerate one)."""
        if not self._needs_init("m", "means_"):
            return {}
        resp = self._labelled_states(labels)  # (n, k)
        if self._allow_nan():
            X = impute_mean(X)
        delta = (resp.T @ (X - params["shift"])) / resp.sum(0).unsqueeze(1)  # (k, d)
        return {"means": params["shift"] + delta, "delta": delta}

    def _is_set(self, name):
        return hasattr(self, "_covars_") if name == "covars_" else super()._is_set(name)

    def _has_missing(self, X) -> bool:
        return self._allow_nan() and has_missing(X)

    def _emission_features(self, params, X):
        """``[(x − c)², x − c]`` about the fit's fixed shift c, shared by the densities and the
        statistics of every iteration (diagonal and spherical covariances, complete data,
        within :data:`~latentfit.em.hmm.base.FEATURE_BYTES`); None otherwise."""
        if self.covariance_type not in ("diag", "spherical") or "shift" not in params:
            return None
        if 2 * X.numel() * X.element_size() > hmm_base.FEATURE_BYTES or self._has_missing(X):
            return None
        return E.quadratic_features(X, params["shift"])

    def _emission_log_likelihood(self, params, X, features=None):
        means, covars, ct = params["means"], params["covars"], self.covariance_type
        shift, delta = params.get("shift"), params.get("delta")  # set during a fit
        if self._has_missing(X):  # marginal density of the observed coordinates
            c = means.mean(0) if shift is None else shift  # centred, for precision
            mc = means - c if delta is None else delta
            ll = log_gaussian_prob_missing(X - c, mc, covars, ct)
            far = self._far_states(params)
            if far is not None:  # too far from the centre for that form: from x − μ_k
                idx, centres, _ = far
                cov_far = covars if ct == "tied" else covars[idx]
                ll[:, idx] = direct_missing_log_prob(X, centres, cov_far, ct)
            return ll
        if features is not None:
            ll = E.gaussian_log_likelihood(
                X, means, covars, ct, shift=shift, features=features, delta=delta
            )
        else:
            ll = E.gaussian_log_likelihood(X, means, covars, ct, shift=shift, delta=delta)
        far = self._far_states(params)
        if far is not None:  # too far from the centre for that form: from x − μ_k
            idx, centres, pc = far
            ll[:, idx] = direct_log_prob(X, centres, pc, ct)
        return ll

    def _far_states(self, params):
        """(indices (f,), their means μ_k (f, d), their precision factors) of the states
        whose densities the affine form about the centre c cannot resolve
        (:func:`~latentfit.em.gaussian.far_components`: a cluster of sd 0.01 a hundred from
        the others in float32), or None. A tied covariance is pooled over the states: all
        of them or none."""
        ct = self.covariance_type
        means = params["means"]
        shift, delta = params.get("shift"), params.get("delta")
        c = means.mean(0) if shift is None else shift
        centred = means - c if delta is None or shift is None else delta
        pc = E._state_precision(params["covars"], ct)
        idx = far_components(centred, pc, ct)
        return (idx, means[idx], far_factors(pc, idx, ct)) if len(idx) else None

    def _direct_stats(self, params):
        """The :meth:`_far_states` whose statistics a fit (batch or stepwise) takes about
        their own means (and its M-step adds back), with missing values or without."""
        if "shift" not in params:
            return None
        return self._far_states(params)

    def _emission_rows(self, params, X):
        ct = self.covariance_type
        if ct not in ("diag", "spherical") or self._allow_nan() or self._far_states(params):
            return super()._emission_rows(params, X)
        means, covars = params["means"], params["covars"]
        terms = E.diag_gaussian_terms(means, covars, ct)
        return lambda a, b: E.gaussian_log_likelihood(X[a:b], means, covars, ct, terms=terms)

    def _emission_stats(self, params, X, gamma, features=None):
        means, covars, ct = params["means"], params["covars"], self.covariance_type
        shift = params["shift"] if "shift" in params else means.mean(0)
        if self._has_missing(X):  # conditional moments of the missing coordinates
            delta = params.get("delta") if "shift" in params else None
            far = self._direct_stats(params)
            direct = None if far is None else far[:2]
            return gaussian_missing_hmm_stats(X, gamma, shift, means, covars, ct, delta, direct)
        stats = E.gaussian_stats(X, gamma, shift, ct, features)
        far = self._direct_stats(params)
        if far is not None:  # about their own means (the M-step adds them back)
            idx, centres, _ = far
            S1, S2 = direct_moments(X, gamma[:, idx].T, centres, ct)
            stats["obs"][idx] = S1
            if ct == "tied":  # pooled over all the states, each about its own mean
                stats["obsobs"] = S2
            else:
                stats["obs2" if ct != "full" else "obsobs"][idx] = S2
        return stats

    def _emission_mstep(self, params, stats):
        dt = params["means"].dtype
        st = {k: v.double() for k, v in stats.items()}
        shift = (params["shift"] if "shift" in params else params["means"].mean(0)).double()
        unresolved = None
        if "c" in self.params:
            unresolved = self._check_resolved(st, torch.finfo(stats["obs"].dtype).eps, params)
        old = params["means"].double()
        centres = shift  # (d,), or (k, d) where some states' statistics are about their means
        far = self._direct_stats(params)
        if far is not None:
            centres = shift.expand_as(old).clone()
            centres[far[0]] = far[1].double()
        old_c = old - centres  # (k, d) the means about their centres
        if "delta" in params:  # the precise centred means (see _init_emissions)
            old_c = params["delta"].double() - (centres - shift)
        means_c, covars, empty = E.gaussian_emission_mstep(
            st,
            centres,
            old_c,
            params["covars"].double(),
            self.covariance_type,
            **self._gaussian_priors(),
            update_means="m" in self.params,
            update_covars="c" in self.params,
        )
        if unresolved is not None:
            covars = self._lift_unresolved(covars, unresolved)
        covars = covars.to(dt)
        if self.covariance_type in ("full", "tied"):  # positive definite in the model's dtype
            covars = _lift_singular(covars, self.covariance_type, self.min_covar)
        means = centres + means_c
        new = {"means": means.to(dt), "covars": covars}
        if "delta" in params:  # from the means about their centres, not about the origin
            new["delta"] = ((centres - shift) + means_c).to(dt)
        new["scatter"], new["post"] = _scatter(st, self.covariance_type), st["post"]
        if "c" in self.params and self.covariance_type in ("full", "tied"):
            eps = torch.finfo(stats["obs"].dtype).eps
            new["rounding"] = E.covariance_rounding(st, covars, self.covariance_type, eps)
        return new, empty

    def _check_resolved(self, st: dict, eps: float, params: dict):
        """The states whose variance update is lost to rounding about the shift
        (:func:`~latentfit.em.gaussian.unresolved_variances`), as (mask (k, d), rounding
        (k, d)): in a batch fit the M-step sets such a variance to that rounding, an upper
        bound, and the next E-step takes the state's statistics about its own mean
        (:meth:`_direct_stats`; the broad starting covariances hide it from the first), as
        it does for a state about its own mean that moved by more than that rounding. Where
        that cannot help (a state about its own mean that stayed, or a model without a fit's
        centre) a DegenerateComponentError names the state rather than fit noise. None when
        every variance is resolved."""
        post = st["post"].clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)  # (k, 1)
        delta = st["obs"] / post  # (k, d)
        if "obs2" in st:
            second = st["obs2"] / post
        elif st["obsobs"].dim() == 3:
            second = st["obsobs"].diagonal(dim1=-2, dim2=-1) / post
        else:  # tied: pooled over the states, as its update is
            total = post.sum()
            second = (st["obsobs"].diagonal() / total).unsqueeze(0)  # (1, d)
            delta = ((post * delta.square()).sum(0) / total).sqrt().unsqueeze(0)  # (1, d)
        bad = unresolved_variances(second, delta, self.min_covar, eps)
        if not bool(bad.any()):
            return None
        noise = 100 * eps * second
        direct = self._direct_stats(params)
        done = set() if direct is None else set(direct[0].tolist())
        states = set(bad.any(1).nonzero().flatten().tolist())
        stuck = states & done
        if second.shape[0] > 1:
            # a state about its own mean whose mean moved by more than the rounding: its
            # moments were about the old mean, the next E-step takes them about the new one
            # (a row at 3e17 beside rows near 2.4: the far state's mean moved 2.2e5 in one
            # step, and its variance was refused as lost)
            moved = (delta.square() > noise).any(1)  # (k,)
            stuck = {k for k in stuck if not bool(moved[k])}
        if "shift" in params and not stuck:
            return bad, noise
        k, j = (int(i) for i in bad.nonzero()[0])
        if second.shape[0] == 1:  # tied: name the state farthest from the centre
            k = int((st["obs"] / post)[:, j].abs().argmax())
        dist = float((st["obs"][k, j] / post[k, 0]).abs())
        rounding = float(noise[min(k, second.shape[0] - 1), j])
        name = type(self).__name__
        raise DegenerateComponentError(
            describe_unresolved(name, "state", k, j, dist, rounding, "min_covar", eps > 1e-10)
        )

    def _lift_unresolved(self, covars: torch.Tensor, unresolved) -> torch.Tensor:
        """Covariances with each unresolved variance (see :meth:`_check_resolved`) raised to
        its rounding: an upper bound the next iteration replaces by the state's own moments.
        Full covariances of such states keep their diagonal alone (their off-diagonal terms
        were lost as well)."""
        bad, noise = unresolved
        noise = noise.to(covars.dtype)
        ct = self.covariance_type
        if ct == "diag":
            return torch.where(bad, torch.maximum(covars, noise), covars)
        if ct == "tied":  # one pooled matrix: bad and noise are (1, d)
            return torch.diag_embed(torch.maximum(covars.diagonal(), noise[0]))
        rows = bad.any(1)  # (k,)
        if ct == "spherical":
            return torch.where(rows, torch.maximum(covars, noise.amax(1)), covars)
        lifted = torch.diag_embed(torch.maximum(covars.diagonal(dim1=-2, dim2=-1), noise))
        return torch.where(rows.reshape(-1, 1, 1), lifted, covars)

    def _emission_log_prior(self, params):
        """The normal and inverse-gamma / inverse-Wishart priors whose MAP the M-step computes
        (:func:`~latentfit.em.hmm.emissions.gaussian_log_prior`; constant in a parameter it
        does not fit), hmmlearn's defaults included. The M-step is that MAP but where it lifts
        a covariance: ``min_covar`` added to a full or tied update singular in the model's
        dtype, a variance lost to rounding raised to that rounding. Either happens only where
        a state collapses onto (nearly) identical rows, whose log posterior has no maximum, or
        where offsets exceed the dtype's digits: a fall of the log posterior there is the
        degenerate component or numerical problem that the driver's warning names, and it is
        not excused (the full and tied updates' own rounding is, by ``decrease_slack``)."""
        if "m" not in self.params and "c" not in self.params:
            return 0.0
        return E.gaussian_log_prior(
            params["means"].double(),
            params["covars"].double(),
            self.covariance_type,
            **self._gaussian_priors(),
        )

    def _gaussian_priors(self) -> dict:
        """The means' and covariances' prior settings, as the M-step and its log prior take
        them."""
        return {
            "means_prior": self.means_prior,
            "means_weight": self.means_weight,
            "covars_prior": self.covars_prior,
            "covars_weight": self.covars_weight,
        }

    def _set_emission_attributes(self, params):
        self.means_ = params["means"].cpu().numpy()
        self._covars_ = params["covars"].cpu().numpy()
        self.n_features = self.means_.shape[1]

    def _find_degenerate(self, params) -> dict:
        """The states whose variance collapsed: their scatter as the data give it against
        the data's (:func:`~latentfit.em.gaussian.degenerate_components`)."""
        ct = self.covariance_type
        if "scatter" not in params or ct == "tied":
            return {}
        post = params["post"].double()
        scatter = params["scatter"].double()
        delta = params["means"].double() - params["means"].double().mean(0)
        if "delta" in params:
            delta = params["delta"].double()
        if ct == "spherical":
            scatter = scatter.mean(1)
        data_cov = mixture_covariance(post, delta, scatter, ct)
        floor = float(np.max(self.covars_prior)) + self.min_covar
        return degenerate_components(scatter, ct, data_cov, floor)

    def _emission_specs(self, k, d):
        """Finite means (k, d) and the covariances of ``covariance_type``: variances > 0, or
        symmetric positive-definite matrices."""
        return {
            "means_": Stored(None if d is None else (k, d)),
            "_covars_": covariance_stored(self.covariance_type, k, d),
        }

    def _set_state(self, tensors, extra):
        super()._set_state(tensors, extra)
        self.n_features = self.means_.shape[1]

    def _emission_n_params(self):
        k, d = self.n_components, self.n_features
        cov = {
            "spherical": k,
            "diag": k * d,
            "full": k * d * (d + 1) // 2,
            "tied": d * (d + 1) // 2,
        }[self.covariance_type]
        return {"m": k * d, "c": cov}

    def _sample_emissions(self, params, states, gen):
        means = params["means"].double().cpu()
        full = E.fill_covars(
            params["covars"].double().cpu(), self.covariance_type, self.n_components, means.shape[1]
        )
        # a square root by eigenvalues, clipped at 0: a fitted covariance that is positive
        # semi-definite only up to rounding (float32, a near-degenerate state) still samples
        lam, vec = torch.linalg.eigh(full)  # (k, d), (k, d, d)
        L = vec * lam.clamp(min=0).sqrt().unsqueeze(-2)  # L L^T = the covariance
        z = torch.randn(len(states), means.shape[1], generator=gen, dtype=torch.float64)
        return E.gaussian_sample(means, L, states, z)


# GMMHMM lived in this module until it moved to gmmhmm.py; it is kept importable from here so
# that models pickled before the move (which name ``latentfit.em.hmm.gaussian.GMMHMM``) still
# load, and old ``from latentfit.em.hmm.gaussian import GMMHMM`` lines keep working. gmmhmm.py
# imports this module, so the class is looked up lazily, on first access, by module name.
def __getattr__(name: str):
    if name == "GMMHMM":
        return importlib.import_module("latentfit.em.hmm.gmmhmm").GMMHMM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
