"""What the fitted estimators of latentfit share: input checks, the run record, persistence and
the mixture API (score/predict/sample/BIC/AIC) built on two hooks.

:class:`FittedModel` holds what every EM/VI estimator does the same way (dtype/device, the
checks of X at fit and predict time, the record of the driver's result, save/load).
:class:`MixtureMixin` adds scikit-learn's mixture API from ``_log_joint(X) -> (n, k)``
= log π_k + log p(x_n | θ_k) (Bishop 2006 eq. 9.23 before normalising), and
:class:`CriteriaMixin` BIC/AIC (Schwarz 1978; Akaike 1974) from ``score`` and
``_n_parameters()``. The helpers below check the parameters that share their meaning across
estimators, with the same messages everywhere.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from latentfit._validation import (
    as_float_tensor,
    check_feature_names,
    check_positive_int,
    check_sample_weight,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from latentfit.em.data import default_chunk_rows
from latentfit.em.driver import EMResult, run_em
from latentfit.em.kmeans import kmeans, kmeans_plusplus, nearest_center
from latentfit.em.stream import EMStream, prepare_stream
from latentfit.errors import DataError, LatentfitError, ModelFileError, ParameterError
from latentfit.io import check_fields
from latentfit.io import save as _save

__all__ = [
    "INIT_PARAMS",
    "CriteriaMixin",
    "FittedModel",
    "MixtureMixin",
    "check_choice",
    "check_em_counts",
    "check_missing",
    "check_n_samples",
    "check_non_negative",
    "check_tol",
    "cpu_generator",
    "initial_resp",
    "match_clusters",
]

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


# ---------------------------------------------------------------------- parameter checks
def check_em_counts(n_components: int, n_init: int, max_iter: int) -> None:
    """n_components ≥ 1, n_init ≥ 1, max_iter ≥ 0."""
    check_positive_int(n_components, "n_components")
    check_positive_int(n_init, "n_init")
    check_positive_int(max_iter, "max_iter", minimum=0)


def check_choice(value, name: str, choices: tuple) -> None:
    if value not in choices:
        raise ParameterError(f"{name} must be one of {choices}, got {value!r}")


def _is_real(value) -> bool:
    """A plain real number (Python or numpy scalar), not a bool, a string or an array."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def check_non_negative(value, name: str) -> None:
    """A finite number >= 0 (NaN and inf refused: neither is a setting EM can use)."""
    if not (_is_real(value) and math.isfinite(value) and value >= 0):
        raise ParameterError(f"{name} must be a finite number >= 0, got {value!r}")


def check_tol(value, name: str = "tol", *, allow_negative: bool = False) -> None:
    """A convergence tolerance: a number, not NaN and not +inf (which would stop every fit
    after one iteration). With ``allow_negative`` (the HMMs, as hmmlearn) any value down to
    -inf is accepted and means "run every iteration"; otherwise it must be >= 0."""
    ok = _is_real(value) and not math.isnan(value) and value != math.inf
    if ok and not allow_negative:
        ok = value >= 0
    if not ok:
        what = (
            "a number below +inf (-inf: run every iteration)"
            if allow_negative
            else ("a finite number >= 0")
        )
        raise ParameterError(f"{name} must be {what}, got {value!r}; e.g. {name}=1e-3")


def check_missing(missing) -> None:
    if missing not in ("error", "marginalize"):
        raise ParameterError(f"missing must be 'error' or 'marginalize', got {missing!r}")


def check_n_samples(n: int, k: int) -> None:
    """At least as many samples as components (scikit-learn's message)."""
    if n < k:
        raise DataError(
            f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}: "
            "every component needs a sample to start from; pass more rows or a smaller "
            "n_components"
        )


# ---------------------------------------------------------------------- initialisation
def initial_resp(
    init_params: str,
    X: torch.Tensor,
    w: torch.Tensor,
    k: int,
    gen: torch.Generator,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Starting responsibilities (n, k) by scikit-learn's ``init_params`` methods.

    "random": uniform draws normalised per row; otherwise hard assignments: k-means clusters,
    or every sample joined to the nearest of k centres drawn by k-means++ or from the data
    (∝ weight, without replacement). With ``labels`` (n,) (-1 unknown) the clusters are
    renumbered to agree with the labelled samples (:func:`match_clusters`).
    """
    n, dt, dev = X.shape[0], X.dtype, X.device
    if init_params == "random":
        resp = torch.rand(n, k, generator=gen, dtype=dt, device=dev)  # (n, k)
        return resp / resp.sum(1, keepdim=True)
    if init_params == "kmeans":
        clusters = kmeans(X, k, w, gen)[1]
    else:
        if init_params == "k-means++":
            idx = kmeans_plusplus(X, k, w, gen)
        else:  # random_from_data: k distinct samples, drawn ∝ weight
            idx = torch.multinomial(w.cpu().double(), k, replacement=False, generator=gen)
        # Each sample joins its nearest chosen center, so every component starts with data.
        clusters = nearest_center(X, X[idx.to(dev)])  # (n,)
    if labels is not None:
        clusters = match_clusters(clusters, labels, k)
    return torch.nn.functional.one_hot(clusters, k).to(dt)


def match_clusters(clusters: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Renumber initial clusters to agree with the given labels (greedy on the contingency
    table), so that EM starts in the basin the labelled samples point to."""
    known = labels >= 0
    table = torch.zeros(k, k, dtype=torch.float64)
    table.index_put_(
        (clusters[known].cpu(), labels[known].cpu()),
        torch.ones(int(known.sum()), dtype=torch.float64),
        accumulate=True,
    )
    perm = torch.full((k,), -1, dtype=torch.long)
    for _ in range(k):
        c, lab = divmod(int(table.argmax()), k)
        if table[c, lab] < 0:
            break
        perm[c] = lab
        table[c, :] = -1
        table[:, lab] = -1
    free = [lab for lab in range(k) if lab not in perm.tolist()]
    perm[perm < 0] = torch.tensor(free, dtype=torch.long)
    return perm.to(clusters.device)[clusters]


def cpu_generator(gen: torch.Generator) -> torch.Generator:
    """``gen`` itself on CPU; for an accelerator generator, a CPU one seeded from it
    (torch.multinomial on CPU tensors needs a CPU generator)."""
    if gen.device.type == "cpu":
        return gen
    g = torch.Generator()
    g.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device).item()))
    return g


# ---------------------------------------------------------------------- estimators
class FittedModel:
    """dtype/device, checks of X, the record of a driver run and persistence.

    The estimator keeps its fitted tensors in ``_params`` and sets its public attributes from
    them in ``_set_params_tensors``; ``missing`` (when it has one) decides whether NaN is allowed.
    """

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

    def _user_tensor(self, value, name: str, shape) -> torch.Tensor:
        """A user-given array argument (``weights_init``, ``mean_prior``...) of a fixed shape."""
        t = as_float_tensor(value, name=name, dtype=self._dtype, device=self._device, ndim=None)
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
    ) -> EMStream:
        """A source of :mod:`latentfit.em.sources` set up for this estimator (device, dtype,
        chunk size, NaN kept when ``missing="marginalize"``) with ``hooks`` wrapped to initialise
        from its in-memory sample: what ``fit(source)`` hands to :meth:`_run_em`. ``batch``,
        ``init_data`` and ``check`` are :func:`~latentfit.em.stream.prepare_stream`'s."""
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
        return stream

    def _run_em(self, hooks, data, reduce=None) -> EMResult:
        """The one EM driver with this estimator's settings; a warm start (``warm_start`` and
        a previous fit) continues from the fitted parameters with a single run."""
        warm = getattr(self, "warm_start", False) and hasattr(self, "_params")
        return run_em(
            hooks,
            data,
            reduce=reduce,
            n_init=1 if warm else getattr(self, "n_init", 1),
            max_iter=self.max_iter,
            tol=self.tol,
            init_params=self._params if warm else None,
            generator=make_generator(self.random_state, self._device),
            verbose=self.verbose,
            name=type(self).__name__,
        )

    def _store_result(self, result: EMResult, *, restarts: bool = True) -> None:
        """The fitted parameters and the run record of :func:`~latentfit.em.driver.run_em`."""
        self._set_params_tensors(result.params)
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
        check_is_fitted(self, "_params")
        return _save(self, path)

    #: The settings beyond the tensors that ``save`` writes and ``load`` may restore, with
    #: their kinds (see :func:`latentfit.io.check_fields`); a subclass declares its own
    #: ``_extra_state`` entries here, and a model file can set nothing else.
    _state_fields: ClassVar[dict[str, str]] = {
        "converged_": "bool",
        "n_iter_": "int",
        "lower_bound_": "float",
        "lower_bounds_": "floats",
        "n_features_in_": "int",
        "feature_names_in_": "strs",
    }

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
            **self._extra_state(),
        }
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        return dict(self._params), extra

    def _restore_params(self, tensors: dict, extra: dict) -> None:
        """Set the fitted tensors back (a subclass may take its own entries out of ``extra``)."""
        self._set_params_tensors(tensors)

    def _set_state(self, tensors, extra):
        extra = check_fields(extra, type(self), required=("n_features_in_",))
        if extra["n_features_in_"] < 1:
            raise ModelFileError("the model file's field 'extra.n_features_in_' must be >= 1")
        dev, dt = self._device, self._dtype
        self._restore_params({k: v.to(device=dev, dtype=dt) for k, v in tensors.items()}, extra)
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
            raise ModelFileError(f"{why} ({type(err).__name__}: {err})") from None


class CriteriaMixin:
    """BIC and AIC from ``score`` (mean log-likelihood) and ``_n_parameters()``."""

    def _n_parameters(self) -> int:
        raise NotImplementedError

    @staticmethod
    def _n_rows(X) -> int:
        return X.shape[0] if hasattr(X, "shape") else len(X)

    def bic(self, X):
        """Bayesian information criterion: −2 log L + p log n (lower is better)."""
        n = self._n_rows(X)
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X):
        """Akaike information criterion: −2 log L + 2p (lower is better)."""
        return -2 * self.score(X) * self._n_rows(X) + 2 * self._n_parameters()


class MixtureMixin(FittedModel):
    """scikit-learn's mixture API from ``_log_joint(X) -> (n, k)`` and
    ``_sample_component(params, k, count, gen) -> (count, d)``."""

    def _log_joint(self, X: torch.Tensor) -> torch.Tensor:
        """log π_k + log p(x_n | θ_k): (n, k)."""
        raise NotImplementedError

    def _sample_component(self, params: dict, k: int, count: int, gen) -> torch.Tensor:
        raise NotImplementedError

    def _log_joint_rows(self, X: torch.Tensor) -> torch.Tensor:
        """:meth:`_log_joint` over chunks of rows: (n, k). The densities build (rows, k, d)
        temporaries, which for all of X at once leave the cache (410 MB at n = 200,000,
        d = k = 16) and made the inference methods several times slower."""
        k = self._n_components() if hasattr(self, "_n_components") else self.n_components
        rows = default_chunk_rows(X.shape[1], k)
        if X.shape[0] <= rows:
            return self._log_joint(X)
        return torch.cat([self._log_joint(X[i : i + rows]) for i in range(0, X.shape[0], rows)])

    def score_samples(self, X):
        """log p(x) of every sample: (n,)."""
        return torch.logsumexp(self._log_joint_rows(self._check(X)), 1).cpu().numpy()

    def score(self, X, y=None, sample_weight=None):
        """Mean log-likelihood per sample (weighted by ``sample_weight`` when given)."""
        ll = torch.from_numpy(self.score_samples(X))
        if sample_weight is None:
            return float(ll.mean())
        w = check_sample_weight(sample_weight, len(ll), dtype=ll.dtype, device="cpu")
        return float((w * ll).sum() / w.sum())

    def predict(self, X):
        """The most probable component of each sample: (n,) int."""
        return self._log_joint_rows(self._check(X)).argmax(1).cpu().numpy()

    def predict_proba(self, X):
        """Responsibilities p(z = k | x): (n, k), rows sum to one."""
        return torch.softmax(self._log_joint_rows(self._check(X)), 1).cpu().numpy()

    def sample(self, n_samples=1):
        """Draw ``n_samples`` from the fitted mixture: returns (X (n, d), labels (n,)), grouped
        by component."""
        check_is_fitted(self, "_params")
        n_samples = check_positive_int(n_samples, "n_samples")
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
