"""The one estimator base of EM: input checks, the run of the driver and its record,
persistence, BIC/AIC, and the mixture API (score/predict/sample) built on two hooks.

:class:`EMEstimator` holds what every EM estimator (the mixtures, FA/PPCA,
BayesianGaussianMixture and every HMM) does the same way: dtype/device, the checks of X at fit
and predict time, fitting from a data source, the run of :func:`~latentfit.em.driver.run_em`
with the estimator's settings and the record of its result, save/load.
:class:`MixtureMixin` adds scikit-learn's mixture API from ``_log_joint(X) -> (n, k)``
= log π_k + log p(x_n | θ_k) (Bishop 2006 eq. 9.23 before normalising), and
:class:`CriteriaMixin` BIC/AIC (Schwarz 1978; Akaike 1974) from ``score`` and
``_n_parameters()``. The helpers below check the parameters that share their meaning across
estimators, with the same messages everywhere.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from latentfit._atomic_fit import fitting
from latentfit._validation import (
    as_float_tensor,
    check_bool,
    check_feature_names,
    check_positive_int,
    check_sample_count,
    check_sample_weight,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from latentfit.em.driver import EMResult, run_em
from latentfit.em.gaussian import describe_degenerate
from latentfit.em.initialize import cpu_generator
from latentfit.em.sources.chunks import is_source
from latentfit.em.sources.stream import prepare_stream
from latentfit.em.sources.tensors import default_chunk_rows
from latentfit.errors import (
    DataError,
    DegenerateComponentWarning,
    LatentfitError,
    ModelFileError,
    ParameterError,
    user_stacklevel,
)
from latentfit.io import Stored, check_fields, check_stored_tensors, declared_fields
from latentfit.io import save as _save

__all__ = [
    "RUN_RECORD",
    "CriteriaMixin",
    "EMEstimator",
    "EMFit",
    "MixtureMixin",
    "mean_score",
    "run_record",
]


class EMFit(NamedTuple):
    """What a model prepares for one fit (:meth:`EMEstimator._fit`): the driver's hooks, its
    data and the reduction of a distributed source, and the in-memory X (None for a source)."""

    hooks: Any
    data: Any
    reduce: Any = None
    X: torch.Tensor | None = None


# ---------------------------------------------------------------------- estimators
#: The record of a fit beyond its parameters that a model file keeps (name -> field kind, see
#: :func:`latentfit.io.check_fields`): the bound's history and the last value, the restarts'
#: histories and which one was kept, and the components found degenerate. A loaded model
#: reports them as the fitted one did.
RUN_RECORD: dict[str, str] = {
    "converged_": "bool",
    "n_iter_": "count",
    "lower_bound_": "float",
    "lower_bounds_": "floats",
    "all_lower_bounds_": "float_lists",
    "best_init_": "count",
    "degenerate_components_": "ints",
}


def run_record(model, names) -> dict:
    """The attributes ``names`` of :data:`RUN_RECORD` that ``model`` has, as JSON values (of
    the kind the model's class declares for them, if it declares its own)."""
    kinds = {**RUN_RECORD, **declared_fields(type(model))}
    plain = {
        "bool": bool,
        "count": int,
        "float": float,
        "floats": lambda v: [float(x) for x in v],
        "float_lists": lambda v: [[float(x) for x in row] for row in v],
        "ints": lambda v: [int(x) for x in v],
        "int_pairs": lambda v: [[int(a), int(b)] for a, b in v],
    }
    return {n: plain[kinds[n]](getattr(model, n)) for n in names if hasattr(model, n)}


class EMEstimator:
    """dtype/device, checks of X, the one ``fit`` (see :meth:`_fit`: settings, the model's
    ``_prepare_fit``/``_prepare_source_fit``, the run of the EM driver, its record,
    ``_after_fit``), persistence.

    The estimator keeps its fitted tensors in ``_params`` and sets its public attributes from
    them in ``_set_params_tensors``; ``missing`` (when it has one) decides whether NaN is allowed.
    A class whose fitted state lives elsewhere names the attribute a fitted model has in
    ``_fitted_attribute``; ``_max_iter_name`` and ``_convergence`` are the iteration setting
    and the stopping rule it hands the driver.
    """

    _fitted_attribute = "_params"
    _max_iter_name = "max_iter"
    _convergence = "abs"
    #: whether the record keeps every restart (``all_lower_bounds_``, ``best_init_``)
    _records_restarts = True

    def _set_arguments(self, arguments: dict) -> None:
        """scikit-learn's ``__init__``: store every constructor argument as given; a model's
        ``__init__`` (its signature is the list of its settings) passes ``locals()``."""
        for name, value in arguments.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    @property
    def _dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @property
    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _validate_X(self, X, *, reset: bool) -> torch.Tensor:
        # Columns are matched by name as in scikit-learn: a reordered DataFrame is refused.
        check_feature_names(self, X, reset=reset)
        allow_nan = getattr(self, "missing", "error") == "marginalize"
        X = as_float_tensor(X, dtype=self._dtype, device=self._device, allow_nan=allow_nan)
        if not reset and X.shape[1] != self.n_features_in_:
            raise DataError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X

    def _user_tensor(self, value, name: str, shape, dtype=None) -> torch.Tensor:
        """A user-given array argument (``weights_init``, ``mean_prior``...) of a fixed shape,
        in the model's dtype or ``dtype``."""
        dtype = self._dtype if dtype is None else dtype
        t = as_float_tensor(
            value, name=name, dtype=dtype, device=self._device, ndim=None, missing_hint=False
        )
        if t.dim() == 0 and tuple(shape) == (1,):
            t = t.reshape(1)  # one feature's value given as a number
        if tuple(t.shape) != tuple(shape):
            raise ParameterError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
        return t

    def _check(self, X) -> torch.Tensor:
        """X checked against the fitted model (raises NotFittedError before fit)."""
        check_is_fitted(self, "_params")
        return self._validate_X(X, reset=False)

    def _prepare_source(
        self,
        source,
        sample_weight,
        hooks,
        *,
        chunk_rows: int,
        min_rows: int,
        batch=None,
        init_data=None,
        check=None,
    ) -> EMFit:
        """A source of :mod:`latentfit.em.sources.chunks` set up for this estimator (device, dtype,
        chunk size, NaN kept when ``missing="marginalize"``) with ``hooks`` wrapped to initialise
        from its in-memory sample: what ``_prepare_source_fit`` returns. ``batch``,
        ``init_data`` and ``check`` are :func:`~latentfit.em.sources.stream.prepare_stream`'s."""
        if sample_weight is not None:
            raise ParameterError("a source carries its own sample weights; pass sample_weight=None")
        stream = prepare_stream(
            source,
            hooks,
            device=self._device,
            dtype=self._dtype,
            chunk_rows=chunk_rows,
            min_rows=min_rows,
            allow_nan=getattr(self, "missing", "error") == "marginalize",
            batch=batch,
            init_data=init_data,
            check=check,
        )
        self.n_features_in_ = stream.data.n_features
        return EMFit(stream.hooks, stream.data, stream.reduce)

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit by EM (``n_init`` restarts, the best kept) and return the estimator. ``X``: an
        array (n_samples, n_features), or a data source of :mod:`latentfit.em.sources.chunks`
        for the models that read one chunk by chunk; ``sample_weight`` (n_samples,) weights
        every sample's likelihood. ``y``: see the model (ignored unless it takes labels)."""
        self._fit(X, y=y, sample_weight=sample_weight)
        return self

    def _fit(self, X, **args) -> EMFit:
        """The one fit of every EM estimator: check the settings, let the model set up the
        hooks and the data (``_prepare_fit`` for an array, ``_prepare_source_fit`` for a data
        source), run :func:`~latentfit.em.driver.run_em` (restarts, tolerance, history),
        record its result and hand it to ``_after_fit``. ``args`` are the keyword arguments
        of the model's ``fit`` (``y``, ``sample_weight``, ``lengths``...). A fit that fails
        leaves the estimator as it was; Ctrl-C stops it at the end of an EM iteration, keeping
        the fit so far, and then raises KeyboardInterrupt (:mod:`latentfit._interrupt`)."""
        self._checked_parameters()
        then = (
            "set_params(warm_start=True) and fit continue from it"
            if hasattr(self, "warm_start")
            else ""
        )
        with fitting(self, then):
            prepare = self._prepare_source_fit if is_source(X) else self._prepare_fit
            fit = prepare(X, **args)
            result = self._run_em(fit.hooks, fit.data, fit.reduce)
            self._store_result(result, restarts=self._records_restarts)
            self._after_fit(fit, result, X, **args)
        return fit

    def _check_parameters(self) -> None:
        """Check the constructor's settings (before any data is read); a model extends it."""

    def _checked_parameters(self) -> None:
        """``_check_parameters`` with a family's, prior's or model's own ValueError/TypeError
        as ParameterError."""
        try:
            self._check_parameters()
            self._check_shared_settings()
        except LatentfitError:
            raise
        except (ValueError, TypeError) as err:
            raise ParameterError(str(err)) from None

    def _check_shared_settings(self) -> None:
        """The settings several estimators share, checked where the estimator has them, at
        every fit as scikit-learn checks its own: ``warm_start='no'`` counted as true (a warm
        start), and the settings only a progress print or ``partial_fit`` reads (a NaN
        ``verbose_interval``, a ``learning_decay`` of 'zzz') were accepted by ``fit``."""
        if getattr(self, "chunk_rows", None) is not None:  # every chunked model's setting
            check_positive_int(self.chunk_rows, "chunk_rows")
        if hasattr(self, "warm_start"):
            check_bool(self.warm_start, "warm_start")
        if hasattr(self, "verbose_interval"):
            check_positive_int(self.verbose_interval, "verbose_interval")
        if hasattr(self, "learning_decay"):  # partial_fit's step sizes, checked as it does
            from latentfit.em.online import StepSize

            StepSize(self.learning_decay, getattr(self, "learning_offset", 0.0))

    def _prepare_fit(self, X, **args) -> EMFit:
        """Check the in-memory ``X`` (and the fit's other arguments) and build the hooks."""
        raise NotImplementedError

    def _prepare_source_fit(self, source, **args) -> EMFit:
        """The same for a data source (default: the model fits arrays only)."""
        raise ParameterError(
            f"{type(self).__name__} fits arrays held in memory; read the data source into an "
            "array first"
        )

    def _after_fit(self, fit: EMFit, result: EMResult, X, **args) -> None:
        """Checks of the fitted parameters that need the data or the driver's ``result``
        (degenerate components...); ``X`` and ``args`` are what the user passed to ``fit``."""

    def _run_em(self, hooks, data, reduce=None) -> EMResult:
        """The one EM driver with this estimator's settings; a warm start (``warm_start`` and
        a previous fit) continues from the fitted parameters with a single run."""
        warm = getattr(self, "warm_start", False) and hasattr(self, "_params")
        verbose = self.verbose
        # the previous fit's bound, which a warm start's first change is measured from
        # (scikit-learn's). Parameters from partial_fit have none: its lower_bound_ is a
        # running average over the parameters before them, not the bound of these.
        online = getattr(self, "_live_online_state", lambda: None)() is not None
        bound = (
            float(getattr(self, "lower_bound_", -math.inf)) if warm and not online else -math.inf
        )
        return run_em(
            hooks,
            data,
            reduce=reduce,
            n_init=1 if warm else getattr(self, "n_init", 1),
            max_iter=getattr(self, self._max_iter_name),
            max_iter_name=self._max_iter_name,
            tol=self.tol,
            init_params=self._params if warm else None,
            init_bound=bound if math.isfinite(bound) else -math.inf,
            generator=make_generator(self.random_state, self._device),
            convergence=self._convergence,
            verbose=int(verbose) if isinstance(verbose, bool) else verbose,
            name=type(self).__name__,
        )

    def _store_result(self, result: EMResult, *, restarts: bool = True) -> None:
        """The fitted parameters and the run record of :func:`~latentfit.em.driver.run_em`.
        The parameters are kept contiguous, the layout a model file gives them back in: a
        PPCA's W was a transposed view, and its loaded model scored a row 1 ulp apart
        (float32, on a machine whose products sum in another order for a strided operand)."""
        self._set_params_tensors(
            {k: v.contiguous() if torch.is_tensor(v) else v for k, v in result.params.items()}
        )
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound
        self.lower_bounds_ = list(result.lower_bounds)
        if restarts:
            self.all_lower_bounds_ = [list(b) for b in result.all_lower_bounds]
            self.best_init_ = result.best_init

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Write the fitted model (safetensors + JSON header); read it back with latentfit.load."""
        check_is_fitted(self, self._fitted_attribute)
        return _save(self, path)

    #: The settings beyond the tensors that ``save`` writes and ``load`` may restore, with
    #: their kinds (see :func:`latentfit.io.check_fields`); a subclass declares its own
    #: ``_extra_state`` entries here, and a model file can set nothing else.
    _state_fields: ClassVar[dict[str, str]] = {
        **RUN_RECORD,
        "n_features_in_": "int",
        "feature_names_in_": "strs",
    }
    #: The settings every model file of the class holds (checked by latentfit.load).
    _required_state_fields: ClassVar[tuple[str, ...]] = ("n_features_in_",)

    def _extra_state(self) -> dict:
        """JSON-able settings beyond the run record that ``load`` must restore."""
        return {}

    def _get_state(self):
        # A model fitted only by partial_fit has no run record of batch EM.
        extra = {
            "converged_": bool(getattr(self, "converged_", False)),
            "n_iter_": int(getattr(self, "n_iter_", 0)),
            "lower_bound_": float(getattr(self, "lower_bound_", math.nan)),
            "lower_bounds_": [float(v) for v in getattr(self, "lower_bounds_", [])],
            "n_features_in_": int(self.n_features_in_),
            **run_record(self, ("all_lower_bounds_", "best_init_", "degenerate_components_")),
            **self._extra_state(),
        }
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        return dict(self._params), extra

    def _restore_params(self, tensors: dict, extra: dict) -> None:
        """Set the fitted tensors back (a subclass may take its own entries out of ``extra``)."""
        self._set_params_tensors(tensors)

    #: whether ``_stored_specs`` names every tensor the model stores (then a file holding
    #: another tensor is refused)
    _stored_specs_exact = False

    #: the stored tensors the model keeps in float64 whatever its dtype (read back so)
    _float64_tensors: ClassVar[tuple[str, ...]] = ()

    def _stored_specs(self, d: int) -> dict[str, Stored]:
        """What each fitted tensor of a model file must be (shape and constraint, see
        :func:`latentfit.io.check_stored`) for ``d`` features, checked before the tensors are
        set; a model extends it. Here: the mixture weights, where the model has them, lie on
        the simplex."""
        k = self._n_components() if hasattr(self, "_n_components") else self.n_components
        return {"weights": Stored((k,), "simplex", required=False)}

    def _set_state(self, tensors, extra):
        extra = check_fields(extra, type(self), required=self._required_state_fields)
        if extra["n_features_in_"] < 1:
            raise ModelFileError("the model file's field 'extra.n_features_in_' must be >= 1")
        d = extra["n_features_in_"]
        k = self._n_components() if hasattr(self, "_n_components") else self.n_components
        check_stored_tensors(
            tensors,
            self._stored_specs(d),
            exact=self._stored_specs_exact,
            sizes=f"n_components = {k}, n_features_in_ = {d}",
        )
        dev, dt = self._device, self._dtype
        wide = self._float64_tensors
        self._restore_params(
            {
                k: v.to(device=dev, dtype=torch.float64 if k in wide else dt)
                for k, v in tensors.items()
            },
            extra,
        )
        for k, v in extra.items():
            setattr(self, k, v)
        if "feature_names_in_" in extra:
            self.feature_names_in_ = np.asarray(extra["feature_names_in_"], dtype=object)

    def _check_loaded(self) -> None:
        """After ``load``: the tensors agree with ``n_components`` and ``n_features_in_``.
        The weights name the components; one density evaluation at a probe row then finds
        any other tensor whose shape disagrees (raising ModelFileError naming the shapes)."""
        d = self.n_features_in_
        names = getattr(self, "feature_names_in_", None)
        if names is not None and len(names) != d:
            raise ModelFileError(
                f"the model file names {len(names)} features in 'extra.feature_names_in_' but "
                f"'extra.n_features_in_' is {d}"
            )
        k = self._n_components() if hasattr(self, "_n_components") else self.n_components
        w = self._params.get("weights")
        if w is not None and isinstance(k, int) and tuple(w.shape) != (k,):
            raise ModelFileError(
                f"the tensor 'weights' has shape {tuple(w.shape)} but n_components = {k}"
            )
        shapes = {name: tuple(t.shape) for name, t in self._params.items()}
        why = f"the tensors' shapes {shapes} disagree with each other or with n_features_in_ = {d}"
        # The fit's centre and the means kept relative to it (float32 accuracy) are read
        # before any density is evaluated, so a wrong shape there could otherwise broadcast.
        if "shift" in shapes and shapes["shift"] != (d,):
            raise ModelFileError(f"{why} ('shift' must have shape ({d},))")
        if "delta" in shapes and "means" in shapes and shapes["delta"] != shapes["means"]:
            raise ModelFileError(f"{why} ('delta' must have the shape of 'means')")
        try:
            # a draw from the model itself lies in every family's support
            probe = self.sample(2) if hasattr(self, "sample") else np.zeros((1, d))
            probe = probe[0] if isinstance(probe, tuple) else probe  # (X, labels) or X
            if probe.shape[1] != d:
                raise ModelFileError(f"{why} (its samples have {probe.shape[1]} features)")
            self.score_samples(probe)
        except ModelFileError:
            raise
        except LatentfitError:
            pass  # a check of the probe's values, not of the shapes: nothing learnt
        except (ValueError, RuntimeError, IndexError, KeyError) as err:
            # a shape that does not fit, or a value outside its parameter's support (a
            # negative gamma rate): torch's message names the parameter and its constraint
            raise ModelFileError(
                f"the tensors (shapes {shapes}) do not make a {type(self).__name__} with "
                f"n_features_in_ = {d}: {str(err).strip().splitlines()[0]}"
            ) from None


def check_scored(
    values: torch.Tensor, X: torch.Tensor, model: str, what: str = "log-density"
) -> None:
    """Refuse a log-density (n,) or (n, k) that is NaN at some row: never from a valid sample
    and finite parameters but by an overflow (a sample, or a parameter, so large that the
    density's arithmetic leaves the dtype), which the user must hear of rather than score.
    Any other ``what`` (a posterior mean) must be finite as well."""
    bad = values.isnan() if what == "log-density" else ~torch.isfinite(values)
    bad = bad.reshape(values.shape[0], -1).any(1).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"row {i} of X: its {what} under the fitted {model} is not "
            f"{'a number' if what == 'log-density' else 'finite'}: the sample lies so far from "
            f"the model (largest |value| in the row: "
            f"{float(X[i].abs().nan_to_num(nan=0.0).max()):.3g}) that the arithmetic "
            f"overflows {str(values.dtype).removeprefix('torch.')}; rescale the data "
            "(standardise the columns) and fit again, or fit in float64"
        )


def mean_score(log_likelihoods, sample_weight=None) -> float:
    """The mean of the log-likelihoods (n,) of the samples, weighted by ``sample_weight`` (n,)
    when given: Σ w_n ℓ_n / Σ w_n, what ``score`` returns."""
    ll = torch.as_tensor(log_likelihoods)
    if sample_weight is None:
        return float(ll.mean())
    w = check_sample_weight(sample_weight, len(ll), dtype=ll.dtype, device=ll.device)
    # a row of weight 0 counts for nothing, even one of log-likelihood -inf (0 · -inf: NaN)
    return float(torch.where(w > 0, w * ll, 0.0).sum() / w.sum())


class CriteriaMixin:
    """BIC and AIC (Schwarz 1978; Akaike 1974) from ``_total_log_likelihood`` (default: the
    mean log-likelihood ``score`` times the number of rows) and ``_n_parameters()``; extra
    arguments (an HMM's ``lengths``) go to the log-likelihood.

    ``sample_weight`` (by keyword, for the models whose ``score`` takes it) are frequency
    weights, as in ``fit``: log L = Σ w_n log p(x_n) and BIC's n = Σ w_n, so integer weights
    give the criteria of the rows repeated (and weights scaled by c scale log L by c)."""

    def _n_parameters(self) -> int:
        raise NotImplementedError

    @staticmethod
    def _n_rows(X) -> int:
        return X.shape[0] if hasattr(X, "shape") else len(X)

    def _n_observations(self, X, sample_weight=None) -> float:
        """BIC's n: the rows of X, or the sum of their weights (frequency weights)."""
        n = self._n_rows(X)
        if sample_weight is None:
            return n
        return float(check_sample_weight(sample_weight, n, dtype=torch.float64, device="cpu").sum())

    def _weights_given(self, X, args, kwargs):
        """The ``sample_weight`` among the arguments of ``score``, by keyword or by position
        (``bic(X, None, w)``): one passed by position counted rows, not weights."""
        try:
            bound = inspect.signature(self.score).bind(X, *args, **kwargs)
        except TypeError:  # score refuses these arguments itself, in its own words
            return kwargs.get("sample_weight")
        return bound.arguments.get("sample_weight")

    def _total_log_likelihood(self, X, *args, **kwargs) -> float:
        n = self._n_observations(X, self._weights_given(X, args, kwargs))
        return self.score(X, *args, **kwargs) * n

    def bic(self, X, *args, **kwargs):
        """Bayesian information criterion: −2 log L + p log n (lower is better)."""
        log_l = self._total_log_likelihood(X, *args, **kwargs)
        n = self._n_observations(X, self._weights_given(X, args, kwargs))
        return -2 * log_l + self._n_parameters() * math.log(n)

    def aic(self, X, *args, **kwargs):
        """Akaike information criterion: −2 log L + 2p (lower is better)."""
        return -2 * self._total_log_likelihood(X, *args, **kwargs) + 2 * self._n_parameters()


class MixtureMixin(EMEstimator):
    """scikit-learn's mixture API from ``_log_joint(X) -> (n, k)`` and
    ``_sample_component(params, k, count, gen) -> (count, d)``."""

    def _log_joint(self, X: torch.Tensor) -> torch.Tensor:
        """log π_k + log p(x_n | θ_k): (n, k)."""
        raise NotImplementedError

    def _sample_component(self, params: dict, k: int, count: int, gen) -> torch.Tensor:
        raise NotImplementedError

    def _record_degenerate(self, found: dict, X: torch.Tensor | None) -> None:
        """Set ``degenerate_components_`` from ``found`` (component → evidence, see
        :func:`~latentfit.em.gaussian.degenerate_components`) and, if any, warn naming them and,
        when the data is in memory, their rows."""
        self.degenerate_components_ = sorted(found)
        if not found:
            return
        rows = None
        if X is not None:
            label = self._log_joint(X).argmax(1)  # (n,)
            rows = {k: (label == k).nonzero().flatten().tolist() for k in found}
        warnings.warn(
            describe_degenerate(type(self).__name__, found, rows, "reg_covar"),
            DegenerateComponentWarning,
            stacklevel=user_stacklevel(),
        )

    def _log_joint_chunks(self, X: torch.Tensor) -> torch.Tensor:
        """:meth:`_log_joint` over chunks of rows: (n, k). The densities build (rows, k, d)
        temporaries, which for all of X at once leave the cache (benchmarks/README.md)."""
        k = self._n_components() if hasattr(self, "_n_components") else self.n_components
        rows = default_chunk_rows(X.shape[1], k)
        if X.shape[0] <= rows:
            return self._log_joint(X)
        return torch.cat([self._log_joint(X[i : i + rows]) for i in range(0, X.shape[0], rows)])

    def _log_joint_rows(self, X: torch.Tensor) -> torch.Tensor:
        """:meth:`_log_joint_chunks`, where no sample's log-density may be NaN: (n, k)."""
        out = self._log_joint_chunks(X)
        check_scored(out, X, type(self).__name__)
        return out

    def _log_joint_labelled(self, X: torch.Tensor) -> torch.Tensor:
        """:meth:`_log_joint_rows` for the component of every sample: a sample of zero density
        under every component has none."""
        out = self._log_joint_rows(X)
        none = (out == -math.inf).all(1).nonzero()
        if len(none):
            i = int(none[0])
            raise DataError(
                f"row {i} of X has zero density under every component of the fitted "
                f"{type(self).__name__}: {self._why_impossible(X, i)}"
            )
        return out

    def _why_impossible(self, X: torch.Tensor, i: int) -> str:
        """Why row ``i`` of X has zero density under every component, and what to try."""
        return (
            "its log-density underflows to -inf, so it belongs to none of them; check the "
            "row, or rescale the data and fit again"
        )

    def score_samples(self, X):
        """log p(x) of every sample: (n,)."""
        return torch.logsumexp(self._log_joint_rows(self._check(X)), 1).cpu().numpy()

    def score(self, X, y=None, sample_weight=None):
        """Mean log-likelihood per sample (weighted by ``sample_weight`` when given)."""
        return mean_score(self.score_samples(X), sample_weight)

    def predict(self, X):
        """The most probable component of each sample: (n,) int."""
        return self._log_joint_labelled(self._check(X)).argmax(1).cpu().numpy()

    def predict_proba(self, X):
        """Responsibilities p(z = k | x): (n, k), rows sum to one."""
        return torch.softmax(self._log_joint_labelled(self._check(X)), 1).cpu().numpy()

    def sample(self, n_samples=1):
        """Draw ``n_samples`` from the fitted mixture: returns (X (n, d), labels (n,)), grouped
        by component."""
        check_is_fitted(self, "_params")
        n_samples = check_sample_count(n_samples, self.n_features_in_, device=self._device)
        gen = make_generator(self.random_state, self._device)
        p = self._params
        draws = torch.multinomial(
            p["weights"].double().cpu(), n_samples, replacement=True, generator=cpu_generator(gen)
        )
        counts = torch.bincount(draws, minlength=len(p["weights"]))  # (k,)
        xs, ys = [], []
        for k, c in enumerate(counts.tolist()):
            if c:
                xs.append(self._sample_component(p, k, c, gen))
                ys.append(torch.full((c,), k, dtype=torch.int64))
        return torch.cat(xs).cpu().numpy(), torch.cat(ys).numpy()
