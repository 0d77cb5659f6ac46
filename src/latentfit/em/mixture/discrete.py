"""Mixtures of discrete families with closed-form (MAP-)M-steps.

* :class:`BernoulliMixture` — binary vectors (binarised images, presence/absence data);
  McLachlan & Peel (2000) §5.4, Bishop (2006) §9.3.3.
* :class:`CategoricalMixture` — vectors of categorical variables (latent class analysis;
  Lazarsfeld & Henry 1968, Goodman 1974).
* :class:`MultinomialMixture` — count vectors such as bag-of-words documents (Nigam et al. 2000).
* :class:`PoissonMixture` — count vectors with independent Poisson coordinates.

Each log-density is written as one matrix product per chunk, (n, d) @ (d, k), and tested
against ``torch.distributions``. The estimators share :class:`~latentfit.em.mixture.base.BaseMixture`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from latentfit._validation import (
    check_allocation,
    check_count_range,
    is_finite_above,
    max_inferred_categories,
)
from latentfit.em.edited import warm
from latentfit.em.initialize import cpu_generator
from latentfit.em.mixture.base import (
    BaseMixture,
    first_offending,
    weight_overflow,
    weight_overflow_message,
)
from latentfit.em.mixture.priors import BetaPrior, DirichletPrior, GammaPrior, dirichlet_setting
from latentfit.errors import BatchRowError, DataError, ModelFileError, ParameterError
from latentfit.io import Stored, serializable

__all__ = [
    "BernoulliMixture",
    "CategoricalMixture",
    "MultinomialMixture",
    "PoissonMixture",
    "bernoulli_log_prob",
    "categorical_log_prob",
    "multinomial_log_prob",
    "one_hot_features",
    "poisson_log_prob",
    "zero_bernoulli_cells",
    "zero_categorical_cells",
    "zero_count_cells",
]


def _safe_log(p: torch.Tensor) -> torch.Tensor:
    # An MLE probability of exactly 0 meets only zero counts in the fitted data; the clamp
    # keeps 0 · log 0 = 0 there. A new count of such an outcome is impossible, not 708 nats
    # unlikely: the estimators mark it -inf by the zero_* functions below.
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


# ---------------------------------------------------------------- pure functions
def bernoulli_log_prob(X: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Σ_j x_j log μ_kj + (1 − x_j) log(1 − μ_kj): (n, d), (k, d) → (n, k)."""
    log_mu, log_1m = _safe_log(means), _safe_log(1 - means)  # (k, d)
    return X @ (log_mu - log_1m).T + log_1m.sum(1)


def poisson_log_prob(X: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """Σ_j x_j log λ_kj − λ_kj − log x_j!: (n, d), (k, d) → (n, k)."""
    return X @ _safe_log(rates).T - rates.sum(1) - torch.lgamma(X + 1).sum(1, keepdim=True)


def multinomial_log_prob(X: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """log Mult(x | N = Σ_j x_j, p_k) with its multinomial coefficient: (n, v), (k, v) → (n, k)."""
    coef = torch.lgamma(X.sum(1, keepdim=True) + 1) - torch.lgamma(X + 1).sum(1, keepdim=True)
    return X @ _safe_log(probs).T + coef


def one_hot_features(X: torch.Tensor, n_categories: int) -> torch.Tensor:
    """Integer-coded (n, d) → one-hot (n, d·c) with c categories per feature."""
    n, d = X.shape
    return torch.nn.functional.one_hot(X.long(), n_categories).reshape(n, d * n_categories).to(X)


def categorical_log_prob(onehot: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Σ_j log p_kj[x_j] from one-hot rows: (n, d·c), probs (k, d, c) → (n, k)."""
    k = probs.shape[0]
    return onehot @ _safe_log(probs).reshape(k, -1).T


def zero_count_cells(X: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Where a count x_nj > 0 meets a rate or probability p_kj = 0, the outcome that component
    k cannot produce (Poisson, multinomial): (n, d), (k, d) → (n, k, d) bool."""
    return (X > 0).unsqueeze(1) & (probs == 0).unsqueeze(0)


def zero_bernoulli_cells(X: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Where x_nj = 1 meets μ_kj = 0, or x_nj = 0 meets μ_kj = 1: (n, d), (k, d) → (n, k, d)."""
    ones = X.unsqueeze(1) == 1  # (n, 1, d)
    mu = means.unsqueeze(0)  # (1, k, d)
    return torch.where(ones, mu == 0, mu == 1)


def zero_categorical_cells(X: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Where code x_nj has p_kj[x_nj] = 0: codes (n, d), probs (k, d, c) → (n, k, d)."""
    d = X.shape[1]
    picked = probs[:, torch.arange(d, device=X.device), X.long()]  # (k, n, d)
    return (picked == 0).permute(1, 0, 2)


def _check_counts(X: torch.Tensor, name: str) -> None:
    neg = X < 0
    if bool(neg.any()):
        raise first_offending(
            neg, X, f"{name} needs non-negative counts; the first negative entry is "
        )
    frac = X != X.round()
    if bool(frac.any()):
        raise first_offending(
            frac,
            X,
            f"{name} needs integer counts; the first fractional entry is ",
            ". Round the data or use a continuous family.",
        )
    check_count_range(X)


_COMMON_DOC = """
    Common parameters (scikit-learn's GaussianMixture conventions): ``n_components``, ``tol``,
    ``max_iter``, ``n_init``, ``init_params`` ("kmeans", "k-means++", "random",
    "random_from_data"), ``random_state``, ``warm_start``, ``verbose``, ``device``, ``dtype``,
    ``chunk_rows``; ``weight_concentration`` is the symmetric Dirichlet prior α on the weights
    (1 = none). ``fit(X, y)`` accepts component labels with -1 for unlabelled samples.
    ``fit`` also takes a source of :mod:`latentfit.em.sources.chunks` (out-of-core, distributed);
    ``partial_fit`` is stepwise EM with steps ρ_t = (t + ``learning_offset``)^(−``learning_decay``).
    Fitted: ``weights_`` (k,), the component parameters, ``converged_``, ``n_iter_``,
    ``lower_bound_`` (mean log-likelihood, plus log prior / n under a prior), ``lower_bounds_``.
    A warm start counts as scikit-learn's: ``n_iter_`` and ``lower_bounds_`` cover its own
    iterations, which continue those of the fit before it.
"""


def category_counts(value, d: int, name: str = "n_categories") -> np.ndarray:
    """The number of categories of each of ``d`` columns (d,): ``value`` is one count for
    every column or a list of ``d`` counts, each an integer >= 1 (the rule of
    :class:`CategoricalMixture`'s ``n_categories``, and of the ``n_categories_`` a model file
    stores); else ParameterError naming ``name``."""
    if isinstance(value, list | tuple | np.ndarray):
        counts = np.asarray(value, dtype=object)  # a ragged list stays one axis of lists
    else:
        counts = np.full(d, value, dtype=object)
    if counts.shape != (d,) or not all(  # (below 2**53: whole numbers a float holds exactly;
        # 1e300 passed, and overflowed int64 in astype)
        is_finite_above(c, 1.0, inclusive=True) and float(c).is_integer() and c < 2**53
        for c in counts
    ):
        raise ParameterError(
            f"{name} must be an integer >= 1 or a list of {d} of them (one per column of X), "
            f"got {value!r:.80}"
        )
    return counts.astype(np.int64)


def dense_codes(
    X: torch.Tensor, prefix: str = "", sized: str = "the model", option: str = "n_categories"
) -> torch.Tensor:
    """The largest code of every column of category codes X (n, d), as a long tensor (d,),
    where the codes are dense enough to infer the number of categories from
    (:func:`~latentfit._validation.max_inferred_categories`); else DataError naming the row
    and column of the stray code, which would size ``sized`` by its value."""
    top = X.max(0)  # (d,) the largest code of every column
    limit = max_inferred_categories(X.shape[0])
    over = (top.values >= limit).nonzero()
    if len(over):
        j = int(over[0])
        i = int(top.indices[j])
        raise DataError(
            f"{prefix}row {i}, column {j} holds category {top.values[j].item():.10g}, far beyond "
            f"the {X.shape[0]} samples: the codes are not dense, and inferring the categories "
            f"from it would size {sized} by that value. Recode the column as 0..c-1 "
            f"(numpy.unique(column, return_inverse=True)) or pass {option}"
        )
    return top.values.long()


def _pair_prior(prior_cls, value, name: str, what: str):
    """``prior_cls(a, b)`` from a prior setting given as a pair of finite numbers ``(a, b)``
    (``what`` says which and their default); ParameterError naming the argument otherwise,
    the prior's own refusal (a shape below 1, say) included."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        pair = None
    else:
        pair = (a, b) if np.isfinite([a, b]).all() else None
    if pair is None:
        raise ParameterError(
            f"{name} must be a pair (a, b) of finite numbers: {what}; got {value!r:.80}"
        )
    try:
        return prior_cls(*pair)
    except ParameterError as err:
        raise ParameterError(f"{name}={pair}: {err}") from None


class _DiscreteMixture(BaseMixture):
    """The discrete mixtures: one component parameter ``_param_names[0]`` under the prior
    ``_prior()`` (MAP-EM; the MLE at its default), from the per-component sums of X."""

    _prior_hint = "prob_concentration=2"

    def _component_stats(self, X, resp):
        return {"S1": resp.T @ X}  # (k, d)

    def _check_weighted_data(self, X, w):
        j = weight_overflow(lambda r: self._component_stats(X, r[:, None]), w)  # (1, d) sums
        if j is not None:
            said = f"the {type(self).__name__}'s statistics (sums over column {j} of X)"
            raise DataError(weight_overflow_message(w, said))

    def _component_log_prior(self, params):
        return self._prior().log_prob(params[self._param_names[0]])

    def _component_n_parameters(self, d):
        return len(self._params["weights"]) * d  # one free parameter per component and feature

    #: what the component parameter of a model file must hold (see latentfit.io.check_stored)
    _param_constraint: ClassVar[str] = "probability"

    def _stored_specs(self, d: int) -> dict[str, Stored]:
        """A model file's tensors: the weights on the simplex and the component parameter
        within its support (probabilities, non-negative rates), one row per component."""
        k = self._n_components()
        shape = (k, d) if type(self)._param_shape_is_kd else None
        return {
            **super()._stored_specs(d),
            "weights": Stored((k,), "simplex"),
            self._param_names[0]: Stored(shape, self._param_constraint),
        }

    _param_shape_is_kd: ClassVar[bool] = True


@serializable
class BernoulliMixture(_DiscreteMixture):
    __doc__ = (
        """Mixture of products of independent Bernoullis: p(x) = Σ_k π_k Π_j μ_kj^x_j (1 − μ_kj)^(1−x_j).

    mean_prior : (a, b) of a Beta(a, b) prior on every μ_kj (MAP-EM); (1, 1) is the MLE,
        (2, 2) adds one pseudo-zero and one pseudo-one per pixel and keeps μ in (0, 1).
    Fitted: ``means_`` (k, d).
    """
        + _COMMON_DOC
    )

    _param_names = ("means",)

    def __init__(self, n_components=1, *, mean_prior=(1.0, 1.0), **kwargs):
        super().__init__(n_components, **kwargs)
        self.mean_prior = mean_prior

    def _prior(self) -> BetaPrior:
        return _pair_prior(
            BetaPrior, self.mean_prior, "mean_prior", "the Beta prior's a, b >= 1, e.g. (1, 1)"
        )

    def _check_component_data(self, X, reset):
        bad = (X != 0) & (X != 1)
        if bool(bad.any()):
            raise first_offending(
                bad,
                X,
                f"{type(self).__name__} needs binary data (0 or 1); the first other entry is ",
                ". Binarise first, e.g. X > 0.5.",
            )

    def _component_log_prob(self, params, X):
        return bernoulli_log_prob(X, params["means"])

    def _zero_cells(self, params, X):
        mu = params["means"]
        return zero_bernoulli_cells(X, mu) if bool(((mu == 0) | (mu == 1)).any()) else None

    _prior_hint = "mean_prior=(2, 2)"

    def _component_mstep(self, stats, S0):
        return {"means": self._prior().map_means(S0, stats["S1"]).clamp(0, 1)}

    def _sample_component(self, params, k, count, gen):
        return torch.bernoulli(params["means"][k].expand(count, -1), generator=gen)


@serializable
class PoissonMixture(_DiscreteMixture):
    __doc__ = (
        """Mixture of products of independent Poissons: p(x) = Σ_k π_k Π_j Poisson(x_j | λ_kj).

    rate_prior : (a, b) of a Gamma(shape a, rate b) prior on every λ_kj; (1, 0) is the MLE.
    Fitted: ``rates_`` (k, d).
    """
        + _COMMON_DOC
    )

    _param_names = ("rates",)
    _param_constraint = "nonnegative"

    def __init__(self, n_components=1, *, rate_prior=(1.0, 0.0), **kwargs):
        super().__init__(n_components, **kwargs)
        self.rate_prior = rate_prior

    def _prior(self) -> GammaPrior:
        return _pair_prior(
            GammaPrior,
            self.rate_prior,
            "rate_prior",
            "the Gamma prior's shape a >= 1 and rate b >= 0, e.g. (1, 0)",
        )

    def _check_component_data(self, X, reset):
        _check_counts(X, type(self).__name__)

    def _component_log_prob(self, params, X):
        return poisson_log_prob(X, params["rates"])

    def _zero_cells(self, params, X):
        rates = params["rates"]
        return zero_count_cells(X, rates) if bool((rates == 0).any()) else None

    _prior_hint = "rate_prior=(2, 1)"

    def _component_mstep(self, stats, S0):
        return {"rates": self._prior().map_rates(S0, stats["S1"])}

    def _sample_component(self, params, k, count, gen):
        return torch.poisson(params["rates"][k].expand(count, -1).contiguous(), generator=gen)


@serializable
class MultinomialMixture(_DiscreteMixture):
    __doc__ = (
        """Mixture of multinomials over count vectors (documents × vocabulary; Nigam et al. 2000).

    p(x) = Σ_k π_k Mult(x | N = Σ_j x_j, p_k); the row total N is conditioned on.
    prob_concentration : symmetric Dirichlet α on every p_k (Laplace smoothing at α = 2).
    Fitted: ``probs_`` (k, v), ``mean_total_count_`` (used by :meth:`sample`).
    """
        + _COMMON_DOC
    )

    _param_names = ("probs",)
    _param_constraint = "simplex"

    def __init__(self, n_components=1, *, prob_concentration=1.0, **kwargs):
        super().__init__(n_components, **kwargs)
        self.prob_concentration = prob_concentration

    def _prior(self) -> DirichletPrior:
        return dirichlet_setting(self.prob_concentration, "prob_concentration")

    def _check_component_data(self, X, reset):
        _check_counts(X, type(self).__name__)

    def _prepare_component_data(self, X):
        self.mean_total_count_ = float(X.sum(1).mean())

    def _component_init_features(self, X):
        # Cluster the word frequencies, not the raw counts, so long documents do not dominate.
        return X / X.sum(1, keepdim=True).clamp_min(1)

    def _component_log_prob(self, params, X):
        return multinomial_log_prob(X, params["probs"])

    def _zero_cells(self, params, X):
        probs = params["probs"]
        return zero_count_cells(X, probs) if bool((probs == 0).any()) else None

    def _component_mstep(self, stats, S0):
        return {"probs": self._prior().map_probs(stats["S1"])}

    def _sample_component(self, params, k, count, gen):
        """``count`` rows of ``round(mean_total_count_)`` counts each, by conditional binomials:
        the first category's count is Binomial(n, p_1), the next Binomial(n - n_1, p_2 / (1 -
        p_1)), and so on (the multinomial's chain rule), so memory and time are O(count · d)
        whatever the total. One category drawn at a time used count × total draws: a model
        file stating a total of 1e9 made load's sampling check allocate gigabytes."""
        total = float(round(self.mean_total_count_))
        p = params["probs"][k].double().cpu().clamp(min=0.0)
        g = cpu_generator(gen)
        out = torch.zeros(count, len(p), dtype=torch.float64)
        left = torch.full((count,), total, dtype=torch.float64)
        rest = float(p.sum())
        for j in range(len(p) - 1):
            share = min(1.0, float(p[j]) / rest) if rest > 0 else 0.0
            drawn = torch.binomial(left, torch.full_like(left, share), generator=g)
            out[:, j] = drawn
            left = left - drawn
            rest -= float(p[j])
        out[:, -1] = left
        return out.to(params["probs"])

    def _component_n_parameters(self, d):
        return len(self._params["weights"]) * (d - 1)

    #: the mean row total of counts (finite, >= 0), read by sample
    _state_fields: ClassVar[dict[str, str]] = {"mean_total_count_": "nonnegative"}

    def _extra_state(self):
        return {"mean_total_count_": self.mean_total_count_}


@serializable
class CategoricalMixture(_DiscreteMixture):
    __doc__ = (
        """Latent class model: a mixture of products of categorical variables.

    X holds integer codes 0..c_j − 1 in column j. p(x) = Σ_k π_k Π_j p_kj[x_j].
    n_categories : int or list (one per column); default: 1 + the largest code seen in fit,
        when the codes are dense — a code beyond max(n_samples, 1024) is refused (DataError)
        rather than sizing the model by it. A size whose one-hot codes or parameters would
        not fit in memory is refused up front (ResourceLimitError).
    prob_concentration : symmetric Dirichlet α on every p_kj.
    Fitted: ``probs_`` (k, d, c) (zero beyond column j's c_j codes), ``n_categories_`` (d,).
    """
        + _COMMON_DOC
    )

    _param_names = ("probs",)
    _param_constraint = "simplex"  # each column's probabilities over its codes
    _param_shape_is_kd = False  # (k, d, c): c from n_categories_, checked at load

    def __init__(self, n_components=1, *, n_categories=None, prob_concentration=1.0, **kwargs):
        super().__init__(n_components, **kwargs)
        self.n_categories = n_categories
        self.prob_concentration = prob_concentration

    def _prior(self) -> DirichletPrior:
        return dirichlet_setting(self.prob_concentration, "prob_concentration")

    def _check_component_data(self, X, reset):
        _check_counts(X, type(self).__name__)
        limit = self._limits(X, reset)
        if limit is not None:
            over = X >= limit.to(X)
            if bool(over.any()):
                i, j = (int(v) for v in over.nonzero()[0])
                raise BatchRowError(
                    i,
                    f"{type(self).__name__}: row {{row}}, column {j} holds category "
                    f"{int(X[i, j])} but column {j} has {int(limit[j])} categories (0.."
                    f"{int(limit[j]) - 1})"
                    + (
                        "; the categories were counted on the data the model started from: "
                        "pass n_categories to the first fit when fitting a stream, with "
                        "partial_fit or with warm_start=True"
                        if self.n_categories is None
                        else ""
                    ),
                )

    def _check_fitted_settings(self) -> None:
        fitted = vars(self).get("n_categories_")
        if self.n_categories is None or fitted is None:
            return
        if category_counts(self.n_categories, len(fitted)).tolist() != list(fitted):
            raise ParameterError(
                f"n_categories was set to {self.n_categories!r} after the fit, whose "
                f"probabilities are over n_categories_ = {[int(c) for c in fitted]}: fit "
                f"again{warm(self)}, or set n_categories back"
            )

    def _limits(self, X, reset: bool) -> torch.Tensor | None:
        if not reset:
            return torch.as_tensor(self.n_categories_, device=X.device)
        if self.n_categories is None:
            return None
        c = category_counts(self.n_categories, X.shape[1])
        return torch.as_tensor(c, device=X.device)

    def _prepare_component_data(self, X):
        if self._warm_width() is not None:
            return  # a warm start keeps the categories its probabilities are over
        if self.n_categories is None:
            top = dense_codes(X, f"{type(self).__name__}: ", "the model")
            self.n_categories_ = (top + 1).cpu().numpy()
        else:
            self.n_categories_ = self._limits(X, True).cpu().numpy()
        # One-hot codes of the data (n, d·c) for the initialisation, and the (k, d, c)
        # parameters with their statistics.
        n, d = X.shape
        c = int(self.n_categories_.max())
        check_allocation(
            (n + 4 * self._n_components()) * d * c * X.element_size(),
            f"{type(self).__name__} with {d} column(s) of up to {c:,} categories",
            device=X.device,
            hint="recode every column as 0..c-1 with c the number of distinct codes",
        )

    def _valid(self, like: torch.Tensor) -> torch.Tensor:
        c = torch.as_tensor(self.n_categories_, device=like.device)
        return torch.arange(int(c.max()), device=like.device) < c.unsqueeze(1)  # (d, c)

    def _component_init_features(self, X):
        return one_hot_features(X, int(self.n_categories_.max()))

    def _component_log_prob(self, params, X):
        onehot = one_hot_features(X, params["probs"].shape[2])
        return categorical_log_prob(onehot, params["probs"])

    def _zero_cells(self, params, X):
        probs = params["probs"]  # (k, d, c): zero beyond each column's codes, never met
        if not bool(((probs == 0) & self._valid(probs)).any()):
            return None
        return zero_categorical_cells(X, probs)

    def _component_stats(self, X, resp):
        c = int(self.n_categories_.max())
        S1 = resp.T @ one_hot_features(X, c)  # (k, d·c)
        return {"S1": S1.reshape(resp.shape[1], X.shape[1], c)}

    def _component_mstep(self, stats, S0):
        valid = self._valid(stats["S1"])
        # Codes beyond a column's range get no pseudo-count, so their probability stays zero.
        counts = stats["S1"] + (self.prob_concentration - 1.0) * valid
        total = counts.sum(-1, keepdim=True)
        # a column no sample of the component reached (no counts, flat prior): uniform over
        # its codes, not 0 / 0
        uniform = valid / valid.sum(-1, keepdim=True)
        return {"probs": torch.where(total > 0, counts / total.where(total > 0, 1.0), uniform)}

    def _component_log_prior(self, params):
        if self.prob_concentration == 1.0:
            return params["probs"].new_zeros(())
        total = params["probs"].new_zeros(())
        prior = self._prior()
        for j, c in enumerate(self.n_categories_.tolist()):
            total = total + prior.log_prob(params["probs"][:, j, :c])
        return total

    def _sample_component(self, params, k, count, gen):
        p = params["probs"][k].double().cpu()  # (d, c)
        cols = [
            torch.multinomial(p[j], count, replacement=True, generator=cpu_generator(gen))
            for j in range(p.shape[0])
        ]
        return torch.stack(cols, 1).to(params["probs"])

    def _component_n_parameters(self, d):
        return len(self._params["weights"]) * int((self.n_categories_ - 1).sum())

    _state_fields: ClassVar[dict[str, str]] = {"n_categories_": "ints"}
    _required_state_fields: ClassVar[tuple[str, ...]] = ("n_features_in_", "n_categories_")

    def _extra_state(self):
        return {"n_categories_": [int(c) for c in self.n_categories_]}

    def _restore_params(self, tensors, extra):
        # n_categories_ sizes the one-hot codes and bounds the codes of every column: d counts
        # >= 1, as fit gives them, the largest the probabilities' last axis, and each
        # column's probabilities zero beyond its own codes, as the M-step leaves them
        d, k = extra["n_features_in_"], self._n_components()
        try:
            c = category_counts(extra.get("n_categories_"), d, "n_categories_")
        except ParameterError as err:
            raise ModelFileError(
                f"the model file's header field 'extra.n_categories_' is not the number of "
                f"categories of each of its n_features_in_ = {d} columns: {err}; the file was "
                "altered or is damaged"
            ) from None
        probs = tensors["probs"]
        shape = (k, d, int(c.max()))
        if tuple(probs.shape) != shape:
            raise ModelFileError(
                f"the tensor 'probs' has shape {tuple(probs.shape)}, but n_components = {k} and "
                f"'extra.n_categories_' = {c.tolist()} make it {shape}; the file was altered or "
                "is damaged"
            )
        beyond = torch.arange(shape[2]) >= torch.as_tensor(c).unsqueeze(1)  # (d, c)
        stray = (probs != 0) & beyond.to(probs.device)  # (k, d, c)
        if bool(stray.any()):
            i, j, code = (int(v) for v in stray.nonzero()[0])
            raise ModelFileError(
                f"the tensor 'probs' gives component {i} the probability "
                f"{probs[i, j, code].item():.6g} for code {code} of column {j}, which has "
                f"{c[j]} categories ('extra.n_categories_'): a fit gives 0 there. The file "
                "was altered or is damaged"
            )
        super()._restore_params(tensors, extra)

    def _set_state(self, tensors, extra):
        super()._set_state(tensors, extra)
        self.n_categories_ = np.asarray(self.n_categories_, dtype=np.int64)
