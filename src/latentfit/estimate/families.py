"""The families ``fit_mle``/``fit_map`` know: torch.distributions classes with their parameters,
data support, starting values, closed-form MLEs and expected Fisher information.

Densities always come from ``torch.distributions``; a family only adds what estimation needs:
which arguments are estimated (``params``) and which are held fixed (``fixed``, e.g. a
Binomial's ``total_count``), the support the data must lie in, method-of-moments starting
values, the closed-form MLE where one exists, and the per-observation expected Fisher
information ``I(θ)`` (Lehmann & Casella, *Theory of Point Estimation*, §2.6) in the natural
coordinates where it is known in closed form.

A user-written log-density becomes a family with ``log_density_family``.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributions as D
from torch.distributions import constraints

from latentfit._memory import check_allocation
from latentfit.errors import DataError, ParameterError

__all__ = ["FAMILIES", "Family", "get_family", "log_density_family", "register_family"]

Params = dict[str, torch.Tensor]


class _OpenUnitInterval(constraints.Constraint):
    """(0, 1): Beta data at exactly 0 or 1 make the log-likelihood infinite."""

    def check(self, value):
        return (value > 0) & (value < 1)

    def __repr__(self):
        return "open interval (0, 1)"


class _OpenSimplex(constraints.Constraint):
    """Rows of positive entries summing to one (Dirichlet data; a zero entry has density 0/∞)."""

    event_dim = 1

    def check(self, value):
        return (value > 0).all(-1) & ((value.sum(-1) - 1).abs() < 1e-6)

    def __repr__(self):
        return "open simplex (positive entries summing to 1)"


class _MultinomialCounts(constraints.Constraint):
    """Rows of non-negative integer counts summing to exactly ``total_count`` (torch's
    ``constraints.multinomial`` accepts any sum up to it and fractional counts)."""

    event_dim = 1

    def __init__(self, total_count: int):
        self.total_count = total_count

    def check(self, value):
        whole = (value >= 0) & (value == value.round())
        return whole.all(-1) & (value.sum(-1) == self.total_count)

    def __repr__(self):
        return f"non-negative integer counts summing to {self.total_count}"


#: The largest fixed count (``total_count``, ``num_categories``): 2**53, the last integer that
#: float64 data hold exactly (a count of 1e300 cannot be compared with whole-number data).
MAX_COUNT = 2**53


def _whole(f: dict, name: str, minimum: int) -> int:
    """A fixed count (``total_count``, ``num_categories``) as an int in [``minimum``,
    :data:`MAX_COUNT`]."""
    v = f[name]
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    real = isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)
    # NaN and inf refused before int(v); an Integral is never converted to float (10**400)
    whole = real and (
        isinstance(v, numbers.Integral) or (math.isfinite(float(v)) and float(v).is_integer())
    )
    if not whole or v < minimum:
        raise ParameterError(f"fixed[{name!r}] must be an integer >= {minimum}, got {f[name]!r}")
    if v > MAX_COUNT:
        shown = repr(f[name]) if len(repr(f[name])) <= 30 else f"a {len(str(int(v)))}-digit integer"
        raise ParameterError(
            f"fixed[{name!r}] = {shown} is too large: a count must be at most 2**53 "
            f"({MAX_COUNT:,}), the largest whole number float64 data hold exactly; pass the "
            "count the data were drawn with"
        )
    return int(v)


@dataclass(frozen=True)
class Family:
    """What estimation needs to know about one family of distributions.

    ``log_prob(params, x, fixed) -> (n,)`` is the per-observation log-density; every other
    callable takes the validated data ``x`` ((n,) or (n, d)) and the fixed arguments.
    """

    name: str
    params: tuple[str, ...]
    constraints: dict
    log_prob: Callable[[Params, torch.Tensor, dict], torch.Tensor]
    event_dim: int | None = 0  # None: data are passed through as given
    support: Callable[[dict], constraints.Constraint] | None = None
    init: Callable[[torch.Tensor, dict], Params] | None = None
    closed_form: Callable[[torch.Tensor, dict], Params] | None = None
    expected_information: Callable[[Params, dict], torch.Tensor] | None = None
    distribution: Callable[[Params, dict], D.Distribution] | None = None
    required_fixed: tuple[str, ...] = ()
    discrete: bool = False
    finalize: Callable[[Params], Params] | None = None  # e.g. wrap an angle into (-π, π]
    aliases: tuple[str, ...] = field(default=())
    # The arguments ``fixed`` may hold (None: any, for a log-density of your own).
    fixed_names: tuple[str, ...] | None = None
    # Checks of the data beyond the support (raise DataError), e.g. a full-rank covariance.
    check: Callable[[torch.Tensor, dict], None] | None = None
    # Why the MLE does not exist for these data, and what to do, e.g. data that do not vary:
    # (reason, remedy) or None. fit_mle refuses such data; a MAP fit may still converge.
    mle_check: Callable[[torch.Tensor, dict], tuple[str, str] | None] | None = None
    # The fit in units of the data's spread: standardize(params, x) -> (the parameters for
    # the data divided by their spread, those data, {name: factor}), each unconstrained
    # coordinate of name being factor · its standardised value + a constant. The information
    # is computed there (mle._inverses): in the data's own units the Hessian of a Normal of
    # scale 1e-100 holds scale⁻⁴ = 1e400, and autograd's overflowed to NaN.
    standardize: Callable[[Params, torch.Tensor], tuple[Params, torch.Tensor, Params]] | None = None
    # A log-density of your own (log_density_family): the fit checks once that its gradient
    # follows its value (mle._check_followed); latentfit's own families need no such check.
    own: bool = False


def _torch_family(cls, params, **kwargs) -> Family:
    """A family whose density is ``cls(**params, **fixed).log_prob(x)``."""

    def build(p, fixed):
        return cls(**p, **fixed, validate_args=False)

    def log_prob(p, x, fixed):
        return build(p, fixed).log_prob(x)

    cons = {name: cls.arg_constraints[name] for name in params}
    cons.update(kwargs.pop("constraints", {}))
    # Other constructor arguments may be fixed, except the alternative parametrisations.
    names = inspect.signature(cls.__init__).parameters
    fixed_names = tuple(
        n
        for n in names
        if n not in (*params, "self", "validate_args", "probs", "logits", "covariance_matrix",
                     "precision_matrix", "scale_tril")
    )  # fmt: skip
    return Family(
        name=kwargs.pop("name", cls.__name__),
        params=tuple(params),
        constraints=cons,
        log_prob=log_prob,
        distribution=build,
        fixed_names=kwargs.pop("fixed_names", fixed_names),
        **kwargs,
    )


# -- starting values and closed forms (pure tensor functions of the data) -----------------------
def _mean_var(x):
    m = x.mean()
    return m, ((x - m) ** 2).mean()


def _normal_mle(x, fixed):
    m, v = _mean_var(x)
    return {"loc": m, "scale": v.sqrt()}


def _centre(loc, s):
    """Where to centre data of location ``loc`` and spread ``s`` (both (d,) or scalars): at
    ``loc`` where it lies further from 0 than a spread, else at 0. Data of 1e10 + N(0, 2²)
    over their spread are 5e9 + N(0, 1), whose deviations keep only 6 of float64's 16 digits:
    the gradient's rounding (1e-6 relative) stayed above gtol and the fit warned "did not
    converge". Centred, ``x - loc`` is exact. A location within a spread of 0 is not centred:
    a prior may pin it at 0 (to 1e-147 for data in units of 1e150), which ``loc + s v`` could
    not resolve below the rounding of ``loc``."""
    return torch.where(loc.abs() > s, loc, torch.zeros_like(loc))


def _normal_standardize(p, x):
    """Normal data less their centre (:func:`_centre`) over their scale: (loc - c) / scale
    and a scale of 1; the coordinates are loc (times the scale, shifted) and log scale
    (shifted)."""
    s = p["scale"]
    c = _centre(p["loc"], s)
    one = torch.ones_like(s)
    return {"loc": (p["loc"] - c) / s, "scale": one}, (x - c) / s, {"loc": s, "scale": one}


def _location_scale_standardize(p, x):
    """Data of a location-scale family less their centre (:func:`_centre`) over its scale:
    (loc - c) / scale and a scale of 1, other parameters (a StudentT's df) unchanged;
    log p(x | loc, scale) = log p((x - c) / s | (loc - c) / s, scale / s) − log s, so the fit
    there is the fit in the data's units."""
    s = p["scale"]
    c = _centre(p["loc"], s)
    one = torch.ones_like(s)
    out = {k: v for k, v in p.items() if k not in ("loc", "scale")}
    factors = {k: torch.ones_like(v) for k, v in out.items()}
    out.update(loc=(p["loc"] - c) / s, scale=one)
    factors.update(loc=s, scale=one)
    return out, (x - c) / s, factors


def _rate_standardize(p, x):
    """Data of a rate family (Exponential, Gamma) times the rate r: a rate of 1, other
    parameters unchanged; log p(x | r) = log p(r x | 1) + log r, so the fit there is the fit
    in the data's units, and the log-rate coordinate is shifted by log r. In the data's units
    autograd's Hessian passes through 1 / r² (1e320 for data in units of 1e160: inf, and a
    NaN information)."""
    r = p["rate"]
    out = {**p, "rate": torch.ones_like(r)}
    return out, x * r, {k: torch.ones_like(v) for k, v in p.items()}


def _weibull_standardize(p, x):
    """Weibull data over their scale: a scale of 1, the concentration unchanged."""
    s = p["scale"]
    out = {**p, "scale": torch.ones_like(s)}
    return out, x / s, {k: torch.ones_like(v) for k, v in p.items()}


def _halfnormal_standardize(p, x):
    s = p["scale"]
    return {"scale": torch.ones_like(s)}, x / s, {"scale": torch.ones_like(s)}


def _lognormal_mle(x, fixed):
    return _normal_mle(x.log(), fixed)


def _gamma_init(x, fixed):
    # moments of x over its mean: m² and v underflow (NaN) for data in units of 1e-160
    m = x.mean()
    _, v = _mean_var(x / m)
    return {"concentration": 1 / v, "rate": 1 / (v * m)}


def _beta_init(x, fixed):
    m, v = _mean_var(x)
    common = m * (1 - m) / v - 1
    return {"concentration1": m * common, "concentration0": (1 - m) * common}


def _weibull_init(x, fixed):
    # sd(log X) = π / (k √6) and E[log X] = log λ − γ/k for Weibull(λ, k)
    lx = x.log()
    m, v = _mean_var(lx)
    k = math.pi / (math.sqrt(6.0) * v.sqrt())
    return {"scale": torch.exp(m + 0.5772156649015329 / k), "concentration": k}


def _location_scale_init(x, fixed):
    med = x.median()
    q = torch.quantile(x, torch.tensor([0.25, 0.75], dtype=x.dtype, device=x.device))
    return {"loc": med, "scale": (q[1] - q[0]) / 2}


def _studentt_init(x, fixed):
    p = _location_scale_init(x, fixed)
    return {"df": torch.full_like(p["loc"], 5.0), "loc": p["loc"], "scale": p["scale"] / 0.727}


def _gumbel_init(x, fixed):
    m, v = _mean_var(x)
    scale = v.sqrt() * math.sqrt(6.0) / math.pi
    return {"loc": m - 0.5772156649015329 * scale, "scale": scale}


def _vonmises_init(x, fixed):
    c, s = x.cos().mean(), x.sin().mean()
    r = torch.clamp((c**2 + s**2).sqrt(), max=0.99)
    return {"loc": torch.atan2(s, c), "concentration": r * (2 - r**2) / (1 - r**2)}


def _vonmises_finalize(p):
    loc = torch.remainder(p["loc"] + math.pi, 2 * math.pi) - math.pi
    return {**p, "loc": loc}


def _negbin_init(x, fixed):
    m, v = _mean_var(x)
    out = {}
    if "total_count" not in fixed:
        # torch's NegativeBinomial: mean = r p / (1 - p), var = mean / (1 - p)
        r = m**2 / torch.clamp(v - m, min=1e-3 * m)
        out["total_count"] = r
    r = fixed.get("total_count", out.get("total_count"))
    out["probs"] = m / (m + r)
    return out


_VARY = "Fit data that vary, or add a prior on it (fit_map; --prior on the command line)"


def _needs_spread(family: str, param: str, limit: str, zero_only: bool = False):
    """An ``mle_check``: data that are all one value (all 0 when ``zero_only``) have no MLE."""

    def check(x, fixed):
        if param in fixed or x.shape[0] == 0:
            return None
        first = x[0]
        if not bool((x == first).all()) or (zero_only and not bool((first == 0).all())):
            return None
        value = ", ".join(f"{float(v):g}" for v in first.reshape(-1)[:6])
        return (
            f"every row of data is the same ({value}): the {family} MLE does not exist "
            f"({param} -> {limit}, where the likelihood grows without bound)",
            _VARY,
        )

    return check


def _vonmises_check(x, fixed):
    """All angles the same on the circle (mean resultant length 1): concentration -> ∞."""
    if "concentration" in fixed or x.shape[0] == 0:
        return None
    r = float(torch.complex(x.cos().mean(), x.sin().mean()).abs())
    if 1 - r > 100 * torch.finfo(x.dtype).eps:
        return None
    return (
        f"every angle of data is the same on the circle ({float(x[0]):g} mod 2π): the VonMises "
        "MLE does not exist (concentration -> ∞, where the likelihood grows without bound)",
        _VARY,
    )


def _negbin_check(x, fixed):
    """Counts whose variance is at most their mean: total_count -> ∞ (the Poisson limit)."""
    if x.shape[0] == 0:
        return None
    m, v = _mean_var(x)
    if float(v) > float(m):
        return None
    return (
        f"the counts are not overdispersed (variance {float(v):.4g} <= mean {float(m):.4g}): "
        "the NegativeBinomial MLE does not exist (total_count -> ∞: the likelihood rises "
        "toward the Poisson's)",
        "Fit the Poisson family, which is that limit",
    )


def _dirichlet_init(x, fixed):
    m = x.mean(0)  # (k,)
    m2 = (x[:, 0] ** 2).mean()
    a0 = (m[0] - m2) / (m2 - m[0] ** 2)
    return {"concentration": a0 * m}


def categorical_size(x, fixed) -> int:
    """The number of categories of a Categorical fit: ``fixed["num_categories"]``, else the
    largest code plus one when the codes are dense — at most max(n, 1024) categories for n
    observations, so that a stray large code cannot ask for a huge probability vector (the
    vector is then refused with a DataError that says to pass num_categories)."""
    if "num_categories" in fixed:
        return _whole(fixed, "num_categories", 1)
    top = int(x.max().item())
    limit = max(x.shape[0], 1024)
    if top + 1 > limit:
        i = int(x.argmax())
        raise DataError(
            f"data[{i}] = {top} is a category code far beyond the {x.shape[0]} observations: "
            f"the codes are not dense (0..{top} would make {top + 1} categories). Recode the "
            "categories as 0..K-1 (numpy.unique(data, return_inverse=True)) or pass "
            "fixed={'num_categories': K}"
        )
    return top + 1


def _categorical_mle(x, fixed):
    k = categorical_size(x, fixed)
    # the counts, the probabilities and their gradient: refused before bincount allocates
    check_allocation(
        3 * k * x.element_size(),
        f"a Categorical over {k:,} categories",
        device=x.device,
        hint="pass the number of categories the data have as fixed={'num_categories': K}",
    )
    counts = torch.bincount(x.long(), minlength=k).to(x.dtype)  # (k,)
    return {"probs": counts / x.shape[0]}


def _mvn_check(x, fixed):
    """The MLE covariance is singular when n <= d or a column is constant or collinear."""
    n, d = x.shape
    if n <= d:
        raise DataError(
            f"a {d}-dimensional MultivariateNormal needs more observations than dimensions; "
            f"data has {n} row(s). Add rows or reduce the columns"
        )
    spread = x.max(0).values - x.min(0).values  # (d,)
    if bool((spread == 0).any()):
        j = int((spread == 0).nonzero()[0])
        raise DataError(
            f"column {j} of data is constant ({x[0, j].item():g}): its variance is 0 and the "
            "MultivariateNormal MLE covariance is singular; drop the column"
        )
    small = spread * spread < 1e6 * torch.finfo(x.dtype).tiny  # (d,) squares lose digits
    if bool(small.any()):  # found by the property tests: rows 7e-301, 9e-302 -> LinAlgError
        j = int(small.nonzero()[0])
        raise DataError(
            f"column {j} of data spans only {float(spread[j]):.3g}: its squared deviations "
            f"underflow {x.dtype} arithmetic and the MultivariateNormal covariance would be "
            f"singular; rescale the data (e.g. multiply by 1e{-math.floor(math.log10(float(spread[j])))}) "
            "and fit again"
        )
    cov = _mvn_mle(x, fixed)["covariance_matrix"]
    if not bool(torch.isfinite(cov).all()):  # squares of values near 1e300 overflow
        j = int((~torch.isfinite(cov)).nonzero()[0, 0])  # a row of (d, d) with an overflow
        raise DataError(
            f"the MultivariateNormal covariance of data overflows {x.dtype} arithmetic "
            f"(column {j}: largest |value| {float(x[:, j].abs().max()):.3g}); rescale the "
            "data (e.g. divide by a power of ten) and fit again"
        )
    scale = cov.diagonal().sqrt()
    corr = cov / (scale[:, None] * scale[None, :])
    eig = torch.linalg.eigvalsh(corr)
    if float(eig.min()) <= d * torch.finfo(x.dtype).eps * 10:
        raise DataError(
            "the columns of data are linearly dependent (a column is a combination of the "
            "others): the MultivariateNormal MLE covariance is singular; drop the redundant "
            "column(s)"
        )


def _mvn_mle(x, fixed):
    m = x.mean(0)  # (d,)
    r = x - m  # (n, d)
    return {"loc": m, "covariance_matrix": r.T @ r / x.shape[0]}


def _mvn_standardize(p, x):
    """MVN data with each column less its centre c (:func:`_centre`) over its standard
    deviation s: (loc - c) / s and the correlation matrix D⁻¹ Σ D⁻¹ (D = diag s). The
    Cholesky factor L = D L' scales row i by sᵢ, so an entry below the diagonal is sᵢ times
    its standardised value and a log-diagonal one is shifted by log sᵢ."""
    cov = p["covariance_matrix"]  # (d, d)
    s = cov.diagonal().sqrt()  # (d,)
    c = _centre(p["loc"], s)  # (d,)
    d = s.shape[0]
    corr = cov / s[:, None] / s[None, :]  # (d, d); s sᵀ would overflow for s of 1e160
    rows, cols = torch.tril_indices(d, d, device=s.device)
    tril = torch.where(rows == cols, torch.ones_like(s[rows]), s[rows])  # (d(d+1)/2,)
    return (
        {"loc": (p["loc"] - c) / s, "covariance_matrix": corr},
        (x - c) / s,
        {"loc": s, "covariance_matrix": tril},
    )


# -- expected Fisher information per observation, natural coordinates --------------------------
def _fisher_normal(p, fixed):
    s2 = p["scale"] ** 2
    return torch.diag(torch.stack([1 / s2, 2 / s2]))


def _fisher_gamma(p, fixed):
    a, b = p["concentration"], p["rate"]
    return torch.stack(
        [torch.stack([torch.special.polygamma(1, a), -1 / b]), torch.stack([-1 / b, a / b**2])]
    )


def _fisher_beta(p, fixed):
    a, b = p["concentration1"], p["concentration0"]
    t = torch.special.polygamma(1, a + b)
    return torch.stack(
        [
            torch.stack([torch.special.polygamma(1, a) - t, -t]),
            torch.stack([-t, torch.special.polygamma(1, b) - t]),
        ]
    )


def _fisher_vonmises(p, fixed):
    k = p["concentration"]
    a = torch.special.i1e(k) / torch.special.i0e(k)  # A(κ) = I1(κ)/I0(κ)
    zero = torch.zeros_like(k)
    return torch.stack([torch.stack([k * a, zero]), torch.stack([zero, 1 - a / k - a**2])])


def _one(v):
    return v.reshape(1, 1)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make ``family`` available to ``fit_mle``/``fit_map`` under its name and aliases."""
    for key in (family.name, *family.aliases):
        FAMILIES[key.lower().replace("-", "").replace("_", "")] = family
    return family


_positive = lambda fixed: constraints.positive
_nonneg = lambda fixed: constraints.nonnegative
_real = lambda fixed: constraints.real
_counts = lambda fixed: constraints.nonnegative_integer

for _fam in [
    _torch_family(
        D.Normal,
        ["loc", "scale"],
        support=_real,
        init=_normal_mle,
        closed_form=_normal_mle,
        expected_information=_fisher_normal,
        mle_check=_needs_spread("Normal", "scale", "0"),
        standardize=_normal_standardize,
        aliases=("gaussian",),
    ),
    _torch_family(
        D.LogNormal,
        ["loc", "scale"],
        support=_positive,
        init=_lognormal_mle,
        closed_form=_lognormal_mle,
        expected_information=_fisher_normal,
        mle_check=_needs_spread("LogNormal", "scale", "0"),
    ),
    _torch_family(
        D.Gamma,
        ["concentration", "rate"],
        support=_positive,
        init=_gamma_init,
        expected_information=_fisher_gamma,
        mle_check=_needs_spread("Gamma", "concentration", "∞"),
        standardize=_rate_standardize,
    ),
    _torch_family(
        D.Beta,
        ["concentration1", "concentration0"],
        support=lambda f: _OpenUnitInterval(),
        init=_beta_init,
        expected_information=_fisher_beta,
        mle_check=_needs_spread("Beta", "concentration1 and concentration0", "∞"),
    ),
    _torch_family(
        D.Exponential,
        ["rate"],
        support=_nonneg,
        init=lambda x, f: {"rate": 1 / x.mean()},
        closed_form=lambda x, f: {"rate": 1 / x.mean()},
        mle_check=_needs_spread("Exponential", "rate", "∞", zero_only=True),
        expected_information=lambda p, f: _one(1 / p["rate"] ** 2),
        standardize=_rate_standardize,
    ),
    _torch_family(
        D.Weibull,
        ["scale", "concentration"],
        support=_positive,
        init=_weibull_init,
        mle_check=_needs_spread("Weibull", "concentration", "∞"),
        standardize=_weibull_standardize,
    ),
    _torch_family(
        D.StudentT,
        ["df", "loc", "scale"],
        support=_real,
        init=_studentt_init,
        mle_check=_needs_spread("StudentT", "scale", "0"),
        standardize=_location_scale_standardize,
        aliases=("t", "student"),
    ),
    _torch_family(
        D.Cauchy,
        ["loc", "scale"],
        support=_real,
        init=_location_scale_init,
        mle_check=_needs_spread("Cauchy", "scale", "0"),
        standardize=_location_scale_standardize,
    ),
    _torch_family(
        D.Gumbel,
        ["loc", "scale"],
        support=_real,
        init=_gumbel_init,
        mle_check=_needs_spread("Gumbel", "scale", "0"),
        standardize=_location_scale_standardize,
    ),
    _torch_family(
        D.HalfNormal,
        ["scale"],
        support=_nonneg,
        init=lambda x, f: {"scale": (x**2).mean().sqrt()},
        closed_form=lambda x, f: {"scale": (x**2).mean().sqrt()},
        expected_information=lambda p, f: _one(2 / p["scale"] ** 2),
        mle_check=_needs_spread("HalfNormal", "scale", "0", zero_only=True),
        standardize=_halfnormal_standardize,
    ),
    _torch_family(
        D.VonMises,
        ["loc", "concentration"],
        support=_real,
        init=_vonmises_init,
        expected_information=_fisher_vonmises,
        finalize=_vonmises_finalize,
        mle_check=_vonmises_check,
    ),
    _torch_family(
        D.Poisson,
        ["rate"],
        support=_counts,
        discrete=True,
        init=lambda x, f: {"rate": x.mean()},
        closed_form=lambda x, f: {"rate": x.mean()},
        expected_information=lambda p, f: _one(1 / p["rate"]),
    ),
    _torch_family(
        D.Bernoulli,
        ["probs"],
        support=lambda f: constraints.boolean,
        discrete=True,
        constraints={"probs": constraints.unit_interval},
        init=lambda x, f: {"probs": x.mean()},
        closed_form=lambda x, f: {"probs": x.mean()},
        expected_information=lambda p, f: _one(1 / (p["probs"] * (1 - p["probs"]))),
    ),
    _torch_family(
        D.Binomial,
        ["probs"],
        support=lambda f: constraints.integer_interval(0, _whole(f, "total_count", 1)),
        discrete=True,
        required_fixed=("total_count",),
        constraints={"probs": constraints.unit_interval},
        init=lambda x, f: {"probs": x.mean() / f["total_count"]},
        closed_form=lambda x, f: {"probs": x.mean() / f["total_count"]},
        expected_information=lambda p, f: _one(f["total_count"] / (p["probs"] * (1 - p["probs"]))),
    ),
    _torch_family(
        D.NegativeBinomial,
        ["total_count", "probs"],
        support=_counts,
        discrete=True,
        constraints={"total_count": constraints.positive, "probs": constraints.unit_interval},
        init=_negbin_init,
        mle_check=_negbin_check,
        aliases=("negbin", "nb"),
    ),
    _torch_family(
        D.Geometric,
        ["probs"],
        support=_counts,
        discrete=True,
        constraints={"probs": constraints.unit_interval},
        init=lambda x, f: {"probs": 1 / (1 + x.mean())},
        closed_form=lambda x, f: {"probs": 1 / (1 + x.mean())},
        expected_information=lambda p, f: _one(1 / (p["probs"] ** 2 * (1 - p["probs"]))),
    ),
    Family(
        name="Categorical",
        params=("probs",),
        constraints={"probs": constraints.simplex},
        log_prob=lambda p, x, f: D.Categorical(probs=p["probs"], validate_args=False).log_prob(
            x.long()
        ),
        distribution=lambda p, f: D.Categorical(probs=p["probs"]),
        support=lambda f: (
            constraints.integer_interval(0, _whole(f, "num_categories", 1) - 1)
            if "num_categories" in f
            else constraints.nonnegative_integer
        ),
        init=_categorical_mle,
        closed_form=_categorical_mle,
        discrete=True,
        fixed_names=("num_categories",),
    ),
    _torch_family(
        D.Multinomial,
        ["probs"],
        event_dim=1,
        discrete=True,
        required_fixed=("total_count",),
        constraints={"probs": constraints.simplex},
        support=lambda f: _MultinomialCounts(_whole(f, "total_count", 1)),
        init=lambda x, f: {"probs": x.sum(0) / x.sum()},
        closed_form=lambda x, f: {"probs": x.sum(0) / x.sum()},
    ),
    _torch_family(
        D.Dirichlet,
        ["concentration"],
        event_dim=1,
        support=lambda f: _OpenSimplex(),
        init=_dirichlet_init,
        mle_check=_needs_spread("Dirichlet", "concentration", "∞"),
    ),
    _torch_family(
        D.MultivariateNormal,
        ["loc", "covariance_matrix"],
        event_dim=1,
        support=lambda f: constraints.real_vector,
        init=_mvn_mle,
        closed_form=_mvn_mle,
        check=_mvn_check,
        standardize=_mvn_standardize,
        aliases=("mvn", "multivariategaussian"),
    ),
]:
    register_family(_fam)


def get_family(family) -> Family:
    """A ``Family`` from a name (``"gamma"``, ``"mvn"``), a torch.distributions class or a Family."""
    if isinstance(family, Family):
        return family
    if isinstance(family, type) and issubclass(family, D.Distribution):
        key = family.__name__
    elif isinstance(family, str):
        key = family
    else:
        raise ParameterError(
            f"family must be a name, a torch.distributions class or a Family, got {family!r}; "
            "for a log-density of your own use log_density_family(fn, init=...)"
        )
    found = FAMILIES.get(key.lower().replace("-", "").replace("_", ""))
    if found is None:
        names = sorted({f.name for f in FAMILIES.values()})
        raise ParameterError(f"unknown family {family!r}; known families: {', '.join(names)}")
    return found


def log_density_family(
    log_density: Callable[..., torch.Tensor],
    init: dict,
    constraints_: dict | None = None,
    *,
    name: str = "custom",
    support: constraints.Constraint | None = None,
    event_dim: int | None = None,
) -> Family:
    """A family from a log-density of your own: ``log_density(x, **params) -> (n,)``.

    ``init`` names every parameter and gives its starting value (its shape sets the
    parameter's shape); ``constraints_`` maps names to ``torch.distributions.constraints``
    (``positive``, ``unit_interval``, ``simplex``, ...; ``real`` when missing).
    """
    if not init:
        raise ParameterError("init must name every parameter with a starting value")
    starts = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in init.items()}
    unknown = set(constraints_ or {}) - set(starts)
    if unknown:
        raise ParameterError(f"constraints name parameters {sorted(unknown)} that init does not")

    def log_prob(p, x, fixed):
        out = log_density(x, **p, **fixed)
        n = x.shape[0]
        if out.shape != (n,):
            raise ParameterError(
                f"the log-density must return one value per observation, shape ({n},); "
                f"got shape {tuple(out.shape)}"
            )
        return out

    return Family(
        name=name,
        params=tuple(starts),
        constraints=dict(constraints_ or {}),
        log_prob=log_prob,
        event_dim=event_dim,
        support=None if support is None else (lambda f: support),
        init=lambda x, f: {k: v.to(dtype=x.dtype, device=x.device) for k, v in starts.items()},
        own=True,
    )
