"""A log-density of named, constrained parameters as a batched function of unconstrained vectors.

A sampler moves a chain dimension of unconstrained vectors ``u`` of shape (c, p). ``Target``
maps each parameter's slice of ``u`` to its natural value with
``torch.distributions.biject_to(constraint)`` and adds ``log |det J|`` of that map, so that the
density sampled in ``u`` is the pushforward of the posterior (Stan reference manual, "Change of
variables"). The user's function sees natural parameters: either one chain at a time (the
default, batched over chains with ``torch.func.vmap``) or, with ``vectorized=True``, every chain
at once with a leading chain dimension on each parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import biject_to, constraints, transforms

from latentfit.errors import ParameterError

__all__ = ["Target", "ordered_vector"]


class _OrderedVector(constraints.Constraint):
    """Vectors with strictly increasing entries (Stan's ``ordered[k]``)."""

    event_dim = 1

    def check(self, value):
        return (value[..., 1:] > value[..., :-1]).all(-1)

    def __repr__(self):
        return "ordered_vector"


ordered_vector = _OrderedVector()


class _OrderedTransform(transforms.Transform):
    """``y_0 = x_0``, ``y_i = y_{i-1} + exp(x_i)``: Stan's ordered-vector transform."""

    domain = constraints.independent(constraints.real, 1)
    codomain = ordered_vector
    bijective = True

    def __eq__(self, other):
        return isinstance(other, _OrderedTransform)

    def _call(self, x):
        return torch.cumsum(torch.cat([x[..., :1], x[..., 1:].exp()], dim=-1), dim=-1)

    def _inverse(self, y):
        return torch.cat([y[..., :1], (y[..., 1:] - y[..., :-1]).log()], dim=-1)

    def log_abs_det_jacobian(self, x, y):
        return x[..., 1:].sum(-1)


@biject_to.register(_OrderedVector)
def _ordered_bijection(constraint):
    return _OrderedTransform()


_UNSUPPORTED = (type(constraints.positive_definite), type(constraints.lower_cholesky))


@dataclass(frozen=True)
class _Slot:
    name: str
    shape: tuple[int, ...]  # natural shape of one chain's value
    constraint: object
    transform: transforms.Transform
    start: int
    size: int  # free (unconstrained) dimensions
    free_shape: tuple[int, ...]  # shape of the unconstrained value
    kind: str  # "real", "positive", "unit" (fast paths) or "general" (biject_to)


def _kind(con) -> str:
    # the common constraints skip biject_to's composed transforms (a measurable cost per
    # leapfrog step); the maps are the same: identity, exp, sigmoid
    if isinstance(con, type(constraints.real)):
        return "real"
    if type(con) is constraints.greater_than and float(con.lower_bound) == 0.0:
        return "positive"
    if isinstance(con, type(constraints.unit_interval)):
        return "unit"
    return "general"


class Target:
    """``log_density(**params)`` (a scalar per chain) on the unconstrained space, batched.

    ``shapes`` gives each parameter's natural shape, ``constraints`` its
    ``torch.distributions.constraints`` object (``real`` when missing). Covariance and
    Cholesky-factor constraints are refused: ``biject_to`` maps them from a full square matrix
    whose redundant entries would be flat directions of the density (an improper target); give
    such a parameter as free entries and build the matrix inside ``log_density``.
    """

    def __init__(
        self,
        log_density: Callable[..., torch.Tensor],
        shapes: dict[str, tuple[int, ...]],
        constraints_: dict | None = None,
        *,
        vectorized: bool = False,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ):
        if not callable(log_density):
            raise ParameterError(
                f"log_density must be a function of the named parameters, got {log_density!r}"
            )
        constraints_ = dict(constraints_ or {})
        extra = set(constraints_) - set(shapes)
        if extra:
            raise ParameterError(
                f"constraints names {sorted(extra)}, which are not parameters; "
                f"parameters: {list(shapes)}"
            )
        slots, start = [], 0
        for name, shape in shapes.items():
            con = constraints_.get(name, constraints.real)
            if isinstance(con, _UNSUPPORTED):
                raise ParameterError(
                    f"parameter {name!r}: the {con!r} constraint is not supported by the samplers; "
                    "sample the free entries (e.g. a real vector for the lower triangle with a "
                    "positive diagonal) and build the matrix inside log_density"
                )
            try:
                t = biject_to(con)
            except NotImplementedError:
                raise ParameterError(
                    f"parameter {name!r}: no bijection to the constraint {con!r} is known; "
                    "use real, positive, greater_than, interval, unit_interval, simplex or "
                    "latentfit.mcmc.ordered_vector"
                ) from None
            shape = tuple(int(s) for s in shape)
            free_shape = tuple(t.inverse_shape(torch.Size(shape)))
            size = int(torch.Size(free_shape).numel())
            slots.append(_Slot(name, shape, con, t, start, size, free_shape, _kind(con)))
            start += size
        self.slots: tuple[_Slot, ...] = tuple(slots)
        self.n_free = start
        self.log_density = log_density
        self.vectorized = vectorized
        self.dtype = dtype
        self.device = torch.device(device)
        self._batched = log_density if vectorized else self._vmapped(log_density)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    def _vmapped(self, fn):
        names = self.names

        def one(*values):
            return fn(**dict(zip(names, values, strict=True)))

        mapped = torch.func.vmap(one)

        def batched(**params):
            return mapped(*(params[n] for n in names))

        return batched

    # -- unconstrained <-> natural -------------------------------------------------------------
    def constrain(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Natural parameters ``{name: (c, *shape)}`` for ``u`` (c, p), and ``log|det J|`` (c,)."""
        params, log_jac = {}, u.new_zeros(u.shape[:-1])
        for s in self.slots:
            x = u[..., s.start : s.start + s.size]
            if s.kind == "real":
                params[s.name] = x.reshape(*u.shape[:-1], *s.shape)
                continue
            if s.kind == "positive":
                y = x.exp()
                ladj = x.sum(-1)
            elif s.kind == "unit":
                y = torch.sigmoid(x)
                ladj = (torch.nn.functional.logsigmoid(x) + torch.nn.functional.logsigmoid(-x)).sum(
                    -1
                )
            else:
                x = x.reshape(*u.shape[:-1], *s.free_shape)
                y = s.transform(x)
                ladj = s.transform.log_abs_det_jacobian(x, y).reshape(*u.shape[:-1], -1).sum(-1)
            log_jac = log_jac + ladj
            params[s.name] = y.reshape(*u.shape[:-1], *s.shape)
        return params, log_jac

    def unconstrain(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """``u`` (c, p) for natural ``params`` each of shape (c, *shape)."""
        pieces = []
        for s in self.slots:
            v = params[s.name]
            x = s.transform.inv(v)
            pieces.append(x.reshape(x.shape[0], -1))  # (c, size)
        return torch.cat(pieces, dim=-1)

    # -- the density ---------------------------------------------------------------------------
    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """Log-density in unconstrained space (c,): ``log p(T(u)) + log|det J_T(u)|``."""
        params, log_jac = self.constrain(u)
        lp = self._batched(**params)
        if lp.shape != u.shape[:-1]:
            raise ParameterError(
                f"log_density must return one value per chain, shape {tuple(u.shape[:-1])}; got "
                f"{tuple(lp.shape)}"
                + (
                    " (with vectorized=True each parameter has a leading chain dimension)"
                    if self.vectorized
                    else " (sum the log-density over observations: a scalar per call)"
                )
            )
        return lp + log_jac

    def log_prob_and_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-density (c,) and its gradient (c, p); chains are independent, so the gradient
        of the sum over chains is every chain's own gradient in one backward pass."""
        try:
            return self._value_and_grad(u)
        except ParameterError:
            raise
        except (ValueError, RuntimeError):
            # A log-density that raises at some point (a distribution's argument check on an
            # overflowed value, say) rejects that point, as Stan rejects a proposal whose model
            # block throws: such chains get -inf; the others are evaluated one by one.
            lps, grads = [], []
            for i in range(u.shape[0]):
                try:
                    lp_i, g_i = self._value_and_grad(u[i : i + 1])
                except (ValueError, RuntimeError):
                    lp_i = u.new_full((1,), -math.inf)
                    g_i = torch.zeros_like(u[i : i + 1])
                lps.append(lp_i)
                grads.append(g_i)
            return torch.cat(lps), torch.cat(grads)

    def _value_and_grad(self, u):
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            lp = self.log_prob(u)
            (grad,) = torch.autograd.grad(lp.sum(), u)
        return lp.detach(), grad

    def flat_names(self) -> list[str]:
        """ArviZ-style names of every natural coordinate: ``mu``, ``theta[0]``, ``w[1, 2]``."""
        out = []
        for s in self.slots:
            if not s.shape:
                out.append(s.name)
                continue
            for idx in (
                torch.cartesian_prod(*[torch.arange(n) for n in s.shape])
                .reshape(-1, len(s.shape))
                .tolist()
            ):
                out.append(f"{s.name}[{', '.join(str(i) for i in idx)}]")
        return out
