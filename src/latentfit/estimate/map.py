"""Maximum a posteriori estimation: a prior adds log p(θ) to the log-likelihood.

``fit_map`` works for every family ``fit_mle`` knows. ``fit_map_regression`` fits
``y = h(X; θ) + ε`` with ``ε ~ Normal(0, σ²)``: the negative log-posterior is
``‖y − h‖² / (2σ²) − log p(θ)``, so (Murphy, *Machine Learning: a Probabilistic Perspective*,
§7.5 and §13.3)

- no prior gives least squares (the MSE ⇔ Gaussian likelihood equivalence);
- a ``Normal(0, τ)`` prior on the weights gives ridge regression with ``alpha = σ² / τ²``
  (scikit-learn's ``Ridge`` objective ``‖y − Xw‖² + alpha ‖w‖²``);
- a ``Laplace(0, b)`` prior gives the lasso with ``alpha = σ² / (n b)`` (scikit-learn's
  ``Lasso`` objective ``‖y − Xw‖² / (2n) + alpha ‖w‖₁``).

The Laplace log-density is not differentiable at its centre, so parameters with a Laplace prior
are fitted by proximal gradient with an active-set Newton finish (``minimize_l1``), which
reaches the exact lasso solution; their uncertainty is not reported (NaN), since the
Laplace-approximation covariance does not exist at a kink.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.distributions as D
from torch.distributions import constraints as C
from torch.overrides import TorchFunctionMode

from latentfit._validation import (
    as_float_tensor,
    check_positive,
    check_positive_int,
    checked_call,
    resolve_device,
    resolve_dtype,
)
from latentfit.errors import ParameterError
from latentfit.estimate.families import log_density_family
from latentfit.estimate.mle import check_init, fit_family, prepare_fit
from latentfit.estimate.optimize import minimize_l1
from latentfit.estimate.parameters import ParameterLayout
from latentfit.estimate.result import FitResult

__all__ = [
    "fit_map",
    "fit_map_regression",
    "lasso_prior_scale",
    "prior_in_dtype",
    "ridge_prior_scale",
]


def ridge_prior_scale(alpha: float, noise_scale: float = 1.0) -> torch.Tensor:
    """The Normal prior scale τ whose MAP is scikit-learn's ``Ridge(alpha)``: τ = σ / √alpha.

    A float64 0-d tensor, so that ``Normal(0.0, ridge_prior_scale(alpha))`` keeps every digit
    (torch stores a Python float as float32)."""
    check_positive(alpha, "alpha")
    check_positive(noise_scale, "noise_scale")
    return torch.tensor(noise_scale / alpha**0.5, dtype=torch.float64)


def lasso_prior_scale(alpha: float, n_samples: int, noise_scale: float = 1.0) -> torch.Tensor:
    """The Laplace prior scale b whose MAP is scikit-learn's ``Lasso(alpha)``: b = σ²/(n alpha);
    a float64 0-d tensor, as :func:`ridge_prior_scale`."""
    check_positive(alpha, "alpha")
    check_positive_int(n_samples, "n_samples")
    check_positive(noise_scale, "noise_scale")
    return torch.tensor(noise_scale**2 / (n_samples * alpha), dtype=torch.float64)


def _widen(t: torch.Tensor, dtype: torch.dtype, device, lossy: list) -> torch.Tensor:
    """A float32 tensor in a wider ``dtype`` through the shortest decimal of every value: a
    Python float such as 0.1 that torch stored as float32 becomes 0.1 again, not
    0.10000000149. A value that needs 8 or more digits was not typed as a short decimal and
    cannot be recovered: it is recorded in ``lossy``."""
    if t.dtype != torch.float32 or dtype != torch.float64:
        return t.to(device=device, dtype=dtype)
    flat = t.detach().cpu().numpy().ravel()
    text = [str(np.float32(v)) for v in flat]
    digits = [len(s.split("e")[0].replace("-", "").replace(".", "").strip("0")) for s in text]
    lossy.extend(float(v) for v, n in zip(flat, digits, strict=True) if n >= 8)
    out = np.array([float(s) for s in text], dtype=np.float64).reshape(tuple(t.shape))
    return torch.from_numpy(out).to(device=device)


def _cast(obj, dtype: torch.dtype, device, seen: dict, lossy: list):
    """A copy of a distribution or transform whose floating tensors are in ``dtype`` on
    ``device`` (recursing into base distributions, transforms and mixtures)."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            return _widen(obj, dtype, device, lossy)
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast(v, dtype, device, seen, lossy) for v in obj)
    if not isinstance(obj, (D.Distribution, D.Transform)):
        return obj
    if id(obj) in seen:
        return seen[id(obj)]
    out = copy.copy(obj)
    seen[id(obj)] = out
    for name, value in vars(obj).items():
        if isinstance(value, (torch.Tensor, D.Distribution, D.Transform, list, tuple)):
            setattr(out, name, _cast(value, dtype, device, seen, lossy))
    return out


def prior_in_dtype(dist: D.Distribution, dtype: torch.dtype, device=None) -> D.Distribution:
    """``dist`` with every parameter in the data's ``dtype``: a prior built from Python floats
    holds float32 tensors, and torch evaluates ``log_prob`` in the distribution's dtype, so a
    float64 fit would otherwise stop at float32 precision (about 1e-7 off the mode).

    float32 values are widened through their shortest decimal (``Gamma(2.0, 0.1)`` means
    exactly 2 and 0.1); a float32 value with 8 or more digits (computed, not typed) cannot be
    recovered, and a RuntimeWarning says to build the prior from float64 tensors."""
    lossy: list = []
    out = _cast(dist, dtype, device, {}, lossy)
    if lossy:
        warnings.warn(
            f"the prior {type(dist).__name__} holds float32 value(s) {lossy[:3]} (torch stores "
            "a Python float as float32), so the fit in float64 is only float32-accurate there; "
            "build the prior from torch.tensor(value, dtype=torch.float64)",
            RuntimeWarning,
            stacklevel=4,
        )
    return out


def _log_prior(prior, names, shapes=None, constraints_=None, family="the model"):
    """``prior`` as a function of the parameter dict: a dict of distributions (already in the
    data's dtype, see :func:`_prior_dict`) or a callable. With ``shapes`` (each parameter's
    shape) a dict prior is checked by :func:`check_prior` against them and ``constraints_``."""
    if callable(prior) and not isinstance(prior, dict):
        return _callable_prior(prior, names)
    if isinstance(prior, dict) and not prior:
        raise ParameterError(
            "prior is empty: with a flat prior on every parameter the MAP is the MLE; use "
            f"fit_mle, or give a distribution for at least one of {list(names)}"
        )
    if not isinstance(prior, dict):
        raise ParameterError(
            "prior must be a dict {parameter: torch distribution} or a callable "
            "log_prior(**params) -> scalar"
        )
    for name, dist in prior.items():
        if name not in names:
            raise ParameterError(
                f"prior names {name!r}, which is not a parameter; parameters: {names}"
            )
        if not isinstance(dist, D.Distribution):
            raise ParameterError(f"prior[{name!r}] must be a torch distribution, got {dist!r}")
        if shapes is not None and name in shapes:
            problem = check_prior(dist, shapes[name], (constraints_ or {}).get(name), family, name)
            if problem:
                raise ParameterError(f"prior[{name!r}] = {type(dist).__name__}: {problem}")

    def log_prior(p):
        return sum(dist.log_prob(p[name]).sum() for name, dist in prior.items())

    def per_chain(p):  # each p[name] (c, *shape): the prior of each of c points, (c,)
        c = next(iter(p.values())).shape[0]
        return sum(dist.log_prob(p[name]).reshape(c, -1).sum(1) for name, dist in prior.items())

    log_prior.per_chain = per_chain  # mcmc/fit_posterior.py samples the chains at once with it
    return log_prior


class _GradientCut(TorchFunctionMode):
    """Refuses, as a ParameterError naming ``label``, a tensor that carries the fit's gradient
    taken out of torch (``.item()``, ``float()``, ``.numpy()``, ``.tolist()``, ``.detach()``,
    ``.data``): the prior's value would not follow the parameters, and the fit would end at
    the MLE (or torch would raise its own RuntimeError)."""

    _CUTS = frozenset(
        ("item", "numpy", "tolist", "__float__", "__int__", "__index__", "detach", "detach_")
    )

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def __torch_function__(self, func, types, args=(), kwargs=None):
        cut = getattr(func, "__name__", "") in self._CUTS or func is _DATA
        if cut and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            what = ".data" if func is _DATA else f"{func.__name__.strip('_')}()"
            raise ParameterError(
                f"{self.label} calls {what} on a parameter (or a value computed from one), "
                "which takes it out of torch and cuts the gradient the fit follows: write the "
                "prior with torch operations on its arguments (torch.where rather than an if "
                "on a value; no .item(), float() or numpy), or give it as torch distributions, "
                "{name: distribution}"
            )
        return func(*args, **(kwargs or {}))


_DATA = torch.Tensor.data.__get__


def _callable_prior(prior, names) -> Callable[[dict], torch.Tensor]:
    """A callable ``log_prior(**params)``, its signature checked against the parameter names
    and its value checked to be one number each time it is called."""
    call = f"log_prior({', '.join(f'{n}=...' for n in names)})"
    try:
        sig = inspect.signature(prior)
    except (TypeError, ValueError):  # a builtin without a signature: judged by its calls
        sig = None
    if sig is not None:
        try:
            sig.bind(**dict.fromkeys(names))
        except TypeError as err:
            raise ParameterError(
                f"a callable prior is called as {call}, one keyword argument per parameter, "
                f"and returns a scalar log-density; {getattr(prior, '__name__', 'it')}{sig} "
                f"cannot be called so ({err}). Write it as def log_prior({', '.join(names)}): "
                "... or def log_prior(**params): ..."
            ) from None

    label = f"the callable prior {getattr(prior, '__name__', type(prior).__name__)}"
    watch = _GradientCut(label)

    def log_prior(p):
        if torch.is_grad_enabled() and any(v.requires_grad for v in p.values()):
            with watch:
                value = prior(**p)
        else:
            value = prior(**p)
        if not isinstance(value, torch.Tensor):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ParameterError(
                    f"the callable prior must return a number (a scalar tensor), got {value!r:.60}"
                )
            ref = next(iter(p.values()))
            value = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
        if value.numel() != 1:
            raise ParameterError(
                f"the callable prior must return one number, the log-density of all "
                f"parameters together; got shape {tuple(value.shape)} (sum it)"
            )
        return value.reshape(())

    log_prior.label = label  # how fit_family's check of its gradient names it
    return log_prior


def support_bounds(con) -> tuple[float, float] | None:
    """The lowest and highest value a torch constraint allows, entrywise and common to every
    entry (the tightest bounds of a batched one), or None when it does not say."""
    inf = math.inf

    def lowest(v):  # of a batched bound, the one that allows least
        return float(torch.as_tensor(v, dtype=torch.float64).max())

    def highest(v):
        return float(torch.as_tensor(v, dtype=torch.float64).min())

    if isinstance(con, C.independent):
        return support_bounds(con.base_constraint)
    if isinstance(con, type(C.real)) or isinstance(
        con, (type(C.positive_definite), type(C.lower_cholesky))
    ):
        return -inf, inf
    if isinstance(con, type(C.simplex)):
        return 0.0, 1.0
    if isinstance(con, (C.greater_than, C.greater_than_eq)):
        return lowest(con.lower_bound), inf
    if isinstance(con, C.less_than):
        return -inf, highest(con.upper_bound)
    if isinstance(con, (C.interval, C.half_open_interval)):
        return lowest(con.lower_bound), highest(con.upper_bound)
    return None


def describe_bounds(lo: float, hi: float) -> str:
    """Words for the values between ``lo`` and ``hi``: ``values from 0 up``."""
    if lo == -math.inf and hi == math.inf:
        return "any real value"
    if hi == math.inf:
        return f"values from {lo:g} up"
    if lo == -math.inf:
        return f"values up to {hi:g}"
    return f"values in [{lo:g}, {hi:g}]"


def prior_support_problem(dist: D.Distribution, constraint, family: str, name: str) -> str:
    """Why ``dist`` cannot be the prior of ``family``'s parameter ``name`` (of ``constraint``)
    by its support, or ``""``: a prior over whole numbers, or one that leaves out values the
    parameter may take (the fit could start or move there, where the prior has no density)."""
    try:
        support = dist.support
    except NotImplementedError:  # a distribution of your own that does not say
        return ""
    if getattr(support, "is_discrete", False):
        return (
            f"it is a distribution over whole numbers, not a density over {family}'s {name}; "
            "use a continuous prior (e.g. Gamma for a positive parameter, Normal for a real one)"
        )
    have = support_bounds(support)
    need = support_bounds(C.real if constraint is None else constraint)
    if have is None or need is None or (have[0] <= need[0] and have[1] >= need[1]):
        return ""
    return (
        f"the prior covers {describe_bounds(*have)}, but {family}'s {name} may take "
        f"{describe_bounds(*need)}; a prior must give every such value a density (e.g. "
        + ("normal" if need[0] == -math.inf else "gamma")
        + f" for {describe_bounds(*need)})"
    )


def _argument_problem(dist: D.Distribution) -> str:
    """Why the numbers ``dist`` was made with cannot be a prior's, or ``""``: one that is not
    finite, or outside its range (``validate_args=False`` lets torch build such a prior; its
    density is then NaN everywhere and the fit blamed its starting values)."""
    for arg, con in (getattr(dist, "arg_constraints", None) or {}).items():
        if arg in vars(dist):  # the numbers given, not a lazily derived form (probs/logits)
            value = vars(dist)[arg]
        elif isinstance(getattr(type(dist), arg, None), property):  # HalfNormal's scale
            value = getattr(dist, arg)
        else:
            continue
        if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
            continue
        if not bool(torch.isfinite(value).all()):
            return f"its {arg} is not finite ({value.flatten()[:4].tolist()})"
        try:
            inside = bool(con.check(value).all())
        except (TypeError, ValueError, RuntimeError, NotImplementedError):
            continue
        if not inside:
            return f"its {arg} ({value.flatten()[:4].tolist()}) lies outside {con}"
    return ""


def check_prior(dist: D.Distribution, shape: tuple, constraint, family: str, name: str) -> str:
    """Why ``dist`` cannot be the prior of ``family``'s parameter ``name`` of ``shape``, or
    ``""``: its event shape must end the parameter's shape and its batch shape broadcast to
    the rest without enlarging it (a batch of 3 priors on one number is a mistake), and its
    support (:func:`prior_support_problem`) must cover the parameter's."""
    bad = _argument_problem(dist)
    if bad:
        return bad
    shape = tuple(shape)
    event, batch = tuple(dist.event_shape), tuple(dist.batch_shape)
    what = "a single number" if not shape else f"shape {shape}"
    if len(event) > len(shape) or shape[len(shape) - len(event) :] != event:
        return (
            f"it is a distribution over values of shape {event} (its event_shape), but "
            f"{family}'s {name} is {what}; use a prior over {what}"
        )
    rest = shape[: len(shape) - len(event)]
    try:
        fits = torch.broadcast_shapes(batch, rest) == torch.Size(rest)
    except RuntimeError:
        fits = False
    if not fits:
        return (
            f"its batch_shape {batch} does not match {family}'s {name} ({what}): it would "
            f"give {name} several priors at once; use one prior of batch shape {rest} or one "
            "that broadcasts to it (a scalar prior applies to every entry)"
        )
    return prior_support_problem(dist, constraint, family, name)


def _laplace_solver(prior, layout: ParameterLayout, n: int):
    """A proximal solver for the Laplace-prior coordinates, or None when the prior is smooth."""
    if not isinstance(prior, dict):
        return None
    laplace = {k: v for k, v in prior.items() if isinstance(v, D.Laplace)}
    if not laplace:
        return None
    weight = torch.zeros(layout.n_free, dtype=torch.float64)
    center = torch.zeros(layout.n_free, dtype=torch.float64)
    for s in layout.slots:
        if s.name not in laplace:
            continue
        if not isinstance(s.constraint, type(C.real)):
            raise ParameterError(
                f"a Laplace prior needs a real-valued parameter; {s.name!r} is constrained "
                f"({s.constraint!r})"
            )
        dist = laplace[s.name]
        weight[s.start : s.start + s.size] = (1 / dist.scale).expand(s.shape).reshape(-1)
        center[s.start : s.start + s.size] = dist.loc.expand(s.shape).reshape(-1)

    def solver(objective, u0, size=None):
        w, c = weight.to(u0), center.to(u0)

        def smooth(u):  # the objective less the Laplace kinks (its constant log 2b stays)
            return (objective(u) - (w * (u - c).abs()).sum()) / n

        return minimize_l1(smooth, u0, w / n, c, size=size)

    solver.name = "proximal gradient + active-set Newton"
    return solver


@checked_call("fit_map('gamma', data, prior={'rate': torch.distributions.Gamma(2.0, 1.0)})")
def fit_map(
    family,
    data,
    prior,
    *,
    fixed: dict | None = None,
    init: dict | None = None,
    constraints: dict | None = None,
    max_iter: int = 500,
    dtype=None,
    device=None,
) -> FitResult:
    """MAP fit of ``family`` to ``data``: maximise ``log p(data | θ) + log p(θ)``.

    ``prior`` maps parameter names to torch distributions over the natural parameter (e.g.
    ``{"rate": Gamma(2., 1.)}``; parameters without one get a flat prior) or is a callable
    ``log_prior(**params)``. Other arguments as for ``fit_mle``. The covariance reported is the
    Laplace approximation: the inverse Hessian of the negative log-posterior at the mode.
    """
    fam, fixed, x, init = prepare_fit(family, data, fixed, init, constraints, dtype, device)
    prior = _prior_dict(prior, x)
    shapes = _start_shapes(fam, x, fixed, init)
    log_prior = _log_prior(prior, fam.params, shapes, fam.constraints, fam.name)
    layout_solver = _solver_for(fam, prior, shapes, x.shape[0])
    return fit_family(
        fam,
        x,
        fixed,
        log_prior=log_prior,
        init=init,
        max_iter=max_iter,
        solver=layout_solver,
        uncertainty=layout_solver is None,
        restart=_prior_means(prior, shapes, fam.constraints, init, fixed),
    )


def _prior_means(prior, shapes: dict, constraints_: dict, init, fixed) -> dict:
    """Each parameter's prior mean, in its shape, where it is finite and inside the
    parameter's support and the user gave no start (``init``) or value (``fixed``) for it:
    the start a MAP fit tries again from where the fit from the data's estimate does not
    converge."""
    if not isinstance(prior, dict):
        return {}
    out = {}
    for name, dist in prior.items():
        if name in (init or {}) or name in fixed or name not in shapes:
            continue
        try:
            mean = dist.mean.expand(shapes[name]).clone()
        except (NotImplementedError, RuntimeError):  # no mean, or not of the parameter's shape
            continue
        cons = constraints_.get(name)
        inside = bool(cons.check(mean).all()) if cons is not None else True
        if bool(torch.isfinite(mean).all()) and inside:
            out[name] = mean
    return out


def _prior_dict(prior, x: torch.Tensor):
    """A dict prior with its distributions in the data's dtype (a callable is kept)."""
    if not isinstance(prior, dict):
        return prior
    return {
        k: prior_in_dtype(v, x.dtype, x.device) if isinstance(v, D.Distribution) else v
        for k, v in prior.items()
    }


def _solver_for(fam, prior, shapes: dict, n: int):
    """The Laplace solver for this fit's parameter layout (``shapes`` from the start values,
    :func:`_start_shapes`) on ``n`` observations."""
    if not isinstance(prior, dict) or not any(isinstance(v, D.Laplace) for v in prior.values()):
        return None
    return _laplace_solver(prior, ParameterLayout(shapes, fam.constraints), n)


def _start_shapes(fam, x, fixed, init) -> dict[str, tuple[int, ...]]:
    """Each parameter's shape, from the starting values of the fit (``init`` over the
    family's own)."""
    start = dict(fam.init(x, fixed)) if fam.init is not None else {}
    start.update(init or {})
    return {k: tuple(torch.as_tensor(start[k]).shape) for k in fam.params if k in start}


@checked_call("fit_map_regression(h, X, y, init={'w': torch.zeros(d), 'b': 0.0})")
def fit_map_regression(
    h: Callable[..., torch.Tensor],
    X,
    y,
    init: dict,
    *,
    prior=None,
    noise_scale: float = 1.0,
    max_iter: int = 500,
    dtype=None,
    device=None,
) -> FitResult:
    """MAP (or, with ``prior=None``, maximum likelihood = least squares) for ``y = h(X; θ) + ε``.

    ``h(X, **params) -> (n,)`` is any differentiable function; ``init`` names the parameters
    with starting values (e.g. ``{"w": torch.zeros(d), "b": 0.0}``); ``prior`` maps names to
    torch distributions (``Normal`` → ridge, ``Laplace`` → lasso; see ``ridge_prior_scale`` and
    ``lasso_prior_scale``) or is a callable. ``ε ~ Normal(0, noise_scale²)`` with
    ``noise_scale`` known.
    """
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    X = as_float_tensor(X, name="X", dtype=dtype, device=device, ndim=None)
    y = as_float_tensor(y, name="y", dtype=dtype, device=device, ndim=None)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1 or X.shape[0] != y.shape[0]:
        raise ParameterError(
            f"y must be 1-D with one value per row of X; got X {tuple(X.shape)}, y {tuple(y.shape)}"
        )
    check_positive(noise_scale, "noise_scale")
    sigma = torch.tensor(noise_scale, dtype=dtype, device=device)

    def log_density(y_, X, **params):
        return D.Normal(h(X, **params), sigma).log_prob(y_)

    init = check_init("the regression", None, None, init, {}, dtype=dtype, device=device)
    fam = log_density_family(log_density, init, name="Regression")
    fixed = {"X": X}
    if prior is None:
        return fit_family(fam, y, fixed, max_iter=max_iter)
    prior = _prior_dict(prior, y)
    shapes = _start_shapes(fam, y, fixed, None)
    log_prior = _log_prior(prior, fam.params, shapes, fam.constraints, "the regression")
    solver = _solver_for(fam, prior, shapes, y.shape[0])
    return fit_family(
        fam,
        y,
        fixed,
        log_prior=log_prior,
        max_iter=max_iter,
        solver=solver,
        uncertainty=solver is None,
    )
