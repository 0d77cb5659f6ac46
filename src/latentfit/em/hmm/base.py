"""The hidden Markov model estimator: hmmlearn's interface over latentfit's EM driver.

A model class only says how its emissions are initialised, scored, summarised and
re-estimated (the ``_emission_*`` methods); :class:`_HMMHooks` turns that into the four hooks
of :func:`latentfit.em.driver.run_em`, whose E-step is the forward-backward algorithm of
:mod:`latentfit.em.hmm.inference.posterior` (Baum-Welch: Baum et al. 1970; Rabiner 1989).
Fitting, its record, save/load and BIC/AIC come from the estimator base of
:mod:`latentfit.em.base`.

Parameter names, fitted attributes and methods are hmmlearn's, so that switching is a change of
import. Added: ``n_init`` restarts, ``device`` and ``dtype``, the per-iteration history
``lower_bounds_`` (total log-likelihood before every M-step) with the driver's monotonicity
check (of the log posterior under the models' priors, see ``_log_prior``: MAP-EM
raises that, and may lower the log-likelihood), and a documented recovery for states that no data visits: such a state keeps its
previous emission parameters and transition row, and an :class:`UnvisitedStateWarning` names
it (hmmlearn returns NaN parameters or zero rows there). As in hmmlearn, ``init_params=""``
continues from the fitted parameters: ``n_iter_`` and ``lower_bounds_`` then cover that call's
iterations, which continue those of the fit before it.

Partial labels: ``fit``, ``score``, ``score_samples``, ``predict_proba``, ``decode`` and
``predict`` take ``y`` (n_samples,), the known state of some steps and −1 elsewhere. Every
result is then conditioned exactly on the known states (Rabiner's recursions on emissions that
give every other state probability 0 at a known step): the likelihood is p(X, z_known), the posteriors
p(z_t | X, z_known), the Viterbi path the best one through the known states (see
:func:`latentfit.em.hmm.inference.posterior.condition_on_states`), and EM maximises
p(X, z_known). A labelling that the model makes impossible is a DataError naming the step.

``implementation`` is accepted for hmmlearn compatibility ("log" or "scaling", checked) and
selects nothing: every kernel runs the scaled recursions (Rabiner 1989, §V.A), which give the
log-space recursions' results to rounding at any sequence length, so the two values give the
same fit. It is kept, not removed, because model files store it among the constructor
arguments and hmmlearn code passes it.
"""

from __future__ import annotations

import functools
import warnings
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from latentfit._validation import (
    check_allocation,
    check_distribution,
    check_feature_names,
    check_positive_int,
    check_sample_count,
    check_state_index,
    check_tol,
    make_generator,
)
from latentfit.em.base import CriteriaMixin, EMEstimator, EMFit, check_scored
from latentfit.em.hmm.emissions import (
    HMM_REMEDY,
    dirichlet_log_prior,
    draws_in_dtype,
    map_transitions,
    with_counts,
)
from latentfit.em.hmm.inference import posterior as inference
from latentfit.em.hmm.labels import (
    SequenceRowError,
    check_labels,
    check_labels_possible,
    check_reachable,
)
from latentfit.em.hmm.monitor import (
    AttributeStateMixin,
    ConvergenceMonitor,
    OverwrittenParameterWarning,
    warn_unvisited,
)
from latentfit.em.hmm.sequences import (
    FEATURE_BYTES,
    MAX_BATCH_STEPS,
    batch_sequences,
    check_lengths,
    prepare_sequences,
    with_states,
)
from latentfit.em.hmm.settings import Prior, check_letters, check_priors
from latentfit.em.paths import markov_chain
from latentfit.errors import (
    BatchRowError,
    DataError,
    LatentfitError,
    ModelFileError,
    ParameterError,
    user_stacklevel,
)
from latentfit.io import Stored

__all__ = ["BaseHMM"]


class _HMMHooks:
    """Baum-Welch as the EM driver's hooks (:func:`latentfit.em.driver.run_em`): the E-step is
    the forward-backward algorithm of :mod:`latentfit.em.hmm.inference.posterior` on the
    model's emission log-likelihoods, the M-step the Dirichlet MAP of the start and transition
    probabilities (:func:`~latentfit.em.hmm.emissions.dirichlet_map`) plus the model's emission
    M-step. A batch is a group of whole sequences."""

    def __init__(
        self,
        model: BaseHMM,
        X: torch.Tensor | None,
        feature_bytes: int = FEATURE_BYTES,
        labels: torch.Tensor | None = None,
        lengths: list[int] | None = None,
    ):
        self.model, self.X, self.feature_bytes = model, X, feature_bytes
        self.labels = labels  # (n,) known states of the in-memory X, or None
        self.lengths = lengths  # the sequences of the whole data (X or a source's), to name a row
        # per in-memory batch: (shift, features) that stay fixed through the fit
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._feature_bytes = 0

    @property
    def remedy(self) -> str:
        """What the driver suggests when the likelihood stops being finite, in this model's
        own argument names."""
        if hasattr(self.model, "min_covar"):
            return HMM_REMEDY
        return "Try stronger priors (startprob_prior, transmat_prior), fewer states, or float64."

    def _batch_features(self, params, X):
        """The model's emission features of batch ``X`` (``_emission_features``): computed
        once per fit for in-memory data while they fit in ``feature_bytes``, else once per
        E-step (shared by the densities and the statistics); None if the model has none. A
        batch is one of the fixed views made by
        :func:`~latentfit.em.hmm.sequences.batch_sequences`."""
        m = self.model
        shift = params.get("shift")
        cached = self._features.get(id(X)) if self.X is not None else None
        if cached is not None and shift is not None and torch.equal(cached[0], shift):
            return cached[1]
        features = m._emission_features(params, X)
        if features is None or self.X is None or shift is None:
            return features
        size = features.numel() * features.element_size()
        if id(X) in self._features or self._feature_bytes + size <= self.feature_bytes:
            if id(X) not in self._features:
                self._feature_bytes += size
            self._features[id(X)] = (shift.clone(), features)
        return features

    def initialize(self, data, generator):
        if self.X is not None:
            if self.labels is None:
                return self.model._initial_params(self.X, generator)
            return self.model._initial_params(self.X, generator, self.labels)
        # A source: its in-memory sample (all rows, in order, when small: then the start is
        # the in-memory fit's), the same parameters on every process.
        sample = data.init_chunks(generator)
        X = self.model._stream_batch(sample.X)
        if not getattr(self, "_floor_judged", False):  # once, however many inits read it
            self._floor_judged = True
            self.model._check_floor(X)
        return data.sync_params(self.model._initial_params(X, generator))

    def estep(self, params, batch):
        X, lengths, *known = batch  # in memory with labels: (X, lengths, states)
        states = known[0] if known else None
        m = self.model
        if self.X is None:  # streamed: the source's tensor
            X = m._stream_batch(X)
        features = self._batch_features(params, X)
        if features is None:
            ll = m._fit_emissions(params, X, m._emission_log_likelihood(params, X))
            stats_of = functools.partial(m._emission_stats, params, X)
        else:
            ll = m._emission_log_likelihood(params, X, features)
            stats_of = functools.partial(m._emission_stats, params, X, features=features)
        # ll is a temporary: the E-step reuses its buffer
        post = inference.posterior(
            ll, params["startprob"], params["transmat"], lengths, overwrite=True, states=states
        )
        if not bool(torch.isfinite(post.log_likelihood)):
            # a row no state can emit (one a fit that keeps its emissions cannot learn):
            # named in the batch, and by the EM driver as a row of the fit's data
            m._log_likelihoods(params, X, lengths, self.lengths)
            m._check_labels_possible(params, X, lengths, states)
        return with_counts(stats_of(post.posteriors), post)

    def mstep(self, params, stats):
        m = self.model
        new, rows = map_transitions(m, params, stats)
        emis, states = m._emission_mstep(params, stats)
        new.update(emis)
        unvisited = sorted(set(rows) | set(states))
        warn_unvisited(
            m, unvisited, "no data is explained by them", "parameters and transition rows"
        )
        return new

    def lower_bound(self, params, stats):
        return float(stats["log_likelihood"].sum())

    def log_prior(self, params):
        """The log prior of ``params`` that MAP-EM adds (see :meth:`BaseHMM._log_prior`): the
        driver follows the log-likelihood plus it, which EM never lowers."""
        return self.model._log_prior(params)

    def decrease_slack(self, params):
        """How far the log-likelihood of ``params`` may lie below the previous one because
        their M-step's covariance update rounds (``params["rounding"]``, set by the Gaussian
        models' full and tied updates, see
        :func:`~latentfit.em.hmm.emissions.covariance_rounding`); 0 for the others."""
        rounding = params.get("rounding")
        return 0.0 if rounding is None else float(rounding)


class BaseHMM(AttributeStateMixin, EMEstimator, CriteriaMixin, BaseEstimator):
    """Shared machinery of the HMM classes; use :class:`GaussianHMM` and friends. The fitted
    parameters are hmmlearn's attributes (``startprob_``, ``transmat_`` and the emissions'),
    the iteration setting is ``n_iter`` and a fit stops when the log-likelihood gains less
    than ``tol`` (hmmlearn's rule)."""

    _emission_letters = ""
    _emission_attributes: tuple[str, ...] = ()
    _fitted_attribute = "startprob_"
    _max_iter_name = "n_iter"
    _convergence = "delta"
    #: whether an emission probability of 0 is exact (a symbol, category or count a state
    #: never emits): score then gives -inf for a row no state can emit
    _exact_zeros = True

    def _tensor(self, value, name: str = "a parameter") -> torch.Tensor:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ParameterError(f"{name} must be an array of numbers, got {value!r:.80}") from None
        return torch.as_tensor(arr, dtype=self._dtype, device=self._device)

    def _check_parameters(self):
        for name in ("n_components", "n_init"):  # True is an int, but not a count
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if self.algorithm not in ("viterbi", "map"):
            raise ParameterError(f"algorithm must be 'viterbi' or 'map', got {self.algorithm!r}")
        if self.implementation not in ("log", "scaling"):
            raise ParameterError(
                f"implementation must be 'log' or 'scaling', got {self.implementation!r}"
            )
        n_iter, tol = self.n_iter, self.tol
        if isinstance(n_iter, bool) or not isinstance(n_iter, int | np.integer) or n_iter < 0:
            raise ParameterError(f"n_iter must be an integer >= 0, got {n_iter!r}")
        check_tol(tol, allow_negative=True)
        floor = getattr(self, "min_covar", 1.0)  # the Gaussian models' variance floor
        if (
            isinstance(floor, bool)
            or not isinstance(floor, int | float | np.floating)
            or not (0 < floor < float("inf"))
        ):
            raise ParameterError(f"min_covar must be a positive number, got {floor!r}")
        check_letters(self)
        check_priors(self)  # values; the shapes that need n_features once the data give it

    def _prior_specs(self, d: int | None) -> dict[str, Prior]:
        """Every prior setting and what it must be (:class:`~latentfit.em.hmm.settings.Prior`)
        for ``d`` features (None: not known yet); a model adds its emissions' priors."""
        k = self.n_components
        dirichlet = "Dirichlet concentrations, {}; 1 = no prior, < 1 favours zeros"
        return {
            "startprob_prior": Prior("positive", ((k,),), dirichlet.format("one per state")),
            "transmat_prior": Prior("positive", ((k, k),), dirichlet.format("a row per state")),
        }

    def _prior_features(self) -> int:
        """The size of the emissions' last axis that the priors' shapes follow, once the
        data have fixed it (the number of features; the symbols of a categorical model)."""
        return self.n_features

    def _check_batch(self, X: torch.Tensor) -> None:
        """Checks of a batch of rows that ``partial_fit`` adds to a fitted model's statistics,
        beyond those of scoring (default: none)."""

    def _check_prior_shapes(self) -> None:
        """Every prior against the shapes the data fixed (see ``_prior_specs``)."""
        check_priors(self, self._prior_features())

    # ------------------------------------------------------------------ parameters
    def _needs_init(self, letter: str, name: str) -> bool:
        """Whether fit initialises parameter ``name``: its letter is in ``init_params``, or
        it is not set. One set by hand on a model not fitted yet is then overwritten: said
        by an OverwrittenParameterWarning (hmmlearn logs it; a refit's own are not said)."""
        given = self._is_set(name)
        if letter not in self.init_params:
            return not given
        if given and not hasattr(self, "monitor_"):
            rest = self.init_params.replace(letter, "")
            warnings.warn(
                f"{name} was set by hand, but fit initialises it afresh because "
                f"init_params={self.init_params!r} holds {letter!r}; to start from the value "
                f"set, take {letter!r} out: init_params={rest!r}",
                OverwrittenParameterWarning,
                stacklevel=user_stacklevel(),
            )
        return True

    def _is_set(self, name: str) -> bool:
        """Whether parameter ``name`` has a value (fitted or set by hand)."""
        return hasattr(self, name)

    def _given_params(self) -> dict[str, torch.Tensor]:
        """Current fitted/user-set attributes as tensors, checked (ParameterError naming the
        attribute whose shape or values are wrong)."""
        names = self._state_attributes()
        missing = [n.lstrip("_") for n in names if not hasattr(self, n)]
        if missing:
            raise NotFittedError(
                f"This {type(self).__name__} instance has no {missing}: call 'fit', or set "
                f"every parameter ({[n.lstrip('_') for n in names]}) by hand before using it"
            )
        for n in names:
            value = self._tensor(getattr(self, n), n.lstrip("_"))
            if not bool(torch.isfinite(value).all()):
                raise ParameterError(f"{n.lstrip('_')} must hold finite numbers")
        self._infer_n_features()
        try:
            return self._checked_params()
        except LatentfitError:
            raise
        except (ValueError, TypeError, RuntimeError, IndexError) as err:
            raise ParameterError(str(err)) from None

    def _infer_n_features(self) -> None:
        """A model whose parameters were set by hand takes ``n_features`` from them (as
        hmmlearn does), so that it can be scored without a fit."""
        if getattr(self, "n_features", None) is None and self._emission_attributes:
            self.n_features = int(np.shape(getattr(self, self._emission_attributes[0]))[-1])

    def _checked_params(self) -> dict[str, torch.Tensor]:
        sp, tm = self._given_distribution("startprob_"), self._given_distribution("transmat_")
        return {"startprob": sp, "transmat": tm, **self._emission_params()}

    def _given_distribution(self, name: str) -> torch.Tensor:
        """``startprob_`` (k,) or ``transmat_`` (k, k) as set (by fit or by hand), checked:
        ParameterError naming its shape or the row that is not a distribution."""
        k = self.n_components
        value = self._tensor(getattr(self, name), name)
        shape = (k,) if name == "startprob_" else (k, k)
        if tuple(value.shape) != shape:
            raise ParameterError(
                f"{name} must have shape {shape} (n_components = {k}), got "
                f"{tuple(value.shape)}; set it with that shape, or put its letter "
                f"({name[0]!r}) in init_params to let fit initialise it"
            )
        check_distribution(value, name)
        return value

    def _initial_params(
        self, X: torch.Tensor, gen: torch.Generator, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        k = self.n_components
        dt, dev = self._dtype, self._device
        params: dict[str, torch.Tensor] = {}
        if self._needs_init("s", "startprob_"):
            params["startprob"] = torch.full((k,), 1.0 / k, dtype=dt, device=dev)
        else:
            params["startprob"] = self._given_distribution("startprob_")
        if self._needs_init("t", "transmat_"):
            # Dirichlet(1) rows: normalised exponentials, drawn from the generator.
            u = torch.rand(k, k, generator=gen, dtype=torch.float64, device=gen.device)
            e = -torch.log1p(-u)
            params["transmat"] = (e / e.sum(1, keepdim=True)).to(device=dev, dtype=dt)
        else:
            params["transmat"] = self._given_distribution("transmat_")
        params.update(self._init_emissions(X, gen))
        if labels is not None and self._labelled_states(labels) is not None:
            params.update(self._init_emissions_from_labels(params, X, labels, gen))
        return params

    def _labelled_states(self, labels: torch.Tensor) -> torch.Tensor | None:
        """One-hot responsibilities (n, k) of the labelled rows (zero rows where unknown), when
        every state has at least one labelled row; else None (the labels then only condition
        the E-steps)."""
        k = self.n_components
        known = labels >= 0
        if int(torch.unique(labels[known]).numel()) < k:
            return None
        resp = torch.zeros(labels.shape[0], k, dtype=self._dtype, device=labels.device)
        resp[known.nonzero().squeeze(1), labels[known]] = 1.0
        return resp  # (n, k)

    def _init_emissions_from_labels(self, params, X, labels, gen) -> dict[str, torch.Tensor]:
        """Emission parameters from the labelled rows, when every state has some (replacing
        those of ``_init_emissions`` that ``init_params`` asks to initialise); a model class
        that can overrides it. Default: none."""
        return {}

    def _set_attributes(self, params: dict[str, torch.Tensor]) -> None:
        self.startprob_ = params["startprob"].cpu().numpy()
        self.transmat_ = params["transmat"].cpu().numpy()
        self._set_emission_attributes(params)

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X,
        lengths=None,
        y=None,
        *,
        max_rows_in_memory=None,
        batch_steps: int = MAX_BATCH_STEPS,
        feature_bytes: int = FEATURE_BYTES,
    ):
        """Estimate the parameters by Baum-Welch EM (``n_init`` restarts, the best kept).

        ``lengths`` (n_sequences,) gives the rows of every sequence in ``X``; the sequences
        are processed together, not one by one.

        ``y`` (n_samples,): the known state of some steps, −1 where unknown (integers in
        −1 .. n_components − 1). EM then maximises p(X, z_known): every E-step is conditioned
        exactly on the known states. When every state has labelled rows, the emission
        parameters to initialise start from those rows (see ``_init_emissions_from_labels`` of
        each model), which also fixes which state is which. In-memory X only.

        ``X`` may also be a data source of :mod:`latentfit.em.sources.chunks` (a memory-mapped
        ``.npy``, Parquet, an iterator of arrays), read chunk by chunk and cut into whole
        sequences by ``lengths`` (see :mod:`latentfit.em.hmm.sequences`), or a
        :class:`~latentfit.em.sources.distributed.DistributedSource`, sharded by whole sequences.
        One sequence must fit in memory: ``max_rows_in_memory`` refuses longer ones up
        front.

        Memory: in-memory sequences go to the E-step in groups of about ``batch_steps`` steps
        (a sequence is never split), and the per-fit features of the data that the emission
        densities share (see ``_emission_features``) are kept across iterations while they
        take at most ``feature_bytes``, recomputed per E-step beyond that."""
        self._fit(
            X, lengths=lengths, y=y, max_rows_in_memory=max_rows_in_memory,
            batch_steps=batch_steps, feature_bytes=feature_bytes,
        )  # fmt: skip
        return self

    def _prepare_fit(
        self, X, lengths=None, y=None, *, max_rows_in_memory=None, batch_steps, feature_bytes
    ) -> EMFit:
        batch_steps = check_positive_int(batch_steps, "batch_steps")
        feature_bytes = check_positive_int(feature_bytes, "feature_bytes", minimum=0)
        check_feature_names(self, X, reset=True)
        X = self._checked_X(X, fitting=True)
        self._warn_constant_columns(X)
        lengths = check_lengths(lengths, X.shape[0])
        self._check_state_memory(X.shape[0])
        labels = check_labels(y, X.shape[0], self.n_components, X.device)
        batches = with_states(batch_sequences(X, lengths, batch_steps), labels)
        return EMFit(_HMMHooks(self, X, feature_bytes, labels, lengths), batches, X=X)

    def _check_state_memory(self, n_rows: int) -> None:
        """Refuse a number of states whose Baum-Welch tensors cannot be held: the (k, k)
        transition matrix with its log, statistics and the M-step's copies (about eight), and
        the forward, backward and posterior messages over the rows (about six (rows, k))."""
        k = int(self.n_components)
        check_allocation(
            8 * (8 * k * k + 6 * n_rows * k),
            f"{type(self).__name__} with n_components={k:,} states on {n_rows:,} rows",
            device=self._device,
            hint="use fewer states",
        )

    def _prepare_source_fit(
        self, source, lengths=None, y=None, *, max_rows_in_memory=None, batch_steps, feature_bytes
    ) -> EMFit:
        """Baum-Welch over a data source, one group of whole sequences at a time."""
        check_positive_int(batch_steps, "batch_steps")
        feature_bytes = check_positive_int(feature_bytes, "feature_bytes", minimum=0)
        if y is not None:
            raise ParameterError(
                "y (known states) is taken with in-memory X only; pass the data as an array"
            )
        data = prepare_sequences(self, source, lengths, max_rows_in_memory)
        self._check_prior_shapes()  # the source has given the number of features
        hooks = _HMMHooks(self, None, feature_bytes, lengths=data.all_lengths)
        return EMFit(hooks, data, data.reduce)

    @property
    def _stream_check(self):
        """Per-chunk check of streamed data (None: the source's finiteness check is enough;
        False: this model cannot be fitted on a source)."""
        return None

    def _set_stream_features(self, source) -> None:
        """Take what the model needs from a configured source before the fit (the columns)."""
        self.n_features = source.n_features

    def _stream_batch(self, X: torch.Tensor) -> torch.Tensor:
        """A streamed group of sequences (t, d), checked, as the E-step takes it."""
        return X

    def _warn_constant_columns(self, X: torch.Tensor) -> None:
        """Warn of columns of the rows X (t, d) of a fit that hold one value throughout (or,
        under a full covariance, depend linearly on others), where a variance floor makes up
        their variance; none by default (discrete emissions)."""

    def _check_floor(self, X: torch.Tensor) -> None:
        """Warn (VarianceFloorWarning) where a variance floor that enters the start swamps
        the variance of a column of the rows X (t, d) it starts from; none by default."""

    def _allow_nan(self) -> bool:
        return False

    def _emission_features(self, params, X):
        """Features of the data that the emission densities and statistics share and that
        stay fixed through a fit (given ``params["shift"]``), or None (the default)."""
        return None

    def _set_params_tensors(self, params: dict[str, torch.Tensor]) -> None:
        self._set_attributes(params)

    def _store_result(self, result, *, restarts: bool = True) -> None:
        super()._store_result(result, restarts=restarts)
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose, result.lower_bounds)

    # ------------------------------------------------------------------ inference
    def _checked_X(self, X, *, fitting: bool) -> torch.Tensor:
        """``_validate_X`` with a model class's own complaints about X as DataError."""
        if X is None:
            raise DataError("X is None; pass an array of shape (n_samples, n_features)")
        try:
            X = self._validate_X(X, fitting=fitting)
        except LatentfitError:
            raise
        except (ValueError, TypeError) as err:
            raise DataError(str(err)) from None
        if fitting:  # the data have fixed the number of features the priors' shapes follow
            self._check_prior_shapes()
        return X

    def _prepare(self, X, lengths, y=None):
        check_is_fitted(self, "startprob_")
        params = self._given_params()
        check_feature_names(self, X, reset=False)
        X = self._checked_X(X, fitting=False)
        lengths = check_lengths(lengths, X.shape[0])
        labels = check_labels(y, X.shape[0], self.n_components, X.device)
        return params, X, lengths, labels

    def _emission_rows(self, params, X):
        """A function of a block of rows ``a .. b − 1`` of X giving their emission
        log-likelihoods (b − a, k), for callers that ask block by block (whatever depends on
        the parameters only is derived once, here, by the models that can)."""
        return lambda a, b: self._emission_log_likelihood(params, X[a:b])

    def _fit_emissions(self, params, X, ll: torch.Tensor) -> torch.Tensor:
        """The emission log-likelihoods (t, k) a fit's E-step takes: ``ll``, except where a
        model whose zero probabilities make a row impossible under every state weighs that
        row otherwise (see :class:`~latentfit.MultinomialHMM`)."""
        return ll

    def _why_impossible(self, params, X, i: int) -> str:
        """Why row ``i`` of X has zero probability under every state (a DataError's end)."""
        return (
            "it cannot be emitted by this model (a symbol or value no state gives any probability)"
        )

    def _log_likelihoods(
        self, params, X, lengths=None, whole=None, *, emittable=True
    ) -> torch.Tensor:
        """The emission log-likelihoods (t, k), refusing a NaN (an overflow) and, with
        ``emittable``, a row no state can emit: a BatchRowError naming the row and, given
        ``lengths`` (the sequences of X), its step and sequence (score's answer is then -inf;
        posteriors and paths of that sequence are undefined). ``whole``: the sequences of the
        whole data when X is a group of them (an E-step batch), which the EM driver names the
        row in (see :class:`~latentfit.em.hmm.labels.SequenceRowError`)."""
        ll = self._emission_log_likelihood(params, X)  # (t, k)
        check_scored(ll, X, type(self).__name__)  # NaN: an overflow, named by its row
        impossible = torch.isneginf(ll).all(1).nonzero() if emittable else ()
        if len(impossible):
            i = int(impossible[0])
            why = self._why_impossible(params, X, i).replace("{", "{{").replace("}", "}}")
            if lengths is None:
                raise BatchRowError(
                    i, "row {row} of X has zero probability under every state: " + why
                )
            raise SequenceRowError(
                i, "{where} has zero probability under every state: " + why, lengths, whole
            )
        return ll

    def _check_possible(
        self, params, X, log_prob: torch.Tensor, lengths=None, labels=None, *, states=True
    ):
        """A -inf result: name the row no state can emit, if there is one, else the step whose
        known state (``labels``) the model makes impossible (checked only then, to spare a
        pass over the (t, k) log-likelihoods in the common case). With ``states`` (posteriors
        and paths, undefined then; not ``score``, whose answer -inf is) also the step that
        startprob_ and transmat_ alone leave no path to."""
        if not bool(torch.isfinite(log_prob)):
            # a row no state can emit: score's answer is -inf (as hmmlearn's, and the
            # mixtures' for an outcome of probability 0) where that probability is exact;
            # posteriors and paths are undefined
            emittable = states or not self._exact_zeros
            ll = self._log_likelihoods(params, X, lengths, emittable=emittable)
            self._check_labels_possible(params, X, lengths, labels)
            if bool(torch.isnan(log_prob).any()):  # no row's emission is NaN: the recursion's
                raise DataError(
                    f"the log-likelihood of X under the fitted {type(self).__name__} is not a "
                    "number (an overflow in the forward recursion); rescale the data and fit "
                    "again, or fit in float64"
                )
            if states:
                check_reachable(ll, params["startprob"], params["transmat"], lengths)

    def _check_labels_possible(self, params, X, lengths, labels) -> None:
        """After a -inf likelihood with known states ``labels``: if the data alone are
        possible, the labels made them impossible; DataError naming the first step where no
        path through the known states is left, and why."""
        if labels is not None:
            ll = self._emission_log_likelihood(params, X)  # (t, k)
            check_labels_possible(ll, params["startprob"], params["transmat"], lengths, labels)

    def score_samples(self, X, lengths=None, y=None):
        """(total log-likelihood, posteriors (n, k) p(z_t | x)); with known states ``y``
        (−1 where unknown): (log p(X, z_known), p(z_t | X, z_known))."""
        params, X, lengths, labels = self._prepare(X, lengths, y)
        ll = self._emission_log_likelihood(params, X)
        post = inference.posterior(
            ll, params["startprob"], params["transmat"], lengths, overwrite=True, states=labels
        )
        self._check_possible(params, X, post.log_likelihood, lengths, labels)
        return float(post.log_likelihood), post.posteriors.cpu().numpy()

    def score(self, X, lengths=None, y=None):
        """Total log-likelihood log p(X) summed over the sequences (-inf where a row holds a
        symbol, category or count that every state gives probability 0, as hmmlearn's); with
        known states ``y`` (−1 where unknown) log p(X, z_known)."""
        params, X, lengths, labels = self._prepare(X, lengths, y)
        ll = self._emission_log_likelihood(params, X)
        fwd = inference.log_likelihood(
            ll, params["startprob"], params["transmat"], lengths, states=labels
        )
        self._check_possible(params, X, fwd.log_likelihood, lengths, labels, states=False)
        return float(fwd.log_likelihood)

    def predict_proba(self, X, lengths=None, y=None):
        """Posterior state probabilities (n, k), given the known states ``y`` if any."""
        return self.score_samples(X, lengths, y)[1]

    def decode(self, X, lengths=None, algorithm=None, y=None):
        """(log-probability, states (n,)). ``"viterbi"``: the most probable path and log
        p(X, path); ``"map"``: the most probable state at every step and, as hmmlearn, the sum
        over steps of that state's posterior probability. With known states ``y`` (−1 where
        unknown) both are conditioned on them (the path passes through them)."""
        algorithm = algorithm or self.algorithm
        if algorithm not in ("viterbi", "map"):
            raise ParameterError(f"Unknown decoder {algorithm!r}; use 'viterbi' or 'map'")
        params, X, lengths, labels = self._prepare(X, lengths, y)
        if algorithm == "viterbi":
            v = inference.decode(
                self._emission_rows(params, X), X.shape[0], params["startprob"],
                params["transmat"], lengths, states=labels,
            )  # fmt: skip
            self._check_possible(params, X, v.log_prob, lengths, labels)
            return float(v.log_prob), v.path.cpu().numpy()
        ll = self._emission_log_likelihood(params, X)
        post = inference.posterior(
            ll, params["startprob"], params["transmat"], lengths, overwrite=True, states=labels
        )
        self._check_possible(params, X, post.log_likelihood, lengths, labels)
        best, states = post.posteriors.max(1)
        return float(best.sum()), states.cpu().numpy()

    def predict(self, X, lengths=None, y=None):
        """Most likely states (n,) by the model's ``algorithm``, through the known states
        ``y`` if any."""
        return self.decode(X, lengths, y=y)[1]

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """Draw ``n_samples`` steps of one sequence: (X (n, ...), states (n,))."""
        check_is_fitted(self, "startprob_")
        params = self._given_params()
        # a CategoricalHMM draws one symbol a step; its n_features (symbols) may be None
        n_samples = check_sample_count(n_samples, getattr(self, "n_features", None) or 1)
        check_state_index(currstate, self.n_components)
        rs = self.random_state if random_state is None else random_state
        gen = make_generator(rs, "cpu")
        start = params["startprob"].double().cpu()
        trans_cdf = params["transmat"].double().cpu().cumsum(1).numpy()
        u = torch.rand(n_samples, generator=gen, dtype=torch.float64).numpy()
        s = int(torch.multinomial(start, 1, generator=gen)) if currstate is None else int(currstate)
        states = markov_chain(trans_cdf, u, s)
        X = self._sample_emissions(params, torch.from_numpy(states), gen)
        return draws_in_dtype(X, self._dtype).cpu().numpy(), states

    def get_stationary_distribution(self):
        """Stationary distribution of ``transmat_`` (left eigenvector for eigenvalue 1)."""
        check_is_fitted(self, "transmat_")
        vals, vecs = np.linalg.eig(np.asarray(self.transmat_).T)
        v = np.real_if_close(vecs[:, np.argmax(vals.real)])
        return v / v.sum()

    # ------------------------------------------------------------------ model selection
    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        k = self.n_components
        return {"s": k - 1, "t": k * (k - 1), **self._emission_n_params()}

    def _n_parameters(self) -> int:
        """The free parameters ``bic``/``aic`` charge for: those of the letters in
        ``params``. A parameter the fit keeps fixed is not estimated (hmmlearn's ``bic``
        counts every letter; its check for a degenerate fit counts those of ``params``, as
        here). Transition probabilities that start at 0 stay 0 (structural zeros) but are
        counted, as hmmlearn counts them: hold ``transmat_`` fixed, or compare models of the
        same zeros."""
        counts = self._get_n_fit_scalars_per_param()
        return sum(n for letter, n in counts.items() if letter in self.params)

    def _total_log_likelihood(self, X, lengths=None) -> float:
        return self.score(X, lengths)

    # ------------------------------------------------------------------ MAP-EM
    def _log_prior(self, params) -> float:
        """log p(θ), up to a constant, of the priors that the M-step's MAP adds for the
        parameters the fit estimates (the letters of ``params``): the Dirichlet priors on the
        start and transition probabilities and the emissions' (:meth:`_emission_log_prior`).
        EM raises the log-likelihood plus this, not the log-likelihood alone: under a strong
        prior the log-likelihood (``lower_bounds_``, hmmlearn's history) may fall."""
        total = self._emission_log_prior(params)
        if "s" in self.params:
            total = total + dirichlet_log_prior(params["startprob"], self.startprob_prior)
        if "t" in self.params:
            total = total + dirichlet_log_prior(params["transmat"], self.transmat_prior)
        return float(total)

    def _emission_log_prior(self, params):
        """The emissions' part of :meth:`_log_prior`; 0 where the emissions have no prior."""
        return 0.0

    # ------------------------------------------------------------------ persistence
    #: The settings a model file may restore (see :func:`latentfit.io.check_fields`).
    _state_fields: ClassVar[dict[str, str]] = {
        "lower_bounds_": "floats",
        "n_features": "int?",
        "feature_names_in_": "strs",
    }

    def _state_attributes(self) -> tuple[str, ...]:
        return ("startprob_", "transmat_", *self._emission_attributes)

    def _stored_features(self, tensors: dict, extra: dict) -> int | None:
        """The feature count a model file's shapes follow from: the header's ``n_features``
        (``extra``, else ``params``), else the last axis of the first emission tensor."""
        d = extra.get("n_features")
        if d is None:
            d = getattr(self, "n_features", None)
        first = tensors.get(self._emission_attributes[0]) if self._emission_attributes else None
        if d is None and first is not None and first.dim():
            d = int(first.shape[-1])
        return d

    def _stored_attribute_specs(self, tensors: dict, extra: dict) -> tuple[dict[str, Stored], str]:
        """A model file's start and transition probabilities on the simplex (one row per
        state) and the emissions' tensors (:meth:`_emission_specs`), shaped by
        ``n_components`` and the header's ``n_features``: a header field that disagrees
        with the stored tensors is refused, not overridden by them."""
        k, d = self.n_components, self._stored_features(tensors, extra)
        specs = {
            "startprob_": Stored((k,), "simplex"),
            "transmat_": Stored((k, k), "simplex"),
            **self._emission_specs(k, d),
        }
        return specs, f"n_components = {k}, n_features = {d}"

    def _emission_specs(self, k: int, d: int | None) -> dict[str, Stored]:
        """What each emission tensor of a model file must be for ``k`` states and ``d``
        features (None: unknown); a model lists its own."""
        return {}

    def _check_loaded(self) -> None:
        """After ``load``: the settings are valid and the tensors' shapes agree with
        ``n_components`` and ``n_features`` (ModelFileError naming the tensor)."""
        try:
            self._checked_parameters()
            self._given_params()
        except (ParameterError, NotFittedError) as err:
            raise ModelFileError(
                f"the stored {type(self).__name__} is inconsistent: {err}"
            ) from None
