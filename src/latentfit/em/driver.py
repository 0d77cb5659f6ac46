"""The one EM driver.

Every EM model (mixtures, hidden Markov models, factor models) plugs in through four small,
pure hooks and the driver owns everything generic: restarts, tolerance, the per-iteration
history, the monotonicity check, convergence warnings, progress and seeding.

Hooks (Dempster, Laird & Rubin 1977, in the additive-statistics form of Neal & Hinton 1998):

``initialize(data, generator) -> params``
    Starting parameters (a dict of tensors).
``estep(params, batch) -> stats``
    Expected sufficient statistics of one batch of data under p(z | x, params), as a dict of
    tensors that **add up** over batches (and over processes: a ``reduce`` such as an
    all-reduce is applied to the summed dict before the M-step).
``mstep(params, stats) -> params``
    The closed-form maximiser of the expected complete-data log-likelihood (plus log prior).
``lower_bound(params, stats) -> float``
    The objective monitored for convergence: the log-likelihood of ``params`` (which is the
    ELBO when the E-step is exact), per sample or in total as the model prefers.
``decrease_slack(params) -> float`` (optional)
    How far the bound may legitimately fall in one iteration, for M-steps that are only
    near-maximisers (a regularisation term added to the closed form, an update whose
    rounding is large against what it estimates). Such a decrease is not warned of, and
    with ``convergence="delta"`` stops the fit only when it is smaller than ``tol``.
``log_prior(params) -> float`` (optional)
    For MAP-EM whose ``lower_bound`` is the log-likelihood alone (an HMM's, hmmlearn's
    history): the log prior density of ``params`` (up to a constant) that the M-step adds.
    EM never lowers ``lower_bound + log_prior``, not the log-likelihood, so the monotonicity
    check, the convergence test and the choice among restarts follow that sum; the history
    keeps ``lower_bound``.

The hooks take and return parameters instead of mutating the estimator, so a failed fit never
leaves a half-updated model behind.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from latentfit._interrupt import stop_requested, stoppable, stopped_by
from latentfit._validation import check_allocation
from latentfit.errors import (
    BatchRowError,
    DataError,
    LatentfitError,
    ParameterError,
    user_stacklevel,
)

__all__ = [
    "BatchRowError",
    "EMHooks",
    "EMMonotonicityWarning",
    "EMResult",
    "NonFiniteLowerBoundError",
    "accumulate_stats",
    "run_em",
    "sum_stats",
]

Params = dict[str, torch.Tensor]
Stats = dict[str, torch.Tensor]


class EMMonotonicityWarning(RuntimeWarning):
    """The EM objective decreased: a bug or a degenerate component, never normal behaviour."""


class NonFiniteLowerBoundError(FloatingPointError, LatentfitError):
    """The objective (EM's log-likelihood or a variational bound) became NaN or infinite; also
    a ``FloatingPointError``, as it was before it joined the documented errors."""


class EMHooks(Protocol):
    def initialize(self, data: Iterable, generator: torch.Generator) -> Params: ...

    def estep(self, params: Params, batch: Any) -> Stats: ...

    def mstep(self, params: Params, stats: Stats) -> Params: ...

    def lower_bound(self, params: Params, stats: Stats) -> float: ...


@dataclass
class EMResult:
    """Outcome of :func:`run_em`: the best run over ``n_init`` restarts."""

    params: Params
    lower_bound: float
    lower_bounds: list[float]
    n_iter: int
    converged: bool
    best_init: int = 0
    all_lower_bounds: list[list[float]] = field(default_factory=list)
    #: Stopped on request (Ctrl-C at the command line, :mod:`latentfit._interrupt`) at an
    #: iteration's end; the restarts after the one stopped were not made.
    stopped: bool = False


def accumulate_stats(hooks: EMHooks, params: Params, data: Iterable) -> Stats:
    """Sum the E-step statistics over every batch of ``data`` (bounded memory: one batch at a time)."""
    total = sum_stats(_batch_stats(hooks, params, data))
    if not total:
        raise DataError("the data yielded no batch: there is nothing to fit")
    return total


def _reduced_stats(hooks: EMHooks, params: Params, data: Iterable, reduce) -> Stats:
    """The statistics of a pass over ``data``, reduced. An error in this process's pass (an
    E-step that refuses a row) is first told to the other processes of a distributed source
    (``data.stop_together``), which would otherwise wait for its statistics until the
    timeout: every process raises it."""
    try:
        stats = accumulate_stats(hooks, params, data)
    except Exception as err:
        stop = getattr(data, "stop_together", None)
        if stop is not None:
            stop(err)
        raise
    return reduce(stats)


def _batch_stats(hooks: EMHooks, params: Params, data: Iterable) -> Iterable[Stats]:
    """The E-step of every batch, with a :class:`BatchRowError` re-raised naming the row of
    the data (of this process's shard: a source starts at its ``_row_offset()``)."""
    offset = data._row_offset() if hasattr(data, "_row_offset") else 0
    for batch in data:
        try:
            yield hooks.estep(params, batch)
        except BatchRowError as err:
            raise err.shifted(offset) from None
        first = batch[0] if isinstance(batch, tuple) and batch else None
        offset += first.shape[0] if isinstance(first, torch.Tensor) else 0


def _aitken_remaining(previous: float, change: float) -> float:
    """Aitken's estimate of what the objective gains from the iteration before the last one
    to its limit, ``change / (1 - a)`` with ``a = change / previous`` the ratio of the last
    two gains (Böhning et al. 1994; McNicholas et al. 2010, eq. 5): EM's gains shrink by ``a``
    each iteration near a maximum, so those still to come sum to ``change * a / (1 - a)``;
    +inf while the gains do not shrink (``a >= 1``) or before two gains are known.

    A state-space model's EM (300 steps, two columns) gains 0.00996, 0.0101, ... near the end:
    below ``tol = 1e-2``, with ``a`` = 0.982, and 1.6 nats still to come over 2,000 more
    iterations (its noise variance 10x the maximum's). This estimate there: 0.55."""
    if not previous > 0:
        return math.inf
    ratio = change / previous
    return change / (1.0 - ratio) if ratio < 1.0 else math.inf


def _decrease_tolerance(value: float, dtype: torch.dtype) -> float:
    """How far the bound may fall before it counts as a decrease.

    Rounding in a chunked sum of n terms is a few thousand ulps of the total; in float64 the
    slack is 1e-9 relative because regularisation added in the M-step (reg_covar) makes it a
    near-maximiser, whose bound can dip by ~1e-10 relative close to convergence.
    """
    rtol = 1e-9 if dtype == torch.float64 else 1e3 * torch.finfo(dtype).eps
    return rtol * max(1.0, abs(value))


def _in_rounding_cycle(bounds: list[float], slack: float, window: int = 12) -> bool:
    """True when the last bound repeats one of the ``window`` before it exactly and every
    change since then lies within the dtype's rounding ``slack``: the iteration, a
    deterministic map, has entered a cycle at the rounding level of its arithmetic and can
    make no further progress. A float32 CAVI fit of 2000 rows near 1e7 cycled with period
    5 and an amplitude of 0.09 nats (of 1736, ~700 ulps) for all of its 500 iterations,
    where tol=1e-6 asked for less than one ulp."""
    last = bounds[-1]
    earlier = bounds[-window - 1 : -1]
    if last not in earlier:
        return False
    start = len(bounds) - 1 - (len(earlier) - earlier.index(last))
    steps = [b - a for a, b in zip(bounds[start:-1], bounds[start + 1 :], strict=True)]
    return all(abs(x) <= slack for x in steps)


#: What to try when the bound stops being finite; hooks may give their own as ``remedy``.
_REMEDY = "Try a larger regularisation (reg_covar), fewer components, scaling the data, or float64."


def _non_finite(params: Params) -> list[str]:
    """The names of the floating-point tensors of ``params`` that hold NaN or inf (one
    device-wide reduction and one sync for all of them). Only a model's dict of parameters is
    read: a driver user's own structure (vi/gap.py passes log-responsibilities, where -inf is
    a zero) is its own business."""
    if not isinstance(params, Mapping):
        return []
    names = [k for k, v in params.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not names:
        return []
    ok = torch.stack([torch.isfinite(params[k]).all() for k in names]).tolist()
    return [k for k, fine in zip(names, ok, strict=True) if not fine]


def _distributed() -> bool:
    """Whether this process is one of a torch.distributed group (its fit's processes must
    take every decision together: a stop on request is not offered there)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def run_em(
    hooks: EMHooks,
    data: Iterable,
    *,
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    init_params: Params | None = None,
    init_bound: float = -math.inf,
    generator: torch.Generator | None = None,
    reduce: Callable[[Stats], Stats] | None = None,
    convergence: str = "abs",
    verbose: int = 0,
    name: str = "EM",
    max_iter_name: str = "max_iter",
    callback: Callable[[int, float, Params], None] | None = None,
    warn_convergence: bool = True,
) -> EMResult:
    """Run EM ``n_init`` times and keep the run with the highest final lower bound (plus the
    hooks' ``log_prior``, if any).

    Parameters
    ----------
    hooks : the model's four hooks (see module docstring).
    data : a re-iterable of batches; each pass over it is one E-step.
    init_params : start from these parameters (warm start) instead of calling ``initialize``;
        only one run is made.
    init_bound : with ``init_params``, the lower bound the previous fit ended with: the first
        iteration's change is measured from it, as scikit-learn's warm start does, so that a
        fit driven one iteration at a time (``max_iter=1``) can converge.
    reduce : applied to the summed statistics before every M-step (distributed all-reduce).
    convergence : ``"abs"`` stops when ``|Δ| < tol`` (scikit-learn), ``"delta"`` when
        ``Δ < tol`` (hmmlearn), except after a decrease the hooks' ``decrease_slack``
        excuses (past the bound's rounding), which stops it when ``|Δ| < tol``.
        ``"aitken"`` stops when Aitken's estimate of the gain still to come, counted from
        the previous iteration, is below ``tol`` (:func:`_aitken_remaining`; Böhning et al.
        1994, McNicholas et al. 2010): for EM whose gains shrink slowly, where a last gain
        below ``tol`` is far from the maximum (a linear-Gaussian state-space model).
    max_iter_name : what the model calls ``max_iter`` (``"n_iter"`` for HMMs, as hmmlearn),
        so that the convergence warning advises the argument that exists on that model.
    callback : called as ``callback(iteration, lower_bound, params)`` after every iteration.
    """
    if convergence not in ("abs", "delta", "aitken"):
        raise ParameterError(f"convergence must be 'abs', 'delta' or 'aitken', got {convergence!r}")
    if verbose is not None and not isinstance(verbose, int | np.integer):  # bool is an int
        raise ParameterError(f"verbose must be an integer (0: silent) or a bool, got {verbose!r}")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0)
    reduce = reduce or (lambda s: s)
    runs = 1 if init_params is not None else n_init
    # every run's lower bounds are kept (the fitted model's history): ~32 bytes an iteration
    check_allocation(
        32 * runs * (max_iter + 1),
        f"{name}: the history of {runs:,} restarts (n_init) of up to {max_iter:,} iterations "
        f"({max_iter_name}) each"
        if runs > 1
        else f"{name}: the history of up to {max_iter:,} iterations ({max_iter_name})",
        hint=f"lower n_init (1-20 restarts is usual) or {max_iter_name}"
        if runs > 1
        else f"lower {max_iter_name}",
    )
    best: EMResult | None = None
    best_objective = -math.inf
    all_bounds: list[list[float]] = []
    log_prior = getattr(hooks, "log_prior", None)
    # a request to stop (Ctrl-C) is taken at an iteration's end, where the parameters are a
    # whole M-step's; not in a distributed fit, whose processes must stop together
    stopped = False
    with (
        nullcontext()
        if _distributed()
        else stoppable("EM iteration", "the fit so far (not converged)")
    ):
        for run in range(runs):
            params = (
                dict(init_params) if init_params is not None else hooks.initialize(data, generator)
            )
            bad = _non_finite(params)
            if bad:
                raise NonFiniteLowerBoundError(
                    f"{name}: the start of init {run + 1} has non-finite {', '.join(bad)} (too few "
                    "or too extreme rows for the dtype's arithmetic). "
                    + getattr(hooks, "remedy", _REMEDY)
                )
            bounds: list[float] = []
            objectives: list[float] = []  # the bounds plus the log prior: what EM never lowers
            converged = False
            last_change = math.nan  # the change of the iteration before (Aitken's ratio)
            prev = init_bound if init_params is not None else -math.inf
            if log_prior is not None and init_params is not None:
                prev += float(log_prior(params))
            n_iter = 0
            bar = None
            if verbose:
                from tqdm.auto import tqdm

                desc = f"{name} init {run + 1}/{runs}" if runs > 1 else name
                bar = tqdm(total=max_iter, desc=desc, leave=verbose > 1)
            try:
                for n_iter in range(1, max_iter + 1):
                    stats = _reduced_stats(hooks, params, data, reduce)
                    bound = float(hooks.lower_bound(params, stats))
                    if not math.isfinite(bound):
                        raise NonFiniteLowerBoundError(
                            f"{name}: the log-likelihood became {bound} at iteration {n_iter} of "
                            f"init {run + 1}; the parameters before it were kept out of the model. "
                            + getattr(hooks, "remedy", _REMEDY)
                        )
                    objective = bound if log_prior is None else bound + float(log_prior(params))
                    dtype = next(iter(stats.values())).dtype
                    slack = _decrease_tolerance(prev, dtype)
                    excuse = (
                        float(hooks.decrease_slack(params))
                        if hasattr(hooks, "decrease_slack")
                        else 0.0
                    )
                    if bounds and objective < prev - slack - excuse:
                        warnings.warn(
                            f"{name}: the "
                            + ("log-likelihood" if objective == bound else "log posterior")
                            + f" decreased at iteration {n_iter} "
                            f"(init {run + 1}) from {prev:.10g} to {objective:.10g}; EM never lowers it, "
                            "so this points to a degenerate component or a numerical problem",
                            EMMonotonicityWarning,
                            stacklevel=user_stacklevel(),
                        )
                    params = hooks.mstep(params, stats)
                    bad = _non_finite(params)
                    if bad:
                        raise NonFiniteLowerBoundError(
                            f"{name}: the M-step of iteration {n_iter} (init {run + 1}) gave "
                            f"non-finite {', '.join(bad)} (a component or state that lost its data, "
                            "or a numerical problem); the parameters before it were kept out of "
                            "the model. " + getattr(hooks, "remedy", _REMEDY)
                        )
                    bounds.append(bound)
                    objectives.append(objective)
                    if callback is not None:
                        callback(n_iter, bound, params)
                    change = objective - prev
                    if bar is not None:
                        bar.update(1)
                        # the first iteration has no change to show (from -inf: "change=inf")
                        shown = {"change": f"{change:.3g}"} if math.isfinite(change) else {}
                        bar.set_postfix(lower_bound=f"{bound:.6g}", **shown)
                    # a decrease past the bound's rounding that the model's slack excuses came from
                    # an M-step that was no maximiser (regularisation, or an update lost to
                    # rounding), not from a maximum reached: "delta" then stops only within tol
                    excused = -slack - excuse <= change < -slack
                    if convergence == "aitken" and not excused and change > 0:
                        if _aitken_remaining(last_change, change) < tol:
                            converged = True
                            break
                    elif (abs(change) if convergence == "abs" or excused else change) < tol:
                        converged = True
                        break
                    last_change = change
                    if tol > 0 and _in_rounding_cycle(objectives, slack + excuse):
                        # as far as the dtype's arithmetic can take it (tol <= 0 asks for every
                        # one of max_iter iterations)
                        converged = True
                        break
                    prev = objective
                    if stop_requested():
                        stopped = True
                        break
            finally:
                if bar is not None:
                    bar.close()
            all_bounds.append(bounds)
            final = bounds[-1] if bounds else -math.inf
            final_objective = objectives[-1] if objectives else -math.inf
            if best is None or final_objective > best_objective:
                best = EMResult(params, final, bounds, n_iter, converged, run)
                best_objective = final_objective
            if stopped:
                break
    assert best is not None
    best.all_lower_bounds = all_bounds
    best.stopped = stopped
    if stopped:
        warnings.warn(
            f"{name}: stopped on request ({stopped_by()}) at iteration {n_iter} of {max_iter}"
            + (f" of init {len(all_bounds)} of {runs}" if runs > 1 else "")
            + (
                "; the best run so far is kept"
                if runs > 1
                else "; the parameters of that iteration are kept"
            )
            + ("" if best.converged else " (not converged)"),
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    elif warn_convergence and not best.converged and max_iter > 0:
        warnings.warn(
            f"{name}: best of {runs} initialization(s) did not converge in {max_iter} iterations "
            f"({'the gain still to come estimated' if convergence == 'aitken' else 'last change'}"
            f" above tol={tol}). Try a larger {max_iter_name} or tol, or check the data.",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    return best


def sum_stats(parts: Iterable[Mapping[str, torch.Tensor]]) -> Stats:
    """Add statistics dicts key by key (the algebra that makes chunked and distributed EM exact)."""
    out: Stats = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out[k] + v if k in out else v.clone()
    return out
