"""Maximum-likelihood estimation with uncertainty: ``fit_mle``.

Constrained parameters are optimised in unconstrained space (``ParameterLayout``); the observed
Fisher information is the autograd Hessian of the negative log-likelihood at the optimum, in
unconstrained coordinates, and every reported covariance is carried to the natural parameters
by the delta method with the Jacobian of the transform (Casella & Berger, §10.1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch.autograd.functional import hessian, jacobian
from torch.distributions import constraints as C

from latentfit._gradient_cut import cut_message, unfollowed, value_and_grad_rows
from latentfit._validation import (
    as_float_tensor,
    check_allocation,
    check_count_range,
    check_positive_int,
    checked_call,
    resolve_device,
    resolve_dtype,
)
from latentfit.errors import DataError, ParameterError
from latentfit.estimate.families import Family, get_family, log_density_family
from latentfit.estimate.inference import (
    invert_information,
    rescale_inverse,
    sandwich_covariance,
)
from latentfit.estimate.optimize import minimize
from latentfit.estimate.parameters import ParameterLayout
from latentfit.estimate.result import COV_TYPES, FitResult

__all__ = ["check_data", "fit_family", "fit_mle"]


def check_data(family: Family, data, fixed: dict, *, dtype=None, device=None) -> torch.Tensor:
    """Data as a tensor of the family's shape, every observation inside its support.

    Scalar families take a 1-D array or a single column; vector families (Dirichlet,
    Multinomial, MultivariateNormal) a 2-D array with one row per observation. The first value
    outside the support is named with its index.
    """
    x = as_float_tensor(data, name="data", dtype=dtype, device=device, ndim=None)
    if x.dim() == 0 and family.event_dim == 0:
        x = x.reshape(1)  # a single number is one observation
    if x.dim() == 0 or x.shape[0] == 0:
        raise DataError(f"data must hold at least one observation, got shape {tuple(x.shape)}")
    if family.event_dim == 0:
        if x.dim() == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.dim() != 1:
            raise DataError(
                f"{family.name} takes one value per observation (a 1-D array or one column); "
                f"got shape {tuple(x.shape)}: choose a column first"
            )
    elif family.event_dim == 1 and x.dim() != 2:
        raise DataError(
            f"{family.name} takes one vector per observation, a 2-D array (n, d); "
            f"got shape {tuple(x.shape)}"
        )
    if family.support is not None:
        support = family.support(fixed)
        ok = support.check(x)
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0][0])
            value = x[i].tolist()
            where = f"data[{i}] = {value}" if x.dim() == 1 else f"row {i} = {value}"
            raise DataError(
                f"{family.name} data must lie in its support ({describe_support(support)}); "
                f"the first value outside it is {where}"
            )
        if support.is_discrete:  # counts: every whole number held, the log-likelihood too
            check_count_range(x, "data")
    return x


def describe_support(con) -> str:
    """Words for a support constraint: ``positive values``, ``integers in [0, 10]``."""
    if isinstance(con, C.integer_interval):
        return f"integers in [{con.lower_bound}, {con.upper_bound}]"
    if isinstance(con, type(C.nonnegative_integer)):
        return f"integers >= {con.lower_bound}"
    if isinstance(con, type(C.boolean)):
        return "0 or 1"
    if isinstance(con, C.greater_than) and not isinstance(con, C.greater_than_eq):
        return f"values > {con.lower_bound}"
    if isinstance(con, C.greater_than_eq):
        return f"values >= {con.lower_bound}"
    if isinstance(con, C.multinomial):
        return f"non-negative integer counts summing to {con.upper_bound}"
    if isinstance(con, type(C.real)):
        return "finite real values"
    return repr(con)


def prepare_fit(family, data, fixed, init, constraints, dtype, device):
    """Resolve ``family`` (a name, a Family or a log-density of your own, which needs ``init``),
    check ``fixed`` and the data against its support: returns (family, fixed, data, init); the
    ``init`` of a user log-density is consumed by the family it defines."""
    if constraints is not None and not isinstance(constraints, Mapping):
        raise ParameterError(
            "constraints must be a dict {parameter: torch.distributions constraint}, got "
            f"{type(constraints).__name__}"
        )
    if callable(family) and not isinstance(family, (str, type, Family)):
        if init is None:
            raise ParameterError("a log-density of your own needs init={'name': start, ...}")
        init = check_init(
            "your log-density", None, constraints, init, {}, dtype=dtype, device=device
        )
        family, init = log_density_family(family, init, constraints), None
    elif constraints is not None:
        raise ParameterError(
            "constraints= applies to a log-density of your own; families know theirs"
        )
    fam = get_family(family)
    fixed = _check_fixed(fam, fixed)
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    x = check_data(fam, data, fixed, dtype=dtype, device=device)
    if fam.check is not None:  # what the estimate needs beyond the support
        fam.check(x, fixed)
    if init is not None:  # checked here too, as fit_map reads its shapes before fitting
        start = dict(fam.init(x, fixed)) if fam.init is not None else {}
        start = {k: torch.as_tensor(v) for k, v in start.items()}
        init = check_init(
            fam.name, fam.params, fam.constraints, init, start, dtype=x.dtype, device=x.device
        )
    return fam, fixed, x, init


def _check_fixed(family: Family, fixed: dict | None) -> dict:
    if fixed is not None and not isinstance(fixed, Mapping):
        raise ParameterError(
            f"fixed must be a dict {{name: value}} of known arguments (e.g. "
            f"fixed={{'total_count': 10}}), got {type(fixed).__name__} {fixed!r:.60}"
        )
    # numpy scalars as Python numbers: torch's distributions take only the latter
    fixed = {k: v.item() if isinstance(v, np.generic) else v for k, v in (fixed or {}).items()}
    bad = [k for k in fixed if not isinstance(k, str)]
    if bad:
        raise ParameterError(f"fixed names arguments by string, got the key {bad[0]!r}")
    missing = [k for k in family.required_fixed if k not in fixed]
    if missing:
        raise ParameterError(
            f"{family.name} needs fixed={{{', '.join(repr(k) + ': ...' for k in missing)}}} "
            "(a known count is not estimated)"
        )
    # estimated parameters first (sorted, so the message does not depend on the dict's order)
    for name in sorted(fixed, key=lambda k: (k not in family.params, k)):
        why = why_not_fixed(family, name)
        if why is None:
            continue
        con = family.constraints.get(name)
        try:
            value = torch.as_tensor(fixed[name], dtype=torch.float64)
            inside = con is None or bool(con.check(value).all())
        except (TypeError, ValueError, RuntimeError):  # not a number: named as it is
            inside = True
        if not inside:
            raise ParameterError(
                f"fixed[{name!r}] = {fixed[name]!r} is outside the support of {family.name}'s "
                f"{name} ({describe_support(con)}); moreover {why}"
            )
        raise ParameterError(f"fixed[{name!r}]: {why}")
    return fixed


def why_not_fixed(family: Family, name: str) -> str | None:
    """Why ``name`` cannot be a known (fixed) argument of ``family``, or None when it can: a
    parameter the family estimates, or a name it does not take (a log-density of your own
    takes any name). The one rule for ``fixed=`` of :func:`fit_mle` and :func:`fit_map` and
    for the command line's ``--fixed``, each of which says where the name came from."""
    takes = ", ".join(family.fixed_names or ())
    if name in family.params:
        return (
            f"{family.name} estimates {name!r}, and only known arguments that are not estimated "
            f"(such as a Binomial's total_count) can be fixed; {family.name} takes "
            + (f"{takes} fixed" if takes else f"none, it estimates {', '.join(family.params)}")
        )
    if family.fixed_names is not None and name not in family.fixed_names:
        return (
            f"{family.name} has no argument {name!r}; it takes "
            + (f"{takes} fixed" if takes else "nothing fixed")
            + f" and estimates {', '.join(family.params)}"
        )
    return None


def fit_family(
    family: Family,
    x: torch.Tensor,
    fixed: dict,
    *,
    log_prior: Callable[[dict], torch.Tensor] | None = None,
    init: dict | None = None,
    method: str = "auto",
    cov_type: str = "observed",
    max_iter: int = 500,
    gtol: float = 1e-8,
    solver: Callable | None = None,
    uncertainty: bool = True,
    restart: dict | None = None,
) -> FitResult:
    """The shared engine of ``fit_mle`` and ``fit_map`` on validated data ``x``.

    ``solver(objective, u0, size) -> OptimizeResult`` replaces L-BFGS (the lasso's proximal
    solver; ``size(u)`` is the magnitude of the mean objective's terms, see ``minimize``);
    ``uncertainty=False`` reports NaN covariances where no asymptotic one applies;
    ``restart`` holds start values (a MAP's prior means) the fit starts from again, with the
    other parameters' starts, where the fit from ``start`` does not converge.
    """
    if method not in ("auto", "closed_form", "optimize"):
        raise ParameterError(f"method must be 'auto', 'closed_form' or 'optimize', got {method!r}")
    if cov_type not in COV_TYPES:
        raise ParameterError(f"cov_type must be one of {COV_TYPES}, got {cov_type!r}")
    check_positive_int(max_iter, "max_iter")
    no_mle = family.mle_check(x, fixed) if family.mle_check is not None else None
    if no_mle is not None and log_prior is None:
        raise DataError(f"{no_mle[0]}. {no_mle[1]}")
    n = x.shape[0]
    closed = family.closed_form is not None and log_prior is None and init is None
    if method == "closed_form" and not closed:
        raise ParameterError(
            f"{family.name} has no closed-form {'MAP' if log_prior else 'MLE'}"
            + (" when init is given" if init is not None else "")
            + "; use method='optimize'"
        )
    start = dict(family.init(x, fixed)) if family.init is not None else {}
    start = {k: torch.as_tensor(v, dtype=x.dtype, device=x.device) for k, v in start.items()}
    start.update(
        check_init(
            family.name,
            family.params,
            family.constraints,
            init,
            start,
            dtype=x.dtype,
            device=x.device,
        )
    )
    missing = [k for k in family.params if k not in start]
    if missing:
        raise ParameterError(f"{family.name} needs init= values for {missing}")
    start = {k: start[k] for k in family.params}
    layout = ParameterLayout({k: tuple(v.shape) for k, v in start.items()}, family.constraints)

    def loglik_obs(u):
        return family.log_prob(layout.to_natural(u), x, fixed)  # (n,)

    def objective(u):  # the negative log-likelihood (or log-posterior), summed
        value = -loglik_obs(u).sum()
        if log_prior is not None:
            value = value - log_prior(layout.to_natural(u))
        return value

    def size(u):  # mean |log p(xᵢ)| (+ |log prior| / n): what the gradient is relative to
        with torch.no_grad():
            value = loglik_obs(u).abs().mean()
            if log_prior is not None:
                value = value + log_prior(layout.to_natural(u)).abs() / n
        return float(value)

    if closed and method != "optimize":
        params = {k: v.detach() for k, v in family.closed_form(x, fixed).items()}
        u = layout.to_unconstrained(params)
        converged, n_iter, solver_name = True, 0, "closed form"
    else:
        u0 = layout.to_unconstrained(start)
        if no_mle is not None and init is None and not bool(torch.isfinite(u0).all()):
            # the method-of-moments start fails where the MLE does not exist (constant data:
            # a scale of 0), yet a prior may make the MAP proper (only a MAP gets here): such
            # coordinates start at the constraint's origin instead (0, or 1 if positive)
            u0 = torch.where(torch.isfinite(u0), u0, torch.zeros_like(u0))
        if log_prior is not None and init is None:
            # so do those on the edge where the MLE lies there (a probability of 0 from data
            # of zeros, a rate of 0): a probability of 0 maps to a finite logit of -708,
            # where the gradient vanishes, and from there one step went to +590 and
            # "converged" at a probability of 1
            u0 = _off_the_edge(layout, start, u0)
        if not bool(torch.isfinite(u0).all()) or not bool(torch.isfinite(objective(u0))):
            if (
                log_prior is not None
                and bool(torch.isfinite(u0).all())
                and bool(torch.isfinite(loglik_obs(u0).sum()))
            ):
                # finite values of a finite likelihood: the prior gives them no density (a
                # callable prior of bounded support), which "are not finite" did not say
                with torch.no_grad():
                    lp = float(log_prior(layout.to_natural(u0)))
                where = "computed from the data" if init is None else "given"
                raise ParameterError(
                    f"the prior's log-density at the {family.name} starting values "
                    f"{_fmt(layout.to_natural(u0))} ({where}) is {lp}: the prior gives them no "
                    "density; pass init= with values inside the prior's support"
                )
            if init is None:  # the method-of-moments start, computed from the data
                raise DataError(
                    f"the {family.name} starting values {_fmt(start)} computed from the data "
                    f"are not finite{_overflow_hint(x)}; pass init= with values inside the "
                    "parameter space"
                )
            raise ParameterError(
                f"the starting values {_fmt(start)} give a non-finite {family.name} "
                "log-likelihood; pass init= with values inside the parameter space"
            )
        _check_followed(family, layout, u0, x, fixed, log_prior)
        try:
            if solver is None:
                # in the units of the data's spread at the start (Family.standardize): in the
                # data's own units the curvature of a Normal scale in units of 1e150 holds
                # scale⁻⁴, which autograd's Hessian took to 0 (NaN at 1e-150), so no step
                # and no convergence test saw that coordinate's curvature
                def run(u_start, iters):
                    return _minimize_standardized(
                        family, layout, u_start, x, fixed, log_prior, max_iter=iters, gtol=gtol
                    )

                def run_from(u_start, iters):
                    res, shift = run(u_start, iters)
                    if res.n_iter < iters and bool(torch.isfinite(res.u).all()):
                        # standardised again where the fit stopped when that is far from the
                        # start: a centre more than a spread away, a scale a factor e off
                        _, factor, _, moved = _standardized(family, layout, res.u, x)
                        if bool(((moved - shift).abs() > factor).any()):
                            again, _ = run(res.u, iters - res.n_iter)
                            res = again._replace(n_iter=res.n_iter + again.n_iter)
                    return res

                res = run_from(u0, max_iter)
                if not res.converged and restart:
                    # a prior far from the data (Normal(2.4, 1e3) on the loc of data near
                    # 1e15): from the data's estimate its curvature, 1e20 times the data's,
                    # threw the scale to 1e284; from the prior's mean the fit converges
                    u1 = layout.to_unconstrained({**start, **restart})
                    if bool(torch.isfinite(u1).all()) and bool(torch.isfinite(objective(u1))):
                        again = run_from(u1, max_iter)  # max_iter for each start
                        if again.converged:
                            res = again._replace(n_iter=res.n_iter + again.n_iter)
                solver_name = "L-BFGS + Newton"
            else:
                res = solver(objective, u0, size)
                solver_name = getattr(solver, "name", "custom")
        except torch.linalg.LinAlgError:
            # a line search stepped to a matrix parameter whose factorisation fails in this
            # dtype (data of a scale far from 1 make the steps that long)
            raise DataError(
                f"the {family.name} fit stepped to a matrix parameter that is not positive "
                f"definite in {x.dtype} arithmetic; the data's scale (largest |value| "
                f"{float(x.abs().max()):.3g}) makes the optimiser's steps too long: "
                "standardise the data (or rescale it by a power of ten), or pass init= close "
                "to the estimate"
            ) from None
        u, converged, n_iter = res.u, res.converged, res.n_iter
        if not converged and not math.isfinite(res.grad_norm):
            what = "log-posterior" if log_prior is not None else "log-likelihood"
            with torch.no_grad():
                end, begin = float(objective(u.detach())), float(objective(u0))
            if log_prior is not None and not (math.isfinite(end) and end < begin):
                # no growth to show for it: a step out of range (a scale of inf, where the
                # log-posterior is -inf), not an edge where the posterior is unbounded
                grad = f" and its gradient {res.grad_norm}"
                raise _steps_out_of_range(
                    family, layout.to_natural(u.detach()), x, end, begin, grad
                )
            raise DataError(
                f"the {family.name} fit ran to {_fmt(layout.to_natural(u.detach()))}, where "
                f"the gradient of the {what} is {res.grad_norm}: it heads for the edge of the "
                "parameter space (a scale of 0, a concentration of inf), where the "
                f"{what} grows without bound, so no {'MAP' if log_prior else 'MLE'} exists "
                "there"
                + (
                    ". A prior whose density does not vanish at that edge (a half-normal on a "
                    "scale, a gamma of small concentration) does not stop it: use one that vanishes "
                    "there faster than the likelihood grows (an inverse-gamma on a scale)"
                    if log_prior is not None
                    else "; pass init= near a plausible estimate, or add a prior (fit_map)"
                )
            )
        if not converged and no_mle is not None:
            raise DataError(
                f"{no_mle[0]}, and the MAP fit ran to {_fmt(layout.to_natural(u.detach()))} "
                "without converging: the prior does not vanish there faster than the "
                "likelihood grows. Use one that does (an inverse-gamma on a scale), or fit "
                "data that vary"
            )
        natural = layout.to_natural(u.detach())
        if not converged and log_prior is not None and not _overflow_hint(x):
            if not all(bool(torch.isfinite(v).all()) for v in natural.values()):
                # a step past the dtype's range (a prior's curvature far beyond the data's
                # threw the scale to inf), not data too large for it (their squares are not)
                with torch.no_grad():
                    end, begin = float(objective(u.detach())), float(objective(u0))
                raise _steps_out_of_range(family, natural, x, end, begin)
        if not converged:
            warnings.warn(
                f"{family.name} fit did not converge after {res.n_iter} iterations (gradient "
                f"{res.rel_grad:.3g} relative to the objective's size and curvature, max "
                f"|gradient| {res.grad_norm:.3g}); try other init= values or a larger max_iter"
                # a family fitted on its data over their spread has no such curvatures
                + (_far_from_one_hint(x) if family.standardize is None or solver else ""),
                RuntimeWarning,
                stacklevel=3,
            )
        params = layout.to_natural(u)
    params = {k: v.detach() for k, v in params.items()}
    if family.finalize is not None:
        params = family.finalize(params)
        u = layout.to_unconstrained(params)
    params = {k: v.detach() for k, v in params.items()}
    u = u.detach()
    _check_finite_estimate(family, params, x)
    loglik = float(family.log_prob(params, x, fixed).sum())
    if not math.isfinite(loglik):  # e.g. a scale that underflowed to 0 from values near 1e-300
        smallest = float(x[x != 0].abs().min()) if bool((x != 0).any()) else 0.0
        raise DataError(
            f"the {family.name} fit ended at {_fmt(params)}, where the log-likelihood of the "
            f"data is {loglik}: the data (smallest nonzero |value| {smallest:.3g}, largest "
            f"{float(x.abs().max()):.3g}) are too small or too large for {x.dtype} arithmetic; "
            "rescale them (e.g. multiply or divide by a power of ten) and fit again"
        )

    p = u.numel()
    # Every covariance path builds (p, p) matrices (the Hessian, its eigenvectors, the NaN
    # covariance of a boundary fit) and the (n, p) scores: refuse a size that cannot fit (a
    # Categorical with 30,000 categories needs 7.2 GB per matrix).
    check_allocation(
        (4 * p * p + 2 * n * p) * u.element_size(),
        f"the {p} x {p} covariance of the {family.name} fit",
        device=u.device,
        hint="fewer parameters (categories, dimensions) are needed",
    )
    if uncertainty:
        inverses = _inverses(family, layout, u, params, x, fixed, log_prior)
    else:
        nan = torch.full((u.numel(), u.numel()), float("nan"), dtype=u.dtype, device=u.device)
        inverses = {"observed": invert_information(nan)}
    prior = None if log_prior is None else float(log_prior(params))
    return FitResult(
        family=family,
        method="MLE" if log_prior is None else "MAP",
        params=params,
        layout=layout,
        u=u,
        fixed=fixed,
        n_obs=n,
        log_likelihood=loglik,
        log_prior=prior,
        converged=converged,
        n_iter=n_iter,
        solver=solver_name,
        inverses=inverses,
        cov_type=cov_type,
        data=x,
        log_prior_fn=log_prior,
    )


def _check_followed(family, layout, u0, x, fixed, log_prior) -> None:
    """A ParameterError when the log-density or the prior, at the start ``u0`` (p,), changes
    with a parameter its gradient does not follow (:func:`unfollowed`): the fit moves each
    parameter by that gradient, so such a term would be left out of the fit unseen (a MAP at
    the MLE, a parameter left at its start, either said to have converged). Only what the
    user wrote is checked (a log-density of one's own, a callable prior): it costs
    (parameters + 2) evaluations of the log-density over the data."""
    blocks = [(s.name, s.start, s.size) for s in layout.slots]
    terms = []
    if family.own:
        terms.append(
            (
                {"custom": "your log-density", "Regression": "the regression function h"}.get(
                    family.name, f"the {family.name} log-density"
                ),
                lambda u: family.log_prob(layout.to_natural(u), x, fixed).sum(),
                "the fit would leave it where it starts",
            )
        )
    if log_prior is not None and hasattr(log_prior, "label"):  # a callable prior
        what = getattr(log_prior, "label", "the prior")
        terms.append(
            (
                what,
                lambda u: log_prior(layout.to_natural(u)),
                "the fit would ignore the prior there",
            )
        )
    for what, f, consequence in terms:
        name = unfollowed(value_and_grad_rows(f), u0, blocks)
        if name is not None:
            raise ParameterError(cut_message(what, name, consequence))


def check_init(
    name: str, params, constraints: dict, init, start: dict, *, dtype=None, device=None
) -> dict:
    """``init`` as a dict of tensors: each key a parameter of the family ``name`` (one of
    ``params``; any string when ``params`` is None, a log-density of your own), each value a
    finite number or array of the shape of its start in ``start`` (when there is one) and
    inside the parameter's constraint; a :class:`ParameterError` naming the parameter
    otherwise."""
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    if init is None:
        return {}
    if not isinstance(init, Mapping):
        example = repr(params[0]) if params else "'name'"
        raise ParameterError(
            f"init must be a dict {{parameter: starting value}} (e.g. init={{{example}: 1.0}}), "
            f"got {type(init).__name__} {init!r:.60}"
        )
    out = {}
    for k, v in init.items():
        if params is None and not isinstance(k, str):
            raise ParameterError(f"init names parameters by string, got the key {k!r}")
        if params is not None and k not in params:
            raise ParameterError(
                f"init names {k!r}, which is not a parameter of {name}; its parameters "
                f"are {list(params)}"
            )
        if isinstance(v, str | bytes | dict | Mapping) or v is None:
            raise ParameterError(
                f"init[{k!r}] must be a number or an array of numbers, got {v!r:.60}"
            )
        try:
            t = as_float_tensor(
                v,
                name=f"init[{k!r}]",
                dtype=dtype,
                device=device,
                ndim=None,
                allow_nan=True,
                missing_hint=False,  # a starting value: no rows, nothing missing
            )
        except DataError as err:
            raise ParameterError(str(err)) from None
        if bool(torch.isnan(t).any()):
            raise ParameterError(
                f"init[{k!r}] holds NaN: every starting value must be a finite number"
            )
        if k in start and tuple(t.shape) != tuple(start[k].shape):
            raise ParameterError(
                f"init[{k!r}] has shape {tuple(t.shape)}, but {name}'s {k} has shape "
                f"{tuple(start[k].shape)}" + (" (a single number)" if start[k].dim() == 0 else "")
            )
        con = (constraints or {}).get(k)
        if con is not None and not _inside(con, t):
            raise ParameterError(
                f"init {_fmt({k: t})} is outside the support of {name}'s {k} "
                f"({describe_support(con)}), where the log-likelihood is non-finite; start inside it"
            )
        out[k] = t
    return out


def _inside(con, t: torch.Tensor) -> bool:
    """Whether ``t`` satisfies ``con`` (a shape the constraint cannot judge is left to the
    shape checks, and a constraint of your own that fails is not ours to judge)."""
    try:
        return bool(con.check(t).all())
    except (RuntimeError, IndexError, TypeError, ValueError, NotImplementedError):
        return True


def _off_the_edge(layout, start: dict, u0: torch.Tensor) -> torch.Tensor:
    """``u0`` (p,) with the coordinates of every parameter whose ``start``, finite, lies on
    the edge of its support (``ParameterLayout.on_boundary``) set to 0: the origin of the
    constraint's map. A start that is not finite (data that overflow) is left to be refused."""
    edge = set(layout.on_boundary(start))
    off = torch.zeros_like(u0, dtype=torch.bool)  # (p,)
    for s in layout.slots:
        if s.name in edge and bool(torch.isfinite(start[s.name]).all()):
            off[s.start : s.start + s.size] = True
    return torch.where(off, torch.zeros_like(u0), u0)


def _minimize_standardized(family, layout, u0, x, fixed, log_prior, *, max_iter, gtol):
    """:func:`minimize` of the mean negative log-likelihood (or log-posterior) from ``u0``,
    on the data in units of their spread there (:func:`_standardized`; the prior stays on the
    parameters in the data's own units): the result in ``u``'s coordinates and the shift of
    those units (p,)."""
    n = x.shape[0]
    x_v, factor, v0, shift = _standardized(family, layout, u0, x)

    def objective_v(v):
        value = -family.log_prob(layout.to_natural(v), x_v, fixed).sum()
        if log_prior is not None:  # on the parameters in the data's own units
            value = value - log_prior(layout.to_natural(shift + factor * v))
        return value

    def size_v(v):
        with torch.no_grad():
            value = family.log_prob(layout.to_natural(v), x_v, fixed).abs().mean()
            if log_prior is not None:
                value = value + log_prior(layout.to_natural(shift + factor * v)).abs() / n
        return float(value)

    res = minimize(lambda v: objective_v(v) / n, v0, max_iter=max_iter, gtol=gtol, size=size_v)
    return res._replace(u=shift + factor * res.u), shift


def _standardized(family, layout, u, x):
    """The data ``x`` in units of their spread at ``u`` (``Family.standardize``), each
    unconstrained coordinate's factor (p,), ``u`` there (p,) and the shift (p,):
    ``u = factor · v + shift``, and the log-likelihood of those data at ``v`` is that of ``x``
    at ``u`` less a constant. ``x``, ones, ``u`` itself and zeros where the family does not say
    how, or the factors are not finite and positive."""
    if family.standardize is not None and bool(torch.isfinite(u).all()):
        params_s, x_s, factors = family.standardize(layout.to_natural(u), x)
        f = torch.cat([factors[s.name].reshape(-1) for s in layout.slots]).to(u)  # (p,)
        if bool(torch.isfinite(f).all() & (f > 0).all()):
            v = layout.to_unconstrained(params_s)  # (p,)
            shift = u - f * v
            # a location is scaled, not shifted: its shift is u's rounding (1e133 for a
            # location of 1e149), which would hold it that far from a prior's mode at 0
            shift = torch.where(shift.abs() <= 4 * torch.finfo(u.dtype).eps * u.abs(), 0, shift)
            return x_s, f, v, shift
    return x, torch.ones_like(u), u, torch.zeros_like(u)


def _inverses(family, layout, u, params, x, fixed, log_prior):
    """Observed, expected and sandwich covariances in unconstrained coordinates.

    Computed in the coordinates ``v`` of the data in units of their spread where the family
    says how (``Family.standardize``; ``u = factor · v + shift``), and carried back:
    Cov(u) = diag(factor) Cov(v) diag(factor), exactly, with no entry out of range on the
    way.
    """
    edge = layout.on_boundary(params)
    if edge or not bool(torch.isfinite(u).all()):
        warnings.warn(
            f"the {family.name} estimate {_fmt(params)} lies on the boundary of the parameter "
            f"space ({', '.join(edge)}); its standard errors are NaN",
            RuntimeWarning,
            stacklevel=4,
        )
        nan = torch.full((u.numel(), u.numel()), float("nan"), dtype=u.dtype, device=u.device)
        return {"observed": invert_information(nan)}
    x_v, factor, v, shift = _standardized(family, layout, u, x)
    params_v = layout.to_natural(v)

    def loglik_obs(v):  # (n,)
        return family.log_prob(layout.to_natural(v), x_v, fixed)

    def objective(v):  # the negative log-likelihood (or log-posterior) up to a constant
        value = -loglik_obs(v).sum()
        if log_prior is not None:  # the prior is on the parameters in the data's own units
            value = value - log_prior(layout.to_natural(shift + factor * v))
        return value

    inverses = _inverses_at(family, layout, v, params_v, fixed, objective, loglik_obs, log_prior)
    return {k: rescale_inverse(inv, factor) for k, inv in inverses.items()}


def _inverses_at(family, layout, u, params, fixed, objective, loglik_obs, log_prior):
    """:func:`_inverses` at ``u``, in the coordinates of ``objective`` and ``loglik_obs``."""
    n = loglik_obs(u).shape[0]
    h = hessian(objective, u)  # (p, p)
    observed = invert_information(h)
    if not bool(torch.isfinite(h).all()):
        # not flatness: autograd's second derivatives passed through a value out of range,
        # e.g. a Gamma(2, 1) prior on a rate of 1e-200 (1 / rate² = inf)
        warnings.warn(
            f"the {family.name} Hessian at the optimum is not finite in {u.dtype} arithmetic "
            "(a curvature of the log-likelihood"
            + (" or of the prior" if log_prior is not None else "")
            + " leaves its range); the standard errors are NaN. Rescale the data (e.g. by a "
            "power of ten)" + (" and the prior with them" if log_prior is not None else ""),
            RuntimeWarning,
            stacklevel=5,
        )
    elif bool(observed.unidentified.any()):
        names = [
            n_ for n_, b in zip(_u_names(layout), observed.unidentified.tolist(), strict=True) if b
        ]
        warnings.warn(
            f"the {family.name} Hessian is singular at the optimum: {names} not identified "
            "by the data; their standard errors are NaN",
            RuntimeWarning,
            stacklevel=5,
        )
    out = {"observed": observed}
    if log_prior is None:
        # forward mode costs p passes where reverse mode would cost n
        try:
            with warnings.catch_warnings():
                # torch's forward-mode set-up scripts its decompositions on first use and
                # warns that torch.jit.script is deprecated: torch's own business, not the user's
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
                scores = jacobian(loglik_obs, u, vectorize=True, strategy="forward-mode")  # (n, p)
        except (RuntimeError, NotImplementedError):
            scores = jacobian(loglik_obs, u)
        out["sandwich"] = sandwich_covariance(observed, scores.reshape(n, -1))
        if family.expected_information is not None:
            jac = jacobian(lambda v: layout.flat_natural(layout.to_natural(v)), u)  # (m, p)
            info = n * jac.T @ family.expected_information(params, fixed) @ jac
            out["expected"] = invert_information(info)
    return out


def _u_names(layout: ParameterLayout) -> list[str]:
    names = []
    for s in layout.slots:
        names += [s.name] if s.size == 1 else [f"{s.name}(free {i})" for i in range(s.size)]
    return names


def _fmt(params: dict, most: int = 6) -> str:
    """Parameters for a message, each cut to its first ``most`` values."""

    def one(v: torch.Tensor) -> str:
        flat = v.detach().reshape(-1)
        if flat.numel() <= most:
            return str(v.tolist())
        head = ", ".join(f"{x:.6g}" for x in flat[:most].tolist())
        return f"[{head}, ...] ({flat.numel()} values)"

    return "{" + ", ".join(f"{k}: {one(v)}" for k, v in params.items()) + "}"


def _steps_out_of_range(
    family: Family, params: dict, x: torch.Tensor, end: float, begin: float, more: str = ""
) -> DataError:
    """The error of a MAP fit whose steps left the dtype's range (``end`` and ``begin``: the
    negative log-posterior there and at the start): no edge where the posterior is unbounded,
    and not data too large, so what to try instead."""
    return DataError(
        f"the {family.name} MAP fit did not converge: its steps ran to {_fmt(params)}, where "
        f"the log-posterior is {-end:.4g} (at the start {-begin:.4g}){more}, out of "
        f"{x.dtype}'s range. This does not say that no MAP exists; pass init= near the mode "
        "you expect (with a prior far from the data, its parameters at the prior's mode), or "
        "rescale the data and the prior"
    )


def _overflow_hint(x: torch.Tensor) -> str:
    """Why moments of ``x`` may not be finite: values whose squares overflow the dtype."""
    biggest = float(x.detach().abs().max()) if x.numel() else 0.0
    if biggest > torch.finfo(x.dtype).max ** 0.5:
        return (
            f": the data (largest |value| {biggest:.3g}) are too large for {x.dtype} arithmetic "
            "(their squares overflow); rescale them (e.g. divide by a power of ten)"
        )
    return ""


def _far_from_one_hint(x: torch.Tensor) -> str:
    """For data of magnitudes beyond 1e±50, where a fit's curvatures (squares and fourth
    powers of the data's units) leave the dtype's range: what to do. Empty otherwise."""
    nonzero = x.detach()[x.detach() != 0].abs()
    if not nonzero.numel():
        return ""
    lo, hi = float(nonzero.min()), float(nonzero.max())
    if 1e-50 <= lo and hi <= 1e50:
        return ""
    return (
        f"; the data's magnitudes ({lo:.3g} to {hi:.3g}) are far from 1, where the fit's "
        f"curvatures leave {x.dtype} arithmetic: standardise the data (or rescale them by a "
        "power of ten)"
    )


def _check_finite_estimate(family: Family, params: dict, x: torch.Tensor) -> None:
    """A fit never carries a non-finite parameter silently (e.g. a Normal scale of inf from
    values near 1e300, whose squares overflow float64): that is a :class:`DataError`."""
    bad = [k for k, v in params.items() if not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(f"{k} = {params[k].tolist()}" for k in bad)
        raise DataError(
            f"the {family.name} fit overflowed: {shown} is not finite. The data are too large "
            f"(or too spread, or too close to a boundary of the support) for {x.dtype} "
            "arithmetic; rescale them (e.g. divide by a power of ten) and fit again"
            + (_overflow_hint(x) and f" (largest |value| {float(x.abs().max()):.3g})")
        )


@checked_call("fit_mle('gamma', data)")
def fit_mle(
    family,
    data,
    *,
    fixed: dict | None = None,
    init: dict | None = None,
    constraints: dict | None = None,
    method: str = "auto",
    cov_type: str = "observed",
    max_iter: int = 500,
    dtype=None,
    device=None,
) -> FitResult:
    """Maximum-likelihood fit of ``family`` to ``data``, with standard errors.

    ``family`` is a name (``"gamma"``, ``"poisson"``, ``"mvn"``, ...), a torch.distributions
    class, a ``Family``, or a callable ``log_density(x, **params) -> (n,)`` of your own (then
    ``init`` names the parameters with starting values and ``constraints`` their constraints).
    ``fixed`` holds known arguments (a Binomial's ``total_count``). ``method="auto"`` uses the
    closed-form MLE where the family has one (and no ``init`` is given) and optimises otherwise; ``"optimize"`` always
    optimises (from ``init`` or method-of-moments values). Computation is in float64 by default
    on ``device``.

    Returns a ``FitResult``: ``params``, ``std_errors()``, ``conf_int()``, ``cov_params()``
    (observed/expected/sandwich), ``log_likelihood``, ``aic``, ``bic``, ``summary()`` and
    ``transform(g)``.
    """
    fam, fixed, x, init = prepare_fit(family, data, fixed, init, constraints, dtype, device)
    return fit_family(fam, x, fixed, init=init, method=method, cov_type=cov_type, max_iter=max_iter)
