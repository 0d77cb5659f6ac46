"""Observation models p(x | z) for decoders: Bernoulli logits, Gaussian, 256-way categorical.

A likelihood turns the decoder's raw output ``params`` (n, d * n_params) into a
``torch.distributions`` object whose event is one whole data point (event_shape (d,)), so
``log_prob(x)`` is log p(x | z) summed over the d dimensions.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Independent, Normal

from latentfit.errors import ConstantColumnWarning, DataError, ParameterError, user_stacklevel
from latentfit.vae.networks import ConvEncoderBody

__all__ = [
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "GaussianLikelihood",
    "check_model_columns",
    "check_model_data",
    "check_training_columns",
    "input_columns",
    "integer_levels",
    "level_codes",
    "make_likelihood",
    "soft_clamp",
]


def soft_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map ``x`` smoothly into (low, high): ``low + (high - low) * sigmoid(x)``.

    Used for log-variances so that a decoder can never emit a variance of 0 or ∞ (the usual
    cause of NaN Gaussian VAE losses), while the gradient never vanishes at a hard clip.
    """
    return low + (high - low) * torch.sigmoid(x)


def input_columns(model) -> int | None:
    """The number of columns of the rows ``model`` takes (a VAE, or an estimator holding one
    as ``module``): its spec's ``x_dim`` for a model made by ``build_model``, else the input
    width of an encoder body made by :func:`~latentfit.vae.networks.mlp` or a
    :class:`~latentfit.vae.networks.ConvEncoderBody`; None where it cannot be told."""
    net = getattr(model, "module", model)
    spec = getattr(net, "spec", None)
    if spec is not None:
        return int(spec.x_dim)
    encoder = getattr(net, "encoder", None)  # VAE; the ladder's bottom layer is up1
    encoder = getattr(net, "up1", net) if encoder is None else encoder
    body = getattr(encoder, "body", None)  # DiscreteVAE: the model's own body
    if isinstance(body, ConvEncoderBody):
        return math.prod(body.image_shape)
    if isinstance(body, nn.Sequential) and len(body) and isinstance(body[0], nn.Linear):
        return body[0].in_features
    return None


def check_model_columns(model, x: torch.Tensor, name: str = "X") -> None:
    """DataError unless the rows of ``x`` (n, d) have the columns ``model`` takes
    (:func:`input_columns`): caught here, not as a matrix-product error inside the encoder."""
    d = input_columns(model)
    if d is not None and x.dim() == 2 and x.shape[1] != d:
        raise DataError(
            f"the model expects {d} columns, {name} has {x.shape[1]} (shape "
            f"{tuple(x.shape)}); pass rows of the data the model was built for, {d} values each"
        )


def check_model_data(model, x: torch.Tensor, name: str = "X") -> None:
    """``x`` checked against ``model`` (a VAE, or an estimator holding one as ``module``):
    its columns (:func:`check_model_columns`), then its values against the support of the
    decoder likelihood, where that likelihood says what it takes."""
    check_model_columns(model, x, name)
    net = getattr(model, "module", model)
    likelihood = getattr(getattr(net, "decoder", None), "likelihood", None)
    if hasattr(likelihood, "check_data"):
        likelihood.check_data(x, name)


def check_training_columns(model, x: torch.Tensor, name: str = "X_train") -> None:
    """Warn where the training rows ``x`` (n, d) hold a column the decoder likelihood of
    ``model`` fits badly, where that likelihood says (:meth:`GaussianLikelihood.check_training`)."""
    net = getattr(model, "module", model)
    likelihood = getattr(getattr(net, "decoder", None), "likelihood", None)
    if hasattr(likelihood, "check_training"):
        likelihood.check_training(x, name)


def integer_levels(model, X, name: str = "X"):
    """``X`` as ``model`` (a VAE, or an estimator holding one as ``module``) reads it: integer
    level codes (a torch or numpy integer array) of a model with a categorical likelihood
    become the intensities level / (n_levels - 1) its encoder was trained on, in the dtype of
    its weights, after a DataError naming the row and column of a code outside
    0..n_levels-1; anything else is returned as it is. Integers that are all 0 or 1 are
    refused for a model whose ``level_scale_`` says it was fitted to intensities (more than
    two levels): they may be pixels off and on, the intensities 0 and 1, as well as codes."""
    net = getattr(model, "module", model)
    likelihood = getattr(getattr(net, "decoder", None), "likelihood", None)
    if not isinstance(likelihood, CategoricalLikelihood):
        return X
    if isinstance(X, torch.Tensor):
        integer = not (X.is_floating_point() or X.is_complex() or X.dtype == torch.bool)
    else:
        integer = isinstance(X, np.ndarray) and X.dtype.kind in "iu"
    if not integer:
        return X
    weights = next(iter(net.parameters()), None)
    dtype = torch.float64 if weights is None else weights.dtype
    codes = torch.as_tensor(X)
    x = likelihood.intensities(codes, name)  # (n, d), the codes checked
    top = likelihood.n_levels - 1
    scale = getattr(model, "level_scale_", getattr(net, "level_scale_", None))
    if scale == top and top > 1 and codes.numel() and bool((codes <= 1).all()):
        # a model fitted to intensities (its file says so) whose 1 is the level top, given
        # integer 0s and 1s: pixels on and off, or the two lowest codes?
        raise DataError(
            f"{name} holds only the integers 0 and 1, read as the level codes 0 and 1 (the "
            f"intensities 0 and 1/{top}), but the model was fitted to intensities in [0, 1] "
            f"(level_scale_ = {top:g}), where 1 is the level {top}: pass intensities as a "
            f"floating array, or the codes 0 and 1 as the floats {name} / {top}"
        )
    return x.to(dtype)


def level_codes(
    x: torch.Tensor, n_levels: int, name: str = "X", more: str = "build the model with n_levels"
) -> torch.Tensor:
    """``x`` (n, d) of floats that hold integer level codes 0..n_levels-1 (a table read from
    a text file) as an int64 tensor (n, d); a DataError naming the first row and column that
    holds anything else (a fraction, a value out of range, NaN). ``more`` says how to get
    more levels, the advice for a code past the last."""
    bad = ~((x >= 0) & (x <= n_levels - 1) & (x == x.round()))  # NaN included
    if bool(bad.any()):
        r, c = (int(i) for i in bad.nonzero()[0])
        value = float(x[r, c])
        if math.isfinite(value) and value > n_levels - 1 and value == round(value):
            largest = int(x[x.isfinite() & (x == x.round())].max())
            hint = f"{more} above the largest level ({largest + 1} or more)"
        else:
            hint = "recode the column"
        raise DataError(
            f"{name} holds {value:.6g} at row {r}, column {c}: a categorical likelihood of "
            f"{n_levels} levels reads integer level codes here, whole numbers "
            f"0..{n_levels - 1}; {hint}"
        )
    return x.long()  # (n, d)


def grid_tolerance(top: int, dtype: torch.dtype) -> float:
    """How far ``x * top`` of an intensity x on the grid k / top, held in ``dtype``, may lie
    from the level k and still read as k: 1e-4 of a level, or 4 top ulps of ``dtype`` where
    that is larger (k / top stored in the dtype is off by a few ulps once scaled back by top:
    k / 4999 in float32 by up to 3e-4 of a level)."""
    return max(1e-4, 4 * top * torch.finfo(dtype).eps)


def _check_range(x: torch.Tensor, low: float, high: float, name: str, rule: str) -> None:
    """DataError naming the first row and column of ``x`` (n, d) outside [low, high]."""
    bad = (x < low) | (x > high)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        where = f"row {idx[0]}, column {idx[-1]}" if len(idx) > 1 else f"entry {idx[0]}"
        raise DataError(
            f"{name} holds {float(x[idx]):.6g} at {where}: {rule}. Score data on the scale "
            "the model was fitted to (e.g. divide 8-bit pixels by 255), or fit a model with "
            "a Gaussian likelihood for other data"
        )


class BernoulliLikelihood(nn.Module):
    """p(x | z) = ∏_j Bernoulli(x_j; sigmoid(η_j)); the decoder emits logits η (n, d)."""

    n_params = 1

    def check_data(self, x: torch.Tensor, name: str = "X") -> None:
        """DataError unless every value of ``x`` lies in [0, 1] (binary pixels or their
        intensities): outside it, -BCE is not a log-probability and scores would be wrong."""
        _check_range(x, 0.0, 1.0, name, "a Bernoulli likelihood needs values in [0, 1]")

    def distribution(self, params: torch.Tensor) -> Independent:
        return Independent(Bernoulli(logits=params, validate_args=False), 1)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # -BCE-with-logits is log Bernoulli(x; sigmoid(η)); same as Bernoulli.log_prob, minus
        # the object construction on the hot path.
        return -nn.functional.binary_cross_entropy_with_logits(
            params, x.to(params.dtype).expand_as(params), reduction="none"
        ).sum(-1)  # (..., n)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class GaussianLikelihood(nn.Module):
    """p(x | z) = N(x; μ(z), σ²) with σ² fixed, learned per dimension, or emitted by the decoder.

    ``variance``: ``"fixed"`` (σ² = ``fixed_variance``), ``"learned"`` (one free log-variance per
    dimension) or ``"decoder"`` (the decoder emits a log-variance per dimension). Learned
    log-variances are squashed into [``min_logvar``, ``max_logvar``] by :func:`soft_clamp`.
    """

    def __init__(
        self,
        d: int,
        variance: str = "decoder",
        fixed_variance: float = 1.0,
        min_logvar: float = -7.0,
        max_logvar: float = 2.0,
    ):
        super().__init__()
        if variance not in ("fixed", "learned", "decoder"):
            raise ParameterError(
                f"variance must be 'fixed', 'learned' or 'decoder', got {variance!r}"
            )
        if variance == "fixed" and not fixed_variance > 0:
            raise ParameterError(f"fixed_variance must be positive, got {fixed_variance}")
        if not min_logvar < max_logvar:
            raise ParameterError(f"need min_logvar < max_logvar, got {min_logvar} and {max_logvar}")
        self.d, self.variance = d, variance
        self.min_logvar, self.max_logvar = min_logvar, max_logvar
        self.fixed_logvar = math.log(fixed_variance)
        self.n_params = 2 if variance == "decoder" else 1
        self.raw_logvar = nn.Parameter(torch.zeros(d)) if variance == "learned" else None

    def check_training(self, x: torch.Tensor, name: str = "X_train") -> None:
        """ConstantColumnWarning for columns of the training rows ``x`` (n, d) that hold one
        value in every row, where the variance is learned: it falls there to the floor
        ``min_logvar``, and each such column adds up to ``0.5 (-min_logvar - log 2 pi)`` nats a
        row to the bound (2.58 at -7), the floor's and not the data's (the bundled MNIST's 121
        pixels that are 0 in all of its 5,000 digits: up to 312 nats of an ELBO)."""
        if self.variance == "fixed" or x.dim() != 2 or x.shape[0] < 2:
            return
        from latentfit.em.flat_columns import constant_columns

        cols, values = constant_columns(x)
        if not cols:
            return
        shown = ", ".join(f"{j} ({v:g})" for j, v in zip(cols[:10], values, strict=False))
        gain = 0.5 * (-self.min_logvar - math.log(2 * math.pi))
        warnings.warn(
            f"column{'s' if len(cols) > 1 else ''} {shown}{', ...' if len(cols) > 10 else ''} "
            f"of {name} hold{'s' if len(cols) == 1 else ''} one value in every row"
            f"{f' ({len(cols)} columns)' if len(cols) > 10 else ''}: a Gaussian decoder's "
            f"{'learned' if self.variance == 'learned' else 'emitted'} variance falls there "
            f"to its floor (min_logvar={self.min_logvar:g}), and each such column adds up to "
            f"{gain:.3g} nats a row to the bound, the floor's and not the data's. Drop the "
            "column(s), or fix the variance (variance='fixed')",
            ConstantColumnWarning,
            stacklevel=user_stacklevel(),
        )

    def _loc_logvar(self, params: torch.Tensor):
        if self.variance == "decoder":
            loc, raw = params.chunk(2, dim=-1)
            return loc, soft_clamp(raw, self.min_logvar, self.max_logvar)
        if self.variance == "learned":
            return params, soft_clamp(self.raw_logvar, self.min_logvar, self.max_logvar).expand_as(
                params
            )
        return params, torch.full_like(params, self.fixed_logvar)

    def distribution(self, params: torch.Tensor) -> Independent:
        loc, logvar = self._loc_logvar(params)
        return Independent(Normal(loc, (0.5 * logvar).exp(), validate_args=False), 1)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.distribution(params).log_prob(x)  # (..., n)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._loc_logvar(params)[0]


class CategoricalLikelihood(nn.Module):
    """p(x | z) = ∏_j Categorical(x_j; softmax(η_j)) over ``n_levels`` grey levels (default 256).

    Data are given either as integer levels 0..n_levels-1 (a torch or numpy integer array;
    the encoder reads them as the intensities level / (n_levels - 1), see
    :func:`integer_levels`) or as floats in [0, 1] on the grid k / (n_levels - 1), which are
    mapped to the level ``round(x * (n_levels - 1))`` (:meth:`check_data` refuses a value off
    the grid rather than round it). The decoder emits (n, n_levels * d) logits laid out
    level-major (all pixels' level-0 logits first), the layout a convolutional decoder produces.
    """

    def __init__(self, d: int, n_levels: int = 256):
        super().__init__()
        if n_levels < 2:
            raise ParameterError(f"n_levels must be at least 2, got {n_levels}")
        self.d, self.n_levels, self.n_params = d, n_levels, n_levels

    def check_data(self, x: torch.Tensor, name: str = "X") -> None:
        """DataError unless ``x`` holds what :meth:`levels` reads: intensities in [0, 1] on
        the grid k / (n_levels - 1) (a floating tensor) or integer levels 0..n_levels-1."""
        what = f"a categorical likelihood of {self.n_levels} levels"
        if x.is_floating_point():
            rule = f"{what} reads floating values as intensities in [0, 1]"
            _check_range(x, 0.0, 1.0, name, rule)
            self._check_grid(x, name)
        else:
            self._check_levels(x, name)

    def _check_grid(self, x: torch.Tensor, name: str) -> None:
        """DataError naming the first row and column of intensities ``x`` (n, d) in [0, 1]
        off the grid k / (n_levels - 1): :meth:`levels` would round it to another value."""
        top = self.n_levels - 1
        tol = grid_tolerance(top, x.dtype)
        scaled = x * top
        bad = (scaled - scaled.round()).abs() > tol
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            where = f"row {idx[0]}, column {idx[-1]}" if len(idx) > 1 else f"entry {idx[0]}"
            value = float(x[idx])
            raise DataError(
                f"{name} holds {value:.6g} at {where}, between two of the {self.n_levels} "
                f"levels of a categorical likelihood: it reads intensities as multiples of "
                f"1/{top} (level k is k/{top}) and would round {value:.6g} to "
                f"{round(value * top)}/{top}. Round the data to k/{top} first "
                f"(round(x * {top}) / {top}), give the integer level codes 0..{top}, or fit a "
                "Gaussian likelihood for continuous values"
            )

    def _check_levels(self, x: torch.Tensor, name: str) -> None:
        """DataError naming the first row and column of integer ``x`` outside 0..n_levels-1."""
        bad = (x < 0) | (x > self.n_levels - 1)
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            where = f"row {idx[0]}, column {idx[-1]}" if len(idx) > 1 else f"entry {idx[0]}"
            raise DataError(
                f"{name} holds the level {int(x[idx])} at {where}: a categorical likelihood "
                f"of {self.n_levels} levels takes integer levels 0..{self.n_levels - 1}; "
                f"recode the column, or build the model with n_levels above the largest "
                f"level ({int(x.max()) + 1} or more)"
            )

    def intensities(self, x: torch.Tensor, name: str = "X") -> torch.Tensor:
        """Integer levels ``x`` (n, d), checked, as intensities level / (n_levels - 1) in
        [0, 1] (float64), which :meth:`levels` maps back to the same levels."""
        self._check_levels(x, name)
        return x.double() / (self.n_levels - 1)

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            self._check_levels(x, "x")  # not clamped: a level past the last is named
            return x.long()
        return torch.round(x * (self.n_levels - 1)).long().clamp_(0, self.n_levels - 1)

    def _logits(self, params: torch.Tensor) -> torch.Tensor:
        return params.unflatten(-1, (self.n_levels, self.d)).transpose(
            -1, -2
        )  # (..., n, d, levels)

    def distribution(self, params: torch.Tensor) -> Independent:
        return Independent(Categorical(logits=self._logits(params), validate_args=False), 1)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logp = self._logits(params).log_softmax(-1)
        idx = self.levels(x).expand(logp.shape[:-1]).unsqueeze(-1)
        return logp.gather(-1, idx).squeeze(-1).sum(-1)  # (..., n)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        probs = self._logits(params).softmax(-1)
        grid = torch.linspace(0, 1, self.n_levels, device=params.device, dtype=params.dtype)
        return probs @ grid


def make_likelihood(name: str, d: int, **kwargs) -> nn.Module:
    """``"bernoulli"``, ``"gaussian"`` (kwargs: variance, fixed_variance, ...) or ``"categorical"``."""
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(d, **kwargs)
    if name == "categorical":
        return CategoricalLikelihood(d, **kwargs)
    raise ParameterError(f"unknown likelihood {name!r}; choose bernoulli, gaussian or categorical")
