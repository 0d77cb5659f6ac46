"""What a sampling run will hold in memory, checked before its first transition.

Every tensor a sampler allocates is sized by its arguments: the chains, the draws kept, the
parameters, NUTS's deepest tree, a Gibbs sampler's (chains, rows, states) responsibilities,
SVGD's (particles, particles) kernel. A count mistyped by a few digits (``num_chains=10**8``,
``num_draws=10**10``) would otherwise run for minutes and then exhaust the machine, or stop on
torch's allocator error. Each sampler adds up what its arguments imply, from the formulas
below, and refuses up front (``ResourceLimitError``, through ``check_allocation``) a run that
needs more than the memory still available, naming the largest part and what to change.
The formulas count the tensors a run keeps (the draws, their stacked copy, the constrained
values) and its largest working tensors; they are an estimate of the peak, within a small
factor, not an exact account.
"""

from __future__ import annotations

from latentfit._memory import (
    MAX_WORK,
    allowed_work,
    check_allocation,
    check_max_work,
    fmt_bytes,
)
from latentfit._validation import check_positive_int
from latentfit.errors import ResourceLimitError

__all__ = [
    "ITERATION_WORK",
    "check_counts",
    "check_iterations",
    "check_max_work",
    "check_run",
    "gibbs_parts",
    "nuts_parts",
    "svgd_parts",
]

_LONG = 8  # bytes of an int64 (labels, tree depths, leapfrog counts)

#: What one iteration (a NUTS transition, a Gibbs sweep, an SVGD step) costs however small the
#: model, in multiply-adds at the 1.3e10 a second of ``MAX_WORK``: the tens of tensor
#: operations it launches took 1-5 ms on one core for one chain of one parameter (NUTS eager
#: and replayed, Gibbs of a mixture and of an HMM, SVGD of two particles), so that
#: ``MAX_WORK / ITERATION_WORK`` = 10**8 iterations are about a day or more.
ITERATION_WORK = 10**7


def check_counts(num_chains, num_warmup, num_draws) -> tuple[int, int, int]:
    """The three counts of a run as ints: ``num_chains`` and ``num_draws`` at least 1,
    ``num_warmup`` at least 0 (``ParameterError`` naming the argument otherwise)."""
    return (
        check_positive_int(num_chains, "num_chains"),
        check_positive_int(num_warmup, "num_warmup", 0),
        check_positive_int(num_draws, "num_draws"),
    )


def check_iterations(
    what: str,
    iterations: int,
    per_iteration: int,
    *,
    option: str,
    max_work: int | float | None = MAX_WORK,
) -> None:
    """Refuse (``ResourceLimitError``) ``iterations`` of ``what`` whose arithmetic,
    ``per_iteration`` multiply-adds besides ``ITERATION_WORK`` each, exceeds ``max_work``
    (by default about a day of one core; None or inf: no limit, see :func:`check_max_work`),
    naming the most iterations that fit as ``option <= N`` and ``max_work=None`` as the way
    past the cap. Warm-up iterations keep nothing, so no memory check sees them:
    ``num_warmup=10**12`` ran for ever."""
    max_work = check_max_work(max_work)
    if max_work is None:
        return
    per = ITERATION_WORK + per_iteration
    work = iterations * per
    if work <= max_work:
        return
    most = max_work // per
    fix = (
        f"use {option} <= {most:,}, or pass max_work=None to run it anyway"
        if most >= 1  # a cap below one iteration is a user's: it names no count that runs
        else f"not one iteration fits: pass max_work >= {per} (or None: no limit)"
    )
    raise ResourceLimitError(
        f"{what}: {iterations:,} iterations of at least {per:.2g} multiply-adds each are more "
        f"than {allowed_work(max_work)}; {fix}"
    )


def check_run(what: str, parts: dict[str, int], *, device=None, hint: str) -> None:
    """Refuse ``what`` when the bytes of its ``parts`` ({what it is for: bytes}) together exceed
    the memory available on ``device``; the message names the parts, largest first."""
    shown = sorted(((n, k) for k, n in parts.items() if n > 0), reverse=True)
    detail = ", ".join(f"{k} {fmt_bytes(n)}" for n, k in shown)
    check_allocation(sum(parts.values()), f"{what} ({detail})", device=device, hint=hint)


def nuts_parts(
    chains: int,
    draws: int,
    warmup: int,
    n_free: int,
    n_values: int,
    itemsize: int,
    *,
    leaves: int,
    dense: bool,
) -> dict[str, int]:
    """Bytes of a NUTS or HMC run: the draws' records (position, divergence position, log-density,
    acceptance, energy, depth, leapfrog count, flag per chain and draw; kept as a list and
    stacked, so twice) and their constrained values (``n_values`` numbers a draw); the warm-up's
    records (log-density, acceptance and the metric window's positions); the trajectory's
    ``leaves`` states (position, momentum, gradient: the deepest doubling's leaves); a dense
    metric's (chains, n_free, n_free) estimates."""
    per_draw = 2 * ((2 * n_free + 3) * itemsize + 2 * _LONG + 1) + n_values * itemsize
    per_warm = 2 * (n_free + 2) * itemsize
    return {
        "draws": chains * draws * per_draw,
        "warm-up": chains * warmup * per_warm,
        "trajectory": chains * leaves * 3 * n_free * itemsize,
        "dense metric": 4 * chains * n_free * n_free * itemsize if dense else 0,
    }


def gibbs_parts(
    chains: int,
    draws: int,
    rows: int,
    states: int,
    per_draw_values: int,
    itemsize: int,
    *,
    co_assignment: bool,
) -> dict[str, int]:
    """Bytes of a Gibbs run by data augmentation: the (chains, rows, states) one-hot labels,
    log-likelihoods, forward messages and Gumbel noise of a sweep; the draws' parameters
    (``per_draw_values`` numbers a chain and draw, kept as a list and stacked); the (rows, rows)
    co-assignment and its per-chain comparison of labels, where kept."""
    return {
        "labels and responsibilities": 6 * chains * rows * states * itemsize
        + chains * rows * _LONG,
        "draws": 2 * chains * draws * per_draw_values * itemsize,
        "co-assignment": rows * rows * itemsize + chains * rows * rows * (itemsize + 1)
        if co_assignment
        else 0,
    }


def svgd_parts(particles: int, n_free: int, itemsize: int) -> dict[str, int]:
    """Bytes of an SVGD run: the (particles, particles) distances and kernel (four tensors of
    that size at once) and the particles, scores, update and its running scale."""
    return {
        "kernel": 4 * particles * particles * itemsize,
        "particles": 6 * particles * n_free * itemsize,
    }
