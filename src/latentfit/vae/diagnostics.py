"""Posterior-collapse diagnostics: KL per latent dimension, active units, I(x; z), a warning.

All functions take a model and data (n, d), run in evaluation mode without gradients, work in
minibatches of ``batch_size`` and return tensors on the CPU. The data are checked first
(:func:`model_rows`): the model's columns, finite values, its likelihood's support.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from latentfit._validation import (
    as_float_tensor,
    as_generator,
    check_positive_int,
    is_finite_above,
)
from latentfit.errors import DataError, ParameterError
from latentfit.vae.likelihoods import check_model_columns, check_model_data, integer_levels
from latentfit.vae.models import VAE, DiscreteVAE

__all__ = [
    "Diagnostics",
    "PosteriorCollapseWarning",
    "active_units",
    "check_collapse",
    "diagnose",
    "estimates_mutual_information",
    "kl_per_dimension",
    "model_rows",
    "mutual_information",
]


class PosteriorCollapseWarning(UserWarning):
    """The KL(q(z|x) ‖ p(z)) of every latent dimension fell to about zero: z carries no
    information about x, the decoder models the data on its own."""


class Diagnostics(NamedTuple):
    kl_per_dim: torch.Tensor | None  # (d_z,) nats, mean over the data
    unit_variance: torch.Tensor  # (d_z,) Cov_x(E_q[z | x]) diagonal
    n_active: int  # units with variance above the threshold
    mutual_info: float | None  # nats


def model_rows(model, X, name: str = "X") -> torch.Tensor:
    """``X`` as ``model`` takes it: a non-empty (n, d) floating tensor in the dtype and on the
    device of the model's weights (numpy rows, or float64 rows for a float32 model, are
    converted), with the model's d columns, every value finite and in the support of its
    likelihood. DataError naming the shape, row or column at fault otherwise: bad rows
    never reach the encoder as a matrix-product error or a NaN bias. Integer level codes of
    a categorical likelihood are read as its intensities (:func:`integer_levels`)."""
    X = integer_levels(model, X, name)
    weights = next(iter(getattr(model, "module", model).parameters()), None)
    X = as_float_tensor(  # NaN is refused below, with a hint that fits a VAE
        X,
        name=name,
        dtype=torch.float64 if weights is None else weights.dtype,
        device=None if weights is None else weights.device,
        ndim=None,
        allow_nan=True,
        min_samples=0,
        missing_hint=False,  # a VAE marginalises nothing: an inf is not to become a NaN
    )
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty (n, d) tensor, got shape {tuple(X.shape)}")
    check_model_columns(model, X, name)
    if not bool(torch.isfinite(X).all()):
        r, c = (int(i) for i in (~torch.isfinite(X)).nonzero()[0])
        raise DataError(
            f"{name} holds a non-finite value at row {r}, column {c}; remove or impute it"
        )
    check_model_data(model, X, name)  # the data must lie in the likelihood's support
    return X


def _check_threshold(threshold) -> None:
    """The variance above which a unit counts as active: a finite number >= 0 (NaN would
    count no unit active and say nothing)."""
    if not is_finite_above(threshold, 0.0, inclusive=True):
        raise ParameterError(
            f"threshold must be a finite number >= 0 (the variance of E_q[z_j | x] over the "
            f"data above which unit j is active), got {threshold!r}; 0.01 is Burda et al.'s"
        )


def _batches(X: torch.Tensor, batch_size: int):
    for start in range(0, X.shape[0], batch_size):
        yield X[start : start + batch_size]


class _eval_mode:
    """Context: model.eval() and no_grad, restoring the previous training flag after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)
        return False


def kl_per_dimension(model, X: torch.Tensor, batch_size: int = 500, generator=None):
    """Mean over the data of the closed-form KL(q(z_j | x) ‖ p(z_j)) per latent dimension (d_z,),
    or None when the model has no closed form (flow posteriors)."""
    X = model_rows(model, X)
    batch_size = check_positive_int(batch_size, "batch_size")
    generator = as_generator(generator)
    total, n = None, 0
    with _eval_mode(model):
        for xb in _batches(X, batch_size):
            kl = model(xb, 1, generator).kl
            if kl is None:
                return None
            total = kl.double().sum(0) if total is None else total + kl.double().sum(0)
            n += xb.shape[0]
    return (total / n).cpu()


def active_units(
    model, X: torch.Tensor, threshold: float = 0.01, batch_size: int = 500, generator=None
):
    """(number active, per-unit variance): unit j is active when Cov_x(E_q[z_j | x]) > threshold.

    Burda et al. (2016), Sec. 5.2, with their threshold 10⁻².
    """
    X = model_rows(model, X)
    _check_threshold(threshold)
    batch_size = check_positive_int(batch_size, "batch_size")
    generator = as_generator(generator)
    with _eval_mode(model):
        means = torch.cat(
            [
                model.posterior_mean(xb, generator=generator).double()
                for xb in _batches(X, batch_size)
            ]
        )
    var = means.var(0, unbiased=False).cpu()  # (d_z,)
    return int((var > threshold).sum()), var


def estimates_mutual_information(model) -> bool:
    """Whether :func:`mutual_information` applies to ``model`` (the Gaussian VAE without a
    flow and the discrete VAE: their q(z | x) is evaluated for every pair in closed form)."""
    return (isinstance(model, VAE) and model.flow is None) or isinstance(model, DiscreteVAE)


def _log_q_pairs(model, z: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """log q(z_i | x_j) for every i, j: z (m, d_z), xb (n, d) → (m, n)."""
    if isinstance(model, VAE) and model.flow is None:
        q = model.encoder(xb)
        diff = (z[:, None, :] - q.loc[None]) / q.scale[None]  # (m, n, d_z)
        return (-0.5 * diff.square() - q.scale.log()[None] - 0.5 * math.log(2 * math.pi)).sum(-1)
    if isinstance(model, DiscreteVAE):
        log_q = model.logits(xb).log_softmax(-1).flatten(-2)  # (n, L·C)
        return z @ log_q.T  # one-hot z picks the log-probability of each chosen category
    raise ParameterError(
        f"mutual information is estimated for the Gaussian VAE without a flow and the discrete "
        f"VAE, not for {type(model).__name__}"
    )


def mutual_information(model, X: torch.Tensor, generator=None, batch_size: int = 500) -> float:
    """I(x; z) under q(x, z) = p_data(x) q(z | x), estimated on X (Hoffman & Johnson 2016).

    I = E_x E_{q(z|x)}[log q(z | x) - log q(z)] with the aggregate posterior
    q(z) = 1/n Σ_j q(z | x_j) computed over all of X, one sample of z per data point. The
    estimate is at most log n.
    """
    X = model_rows(model, X)
    generator = as_generator(generator)
    batch_size = check_positive_int(batch_size, "batch_size")
    n = X.shape[0]
    with _eval_mode(model):
        z = torch.cat(
            [model(xb, 1, generator, relaxed=False).z[0] for xb in _batches(X, batch_size)]
        )
        terms = []
        for start in range(0, n, batch_size):
            zi = z[start : start + batch_size]
            pairs = torch.cat([_log_q_pairs(model, zi, xb) for xb in _batches(X, batch_size)], 1)
            own = pairs[torch.arange(zi.shape[0]), torch.arange(start, start + zi.shape[0])]
            agg = torch.logsumexp(pairs.double(), 1) - math.log(n)
            terms.append(own.double() - agg)
    return float(torch.cat(terms).mean())


def diagnose(
    model, X: torch.Tensor, generator=None, threshold: float = 0.01, batch_size: int = 500
):
    """KL per dimension, active units and (where it can be estimated) I(x; z) on X."""
    X = model_rows(model, X)  # every argument checked before the first pass
    _check_threshold(threshold)
    batch_size = check_positive_int(batch_size, "batch_size")
    generator = as_generator(generator)
    kl = kl_per_dimension(model, X, batch_size, generator)
    n_active, var = active_units(model, X, threshold, batch_size, generator)
    mi = (
        mutual_information(model, X, generator, batch_size)
        if estimates_mutual_information(model)
        else None
    )
    return Diagnostics(kl, var, n_active, mi)


def check_collapse(kl_per_dim: torch.Tensor | None, epoch: int, min_kl: float = 0.01) -> bool:
    """Warn (:class:`PosteriorCollapseWarning`) and return True when every dimension's KL < min_kl."""
    if kl_per_dim is None or not bool((kl_per_dim < min_kl).all()):
        return False
    warnings.warn(
        f"posterior collapse at epoch {epoch}: the KL of every latent dimension is below "
        f"{min_kl} nats (total {float(kl_per_dim.sum()):.4f}), so z carries no information about "
        "x; try a KL warm-up (kl_schedule='linear' or 'cyclical'), free bits (free_bits=0.5), "
        "or a weaker decoder",
        PosteriorCollapseWarning,
        stacklevel=2,
    )
    return True
