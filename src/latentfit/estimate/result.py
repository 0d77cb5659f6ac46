"""What a fit returns: estimates with their uncertainty, and a statsmodels-like summary table."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.autograd.functional import jacobian

from latentfit._gradient_cut import cut_message, unfollowed
from latentfit.errors import ParameterError, UnknownNameError
from latentfit.estimate.families import Family
from latentfit.estimate.inference import (
    InformationInverse,
    delta_method,
    interval_level,
    wald_interval,
    z_test,
)
from latentfit.estimate.parameters import ParameterLayout

__all__ = ["FitResult", "TransformedEstimate", "format_summary"]

COV_TYPES = ("observed", "expected", "sandwich")


@dataclass
class TransformedEstimate:
    """Estimates of derived quantities ``g(θ)`` with delta-method covariance."""

    names: list[str]
    estimates: torch.Tensor  # (m,)
    cov: torch.Tensor  # (m, m)
    title: str = "Transformed estimates"
    # (m,) where computed apart from cov (inference.delta_method): right even where cov's
    # diagonal, their squares, is out of float64's range (NaN there)
    se: torch.Tensor | None = field(default=None, repr=False)

    @property
    def std_errors(self) -> torch.Tensor:
        return self.cov.diagonal().sqrt() if self.se is None else self.se

    bse = std_errors

    def conf_int(self, level: float | None = None, *, alpha: float | None = None) -> torch.Tensor:
        """Wald intervals (m, 2): one row ``[lower, upper]`` per quantity, of coverage
        ``level`` (default 0.95) or ``1 - alpha`` (statsmodels' argument)."""
        level = interval_level(level, alpha)
        lo, hi = wald_interval(self.estimates, self.std_errors, level)
        return torch.stack([lo, hi], dim=-1)

    def summary(self, level: float = 0.95) -> str:
        return format_summary(self.title, [], self.names, self.estimates, self.std_errors, level)

    def __getitem__(self, name: str) -> float:
        """The estimate of the quantity ``name`` (one of ``names``)."""
        _check_name(self, name, self.names, "quantity", "quantities")
        return float(self.estimates[self.names.index(name)])


def _check_name(result, name, names, what: str = "parameter", whats: str = "parameters") -> None:
    """Refuse ``result[name]`` for a ``name`` not among ``names``, listing them (as the MCMC
    results do: ``latentfit.mcmc.result.check_name``) rather than a bare ``KeyError``."""
    if not (isinstance(name, str) and name in names):
        fixed = getattr(result, "fixed", None) or {}
        held = (
            f"; {name!r} is fixed at {fixed[name]!r} (result.fixed)"
            if isinstance(name, str) and name in fixed
            else ""
        )
        raise UnknownNameError(
            f"{type(result).__name__} has no {what} {name!r}; its {whats} are "
            f"{', '.join(map(repr, names))} (result[NAME] for one of them){held}"
        )


def _check_followed(flat, u: torch.Tensor, layout) -> None:
    """A ParameterError when one of ``g``'s values ``flat(u)`` (m,) changes with a parameter
    that its gradient does not follow (:func:`~latentfit._gradient_cut.unfollowed`): the
    delta method would take it as not depending on that parameter, and report too small a
    standard error (0 where it depends on nothing else)."""

    def value_and_jacobian(points):  # (k, p) -> (k, m), (k, m, p)
        values = torch.stack([flat(v).detach().to(u.dtype) for v in points])
        jac = torch.stack([jacobian(flat, v).reshape(values.shape[1], -1) for v in points])
        return values, jac.to(u.dtype)

    blocks = [(s.name, s.start, s.size) for s in layout.slots]
    name = unfollowed(value_and_jacobian, u.detach(), blocks)
    if name is not None:
        raise ParameterError(
            cut_message("g", name, "the delta method would take g as not depending on it")
        )


@dataclass
class FitResult:
    """A fitted family: ``params`` (natural, by name) and their asymptotic uncertainty.

    ``cov_type`` chooses which covariance ``cov``/``std_errors``/``conf_int``/``summary`` use
    by default: ``"observed"`` (inverse observed Fisher information, the autograd Hessian of the
    negative log-likelihood — of the negative log-posterior for MAP, the Laplace approximation),
    ``"expected"`` (inverse expected information ``(n I(θ̂))⁻¹``, where known in closed form) or
    ``"sandwich"`` (White's robust ``H⁻¹ B H⁻¹``, MLE only).
    """

    family: Family
    method: str  # "MLE" or "MAP"
    params: dict[str, torch.Tensor]
    layout: ParameterLayout
    u: torch.Tensor  # (p,) unconstrained optimum
    fixed: dict
    n_obs: int
    log_likelihood: float
    log_prior: float | None
    converged: bool
    n_iter: int
    solver: str
    inverses: dict[str, InformationInverse] = field(repr=False)
    cov_type: str = "observed"
    data: torch.Tensor | None = field(default=None, repr=False)  # what was fitted, for sampling
    log_prior_fn: Callable[[dict], torch.Tensor] | None = field(default=None, repr=False)

    # -- point estimates ---------------------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        """One name per reported coordinate: ``rate``, ``probs[1]``, ``covariance_matrix[1,0]``."""
        return self.layout.flat_names()

    @property
    def estimates(self) -> torch.Tensor:
        """The reported coordinates of ``params`` as one vector (m,)."""
        return self.layout.flat_natural(self.params)

    @property
    def n_params(self) -> int:
        """Free parameters (a simplex of k probabilities counts k - 1)."""
        return self.layout.n_free

    @property
    def distribution(self):
        """The fitted ``torch.distributions`` object."""
        if self.family.distribution is None:
            raise ParameterError(f"family {self.family.name!r} has no torch distribution")
        return self.family.distribution(self.params, self.fixed)

    # -- information criteria -----------------------------------------------------------------
    @property
    def aic(self) -> float:
        return 2 * self.n_params - 2 * self.log_likelihood

    @property
    def bic(self) -> float:
        return math.log(self.n_obs) * self.n_params - 2 * self.log_likelihood

    # -- uncertainty --------------------------------------------------------------------------
    def _natural(self, cov_type: str | None) -> TransformedEstimate:
        return self.transform(
            lambda **p: self.layout.flat_natural(p), names=self.param_names, cov_type=cov_type
        )

    def cov_params(self, cov_type: str | None = None) -> torch.Tensor:
        """Covariance (m, m) of ``estimates``: ``J Σᵤ Jᵀ`` with ``J`` the Jacobian of the
        transform from the unconstrained optimum to the natural parameters (NaN where an
        entry is out of float64's range)."""
        return self._natural(cov_type).cov

    @property
    def cov(self) -> torch.Tensor:
        return self.cov_params()

    def std_errors(self, cov_type: str | None = None) -> torch.Tensor:
        """Standard errors (m,) of ``estimates``: the square roots of ``cov_params``'s
        diagonal, computed so that they are right even where that diagonal is out of range
        (the variance of a variance of 1e-300 is 1e-602)."""
        return self._natural(cov_type).std_errors

    @property
    def bse(self) -> torch.Tensor:
        """Standard errors (m,) under the default ``cov_type``, as statsmodels names them."""
        return self.std_errors()

    def conf_int(
        self, level: float | None = None, cov_type: str | None = None, *, alpha=None
    ) -> torch.Tensor:
        """Wald intervals (m, 2) for ``estimates``: one row ``[lower, upper]`` each, of
        coverage ``level`` (default 0.95) or ``1 - alpha`` (statsmodels' argument)."""
        level = interval_level(level, alpha)
        lo, hi = wald_interval(self.estimates, self.std_errors(cov_type), level)
        return torch.stack([lo, hi], dim=-1)

    # -- statsmodels' names -------------------------------------------------------------------
    @property
    def llf(self) -> float:
        """The maximised log-likelihood, as statsmodels names it (``log_likelihood``)."""
        return self.log_likelihood

    @property
    def nobs(self) -> int:
        """The number of observations, as statsmodels names it (``n_obs``)."""
        return self.n_obs

    @property
    def df_model(self) -> int:
        """The number of free parameters, as statsmodels names it (``n_params``)."""
        return self.n_params

    @property
    def tvalues(self) -> torch.Tensor:
        """The Wald statistics θ̂ / se (m,) of H₀: θ = 0 (z, as statsmodels' MLE results name
        them ``tvalues``), under the default ``cov_type``."""
        return z_test(self.estimates, self.bse)[0]

    @property
    def pvalues(self) -> torch.Tensor:
        """Their two-sided normal p-values (m,): the summary's ``P>|z|`` column."""
        return z_test(self.estimates, self.bse)[1]

    def _inverse(self, cov_type: str | None) -> InformationInverse:
        cov_type = cov_type or self.cov_type
        if cov_type not in COV_TYPES:
            raise ParameterError(f"cov_type must be one of {COV_TYPES}, got {cov_type!r}")
        if cov_type not in self.inverses:
            why = (
                "the expected information of this family is not known in closed form"
                if cov_type == "expected"
                else "the sandwich covariance is defined for MLE fits only"
            )
            raise ParameterError(f"cov_type={cov_type!r} is not available: {why}")
        return self.inverses[cov_type]

    def __getitem__(self, name: str) -> torch.Tensor:
        """The estimate of the parameter ``name`` (``params[name]``), as the sampling results
        give their draws by name."""
        _check_name(self, name, tuple(self.params))
        return self.params[name]

    def transform(
        self,
        g: Callable[..., torch.Tensor | dict],
        names: list[str] | str | None = None,
        cov_type: str | None = None,
    ) -> TransformedEstimate:
        """The MLE of ``g(θ)`` (invariance) with its delta-method covariance.

        ``g(**params)`` returns a tensor (named by ``names``) or a dict of named tensors, e.g.
        ``fit.transform(lambda concentration, rate: concentration / rate, "mean")``.
        """
        if not callable(g):
            raise ParameterError(
                f"g must be a function of the parameters ({', '.join(self.params)}) returning "
                f"a tensor or a dict of tensors, got {type(g).__name__} {g!r:.60}; e.g. "
                f"fit.transform(lambda {', '.join(self.params)}: ..., 'name')"
            )

        def flat(u):
            out = g(**self.layout.to_natural(u))
            if isinstance(out, dict):
                return torch.cat([torch.as_tensor(v).reshape(-1) for v in out.values()])
            return torch.as_tensor(out).reshape(-1)

        inverse = self._inverse(cov_type)
        value = flat(self.u).detach()
        if not bool(torch.isfinite(self.u).all()):
            jac = torch.full(
                (value.numel(), self.u.numel()),
                float("nan"),
                dtype=self.u.dtype,
                device=self.u.device,
            )
        else:
            _check_followed(flat, self.u, self.layout)
            jac = jacobian(flat, self.u).reshape(value.numel(), self.u.numel())  # (m, p)
        cov, se = delta_method(jac, inverse)
        if names is None:
            sample = g(**self.params)
            names = (
                [
                    f"{k}[{i}]" if torch.as_tensor(v).numel() > 1 else k
                    for k, v in sample.items()
                    for i in range(torch.as_tensor(v).numel())
                ]
                if isinstance(sample, dict)
                else [f"g[{i}]" for i in range(value.numel())]
                if value.numel() > 1
                else ["g"]
            )
        elif isinstance(names, str):
            names = [names]
        if len(names) != value.numel():
            raise ParameterError(f"{len(names)} names given for {value.numel()} transformed values")
        title = f"{self.method} of g(θ), delta method"
        return TransformedEstimate(list(names), value, cov, title, se)

    # -- the full posterior ---------------------------------------------------------------------
    def sample_posterior(
        self,
        num_chains: int = 4,
        num_warmup: int = 1000,
        num_draws: int = 1000,
        *,
        generator=None,
        progress_bar: bool = True,
        **sampler_options,
    ):
        """Draws from the posterior of this MAP fit (its family, data and prior) by NUTS, the
        chains starting near the MAP: a ``latentfit.mcmc.MCMCResult`` (``summary()``,
        ``to_arviz()``). ``sampler_options`` go to ``latentfit.mcmc.SamplerConfig`` (``metric``,
        ``max_depth``, ``target_accept``, ``kernel``); ``max_work=`` caps the run's work as in
        ``latentfit.mcmc.sample`` (None: no limit)."""
        from latentfit.mcmc.sampler import sample_fit

        return sample_fit(
            self,
            num_chains=num_chains,
            num_warmup=num_warmup,
            num_draws=num_draws,
            generator=generator,
            progress_bar=progress_bar,
            **sampler_options,
        )

    # -- reporting ----------------------------------------------------------------------------
    def summary(self, level: float = 0.95, cov_type: str | None = None) -> str:
        """A table in the manner of statsmodels: fit statistics, then one row per coordinate."""
        cov_type = cov_type or self.cov_type
        info = [
            ("Family", self.family.name),
            ("Method", self.method + (" (closed form)" if self.solver == "closed form" else "")),
            ("Observations", str(self.n_obs)),
            ("Free parameters", str(self.n_params)),
            ("Log-likelihood", f"{self.log_likelihood:.6g}"),
        ]
        if self.method == "MAP":
            info.append(("Log-prior", f"{self.log_prior:.6g}"))
        else:
            info += [("AIC", f"{self.aic:.6g}"), ("BIC", f"{self.bic:.6g}")]
        label = "Laplace approx." if self.method == "MAP" and cov_type == "observed" else cov_type
        info += [("Covariance", label), ("Converged", "yes" if self.converged else "NO")]
        title = f"{self.method} results: {self.family.name}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            se = self.std_errors(cov_type)
        return format_summary(title, info, self.param_names, self.estimates, se, level)

    def __repr__(self) -> str:
        est = ", ".join(
            f"{n}={v:.4g}" for n, v in zip(self.param_names, self.estimates.tolist(), strict=True)
        )
        return f"FitResult({self.method} {self.family.name}: {est})"


def format_summary(title, info, names, estimates, std_errors, level=0.95) -> str:
    """Render the header key/value pairs and the coefficient table as fixed-width text."""
    lo, hi = wald_interval(estimates, std_errors, level)
    z, p = z_test(estimates, std_errors)
    width_name = max([len(n) for n in names] + [10])
    a = (1 - level) / 2
    head = (
        f"{'':<{width_name}} {'coef':>11} {'std err':>11} {'z':>9} {'P>|z|':>7} "
        f"{f'[{a:.3g}':>11} {f'{1 - a:.3g}]':>11}"
    )
    width = len(head)
    lines = [title.center(width), "=" * width]
    half = (len(info) + 1) // 2
    left, right = info[:half], info[half:]
    col = width // 2
    for i in range(half):
        k, v = left[i]
        text = f"{k + ':':<18}{v:>{col - 20}}  "
        if i < len(right):
            k2, v2 = right[i]
            text += f"{k2 + ':':<17}{v2:>{width - col - 17}}"
        lines.append(text.rstrip())
    if info:
        lines.append("=" * width)
    lines.append(head)
    lines.append("-" * width)
    rows = zip(
        names,
        estimates.tolist(),
        std_errors.tolist(),
        z.tolist(),
        p.tolist(),
        lo.tolist(),
        hi.tolist(),
        strict=True,
    )
    for n, e, s, zz, pp, l_, h_ in rows:
        lines.append(
            f"{n:<{width_name}} {_num(e):>11} {_num(s):>11} {_num(zz, 3):>9} "
            f"{_num(pp, 3, fixed=True):>7} {_num(l_):>11} {_num(h_):>11}"
        )
    lines.append("=" * width)
    return "\n".join(lines)


def _num(x: float, digits: int = 4, fixed: bool = False) -> str:
    if x != x:
        return "nan"
    if fixed:
        return f"{x:.{digits}f}"
    return f"{x:.{digits}g}" if abs(x) >= 1e5 or (x != 0 and abs(x) < 1e-3) else f"{x:.{digits}f}"
