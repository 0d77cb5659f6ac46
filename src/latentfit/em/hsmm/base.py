"""The hidden semi-Markov model estimator: the HMMs' interface with explicit state durations.

:class:`HSMMMixin` turns an HMM class of :mod:`latentfit.em.hmm` into its semi-Markov twin:
the emissions (validation, initialisation, log-densities, statistics, M-step, sampling) are
the HMM's, imported and unchanged; the transitions become segment-to-segment (zero diagonal)
and every state gets a duration distribution over 1..``max_duration``
(:mod:`~latentfit.em.hsmm.durations`). Fitting is EM through the HMMs' estimator base
(:class:`latentfit.em.base.EMEstimator`: :func:`latentfit.em.driver.run_em` and the record of
its result) with the hooks below, whose E-step is the forward-backward recursion of
:mod:`latentfit.em.hsmm.inference` (Yu 2010).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from latentfit._validation import (
    check_allocation,
    check_distribution,
    check_feature_names,
    check_sample_count,
    check_state_index,
    make_generator,
)
from latentfit.em.base import EMFit
from latentfit.em.hmm.emissions import draws_in_dtype, map_transitions, with_counts
from latentfit.em.hmm.inference.posterior import condition_on_states
from latentfit.em.hmm.labels import check_labels
from latentfit.em.hmm.monitor import warn_unvisited
from latentfit.em.hmm.sequences import check_lengths
from latentfit.em.hsmm import durations as dur
from latentfit.em.hsmm import inference as inf
from latentfit.em.paths import segment_chain
from latentfit.errors import DataError, ModelFileError, ParameterError
from latentfit.io import Stored, check_stored_tensors

__all__ = ["HSMMMixin"]

#: the most states x durations the negative binomial's M-step is allowed: about 64 float64
#: values each for its gradient (1 GiB) and, measured, some 14 s per EM iteration
_NB_WORK = 1 << 21

#: segments drawn a batch by ``sample`` (two uniforms each, 1 MB)
_SEGMENT_BATCH = 1 << 16

_DURATION_ATTRIBUTES = {
    "poisson": ("duration_lambdas_",),
    "negative_binomial": ("duration_r_", "duration_p_"),
    "nonparametric": ("duration_probs_",),
}


class _HSMMHooks:
    """EM for an HSMM as the driver's hooks; the one batch is the whole data (all sequences),
    with its known states ``labels`` (t,) (−1 where unknown) or None."""

    def __init__(
        self,
        model: HSMMMixin,
        X: torch.Tensor,
        labels: torch.Tensor | None = None,
        lengths: list[int] | None = None,
    ):
        self.model, self.X, self.labels = model, X, labels
        self.lengths = [X.shape[0]] if lengths is None else lengths

    def initialize(self, data, generator):
        return self.model._initial_params(self.X, generator, self.labels, lengths=self.lengths)

    def estep(self, params, batch):
        X, lengths = batch
        m = self.model
        ll = m._fit_emissions(params, X, m._emission_log_likelihood(params, X))  # (t, k)
        post = m._posterior(params, X, ll, lengths, self.labels)
        stats = m._emission_stats(params, X, post.posteriors)
        stats["durations"] = post.duration_counts
        return with_counts(stats, post)

    def mstep(self, params, stats):
        m = self.model
        # the zero diagonal is kept: dirichlet_map keeps structural zeros. A state that no
        # segment leaves (seen only at the ends of sequences) keeps its row, unreported.
        new, _ = map_transitions(m, params, stats)
        unvisited: list[int] = []
        if "d" in m.params:
            durations, unvisited = m._duration_mstep(params, stats["durations"])
            new.update(durations)
        emis, states = m._emission_mstep(params, stats)
        new.update(emis)
        unvisited = sorted(set(unvisited) | set(states))
        warn_unvisited(m, unvisited, "no segment is explained by them", "parameters")
        return new

    def lower_bound(self, params, stats):
        return float(stats["log_likelihood"].sum())

    def log_prior(self, params):
        """The log prior that MAP-EM adds (:meth:`~latentfit.em.hmm.base.BaseHMM._log_prior`)."""
        return self.model._log_prior(params)


class HSMMMixin:
    """Explicit-duration hidden semi-Markov model (Yu 2010), mixed in before an HMM class.

    Settings added to the HMM's: ``max_duration`` D (segments last 1..D steps),
    ``duration`` (``"poisson"``, ``"negative_binomial"`` or ``"nonparametric"``) and
    ``right_censoring`` (the last segment of a sequence may be cut by its end: it then
    counts with the survival P(d ≥ seen steps); False: it must end at the last step). The
    letter ``d`` in ``params``/``init_params`` stands for the durations.
    """

    implementation = "log"  # the HMMs' setting; an HSMM always computes in log space

    # ------------------------------------------------------------------ settings
    @property
    def _duration_attributes(self) -> tuple[str, ...]:
        return _DURATION_ATTRIBUTES[self.duration]

    def _param_names(self) -> tuple[str, ...]:
        return ("startprob_", "transmat_", *self._emission_attributes, *self._duration_attributes)

    def _check_parameters(self):
        k = self.n_components
        if isinstance(k, int | np.integer) and not isinstance(k, bool) and k == 1:
            raise ParameterError(
                "n_components must be at least 2 for a semi-Markov model: a segment is always "
                "followed by one of another state (the transition diagonal is zero)"
            )
        super()._check_parameters()
        if self.duration not in dur.DURATION_FAMILIES:
            raise ParameterError(
                f"duration must be one of {list(dur.DURATION_FAMILIES)}, got {self.duration!r}"
            )
        d = self.max_duration
        if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
            raise ParameterError(
                f"max_duration must be an integer >= 1 (the longest segment, in steps), got {d!r}"
            )
        if not isinstance(self.right_censoring, bool | np.bool_):
            raise ParameterError(
                f"right_censoring must be True or False, got {self.right_censoring!r}"
            )
        self._check_duration_work(k, int(d))

    def _check_duration_work(self, k: int, d: int) -> None:
        """Refuse, before anything is allocated, durations whose work grows with D beyond what
        can be held or done. A Poisson pmf is computed over the durations the data and its
        mass reach, never D of them (:func:`~latentfit.em.hsmm.durations.duration_support`):
        nothing to check. A nonparametric pmf is a (k, D) parameter, held in a few copies
        (ResourceLimitError giving the bytes). The negative binomial's M-step runs an
        optimiser over the pmf of all D durations, about 64 float64 values per state and
        duration held for its gradient and some 100 passes per EM iteration: refused beyond
        ``_NB_WORK`` (ParameterError), and against the memory."""
        name = type(self).__name__
        if self.duration == "nonparametric":
            itemsize = torch.finfo(self._dtype).bits // 8
            check_allocation(
                4 * k * d * itemsize,
                f"{name} nonparametric durations of {k} states x max_duration={d:,}",
                device=self._device,
                hint="choose max_duration near the longest segment you expect: with a "
                "nonparametric pmf no duration past the longest sequence gets probability, "
                "and max_duration = that length gives the same fit",
            )
        elif self.duration == "negative_binomial":
            if k * d > _NB_WORK:
                raise ParameterError(
                    f"{name}(duration='negative_binomial', max_duration={d:,}) with {k} "
                    f"states: its M-step fits the pmf truncated at max_duration over all "
                    f"n_components x max_duration = {k * d:,} durations on every EM "
                    f"iteration, more than the {_NB_WORK:,} it is allowed. Choose "
                    f"max_duration near the longest segment you expect (at most "
                    f"{_NB_WORK // k:,} with {k} states), or duration='poisson' or "
                    "'nonparametric', whose work does not grow with max_duration past the data"
                )
            check_allocation(
                64 * 8 * k * d,
                f"{name} negative binomial durations of {k} states x max_duration={d:,}",
                device=self._device,  # in float64 whatever the dtype
                hint="choose max_duration near the longest segment you expect",
            )

    def _check_messages(self, lengths: list[int]) -> None:
        """Refuse, before allocating them, forward-backward messages (T, K, min(D, T)) that
        cannot be held (ResourceLimitError giving the bytes)."""
        t, k, d = max(lengths), self.n_components, int(self.max_duration)
        check_allocation(
            inf.message_bytes(t, k, d, 8),  # float64 whatever the dtype (_inference_args)
            f"{type(self).__name__} forward-backward over a sequence of {t:,} steps x {k} "
            f"states x {min(d, t):,} durations",
            device=self._device,
            hint="lower max_duration, or cut the series into shorter sequences (lengths)",
        )

    # ------------------------------------------------------------------ parameters
    def _given_params(self) -> dict[str, torch.Tensor]:
        missing = [n for n in self._duration_attributes if not hasattr(self, n)]
        if missing and hasattr(self, "startprob_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance has no {missing}: call 'fit', or set "
                f"every parameter ({list(self._param_names())}) by hand before using it"
            )
        return super()._given_params()

    def _checked_params(self) -> dict[str, torch.Tensor]:
        params = super()._checked_params()
        self._check_zero_diagonal(params["transmat"])
        params.update(self._duration_params())
        return params

    @staticmethod
    def _check_zero_diagonal(transmat: torch.Tensor) -> None:
        diag = transmat.diagonal()
        bad = (diag != 0).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise ParameterError(
                f"transmat_[{i}, {i}] = {diag[i].item():.6g}: a semi-Markov model has no "
                "self-transitions (the time spent in a state is its duration); set the "
                "diagonal to 0 and renormalise the rows"
            )

    def _duration_params(self) -> dict[str, torch.Tensor]:
        k, d = self.n_components, int(self.max_duration)
        out = {}
        for name in self._duration_attributes:
            value = self._tensor(getattr(self, name), name)
            shape = (k, d) if name == "duration_probs_" else (k,)
            if tuple(value.shape) != shape:
                raise ParameterError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
            if not bool(torch.isfinite(value).all()):
                raise ParameterError(f"{name} must hold finite numbers")
            out[name.rstrip("_")] = value
        if self.duration == "nonparametric":
            check_distribution(out["duration_probs"], "duration_probs_")
        elif self.duration == "poisson":
            if bool((out["duration_lambdas"] <= 0).any()):
                raise ParameterError("duration_lambdas_ must be positive (Poisson means of d - 1)")
        else:
            if bool((out["duration_r"] <= 0).any()):
                raise ParameterError("duration_r_ must be positive (negative binomial counts)")
            p = out["duration_p"]
            if bool(((p <= 0) | (p >= 1)).any()):
                raise ParameterError("duration_p_ must lie strictly between 0 and 1")
        return out

    def _initial_durations(self) -> dict[str, torch.Tensor]:
        """Starting durations: the middle of 1..D on average, spread out."""
        k, d = self.n_components, int(self.max_duration)
        dt, dev = self._dtype, self._device
        mean = max((d - 1) / 2, 0.5)  # of d − 1
        if self.duration == "poisson":
            return {"duration_lambdas": torch.full((k,), mean, dtype=dt, device=dev)}
        if self.duration == "negative_binomial":
            r = torch.full((k,), 2.0, dtype=dt, device=dev)
            return {"duration_r": r, "duration_p": mean / (r + mean)}
        return {"duration_probs": torch.full((k, d), 1.0 / d, dtype=dt, device=dev)}

    def _initial_params(
        self,
        X: torch.Tensor,
        gen: torch.Generator,
        labels: torch.Tensor | None = None,
        *,
        lengths: list[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        params = super()._initial_params(X, gen, labels)
        if self._needs_init("t", "transmat_"):
            # Dirichlet(1) rows over the other states: the HMM's draw without its diagonal
            tm = params["transmat"].clone()
            tm.fill_diagonal_(0.0)
            params["transmat"] = tm / tm.sum(1, keepdim=True)
        else:
            self._check_zero_diagonal(params["transmat"])
        if any(not hasattr(self, n) for n in self._duration_attributes) or "d" in self.init_params:
            params.update(self._initial_durations())
            params.update(self._durations_of_runs(params, X, lengths or [X.shape[0]]))
        else:
            params.update(self._duration_params())
        return params

    def _durations_of_runs(self, params, X, lengths: list[int]) -> dict[str, torch.Tensor]:
        """Starting durations from the data: the run lengths of the most likely state of
        every row under the starting emissions (k-means for Gaussians), cut at the ends of
        the sequences, then one M-step of the durations on them, smoothed by one count spread
        over the durations the data could show (1..min(D, longest sequence)) so that none of
        those starts impossible. Without it EM starting from long segments stays there on
        series whose state changes at nearly every step (the geyser's eruptions alternate).
        Spread over 1..1e6 on 30 rows the count set the starting mean duration to 5e4; spread
        over a nonparametric pmf's D durations it gave the durations no sequence can show
        most of the starting mass, and cost O(k D) per iteration. With it, any max_duration
        at or past the longest sequence starts (and, nonparametric, ends) where that length
        does."""
        labels = self._emission_log_likelihood(params, X).argmax(1)  # (t,)
        change = torch.ones(labels.shape[0] + 1, dtype=torch.bool, device=labels.device)
        change[1:-1] = labels[1:] != labels[:-1]
        bounds = torch.as_tensor(np.cumsum(lengths)[:-1], dtype=torch.int64)
        change[bounds.to(labels.device)] = True  # a run ends with its sequence
        edges = change.nonzero().flatten()
        k, seen = self.n_components, min(int(self.max_duration), max(lengths))
        runs = (edges[1:] - edges[:-1]).clamp_max(seen)  # (n_runs,)
        states = labels[edges[:-1]]
        counts = torch.zeros(k, seen, dtype=params["startprob"].dtype, device=labels.device)
        counts += 1.0 / seen
        counts.index_put_((states, runs - 1), torch.ones_like(runs, dtype=counts.dtype), True)
        return self._duration_mstep(params, counts)[0]

    def _set_attributes(self, params: dict[str, torch.Tensor]) -> None:
        super()._set_attributes(params)
        for name in self._duration_attributes:
            setattr(self, name, params[name.rstrip("_")].cpu().numpy())

    def _duration_terms(self, params, width: int) -> inf.DurationTerms:
        """The recursions' duration terms for sequences of at most ``width`` steps, over the
        durations the data and the pmf's mass reach (not D of them when D is larger; see
        :func:`~latentfit.em.hsmm.durations.duration_support`)."""
        log_pmf = dur.duration_log_pmf(self.duration, params, int(self.max_duration), width)
        return inf.duration_terms(log_pmf)

    def _duration_mstep(self, params, counts):
        """The durations' M-step on expected counts (k, W) of the durations 1..W ≤ D."""
        big_d = int(self.max_duration)
        if self.duration == "nonparametric":
            probs, bad = dur.nonparametric_mstep(counts, params["duration_probs"])
            return {"duration_probs": probs}, bad
        if self.duration == "poisson":
            lam, bad = dur.poisson_mstep(counts, params["duration_lambdas"], max_duration=big_d)
            return {"duration_lambdas": lam}, bad
        r, p, bad = dur.negative_binomial_mstep(
            counts, params["duration_r"], params["duration_p"], max_duration=big_d
        )
        return {"duration_r": r, "duration_p": p}, bad

    @property
    def duration_pmf_(self) -> np.ndarray:
        """p_k(d) (k, max_duration): the probability that a segment of state k lasts d steps."""
        check_is_fitted(self, "startprob_")
        params = self._duration_params()
        k, d = self.n_components, int(self.max_duration)
        check_allocation(
            3 * k * d * 8,
            f"{type(self).__name__}.duration_pmf_ of {k} states x max_duration={d:,}",
            hint="the parameters (duration_lambdas_, ...) give it; or choose max_duration "
            "near the longest segment you expect",
        )
        return dur.duration_log_pmf(self.duration, params, d).exp().cpu().numpy()

    def _duration_pmf(self) -> np.ndarray:
        """p_k(d) (k, W) over the durations 1..W ≤ D past which the pmf is 0 to double
        precision: ``duration_pmf_`` without those zeros, at a cost that does not grow with
        D beyond the pmf's mass (negative binomial: W = D)."""
        params = self._duration_params()
        return dur.duration_log_pmf(self.duration, params, int(self.max_duration), 1).exp()

    # ------------------------------------------------------------------ fitting
    def fit(self, X, lengths=None, y=None):
        """Estimate the parameters by EM (``n_init`` restarts, the best kept): the
        forward-backward over segments of :func:`~latentfit.em.hsmm.inference.hsmm_posterior`
        per sequence, then the HMM's emission M-step, the Dirichlet MAP of the start and
        transition probabilities and the durations' M-step. ``y`` (n_samples,): the known
        state of some steps, −1 elsewhere (as the HMMs take it): every E-step is conditioned on
        them (the emission log-likelihoods of the other states are −inf there)."""
        self._fit(X, lengths=lengths, y=y)
        return self

    def _after_fit(self, fit, result, X, **args) -> None:
        super()._after_fit(fit, result, X, **args)
        self.__dict__.pop("n_durations_", None)
        if self.duration == "nonparametric":
            # EM keeps a zero probability at zero, and the pmf starts at 0 past the longest
            # sequence: the durations the fit estimated are those of duration_support
            probs = {"duration_probs": torch.as_tensor(self.duration_probs_)}
            width = max(fit.hooks.lengths)
            self.n_durations_ = dur.duration_support(self.duration, probs, self.max_duration, width)

    def partial_fit(self, X, lengths=None, **options):
        """Not available: the HMM's online EM (Cappé 2011), which the emissions' class
        offers, has no duration statistics; run on a semi-Markov model it would treat the
        zero-diagonal ``transmat_`` as a chain that changes state at every step."""
        raise ParameterError(
            f"{type(self).__name__} has no partial_fit: online EM is implemented for the HMMs "
            "only, without the durations of a semi-Markov model; fit it on all the data with "
            f"fit(), or use {type(self).__mro__[2].__name__}.partial_fit for an online HMM fit"
        )

    def _prepare_source_fit(self, source, lengths=None, y=None) -> EMFit:
        raise ParameterError(
            f"{type(self).__name__} fits arrays held in memory; read the data source into "
            "an array (with its lengths) first"
        )

    def _prepare_fit(self, X, lengths=None, y=None) -> EMFit:
        check_feature_names(self, X, reset=True)
        X = self._checked_X(X, fitting=True)
        self._warn_constant_columns(X)
        lengths = check_lengths(lengths, X.shape[0])
        labels = check_labels(y, X.shape[0], self.n_components, X.device)
        self._check_messages(lengths)
        return EMFit(_HSMMHooks(self, X, labels, lengths), [(X, lengths)], X=X)

    # ------------------------------------------------------------------ inference
    def _impossible(self, params, X, per_seq: torch.Tensor, lengths, labels=None) -> None:
        """A sequence of probability zero: name the row no state can emit if there is one,
        else the sequence (its segments cannot be laid out under the durations)."""
        bad = (~torch.isfinite(per_seq)).nonzero().flatten()
        if not len(bad):
            return
        self._log_likelihoods(params, X, lengths)  # names an impossible row, if any
        i = int(bad[0])
        start = int(np.sum(lengths[:i]))
        raise DataError(
            f"sequence {i} (rows {start}..{start + lengths[i] - 1}) has probability zero under "
            f"this {type(self).__name__}: its {lengths[i]} steps cannot be cut into segments "
            "that the durations and transitions allow"
            + ("" if self.right_censoring else " ending at its last step")
            + ("" if labels is None else " through the known states (y)")
            + ". Try right_censoring=True, a larger max_duration, or refit"
            + ("" if labels is None else ", or check the labels (y) of that sequence")
        )

    def _inference_args(self, params, ll, lengths: list[int] | None = None):
        """The recursions' inputs, in float64 whatever the model's dtype: float32 messages
        in log space carry magnitudes of |log p(x_1..t)| and lose about 1e-3 of the
        posteriors over a few hundred steps (the HMMs rescale every step instead)."""
        p64 = {k: v.double() for k, v in params.items()}
        return (
            ll.double(),
            self._log(p64["startprob"]),
            self._log(p64["transmat"]),
            self._duration_terms(p64, ll.shape[0] if lengths is None else max(lengths)),
        )

    def _posterior(self, params, X, ll, lengths, labels=None) -> inf.HSMMPosterior:
        ll = condition_on_states(ll, labels, overwrite=True)
        post, per_seq = inf.posterior_sequences(
            *self._inference_args(params, ll, lengths),
            lengths,
            bool(self.right_censoring),
        )
        self._impossible(params, X, per_seq, lengths, labels)
        if not bool(torch.isfinite(post.posteriors).all()):
            # the log-space recursions carry |log p(x_1..t)|: beyond ~1e300 (counts near the
            # float64 range) their sums lose every digit, and the posteriors are NaN
            raise DataError(
                f"{type(self).__name__}: the posteriors of X are not numbers: its "
                f"log-likelihood ({float(per_seq.min()):.3g}) is beyond what the semi-Markov "
                "recursions resolve in float64 (largest |value| in X: "
                f"{float(X.double().abs().max()):.3g}). Rescale the data, or use the HMM of "
                "the same emissions, whose recursions rescale at every step"
            )
        return inf.HSMMPosterior(*(v.to(ll.dtype) for v in post))

    @staticmethod
    def _log(p: torch.Tensor) -> torch.Tensor:
        return torch.where(p > 0, p, 1.0).log().masked_fill(p <= 0, -np.inf)

    def score_samples(self, X, lengths=None, y=None):
        """(total log-likelihood, posteriors (n, k) p(z_t | x)); with known states ``y``
        (−1 where unknown): (log p(X, z_known), p(z_t | X, z_known))."""
        params, X, lengths, labels = self._prepare(X, lengths, y)
        self._check_messages(lengths)
        ll = self._emission_log_likelihood(params, X)
        post = self._posterior(params, X, ll, lengths, labels)
        return float(post.log_likelihood), post.posteriors.cpu().numpy()

    def score(self, X, lengths=None, y=None):
        """Total log-likelihood log p(X) summed over the sequences (-inf for a sequence the
        durations cannot produce, or with a symbol or count every state gives probability
        0); with known states ``y`` (−1 where unknown) log p(X, z_known)."""
        params, X, lengths, labels = self._prepare(X, lengths, y)
        if not inf._use_compiled(X, None):  # the compiled forward keeps one step
            self._check_messages(lengths)
        ll = self._emission_log_likelihood(params, X)
        ll = condition_on_states(ll, labels, overwrite=True)
        per_seq = inf.log_likelihood_sequences(
            *self._inference_args(params, ll, lengths),
            lengths,
            bool(self.right_censoring),
        )
        self._check_possible(params, X, per_seq.sum(), states=False)
        return float(per_seq.sum())

    def decode(self, X, lengths=None, algorithm=None, y=None):
        """(log-probability, states (n,)). ``"viterbi"``: the most probable segmentation
        (Viterbi over segments) and log p(X, segmentation); ``"map"``: the most probable
        state at every step and the sum of their posterior probabilities. With known states
        ``y`` (−1 where unknown) both are conditioned on them."""
        algorithm = algorithm or self.algorithm
        if algorithm not in ("viterbi", "map"):
            raise ParameterError(f"Unknown decoder {algorithm!r}; use 'viterbi' or 'map'")
        if algorithm == "map":
            _, post = self.score_samples(X, lengths, y)
            return float(post.max(1).sum()), post.argmax(1)
        params, X, lengths, labels = self._prepare(X, lengths, y)
        ll = condition_on_states(self._emission_log_likelihood(params, X), labels, overwrite=True)
        per_seq, path = inf.viterbi_sequences(
            *self._inference_args(params, ll, lengths),
            lengths,
            bool(self.right_censoring),
        )
        self._impossible(params, X, per_seq, lengths, labels)
        return float(per_seq.sum()), path.cpu().numpy()

    def sample(self, n_samples=1, random_state=None, currstate=None):
        """Draw ``n_samples`` steps of one sequence, segment by segment (state, duration,
        emissions); the last segment is cut at ``n_samples``: (X (n, ...), states (n,))."""
        check_is_fitted(self, "startprob_")
        params = self._given_params()
        # a CategoricalHSMM draws one symbol a step; its n_features (symbols) may be None
        n_samples = check_sample_count(n_samples, getattr(self, "n_features", None) or 1)
        k = self.n_components
        check_state_index(currstate, k)
        rs = self.random_state if random_state is None else random_state
        gen = make_generator(rs, "cpu")
        trans_cdf = params["transmat"].double().cpu().cumsum(1).numpy()
        dur_cdf = self._duration_pmf().double().cpu().cumsum(1).numpy()  # (k, W): 0 past W
        if currstate is None:
            s = int(torch.multinomial(params["startprob"].double().cpu(), 1, generator=gen))
        else:
            s = int(currstate)
        states = np.empty(n_samples, dtype=np.int64)
        pos = 0
        while pos < n_samples:  # a segment takes one step at least: n - pos segments suffice
            m = min(n_samples - pos, _SEGMENT_BATCH)
            u = torch.rand(2, m, generator=gen, dtype=torch.float64).numpy()
            pos, s = segment_chain(dur_cdf, trans_cdf, u[0], u[1], s, pos, states)
        X = self._sample_emissions(params, torch.from_numpy(states), gen)
        return draws_in_dtype(X, self._dtype).cpu().numpy(), states

    def get_stationary_distribution(self):
        """Long-run fraction of time in every state: the stationary distribution of the
        segment-to-segment chain weighted by the states' mean durations."""
        check_is_fitted(self, "transmat_")
        vals, vecs = np.linalg.eig(np.asarray(self.transmat_).T)
        nu = np.real_if_close(vecs[:, np.argmax(vals.real)])
        nu = nu / nu.sum()
        pmf = self._duration_pmf().cpu().numpy()  # (k, W): 0 past W
        w = nu * (pmf * np.arange(1, pmf.shape[1] + 1)).sum(1)
        return w / w.sum()

    # ------------------------------------------------------------------ model selection
    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        # nonparametric: the probabilities of the durations the fit estimated (n_durations_),
        # not of all D: past the longest sequence they stay 0 whatever D is
        k, d = self.n_components, int(getattr(self, "n_durations_", self.max_duration))
        n_dur = {"poisson": k, "negative_binomial": 2 * k, "nonparametric": k * (d - 1)}
        return {
            "s": k - 1,
            "t": k * (k - 2),
            "d": n_dur[self.duration],
            **self._emission_n_params(),
        }

    # ------------------------------------------------------------------ persistence
    _state_fields: ClassVar[dict[str, str]] = {"n_durations_": "int?"}

    def _get_state(self):
        tensors, extra = super()._get_state()
        for name in self._duration_attributes:
            tensors[name] = torch.as_tensor(np.asarray(getattr(self, name)))
        if hasattr(self, "n_durations_"):
            extra["n_durations_"] = int(self.n_durations_)
        return tensors, extra

    def _set_state(self, tensors, extra):
        tensors = dict(tensors)
        names = self._duration_attributes
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ModelFileError(
                f"a {type(self).__name__} file with duration={self.duration!r} holds the "
                f"tensors {list(names)}; this one lacks {missing}"
            )
        check_stored_tensors(
            tensors,
            self._duration_specs(),
            sizes=f"n_components = {self.n_components}, max_duration = {self.max_duration}",
        )
        for name in names:
            setattr(self, name, tensors.pop(name).numpy())
        n_durations = extra.get("n_durations_")
        if n_durations is not None and not 1 <= n_durations <= int(self.max_duration):
            raise ModelFileError(
                f"the model file's 'extra.n_durations_' = {n_durations} must lie in "
                f"1..max_duration = {self.max_duration}"
            )
        super()._set_state(tensors, extra)
        if n_durations is not None:
            self.n_durations_ = n_durations

    def _duration_specs(self) -> dict[str, Stored]:
        """What a model file's duration tensors must be: one distribution over 1..max_duration
        per state (nonparametric), Poisson means > 0, or negative binomial counts > 0 and
        probabilities in [0, 1] (their open interval is checked with the settings)."""
        k = self.n_components
        return {
            "duration_probs_": Stored((k, int(self.max_duration)), "simplex", required=False),
            "duration_lambdas_": Stored((k,), "positive", required=False),
            "duration_r_": Stored((k,), "positive", required=False),
            "duration_p_": Stored((k,), "probability", required=False),
        }
