"""The marginal log-likelihood log p(x) by importance sampling, the standard VAE test metric.

log p(x) ≈ log 1/k Σ_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), i.e. the IWAE bound L_k with large
k (k = 5000 in Burda et al. 2016, Sec. 5). Samples are drawn in chunks, every chunk vectorised
over a block of data points, and the log-sum-exp accumulated in float64 across chunks, so k
is limited by time, not memory.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from latentfit._validation import as_generator, check_positive_int
from latentfit.vae.diagnostics import _eval_mode, model_rows
from latentfit.vae.objectives import log_weights

__all__ = ["MarginalLikelihood", "marginal_log_likelihood"]


class MarginalLikelihood(NamedTuple):
    """``log_px`` (n,) float64 per data point; ``mean`` nats; ``nll`` = -mean; ``bits_per_dim``."""

    log_px: torch.Tensor
    mean: float
    nll: float
    bits_per_dim: float
    k: int


def marginal_log_likelihood(
    model,
    X: torch.Tensor,
    k: int = 5000,
    generator=None,
    batch_size: int = 100,
    max_rows: int = 50_000,
    progress: bool = False,
) -> MarginalLikelihood:
    """Importance-sampled log p(x) for each row of X with k samples from q(z | x).

    ``batch_size`` data points are processed together, with ``max_rows // batch_size`` samples
    of z per chunk (one decoder call of at most ``max_rows`` rows). Discrete models are
    evaluated at exact (unrelaxed) samples.
    """
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    max_rows = check_positive_int(max_rows, "max_rows")
    generator = as_generator(generator)
    X = model_rows(model, X)  # numpy or float64 rows as the model takes them, checked
    chunk = max(1, min(k, max_rows // batch_size))
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
    if bar is not None:
        bar.close()
    log_px = torch.cat(out)
    mean = float(log_px.mean())
    return MarginalLikelihood(log_px, mean, -mean, -mean / (X.shape[1] * math.log(2)), k)
