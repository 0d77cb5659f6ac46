"""MixtureModel: a finite mixture over ``torch.distributions`` families, mixed families included.

Every component is a product of independent coordinates of one family (or a full-covariance
multivariate normal); the densities come from ``torch.distributions`` and the M-step is the
family's weighted maximum-likelihood estimate from additive statistics Σ_n r_nk T(x_n)
(McLachlan & Peel 2000, §2.8). Components may belong to different families, e.g. a gamma and a
log-normal component for positive skewed data: ``MixtureModel(["gamma", "lognormal"])``.

Families: ``normal`` (diagonal), ``mvn`` (full covariance; optional Normal–Inverse-Wishart
prior), ``poisson``, ``bernoulli``, ``exponential``, ``gamma`` (shape by Newton's method on
Minka's 2002 equation), ``lognormal``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import ClassVar

import numpy as np
import torch
from torch.distributions import (
    Bernoulli,
    Distribution,
    Exponential,
    Gamma,
    Independent,
    LogNormal,
    MultivariateNormal,
    Normal,
    Poisson,
)

from latentfit._validation import check_non_negative, check_positive_int, is_finite_above
from latentfit.em.edited import snapshot, warm
from latentfit.em.flat_columns import warn_constant_columns, warn_dependent_columns
from latentfit.em.gaussian import (
    DegenerateComponentError,
    check_overflow,
    check_variance_floor,
    component_mass,
    degenerate_components,
    far_components,
    weighted_mean,
)
from latentfit.em.mixture.base import (
    BaseMixture,
    first_offending,
    weight_overflow,
    weight_overflow_message,
)
from latentfit.em.mixture.discrete import zero_bernoulli_cells, zero_count_cells
from latentfit.em.mixture.priors import NormalInverseWishartPrior
from latentfit.errors import DataError, ModelFileError, ParameterError
from latentfit.io import serializable

__all__ = ["FAMILIES", "MixtureFamily", "MixtureModel", "gamma_mle"]


def gamma_mle(S0, S1, Slog, n_newton: int = 20):
    """Weighted MLE of a gamma (shape a, rate b) per coordinate from Σ r, Σ r x, Σ r log x.

    Solves log a − ψ(a) = s with s = log x̄ − mean(log x) by Newton's method from Minka's (2002)
    closed-form start; then b = a / x̄.
    """
    mean = S1 / S0
    s = (mean.log() - Slog / S0).clamp_min(1e-12)
    a = (3 - s + ((s - 3).square() + 24 * s).sqrt()) / (12 * s)
    for _ in range(n_newton):
        g = a.log() - torch.digamma(a) - s
        a = (a - g / (1 / a - torch.polygamma(1, a))).clamp_min(1e-12)
    return a, a / mean


class MixtureFamily:
    """One component family: additive statistics, weighted MLE and a torch Distribution."""

    name = ""

    def check(self, X: torch.Tensor) -> torch.Tensor | None:
        """Mask of entries outside the support (None when every real number is allowed)."""
        return None

    support = "real numbers"
    #: free parameters per feature (the families of independent coordinates)
    parameters_per_feature = 1

    def stats(self, X: torch.Tensor, r: torch.Tensor) -> dict:
        """The weighted statistics (additive over chunks); by default the total weight and the
        first moment, all that the one-parameter families' MLE needs."""
        return {"s0": r.sum(), "s1": r @ X}

    def mle(self, st: dict, model) -> dict:
        raise NotImplementedError

    def dist(self, p: dict) -> Distribution:
        raise NotImplementedError

    def zero_cells(self, p: dict, X: torch.Tensor) -> torch.Tensor | None:
        """(n, d) True where x_nj is an outcome of probability exactly 0 under ``p``, which
        ``dist`` scores with log 0 clamped (the discrete families); None for the others."""
        return None

    def n_parameters(self, d: int) -> int:
        return self.parameters_per_feature * d


def _moments(X, r):
    return {"s0": r.sum(), "s1": r @ X, "s2": r @ X.square()}


class _Normal(MixtureFamily):
    name = "normal"
    parameters_per_feature = 2
    of = ""  # what the variance is of, in messages

    def stats(self, X, r):
        return _moments(X, r)

    def mle(self, st, model):
        s0 = st["s0"].clamp_min(torch.finfo(st["s0"].dtype).tiny)  # an empty component: 0, not NaN
        mean = st["s1"] / s0
        raw = st["s2"] / s0
        var = raw - mean.square()
        # below the rounding of the difference it is zero (a collapsed coordinate), never noise
        var = torch.where(var > 100 * torch.finfo(var.dtype).eps * raw, var, 0.0)
        var = var + model.reg_covar
        if bool((var <= 0).any()):
            j = int((var <= 0).nonzero()[0, 0])
            raise DegenerateComponentError(
                f"a {self.name} component has a zero variance{self.of} in column {j} (it sits "
                "on identical values) and reg_covar is 0; set reg_covar > 0, use fewer "
                "components or jitter tied values"
            )
        return {"loc": mean, "scale": var.sqrt()}

    def dist(self, p):
        return Independent(Normal(p["loc"], p["scale"]), 1)


class _MVN(MixtureFamily):
    name = "mvn"

    def stats(self, X, r):
        return {"s0": r.sum(), "s1": r @ X, "s2": (X * r.unsqueeze(1)).T @ X}

    def mle(self, st, model):
        d = st["s1"].shape[0]
        eye = torch.eye(d, dtype=st["s1"].dtype, device=st["s1"].device)
        prior = model._niw
        if prior is not None:
            mean, cov = prior.map_gaussian(st["s0"][None], st["s1"][None], st["s2"][None])
            mean, cov = mean[0], cov[0]
        else:
            s0 = st["s0"].clamp_min(torch.finfo(st["s0"].dtype).tiny)  # empty: 0, not NaN
            mean = st["s1"] / s0
            cov = st["s2"] / s0 - torch.outer(mean, mean)
            cov = 0.5 * (cov + cov.T)
        L, info = torch.linalg.cholesky_ex(cov + model.reg_covar * eye)
        if int(info) != 0:
            raise DegenerateComponentError(
                "an mvn component's covariance is not positive definite: it collapsed onto "
                "too few distinct points (a singleton, duplicates or a constant column). Try "
                "a larger reg_covar, fewer components, or removing constant/duplicated columns"
            )
        return {"loc": mean, "scale_tril": L}

    def dist(self, p):
        return MultivariateNormal(p["loc"], scale_tril=p["scale_tril"])

    def n_parameters(self, d):
        return d + d * (d + 1) // 2


class _Poisson(MixtureFamily):
    name = "poisson"
    support = "non-negative integers"

    def check(self, X):
        return (X < 0) | (X != X.round())

    def mle(self, st, model):
        return {"rate": st["s1"] / st["s0"]}  # 0 for a column of zeros: see zero_cells

    def dist(self, p):
        # log 0 clamped, so that 0 · log 0 = 0 and a count there is finite: see zero_cells
        return Independent(Poisson(p["rate"].clamp_min(torch.finfo(p["rate"].dtype).tiny)), 1)

    def zero_cells(self, p, X):
        rate = p["rate"]
        return zero_count_cells(X, rate.unsqueeze(0))[:, 0] if bool((rate == 0).any()) else None


class _Bernoulli(MixtureFamily):
    name = "bernoulli"
    support = "0 or 1"

    def check(self, X):
        return (X != 0) & (X != 1)

    def mle(self, st, model):
        # 0 or 1 for a constant column (see zero_cells); the two sums may round apart by an ulp
        return {"probs": (st["s1"] / st["s0"]).clamp(0, 1)}

    def dist(self, p):
        # torch clamps a mean of 0 or 1 a hair inside (0, 1), so that the logit is finite
        return Independent(Bernoulli(probs=p["probs"]), 1)

    def zero_cells(self, p, X):
        mu = p["probs"]
        if not bool(((mu == 0) | (mu == 1)).any()):
            return None
        return zero_bernoulli_cells(X, mu.unsqueeze(0))[:, 0]


class _Exponential(MixtureFamily):
    name = "exponential"
    support = "non-negative numbers"

    def check(self, X):
        return X < 0

    def mle(self, st, model):
        # A column whose rows in the component are all 0 has the rate MLE 1 / 0: its
        # density there is unbounded, as a normal's on identical values. Clamping the mean
        # gave rates of 1e308 or inf, met only as "non-finite c0.rate" with no column named.
        zero = (st["s1"] <= 0) & (st["s0"] > 0)
        if bool(zero.any()):
            j = int(zero.nonzero()[0, 0])
            raise DegenerateComponentError(
                f"an exponential component's rows are all 0 in column {j}, so its rate's "
                "maximum-likelihood estimate is infinite (the density at 0 is unbounded). Drop "
                "or shift that column, or use fewer components"
            )
        return {"rate": st["s0"] / st["s1"].clamp_min(torch.finfo(st["s1"].dtype).tiny)}

    def dist(self, p):
        return Independent(Exponential(p["rate"]), 1)


class _Positive(MixtureFamily):
    """The two-parameter families on the positive numbers (gamma, log-normal)."""

    support = "positive numbers"
    parameters_per_feature = 2

    def check(self, X):
        return X <= 0


class _Gamma(_Positive):
    name = "gamma"

    def stats(self, X, r):
        return {"s0": r.sum(), "s1": r @ X, "slog": r @ X.log()}

    def mle(self, st, model):
        # On rows all equal in a column, log x̄ − mean(log x) is 0 (to its rounding) and the
        # shape's MLE infinite: a point mass. gamma_mle's clamp of that gap gave a shape of
        # 5e11 and an unbounded score, silently.
        mean_log = st["slog"] / st["s0"]
        gap = (st["s1"] / st["s0"]).log() - mean_log
        flat = gap <= 64 * torch.finfo(gap.dtype).eps * (1 + mean_log.abs())
        if bool(flat.any()):
            j = int(flat.nonzero()[0, 0])
            raise DegenerateComponentError(
                f"a gamma component's rows are all equal in column {j} (to the dtype's "
                "rounding), so its shape's maximum-likelihood estimate is infinite (a point "
                "mass). Drop that column or jitter its tied values, fit it with family "
                "'lognormal' (reg_covar bounds its variance), use fewer components or another "
                "random_state, or dtype='float64' if the values do differ"
            )
        a, b = gamma_mle(st["s0"], st["s1"], st["slog"])
        return {"concentration": a, "rate": b}

    def dist(self, p):
        return Independent(Gamma(p["concentration"], p["rate"]), 1)


class _LogNormal(_Positive):
    name = "lognormal"
    of = " of log x"

    def stats(self, X, r):
        return _moments(X.log(), r)

    def mle(self, st, model):
        p = _Normal.mle(self, st, model)
        return {"loc": p["loc"], "scale": p["scale"]}

    def dist(self, p):
        return Independent(LogNormal(p["loc"], p["scale"]), 1)


FAMILIES: dict[str, MixtureFamily] = {
    f.name: f
    for f in (_Normal(), _MVN(), _Poisson(), _Bernoulli(), _Exponential(), _Gamma(), _LogNormal())
}
_GAUSSIAN = {"normal", "mvn"}  # families whose statistics are centred on the data mean
_FLOORED = _GAUSSIAN | {"lognormal"}  # families whose variances reg_covar keeps off zero


@serializable
class MixtureModel(BaseMixture):
    """Finite mixture whose components are ``torch.distributions`` families, fitted by EM.

    family : a family name for every component (with ``n_components``), or a list of names,
        one per component, for a mixture of different families. Names: see ``FAMILIES``.
    n_components : number of components (default: the length of a list ``family``, else 1).
    reg_covar : added to normal/log-normal variances and to the mvn covariance diagonal.
    niw_shrinkage : for ``mvn`` components, κ₀ of mclust's Normal–Inverse-Wishart prior (MAP-EM;
        Fraley & Raftery 2007); None (default) is maximum likelihood.
    The remaining parameters are GaussianMixture's (see BernoulliMixture), with
    ``learning_decay``/``learning_offset`` for ``partial_fit``; ``fit`` also takes a source
    (see :class:`~latentfit.em.mixture.base.BaseMixture`).

    Fitted: ``weights_`` (k,), ``components_`` (a list with one dict of numpy parameters per
    component, named as the torch distribution's arguments), ``families_`` (k names).
    """

    def __init__(
        self,
        family="normal",
        n_components=None,
        *,
        reg_covar=1e-6,
        niw_shrinkage=None,
        tol=1e-3,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration=1.0,
        random_state=None,
        warm_start=False,
        verbose=0,
        device=None,
        dtype="float64",
        chunk_rows=None,
        learning_decay=0.6,
        learning_offset=0.0,
    ):
        self._set_arguments(locals())

    def _family_spec(self) -> tuple[list[str], int]:
        """The family names as given (one name, or one per component) and the number of
        components, both checked. The list of k names is built from these only after the data
        are checked: ``["normal"] * n_components`` for an unchecked n_components of 1e12
        was a MemoryError before the sample count could refuse it."""
        family = self.family
        if isinstance(family, str):
            names = [family]
        elif isinstance(family, list | tuple | np.ndarray) and all(
            isinstance(f, str) for f in family
        ):
            names = [str(f) for f in family]
        else:
            raise ParameterError(
                f"family must be a family name or a list of names, one per component; got "
                f"{family!r:.80}. Names: {list(FAMILIES)}"
            )
        unknown = [f for f in names if f not in FAMILIES]
        if unknown or not names:
            raise ParameterError(f"unknown family {unknown or names}; choose from {list(FAMILIES)}")
        k = (
            None
            if self.n_components is None
            else check_positive_int(self.n_components, "n_components")
        )
        if isinstance(family, str):
            return names, 1 if k is None else k
        if k is not None and k != len(names):
            raise ParameterError(
                f"n_components={k} but {len(names)} families were given; give "
                "one family per component or a single family name"
            )
        return names, len(names)

    def _families(self) -> list[str]:
        """The family of every component (k names)."""
        names, k = self._family_spec()
        return names * k if isinstance(self.family, str) else names

    def _n_components(self) -> int:
        return self._family_spec()[1]

    def _check_fitted_settings(self) -> None:
        fitted = vars(self).get("families_")
        if fitted is not None and self._families() != list(fitted):
            raise ParameterError(
                f"family was set to {self.family!r} after the fit, whose components are "
                f"{list(fitted)}: fit again{warm(self)}, or set family back"
            )

    def _check_parameters(self):
        super()._check_parameters()
        check_non_negative(self.reg_covar, "reg_covar")
        kappa = self.niw_shrinkage
        if kappa is not None and not is_finite_above(kappa, 0.0):
            # 'zzz' raised Python's TypeError in the prior; inf pinned every mean to the
            # prior's and was reported as a component collapsed onto too few points
            raise ParameterError(
                f"niw_shrinkage must be None or a finite number > 0 (κ₀ of the "
                f"Normal-Inverse-Wishart prior of mvn components; mclust uses 0.01), got "
                f"{kappa!r}"
            )

    def _check_component_data(self, X, reset):
        for name in dict.fromkeys(self._family_spec()[0]):
            fam = FAMILIES[name]
            bad = fam.check(X)
            if bad is not None and bool(bad.any()):
                raise first_offending(
                    bad, X, f"a {name} component needs {fam.support}; the first other entry is "
                )

    def _prepare_component_data(self, X):
        self.families_ = self._families()
        self._niw = None
        # Normal and mvn statistics are taken about one point fixed for the fit, the data
        # mean: raw second moments of data far from the origin lose every digit of the
        # variance when differenced (float32 at 1e6, float64 at 1e9).
        self._shift = None
        if _GAUSSIAN & set(self.families_):
            check_overflow(X)
            self._check_floor(X, None)
            self._shift = weighted_mean(X)
        if self.niw_shrinkage is not None and "mvn" in self.families_:
            self._niw = NormalInverseWishartPrior.default(
                X, len(self.families_), self.niw_shrinkage
            )

    def _check_weighted_data(self, X, w):
        for name in dict.fromkeys(self.families_):
            stats = FAMILIES[name].stats
            j = None if name in _GAUSSIAN else weight_overflow(lambda r, f=stats: f(X, r), w)
            if j is not None:
                said = f"the {name} components' statistics (sums over column {j} of X)"
                raise DataError(weight_overflow_message(w, said))

    def _warn_constant_columns(self, X, w):
        if _GAUSSIAN & set(self.families_):  # reg_covar is their variance there
            warn_constant_columns(X, w, type(self).__name__, "components")
        if "mvn" in self.families_:  # a full covariance
            name = type(self).__name__
            warn_dependent_columns(X, w, name, "full", diagonal="the 'normal' family")

    def _check_floor(self, X, w):
        if _GAUSSIAN & set(getattr(self, "families_", ())):  # reg_covar enters their variances
            check_variance_floor(X, None, self.reg_covar, "reg_covar", type(self).__name__)

    def _initial_params(self, data, gen):
        fams = self.families_
        if len(set(fams)) == 1 or len(fams) > 5 or data.labels is not None:
            return super()._initial_params(data, gen)
        # Which initial cluster suits which family is arbitrary: with mixed families, try every
        # assignment of clusters to components and keep the most likely start.
        resp = self._initial_resp(data, gen) * data.weights.unsqueeze(1)  # (n, k)
        best, best_ll, refusal = None, -math.inf, None
        for perm in itertools.permutations(range(len(fams))):
            r = resp[:, list(perm)]
            S0 = r.sum(0)
            try:
                cand = self._stats_mstep(data.X, r, S0, self._stats_centres(None, data.X, r))
            except (ValueError, RuntimeError) as err:  # a family cannot fit that cluster
                refusal = err
                continue
            cand["weights"] = self._weight_prior().map_probs(component_mass(S0))
            lse = torch.logsumexp(self._log_joint(data.X, cand), 1)  # (n,) -inf: impossible
            kept = data.weights > 0  # a row of weight 0 adds nothing, not 0 · -inf
            ll = float(lse[kept] @ data.weights[kept])
            if best is None or ll > best_ll:
                best, best_ll = cand, ll
        if best is None:
            raise DataError(
                "no initial assignment of the k-means clusters to the component families fits "
                "(each family refused its cluster's data): check that the data lie in the "
                "families' supports, or try other families or another random_state. The last "
                f"refusal: {refusal}"
            )
        return best

    def _component(self, params, k):
        prefix = f"c{k}."
        return {n[len(prefix) :]: v for n, v in params.items() if n.startswith(prefix)}

    def _component_log_prob(self, params, X):
        shift = params.get("shift")
        Xc = X - shift if shift is not None else None  # (n, d)
        far = self._stats_centres(params) or {}
        cols = []
        for k, f in enumerate(self.families_):
            p = self._component(params, k)
            if Xc is not None and "delta" in p and k not in far:  # see _component_mstep
                cols.append(FAMILIES[f].dist({**p, "loc": p["delta"]}).log_prob(Xc))
            else:
                cols.append(FAMILIES[f].dist(p).log_prob(X))
        return torch.stack(cols, 1)  # (n, k)

    def _zero_cells(self, params, X):
        cells = [
            FAMILIES[f].zero_cells(self._component(params, k), X)
            for k, f in enumerate(self.families_)
        ]
        if all(c is None for c in cells):
            return None
        none = torch.zeros(X.shape, dtype=torch.bool, device=X.device)
        return torch.stack([none if c is None else c for c in cells], 1)  # (n, k, d)

    def _after_fit(self, fit, result, X, **args) -> None:
        self._check_degenerate(fit.X)

    def _check_degenerate(self, X: torch.Tensor | None) -> None:
        """``degenerate_components_``: normal/mvn/log-normal components whose variance (of
        log x for log-normal) sits at the reg_covar floor on (near-)identical points (see
        :func:`~latentfit.em.gaussian.degenerate_components`); warns naming them and their
        rows. Judged against the variance of the data, so on in-memory data only."""
        self.degenerate_components_ = []
        if X is None or not _FLOORED & set(self.families_):
            return

        def covariance(Xd):  # (d, d)
            Xc = Xd - weighted_mean(Xd)
            return Xc.T @ Xc / max(X.shape[0] - 1, 1)

        data_cov = covariance(X.double())
        log_cov = covariance(X.double().log()) if "lognormal" in self.families_ else None
        eye = torch.eye(X.shape[1], dtype=torch.float64, device=X.device)
        found: dict[int, int | None] = {}
        for k, f in enumerate(self.families_):
            if f not in _FLOORED:
                continue
            p = {n: v.double() for n, v in self._component(self._params, k).items()}
            if f == "lognormal":
                scatter = (p["scale"].square() - self.reg_covar).unsqueeze(0)
                hit = degenerate_components(scatter, "diag", log_cov, self.reg_covar)
                if hit:
                    found[k] = hit[0]
                continue
            if f == "normal":
                scatter, ct = (p["scale"].square() - self.reg_covar).unsqueeze(0), "diag"
            else:
                cov = p["scale_tril"] @ p["scale_tril"].T
                scatter, ct = (cov - self.reg_covar * eye).unsqueeze(0), "full"
            hit = degenerate_components(scatter, ct, data_cov, self.reg_covar)
            if hit:
                found[k] = hit[0]
        self._record_degenerate(found, X)

    def _stats_shift(self):
        """The fixed point normal/mvn statistics are centred on (None: not centred)."""
        return getattr(self, "_shift", None)

    def _stats_centres(self, params, X=None, resp=None):
        """Normal and mvn components whose statistics are taken about a point of their own
        rather than the fit's centre c: at the start, each about its weighted mean under
        ``resp``; during the fit, those too far from c for their spread
        (:func:`~latentfit.em.gaussian.far_components`), about their location. About c,
        rows near 2.4 beside one row at 1e12 gave the group the variance reg_covar (0.81 is
        right) and a score of -4e5 per row (-1.28); at 1e17 its location was 1.75."""
        shift = self._stats_shift() if params is None else params.get("shift")
        if shift is None:
            return None
        out = {}
        for k, f in enumerate(self.families_):
            if f not in _GAUSSIAN:
                continue
            if params is None:
                if float(resp[:, k].sum()) > 0:
                    out[k] = weighted_mean(X, resp[:, k])
                continue
            p = self._component(params, k)
            delta = p["delta"] if "delta" in p else p["loc"] - shift
            if f == "normal":  # the precision factors far_components takes
                pc, ct = p["scale"].reciprocal().unsqueeze(0), "diag"
            else:
                pc, ct = torch.linalg.inv(p["scale_tril"]).mT.unsqueeze(0), "full"
            if len(far_components(delta.unsqueeze(0), pc, ct)):
                out[k] = p["loc"]
        return out or None

    def _component_stats(self, X, resp, centres=None):
        out = {}
        shift = self._stats_shift()
        Xc = X - shift if shift is not None else X  # (n, d) for the Gaussian families
        for k, f in enumerate(self.families_):
            Xk = Xc if f in _GAUSSIAN else X
            if centres is not None and k in centres:
                Xk = X - centres[k]
            for n, v in FAMILIES[f].stats(Xk, resp[:, k]).items():
                out[f"c{k}.{n}"] = v
        return out

    def _component_mstep(self, stats, S0, centres=None):
        out = {}
        shift = self._stats_shift()
        niw = self._niw
        centres = centres or {}
        try:
            for k, f in enumerate(self.families_):
                st = self._component(stats, k)
                centre = centres.get(k, shift)
                if niw is not None and centre is not None:  # the prior moves with the stats
                    self._niw = dataclasses.replace(niw, mean=niw.mean - centre)
                try:
                    est = FAMILIES[f].mle(st, self)
                except DegenerateComponentError as err:
                    raise DegenerateComponentError(f"component {k}: {err}") from None
                if f in _GAUSSIAN and k in centres:
                    # about a point of its own: the location kept absolute; through the
                    # location about c it would round to the spacing of c
                    loc = centre.double() + est["loc"].double()
                    est["loc"] = loc.to(est["loc"].dtype)
                    est["delta"] = (loc - shift.double()).to(est["loc"].dtype)
                elif f in _GAUSSIAN and shift is not None:
                    # keep the location about the centre too: in float32 the absolute one
                    # rounds to the spacing of data far from the origin (1.0 at 1e7)
                    est["delta"], est["loc"] = est["loc"], est["loc"] + shift
                for n, v in est.items():
                    out[f"c{k}.{n}"] = v
        finally:
            self._niw = niw
        if shift is not None:
            out["shift"] = shift
        return out

    def _keep_components(self, new, old, keep):
        for k in keep.nonzero().flatten().tolist():
            for n in new:
                if n.startswith(f"c{k}."):
                    new[n] = old[n]
        return new

    def _component_log_prior(self, params):
        total = params["weights"].new_zeros(())
        if self._niw is not None:
            for k, f in enumerate(self.families_):
                if f == "mvn":
                    p = self._component(params, k)
                    cov = p["scale_tril"] @ p["scale_tril"].T
                    total = total + self._niw.log_prob(p["loc"][None], cov[None])
        return total

    def _sample_component(self, params, k, count, gen):
        dist = FAMILIES[self.families_[k]].dist(self._component(params, k))
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        # torch.distributions draw from the global generator: fork it so sampling leaves no trace.
        devices = [gen.device.index or 0] if gen.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return dist.sample((count,))

    def _component_n_parameters(self, d):
        return sum(FAMILIES[f].n_parameters(d) for f in self.families_)

    def _set_params_tensors(self, params):
        params = {k: v.detach() for k, v in params.items()}
        self._params = params
        self.weights_ = params["weights"].cpu().numpy()
        self.components_ = [
            {
                n: v.cpu().numpy()
                for n, v in self._component(params, k).items()
                if n != "delta"  # the fit's own centred copy of loc
            }
            for k in range(len(self.weights_))
        ]
        self._fitted_k = len(self.weights_)
        self._snapshots = {n: snapshot(getattr(self, n)) for n in ("weights_", "components_")}

    #: why edits to weights_ or components_ are refused (BaseMixture._params)
    _not_read_back = (
        "a MixtureModel's weights_ and components_ are copies of its fitted parameters, not "
        "read back. Fit again, or use a one-family mixture (GaussianMixture, PoissonMixture, "
        "...), which takes such edits up"
    )

    def _extra_state(self):
        return {"families_": list(self.families_)}

    _state_fields: ClassVar[dict[str, str]] = {"families_": "strs"}

    def _set_state(self, tensors, extra):
        super()._set_state(tensors, extra)
        self._niw = None
        # the point the normal/mvn statistics are taken about, which partial_fit goes on with
        self._shift = self._params.get("shift")

    def _check_loaded(self) -> None:
        # Each parameter of every family holds one entry per feature ((d,), or (d, d) for an
        # mvn's scale_tril), and so does 'shift': a (1,) one would broadcast to any d, which
        # the probe of BaseMixture._check_loaded cannot tell from an intact file
        d = self.n_features_in_
        for name, t in self._params.items():
            if name != "weights" and (t.dim() == 0 or t.shape[0] != d):
                raise ModelFileError(
                    f"the tensor {name!r} has shape {tuple(t.shape)}, but 'extra.n_features_in_' "
                    f"is {d}: a MixtureModel's parameters hold one entry per feature. The file "
                    "was altered or is damaged"
                )
        super()._check_loaded()
