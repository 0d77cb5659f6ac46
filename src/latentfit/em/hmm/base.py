"""The hidden Markov model estimator: hmmlearn's interface over latentfit's EM driver.

A model class only says how its emissions are initialised, scored, summarised and
re-estimated (the ``_emission_*`` methods); :mod:`latentfit.em.hmm.hooks` turns that into
the four hooks of :func:`latentfit.em.driver.run_em`, whose E-step is the forward-backward
algorithm of :mod:`latentfit.em.hmm.kernels` (Baum-Welch: Baum et al. 1970; Rabiner 1989).

Parameter names, fitted attributes and methods are hmmlearn's, so that switching is a change of
import. Added: ``n_init`` restarts, ``device`` and ``dtype``, the per-iteration history
``lower_bounds_`` (total log-likelihood before every M-step) with the driver's monotonicity
check, and a documented recovery for states that no data visits: such a state keeps its
previous emission parameters and transition row, and an :class:`UnvisitedStateWarning` names
it (hmmlearn returns NaN parameters or zero rows there).
"""

from __future__ import annotations

import functools
from collections import deque
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from latentfit import _compiled
from latentfit._validation import (
    check_feature_names,
    check_positive_int,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from latentfit.em.driver import run_em
from latentfit.em.estimator import check_tol
from latentfit.em.hmm import kernels
from latentfit.em.hmm.hooks import _HMMHooks
from latentfit.em.sources import is_source
from latentfit.errors import DataError, LatentfitError, ModelFileError, ParameterError
from latentfit.io import check_fields

__all__ = ["BaseHMM", "ConvergenceMonitor", "UnvisitedStateWarning"]

_MAX_BATCH_STEPS = 1 << 22  # steps of data per E-step batch (sequences are never split)
FEATURE_BYTES = 1 << 29  # memory for per-fit features of the data kept across iterations


class UnvisitedStateWarning(RuntimeWarning):
    """A state received no posterior mass: its parameters were kept instead of re-estimated."""


class ConvergenceMonitor:
    """hmmlearn's convergence monitor: ``history`` holds the total log-likelihood of every
    iteration, ``iter`` their number, ``converged`` is true when the last gain was below
    ``tol`` or ``n_iter`` iterations were made (hmmlearn's definition; latentfit's stricter
    ``converged_`` attribute is true only for the former)."""

    def __init__(self, tol: float, n_iter: int, verbose: bool, history=()):
        self.tol, self.n_iter, self.verbose = tol, n_iter, verbose
        self.history = deque(history)
        self.iter = len(self.history)

    @property
    def converged(self) -> bool:
        h = self.history
        return self.iter == self.n_iter or (len(h) >= 2 and h[-1] - h[-2] < self.tol)

    def __repr__(self):
        return (
            f"ConvergenceMonitor(tol={self.tol}, n_iter={self.n_iter}, iter={self.iter}, "
            f"history={list(self.history)[-2:]})"
        )


def check_lengths(lengths, n: int) -> list[int]:
    """Sequence lengths as a list of positive ints summing to ``n``."""
    if lengths is None:
        return [n]
    try:
        arr = np.asarray(lengths)
    except (TypeError, ValueError):
        raise DataError(
            f"lengths must be a 1-D list of sequence lengths, got {lengths!r:.60}"
        ) from None
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"lengths must be a 1-D list of sequence lengths, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise DataError(f"lengths must be integers, got {arr.tolist()[:10]}")
    if arr.dtype.kind not in "iuf":
        raise DataError(f"lengths must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr < 1)
    if len(bad):
        raise DataError(
            f"every sequence needs at least one step; lengths[{bad[0]}] = {arr[bad[0]]}"
        )
    if int(arr.sum()) != n:
        raise DataError(
            f"lengths sum to {int(arr.sum())} but X has {n} rows: lengths must give the number "
            "of rows of every sequence in X, in order"
        )
    return arr.tolist()


def _batches(X: torch.Tensor, lengths: list[int]) -> list[tuple[torch.Tensor, list[int]]]:
    """Groups of whole sequences, each processed in one pass of the kernels."""
    out, start, group, size = [], 0, [], 0
    for n in lengths:
        if group and size + n > _MAX_BATCH_STEPS:
            out.append((X[start : start + size], group))
            start, group, size = start + size, [], 0
        group.append(n)
        size += n
    out.append((X[start : start + size], group))
    return out


def _check_distribution(p: torch.Tensor, name: str) -> None:
    """Rows of ``p`` must be probability vectors (hmmlearn's _check_sum_1, naming the row)."""
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ParameterError(f"{name} must hold finite, non-negative probabilities")
    s = p.sum(-1)
    bad = (~torch.isclose(s, torch.ones_like(s), rtol=0, atol=1e-6)).nonzero()
    if len(bad):
        if p.dim() == 1:
            raise ParameterError(f"{name} must sum to 1, got {s.item():.6g}")
        i = int(bad[0][0])
        raise ParameterError(f"{name} rows must sum to 1; row {i} sums to {s[i].item():.6g}")


def _one_thread(method):
    """Run a model method on one intra-op CPU thread (see
    :func:`~latentfit.em.hmm.threads.step_loop_threads` for the measurement behind it)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with kernels.step_loop_threads(self._device):
            return method(self, *args, **kwargs)

    return wrapper


class BaseHMM(BaseEstimator):
    """Shared machinery of the HMM classes; use :class:`GaussianHMM` and friends."""

    _emission_letters = ""
    _emission_attributes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ settings
    @property
    def _dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype)

    @property
    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _tensor(self, value, name: str = "a parameter") -> torch.Tensor:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ParameterError(f"{name} must be an array of numbers, got {value!r:.80}") from None
        return torch.as_tensor(arr, dtype=self._dtype, device=self._device)

    def _checked_settings(self):
        """``_check_settings`` (a model class extends it) with its complaints as
        ParameterError."""
        try:
            self._check_settings()
        except LatentfitError:
            raise
        except (ValueError, TypeError) as err:
            raise ParameterError(str(err)) from None

    def _check_settings(self):
        if not isinstance(self.n_components, int | np.integer) or self.n_components < 1:
            raise ParameterError(
                f"n_components must be a positive integer, got {self.n_components!r}"
            )
        if not isinstance(self.n_init, int | np.integer) or self.n_init < 1:
            raise ParameterError(f"n_init must be a positive integer, got {self.n_init!r}")
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
        for name in ("params", "init_params"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ParameterError(f"{name} must be a string of letters, got {value!r}")

    # ------------------------------------------------------------------ parameters
    def _needs_init(self, letter: str, name: str) -> bool:
        return letter in self.init_params or not hasattr(self, name)

    def _given_params(self) -> dict[str, torch.Tensor]:
        """Current fitted/user-set attributes as tensors, checked (ParameterError naming the
        attribute whose shape or values are wrong)."""
        names = ("startprob_", "transmat_", *self._emission_attributes)
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
        k = self.n_components
        sp = self._tensor(self.startprob_, "startprob_")
        tm = self._tensor(self.transmat_, "transmat_")
        if sp.shape != (k,):
            raise ParameterError(f"startprob_ must have shape ({k},), got {tuple(sp.shape)}")
        if tm.shape != (k, k):
            raise ParameterError(f"transmat_ must have shape ({k}, {k}), got {tuple(tm.shape)}")
        _check_distribution(sp, "startprob_")
        _check_distribution(tm, "transmat_")
        return {"startprob": sp, "transmat": tm, **self._emission_params()}

    def _initial_params(self, X: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        k = self.n_components
        dt, dev = self._dtype, self._device
        params: dict[str, torch.Tensor] = {}
        if self._needs_init("s", "startprob_"):
            params["startprob"] = torch.full((k,), 1.0 / k, dtype=dt, device=dev)
        else:
            params["startprob"] = self._tensor(self.startprob_)
            _check_distribution(params["startprob"], "startprob_")
        if self._needs_init("t", "transmat_"):
            # Dirichlet(1) rows: normalised exponentials, drawn from the generator.
            u = torch.rand(k, k, generator=gen, dtype=torch.float64, device=gen.device)
            e = -torch.log1p(-u)
            params["transmat"] = (e / e.sum(1, keepdim=True)).to(device=dev, dtype=dt)
        else:
            params["transmat"] = self._tensor(self.transmat_)
            _check_distribution(params["transmat"], "transmat_")
        params.update(self._init_emissions(X, gen))
        return params

    def _set_attributes(self, params: dict[str, torch.Tensor]) -> None:
        self.startprob_ = params["startprob"].cpu().numpy()
        self.transmat_ = params["transmat"].cpu().numpy()
        self._set_emission_attributes(params)

    # ------------------------------------------------------------------ fitting
    @_one_thread
    def fit(self, X, lengths=None, *, max_rows_in_memory=None):
        """Estimate the parameters by Baum-Welch EM (``n_init`` restarts, the best kept).

        ``lengths`` (n_sequences,) gives the rows of every sequence in ``X``; the sequences
        are processed together, not one by one.

        ``X`` may also be a data source of :mod:`latentfit.em.sources` (a memory-mapped
        ``.npy``, Parquet, an iterator of arrays), read chunk by chunk and cut into whole
        sequences by ``lengths`` (see :mod:`latentfit.em.hmm.stream`), or a
        :class:`~latentfit.em.distributed.DistributedSource`, sharded by whole sequences.
        One sequence must fit in memory: ``max_rows_in_memory`` refuses longer ones up
        front."""
        self._checked_settings()
        if is_source(X):
            return self._fit_source(X, lengths, max_rows_in_memory)
        check_feature_names(self, X, reset=True)
        X = self._checked_X(X, fitting=True)
        lengths = check_lengths(lengths, X.shape[0])
        gen = make_generator(self.random_state, self._device)
        self._store_fit(self._run_em(_HMMHooks(self, X), _batches(X, lengths), gen))
        return self

    def _run_em(self, hooks, data, gen, reduce=None):
        return run_em(
            hooks,
            data,
            reduce=reduce,
            n_init=self.n_init,
            max_iter=self.n_iter,
            max_iter_name="n_iter",
            tol=self.tol,
            generator=gen,
            convergence="delta",
            verbose=int(self.verbose),
            name=type(self).__name__,
        )

    def _fit_source(self, source, lengths, max_rows_in_memory):
        """Baum-Welch over a data source, one group of whole sequences at a time."""
        from latentfit.em.hmm.stream import prepare_sequences

        data = prepare_sequences(self, source, lengths, max_rows_in_memory)
        gen = make_generator(self.random_state, self._device)
        self._store_fit(self._run_em(_HMMHooks(self, None), data, gen, data.reduce))
        return self

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

    def _allow_nan(self) -> bool:
        return False

    def _emission_features(self, params, X):
        """Features of the data that the emission densities and statistics share and that
        stay fixed through a fit (given ``params["shift"]``), or None (the default)."""
        return None

    def _store_fit(self, result):
        self._set_attributes(result.params)
        self.lower_bounds_ = list(result.lower_bounds)
        self.all_lower_bounds_ = [list(b) for b in result.all_lower_bounds]
        self.lower_bound_ = result.lower_bound
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.best_init_ = result.best_init
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose, result.lower_bounds)

    # ------------------------------------------------------------------ inference
    def _checked_X(self, X, *, fitting: bool) -> torch.Tensor:
        """``_validate_X`` with a model class's own complaints about X as DataError."""
        if X is None:
            raise DataError("X is None; pass an array of shape (n_samples, n_features)")
        try:
            return self._validate_X(X, fitting=fitting)
        except LatentfitError:
            raise
        except (ValueError, TypeError) as err:
            raise DataError(str(err)) from None

    def _prepare(self, X, lengths):
        check_is_fitted(self, "startprob_")
        params = self._given_params()
        check_feature_names(self, X, reset=False)
        X = self._checked_X(X, fitting=False)
        lengths = check_lengths(lengths, X.shape[0])
        return params, X, lengths

    def _emission_rows(self, params):
        """A function of a block of rows (r, d) giving their emission log-likelihoods (r, k),
        for callers that ask block by block (whatever depends on the parameters only is
        derived once, here, by the models that can)."""
        return lambda X: self._emission_log_likelihood(params, X)

    def _log_likelihoods(self, params, X) -> torch.Tensor:
        ll = self._emission_log_likelihood(params, X)  # (t, k)
        impossible = torch.isneginf(ll).all(1).nonzero()
        if len(impossible):
            i = int(impossible[0])
            raise DataError(
                f"row {i} of X has zero probability under every state: it cannot be emitted "
                "by this model (a symbol or value no state gives any probability)"
            )
        return ll

    def _check_possible(self, params, X, log_prob: torch.Tensor) -> None:
        """A -inf result: name the row no state can emit, if there is one (checked only
        then, to spare a pass over the (t, k) log-likelihoods in the common case)."""
        if not bool(torch.isfinite(log_prob)):
            self._log_likelihoods(params, X)

    @_one_thread
    def score_samples(self, X, lengths=None):
        """(total log-likelihood, posteriors (n, k) p(z_t | x))."""
        params, X, lengths = self._prepare(X, lengths)
        ll = self._emission_log_likelihood(params, X)
        post = kernels.posterior(
            ll, params["startprob"], params["transmat"], lengths, overwrite=True
        )
        self._check_possible(params, X, post.log_likelihood)
        return float(post.log_likelihood), post.posteriors.cpu().numpy()

    @_one_thread
    def score(self, X, lengths=None):
        """Total log-likelihood log p(X) summed over the sequences."""
        params, X, lengths = self._prepare(X, lengths)
        ll = self._emission_log_likelihood(params, X)
        startprob, transmat = params["startprob"], params["transmat"]
        if X.device.type == "cpu" and _compiled.available():
            from latentfit.em.hmm.posterior_cpu import forward_filter_cpu  # imports numba

            workers = kernels.compiled_workers()
            fwd = forward_filter_cpu(
                ll, startprob, transmat, lengths, overwrite=True, workers=workers
            )
        else:
            fwd = kernels.parallel_forward_filter(ll, startprob, transmat, lengths)
        self._check_possible(params, X, fwd.log_likelihood)
        return float(fwd.log_likelihood)

    def predict_proba(self, X, lengths=None):
        """Posterior state probabilities (n, k)."""
        return self.score_samples(X, lengths)[1]

    def decode(self, X, lengths=None, algorithm=None):
        """(log-probability, states (n,)). ``"viterbi"``: the most probable path and log
        p(X, path); ``"map"``: the most probable state at every step and, as hmmlearn, the sum
        over steps of that state's posterior probability."""
        algorithm = algorithm or self.algorithm
        if algorithm not in ("viterbi", "map"):
            raise ParameterError(f"Unknown decoder {algorithm!r}; use 'viterbi' or 'map'")
        with kernels.step_loop_threads(self._device):
            params, X, lengths = self._prepare(X, lengths)
            if algorithm == "viterbi":
                v = self._viterbi(params, X, lengths)
                self._check_possible(params, X, v.log_prob)
                return float(v.log_prob), v.path.cpu().numpy()
            ll = self._emission_log_likelihood(params, X)
            post = kernels.posterior(
                ll, params["startprob"], params["transmat"], lengths, overwrite=True
            )
            self._check_possible(params, X, post.log_likelihood)
            best, states = post.posteriors.max(1)
            return float(best.sum()), states.cpu().numpy()

    def _viterbi(self, params, X, lengths):
        """Viterbi decoding: on the CPU the compiled kernel, which asks for the emission
        log-likelihoods block by block (:mod:`~latentfit.em.hmm.viterbi_cpu`); elsewhere
        the chunked torch version on the whole (t, k) array."""
        startprob, transmat = params["startprob"], params["transmat"]
        if X.device.type == "cpu" and _compiled.available():
            from latentfit.em.hmm import viterbi_cpu  # imports numba: only when needed

            emission = self._emission_rows(params)
            return viterbi_cpu.viterbi_cpu_blocks(
                lambda a, b: emission(X[a:b]), X.shape[0], startprob, transmat, lengths,
                workers=kernels.compiled_workers(),
            )  # fmt: skip
        ll = self._emission_log_likelihood(params, X)
        return kernels.parallel_viterbi(ll, startprob, transmat, lengths)

    def predict(self, X, lengths=None):
        """Most likely states (n,) by the model's ``algorithm``."""
        return self.decode(X, lengths)[1]

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """Draw ``n_samples`` steps of one sequence: (X (n, ...), states (n,))."""
        check_is_fitted(self, "startprob_")
        params = self._given_params()
        n_samples = check_positive_int(n_samples, "n_samples")
        if currstate is not None and (
            isinstance(currstate, bool)
            or not isinstance(currstate, int | np.integer)
            or not 0 <= currstate < self.n_components
        ):
            raise ParameterError(
                f"currstate must be a state index 0..{self.n_components - 1}, got {currstate!r}"
            )
        rs = self.random_state if random_state is None else random_state
        gen = make_generator(rs, "cpu")
        start = params["startprob"].double().cpu()
        trans_cdf = params["transmat"].double().cpu().cumsum(1).numpy()
        u = torch.rand(n_samples, generator=gen, dtype=torch.float64).numpy()
        states = np.empty(n_samples, dtype=np.int64)
        s = int(torch.multinomial(start, 1, generator=gen)) if currstate is None else int(currstate)
        states[0] = s
        for i in range(1, n_samples):
            s = min(int(np.searchsorted(trans_cdf[s], u[i], side="right")), self.n_components - 1)
            states[i] = s
        X = self._sample_emissions(params, torch.from_numpy(states), gen)
        return X.cpu().numpy(), states

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

    def aic(self, X, lengths=None):
        """AIC = −2 log L + 2 p (lower is better)."""
        return -2 * self.score(X, lengths) + 2 * sum(self._get_n_fit_scalars_per_param().values())

    def bic(self, X, lengths=None):
        """BIC = −2 log L + p log n (lower is better)."""
        n_params = sum(self._get_n_fit_scalars_per_param().values())
        return -2 * self.score(X, lengths) + n_params * np.log(len(X))

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Write the fitted model (safetensors + JSON header); read it with latentfit.load."""
        from latentfit.io import save

        check_is_fitted(self, "startprob_")
        return save(self, path)

    #: The settings a model file may restore (see :func:`latentfit.io.check_fields`).
    _state_fields: ClassVar[dict[str, str]] = {
        "lower_bounds_": "floats",
        "n_features": "int?",
        "feature_names_in_": "strs",
    }

    def _get_state(self):
        names = ("startprob_", "transmat_", *self._emission_attributes)
        tensors = {n: torch.as_tensor(np.asarray(getattr(self, n))) for n in names}
        extra = {
            "lower_bounds_": [float(v) for v in getattr(self, "lower_bounds_", [])],
            "n_features": int(self.n_features) if getattr(self, "n_features", None) else None,
        }
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        return tensors, extra

    def _set_state(self, tensors, extra):
        names = ("startprob_", "transmat_", *self._emission_attributes)
        if set(tensors) != set(names):
            raise ModelFileError(
                f"a {type(self).__name__} file holds the tensors {sorted(names)}; this one holds "
                f"{sorted(tensors)}"
            )
        extra = check_fields(extra, type(self))
        for name in names:
            setattr(self, name, tensors[name].numpy())
        if extra.get("n_features") is not None:
            self.n_features = extra["n_features"]
        if "feature_names_in_" in extra:
            self.feature_names_in_ = np.asarray(extra["feature_names_in_"], dtype=object)
        self.lower_bounds_ = extra.get("lower_bounds_", [])
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose, self.lower_bounds_)

    def _check_loaded(self) -> None:
        """After ``load``: the settings are valid and the tensors' shapes agree with
        ``n_components`` and ``n_features`` (ModelFileError naming the tensor)."""
        try:
            self._checked_settings()
            self._given_params()
        except (ParameterError, NotFittedError) as err:
            raise ModelFileError(
                f"the stored {type(self).__name__} is inconsistent: {err}"
            ) from None
