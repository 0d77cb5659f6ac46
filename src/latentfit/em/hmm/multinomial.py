"""Hidden Markov model with multinomial emissions (hmmlearn >= 0.3's ``MultinomialHMM``).

Every row x_t of X counts the outcomes of n_t trials over d categories (Σ_j x_tj = n_t), and
given the state k the row is Multinomial(n_t, p_k):

    log p(x_t | z_t = k) = log n_t! − Σ_j log x_tj! + Σ_j x_tj log p_kj,

with ``emissionprob_`` (k, d) the p_k. The expected statistics are every state's expected
counts Σ_t γ_tk x_t and the M-step their Dirichlet(``emissionprob_prior``) MAP, as for the
categorical model, of which this is the sum over trials (a categorical row is a multinomial
one of one trial).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from latentfit._validation import (
    as_float_tensor,
    check_count_range,
    check_distribution,
    check_sample_count,
)
from latentfit.em.hmm import emissions as E
from latentfit.em.hmm.base import BaseHMM
from latentfit.em.hmm.discrete import EmissionProbabilities, ZeroCountEmissions, _first_bad
from latentfit.em.hmm.online import OnlineHMMMixin
from latentfit.em.hmm.settings import Prior
from latentfit.em.mixture.discrete import multinomial_log_prob
from latentfit.errors import BatchRowError, DataError, ModelFileError, ParameterError
from latentfit.io import serializable

__all__ = ["MultinomialHMM"]

#: The largest number of trials (and row total) taken: whole numbers up to 2^53 add up exactly
#: in float64, so that a row's total can be compared with ``n_trials``.
MAX_TRIALS = 2**53


def _common_total(X: torch.Tensor) -> int | None:
    """The one row total of the counts X (n, d), or None when the rows' totals differ."""
    totals = X.sum(1, dtype=torch.float64)  # (n,) exact: checked whole counts <= 2^53
    first = totals[0]
    return int(first) if bool((totals == first).all()) else None


@serializable
class MultinomialHMM(ZeroCountEmissions, EmissionProbabilities, OnlineHMMMixin, BaseHMM):
    """Hidden Markov model with multinomial emissions: rows of counts over ``n_features``
    categories.

    hmmlearn's ``MultinomialHMM`` (>= 0.3): X is (n, d) of non-negative whole counts, row t
    the outcomes of n_t trials; ``emissionprob_`` (k, d) the category probabilities of every
    state, here with a Dirichlet(``emissionprob_prior``) prior as :class:`CategoricalHMM`'s
    (1: none, hmmlearn's model). The density of a row is Multinomial(n_t, p_k) with n_t the
    row's total (see the module docstring); a row counting a category of probability exactly
    0 is impossible in that state (log-likelihood -inf, as hmmlearn), as in
    :class:`~latentfit.MultinomialMixture`. A fit or ``partial_fit`` that meets a row no state
    can emit (a category the previous fit never saw) weighs it with log 0 clamped to about
    -708, so that it goes on and learns the category.

    ``n_trials``: the number of trials of every row (an integer), of each row (an array, one
    per row of the X passed), or None (each row's own total, the default). When given, the
    rows of X are checked against it (fit, score, predict...). ``sample`` draws every row
    with one number of trials: ``n_trials``, else the one total of all the rows of the fit
    (``n_trials_``); it asks for ``n_trials`` when neither gives one. The fit never changes
    ``n_trials`` (hmmlearn sets it to the row totals); it sets ``n_trials_``: the total every
    row of the fitted data had, or None when they differ (a data source: ``n_trials`` if an
    integer, else None).
    """

    _zero_param = "emissionprob"

    def __init__(
        self,
        n_components=1,
        n_trials=None,
        startprob_prior=1.0,
        transmat_prior=1.0,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="ste",
        init_params="ste",
        implementation="log",
        *,
        emissionprob_prior=1.0,
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())

    # ------------------------------------------------------------------ the number of trials
    def _check_parameters(self):
        super()._check_parameters()
        self._given_trials()

    def _given_trials(self) -> np.ndarray | None:
        """``n_trials`` checked: None, or a float64 array of shape () or (n,) of whole
        numbers in 1 .. 2^53."""
        value = self.n_trials
        if value is None:
            return None
        what = (
            "n_trials must be a positive whole number (the trials that every row's counts add "
            "up to), an array of them (one per row of X), or None (every row's own total)"
        )
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ParameterError(f"{what}; got {value!r:.80}") from None
        if isinstance(value, bool) or a.dtype == bool or a.ndim > 1 or a.size == 0:
            raise ParameterError(f"{what}; got {value!r:.80}")
        bad = ~np.isfinite(a) | (a != np.round(a)) | (a < 1) | (a > MAX_TRIALS)
        if bad.any():
            i = int(np.argmax(bad.ravel()))
            where = "" if a.ndim == 0 else f" (entry {i})"
            v = float(a.ravel()[i])
            why = "at least 1" if np.isfinite(v) and v < 1 else "a whole number <= 2^53"
            raise ParameterError(f"{what}; n_trials{where} is {v:g}, which must be {why}")
        return a

    def _check_trials(self, X64: torch.Tensor) -> None:
        """The rows of the checked counts X64 (n, d) against ``n_trials`` (DataError naming the
        first row whose total differs)."""
        trials = self._given_trials()
        if trials is None:
            return
        n = X64.shape[0]
        if trials.ndim == 1 and trials.shape[0] != n:
            raise DataError(
                f"n_trials holds {trials.shape[0]} per-row numbers of trials but X has {n} "
                "rows; pass one per row of this X, one number for every row, or n_trials=None "
                "to take every row's total from the data"
            )
        want = torch.as_tensor(trials, dtype=torch.float64, device=X64.device).expand(n)
        totals = X64.sum(1)  # (n,)
        off = totals != want
        if bool(off.any()):
            i = _first_bad(off)[0]
            raise BatchRowError(
                i,
                f"row {{row}} of X counts {int(totals[i])} trials (its counts add up to that) but "
                f"n_trials says {int(want[i])}: every row's counts must add up to its number of "
                "trials. Check that row, or pass n_trials=None to take every row's total from "
                "the data",
            )

    def _sampling_trials(self) -> int:
        """The one number of trials ``sample`` gives every row (see the class docstring)."""
        trials = self._given_trials()
        if trials is not None:
            values = np.unique(trials)
            if len(values) == 1:
                return int(values[0])
            raise ParameterError(
                f"{type(self).__name__}.sample draws every row with one number of trials, but "
                f"n_trials gives {len(values)} different ones (one per row); set one, e.g. "
                "model.set_params(n_trials=10)"
            )
        fitted = getattr(self, "n_trials_", None)
        if fitted is None:
            raise ParameterError(
                f"{type(self).__name__}.sample draws every row with one number of trials, and "
                "this model has none: n_trials is None and the rows it was fitted on do not "
                "share one total (n_trials_ is None). Set one, e.g. "
                "model.set_params(n_trials=10)"
            )
        return int(fitted)

    # ------------------------------------------------------------------ data
    def _validate_X(self, X, *, fitting: bool) -> torch.Tensor:
        """X (n, d) of whole counts, checked in float64 (every row's total exact) and returned
        in the model's dtype; the columns against the fitted ``n_features`` and the row totals
        against ``n_trials``."""
        X64 = as_float_tensor(X, device=self._device)
        neg = X64 < 0
        if bool(neg.any()):
            i, j = _first_bad(neg)
            raise BatchRowError(
                i,
                f"counts must be non-negative; X[{{row}}, {j}] = {X64[i, j].item()!r}. Every row of "
                "a MultinomialHMM counts the outcomes of its trials in each category",
            )
        frac = X64 != torch.round(X64)
        if bool(frac.any()):
            i, j = _first_bad(frac)
            raise BatchRowError(
                i,
                f"counts must be whole numbers; X[{{row}}, {j}] = {X64[i, j].item()!r} is fractional. "
                "Pass the counts themselves, not frequencies or proportions",
            )
        big = X64.sum(1) > MAX_TRIALS  # (n,); no partial sum of a smaller total exceeds it
        if bool(big.any()):
            i = _first_bad(big)[0]
            raise BatchRowError(
                i,
                f"row {{row}} of X counts {X64[i].sum().item():.4g} trials, beyond the 2^53 whose "
                "totals add up exactly; a multinomial model of so many trials is not resolved "
                "in floating point (model the rates instead, e.g. with PoissonHMM)",
            )
        d = X64.shape[1]
        if fitting:
            self.n_features = d
        elif d != self.n_features:
            raise DataError(
                f"X has {d} features (categories) but the model was fitted with "
                f"{self.n_features}; pass the counts of the same {self.n_features} categories, "
                "in the order the fit saw them"
            )
        self._check_trials(X64)
        X = X64.to(self._dtype)
        check_count_range(X)  # float32 rounds counts from 2^24 on
        limit = 2.0 / torch.finfo(X.dtype).eps
        big = X64.sum(1) >= limit  # (n,); float64's 2^53 is refused above
        if X.dtype != torch.float64 and bool(big.any()):
            i = _first_bad(big)[0]
            raise BatchRowError(
                i,
                f"row {{row}} of X counts {X64[i].sum().item():.4g} trials, at or beyond the "
                f"{limit:.3g} up to which {str(X.dtype).replace('torch.', '')} holds every whole "
                "number; fit with dtype='float64'",
            )
        return X

    # Streamed chunks are checked like arrays; a row's place in the data is not known there,
    # so per-row n_trials are refused for a data source.
    @property
    def _stream_check(self):
        return lambda X: self._validate_X(X, fitting=False)

    def _prepare_fit(self, X, lengths=None, y=None, **options):
        fit = super()._prepare_fit(X, lengths, y, **options)
        self.n_trials_ = _common_total(fit.X)
        return fit

    def _prepare_source_fit(self, source, lengths=None, y=None, **options):
        trials = self._given_trials()
        if trials is not None and trials.ndim == 1:
            raise ParameterError(
                "a MultinomialHMM fits a data source with n_trials as one number for every "
                "row or None (every row's own total), not one per row: a chunk's rows do not "
                "know their place in the data. Pass the array to fit in memory, or "
                "n_trials=None"
            )
        fit = super()._prepare_source_fit(source, lengths, y, **options)
        self.n_trials_ = None if trials is None else int(trials)
        return fit

    def _online_X(self, X, *, first: bool) -> torch.Tensor:
        """partial_fit's rows; ``n_trials_`` stays the one total of every row read (None once
        two differ)."""
        X = super()._online_X(X, first=first)
        total = _common_total(X)
        self.n_trials_ = total if getattr(self, "n_trials_", total) == total else None
        return X

    # ------------------------------------------------------------------ priors
    def _prior_specs(self, d):
        k = self.n_components
        return {
            **super()._prior_specs(d),
            "emissionprob_prior": Prior(
                "positive",
                None if d is None else ((k, d),),
                "Dirichlet concentrations of every state's category probabilities, "
                "(n_components, n_features); 1 = no prior, e.g. 2.0 adds one pseudo-count",
            ),
        }

    # ------------------------------------------------------------------ emissions
    def _emission_params(self):
        ep = self._tensor(self.emissionprob_, "emissionprob_")
        k, d = self.n_components, self.n_features
        if ep.shape != (k, d):
            raise ParameterError(
                f"emissionprob_ must have shape ({k}, {d}) (n_components, n_features), got "
                f"{tuple(ep.shape)}"
            )
        check_distribution(ep, "emissionprob_")
        return {"emissionprob": ep}

    def _n_categories(self, X) -> int:
        return X.shape[1]

    def _init_emissions_from_labels(self, params, X, labels, gen):
        """Every state's category frequencies in its labelled rows, with one pseudo-count per
        category (Laplace's rule, as :class:`CategoricalHMM`), when ``init_params`` asks for
        emission probabilities."""
        if not self._needs_init("e", "emissionprob_"):
            return {}
        resp = self._labelled_states(labels)  # (n, k)
        counts = E.multinomial_stats(X, resp)["obs"] + 1.0  # (k, d)
        return {"emissionprob": counts / counts.sum(1, keepdim=True)}

    def _emission_log_likelihood(self, params, X, exact=True):
        """log Mult(x_t | n_t, p_k) (t, k): -inf where x_t counts a category p_k gives
        probability 0 (``exact=False``: log 0 clamped, see :class:`ZeroCountEmissions`)."""
        ll = multinomial_log_prob(X, params["emissionprob"])  # (t, k)
        return self._exact_zeros(params, X, ll) if exact else ll

    def _emission_stats(self, params, X, gamma):
        return E.multinomial_stats(X, gamma)

    def _emission_n_params(self):
        return {"e": self.n_components * (self.n_features - 1)}

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """Draw ``n_samples`` steps of one sequence: (X (n, n_features) int64 counts, states
        (n,)); every row has the one number of trials of :meth:`_sampling_trials` (ParameterError
        when the model has none: set ``n_trials``)."""
        check_is_fitted(self, "startprob_")
        check_sample_count(n_samples, getattr(self, "n_features", 1))  # before n_trials
        self._sampling_trials()
        return super().sample(n_samples, random_state, currstate)

    def _sample_emissions(self, params, states, gen):
        probs = params["emissionprob"].double().cpu()[states]  # (n, d)
        return E.multinomial_sample(self._sampling_trials(), probs, gen).to(torch.int64)

    # ------------------------------------------------------------------ persistence
    #: the one total of the fitted rows (None: they differ), read by sample
    _state_fields: ClassVar[dict[str, str]] = {"n_trials_": "int?"}

    def _get_state(self):
        tensors, extra = super()._get_state()
        extra["n_trials_"] = getattr(self, "n_trials_", None)
        return tensors, extra

    def _set_state(self, tensors, extra):
        super()._set_state(tensors, extra)  # checks the fields' kinds: n_trials_ an int or None
        trials = extra.get("n_trials_")
        if trials is not None and not 0 <= trials <= MAX_TRIALS:
            raise ModelFileError(
                "the model file's header field 'extra.n_trials_' must be a number of trials "
                f"from 0 to 2^53 or null, got {trials!r}; the file was altered or is damaged"
            )
        self.n_features = self.emissionprob_.shape[1]
        self.n_trials_ = trials
