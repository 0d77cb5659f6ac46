"""Hidden Markov models with categorical and Poisson emissions (hmmlearn's interface)."""

from __future__ import annotations

import math

import numpy as np
import torch

from latentfit._validation import (
    as_float_tensor,
    as_numeric_array,
    check_allocation,
    check_count_range,
    check_distribution,
    max_inferred_categories,
)
from latentfit.em.hmm import emissions as E
from latentfit.em.hmm.base import BaseHMM
from latentfit.em.hmm.online import OnlineHMMMixin
from latentfit.em.hmm.settings import Prior
from latentfit.em.mixture.discrete import zero_count_cells
from latentfit.errors import BatchRowError, DataError, ParameterError
from latentfit.io import Stored, serializable

__all__ = ["CategoricalHMM", "PoissonHMM", "ZeroCountEmissions"]


def _numpy_rng(gen: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from the torch generator (explicit randomness only)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    return np.random.default_rng(seed)


def _first_bad(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


def _check_range(t: torch.Tensor, n_sym: int) -> None:
    """Refuse symbols ``t`` (n,) outside ``0..n_sym-1``, naming the first such row."""
    big = t >= n_sym
    if bool(big.any()):
        i = _first_bad(big)[0]
        raise BatchRowError(
            i,
            f"row {{row}} of X holds symbol {int(t[i])} but the model emits symbols "
            f"0..{n_sym - 1} (n_features={n_sym}); for more symbols fit afresh with "
            f"n_features={int(t.max()) + 1} or more",
        )


class ZeroCountEmissions:
    """Count emissions whose parameter ``_zero_param`` (k, d) may be exactly 0, the MLE for
    a feature a state's rows never count (MultinomialHMM's categories, PoissonHMM's rates).
    A row counting such a feature is impossible in that state (log-likelihood -inf); the
    log-density clamps log 0 to about -708 only so that 0 · log 0 = 0. A fit's E-step and
    partial_fit weigh a row that no state can emit (a feature the previous fit never saw)
    with the clamped log instead, so that they go on and learn the feature."""

    _zero_param = ""
    #: what a feature is called in the messages (the prior that keeps every one possible
    #: is the model's ``_prior_hint``)
    _feature_word = "category"

    def _exact_zeros(self, params, X, ll):
        """``ll`` (t, k) with -inf where row t counts a feature state k gives probability 0."""
        p = params[self._zero_param]  # (k, d)
        if not bool((p == 0).any()):
            return ll
        return ll.masked_fill(zero_count_cells(X, p).any(2), -math.inf)

    def _fit_emissions(self, params, X, ll):
        if not set(self._emission_letters) & set(self.params):
            return ll  # a fit that keeps the emissions cannot learn it: -inf, named
        none = torch.isneginf(ll).all(1)  # (t,) rows no state can emit
        if bool(none.any()):
            ll[none] = self._emission_log_likelihood(params, X[none], exact=False)
        return ll

    def _kept_emissions(self) -> str:
        """The end of a message about an impossible row when the fit keeps the emissions."""
        letters = self._emission_letters
        if set(letters) & set(self.params):
            return ""
        return (
            f"; fit and partial_fit keep the emission parameters (params={self.params!r} has "
            f"no {letters!r}): add {letters!r} to params to learn it"
        )

    def _impossible_outcomes(self, X) -> torch.Tensor:
        """(n, d) True where row n counts feature j, which every state gives probability 0."""
        never = (self._emission_params()[self._zero_param] == 0).all(0)  # (d,)
        return (self._checked_X(X, fitting=False) > 0) & never

    def _why_impossible(self, params, X, i):
        what, hint = self._feature_word, self._prior_hint
        never = ((X[i] > 0) & (params[self._zero_param] == 0).all(0)).nonzero()
        if not len(never):
            return (
                f"each state gives one of the {what}s it counts probability 0 (zero entries of "
                f"{self._zero_param}_); fit on data that show such rows, or with {hint} to keep "
                f"every {what} possible"
            )
        j = int(never[0])
        return (
            f"it counts {X[i, j].item():g} in {what} {j} (column {j}), which every state gives "
            f"probability 0 (as a fit does for a {what} its rows never count). Fit on data "
            f"that count it, or with {hint} to keep every {what} possible" + self._kept_emissions()
        )


class EmissionProbabilities:
    """The emissions of an HMM whose states each hold one distribution over ``d`` categories,
    ``emissionprob_`` (k, d), with a Dirichlet(``emissionprob_prior``) prior: CategoricalHMM
    (one symbol a step) and MultinomialHMM (counts of many trials). A model gives
    ``_n_categories(X)`` (from the rows the fit starts from); the start, the M-step (the Dirichlet MAP of the expected counts) and
    the stored attribute are shared."""

    _emission_letters = "e"
    _emission_attributes = ("emissionprob_",)
    #: the prior that keeps every category possible, for the messages that name one
    _prior_hint = "emissionprob_prior=2.0"

    def _init_emissions(self, X, gen):
        if not self._needs_init("e", "emissionprob_"):
            return self._emission_params()
        k, d = self.n_components, self._n_categories(X)
        u = torch.rand(k, d, generator=gen, dtype=torch.float64, device=gen.device)
        return {"emissionprob": (u / u.sum(1, keepdim=True)).to(self._device, self._dtype)}

    def _emission_mstep(self, params, stats):
        if "e" not in self.params:
            return {}, []
        ep, bad = E.categorical_mstep(stats, params["emissionprob"], self.emissionprob_prior)
        return {"emissionprob": ep}, bad

    def _emission_log_prior(self, params):
        if "e" not in self.params:
            return 0.0
        return E.dirichlet_log_prior(params["emissionprob"], self.emissionprob_prior)

    def _set_emission_attributes(self, params):
        self.emissionprob_ = params["emissionprob"].cpu().numpy()

    def _emission_specs(self, k, d):
        """One distribution over the ``d`` categories per state: rows on the simplex."""
        return {"emissionprob_": Stored(None if d is None else (k, d), "simplex")}


@serializable
class CategoricalHMM(EmissionProbabilities, OnlineHMMMixin, BaseHMM):
    """Hidden Markov model with categorical emissions (symbols 0..n_features-1).

    hmmlearn's ``CategoricalHMM``: X is (n, 1) of integer symbols; ``emissionprob_`` (k,
    n_features) with a Dirichlet(``emissionprob_prior``) prior. ``n_features`` may be given;
    otherwise it is the largest symbol plus one, stored in ``n_features_`` (the constructor
    argument is left as given) — when the symbols are dense: a largest symbol beyond
    max(n_samples, 1024) is refused (DataError) rather than sizing the model by it; pass
    ``n_features`` then. A ``n_features`` whose parameters would not fit in memory is refused
    up front (ResourceLimitError). A continued fit (``init_params`` without "e") or
    ``partial_fit`` that meets a symbol no state gives any probability (one the previous fit
    never saw, below ``n_features``) learns it, as :class:`MultinomialHMM` learns a category
    (hmmlearn's fit turns such a row into NaN); a symbol at or beyond ``n_features`` is
    refused, by row and symbol: pass a larger ``n_features`` and fit afresh.
    """

    def __init__(
        self,
        n_components=1,
        startprob_prior=1.0,
        transmat_prior=1.0,
        *,
        emissionprob_prior=1.0,
        n_features=None,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="ste",
        init_params="ste",
        implementation="log",
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())

    def _n_symbols(self) -> int | None:
        if getattr(self, "n_features_", None) is not None:
            return self.n_features_
        if self.n_features is not None:
            return self._given_n_symbols()
        if hasattr(self, "emissionprob_"):
            return int(np.asarray(self.emissionprob_).shape[1])
        return None

    def _infer_n_features(self) -> None:
        # Parameters set by hand give the symbol count through emissionprob_ (_n_symbols):
        # writing it into n_features would change the constructor's argument, and a later
        # fit on more symbols would be refused.
        pass

    def _given_n_symbols(self) -> int:
        """The constructor's ``n_features``, checked."""
        K = self.n_features
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise ParameterError(
                f"n_features must be a positive integer (symbols 0..n_features-1), got {K!r}"
            )
        self._check_size(int(K))
        return int(K)

    def _check_size(self, n_sym: int) -> None:
        """Refuse a symbol count whose parameters cannot be held: emissionprob_, its log,
        the statistics and the M-step's copies, about six (k, n_sym) arrays."""
        itemsize = torch.finfo(self._dtype).bits // 8
        check_allocation(
            6 * self.n_components * n_sym * max(itemsize, 8),
            f"CategoricalHMM with {self.n_components} states x {n_sym:,} symbols",
            device=self._device,
            hint="pass n_features = the number of distinct symbols, after recoding them as "
            "0..n_features-1 (numpy.unique(X, return_inverse=True))",
        )

    def _inferred_n_symbols(self, t: torch.Tensor) -> int:
        """The largest symbol plus one, when the symbols are dense (see the class doc)."""
        top = int(t.max())
        limit = max_inferred_categories(t.shape[0])
        if top + 1 > limit:
            i = int(t.argmax())
            raise DataError(
                f"row {i} of X holds symbol {top}, far beyond the {t.shape[0]} samples: the "
                f"symbols are not dense, and inferring {top + 1:,} symbols from it would "
                "size the model by that value. Recode the symbols as 0..K-1 "
                "(numpy.unique(X, return_inverse=True)) or pass n_features=K"
            )
        self._check_size(top + 1)
        return top + 1

    def _fit_n_symbols(self, t: torch.Tensor) -> int:
        """The symbol count a fit on the symbols ``t`` uses: ``n_features`` when given, else the
        largest symbol plus one, else (emissions kept from before) the columns of
        ``emissionprob_``. A previous fit's ``n_features_`` does not count."""
        if self.n_features is not None:
            return self._given_n_symbols()
        if "e" in self.init_params or not hasattr(self, "emissionprob_"):
            return self._inferred_n_symbols(t)
        return int(np.asarray(self.emissionprob_).shape[1])

    # Streamed chunks are checked like arrays. Without n_features the symbol count would be
    # read from the whole data before the first pass: then the model is fitted in memory.
    @property
    def _stream_check(self):
        if self.n_features is None:
            return False
        n_sym = self._given_n_symbols()
        return lambda X: _check_range(self._as_symbols(X), n_sym)

    def _prepare_source_fit(self, source, lengths=None, y=None, **options):
        if self.n_features is None:
            raise ParameterError(
                "CategoricalHMM fits a data source only when n_features (the number of "
                "symbols) is given: pass n_features=K for symbols 0..K-1, or pass the array of "
                "symbols to fit in memory"
            )
        self.n_features_ = self._given_n_symbols()
        return super()._prepare_source_fit(source, lengths, y, **options)

    def _set_stream_features(self, source) -> None:
        # n_features is the symbol count here, not the source's column count (one column).
        if source.n_features != 1:
            raise DataError(
                f"{source.name} has {source.n_features} columns; CategoricalHMM takes one "
                "column of integer symbols"
            )

    def _stream_batch(self, X: torch.Tensor) -> torch.Tensor:
        return X[:, 0].to(torch.int64)  # (t,) symbols, checked by _stream_check

    def _as_symbols(self, X) -> torch.Tensor:
        """X (n, 1) or (n,) of non-negative integer symbols as an int64 tensor (n,) on the
        model's device (an array, or a streamed chunk: a floating tensor on that device)."""
        if torch.is_tensor(X):
            t = X.detach()
        else:
            arr = as_numeric_array(X, "X")
            if arr.dtype.kind in "iub":
                t = torch.as_tensor(arr.astype(np.int64))
            else:
                t = as_float_tensor(arr, name="X", ndim=None)
        if t.dim() == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.dim() != 1:
            raise DataError(
                f"X must be a column (n_samples, 1) of integer symbols, got shape {tuple(t.shape)}"
            )
        if t.shape[0] == 0:
            raise DataError("X has 0 samples; at least 1 is needed")
        t = t.to(self._device)
        if t.is_floating_point():
            x = as_float_tensor(t, name="X", ndim=1, dtype=t.dtype, device=t.device)
            frac = x != torch.round(x)
            if bool(frac.any()):
                i = _first_bad(frac)[0]
                raise BatchRowError(
                    i,
                    f"symbols must be integers; row {{row}} of X holds {x[i].item()!r}. Encode the "
                    "categories as 0..n_features-1",
                )
            wide = x.abs() >= 2.0**63  # past int64, whose cast would wrap (1e39 to -2^63)
            if bool(wide.any()):
                i = _first_bad(wide)[0]
                raise BatchRowError(
                    i,
                    f"symbols must be codes 0..n_features-1; row {{row}} of X holds "
                    f"{x[i].item():g}, beyond any code. Encode the categories as 0..n_features-1",
                )
        t = t.to(torch.int64)
        neg = t < 0
        if bool(neg.any()):
            i = _first_bad(neg)[0]
            raise BatchRowError(
                i, f"symbols must be non-negative; row {{row}} of X holds {int(t[i])}"
            )
        return t

    def _validate_X(self, X, *, fitting: bool) -> torch.Tensor:
        t = self._as_symbols(X)
        n_sym = self._fit_n_symbols(t) if fitting else self._n_symbols()
        if n_sym is not None:
            _check_range(t, n_sym)
        if fitting:
            self.n_features_ = n_sym
        return t

    def _prior_specs(self, d):
        k = self.n_components
        return {
            **super()._prior_specs(d),
            "emissionprob_prior": Prior(
                "positive",
                None if d is None else ((k, d),),
                "Dirichlet concentrations of every state's symbol probabilities, "
                "(n_components, n_features); 1 = no prior, e.g. 2.0 adds one pseudo-count",
            ),
        }

    def _prior_features(self) -> int:
        return self._n_symbols()

    def _emission_params(self):
        ep = self._tensor(self.emissionprob_)
        k, n_sym = self.n_components, self._n_symbols()
        if ep.shape != (k, n_sym):
            raise ParameterError(
                f"emissionprob_ must have shape ({k}, {n_sym}), got {tuple(ep.shape)}"
            )
        check_distribution(ep, "emissionprob_")
        return {"emissionprob": ep}

    def _n_categories(self, X) -> int:
        return self.n_features_

    def _init_emissions_from_labels(self, params, X, labels, gen):
        """Every state's symbol frequencies in its labelled rows, with one pseudo-count per
        symbol (Laplace's rule: a symbol a state was not seen to emit keeps some probability,
        which EM could never give back), when ``init_params`` asks for emission
        probabilities."""
        if not self._needs_init("e", "emissionprob_"):
            return {}
        resp = self._labelled_states(labels)  # (n, k)
        counts = E.categorical_stats(X, resp, self.n_features_)["obs"] + 1.0  # (k, n_sym)
        return {"emissionprob": counts / counts.sum(1, keepdim=True)}

    def _emission_log_likelihood(self, params, X, exact=True):
        """log B[k, x_t] (t, k): -inf for a symbol state k gives probability 0 (``exact=False``:
        log 0 clamped to the log of the smallest normal number, about -708)."""
        ep = params["emissionprob"]  # (k, n_symbols)
        if not exact:
            ep = ep.clamp_min(torch.finfo(ep.dtype).tiny)
        return E.categorical_log_likelihood(X, ep)

    # A continued fit or partial_fit that meets a symbol no state emits (one the previous fit
    # never saw, within n_features) weighs its rows with the clamped log and learns the
    # symbol, as MultinomialHMM and PoissonHMM learn a new category or feature.
    _fit_emissions = ZeroCountEmissions._fit_emissions

    def _why_impossible(self, params, X, i):
        s = int(X[i])
        return (
            f"it holds symbol {s}, which every state gives probability 0 (column {s} of "
            "emissionprob_, as a fit makes it for a symbol its rows never show). Fit on data "
            f"that show it, or with {self._prior_hint} to keep every symbol possible"
            + ZeroCountEmissions._kept_emissions(self)
        )

    def _impossible_outcomes(self, X) -> torch.Tensor:
        """(n, 1) True where the symbol of row n has probability 0 under every state."""
        never = (self._emission_params()["emissionprob"] == 0).all(0)  # (n_symbols,)
        return never[self._checked_X(X, fitting=False)].unsqueeze(1)

    def _emission_stats(self, params, X, gamma):
        return E.categorical_stats(X, gamma, params["emissionprob"].shape[1])

    def _set_state(self, tensors, extra):
        super()._set_state(tensors, extra)
        self.n_features_ = self.emissionprob_.shape[1]

    def _emission_n_params(self):
        return {"e": self.n_components * (self._n_symbols() - 1)}

    def _sample_emissions(self, params, states, gen):
        probs = params["emissionprob"].double().cpu()[states]
        return torch.multinomial(probs, 1, generator=gen)


@serializable
class PoissonHMM(ZeroCountEmissions, OnlineHMMMixin, BaseHMM):
    """Hidden Markov model with independent Poisson counts per feature.

    hmmlearn's ``PoissonHMM``: ``lambdas_`` (k, d) with a Gamma(``lambdas_prior``,
    ``lambdas_weight``) prior. Initial rates are drawn as hmmlearn's, from a gamma
    distribution matching the mean and variance of the counts. A rate of 0 (the MLE for a
    feature a state's rows never count) makes a count there impossible in that state.
    """

    _zero_param = "lambdas"
    _feature_word = "feature"
    _prior_hint = "lambdas_prior=1.0"

    _emission_letters = "l"
    _emission_attributes = ("lambdas_",)

    def __init__(
        self,
        n_components=1,
        startprob_prior=1.0,
        transmat_prior=1.0,
        lambdas_prior=0.0,
        lambdas_weight=0.0,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stl",
        init_params="stl",
        implementation="log",
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())

    @property
    def _stream_check(self):
        """Streamed chunks: non-negative whole counts, as in memory."""
        return lambda X: self._validate_X(X, fitting=False)

    def _validate_X(self, X, *, fitting: bool) -> torch.Tensor:
        X = as_float_tensor(X, dtype=self._dtype, device=self._device)
        neg = X < 0
        if bool(neg.any()):
            i, j = _first_bad(neg)
            raise BatchRowError(
                i, f"counts must be non-negative; X[{{row}}, {j}] = {X[i, j].item()}"
            )
        frac = X != torch.round(X)
        if bool(frac.any()):
            i, j = _first_bad(frac)
            raise BatchRowError(
                i, f"counts must be whole numbers; X[{{row}}, {j}] = {X[i, j].item()} is fractional"
            )
        check_count_range(X)
        if fitting:
            self.n_features = X.shape[1]
        elif X.shape[1] != self.n_features:
            raise DataError(
                f"X has {X.shape[1]} features but the model was fitted with {self.n_features}"
            )
        return X

    def _prior_specs(self, d):
        """hmmlearn's Gamma(``lambdas_prior``, ``lambdas_weight``) prior on the rates: shape
        and rate >= 0 (0, 0: none), per state and feature (k, d) and per state (k,)."""
        k = self.n_components
        return {
            **super()._prior_specs(d),
            "lambdas_prior": Prior(
                "nonnegative",
                None if d is None else ((k, d),),
                "the Gamma prior's shape: pseudo-counts added to every state's total count",
            ),
            "lambdas_weight": Prior(
                "nonnegative",
                ((k,),),
                "the Gamma prior's rate: pseudo-steps added to every state's time",
            ),
        }

    def _emission_params(self):
        lam = self._tensor(self.lambdas_)
        k = self.n_components
        if lam.dim() != 2 or lam.shape[0] != k or lam.shape[1] != self.n_features:
            raise ParameterError(
                f"lambdas_ must have shape ({k}, {self.n_features}), got {tuple(lam.shape)}"
            )
        if bool((lam < 0).any()) or not bool(torch.isfinite(lam).all()):
            raise ParameterError("lambdas_ must be non-negative and finite")
        return {"lambdas": lam}

    def _init_emissions(self, X, gen):
        if not self._needs_init("l", "lambdas_"):
            return self._emission_params()
        # The moments of X / s, s a power of two: exact, and their squares cannot overflow
        # (counts up to 1.8e308 are valid); s = 1 unless the counts pass 2^400.
        s = math.ldexp(1.0, max(math.frexp(float(X.max()))[1] - 400, 0))
        Xs = X if s == 1.0 else X / s
        mean, var = float(Xs.mean()), float(Xs.var()) if X.numel() > 1 else 0.0
        k, d = self.n_components, X.shape[1]
        if mean <= 0:
            lam = np.full((k, d), 1e-3)
        elif var <= 0:
            lam = np.full((k, d), mean * s)
        else:
            lam = _numpy_rng(gen).gamma(mean**2 / var, s * (var / mean), size=(k, d))
        mean *= s
        lam = np.maximum(lam, 1e-3 * max(mean, 1e-3))
        return {"lambdas": self._tensor(lam)}

    def _init_emissions_from_labels(self, params, X, labels, gen):
        """Every state's mean counts in its labelled rows (floored as the unlabelled start,
        so that no rate is 0), when ``init_params`` asks for rates."""
        if not self._needs_init("l", "lambdas_"):
            return {}
        resp = self._labelled_states(labels)  # (n, k)
        lam = (resp.T @ X) / resp.sum(0).unsqueeze(1)  # (k, d)
        return {"lambdas": lam.clamp_min(1e-3 * max(float(X.mean()), 1e-3))}

    def _emission_log_likelihood(self, params, X, exact=True):
        ll = E.poisson_log_likelihood(X, params["lambdas"])  # (t, k)
        return self._exact_zeros(params, X, ll) if exact else ll

    def _emission_stats(self, params, X, gamma):
        return E.poisson_stats(X, gamma)

    def _emission_mstep(self, params, stats):
        if "l" not in self.params:
            return {}, []
        lam, bad = E.poisson_mstep(
            stats, params["lambdas"], self.lambdas_prior, self.lambdas_weight
        )
        return {"lambdas": lam}, bad

    def _emission_log_prior(self, params):
        if "l" not in self.params:
            return 0.0
        return E.poisson_log_prior(params["lambdas"], self.lambdas_prior, self.lambdas_weight)

    def _set_emission_attributes(self, params):
        self.lambdas_ = params["lambdas"].cpu().numpy()

    def _emission_specs(self, k, d):
        """Poisson rates (k, d), non-negative (0: a feature the state never counts)."""
        return {"lambdas_": Stored(None if d is None else (k, d), "nonnegative")}

    def _set_state(self, tensors, extra):
        super()._set_state(tensors, extra)
        self.n_features = self.lambdas_.shape[1]

    def _emission_n_params(self):
        return {"l": self.n_components * self.n_features}

    def _sample_emissions(self, params, states, gen):
        rates = params["lambdas"].double().cpu()[states]
        # counts, as hmmlearn's and the multinomial's draws (torch.poisson returns floats)
        return torch.poisson(rates, generator=gen).to(torch.int64)
