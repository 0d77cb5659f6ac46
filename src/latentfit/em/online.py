"""Online (stepwise) EM: one update of the parameters per mini-batch (Cappé & Moulines 2009).

Stepwise EM keeps a running average ``s`` of the expected sufficient statistics *per unit of
sample weight* and, for every mini-batch ``B_t``,

    ŝ_t = E-step statistics of B_t under θ_{t-1}, divided by the batch's total weight,
    s_t = (1 − ρ_t) s_{t-1} + ρ_t ŝ_t,                  ρ_t = (t + offset)^(−decay),
    θ_t = M-step(s_t · N_t),                              N_t = total weight seen so far,

(Cappé & Moulines 2009, "On-line expectation–maximization algorithm for latent data models",
JRSS-B 71(3), eq. 5; Liang & Klein 2009). ``ρ_1 = 1``; with ``decay`` in (0.5, 1] the step sizes
satisfy Σρ = ∞, Σρ² < ∞ and the iterates converge to a stationary point of the likelihood.
The statistics are scaled by ``N_t`` before the M-step so that M-steps with a prior (MAP) see as
much data as has been read; without a prior the scale cancels.

Any EM model built on the driver's hooks gets ``partial_fit`` from :class:`OnlineEMMixin`. Two
requirements on its hooks: the statistics hold the batch's total sample weight under
``"weight"`` (or under the key named by a ``weight_key`` attribute of the hooks, e.g. ``"Sw"``
for the factor models); and if they are taken relative to a point that depends on the
parameters (the Gaussian moments around the mixture mean, the factor models' moments around
μ), the hooks provide ``recenter(stats, old_params, new_params)`` moving them to the new point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from latentfit._atomic_fit import kept_on_failure
from latentfit._validation import (
    check_sample_weight,
    first_nonfinite,
    is_finite_above,
    make_generator,
)
from latentfit.em.driver import _REMEDY, NonFiniteLowerBoundError, Params, Stats, _non_finite
from latentfit.em.sources.chunks import is_source
from latentfit.em.sources.tensors import TensorChunks
from latentfit.errors import (
    BatchRowError,
    DataError,
    LatentfitError,
    ModelFileError,
    ParameterError,
)

__all__ = [
    "OnlineEMMixin",
    "OnlineEMState",
    "StepSize",
    "online_em_step",
    "translate_moment_stats",
]


@dataclass(frozen=True)
class StepSize:
    """ρ_t = (t + offset)^(−decay) for update t = 2, 3, …, and ρ_1 = 1 (Cappé & Moulines 2009:
    decay in (0.5, 1]; a positive ``offset`` slows the early forgetting, as scikit-learn's
    ``learning_offset`` does for online LDA)."""

    decay: float = 0.6
    offset: float = 0.0

    def __post_init__(self):
        if not (is_finite_above(self.decay, 0.5) and self.decay <= 1):
            raise ParameterError(
                f"learning_decay must lie in (0.5, 1] for stepwise EM to converge, got {self.decay!r}"
            )
        if not is_finite_above(self.offset, 0.0, inclusive=True):
            # an infinite offset makes every step after the first zero: nothing is learnt
            raise ParameterError(
                f"learning_offset must be non-negative and finite, got {self.offset!r}: the "
                "steps are (t + learning_offset)^(-learning_decay), so an infinite offset "
                "would make every step zero; e.g. learning_offset=10"
            )

    def __call__(self, t: int) -> float:
        return 1.0 if t <= 1 else float((t + self.offset) ** -self.decay)


class OnlineEMState(NamedTuple):
    """Where stepwise EM stands: the current parameters, the running statistics per unit weight
    (taken relative to ``stats_params``, the parameters of the E-step that made them), the
    number of updates and the total sample weight seen."""

    params: Params
    stats: Stats | None
    stats_params: Params | None
    n_steps: int
    weight_seen: float


def online_em_step(
    hooks,
    state: OnlineEMState,
    batch,
    step_size: Callable[[int], float],
    reduce: Callable[[Stats], Stats] | None = None,
) -> OnlineEMState:
    """One stepwise-EM update from a mini-batch (see the module docstring); pure."""
    params = state.params
    batch_stats = hooks.estep(params, batch)
    if reduce is not None:
        batch_stats = reduce(batch_stats)
    key = getattr(hooks, "weight_key", "weight")
    if key not in batch_stats:
        raise ParameterError(
            f"online EM needs the batch's total sample weight under stats[{key!r}]"
        )
    bw = float(batch_stats[key])
    if bw <= 0:
        return state  # a batch with no weight carries no information
    t = state.n_steps + 1
    rho = step_size(t)
    new = {k: v / bw for k, v in batch_stats.items()}  # per unit weight
    if state.stats is None or rho >= 1:
        s = new
    else:
        old = state.stats
        recenter = getattr(hooks, "recenter", None)
        if recenter is not None:
            old = recenter(old, state.stats_params, params)
        s = {k: (1 - rho) * old[k] + rho * new[k] for k in new}
    seen = state.weight_seen + bw
    new_params = hooks.mstep(params, {k: v * seen for k, v in s.items()})
    return OnlineEMState(new_params, s, params, t, seen)


def translate_moment_stats(stats: Stats, delta: torch.Tensor, covariance_type: str) -> Stats:
    """Moments taken around ``c`` re-expressed around ``c' = c − delta`` (x − c' = (x − c) + δ):

    S1' = S1 + S0 δ;  S2' = S2 + S1 δᵀ + δ S1ᵀ + S0 δ δᵀ (full, per component; tied summed
    over the components), and S2' = S2 + 2 δ ⊙ S1 + S0 δ² (diag, spherical). ``delta`` is one
    offset (d,) for every component or one per component (k, d) (moments each about its own
    centre). Other keys unchanged.
    """
    S0, S1, S2 = stats["S0"], stats["S1"], stats["S2"]  # (k,), (k, d), by type
    delta = delta.expand_as(S1)  # (k, d)
    out = dict(stats)
    out["S1"] = S1 + S0.unsqueeze(1) * delta  # (k, d)
    if covariance_type in ("full", "tied"):
        cross = S1.unsqueeze(2) * delta.unsqueeze(1)  # (k, d, d)
        shift = cross + cross.mT + S0.view(-1, 1, 1) * delta.unsqueeze(2) * delta.unsqueeze(1)
        out["S2"] = S2 + (shift.sum(0) if covariance_type == "tied" else shift)
    else:
        out["S2"] = S2 + 2 * delta * S1 + S0.unsqueeze(1) * delta.square()
    return out


#: the names in a model file of stepwise EM's averaged statistics and of the parameters they
#: were taken under (``OnlineEMState.stats`` and ``stats_params``)
_STATS, _AT = "online.stats.", "online.at."


class OnlineEMMixin:
    """``partial_fit`` for an estimator built on the EM driver's hooks (stepwise EM).

    The estimator provides ``learning_decay`` and ``learning_offset`` (constructor arguments),
    ``_check_parameters()``, ``_validate_X(X, reset)``, ``_hooks()``, ``_device``, ``_dtype``,
    ``random_state``, ``_set_params_tensors(params)`` and the fitted ``_params``; its hooks
    follow the requirements in the module docstring. A first call initialises from its batch as
    ``fit`` would; a call after ``fit`` continues from the fitted parameters. Models whose batches
    are not ``(X, w)`` pairs, or that learn settings from the data before initialising, override
    ``_online_batch``/``_online_init_data``; ``_online_min_rows`` says how many rows the first
    batch needs (default ``n_components``).

    A model file keeps the running state (the averaged statistics, the parameters they were
    taken under, ``n_steps_`` and the weight seen), so that ``partial_fit`` after ``load``
    continues the run as it would have gone on in memory.
    """

    #: the run's counts that a model file keeps beside its statistics (see ``_get_state``)
    _state_fields: ClassVar[dict[str, str]] = {
        "n_steps_": "count",
        "_online_weight_seen": "positive",
    }

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise-EM update from the mini-batch ``X`` (or one per chunk of a source).

        Sets the fitted attributes after every update, ``n_steps_`` (updates so far) and
        ``lower_bound_``: the running average of the log-likelihood per sample, the stochastic
        approximation of the objective that batch EM reports.
        """
        step = StepSize(self.learning_decay, self.learning_offset)
        # A failed update (bad data, an overflow) leaves the model as it was before the call:
        # every update replaces attributes rather than changing them in place.
        with kept_on_failure(self):
            self._partial_fit(X, sample_weight, step)
        return self

    def _partial_fit(self, X, sample_weight, step: StepSize) -> None:
        if is_source(X):
            if sample_weight is not None:
                raise ParameterError(
                    "a source carries its own sample weights; pass sample_weight=None"
                )
            if getattr(X, "world_size", 1) > 1:
                raise ParameterError(
                    "partial_fit reads a source in one process; for data sharded over processes "
                    "use fit(DistributedSource(...)) (exact EM), or call partial_fit on each "
                    "process's mini-batches"
                )
            allow_nan = getattr(self, "missing", "error") == "marginalize"
            source = X.configured(device=self._device, dtype=self._dtype, allow_nan=allow_nan)
            row = 0  # errors about a chunk's row name its row of the source
            for Xc, wc in source:
                try:
                    self._online_update(Xc, wc, step, source.reduce)
                except BatchRowError as err:
                    raise err.shifted(row, f"{source.name}: ") from None
                row += Xc.shape[0]
            return
        self._online_update(X, sample_weight, step, None)

    def _online_update(self, X, sample_weight, step, reduce) -> None:
        first = not hasattr(self, "_params")
        if first:
            self._checked_parameters()
        X = self._validate_X(X, reset=first)
        w = check_sample_weight(sample_weight, X.shape[0], dtype=X.dtype, device=X.device)
        if first:
            need, what = self._online_min_rows()
            if X.shape[0] < need:
                raise DataError(
                    f"the first batch of partial_fit has {X.shape[0]} samples; it needs at least "
                    f"{what} to initialise from"
                )
            self.n_features_in_ = X.shape[1]
            gen = make_generator(self.random_state, X.device)
            init = self._online_init_data(X, w)  # may learn data-dependent settings first
            hooks = self._online_hooks()
            start = hooks.initialize(init, gen)
            _check_finite_start(start, type(self).__name__, getattr(hooks, "remedy", _REMEDY))
            self._set_params_tensors(start)
        else:
            hooks = self._online_hooks()
        state = getattr(self, "_online_state", None)
        if state is None or state.params is not self._params:
            # First update, or the model was (re)fitted by fit(): start the averages afresh.
            state = OnlineEMState(self._params, None, None, 0, 0.0)
            if not first:  # a first batch is judged where it initialises (_online_init_data)
                self._check_floor(X, w)
        state = online_em_step(hooks, state, self._online_batch(X, w), step, reduce)
        _check_finite_update(state, type(self).__name__, getattr(hooks, "remedy", _REMEDY))
        self._set_params_tensors(state.params)
        self._online_state = state._replace(params=self._params)
        self.n_steps_ = state.n_steps
        if state.stats is not None and "loglik" in state.stats:
            self.lower_bound_ = float(state.stats["loglik"])

    # ------------------------------------------------------------------ persistence
    def _live_online_state(self) -> OnlineEMState | None:
        """The running state of stepwise EM when it belongs to the current parameters (not
        to parameters that ``fit`` or an edit has replaced since)."""
        state = getattr(self, "_online_state", None)
        if state is None or state.stats is None or state.params is not self._params:
            return None
        return state

    def _get_state(self):
        tensors, extra = super()._get_state()
        state = self._live_online_state()
        if state is not None:
            # copies: a tensor shared with the parameters (the GMM's shift) is written once
            tensors.update({_STATS + k: v.clone() for k, v in state.stats.items()})
            tensors.update({_AT + k: v.clone() for k, v in state.stats_params.items()})
            extra["n_steps_"] = int(state.n_steps)
            extra["_online_weight_seen"] = float(state.weight_seen)
        return tensors, extra

    def _set_state(self, tensors, extra):
        tensors = dict(tensors)
        stats = {k[len(_STATS) :]: tensors.pop(k) for k in list(tensors) if k.startswith(_STATS)}
        at = {k[len(_AT) :]: tensors.pop(k) for k in list(tensors) if k.startswith(_AT)}
        steps, seen = extra.pop("n_steps_", None), extra.pop("_online_weight_seen", None)
        super()._set_state(tensors, extra)
        if stats or at or steps is not None or seen is not None:
            # restored once the model is whole (a subclass's _set_state sets its settings
            # after this one): see _check_loaded
            self._online_stored = (stats, at, steps, seen)

    def _check_loaded(self) -> None:
        super()._check_loaded()
        stored = vars(self).pop("_online_stored", None)
        if stored is not None:
            self._restore_online_state(*stored)

    def _restore_online_state(self, stats: Stats, at: Params, steps, seen) -> None:
        """The running state read from a model file, checked: all of its parts, the
        parameters it was taken under shaped as the model's, the statistics those of an
        E-step of the model and an M-step from them finite (ModelFileError naming what is
        wrong)."""
        parts = {
            "the averaged statistics ('online.stats.*')": stats,
            "the parameters they were taken under ('online.at.*')": at,
            "'extra.n_steps_'": steps,
            "'extra._online_weight_seen'": seen,
        }
        lacking = [name for name, part in parts.items() if part is None or part == {}]
        if lacking:
            raise ModelFileError(
                "the model file holds part of the state of a partial_fit run but not "
                f"{', '.join(lacking)}; the file was altered or is damaged"
            )
        if steps < 1:
            raise ModelFileError(
                f"'extra.n_steps_' is {steps}, but the partial_fit run it counts made updates"
            )
        dev, dt = self._device, self._dtype
        stats = {k: v.to(device=dev, dtype=dt) for k, v in stats.items()}
        at = {k: v.to(device=dev, dtype=dt) for k, v in at.items()}
        params = self._params
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        if {k: tuple(v.shape) for k, v in at.items()} != shapes:
            raise ModelFileError(
                f"the tensors 'online.at.*' are not shaped as the model's parameters "
                f"({shapes}); the file was altered or is damaged"
            )
        hooks = self._online_hooks()
        made = self._probe_stats(hooks, params)
        want = None if made is None else {k: tuple(v.shape) for k, v in made.items()}
        if want is not None and {k: tuple(v.shape) for k, v in stats.items()} != want:
            raise ModelFileError(
                f"the tensors 'online.stats.*' are not the statistics of this "
                f"{type(self).__name__} ({want}); the file was altered or is damaged"
            )
        try:
            new = hooks.mstep(params, {k: v * seen for k, v in stats.items()})
        except ModelFileError:
            raise
        except (LatentfitError, ValueError, RuntimeError, KeyError) as err:
            raise ModelFileError(
                f"the tensors 'online.stats.*' are no statistics a partial_fit run averages "
                f"(their M-step fails: {str(err).splitlines()[0]}); the file was altered or is "
                "damaged"
            ) from None
        if _non_finite(new):
            raise ModelFileError(
                f"the tensors 'online.stats.*' give non-finite {', '.join(_non_finite(new))} "
                "at their M-step; the file was altered or is damaged"
            )
        self._online_state = OnlineEMState(params, stats, at, steps, float(seen))
        self.n_steps_ = steps

    def _probe_stats(self, hooks, params: Params) -> Stats | None:
        """The statistics an E-step of the model makes (their names and shapes), from no
        rows, else from a row drawn from the model; None where neither can be scored (a
        MixtureModel whose components' supports share no row)."""
        dt, dev = self._dtype, self._device
        for draw in (lambda: torch.zeros(0, self.n_features_in_), lambda: self.sample(1)):
            try:
                X = draw()
                X = torch.as_tensor(X[0] if isinstance(X, tuple) else X, dtype=dt, device=dev)
                return hooks.estep(params, self._online_batch(X, X.new_ones(X.shape[0])))
            except (LatentfitError, ValueError, RuntimeError):
                continue
        return None

    # Overridable where a model's batches are not (X, w) pairs (e.g. with labels).
    def _online_hooks(self):
        """The hooks stepwise EM runs (those of ``fit`` unless a model averages other
        statistics online)."""
        return self._hooks()

    def _online_min_rows(self) -> tuple[int, str]:
        """Rows the first batch needs, and how to say it in an error."""
        return self.n_components, f"n_components = {self.n_components}"

    def _online_batch(self, X: torch.Tensor, w: torch.Tensor):
        """The batch the hooks' E-step takes for rows X (n, d) with weights w (n,)."""
        return (X, w)

    def _online_init_data(self, X: torch.Tensor, w: torch.Tensor):
        """The data the hooks' ``initialize`` takes, built from the first batch."""
        return TensorChunks(X, w, max(1, X.shape[0]))

    def _check_floor(self, X: torch.Tensor, w: torch.Tensor | None) -> None:
        """Warn (VarianceFloorWarning) where a variance floor of the model's swamps the
        variance of a column of the rows X (n, d) it continues on, as ``fit`` judges its data
        (:func:`~latentfit.em.gaussian.check_variance_floor`); models without one: nothing."""


def _check_finite_start(params: Params, name: str, remedy: str) -> None:
    """Refuse a first batch whose starting parameters are not finite (weights or values so
    large that its statistics overflow), as the driver refuses such a start of ``fit``:
    NonFiniteLowerBoundError naming the parameters, before any density is built from them."""
    bad = _non_finite(params)
    if bad:
        raise NonFiniteLowerBoundError(
            f"{name}: the start of partial_fit from its first batch has non-finite "
            f"{', '.join(bad)} (too few or too extreme rows, or too large sample weights, "
            "for the dtype's arithmetic); the model is left unfitted. " + remedy
        )


def _check_finite_update(state: OnlineEMState, name: str, remedy: str) -> None:
    """Refuse an update whose parameters or running log-likelihood are not finite (a batch
    whose arithmetic overflows), as the driver refuses such an iteration of ``fit``:
    NonFiniteLowerBoundError naming the value, before the model takes the parameters."""
    for key, value in state.params.items():
        bad = first_nonfinite(value)
        if bad is not None:
            raise NonFiniteLowerBoundError(
                f"{name}: the partial_fit update made the parameter {key!r} "
                f"{float(value[bad])} (at index {bad}); the model keeps its parameters from "
                "before the call. The batch's values are too large for the arithmetic of "
                f"{str(value.dtype).removeprefix('torch.')}. " + remedy
            )
    loglik = state.stats.get("loglik") if state.stats is not None else None
    if loglik is not None and not bool(torch.isfinite(loglik).all()):
        raise NonFiniteLowerBoundError(
            f"{name}: the log-likelihood became {float(loglik)} in the partial_fit update; "
            "the model keeps its parameters from before the call. " + remedy
        )
