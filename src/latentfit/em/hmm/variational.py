"""Bayesian hidden Markov models fitted by variational inference (VB-EM), hmmlearn's
``hmmlearn.vhmm`` interface.

Dirichlet priors on the start probabilities and on every row of the transition matrix, and a
Normal-Wishart (Gaussian emissions) or Dirichlet (categorical emissions) prior on every state's
emission parameters; the posterior is approximated by the mean-field family q(z) q(θ) (MacKay
1997; Beal 2003, ch. 3; McGrory & Titterington 2009). Each iteration of the EM driver
(:func:`latentfit.em.driver.run_em`) is

* the VB E-step: the forward-backward kernels of :mod:`latentfit.em.hmm.inference.posterior`
  run on the *sub-normalised* parameters exp E[log π], exp E[log A] and the expected emission
  log-densities, which gives q(z) and log Z̃;
* the lower bound F = log Z̃ − KL(q(θ) ‖ p(θ)), from the same parameters (recorded in
  ``lower_bounds_`` / ``monitor_.history``; VB-EM never lowers it);
* the VB M-step: every posterior is its prior plus the expected counts / moments.

The math is in :mod:`latentfit.em.hmm.variational_math`; the updates, the bound and the
parameterisation are hmmlearn 0.3's term by term, so that both libraries give the same numbers
from the same posteriors. Two differences: hmmlearn's Gaussian bound leaves out the constant
−(n_samples · n_features / 2) log 2π of the expected log-densities; latentfit's keeps it, so
that the bound is in nats and lies below the log-evidence log p(X). And with ``params``
without "m" (means kept, covariances updated) the scale update is the optimal q(Λ) given the
kept means (see :func:`~latentfit.em.hmm.variational_math.normal_wishart_update`), where
hmmlearn's formula, exact only for new means, can make the bound fall or NaN.

After ``fit``, ``startprob_``, ``transmat_``, ``means_``/``covars_`` and ``emissionprob_`` are
the posterior-mean point estimates (hmmlearn's), and ``score``, ``score_samples``,
``predict``, ``predict_proba``, ``decode`` and ``sample`` are the ordinary HMM's under them:
``score`` is the log-likelihood at the point estimates, not the bound (``lower_bound_``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from latentfit._validation import check_feature_names
from latentfit.em.base import EMFit
from latentfit.em.gaussian import (
    DegenerateComponentError,
    direct_log_prob,
    direct_moments,
    far_components,
    far_factors,
    unresolved_variances,
    weighted_mean,
)
from latentfit.em.hmm import emissions as E
from latentfit.em.hmm.base import BaseHMM
from latentfit.em.hmm.discrete import CategoricalHMM, _numpy_rng
from latentfit.em.hmm.emissions import (
    categorical_stats,
    gaussian_log_likelihood,
    gaussian_stats,
    with_counts,
)
from latentfit.em.hmm.gaussian import (
    GaussianHMM,
    _check_covariance_type,
    _data_cov,
    _lift_lost,
)
from latentfit.em.hmm.inference import posterior as inference
from latentfit.em.hmm.labels import check_labels
from latentfit.em.hmm.sequences import batch_sequences, check_lengths, with_states
from latentfit.em.hmm.settings import check_values
from latentfit.em.hmm.stored import covariance_stored
from latentfit.em.hmm.variational_math import (
    dirichlet_expected_log,
    expected_gaussian_offset,
    kl_dirichlet,
    kl_normal_wishart,
    normal_wishart_update,
    scale_rounding,
)
from latentfit.em.initialize import kmeans
from latentfit.errors import DataError, ParameterError
from latentfit.io import Stored, serializable

__all__ = ["VariationalCategoricalHMM", "VariationalGaussianHMM"]

_TRANSITION_KEYS = (
    "startprob_prior",
    "startprob_posterior",
    "transmat_prior",
    "transmat_posterior",
)

#: What to try when a state's covariance (scale / dof) is not positive definite, in this
#: model's names: it has no min_covar or covars_prior; scale_prior is added to every
#: state's scatter in the posterior scale, so it bounds the covariances away from 0
VB_REMEDY = (
    "Try a larger scale_prior (the Wishart's inverse scale, added to every state's scatter; "
    "by default 1e-3 x identity), fewer states, scaling the data (e.g. StandardScaler), "
    "float64, or removing constant/duplicated columns."
)


class _VariationalHooks:
    """VB-EM as the EM driver's hooks: the E-step on the sub-normalised parameters, the
    bound log Z̃ − KL, the M-step prior + statistics. ``params`` holds every prior and
    posterior hyperparameter (hmmlearn's attribute names without the trailing underscore)."""

    def __init__(self, model, X, lengths, labels):
        self.model, self.X, self.lengths, self.labels = model, X, lengths, labels

    def initialize(self, data, generator):
        return self.model._initial_posteriors(self.X, self.lengths, generator)

    def estep(self, params, batch):
        X, lengths, *known = batch  # with labels: (X, lengths, states)
        m = self.model
        ll = m._expected_emission_log_likelihood(params, X)  # (t, k)
        post = inference.posterior(
            ll,
            dirichlet_expected_log(params["startprob_posterior"]).exp(),
            dirichlet_expected_log(params["transmat_posterior"]).exp(),
            lengths,
            overwrite=True,
            states=known[0] if known else None,
        )
        return with_counts(m._vb_emission_stats(params, X, post.posteriors), post)

    def mstep(self, params, stats):
        m = self.model
        new = dict(params)
        if "s" in m.params:
            new["startprob_posterior"] = params["startprob_prior"] + stats["start"]
        if "t" in m.params:
            new["transmat_posterior"] = params["transmat_prior"] + stats["trans"]
        new.update(m._vb_emission_mstep(params, stats, self.X))
        return new

    def lower_bound(self, params, stats):
        kl = (
            kl_dirichlet(params["startprob_posterior"], params["startprob_prior"])
            + kl_dirichlet(params["transmat_posterior"], params["transmat_prior"])
            + self.model._emission_kl(params)
        )
        return float(stats["log_likelihood"].sum() - kl)

    def decrease_slack(self, params):
        """How far the bound may fall through the rounding of the M-step's full or tied
        scale update (``params["rounding"]``, see
        :func:`~latentfit.em.hmm.variational_math.scale_rounding`); 0 for the others."""
        rounding = params.get("rounding")
        return 0.0 if rounding is None else float(rounding)


class _VariationalHMM:
    """What the two variational HMMs share: fit by VB-EM, the Dirichlet priors and posteriors
    of the start and transition probabilities, the point estimates and the stored
    attributes. Mixed in before the HMM class whose emissions it borrows."""

    _vb_emission_keys: tuple[str, ...] = ()
    # lower_bound_ is the history's last value; without the history a fitted model's file
    # would load with -inf, the value of a model no VB step has run on
    _required_state_fields: ClassVar[tuple[str, ...]] = ("lower_bounds_",)

    @property
    def _vb_keys(self) -> tuple[str, ...]:
        return _TRANSITION_KEYS + self._vb_emission_keys

    def _prior_specs(self, d):
        """The start and transition priors only: the emissions' priors of the variational
        models are their own (checked with their defaults in ``_prior``)."""
        return BaseHMM._prior_specs(self, d)

    def fit(self, X, lengths=None, y=None):
        """Fit the posteriors by VB-EM (``n_init`` restarts, the one with the highest final
        lower bound kept). ``lengths`` (n_sequences,): rows of every sequence in ``X``.
        ``y`` (n_samples,): known states (−1 where unknown), on which every E-step is then
        conditioned (the bound is then one on log p(X, z_known)). In-memory X only."""
        self._fit(X, lengths=lengths, y=y)
        return self

    def partial_fit(self, X, lengths=None, **options):
        """Not available: online EM (Cappé 2011) updates point estimates, and no online
        variational update of the posteriors is implemented here."""
        raise ParameterError(
            f"{type(self).__name__} has no partial_fit: online EM updates point estimates, not "
            "the variational posteriors; fit it on all the data with fit(), or use "
            f"{type(self).__mro__[2].__name__}.partial_fit for an online maximum-likelihood fit"
        )

    def _prepare_fit(self, X, lengths=None, y=None) -> EMFit:
        check_feature_names(self, X, reset=True)
        X = self._checked_X(X, fitting=True)
        self._warn_constant_columns(X)
        lengths = check_lengths(lengths, X.shape[0])
        labels = check_labels(y, X.shape[0], self.n_components, X.device)
        batches = with_states(batch_sequences(X, lengths), labels)
        return EMFit(_VariationalHooks(self, X, lengths, labels), batches, X=X)

    def _prepare_source_fit(self, source, lengths=None, y=None) -> EMFit:
        raise ParameterError(
            f"{type(self).__name__} fits in-memory arrays only; pass the data as an array "
            "(read the source with numpy.load or pandas first)"
        )

    def _after_fit(self, fit, result, X, **args) -> None:
        """Nothing: a state's posterior falls back to its prior, it cannot collapse (not
        GaussianHMM's search for collapsed variances)."""

    def _store_result(self, result, *, restarts: bool = True) -> None:
        # the HMM record and monitor_; not GaussianHMM's search for collapsed variances: a
        # state's posterior falls back to its prior, it cannot collapse
        BaseHMM._store_result(self, result, restarts=restarts)

    # ------------------------------------------------------------------ priors and starts
    def _prior(
        self, value, name: str, shape, default, *, positive=True, dtype=None
    ) -> torch.Tensor:
        """A prior hyperparameter: ``default`` when None, else a (positive) number or array
        broadcast to ``shape`` (ParameterError naming the argument otherwise)."""
        value = default if value is None else value
        try:
            arr = np.asarray(value, dtype=np.float64)
            arr = np.broadcast_to(arr, shape)
        except (TypeError, ValueError):
            raise ParameterError(
                f"{name} must be a number or an array that broadcasts to shape "
                f"{tuple(shape)}, got {value!r:.80}"
            ) from None
        check_values(arr, name, positive=positive, got=f", got {value!r:.80}")
        return torch.as_tensor(arr.copy(), dtype=dtype or self._dtype, device=self._device)

    def _given(self, attribute: str, shape, *, positive: bool = True, dtype=None) -> torch.Tensor:
        """A posterior set by hand (its letter not in ``init_params``), checked."""
        given = getattr(self, attribute)
        try:
            value = np.asarray(given, dtype=np.float64)
        except (TypeError, ValueError):
            value = None
        if value is None or value.shape != tuple(shape):
            got = f"{given!r:.80}" if value is None else value.shape
            raise ParameterError(
                f"{attribute} must have shape {tuple(shape)}, got {got}; set it with "
                f"that shape or put its letter in init_params"
            )
        check_values(value, attribute, positive=positive)
        return torch.as_tensor(value, dtype=dtype or self._dtype, device=self._device)

    def _initial_transitions(self, lengths, rng) -> dict[str, torch.Tensor]:
        """The Dirichlet priors and starting posteriors of the start and transition
        probabilities: as hmmlearn, pseudo-counts Dirichlet(1/k) · n_sequences (start) and
        Dirichlet(1/k) · n_samples / k (every row) drawn at random, here added to the prior
        (so that no posterior count starts at 0, where E[log p] is −inf)."""
        k = self.n_components
        out = {
            "startprob_prior": self._prior(self.startprob_prior, "startprob_prior", (k,), 1 / k),
            "transmat_prior": self._prior(self.transmat_prior, "transmat_prior", (k, k), 1 / k),
        }
        for letter, key, shape, total in (
            ("s", "startprob", (k,), len(lengths)),
            ("t", "transmat", (k, k), sum(lengths) / k),
        ):
            if self._needs_init(letter, key + "_posterior_"):
                draw = rng.dirichlet(np.full(k, 1.0 / k), size=shape[:-1] or None) * total
                out[key + "_posterior"] = out[key + "_prior"] + torch.as_tensor(draw).to(
                    out[key + "_prior"]
                )
            else:
                out[key + "_posterior"] = self._given(key + "_posterior_", shape)
        return out

    # ------------------------------------------------------------------ fitted attributes
    def _set_params_tensors(self, params: dict[str, torch.Tensor]) -> None:
        params = self._absolute(params)
        for key in self._vb_keys:
            value = params[key].cpu().numpy().copy()  # shares no memory with a point estimate
            setattr(self, key + "_", float(value) if value.ndim == 0 else value)
        sp, tm = params["startprob_posterior"], params["transmat_posterior"]
        point = {"startprob": sp / sp.sum(), "transmat": tm / tm.sum(1, keepdim=True)}
        self._set_attributes({**point, **self._point_emissions(params)})

    def _absolute(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The fit's parameters as the attributes hold them (a model that keeps some about a
        centre during the fit adds it back)."""
        return params

    def _emission_specs(self, k, d):
        """The point estimates' (the HMM's own) and the Dirichlet priors and posteriors of
        the start and transition probabilities: concentrations > 0."""
        return {
            **super()._emission_specs(k, d),
            "startprob_prior_": Stored((k,), "positive"),
            "startprob_posterior_": Stored((k,), "positive"),
            "transmat_prior_": Stored((k, k), "positive"),
            "transmat_posterior_": Stored((k, k), "positive"),
        }

    def _set_state(self, tensors, extra):
        super()._set_state(tensors, extra)
        # no VB step run (n_iter=0): -inf, as the fitted model has it
        self.lower_bound_ = self.lower_bounds_[-1] if self.lower_bounds_ else -math.inf


@serializable
class VariationalGaussianHMM(_VariationalHMM, GaussianHMM):
    """Bayesian Gaussian HMM fitted by variational inference (hmmlearn's
    ``VariationalGaussianHMM``; see the module docstring for the model and the bound).

    Priors (None: hmmlearn's defaults; a number or an array broadcast to the shape):
    ``startprob_prior`` (k,) and ``transmat_prior`` (k, k) Dirichlet concentrations (1/k);
    ``means_prior`` (k, d) (the data mean) and ``beta_prior`` (k,) (1), the mean and precision
    scale of the normal prior on the means; ``dof_prior`` (k,), a number for tied (d), and
    ``scale_prior`` (the Wishart's inverse scale: full (k, d, d), tied (d, d), diag (k, d),
    spherical (k,); 1e-3 · identity). They are stored as ``startprob_prior_`` ... and the
    posteriors as ``startprob_posterior_``, ``transmat_posterior_``, ``means_posterior_``,
    ``beta_posterior_``, ``dof_posterior_``, ``scale_posterior_``; ``means_`` and ``covars_``
    (= scale / dof, compact as GaussianHMM's) are the point estimates.

    Start (letters of ``init_params``; a posterior attribute set by hand is kept when its
    letter is absent): "s"/"t" as hmmlearn, the prior plus random pseudo-counts; "m": k-means
    centres, β = β₀ + the cluster sizes; "c": ν = ν₀ + the cluster sizes (tied: + n_samples)
    and the scale giving the data covariance plus the scale prior's mean variance (1e-3 by
    default) as point estimate. ``n_init``,
    ``device``, ``dtype`` and known states ``y`` are as for :class:`GaussianHMM`.
    """

    _vb_emission_keys = (
        "means_prior",
        "means_posterior",
        "beta_prior",
        "beta_posterior",
        "dof_prior",
        "dof_posterior",
        "scale_prior",
        "scale_posterior",
    )
    _emission_attributes = (
        "means_",
        "_covars_",
        *(key + "_" for key in _TRANSITION_KEYS + _vb_emission_keys),
    )

    def __init__(
        self,
        n_components=1,
        covariance_type="full",
        startprob_prior=None,
        transmat_prior=None,
        means_prior=None,
        beta_prior=None,
        dof_prior=None,
        scale_prior=None,
        algorithm="viterbi",
        random_state=None,
        n_iter=100,
        tol=1e-6,
        verbose=False,
        params="stmc",
        init_params="stmc",
        implementation="log",
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())

    def _check_parameters(self):
        BaseHMM._check_parameters(self)
        _check_covariance_type(self.covariance_type)

    def _allow_nan(self) -> bool:
        return False

    def _scale_shape(self, d: int) -> tuple[int, ...]:
        k = self.n_components
        return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
            self.covariance_type
        ]

    def _dof_shape(self) -> tuple[int, ...]:
        return () if self.covariance_type == "tied" else (self.n_components,)

    def _emission_specs(self, k, d):
        """The normal-Wishart priors and posteriors: finite means (k, d), precision scales
        and degrees of freedom > 0, and Wishart scales of ``covariance_type`` (variances > 0
        or symmetric positive-definite matrices)."""
        means = Stored(None if d is None else (k, d))
        scale = covariance_stored(self.covariance_type, k, d)
        out = {}
        for kind in ("prior", "posterior"):
            out[f"means_{kind}_"] = means
            out[f"beta_{kind}_"] = Stored((k,), "positive")
            out[f"dof_{kind}_"] = Stored(self._dof_shape(), "positive")
            out[f"scale_{kind}_"] = scale
        return {**super()._emission_specs(k, d), **out}

    def _check_scale(self, scale: torch.Tensor, dof: torch.Tensor, name: str, d: int) -> None:
        """A Wishart needs ν > d − 1 and a positive-definite scale (ParameterError)."""
        if bool((dof <= d - 1).any()):
            raise ParameterError(
                f"{name.replace('scale', 'dof')} must exceed n_features - 1 = {d - 1} (a "
                f"Wishart's degrees of freedom), got {dof.cpu().numpy()}"
            )
        if self.covariance_type in ("full", "tied"):
            _, info = torch.linalg.cholesky_ex(scale)
            bad = (info.reshape(-1) != 0).nonzero().flatten().tolist()
            if bad:
                which = "" if self.covariance_type == "tied" else f" (state(s) {bad})"
                raise ParameterError(f"{name} must be symmetric positive definite{which}")
        elif bool((scale <= 0).any()):
            raise ParameterError(f"{name} must be positive (a {self.covariance_type} scale)")

    def _initial_posteriors(self, X, lengths, gen) -> dict[str, torch.Tensor]:
        k, (t, d), ct = self.n_components, X.shape, self.covariance_type
        out = self._initial_transitions(lengths, _numpy_rng(gen))
        # The fit's centre: the statistics and both means are kept about it (float32 keeps
        # the digits of data far from the origin in the differences, not in absolute means).
        shift = weighted_mean(X)  # (d,)
        shift64 = shift.double()
        out["means_prior"] = torch.zeros(k, d, dtype=X.dtype, device=X.device)  # the data mean
        if self.means_prior is not None:
            prior = self._prior(
                self.means_prior, "means_prior", (k, d), None, positive=False, dtype=torch.float64
            )
            out["means_prior"] = (prior - shift64).to(X.dtype)
        out["beta_prior"] = self._prior(self.beta_prior, "beta_prior", (k,), 1.0)
        out["dof_prior"] = self._prior(self.dof_prior, "dof_prior", self._dof_shape(), float(d))
        eye = np.eye(d)
        default = {"full": 1e-3 * eye, "tied": 1e-3 * eye, "diag": 1e-3, "spherical": 1e-3}[ct]
        out["scale_prior"] = self._prior(
            self.scale_prior, "scale_prior", self._scale_shape(d), default, positive=False
        )
        self._check_scale(out["scale_prior"], out["dof_prior"], "scale_prior", d)

        init_m = any(self._needs_init("m", a) for a in ("means_posterior_", "beta_posterior_"))
        init_c = any(self._needs_init("c", a) for a in ("dof_posterior_", "scale_posterior_"))
        counts = None
        if init_m or init_c:
            ones = torch.ones(t, dtype=X.dtype, device=X.device)
            centres, assign = kmeans(X, k, ones, gen)
            counts = torch.bincount(assign, minlength=k).to(X.dtype)  # (k,)
        if init_m:
            out["means_posterior"] = centres - shift
            out["beta_posterior"] = out["beta_prior"] + counts
        else:
            given = self._given("means_posterior_", (k, d), positive=False, dtype=torch.float64)
            out["means_posterior"] = (given - shift64).to(X.dtype)
            out["beta_posterior"] = self._given("beta_posterior_", (k,))
        if init_c:
            dof = out["dof_prior"] + (counts.sum() if ct == "tied" else counts)
            # hmmlearn's start: the data covariance + 1e-3, the default scale_prior's
            # variance; a scale_prior given sets it (its mean variance), in the data's units:
            # a fixed 1e-3 swamped data of spread 1e-4 (a start 1e5 times too broad, whose
            # states never separated) under a scale_prior scaled to them
            sp = out["scale_prior"]
            floor = float((sp.diagonal(dim1=-2, dim2=-1) if ct in ("full", "tied") else sp).mean())
            cv = _data_cov(X, floor)
            if ct in ("full", "tied"):  # positive definite in the dtype (see _lift_lost)
                cv = _lift_lost(cv, X, floor)
            covars = {
                "spherical": cv.diagonal().mean().expand(k),
                "diag": cv.diagonal().expand(k, d),
                "full": cv.expand(k, d, d),
                "tied": cv,
            }[ct]
            out["dof_posterior"] = dof
            out["scale_posterior"] = covars * _dof_as(dof, ct)
            if ct in ("full", "tied") and int(torch.linalg.cholesky_ex(cv).info) != 0:
                raise DataError(
                    "the start of the states' covariances, the data covariance plus the scale "
                    f"prior's mean variance ({floor:.3g}), is not positive definite: columns "
                    "of X are constant or combinations of others. " + VB_REMEDY
                )
        else:
            out["dof_posterior"] = self._given("dof_posterior_", self._dof_shape())
            out["scale_posterior"] = self._given(
                "scale_posterior_", self._scale_shape(d), positive=False
            )
        self._check_scale(out["scale_posterior"], out["dof_posterior"], "scale_posterior_", d)
        out["shift"] = shift
        return out

    # ------------------------------------------------------------------ VB steps
    def _expected_emission_log_likelihood(self, params, X) -> torch.Tensor:
        """E_q[log N(x_t | μ_k, Λ_k⁻¹)] (t, k): the Gaussian log-density at the point
        estimates (the fast emission kernels; a state of :meth:`_vb_far` from x − m_k) plus a
        per-state offset."""
        ct, shift = self.covariance_type, params["shift"]
        dof, scale = params["dof_posterior"], params["scale_posterior"]
        covars = scale / _dof_as(dof, ct)
        delta = params["means_posterior"]  # (k, d) about the shift
        ll = gaussian_log_likelihood(
            X, shift + delta, covars, ct, shift=shift, delta=delta, remedy=VB_REMEDY
        )
        far = self._vb_far(params)
        if far is not None:  # too far from the centre for that form: from x − m_k
            idx, centres, pc = far
            ll[:, idx] = direct_log_prob(X, centres, pc, ct)
        return ll + expected_gaussian_offset(dof, params["beta_posterior"], X.shape[1])

    def _vb_far(self, params):
        """(indices (f,), their means m_k (f, d), their precision factors) of the states
        whose point-estimate densities and moments the affine form about the fit's centre
        cannot resolve (:func:`~latentfit.em.gaussian.far_components`, as GaussianHMM's
        ``_far_states``: a cluster of sd 0.01 a hundred from the others in float32, or rows
        3, 5, 7 beside two rows of 1e8 in float64), or None. Their log-densities are taken
        from x − m_k and their statistics about m_k (the M-step moves them back). A tied
        scale is pooled over the states: all of them or none."""
        ct = self.covariance_type
        covars = params["scale_posterior"] / _dof_as(params["dof_posterior"], ct)
        pc = E._state_precision(covars, ct, VB_REMEDY)
        delta = params["means_posterior"]  # (k, d) about the shift
        idx = far_components(delta, pc, ct)
        if not len(idx):
            return None
        means = params["means_abs"] if "means_abs" in params else params["shift"] + delta
        return idx, means[idx], far_factors(pc, idx, ct)

    def _vb_emission_stats(self, params, X, gamma):
        ct = self.covariance_type
        stats = gaussian_stats(X, gamma, params["shift"], ct)
        far = self._vb_far(params)
        if far is not None:  # about their own means (the M-step moves them back)
            idx, centres, _ = far
            S1, S2 = direct_moments(X, gamma[:, idx].T, centres, ct)
            stats["obs"][idx] = S1
            if ct == "tied":  # pooled over all the states, each about its own mean
                stats["obsobs"] = S2
            else:
                stats["obs2" if ct != "full" else "obsobs"][idx] = S2
        return stats

    def _vb_emission_mstep(self, params, stats, X):
        """:func:`~latentfit.em.hmm.variational_math.normal_wishart_update` in float64 (as
        GaussianHMM's M-step), each state about the centre of its statistics: the fit's
        centre, or its own mean for a state of :meth:`_vb_far`; then every update the
        statistics about the fit's centre could not resolve is raised to its rounding (see
        :meth:`_check_vb_resolved`)."""
        dt, ct = params["means_posterior"].dtype, self.covariance_type
        keys = ("means_prior", "beta_prior", "dof_prior", "scale_prior")
        keys += ("means_posterior", "beta_posterior", "dof_posterior", "scale_posterior")
        p64 = {key: params[key].double() for key in keys}
        st = {key: v.double() for key, v in stats.items()}
        offset = torch.zeros_like(p64["means_posterior"])  # (k, d): centre − fit's centre
        far = self._vb_far(params)
        if far is not None:
            offset[far[0]] = far[1].double() - params["shift"].double()
        means, beta, dof, scale = normal_wishart_update(
            st,
            p64["means_prior"] - offset,
            p64["beta_prior"],
            p64["dof_prior"],
            p64["scale_prior"],
            p64["means_posterior"] - offset,
            p64["beta_posterior"],
            p64["dof_posterior"],
            p64["scale_posterior"],
            ct,
            update_means="m" in self.params,
            update_covars="c" in self.params,
        )
        shift = params["shift"].double()
        absolute = shift + means + offset  # (k, d)
        if far is not None and "m" in self.params:
            # about m_k itself: the update kept absolute; through m_k − c it would round to
            # the spacing of c (rows near 2.4 with one row at 1e17 and a weak prior on the
            # means fitted a mean of 2.5: c is 1.7e15)
            absolute[far[0]] = far[1].double() + means[far[0]]
        elif far is not None:  # the means as they were
            absolute[far[0]] = far[1].double()
        means = means + offset
        if far is not None:
            means[far[0]] = absolute[far[0]] - shift
        if "c" in self.params:
            scale = self._check_vb_resolved(st, p64, dof, scale, torch.finfo(dt).eps, far)
            if ct in ("full", "tied"):  # positive definite where the rows spread (_lift_lost)
                d = scale.shape[-1]
                lifted = [_lift_lost(s, X, 0.0) for s in scale.to(dt).reshape(-1, d, d)]
                scale = torch.stack(lifted).reshape(scale.shape)
        out = {
            "means_posterior": means.to(dt),
            "means_abs": absolute.to(dt),  # the fit's own absolute copy (see _vb_far)
            "beta_posterior": beta.to(dt),
            "dof_posterior": dof.to(dt),
            "scale_posterior": scale.to(dt),
        }
        if "c" in self.params and ct in ("full", "tied"):
            out["rounding"] = scale_rounding(dof, scale, torch.finfo(dt).eps)
        return out

    def _check_vb_resolved(self, st, p64, dof, scale, eps: float, far) -> torch.Tensor:
        """The scales with every variance the statistics about the fit's centre could not
        resolve (:func:`~latentfit.em.gaussian.unresolved_variances`, as GaussianHMM's
        ``_check_resolved``) raised to ν_k times its rounding: an upper bound that makes the
        state narrow against its distance from the centre, so that the next E-step takes its
        statistics about its own mean (:meth:`_vb_far`) and the next update is exact. Where a
        variance's rounding is below what the prior scale adds to it (S₀ / (ν₀ + N)) it is
        left as it is. A tied scale, pooled over the states, keeps its diagonal alone, raised
        so (all the states' statistics are then taken about their own means)."""
        ct = self.covariance_type
        post = st["post"].clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)  # (k, 1)
        delta = st["obs"] / post  # (k, d) about each state's centre
        S0 = p64["scale_prior"]
        if ct == "tied":
            total = post.sum()
            second = (st["obsobs"].diagonal() / total).unsqueeze(0)  # (1, d)
            delta = ((post * delta.square()).sum(0) / total).sqrt().unsqueeze(0)  # (1, d)
            floor = S0.diagonal().unsqueeze(0) / (p64["dof_prior"] + total)
        else:
            if "obs2" in st:
                second = st["obs2"] / post
            else:
                second = st["obsobs"].diagonal(dim1=-2, dim2=-1) / post
            if ct == "full":
                prior = S0.diagonal(dim1=-2, dim2=-1)  # (k, d)
            else:
                prior = S0 if ct == "diag" else S0.unsqueeze(1)  # (k, d), spherical (k, 1)
            floor = prior / (p64["dof_prior"].reshape(-1, 1) + post)  # (k, d) or (k, 1)
        bad = unresolved_variances(second, delta, floor, eps)
        if far is not None:  # about their own means: resolved (tied: all of them)
            bad[far[0] if ct != "tied" else slice(None)] = False
        if not bool(bad.any()):
            return scale
        noise = 100 * eps * second
        if ct == "tied":  # ν × the rounding of the pooled variances (1, d)
            return torch.diag_embed(torch.maximum(scale.diagonal(), noise[0] * dof))
        lifted = noise * _dof_as(dof, "diag")  # (k, d): ν_k × the rounding of the variance
        if ct == "diag":
            return torch.where(bad, torch.maximum(scale, lifted), scale)
        rows = bad.any(1)  # (k,)
        if ct == "spherical":
            return torch.where(rows, torch.maximum(scale, lifted.amax(1)), scale)
        diag = torch.diag_embed(torch.maximum(scale.diagonal(dim1=-2, dim2=-1), lifted))
        return torch.where(rows.reshape(-1, 1, 1), diag, scale)

    def _emission_kl(self, params) -> torch.Tensor:
        try:
            return kl_normal_wishart(
                params["means_posterior"],
                params["beta_posterior"],
                params["dof_posterior"],
                params["scale_posterior"],
                params["means_prior"],
                params["beta_prior"],
                params["dof_prior"],
                params["scale_prior"],
                self.covariance_type,
            )
        except torch.linalg.LinAlgError:
            # Cholesky let the scales pass but the KL's solve finds one exactly singular:
            # columns equal up to a shift (x and x + 1e8), correlated to working precision
            ct, (k, d) = self.covariance_type, params["means_posterior"].shape
            S = E.fill_covars(params["scale_posterior"], ct, k, d)  # (k, d, d)
            bad = (torch.linalg.lu_factor_ex(S).info != 0).nonzero().flatten().tolist()
            which = "the tied" if ct == "tied" else f"state(s) {bad}'s"
            raise DegenerateComponentError(
                f"{which} Wishart scale posterior is singular to working precision: the "
                "states' columns are (nearly) perfectly correlated, as for duplicated columns "
                f"or a column that is another plus a constant. {VB_REMEDY}"
            ) from None

    def _absolute(self, params):
        shift = params["shift"].double()
        out = dict(params)
        for key in ("means_prior", "means_posterior"):
            out[key] = (shift + params[key].double()).to(params[key].dtype)
        if "means_abs" in out:  # exact where the fit kept them absolute
            out["means_posterior"] = out.pop("means_abs")
        return out

    def _point_emissions(self, params):
        ct = self.covariance_type
        covars = params["scale_posterior"] / _dof_as(params["dof_posterior"], ct)
        return {"means": params["means_posterior"], "covars": covars}


def _dof_as(dof: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """ν shaped to divide or multiply the compact scale of ``covariance_type``."""
    return {"full": dof.reshape(-1, 1, 1), "diag": dof.reshape(-1, 1)}.get(covariance_type, dof)


@serializable
class VariationalCategoricalHMM(_VariationalHMM, CategoricalHMM):
    """Bayesian categorical HMM fitted by variational inference (hmmlearn's
    ``VariationalCategoricalHMM``; see the module docstring).

    Dirichlet priors (None: 1/k for start and transitions, 1/n_features for the emissions; a
    number or an array broadcast to the shape): ``startprob_prior`` (k,), ``transmat_prior``
    (k, k), ``emissionprob_prior`` (k, n_features); stored as ``*_prior_``, the posteriors as
    ``startprob_posterior_``, ``transmat_posterior_``, ``emissionprob_posterior_``, and the
    posterior means as ``startprob_``, ``transmat_``, ``emissionprob_``. Start: the prior plus
    random pseudo-counts Dirichlet(prior) · n_samples / k per state (hmmlearn's draw).
    ``n_features``, X (a column of integer symbols), ``n_init``, ``device``, ``dtype`` and
    ``y`` are as for :class:`CategoricalHMM`.
    """

    _vb_emission_keys = ("emissionprob_prior", "emissionprob_posterior")
    _emission_attributes = (
        "emissionprob_",
        *(key + "_" for key in _TRANSITION_KEYS + _vb_emission_keys),
    )

    def _emission_specs(self, k, d):
        """The Dirichlet prior and posterior of every state's symbol probabilities (k, d):
        concentrations > 0."""
        shape = None if d is None else (k, d)
        return {
            **super()._emission_specs(k, d),
            "emissionprob_prior_": Stored(shape, "positive"),
            "emissionprob_posterior_": Stored(shape, "positive"),
        }

    def __init__(
        self,
        n_components=1,
        startprob_prior=None,
        transmat_prior=None,
        emissionprob_prior=None,
        n_features=None,
        algorithm="viterbi",
        random_state=None,
        n_iter=100,
        tol=1e-6,
        verbose=False,
        params="ste",
        init_params="ste",
        implementation="log",
        *,
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())

    def _fit_n_symbols(self, t: torch.Tensor) -> int:
        if self.n_features is not None:
            return self._given_n_symbols()
        if "e" in self.init_params or not hasattr(self, "emissionprob_posterior_"):
            return self._inferred_n_symbols(t)
        return int(np.asarray(self.emissionprob_posterior_).shape[1])

    def _initial_posteriors(self, X, lengths, gen) -> dict[str, torch.Tensor]:
        k, n_sym = self.n_components, self.n_features_
        rng = _numpy_rng(gen)
        out = self._initial_transitions(lengths, rng)
        prior = self._prior(self.emissionprob_prior, "emissionprob_prior", (k, n_sym), 1 / n_sym)
        out["emissionprob_prior"] = prior
        if self._needs_init("e", "emissionprob_posterior_"):
            alpha = prior.double().cpu().numpy()
            draw = np.stack([rng.dirichlet(a) for a in alpha]) * X.shape[0] / k
            out["emissionprob_posterior"] = prior + torch.as_tensor(draw).to(prior)
        else:
            out["emissionprob_posterior"] = self._given("emissionprob_posterior_", (k, n_sym))
        return out

    def _expected_emission_log_likelihood(self, params, X) -> torch.Tensor:
        """E_q[log B_{k, x_t}] = ψ(e_{k, x_t}) − ψ(Σ_v e_{kv}): (t, k)."""
        return dirichlet_expected_log(params["emissionprob_posterior"]).T[X]

    def _vb_emission_stats(self, params, X, gamma):
        return categorical_stats(X, gamma, params["emissionprob_posterior"].shape[1])

    def _vb_emission_mstep(self, params, stats, X):
        if "e" not in self.params:
            return {}
        return {"emissionprob_posterior": params["emissionprob_prior"] + stats["obs"]}

    def _emission_kl(self, params) -> torch.Tensor:
        return kl_dirichlet(params["emissionprob_posterior"], params["emissionprob_prior"])

    def _point_emissions(self, params):
        e = params["emissionprob_posterior"]
        return {"emissionprob": e / e.sum(1, keepdim=True)}
