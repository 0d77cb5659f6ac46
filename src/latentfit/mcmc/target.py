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

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch.distributions import biject_to, constraints, transforms

from latentfit._gradient_cut import cut_message, unfollowed
from latentfit._validation import as_float_tensor, check_bool, first_nonfinite
from latentfit.errors import ParameterError

__all__ = ["Target", "init_values", "ordered_vector"]


def init_values(init, dtype, device) -> dict[str, torch.Tensor]:
    """Each parameter's starting value in ``init`` as a finite tensor of ``dtype`` on
    ``device`` (its shape is the parameter's): a value that is not numbers, or holds NaN or
    inf, is refused by parameter name and entry."""
    if not isinstance(init, dict) or not init:
        raise ParameterError(
            "init must name every parameter with a starting value (its shape is taken from it), "
            "e.g. init={'mu': 0.0, 'tau': 1.0, 'theta': torch.zeros(8)}"
        )
    values = {}
    for name, value in init.items():
        label = f"init[{name!r}]"
        t = as_float_tensor(
            value,
            name=label,
            dtype=dtype,
            device=device,
            ndim=None,
            allow_nan=True,
            min_samples=0,
            missing_hint=False,  # a starting value: no rows, nothing missing
        )
        bad = first_nonfinite(t)
        if bad is not None:
            where = f" at index {bad}" if bad else ""
            raise ParameterError(
                f"{label} is NaN{where}: every starting value must be a finite number inside "
                "the parameter's support"
            )
        values[name] = t
    return values


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


class _CovarianceTransform(transforms.Transform):
    """A vector of ``d(d + 1) / 2`` free values to a (d, d) covariance matrix ``L L^T``: the
    values fill the lower triangle of ``L`` row by row, its diagonal through ``exp``. Stan's
    ``cov_matrix`` transform (Stan reference manual, "Covariance matrices"), with
    ``log |det J| = d log 2 + sum_i (d - i + 1) x_ii`` (i from 0) against the matrix's lower
    triangle. ``biject_to(positive_definite)`` is not used: torch has none, and its
    ``transform_to`` starts from a full square matrix whose upper triangle would be flat
    directions of the density (an improper target)."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.positive_definite
    bijective = True

    def __init__(self, d: int, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.d = d
        rows, cols = torch.tril_indices(d, d)
        self._rows, self._cols = rows, cols
        # where each entry of the (d, d) factor is found in the free values; m: a zero
        m = d * (d + 1) // 2
        where = torch.full((d * d,), m, dtype=torch.long)
        where[rows * d + cols] = torch.arange(m)
        self._where = where
        self._diag = rows == cols  # (m,): the free values on the diagonal of L
        # (m,): d - i + 1 at the diagonal entry of row i, 0 elsewhere
        self._weights = torch.where(self._diag, d - rows + 1.0, torch.zeros(m))

    def __eq__(self, other):
        return isinstance(other, _CovarianceTransform) and other.d == self.d

    def with_cache(self, cache_size=1):
        return self if self._cache_size == cache_size else _CovarianceTransform(self.d, cache_size)

    def forward_shape(self, shape):
        return torch.Size((*shape[:-1], self.d, self.d))

    def inverse_shape(self, shape):
        return torch.Size((*shape[:-2], self.d * (self.d + 1) // 2))

    def _factor(self, x):  # (..., m) -> (..., d, d), built without writing into a tensor
        diag = self._diag.to(x.device)
        x = torch.where(diag, torch.where(diag, x, 0.0).exp(), x)  # no exp of off-diagonals
        padded = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], -1)
        return padded[..., self._where.to(x.device)].reshape(*x.shape[:-1], self.d, self.d)

    def _call(self, x):
        L = self._factor(x)
        return L @ L.transpose(-1, -2)

    def _inverse(self, y):
        L, info = torch.linalg.cholesky_ex(y)
        rows, cols = self._rows.to(y.device), self._cols.to(y.device)
        x = L[..., rows, cols]
        x = torch.where(self._diag.to(y.device), x.log(), x)
        ok = (info == 0) & constraints.positive_definite.check(y)  # (...,)
        return torch.where(ok[..., None], x, math.nan)  # outside the support: NaN

    def log_abs_det_jacobian(self, x, y):
        w = self._weights.to(dtype=x.dtype, device=x.device)
        return self.d * math.log(2.0) + (x * w).sum(-1)


def _transform(con, shape: tuple[int, ...]) -> transforms.Transform:
    """The map from unconstrained values to the support of ``con`` (``biject_to``'s, except
    for covariance matrices)."""
    if isinstance(con, type(constraints.positive_definite)):
        return _CovarianceTransform(shape[-1])
    return biject_to(con)


_UNSUPPORTED = (type(constraints.lower_cholesky),)


@dataclass(frozen=True)
class _Slot:
    name: str
    shape: tuple[int, ...]  # natural shape of one chain's value
    constraint: object
    transform: transforms.Transform
    start: int
    size: int  # free (unconstrained) dimensions
    free_shape: tuple[int, ...]  # shape of the unconstrained value
    kind: str  # "real", "positive", "unit", "ordered" (fast paths) or "general" (biject_to)


def _is(bound, value: float) -> bool:
    """Whether a constraint's bound is the single number ``value`` (a bound may be a tensor
    of one bound per entry)."""
    b = torch.as_tensor(bound)
    return b.numel() == 1 and float(b) == value


def _kind(con) -> str:
    # the common constraints skip biject_to's composed transforms (a measurable cost per
    # leapfrog step); the maps are the same: identity, exp, sigmoid. Only (0, ∞) and (0, 1)
    # themselves: greater_than(a) and interval(a, b) are instances of the same classes.
    if isinstance(con, type(constraints.real)):
        return "real"
    if type(con) is constraints.greater_than and _is(con.lower_bound, 0.0):
        return "positive"
    if (
        type(con) is constraints.interval
        and _is(con.lower_bound, 0.0)
        and _is(con.upper_bound, 1.0)
    ):
        return "unit"
    if isinstance(con, _OrderedVector):
        return "ordered"
    return "general"


def _check_bounds(name: str, con) -> None:
    """A ParameterError for bounds no value can lie within: NaN, an infinite bound of an
    interval (use greater_than / less_than), or a lower bound not below the upper one."""
    bounds = {
        k: torch.as_tensor(getattr(con, k), dtype=torch.float64)
        for k in ("lower_bound", "upper_bound")
        if hasattr(con, k)
    }
    for k, b in bounds.items():
        if not bool(torch.isfinite(b).all()):
            raise ParameterError(
                f"parameter {name!r}: the {con!r} constraint's {k} holds "
                f"{b[~torch.isfinite(b)].flatten()[0].item()}; bounds must be finite "
                "(for a half-line use greater_than or less_than)"
            )
    if len(bounds) == 2:
        lo, hi = bounds["lower_bound"], bounds["upper_bound"]
        bad = ~(lo < hi)
        if bool(bad.any()):
            raise ParameterError(
                f"parameter {name!r}: the {con!r} constraint's lower bound "
                f"{torch.broadcast_to(lo, bad.shape)[bad].flatten()[0].item()} is not below "
                f"its upper bound {torch.broadcast_to(hi, bad.shape)[bad].flatten()[0].item()}"
            )


def _check_event_dim(name: str, con, shape: tuple[int, ...]) -> None:
    """A ParameterError for a constraint on whole vectors (``simplex``, ``ordered_vector``) or
    matrices given a parameter with fewer dimensions, or with no entries along them: its
    transform would read the chain dimension as the vector's entries."""
    need = int(getattr(con, "event_dim", 0))
    if len(shape) >= need and 0 not in shape[len(shape) - need :]:
        return
    if isinstance(con, type(constraints.simplex)):
        example = "torch.full((k,), 1 / k) for k >= 2 categories"
    elif isinstance(con, _OrderedVector):
        example = "torch.linspace(-1.0, 1.0, k) for k >= 2 ordered values"
    else:
        example = f"an array of shape {(2,) * need}"
    what = "a vector" if need == 1 else f"an array of {need} dimensions"
    raise ParameterError(
        f"parameter {name!r}: the {con!r} constraint needs {what} with at least one entry "
        f"(its event dimension is {need}), but init[{name!r}] has shape {shape}"
        + (" (a scalar)" if not shape else "")
        + f"; start it as {what}, e.g. {example}"
    )


def _takes(fn: Callable) -> str:
    """``fn``'s arguments for a message ("" when they cannot be read)."""
    try:
        return f"; log_density's arguments are ({', '.join(inspect.signature(fn).parameters)})"
    except (TypeError, ValueError):
        return ""


def _check_arguments(fn: Callable, what: str, names: list[str]) -> None:
    """A ParameterError when ``fn``, called with the parameters by name, could not take them:
    a parameter it does not accept, or one it requires that is not sampled."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C function: nothing to read
        return
    params = sig.parameters.values()
    if any(q.kind is q.VAR_KEYWORD for q in params):
        return
    named = {q.name for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)}
    required = {
        q.name
        for q in params
        if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY) and q.default is q.empty
    }
    unknown = [n for n in names if n not in named]
    missing = sorted(required - set(names))
    if unknown or missing:
        problem = (
            f"it takes no argument named {', '.join(map(repr, unknown))}"
            if unknown
            else f"it requires {', '.join(map(repr, missing))}, which init does not name"
        )
        raise ParameterError(
            f"{what} is called with the sampled parameters by name ({', '.join(names)}), but "
            f"{problem}; its arguments are ({', '.join(sig.parameters)}): name init's entries "
            "as the function's arguments"
        )


def _tensor_value(value):
    """``value`` when it is a tensor; a ParameterError naming what the density returned."""
    if not isinstance(value, torch.Tensor):
        raise ParameterError(
            f"log_density must return a torch tensor computed from its arguments, got "
            f"{type(value).__name__}: write it with torch operations (not .item(), float() or "
            "numpy, which cut the gradient off)"
        )
    return value


class Target:
    """``log_density(**params)`` (a scalar per chain) on the unconstrained space, batched.

    ``shapes`` gives each parameter's natural shape, ``constraints`` its
    ``torch.distributions.constraints`` object (``real`` when missing). A
    ``positive_definite`` (d, d) matrix is sampled as its d(d + 1) / 2 free Cholesky entries
    (Stan's covariance transform). Cholesky-factor constraints are refused: ``biject_to`` maps
    them from a full square matrix whose redundant entries would be flat directions of the
    density (an improper target); give such a parameter as free entries and build the matrix
    inside ``log_density``.

    ``value_and_grad``, optional, computes the log-density and its gradient by hand:
    ``value_and_grad(**params) -> (log_density, {name: d log_density / d param})`` in the same
    natural parameters and batching as ``log_density``. The sampler then skips autograd, whose
    graph building and backward pass cost several times the arithmetic of a small model; the
    transforms' chain rule and Jacobian terms are added here. ``check_gradient`` compares it
    with autograd.
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
        value_and_grad: Callable[..., tuple[torch.Tensor, dict]] | None = None,
    ):
        if not callable(log_density):
            raise ParameterError(
                f"log_density must be a function of the named parameters, got {log_density!r}"
            )
        vectorized = check_bool(vectorized, "vectorized")
        if constraints_ is not None and not isinstance(constraints_, Mapping):
            raise ParameterError(
                "constraints must be a dict from parameter name to a "
                "torch.distributions.constraints object, e.g. {'sigma': constraints.positive}; "
                f"got a {type(constraints_).__name__}: {constraints_!r:.80}; parameters: "
                f"{list(shapes)}"
            )
        constraints_ = dict(constraints_ or {})
        for name in shapes:
            if not isinstance(name, str):
                raise ParameterError(
                    f"init names the parameters, passed to log_density by name, so its keys must "
                    f"be strings; got the key {name!r} ({type(name).__name__})"
                    + _takes(log_density)
                )
        reserved = sorted({"chain", "draw"} & set(shapes))
        if reserved:
            raise ParameterError(
                f"a parameter may not be named {reserved[0]!r}: 'chain' and 'draw' are the "
                "draws' own dimensions (ArviZ's names, in to_arviz and summary); rename it"
            )
        extra = set(constraints_) - set(shapes)
        if extra:
            raise ParameterError(
                f"constraints names {sorted(extra)}, which are not parameters; "
                f"parameters: {list(shapes)}"
            )
        slots, start = [], 0
        for name, shape in shapes.items():
            con = constraints_.get(name, constraints.real)
            if not isinstance(con, constraints.Constraint):
                raise ParameterError(
                    f"constraints[{name!r}] must be a torch.distributions.constraints object "
                    f"(e.g. constraints.positive), got {type(con).__name__} {con!r:.60}"
                )
            if isinstance(con, _UNSUPPORTED):
                raise ParameterError(
                    f"parameter {name!r}: the {con!r} constraint is not supported by the samplers; "
                    "sample the free entries (e.g. a real vector for the lower triangle with a "
                    "positive diagonal) and build the matrix inside log_density"
                )
            _check_bounds(name, con)
            shape = tuple(int(s) for s in shape)
            _check_event_dim(name, con, shape)
            if isinstance(con, type(constraints.positive_definite)) and shape[-1] != shape[-2]:
                raise ParameterError(
                    f"parameter {name!r}: a positive-definite matrix is square, but "
                    f"init[{name!r}] has shape {shape}; start it as a (d, d) matrix, e.g. "
                    "torch.eye(d)"
                )
            try:
                t = _transform(con, shape)
            except NotImplementedError:
                raise ParameterError(
                    f"parameter {name!r}: no bijection to the constraint {con!r} is known; "
                    "use real, positive, greater_than, interval, unit_interval, simplex, "
                    "positive_definite or latentfit.mcmc.ordered_vector"
                ) from None
            free_shape = tuple(t.inverse_shape(torch.Size(shape)))
            size = int(torch.Size(free_shape).numel())
            kind = _kind(con)
            if kind == "ordered" and len(shape) != 1:
                kind = "general"  # the fast path cumsums one vector per chain
            slots.append(_Slot(name, shape, con, t, start, size, free_shape, kind))
            start += size
        self.slots: tuple[_Slot, ...] = tuple(slots)
        self.n_free = start
        if start == 0:  # a sampler would move nothing and report "no problems found"
            given = ", ".join(f"{s.name} {s.shape}" for s in slots)
            raise ParameterError(
                f"there is nothing to sample: no parameter has a free value ({given}; a "
                "parameter of no entries, or a simplex of one category, is fixed); give init "
                "at least one value the log-density varies with"
            )
        _check_arguments(log_density, "log_density", self.names)
        if value_and_grad is not None and callable(value_and_grad):
            _check_arguments(value_and_grad, "value_and_grad", self.names)
        self.log_density = log_density
        self.vectorized = vectorized
        self.dtype = dtype
        self.device = torch.device(device)
        self._batched = log_density if vectorized else self._vmapped(log_density)
        if value_and_grad is not None and not callable(value_and_grad):
            raise ParameterError(
                "value_and_grad must be a function of the named parameters returning "
                f"(log_density, {{name: gradient}}), got {value_and_grad!r}"
            )
        self.value_and_grad = value_and_grad
        self._batched_vg = None
        self.last_error: Exception | None = None  # the density's last error at a rejected point
        if value_and_grad is not None:
            self._batched_vg = (
                value_and_grad if vectorized else self._vmapped(value_and_grad, False)
            )
        self._ones: dict = {}

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    def _vmapped(self, fn, returns_tensor: bool = True):
        names = self.names

        def one(*values):
            out = fn(**dict(zip(names, values, strict=True)))
            return _tensor_value(out) if returns_tensor else out

        mapped = torch.func.vmap(one)

        def batched(**params):
            return mapped(*(params[n] for n in names))

        return batched

    def outside(self, values: dict) -> str:
        """The parameters whose natural ``values`` lie outside their constraint's support, for
        a message ("" when every one is inside)."""
        names = [
            f"{s.name}={values[s.name].tolist()} is not {s.constraint}"
            for s in self.slots
            if not bool(torch.all(s.constraint.check(values[s.name])))
        ]
        return "; ".join(names)

    # -- unconstrained <-> natural -------------------------------------------------------------
    def constrain(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Natural parameters ``{name: (c, *shape)}`` for ``u`` (c, p), and ``log|det J|`` (c,)."""
        params, log_jac, _ = self._constrain(u)
        return params, log_jac

    def _constrain(self, u: torch.Tensor):
        """``constrain`` and, per slot, the free block ``x`` (c, size) and its natural value
        ``y`` flattened the same way (what the chain rule of ``value_and_grad`` needs)."""
        batch = u.shape[:-1]
        params, log_jac, blocks = {}, None, []
        for s in self.slots:
            if not s.shape:  # a scalar: one column, selected without a reshape
                x = u[..., s.start]
            else:
                x = u[..., s.start : s.start + s.size]
            if s.kind == "real":
                y, ladj = x, None
            elif s.kind == "positive":
                y, ladj = x.exp(), x if not s.shape else x.sum(-1)
            elif s.kind == "unit":
                y = torch.sigmoid(x)
                ladj = torch.nn.functional.logsigmoid(x) + torch.nn.functional.logsigmoid(-x)
                ladj = ladj if not s.shape else ladj.sum(-1)
            elif s.kind == "ordered":
                y = torch.cat([x[..., :1], x[..., 1:].exp()], -1).cumsum(-1)
                ladj = x[..., 1:].sum(-1)
            else:
                xs = x.reshape(*batch, *s.free_shape)
                y = s.transform(xs)
                ladj = s.transform.log_abs_det_jacobian(xs, y).reshape(*batch, -1).sum(-1)
            if ladj is not None:
                log_jac = ladj if log_jac is None else log_jac + ladj
            value = y if y.shape[len(batch) :] == s.shape else y.reshape(*batch, *s.shape)
            params[s.name] = value
            blocks.append((x, y))
        if log_jac is None:
            log_jac = u.new_zeros(batch)
        return params, log_jac, blocks

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
        return self._checked(self._batched(**params), u) + log_jac

    def _checked(self, lp, u):
        """``lp`` when it is one real value per chain, in the sampler's dtype; else a
        ParameterError saying what the density returned."""
        lp = _tensor_value(lp)
        if not lp.dtype.is_floating_point:
            raise ParameterError(
                f"log_density must return a real floating-point tensor, got {lp.dtype}"
                + (
                    ": a log-density is real; return its real part (.real) if the imaginary "
                    "part is zero, or compute it without complex numbers"
                    if lp.dtype.is_complex
                    else ": compute it from its arguments with torch functions (an integer or "
                    "boolean value has no gradient)"
                )
            )
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
        # a density computing in another dtype (a float64 constant under dtype=float32) would
        # otherwise carry its dtype into the energies and, through them, into the draws
        return lp if lp.dtype == u.dtype else lp.to(u.dtype)

    def log_prob_and_grad(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-density (c,) and its gradient (c, p); chains are independent, so the gradient
        of the sum over chains is every chain's own gradient in one backward pass."""
        vg = self._value_and_grad if self._batched_vg is None else self._given_value_and_grad
        try:
            return vg(u)
        except ParameterError:
            raise
        except (ValueError, RuntimeError):
            # A log-density that raises at some point (a distribution's argument check on an
            # overflowed value, say) rejects that point, as Stan rejects a proposal whose model
            # block throws: such chains get -inf; the others are evaluated one by one.
            lps, grads = [], []
            for i in range(u.shape[0]):
                try:
                    lp_i, g_i = vg(u[i : i + 1])
                except (ValueError, RuntimeError) as exc:
                    self.last_error = exc  # named if no start is found (sampler._initial_state)
                    lp_i = u.new_full((1,), -math.inf)
                    g_i = torch.zeros_like(u[i : i + 1])
                lps.append(lp_i)
                grads.append(g_i)
            return torch.cat(lps), torch.cat(grads)

    def _value_and_grad(self, u):
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            params, log_jac = self.constrain(u)
            lp = self._checked(self._batched(**params), u)
            # the density's own value, before log|det J| (which depends on u whatever the
            # density does) is added: a density whose gradient was cut is refused either way
            if not lp.requires_grad:
                if not bool(torch.isfinite(lp).any()):  # a rejection of every chain
                    return lp.detach() + log_jac.detach(), torch.zeros_like(u)
                raise ParameterError(
                    "log_density's value does not depend on its parameters through torch "
                    "operations, so it has no gradient: compute it from its arguments with torch "
                    "functions (not .item(), float() or numpy, which cut the gradient off)"
                )
            lp = lp + log_jac
            ones = self._ones.get(lp.shape)
            if ones is None or ones.dtype != lp.dtype or ones.device != lp.device:
                ones = self._ones[lp.shape] = torch.ones_like(lp)
            (grad,) = torch.autograd.grad(lp, u, ones)
        return lp.detach(), grad

    def check_followed(self, u: torch.Tensor, what: str = "the sampler") -> None:
        """A ParameterError when ``log_density`` at ``u`` (p,) changes with a parameter that its
        autograd gradient does not follow (:func:`~latentfit._gradient_cut.unfollowed`): a
        value computed from ``torch.tensor(param)``, under ``torch.no_grad()`` or in numpy.
        ``what`` (the sampler, SVGD) moves the parameters by that gradient. Not judged for a
        ``value_and_grad`` given by hand (``check_gradient`` compares that with autograd)."""
        if self._batched_vg is not None:
            return

        def value_and_grad(points):  # (m, p): one point per chain
            with torch.enable_grad():
                points = points.detach().requires_grad_(True)
                params, _ = self.constrain(points)
                lp = self._checked(self._batched(**params), points)  # (m,)
                grad = None
                if lp.requires_grad:
                    (grad,) = torch.autograd.grad(lp.sum(), points, allow_unused=True)
            return lp.detach(), torch.zeros_like(points) if grad is None else grad

        blocks = [(s.name, s.start, s.size) for s in self.slots]
        name = unfollowed(value_and_grad, u.detach(), blocks)
        if name is not None:
            raise ParameterError(
                cut_message(
                    "log_density",
                    name,
                    f"{what} would move {name} without the pull of the density",
                )
            )

    def _given_value_and_grad(self, u):
        """The user's value and natural-parameter gradient, carried to ``u`` by the chain rule
        of each slot's transform, plus the gradient of ``log|det J|``."""
        params, log_jac, blocks = self._constrain(u)
        out = self._batched_vg(**params)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
            raise ParameterError(
                "value_and_grad must return (log_density, {name: gradient}), got "
                f"{type(out).__name__}"
            )
        lp, grads = out
        lp = self._checked(lp, u)
        pieces = []
        for s, (x, y) in zip(self.slots, blocks, strict=True):
            g = grads.get(s.name)
            if not isinstance(g, torch.Tensor) or g.shape != u.shape[:-1] + s.shape:
                raise ParameterError(
                    f"value_and_grad: the gradient for {s.name!r} must be a tensor of shape "
                    f"{tuple(u.shape[:-1] + s.shape)} (the parameter's), got "
                    + (
                        f"shape {tuple(g.shape)}"
                        if isinstance(g, torch.Tensor)
                        else f"{type(g).__name__} {g!r:.40}"
                    )
                )
            if not g.dtype.is_floating_point:
                raise ParameterError(
                    f"value_and_grad: the gradient for {s.name!r} must be a real floating-point "
                    f"tensor, got {g.dtype}"
                )
            if g.dtype != u.dtype:  # as the value in _checked: the sampler's dtype
                g = g.to(u.dtype)
            if s.shape and y.shape != g.shape:
                g = g.reshape(y.shape)
            if s.kind == "real":
                gu = g
            elif s.kind == "positive":  # y = exp(x), log|J| = x
                gu = g * y + 1
            elif s.kind == "unit":  # y = sigmoid(x), log|J| = log y + log(1 - y)
                gu = g * y * (1 - y) + (1 - 2 * y)
            elif s.kind == "ordered":  # y_i = x_0 + sum_{1 <= j <= i} exp(x_j), log|J| = sum x_j
                tail = g.flip(-1).cumsum(-1).flip(-1)  # sum_{i >= j} dlp/dy_i
                gu = tail * torch.cat([torch.ones_like(x[..., :1]), x[..., 1:].exp()], -1)
                gu = gu + torch.cat([torch.zeros_like(x[..., :1]), torch.ones_like(x[..., 1:])], -1)
            else:  # any other bijection: its vector-Jacobian product by autograd
                with torch.enable_grad():
                    xs = x.detach().requires_grad_(True)
                    xf = xs.reshape(*u.shape[:-1], *s.free_shape)
                    yy = s.transform(xf)
                    ladj = s.transform.log_abs_det_jacobian(xf, yy).sum()
                    (gu,) = torch.autograd.grad(
                        [yy.reshape(g.shape), ladj], xs, [g, torch.ones_like(ladj)]
                    )
            pieces.append(gu if s.shape else gu[..., None])
        grad = pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1)
        if grad.requires_grad or lp.requires_grad:  # a value_and_grad that used autograd inside
            lp, grad = lp.detach(), grad.detach()
        return lp + log_jac, grad

    def check_gradient(self, u: torch.Tensor) -> float:
        """Largest absolute difference between ``value_and_grad``'s gradient (carried to
        ``u``) and autograd's, relative to the largest autograd component, at ``u`` (c, p)."""
        if self._batched_vg is None:
            raise ParameterError("check_gradient needs a Target built with value_and_grad=")
        lp_a, g_a = self._value_and_grad(u)
        lp_h, g_h = self._given_value_and_grad(u)
        scale = g_a.abs().max().clamp(min=1e-300)
        return float(max((g_a - g_h).abs().max() / scale, (lp_a - lp_h).abs().max()))

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
