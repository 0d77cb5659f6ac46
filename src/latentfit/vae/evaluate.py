"""The marginal log-likelihood log p(x) by importance sampling, the standard VAE test metric.

log p(x) ≈ log 1/k Σ_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), i.e. the IWAE bound L_k with large
k (k = 5000 in Burda et al. 2016, Sec. 5). Samples are drawn in chunks, every chunk vectorised
over a block of data points, and the log-sum-exp accumulated in float64 across chunks: a
decoder call holds at most the rows that fit in a share of the memory available, whatever k,
and a k whose arithmetic would run for days (a count off by digits) is refused before the
first sample (:func:`check_work`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit import _memory
from latentfit._validation import as_generator, check_positive_int
from latentfit.errors import ResourceLimitError
from latentfit.model_tensors import check_finite_log_density
from latentfit.vae.diagnostics import _eval_mode, model_rows
from latentfit.vae.objectives import hidden_width, log_weights

__all__ = [
    "MAX_WORK",
    "MarginalLikelihood",
    "check_work",
    "estimate_work",
    "marginal_log_likelihood",
]

#: The arithmetic one estimate may take, in multiply-adds (:func:`estimate_work`): about a
#: day of one CPU core (:data:`latentfit._memory.MAX_WORK`) and 50 times Burda et al.'s
#: k = 5000 on MNIST's 10,000 test rows (2e13).
MAX_WORK = _memory.MAX_WORK
#: Multiply-adds a sample of z costs besides the network's weights (the noise, the
#: log-densities, the log-sum-exp): a network of 146 weights ran 2.2e6 samples a second on
#: the core where the 425,284 weights of Burda et al.'s ran 3.0e4.
_SAMPLE_COST = 4096
#: A decoder call may hold this share of the memory available (the rest: the model, the data,
#: the allocator's slack and whatever else the process holds).
_MEMORY_SHARE = 1 / 4


class MarginalLikelihood(NamedTuple):
    """``log_px`` (n,) float64 per data point; ``mean`` nats; ``nll`` = -mean; ``bits_per_dim``."""

    log_px: torch.Tensor
    mean: float
    nll: float
    bits_per_dim: float
    k: int


def estimate_work(model, n: int, k: int) -> int:
    """Multiply-adds of ``k`` importance samples for each of ``n`` rows: a pass through the
    model's weights and :data:`_SAMPLE_COST` more for every sample of every row."""
    weights = sum(p.numel() for p in model.parameters())
    return n * k * (weights + _SAMPLE_COST)


def check_work(model, n: int, k: int, max_work: int | None = MAX_WORK) -> None:
    """Refuse (ResourceLimitError) ``k`` importance samples for each of ``n`` rows whose
    arithmetic (:func:`estimate_work`) exceeds ``max_work`` multiply-adds, naming the largest
    k that fits; None: no limit."""
    if max_work is None:
        return
    work = estimate_work(model, n, k)
    if work <= max_work:
        return
    per_sample = estimate_work(model, 1, 1)
    largest = max_work // (n * per_sample)
    weights = per_sample - _SAMPLE_COST
    fits = (
        f"use k <= {largest:,} (Burda et al. use k=5000)"
        if largest >= 1
        else f"score fewer rows (at most {max_work // per_sample:,} with k=1)"
    )
    raise ResourceLimitError(
        f"log p(x) of {n:,} rows with k={k:,} importance samples each would take about "
        f"{work:.2g} multiply-adds ({n * k:,} samples through a network of {weights:,} "
        f"weights), more than {_memory.allowed_work(max_work)}; "
        f"{fits}, or pass max_work=None to run it anyway"
    )


def sample_bytes(model, x_dim: int, itemsize: int) -> int:
    """Bytes one sample of z of one row takes in a decoder call: the likelihood's parameters
    of the row's ``x_dim`` values and their log-probabilities, four copies (measured: 2.95 for
    a 256-level categorical, 3.4 for a Bernoulli), the latents and hidden layers twice
    (before and after their activation), a convolutional body's maps (12 per value each way)."""
    net = getattr(model, "module", model)
    likelihood = getattr(getattr(net, "decoder", None), "likelihood", None)
    n_params = int(getattr(likelihood, "n_params", 1))
    inner = hidden_width(net)
    numbers = 4 * x_dim * n_params + (2 * inner if inner is not None else 4 * x_dim)
    if getattr(getattr(net, "spec", None), "network", "mlp") == "conv":
        numbers += 24 * x_dim
    return numbers * itemsize


def decoder_rows(model, X: torch.Tensor, max_rows: int) -> int:
    """Rows of one decoder call (samples x data points): at most ``max_rows``, and at most
    what fits in :data:`_MEMORY_SHARE` of the memory available on X's device; refused
    (ResourceLimitError) where not even one row fits."""
    per = sample_bytes(model, X.shape[1], X.element_size())
    free = _memory.available_memory(X.device)
    if free is None:
        return max_rows
    rows = min(max_rows, int(free * _MEMORY_SHARE) // per)
    if rows < 1:
        raise ResourceLimitError(
            f"one sample of z for one row of log p(x) needs {per:,} bytes "
            f"({_memory.fmt_bytes(per)}) in the decoder, more than a quarter of the "
            f"{free:,} bytes ({_memory.fmt_bytes(free)}) available; free memory or use a "
            "device with more"
        )
    return rows


def marginal_log_likelihood(
    model,
    X: torch.Tensor,
    k: int = 5000,
    generator=None,
    batch_size: int = 100,
    max_rows: int = 50_000,
    progress: bool = False,
    max_work: int | None = MAX_WORK,
) -> MarginalLikelihood:
    """Importance-sampled log p(x) for each row of X with k samples from q(z | x).

    ``batch_size`` data points are processed together, with ``max_rows // batch_size`` samples
    of z per chunk (one decoder call of at most ``max_rows`` rows, fewer where the memory
    available holds fewer: :func:`decoder_rows`). A k whose arithmetic exceeds ``max_work``
    multiply-adds (:func:`check_work`; None: no limit) is refused before the first sample.
    Discrete models are evaluated at exact (unrelaxed) samples.
    """
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    max_rows = check_positive_int(max_rows, "max_rows")
    if max_work is not None:
        max_work = check_positive_int(max_work, "max_work")
    generator = as_generator(generator)
    X = model_rows(model, X)  # numpy or float64 rows as the model takes them, checked
    check_work(model, X.shape[0], k, max_work)
    rows = decoder_rows(model, X, max_rows)
    batch_size = min(batch_size, rows)
    chunk = max(1, min(k, rows // batch_size))
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # counted in samples of z, updated per decoder call: with a large k (10**8 takes
        # hours) the bar shows its rate and the time left from the first chunk, not the row
        bar = tqdm(
            total=X.shape[0] * k, desc=f"log p(x), k={k}", unit="z", unit_scale=True, leave=False
        )
    with _eval_mode(model):
        for start in range(0, X.shape[0], batch_size):
            xb = X[start : start + batch_size]
            acc = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=xb.device)
            done = 0
            while done < k:
                s = min(chunk, k - done)
                log_w = log_weights(model(xb, s, generator, relaxed=False))  # (s, b)
                acc = torch.logaddexp(acc, torch.logsumexp(log_w.double(), 0))
                done += s
                if bar is not None:
                    bar.update(xb.shape[0] * s)
            out.append((acc - math.log(k)).cpu())
        log_px = torch.cat(out)
        if bar is not None:
            bar.close()
        check_finite_log_density(
            log_px,
            f"the {type(getattr(model, 'module', model)).__name__}",
            model,
            lambda rows: log_weights(model(X[rows], 1, generator, relaxed=False)),
            X,
        )
    mean = float(log_px.mean())
    return MarginalLikelihood(log_px, mean, -mean, -mean / (X.shape[1] * math.log(2)), k)
