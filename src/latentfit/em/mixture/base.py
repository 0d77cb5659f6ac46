"""What every non-Gaussian finite mixture shares: scikit-learn's estimator API over the EM driver.

A mixture p(x) = Σ_k π_k p(x | θ_k) is fitted by EM (Dempster et al. 1977; McLachlan & Peel
2000, ch. 2). A subclass only supplies its component family as small adapters to pure tensor
functions: the component log-densities (n, k), the additive statistics Σ r T(x), the (MAP)
M-step from them, the log prior, sampling and the parameter count. Everything else — checks,
restarts, semi-supervised labels, empty components and ICL here; predict/score/sample, BIC/AIC
and save/load in :mod:`latentfit.em.base`, shared with the Gaussian models — is written once.

Semi-supervised fitting: ``fit(X, y)`` with ``y[i] = -1`` for an unlabelled sample and a
component index otherwise. A labelled sample's responsibilities are fixed to its label, so EM
maximises log p(X_unlabelled) + log p(X_labelled, z = y) (McLachlan & Peel 2000, §2.19;
Nigam et al. 2000).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin

from latentfit._validation import (
    check_choice,
    check_em_counts,
    check_n_samples,
    check_no_nan_labels,
    check_sample_weight,
    check_tol,
)
from latentfit.em.base import CriteriaMixin, EMFit, MixtureMixin
from latentfit.em.edited import checked_edits, fitted_params, is_edited, refuse_edits, warm
from latentfit.em.gaussian import component_mass
from latentfit.em.initialize import INIT_PARAMS, initial_resp
from latentfit.em.mixture.priors import DirichletPrior, dirichlet_setting
from latentfit.em.online import OnlineEMMixin
from latentfit.em.sources.tensors import default_chunk_rows
from latentfit.errors import BatchRowError, DataError, ParameterError

__all__ = [
    "BaseMixture",
    "LabelledChunks",
    "check_labels",
    "check_weighted_rows",
    "first_offending",
    "fit_arrays",
    "refuse_source_labels",
]


@dataclass
class LabelledChunks:
    """Row chunks ``(X, w, y)``; ``y`` is None when no sample is labelled."""

    X: torch.Tensor  # (n, d)
    weights: torch.Tensor  # (n,)
    labels: torch.Tensor | None  # (n,) int64, -1 = unknown
    chunk_rows: int = 4096

    def __iter__(self) -> Iterator[tuple]:
        n = self.X.shape[0]
        for i in range(0, n, self.chunk_rows):
            j = min(n, i + self.chunk_rows)
            y = None if self.labels is None else self.labels[i:j]
            yield self.X[i:j], self.weights[i:j], y


def first_offending(
    bad: torch.Tensor, X: torch.Tensor, before: str, after: str = ""
) -> BatchRowError:
    """The error 'before row i, column j (value v) after' for the first True of a (n, d)
    mask, as a :class:`BatchRowError` (a chunk of a data source re-raises it naming the row of
    the source)."""
    i, j = (int(v) for v in bad.nonzero()[0])
    text = f"row {{row}}, column {j} (value {X[i, j].item():g})"
    return BatchRowError(i, _braced(before) + text + _braced(after))


def _braced(text: str) -> str:
    """``text`` as literal text of a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")


def check_labels(y, n: int, k: int, device, name: str = "y") -> torch.Tensor | None:
    """Semi-supervised labels (n,) with -1 for unknown; None when every label is unknown.
    ``name``: the argument's name in a message (GaussianMixture's is ``labels``)."""
    if y is None:
        return None
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise DataError(f"{name} must have shape ({n},) to match X, got {arr.shape}")
    if arr.dtype.kind == "f":
        check_no_nan_labels(arr, name, "component")
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if len(bad):
            i = int(bad[0])
            raise DataError(
                f"{name}[{i}] = {arr[i]} is not a component index: {name} must hold integer "
                "component indices, with -1 for unlabelled"
            )
    elif arr.dtype.kind not in "iub":
        raise DataError(f"{name} must hold integer component indices, with -1 for unlabelled")
    t = torch.as_tensor(arr.astype(np.int64), device=device)
    bad = ((t < -1) | (t >= k)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"{name}[{i}] = {int(t[i])} is not a component index in 0..{k - 1} nor -1 (unlabelled)"
        )
    return t if bool((t >= 0).any()) else None


def fit_arrays(model, X, sample_weight, labels, k: int, name: str = "y"):
    """The in-memory data of a mixture's fit, checked: X (n, d) (``model._validate_X``), at
    least ``k`` samples, the sample weights (n,) and the component labels (n,) (None when all
    are unknown); sets ``model.n_features_in_``. Returns (X, weights, labels)."""
    X = model._validate_X(X, reset=True)
    n, d = X.shape
    check_n_samples(n, k)
    w = check_sample_weight(sample_weight, n, dtype=X.dtype, device=X.device)
    check_weighted_rows(w, k)
    labels = check_labels(labels, n, k, X.device, name)
    model.n_features_in_ = d
    return X, w, labels


def check_weighted_rows(w: torch.Tensor, k: int, where: str = "X") -> None:
    """DataError unless at least ``k`` rows have a positive weight ``w`` (n,): a row of weight
    0 adds nothing, so with fewer weighted rows than components some components would start
    from the same row (or from none) and stay copies of each other, as ``n_samples <
    n_components`` is refused for."""
    positive = int((w > 0).sum())
    if positive < k:
        raise DataError(
            f"only {positive} of the {len(w)} samples in {where} have a positive sample_weight, "
            f"but n_components = {k}: every component needs a sample of positive weight to "
            "start from (rows of weight 0 add nothing); give more rows a positive weight or "
            "use a smaller n_components"
        )


def weight_overflow(stats, w: torch.Tensor) -> int | None:
    """The first column whose weighted sums ``stats(w)`` (a dict of sums over the rows, each
    (..., d) or a scalar, from the weights (n,)) overflow the dtype where ``stats`` of the same
    rows of weight 1 do not: the weights, not the values, overflow there. None where none,
    at once for weights of at most 1 (an unweighted fit): |w s| <= |s| term by term."""
    if w.numel() == 0 or float(w.max()) <= 1.0:
        return None
    weighted, unit = stats(w), stats((w > 0).to(w.dtype))
    for name, s in weighted.items():
        over = ~torch.isfinite(s) & torch.isfinite(unit[name])  # (..., d) or ()
        if bool(over.any()):
            return int(over.nonzero()[0, -1]) if over.dim() else 0
    return None


def weight_overflow_message(w: torch.Tensor, what: str) -> str:
    """A refusal of sample weights ``w`` (n,) that make ``what`` overflow their dtype where
    the same rows of weight 1 do not: the weights, not the data, are to be rescaled."""
    big = torch.finfo(w.dtype).max
    label = str(w.dtype).removeprefix("torch.")
    return (
        f"the sample weights (Σ w = {float(w.sum()):.3g}, the largest {float(w.max()):.3g}) "
        f"make {what} exceed {label}'s largest number, {big:.3g}, which the same rows of "
        "weight 1 do not. Rescale sample_weight (e.g. divide it by its maximum; the fitted "
        "parameters depend only on the ratios of the weights)"
    )


def refuse_source_labels(labels, name: str) -> None:
    """Component labels go with an in-memory fit only: ParameterError when ``labels`` (the
    fit's argument ``name``) come with a data source."""
    if labels is not None:
        raise ParameterError(f"{name} are not supported for streamed sources; fit in memory")


class BaseMixture(OnlineEMMixin, MixtureMixin, CriteriaMixin, DensityMixin, BaseEstimator):
    """Shared machinery of the finite mixtures in :mod:`latentfit.em`; not used directly.

    ``fit`` takes an array or a source of :mod:`latentfit.em.sources.chunks` (memory-mapped .npy,
    Parquet, a stream of arrays, a :class:`~latentfit.em.sources.distributed.DistributedSource`), read
    chunk by chunk on every pass: with the same ``chunk_rows`` and at most ``init_rows`` rows it
    is the in-memory fit. ``fit(X, y)`` with component labels ``y`` (-1 for unlabelled
    samples) is semi-supervised (in memory only). ``partial_fit`` makes one stepwise-EM update per mini-batch
    (:mod:`latentfit.em.online`; step sizes from ``learning_decay`` and ``learning_offset``).

    Subclasses set ``_param_names`` (the fitted tensors besides ``weights``, each with the
    component on the first axis) and implement the component adapters below (``_component_*``).
    """

    _param_names: tuple[str, ...] = ()

    # The arguments every mixture shares; a subclass adds its own and passes these on.
    def __init__(
        self,
        n_components=1,
        *,
        tol=1e-3,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration=1.0,
        random_state=None,
        warm_start=False,
        verbose=0,
        device=None,
        dtype="float64",
        chunk_rows=None,
        learning_decay=0.6,
        learning_offset=0.0,
    ):
        self._set_arguments(locals())

    def __init_subclass__(cls, **kwargs):
        """A subclass whose ``__init__`` passes the shared arguments on as ``**kwargs`` shows
        them in its signature all the same (``help``, editors, scikit-learn's checks): its
        own parameters, then every keyword-only one of its parent's not among them."""
        super().__init_subclass__(**kwargs)
        init = vars(cls).get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if len(own) == len(sig.parameters):  # no **kwargs: the signature is already whole
            return
        names = {p.name for p in own}
        parent = inspect.signature(cls.__mro__[1].__init__).parameters.values()
        shared = [p for p in parent if p.kind is p.KEYWORD_ONLY and p.name not in names]
        init.__signature__ = sig.replace(parameters=own + shared)

    @classmethod
    def _get_param_names(cls):
        # Subclasses add their own arguments and pass the shared ones on as **kwargs; the
        # parameters are the union of every __init__ signature along the class hierarchy.
        names: set[str] = set()
        for klass in cls.__mro__:
            init = vars(klass).get("__init__")
            if init is None or not issubclass(klass, BaseMixture):
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    names.add(p.name)
        return sorted(names)

    # ------------------------------------------------------------ subclass adapters
    def _check_component_data(self, X: torch.Tensor, reset: bool) -> None:
        """Raise ValueError naming the first entry outside the family's support (``reset``:
        at fit time, before any fitted setting exists)."""

    def _prepare_component_data(self, X: torch.Tensor) -> None:
        """Learn data-dependent settings at fit time (e.g. the number of categories)."""

    def _check_weighted_data(self, X: torch.Tensor, w: torch.Tensor) -> None:
        """Raise DataError where the sample weights ``w`` (n,), not the rows ``X``, make the
        model's statistics overflow (the Gaussian models check their moments themselves)."""

    def _component_log_prob(self, params: dict, X: torch.Tensor) -> torch.Tensor:
        """log p(x_n | θ_k): (n, k)."""
        raise NotImplementedError

    def _zero_cells(self, params: dict, X: torch.Tensor) -> torch.Tensor | None:
        """(n, k, d) True where column j of row n is an outcome that component k gives
        probability exactly 0 (a discrete family's MLE for an outcome the fitted rows never
        show); None when there is none. ``_component_log_prob`` clamps log 0 so that the
        statistics keep 0 · log 0 = 0; :meth:`_log_joint` makes such rows -inf there."""
        return None

    #: the prior argument that keeps every outcome possible, for the messages that name one
    _prior_hint: str | None = None

    def _impossible_outcomes(self, X) -> torch.Tensor | None:
        """(n, d) True where column j of row n of X is an outcome every component of the
        fitted model gives probability 0; None when no parameter is 0."""
        X = self._check(X)
        zero = self._zero_cells(self._params, X)  # (n, k, d)
        return None if zero is None else zero.all(1)

    def _component_stats(self, X: torch.Tensor, resp: torch.Tensor) -> dict:
        """Additive statistics Σ_n r_nk T(x_n) of one chunk (``resp`` includes sample weights)."""
        raise NotImplementedError

    def _component_mstep(self, stats: dict, S0: torch.Tensor) -> dict:
        """Component parameters from the summed statistics (MAP when a prior is set)."""
        raise NotImplementedError

    def _stats_centres(self, params: dict | None, X=None, resp=None) -> dict | None:
        """{component: point (d,)} of components whose statistics are taken about a point of
        their own (passed as ``centres`` to ``_component_stats`` and ``_component_mstep``),
        from ``params``, or at the start (``params`` None) from the data ``X`` and starting
        responsibilities ``resp``; None for none (the default)."""
        return None

    def _stats_mstep(self, X, resp, S0, centres=None) -> dict:
        """``_component_mstep`` of ``_component_stats``, about ``centres`` where given."""
        if centres is None:
            return self._component_mstep(self._component_stats(X, resp), S0)
        return self._component_mstep(self._component_stats(X, resp, centres), S0, centres)

    def _prior(self):
        """The prior of the component parameters (MAP-EM), None for maximum likelihood; built,
        and so checked, by ``_check_parameters``."""
        return None

    def _component_log_prior(self, params: dict) -> torch.Tensor:
        return params["weights"].new_zeros(())

    def _sample_component(self, params: dict, k: int, count: int, gen) -> torch.Tensor:
        """``count`` draws (count, d) from component ``k``."""
        raise NotImplementedError

    def _component_n_parameters(self, d: int) -> int:
        raise NotImplementedError

    def _keep_components(self, new: dict, old: dict, keep: torch.Tensor) -> dict:
        """Parameters ``new`` with the components where ``keep`` (k,) is True taken from ``old``."""
        for name, value in new.items():
            value[keep] = old[name][keep]
        return new

    def _component_init_features(self, X: torch.Tensor) -> torch.Tensor:
        """The features k-means initialisation clusters (default: X itself)."""
        return X

    # ------------------------------------------------------------ validation
    def _weight_prior(self) -> DirichletPrior:
        return dirichlet_setting(self.weight_concentration, "weight_concentration")

    def _check_parameters(self) -> None:
        check_em_counts(self._n_components(), self.n_init, self.max_iter)
        check_choice(self.init_params, "init_params", INIT_PARAMS)
        check_tol(self.tol)
        self._weight_prior()
        self._prior()

    def _n_components(self) -> int:
        return self.n_components

    def _validate_X(self, X, *, reset: bool) -> torch.Tensor:
        # A warm start continues from the fitted parameters: the data are checked against the
        # settings they were fitted with (the categories...), not learnt afresh.
        d_fit = self._warm_width() if reset else None
        kept = {n: vars(self)[n] for n in ("feature_names_in_",) if n in vars(self)}
        X = super()._validate_X(X, reset=reset)
        if d_fit is not None:
            try:
                self._check_warm_width(X.shape[1], d_fit)
            except DataError:
                vars(self).pop("feature_names_in_", None)  # the fitted model, unchanged
                vars(self).update(kept)
                raise
        self._check_component_data(X, reset and d_fit is None)
        return X

    def _warm_width(self) -> int | None:
        """The number of features of the fitted parameters a warm start continues from, None
        for a fit from scratch; ParameterError when a setting they were fitted with changed
        (read from ``_params``)."""
        if not (self.warm_start and hasattr(self, "_params")):
            return None
        return int(self.n_features_in_)

    def _check_warm_width(self, d: int, d_fit: int) -> None:
        if d != d_fit:
            raise DataError(
                f"X has {d} features, but warm_start=True continues from the fitted "
                f"{type(self).__name__}, which has {d_fit}: pass data of {d_fit} columns, or set "
                "warm_start=False to fit afresh"
            )

    # ------------------------------------------------------------ fitting
    def fit_predict(self, X, y=None, sample_weight=None):
        fit = self._fit(X, y=y, sample_weight=sample_weight)
        if fit.X is None:  # one more pass over the stream
            return torch.cat([self._log_joint(Xc).argmax(1) for Xc, _ in fit.data]).cpu().numpy()
        return self._log_joint(fit.X).argmax(1).cpu().numpy()

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise-EM update from the mini-batch ``X`` (or one per chunk of a source); see
        :class:`~latentfit.em.online.OnlineEMMixin`. Labels are not taken: fit in memory for a
        semi-supervised fit."""
        if y is not None:
            raise ParameterError(
                "partial_fit takes no component labels (y); use fit(X, y) for them"
            )
        return super().partial_fit(X, sample_weight=sample_weight)

    def _prepare_source_fit(self, source, y=None, sample_weight=None) -> EMFit:
        refuse_source_labels(y, "labels (y)")
        return self._stream(source, sample_weight)

    def _prepare_fit(self, X, y=None, sample_weight=None) -> EMFit:
        k = self._n_components()
        X, w, labels = fit_arrays(self, X, sample_weight, y, k)
        self._prepare_component_data(X)
        self._check_weighted_data(X, w)
        self._warn_constant_columns(X, w)
        rows = self.chunk_rows or default_chunk_rows(X.shape[1], k)
        return EMFit(self._hooks(), LabelledChunks(X, w, labels, rows), X=X)

    def _warn_constant_columns(self, X: torch.Tensor, w: torch.Tensor | None) -> None:
        """Warn of columns of the rows X (n, d) of a fit that hold one value throughout (or,
        under a full covariance, depend linearly on others), where a variance floor makes up
        their variance; none by default (discrete families)."""

    def _hooks(self) -> _MixtureHooks:
        return _MixtureHooks(self)

    def _online_hooks(self) -> _MixtureHooks:
        return _MixtureHooks(self, centred=False)

    def _stream(self, source, sample_weight) -> EMFit:
        """A source read chunk by chunk (see em/sources/chunks.py). Every block is checked against the
        family's support; data-dependent settings (``_prepare_component_data``) are learnt from the in-memory
        initialisation sample, after which blocks are checked against them too."""
        k = self._n_components()
        rows = self.chunk_rows or default_chunk_rows(source.n_features, k)
        # A warm start keeps the settings of the previous fit.
        d_fit = self._warm_width()
        if d_fit is not None:
            self._check_warm_width(source.n_features, d_fit)
        prepared = [d_fit is not None]
        judged = [d_fit is None]  # a warm start reads no initialisation sample

        def check(X):
            self._check_component_data(X, not prepared[0])
            if not judged[0] and X.shape[0]:  # its variance floor judged on the first block
                judged[0] = True
                self._check_floor(X, None)

        def init_data(sample):
            check_weighted_rows(
                sample.weights, k, "the rows a data source gives to initialise from"
            )  # as fit(X, sample_weight)
            self._prepare_component_data(sample.X)
            self._check_weighted_data(sample.X, sample.weights)
            prepared[0] = True
            return LabelledChunks(sample.X, sample.weights, None, sample.chunk_rows)

        return self._prepare_source(
            source,
            sample_weight,
            self._hooks(),
            chunk_rows=rows,
            min_rows=k,
            batch=_unlabelled,
            init_data=init_data,
            check=check,
        )

    # ------------------------------------------------------------ online EM adapters
    def _online_batch(self, X, w):
        return _unlabelled(X, w)

    def _online_init_data(self, X, w):
        check_weighted_rows(w, self._n_components(), "the first batch of partial_fit")
        self._prepare_component_data(X)
        self._check_weighted_data(X, w)
        rows = self.chunk_rows or default_chunk_rows(X.shape[1], self._n_components())
        return LabelledChunks(X, w, None, rows)

    def _online_min_rows(self):
        k = self._n_components()
        return k, f"one per component ({k})"

    def _initial_resp(self, data: LabelledChunks, gen: torch.Generator) -> torch.Tensor:
        F = self._component_init_features(data.X)
        resp = initial_resp(
            self.init_params, F, data.weights, self._n_components(), gen, data.labels
        )
        if data.labels is not None:
            resp = fix_labelled(resp, data.labels)
        return resp

    def _initial_params(self, data: LabelledChunks, gen: torch.Generator) -> dict:
        resp = self._initial_resp(data, gen) * data.weights.unsqueeze(1)  # (n, k)
        S0 = resp.sum(0)
        params = self._stats_mstep(data.X, resp, S0, self._stats_centres(None, data.X, resp))
        empty = S0 <= 0
        if bool(empty.any()):
            # a start with no rows (k-means on constant or duplicated rows leaves clusters
            # empty) would be 0/0: such a component starts from all the rows instead
            whole = data.weights.unsqueeze(1).expand_as(resp)
            centres = self._stats_centres(None, data.X, whole)
            every = self._stats_mstep(data.X, whole, whole.sum(0), centres)
            params = self._keep_components(params, every, empty)
        params["weights"] = self._weight_prior().map_probs(component_mass(S0))
        return params

    def _set_params_tensors(self, params: dict) -> None:
        params = {k: v.detach() for k, v in params.items()}
        self._params = params
        for name, value in params.items():
            setattr(self, name + "_", value.cpu().numpy())
        # what the attributes were set to, to find the user's edits (see _params)
        self._published = {name: getattr(self, name + "_").copy() for name in params}
        self._fitted_k = int(params["weights"].shape[0])

    @property
    def _params(self) -> dict:
        """The fitted tensors. As GaussianMixture and the HMMs do, an edit to a fitted
        attribute (``weights_``, ``rates_``, ``means_``...: scikit-learn users set one and
        predict) is taken up here, checked as a model file's tensor is (ParameterError naming
        the attribute); a change of ``n_components`` since the fit is refused."""
        fitted = fitted_params(self)
        k = self._n_components()
        if isinstance(k, int) and k != vars(self).get("_fitted_k", k):
            raise ParameterError(
                f"n_components was set to {k} after the fit, whose parameters have "
                f"{self._fitted_k} components; fit again{warm(self)}"
            )
        self._check_fitted_settings()
        published = vars(self).get("_published")
        if not published:  # a model whose attributes are not read back (MixtureModel)
            refuse_edits(self, vars(self).get("_snapshots", {}), self._not_read_back)
            return fitted
        edited = [n for n in published if is_edited(vars(self).get(n + "_"), published[n])]
        if edited:
            self._set_params_tensors(checked_edits(self, fitted, edited))
        return fitted_params(self)  # as edited, in the model's dtype

    @_params.setter
    def _params(self, params: dict) -> None:
        vars(self)["_fitted_params"] = params

    def _check_fitted_settings(self) -> None:
        """ParameterError when a setting the fitted parameters depend on (beyond
        ``n_components``) was changed since the fit; a subclass names its own."""

    #: why a model whose fitted attributes are not read back refuses edits to them
    _not_read_back = "they are not read back: fit again"

    # ------------------------------------------------------------ inference
    def _log_joint(
        self, X: torch.Tensor, params: dict | None = None, exact: bool = True
    ) -> torch.Tensor:
        """log π_k + log p(x_n | θ_k): (n, k); -inf where row n has an outcome component k
        gives probability 0 (``exact=False``: log 0 clamped to about -708 instead, see
        :meth:`_zero_cells`)."""
        p = self._params if params is None else params
        logp = self._component_log_prob(p, X) + p["weights"].log()
        zero = self._zero_cells(p, X) if exact else None  # (n, k, d)
        return logp if zero is None else logp.masked_fill(zero.any(2), -math.inf)

    def _why_impossible(self, X: torch.Tensor, i: int) -> str:
        """Why row ``i`` of X has probability 0 under every component, and what to try (the
        end of a DataError): the outcomes the components give probability 0, when that is
        the reason, else an underflow."""
        zero = self._zero_cells(self._params, X[i : i + 1])  # (1, k, d)
        if zero is None or not bool(zero.any(2).all()):
            return super()._why_impossible(X, i)
        zero = zero[0]  # (k, d)
        prior = f", or fit with a prior that keeps every outcome possible ({self._prior_hint})"
        prior = prior if self._prior_hint else ""
        every = zero.all(0).nonzero()
        if len(every):
            j = int(every[0])
            return (
                f"column {j} holds {X[i, j].item():g}, an outcome every component gives "
                f"probability 0 (the rows it was fitted on never show it). Fit on data that "
                f"show it (warm_start=True continues from this fit){prior}"
            )
        first = [int(z.nonzero()[0]) for z in zero]  # a column of every component
        cols = ", ".join(
            f"component {k}: column {j} ({X[i, j].item():g})" for k, j in enumerate(first)
        )
        return (
            f"each component gives one of its outcomes probability 0 ({cols}). Fit on data "
            f"that show such rows{prior}"
        )

    # ------------------------------------------------------------ model selection
    def _n_parameters(self) -> int:
        return self._component_n_parameters(self.n_features_in_) + len(self._params["weights"]) - 1

    def icl(self, X):
        """Integrated completed likelihood (Biernacki, Celeux & Govaert 2000) as mclust
        computes it: BIC − 2 Σ_n log p(ẑ_n | x_n) with ẑ the MAP component (lower is better)."""
        lp = torch.log_softmax(self._log_joint_labelled(self._check(X)), 1)
        return self.bic(X) - 2 * float(lp.max(1).values.sum())


def _unlabelled(X: torch.Tensor, w: torch.Tensor) -> tuple:
    """The E-step batch of rows without labels."""
    return X, w, None


def fix_labelled(resp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Replace the responsibilities of labelled rows by their one-hot label."""
    known = labels >= 0
    if not bool(known.any()):
        return resp
    resp = resp.clone()
    resp[known] = torch.nn.functional.one_hot(labels[known], resp.shape[1]).to(resp.dtype)
    return resp


class _MixtureHooks:
    """EM hooks of a :class:`BaseMixture`: pure functions of (params, batch)."""

    def __init__(self, model: BaseMixture, centred: bool = True):
        self.model = model
        self.prior = model._weight_prior()
        # statistics about the components' own points (BaseMixture._stats_centres); stepwise
        # EM averages statistics of many E-steps, which must share one point, so it keeps all
        # of them about the fit's
        self.centred = centred

    @property
    def remedy(self) -> str:
        """What the driver suggests when a fit stops being finite, in this model's arguments
        (only some families have reg_covar)."""
        reg = "a larger regularisation (reg_covar), " if hasattr(self.model, "reg_covar") else ""
        return f"Try {reg}fewer components, scaling the data, or dtype='float64'."

    def initialize(self, data, generator):
        return self.model._initial_params(data, generator)

    def estep(self, params, batch):
        X, w, labels = batch
        logp = self.model._log_joint(X, params)  # (n, k)
        lse = torch.logsumexp(logp, 1)  # (n,)
        none = lse == -math.inf  # (n,) rows impossible under every component (see below)
        if bool(none.any()):
            logp, lse = self._impossible(X, params, logp, lse, none, w)
        resp = torch.exp(logp - lse.unsqueeze(1))
        if labels is not None:
            known = labels >= 0
            # A labelled sample contributes log p(x, z = y), not log p(x).
            lse = torch.where(known, logp.gather(1, labels.clamp_min(0).unsqueeze(1))[:, 0], lse)
            resp = fix_labelled(resp, labels)
        resp = resp * w.unsqueeze(1)
        centres = self._centres(params)
        if centres is None:
            stats = self.model._component_stats(X, resp)
        else:
            stats = self.model._component_stats(X, resp, centres)
        stats["S0"] = resp.sum(0)
        stats["loglik"] = (w * lse).sum()
        kept = w > 0  # a row of weight 0 adds nothing
        if not bool(torch.isfinite(stats["loglik"])) and bool(torch.isfinite(lse[kept].sum())):
            raise DataError(weight_overflow_message(w, "the log-likelihood (summed over the rows)"))
        stats["weight"] = w.sum()
        return stats

    def _impossible(self, X, params, logp, lse, none, w):
        """(logp, lse) where rows ``none`` have probability 0 under every component. A row of
        weight 0 adds nothing (0 · -inf would be NaN). A row of positive weight (a warm start
        or partial_fit on data with an outcome the previous fit never saw) is weighed with log
        0 clamped (``exact=False``): the components share it out by their other outcomes, and
        the M-step gives its outcome mass. A row that is -inf even so is named."""
        live = none & (w > 0)
        if bool(live.any()):
            idx = live.nonzero().flatten()
            logp = logp.clone()
            logp[idx] = self.model._log_joint(X[idx], params, exact=False)
            lse = lse.clone()
            lse[idx] = torch.logsumexp(logp[idx], 1)
            still = (lse == -math.inf) & live
            if bool(still.any()):
                raise BatchRowError(
                    int(still.nonzero()[0]),
                    "row {row} of X has zero density under every component of the "
                    f"{type(self.model).__name__}'s current parameters; check the row, or "
                    "start from other parameters (warm_start=False, or other init values)",
                )
        return logp, torch.where(none & (w <= 0), torch.zeros_like(lse), lse)

    def _centres(self, params) -> dict | None:
        return self.model._stats_centres(params) if self.centred else None

    def mstep(self, params, stats):
        S0 = stats["S0"]
        centres = self._centres(params)
        if centres is None:
            new = self.model._component_mstep(stats, S0)
        else:
            new = self.model._component_mstep(stats, S0, centres)
        empty = S0 <= 0
        if bool(empty.any()):
            # An unused component keeps its parameters; its weight goes to zero.
            new = self.model._keep_components(new, params, empty)
        new["weights"] = self.prior.map_probs(component_mass(S0))
        return new

    def lower_bound(self, params, stats):
        # MAP-EM increases the log posterior, so that is what is monitored.
        log_prior = self.prior.log_prob(params["weights"]) + self.model._component_log_prior(params)
        return float((stats["loglik"] + log_prior) / stats["weight"])
