"""Variational families q(z): modules whose ``forward()`` returns a torch Distribution.

A guide owns its variational parameters as ``nn.Parameter``s, so any torch optimiser can
fit it; it returns a fresh distribution on every call so that gradients reach them. Guides for
constrained latents (a probability, a rate) put a Gaussian on the unconstrained space and push
it through ``biject_to(support)`` (Kucukelbir et al. 2017, ADVI).
"""

from __future__ import annotations

import inspect
import numbers

import torch
from torch import nn
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    biject_to,
    constraints,
)
from torch.distributions.transforms import AffineTransform, Transform
from torch.nn.functional import softplus

from latentfit._validation import (
    as_float_tensor,
    check_allocation,
    check_module_memory,
    check_positive,
    check_positive_int,
    resolve_device,
    resolve_dtype,
)
from latentfit.errors import DataError, ParameterError
from latentfit.flows.layers import AffineCoupling, LayerTransform

__all__ = [
    "DistributionGuide",
    "FlowGuide",
    "FullRankGaussian",
    "Guide",
    "LocalMeanFieldGaussian",
    "MeanFieldGaussian",
]


def _inv_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def _settings(dtype, device) -> dict:
    """``dtype`` (torch's default when None) and ``device``, checked."""
    dtype = torch.get_default_dtype() if dtype is None else resolve_dtype(dtype)
    return {"dtype": dtype, "device": None if device is None else resolve_device(device)}


def _check_support(support):
    """``support`` is None or a torch constraint that ``biject_to`` can map onto."""
    if support is None:
        return None
    if not isinstance(support, constraints.Constraint):
        raise ParameterError(
            f"support must be a torch.distributions constraint (e.g. constraints.positive), "
            f"got {support!r:.60}"
        )
    try:
        biject_to(support)
    except NotImplementedError:
        raise ParameterError(
            f"support {support!r} has no bijection from the real line (biject_to); use a "
            "constraint such as constraints.positive, unit_interval or simplex"
        ) from None
    return support


def _check_memory(n_values: int, what: str, kw: dict) -> None:
    """Refuse guide parameters that cannot be held while they train (the values, their
    gradients and an optimiser's two moments), before any is allocated."""
    itemsize = torch.empty((), dtype=kw["dtype"]).element_size()
    check_allocation(4 * n_values * itemsize, what, device=kw["device"], hint="use a smaller dim")


def _raw_scale(scale, shape: tuple, kw: dict) -> torch.Tensor:
    """The unconstrained (inverse-softplus) value of a positive, finite ``scale``."""
    if isinstance(scale, torch.Tensor) and scale.numel() == 1 and not scale.is_complex():
        scale = scale.item()
    check_positive(scale, "scale")
    largest = torch.finfo(kw["dtype"]).max
    if scale > largest:  # torch.full raised "cannot be converted to type float without overflow"
        raise ParameterError(
            f"scale={scale!r} is beyond the range of {kw['dtype']} (largest {largest:.3g}); use "
            "a smaller scale or dtype=torch.float64"
        )
    raw = _inv_softplus(torch.full(shape, float(scale), **kw))
    if not bool(torch.isfinite(raw).all()):
        raise ParameterError(
            f"scale={scale!r} is too small for {kw['dtype']} (it rounds to 0); use a larger "
            "scale or float64"
        )
    return raw


def _loc(loc, dim: int, kw: dict) -> torch.Tensor:
    """The starting mean: zeros, or ``loc`` checked to be finite of shape (dim,)."""
    if loc is None:
        return torch.zeros(dim, **kw)
    try:
        t = as_float_tensor(
            loc, name="loc", dtype=kw["dtype"], device=kw["device"], ndim=None, missing_hint=False
        )
    except DataError as err:
        raise ParameterError(str(err)) from None
    if tuple(t.shape) != (dim,):
        raise ParameterError(
            f"loc must be a vector of length dim={dim}, got shape {tuple(t.shape)}; e.g. "
            f"loc=torch.full(({dim},), value)"
        )
    return t.clone()


def _raw_param(family: type[Distribution], name: str, value, kw: dict) -> tuple:
    """The unconstrained value of ``family``'s parameter ``name`` at ``value`` (a finite
    tensor inside the parameter's constraint, mapped through the inverse of ``biject_to``)
    and the shape of ``value``. ParameterError naming the parameter, the entry and the
    constraint otherwise."""
    cons = family.arg_constraints[name]
    try:
        bijection = biject_to(cons)
    except NotImplementedError:
        raise ParameterError(
            f"{family.__name__}'s parameter {name!r} (constraint {cons}) has no bijection from "
            "the real line (biject_to), so it cannot be learned unconstrained; use "
            "FullRankGaussian for a Gaussian with correlations, or write a Guide subclass"
        ) from None
    if isinstance(value, str):
        raise ParameterError(f"{name} must be a number or a tensor of numbers, got {value!r:.60}")
    try:  # read in float64, so that a value beyond float32 is said as such below
        t = as_float_tensor(value, name=name, device=kw["device"], ndim=None, missing_hint=False)
    except DataError as err:
        raise ParameterError(str(err)) from None
    largest = torch.finfo(kw["dtype"]).max
    if bool((t.abs() > largest).any()):
        raise ParameterError(
            f"{name} holds {float(t.abs().max()):.3g}, beyond the range of {kw['dtype']} "
            f"(largest {largest:.3g}); start it smaller or use dtype=torch.float64"
        )
    ok = cons.check(t)  # the event dimensions of the constraint reduced
    if not bool(ok.all()):
        index = tuple(int(i) for i in (~ok).nonzero()[0]) if ok.dim() else ()
        at = f"{name}[{', '.join(map(str, index))}]" if index else name
        bad = t[index]
        values = [f"{v:.6g}" for v in bad.flatten()[:8].tolist()]
        shown = (
            values[0] if bad.dim() == 0 else f"[{', '.join(values)}{', ...' * (bad.numel() > 8)}]"
        )
        raise ParameterError(
            f"{at} = {shown} is outside the support of {family.__name__}'s {name}, {cons}; "
            "start it inside (a scale or a concentration > 0, probabilities summing to 1)"
        )
    raw = bijection.inv(t.to(kw["dtype"]))
    if not bool(torch.isfinite(raw).all()):
        raise ParameterError(
            f"{name} lies on the edge of its support {cons} in {kw['dtype']} (its "
            "unconstrained value is infinite, so it could never move); start it further "
            "inside, or use dtype=torch.float64"
        )
    return raw.clone(), tuple(t.shape)


def _required(family: type[Distribution]) -> list[str]:
    """The parameters ``family``'s constructor cannot do without."""
    try:
        sig = inspect.signature(family.__init__)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in kinds and p.default is inspect.Parameter.empty and p.name != "self"
    ]


def _to_support(base: Distribution, support) -> Distribution:
    if support is None or support is constraints.real:
        return base
    return TransformedDistribution(base, [biject_to(support)])


class Guide(nn.Module):
    """Base class: ``guide()`` returns q(z) with ``event_shape == (dim,)``."""

    def forward(self) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError


class MeanFieldGaussian(Guide):
    """q(z) = Π_j N(z_j | m_j, s_j²) on the unconstrained space, then mapped to ``support``."""

    def __init__(
        self, dim: int, *, loc=None, scale: float = 0.1, support=None, dtype=None, device=None
    ):
        super().__init__()
        kw = _settings(dtype, device)
        dim = check_positive_int(dim, "dim")
        support = _check_support(support)
        _check_memory(2 * dim, f"a MeanFieldGaussian guide of dim={dim:,}", kw)
        loc = _loc(loc, dim, kw)
        self.loc = nn.Parameter(loc)  # (d,)
        self.raw_scale = nn.Parameter(_raw_scale(scale, (dim,), kw))
        self.support = support

    @property
    def scale(self) -> torch.Tensor:
        return softplus(self.raw_scale)

    def forward(self) -> Distribution:
        return _to_support(Independent(Normal(self.loc, self.scale), 1), self.support)


class FullRankGaussian(Guide):
    """q(z) = N(z | m, L Lᵀ) with L lower triangular, positive diagonal (softplus)."""

    def __init__(
        self, dim: int, *, loc=None, scale: float = 0.1, support=None, dtype=None, device=None
    ):
        super().__init__()
        kw = _settings(dtype, device)
        dim = check_positive_int(dim, "dim")
        support = _check_support(support)
        # the (d, d) factor, and the copies of it that scale_tril builds
        _check_memory(dim * dim + 2 * dim, f"a FullRankGaussian guide of dim={dim:,}", kw)
        loc = _loc(loc, dim, kw)
        self.loc = nn.Parameter(loc)  # (d,)
        self.raw_diag = nn.Parameter(_raw_scale(scale, (dim,), kw))
        self.off_diag = nn.Parameter(torch.zeros(dim, dim, **kw))  # (d, d)
        self.support = support

    @property
    def scale_tril(self) -> torch.Tensor:
        return torch.tril(self.off_diag, -1) + torch.diag_embed(softplus(self.raw_diag))

    def forward(self) -> Distribution:
        return _to_support(MultivariateNormal(self.loc, scale_tril=self.scale_tril), self.support)


class DistributionGuide(Guide):
    """Any torch.distributions family with learnable parameters, e.g.
    ``DistributionGuide(Beta, concentration1=1.0, concentration0=1.0)``.

    Each parameter is stored unconstrained and mapped through ``biject_to`` of the family's
    ``arg_constraints``, so it stays valid during optimisation. Families with ``rsample``
    (Normal, Beta, Gamma, Dirichlet...) work with the reparameterisation estimator; the others
    with :class:`~latentfit.vi.estimators.ScoreFunction`. Every argument is checked when the
    guide is made (the family, each value finite and inside its constraint, the shapes,
    ``event_dims``), so a bad one is a ParameterError here, not a torch error in a fit.
    """

    def __init__(
        self, family: type[Distribution], *, event_dims: int = 0, dtype=None, device=None, **init
    ):
        super().__init__()
        if not (isinstance(family, type) and issubclass(family, Distribution)):
            raise ParameterError(
                f"family must be a torch.distributions class such as Normal or Beta, got "
                f"{family!r:.60}"
                + ("; pass the class, not an instance" if isinstance(family, Distribution) else "")
            )
        event_dims = check_positive_int(event_dims, "event_dims", minimum=0)
        kw = _settings(dtype, device)
        self.family, self.event_dims = family, event_dims
        init = {k: v for k, v in init.items() if v is not None}  # None: not given, as in torch
        unknown = [name for name in init if name not in family.arg_constraints]
        if unknown:
            raise ParameterError(
                f"{family.__name__} has no parameter {unknown[0]!r}; "
                f"its parameters are {sorted(family.arg_constraints)}"
            )
        missing = [p for p in _required(family) if p not in init]
        if missing:
            raise ParameterError(
                f"{family.__name__} needs a starting value for {' and '.join(missing)}, e.g. "
                f"DistributionGuide({family.__name__}, {', '.join(f'{p}=...' for p in missing)})"
            )
        self._names, shapes = list(init), {}
        for name, value in init.items():
            raw, shapes[name] = _raw_param(family, name, value, kw)
            setattr(self, f"raw_{name}", nn.Parameter(raw))
        # made once here, so that shapes that do not broadcast (or probs and logits both
        # given) are said now, not at the first step of a fit
        try:
            with torch.no_grad():
                base = family(**self.params())
        except (ValueError, RuntimeError, TypeError) as err:
            given = ", ".join(f"{n} of shape {s}" for n, s in shapes.items())
            raise ParameterError(
                f"{family.__name__} cannot be made from {given or 'no parameters'}: "
                f"{str(err).splitlines()[0]}"
            ) from None
        if event_dims > len(base.batch_shape):
            raise ParameterError(
                f"event_dims={event_dims}, but {family.__name__} with these parameters has batch "
                f"shape {tuple(base.batch_shape)}: at most {len(base.batch_shape)} of its "
                "dimensions can join the event"
            )

    def params(self) -> dict[str, torch.Tensor]:
        return {
            n: biject_to(self.family.arg_constraints[n])(getattr(self, f"raw_{n}"))
            for n in self._names
        }

    def forward(self) -> Distribution:
        d = self.family(**self.params())
        return Independent(d, self.event_dims) if self.event_dims else d


class FlowGuide(Guide):
    """A normalising-flow guide: N(0, I) pushed through ``n_layers`` Real NVP affine couplings
    (:class:`latentfit.flows.layers.AffineCoupling`) with alternating masks, then an elementwise
    affine map (Rezende & Mohamed 2015; Dinh et al. 2017). Needs ``dim >= 2`` (a coupling splits the coordinates)."""

    def __init__(
        self,
        dim: int,
        *,
        n_layers: int = 4,
        hidden: int = 32,
        loc=None,
        scale: float = 1.0,
        support=None,
        dtype=None,
        device=None,
    ):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise ParameterError(f"dim must be an integer >= 2, got {dim!r}")
        n_layers = check_positive_int(n_layers, "n_layers", minimum=0)
        hidden = check_positive_int(hidden, "hidden")
        if dim < 2:
            raise ParameterError(
                "FlowGuide needs dim >= 2 (a coupling layer splits the coordinates); use "
                "MeanFieldGaussian or FullRankGaussian for a one-dimensional latent"
            )
        dim = int(dim)
        kw = _settings(dtype, device)
        support = _check_support(support)

        # Real NVP couplings from latentfit's flow-layer library, alternating masks; each
        # starts as the identity map. Sized on the meta device before any is built.
        def couplings(n: int, _=None) -> nn.ModuleList:
            return nn.ModuleList(
                AffineCoupling(dim, hidden, parity=i % 2, n_hidden=1, activation="tanh")
                for i in range(n)
            )

        check_module_memory(
            couplings,
            f"a FlowGuide of dim={dim:,}, hidden={hidden:,} and {n_layers:,} layers",
            layers=n_layers,
            device=kw["device"],
            dtype=kw["dtype"],
            hint="use fewer or narrower layers (n_layers, hidden)",
        )
        self.layers = couplings(n_layers).to(**kw)
        self.loc = nn.Parameter(_loc(loc, dim, kw))  # (d,)
        self.raw_scale = nn.Parameter(_raw_scale(scale, (dim,), kw))
        self.support = support

    def forward(self) -> Distribution:
        zeros = torch.zeros_like(self.loc)
        base = Independent(Normal(zeros, torch.ones_like(self.loc)), 1)
        layers: list[Transform] = [LayerTransform(layer) for layer in self.layers]
        layers.append(AffineTransform(self.loc, softplus(self.raw_scale), event_dim=1))
        if self.support is not None and self.support is not constraints.real:
            layers.append(biject_to(constraints.independent(self.support, 1)))
        return TransformedDistribution(base, layers)


class LocalMeanFieldGaussian(nn.Module):
    """One Gaussian q(z_i) per data point (local latents): ``guide(index)`` returns the
    distribution of the rows ``index`` with ``batch_shape (b,)`` and ``event_shape (dim,)``."""

    def __init__(self, n: int, dim: int, *, scale: float = 0.1, dtype=None, device=None):
        super().__init__()
        kw = _settings(dtype, device)
        n, dim = check_positive_int(n, "n"), check_positive_int(dim, "dim")
        _check_memory(2 * n * dim, f"a LocalMeanFieldGaussian of n={n:,} x dim={dim:,}", kw)
        self.loc = nn.Parameter(torch.zeros(n, dim, **kw))  # (n, d)
        self.raw_scale = nn.Parameter(_raw_scale(scale, (n, dim), kw))

    def forward(self, index=None) -> Distribution:
        # a bad index is caught from torch's own indexing: the good path pays nothing
        try:
            loc, raw = (
                (self.loc, self.raw_scale)
                if index is None
                else (self.loc[index], self.raw_scale[index])
            )
        except (IndexError, TypeError) as err:
            n = self.loc.shape[0]
            raise ParameterError(
                f"index does not pick rows of this guide of n={n} data points "
                f"({str(err).splitlines()[0]}); pass row numbers 0..{n - 1}, a slice or a "
                "boolean mask"
            ) from None
        return Independent(Normal(loc, softplus(raw)), 1)
