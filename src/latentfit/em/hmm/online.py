"""Online EM for hidden Markov models (Cappé 2011, "Online EM algorithm for hidden Markov
models", JCGS 20(3)): ``partial_fit`` reads a long series (or many sequences) once, chunk by
chunk, and re-estimates the parameters as it goes, with memory independent of the length.

The statistics are those of Baum-Welch: for every step t a complete-data statistic
``s(z_{t−1}, z_t, x_t)`` (transition indicators, the emission model's sufficient statistics
of x_t given z_t, and the start indicator at the first step of a sequence). Cappé's recursion
keeps, besides the filter ``φ_t(k) = p(z_t = k | x_1..t)``, the auxiliary statistics
``ρ_t(s, k)`` (statistic × the state at t) and updates them forward only:

    r_t(i | k) = φ_{t−1}(i) A_ik / Σ_i' φ_{t−1}(i') A_i'k      (the backward kernel)
    ρ_t(·, k)  = Σ_i [(1 − γ_t) ρ_{t−1}(·, i) + γ_t s(i, k, x_t)] r_t(i | k)
    Ŝ_t        = Σ_k ρ_t(·, k) φ_t(k)                            (Cappé 2011)

with step sizes ``γ_t = (t + offset)^(−decay)``, ``γ_1 = 1`` (:class:`~latentfit.em.online.
StepSize`, decay in (0.5, 1]); after ``burn_in`` steps the M-step of Baum-Welch runs on
``t · Ŝ_t`` every ``mstep_every`` steps (the scale makes MAP priors see as much data as was
read; without priors it cancels). With ``γ_t = 1/t`` and the parameters held fixed, ``Ŝ_t``
is exactly (1/t) × the smoothed expectation of the summed statistics given x_1..t — the batch
E-step — which the tests check.

Vectorised form. Between two M-steps the parameters are fixed and the recursion is linear in
ρ: over a block of steps t0+1..T, ``ρ_T = ρ_t0 Q_t0 + Σ_t γ_t s_t Q_t`` with the (k, k)
products ``Q_t = Π_{u=t+1..T} (1 − γ_u) R_u`` (``R_u[i, k] = r_u(i | k)``, column-stochastic,
so nothing over- or underflows). The filter of the block is the forward kernel of
:mod:`latentfit.em.hmm.inference` (normalised at every step), the emission statistics of the
block are the model's own ``_emission_stats`` with the weights ``γ_t Q_t[j, k]`` in place of
the posteriors (one call per end state k), and only the product ``Q`` is a step-by-step loop
of one small matrix product. A block split between two ``partial_fit`` calls gives the same
result up to rounding, so chunks of one series give the fit of the whole series.

Several sequences: the first step of a new sequence is independent of the step before, so its
backward kernel is ``r(i | k) = φ_{t−1}(i)`` (the past statistics are summed out with their
final filter) and it contributes a start indicator instead of a transition.
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from latentfit._atomic_fit import kept_on_failure
from latentfit._validation import check_feature_names, check_positive_int, make_generator
from latentfit.em.hmm.inference import posterior as inference
from latentfit.em.hmm.sequences import check_lengths
from latentfit.em.online import StepSize
from latentfit.errors import BatchRowError, LatentfitError, ModelFileError, ParameterError
from latentfit.io import check_fields

__all__ = [
    "OnlineHMMMixin",
    "OnlineHMMState",
    "backward_kernels",
    "expected_statistics",
    "online_block",
]


class OnlineHMMState(NamedTuple):
    """Where online EM stands after ``n_steps`` steps (Cappé 2011)."""

    params: dict  # the current parameters (with the model's fixed centre, if it has one)
    filtered: torch.Tensor | None  # (k,) p(z_t | x_1..t) at the last step read
    rho_trans: torch.Tensor | None  # (k, k, k) [i, j, state at t]: transitions i → j
    rho_start: torch.Tensor | None  # (k, k) [j, state at t]: first steps in state j
    rho_emission: dict | None  # the emission statistics, each with a last axis (k,)
    log_likelihood: float  # running average of log p(x_t | x_1..t−1), with the same γ_t
    n_steps: int  # steps read
    n_updates: int  # M-steps made


def backward_kernels(previous, transmat, starts) -> torch.Tensor:
    """``R_t[i, k] = p(z_{t−1} = i | z_t = k, x_1..t−1)`` (n, k, k) from the filters of the
    steps before, ``previous`` (n, k); at a sequence start (``starts`` (n,) bool) z_t is
    independent of z_{t−1} and ``R_t[i, k] = φ_{t−1}(i)`` (the backward kernel of Cappé 2011)."""
    joint = previous.unsqueeze(2) * transmat  # (n, k, k) φ(i) A_ik
    pred = joint.sum(1, keepdim=True)  # (n, 1, k)
    indep = previous.unsqueeze(2).expand_as(joint)
    # a state no path reaches has filter 0 there; any column will do, take the independent one
    R = torch.where(pred > 0, joint / torch.where(pred > 0, pred, 1.0), indep)
    return torch.where(starts.view(-1, 1, 1), indep, R)


#: Steps per piece of a block: :func:`online_block` runs its recursions as scans of
#: log2(n) batched (n, k, k) products, so its Python cost does not grow with the steps.
BLOCK_STEPS = 256


def _scan(M: torch.Tensor, reverse: bool, normalise: bool) -> torch.Tensor:
    """Prefix products ``M_0 M_1 … M_t`` (``reverse``: suffix products ``M_t … M_{n−1}``) of
    (n, k, k) by doubling (Hillis & Steele 1986): log2(n) batched products. ``normalise``
    divides every partial product by its sum, for callers that use only its ratios."""
    X, d, n = M, 1, M.shape[0]
    tiny = torch.finfo(M.dtype).tiny
    while d < n:
        if reverse:
            X = torch.cat([X[:-d] @ X[d:], X[n - d :]])  # X_t ← X_t X_{t+d}
        else:
            X = torch.cat([X[:d], X[:-d] @ X[d:]])  # X_t ← X_{t−d} X_t
        if normalise:
            X = X / X.sum((1, 2), keepdim=True).clamp_min(tiny)
        d *= 2
    return X


def _suffix_products(R: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``Q`` (n + 1, k, k): ``Q[t + 1] = Π_{u>t} a_u R_u`` for block steps t = −1..n−1 (``Q[n]``
    the identity), the weight with which the statistics of step t reach the end of the block.
    The ``R_u`` are column-stochastic and ``a_u`` ≤ 1: the products stay in [0, 1]."""
    k = R.shape[1]
    eye = torch.eye(k, dtype=R.dtype, device=R.device).unsqueeze(0)
    return torch.cat([_scan(R * a.view(-1, 1, 1), reverse=True, normalise=False), eye])


def _block_filter(log_likelihoods, params, filtered, starts):
    """The filter of a block, (n, k), and log p(x_t | x_1..t−1) (n,) (Rabiner 1989, eqs.
    19-21): ``φ_t ∝ φ_{t0} M_1 … M_t`` with ``M_t = A_t diag(e_t)`` (``A_t`` the restart
    matrix ``1 πᵀ`` at a sequence start, see :mod:`~latentfit.em.hmm.inference.messages`),
    the prefix products by a scan normalised as it goes, so nothing underflows; then the
    one-step predictive normalisers from the filters, vectorised."""
    sp, tm = params["startprob"], params["transmat"]
    shift = log_likelihoods.amax(1, keepdim=True)  # (n, 1)
    shift = torch.where(torch.isfinite(shift), shift, 0.0)
    e = (log_likelihoods - shift).exp()  # (n, k) in [0, 1]
    A = torch.where(starts.view(-1, 1, 1), sp.expand_as(tm), tm)  # (n, k, k)
    M = A * e.unsqueeze(1)  # (n, k, k)
    M = M / M.sum((1, 2), keepdim=True).clamp_min(torch.finfo(M.dtype).tiny)
    out = filtered @ _scan(M, reverse=False, normalise=True)  # (n, k)
    out = out / out.sum(1, keepdim=True)  # a zero row gives NaN: the caller's check names it
    previous = torch.cat([filtered.unsqueeze(0), out[:-1]])  # (n, k)
    pred = (previous.unsqueeze(1) @ A).squeeze(1)  # (n, k) p(z_t | x_1..t−1)
    return out, (pred * e).sum(1).log() + shift.squeeze(1)


def online_block(
    state: OnlineHMMState,
    log_likelihoods: torch.Tensor,
    emission_stats,
    starts: torch.Tensor,
    step_size,
) -> tuple[OnlineHMMState, torch.Tensor]:
    """Cappé's recursion over a block of steps under the fixed ``state.params``: returns the
    state after the block (no M-step) and log p(x_t | x_1..t−1) of its steps (n,).

    ``log_likelihoods`` (n, k): the emission log-likelihoods of the block's rows;
    ``emission_stats(W)``: the model's emission statistics of those rows with the weights
    ``W`` (n, k, e) of state k at every step in place of the posteriors, for each of the ``e``
    end states: a dict of tensors with a last axis (e,), linear in the weights;
    ``starts`` (n,) bool: steps that begin a new sequence (the first step ever must be one);
    ``step_size(t)``: γ_t for the global step t = 1, 2, ….
    """
    params = state.params
    n, k = log_likelihoods.shape
    dt, dev = log_likelihoods.dtype, log_likelihoods.device
    phi0 = state.filtered
    if phi0 is None:  # nothing read yet: γ_1 = 1 forgets whatever the past stands for
        phi0 = torch.full((k,), 1.0 / k, dtype=dt, device=dev)
    filt, log_norm = _block_filter(log_likelihoods, params, phi0, starts)  # (n, k), (n,)
    previous = torch.cat([phi0.unsqueeze(0), filt[:-1]])  # (n, k) φ_{t−1}
    R = backward_kernels(previous, params["transmat"], starts)  # (n, k, k)
    t = state.n_steps + 1 + np.arange(n)
    g = torch.tensor([step_size(int(s)) for s in t], dtype=dt, device=dev)  # (n,) γ_t
    a = 1.0 - g
    Q = _suffix_products(R, a)  # (n + 1, k, k)
    carry, Qt = Q[0], Q[1:]  # the past's weight; each step's
    start_w = torch.where(starts, g, 0.0)  # (n,)
    trans_w = g - start_w
    # Σ_t w_t R_t[i, j] Q_t[j, e], batched over j: (j, i, e) → (i, j, e)
    wR = R * trans_w.view(-1, 1, 1)
    new_trans = torch.bmm(wR.permute(2, 1, 0), Qt.transpose(0, 1)).transpose(0, 1)
    new_start = (start_w @ Qt.reshape(n, k * k)).view(k, k)  # (k, k)
    W = g.view(-1, 1, 1) * Qt  # (n, k, k) weight of state j at step t for end state e
    new_emis = emission_stats(W)
    if state.rho_trans is not None:
        new_trans = new_trans + state.rho_trans @ carry
        new_start = new_start + state.rho_start @ carry
        new_emis = {key: v + state.rho_emission[key] @ carry for key, v in new_emis.items()}
    # the scalar version of the same weights for the running log-likelihood
    tail = torch.cat([torch.flip(torch.cumprod(torch.flip(a[1:], [0]), 0), [0]), a.new_ones(1)])
    ll = float((g * tail * log_norm).sum()) + float(a.prod()) * state.log_likelihood
    # the statistics kept in the layout a model file gives them back in (contiguous): the
    # next block's products then take the same kernels whether the run goes on in memory or
    # from the file. A transposed rho_trans left the two runs 1e-16 apart on a machine whose
    # products sum in another order for a strided operand.
    new_trans, new_start = new_trans.contiguous(), new_start.contiguous()
    new_emis = {key: v.contiguous() for key, v in new_emis.items()}
    new = OnlineHMMState(
        params, filt[-1], new_trans, new_start, new_emis, ll, state.n_steps + n, state.n_updates
    )
    return new, log_norm


def expected_statistics(state: OnlineHMMState, scale: float = 1.0) -> dict:
    """``scale · Ŝ_t = scale · Σ_k ρ_t(·, k) φ_t(k)`` as the Baum-Welch statistics (``start``,
    ``trans`` and the emission model's keys); with γ_t = 1/t and fixed parameters, (1/t) × the
    batch E-step's statistics of the steps read (Cappé 2011)."""
    phi = state.filtered * scale
    out = {key: v @ phi for key, v in state.rho_emission.items()}
    out["trans"] = state.rho_trans @ phi
    out["start"] = state.rho_start @ phi
    return out


def _schedule(n_steps: int, n: int, burn_in: int, every: int) -> list[int]:
    """Block ends (row indices within a chunk of ``n`` rows, after ``n_steps`` steps read)
    after which an M-step runs: global steps t ≥ burn_in with (t − burn_in) % every == 0."""
    first = max(burn_in, n_steps + 1)
    first += (-(first - burn_in)) % every
    return [s - n_steps for s in range(first, n_steps + n + 1, every)]


#: the prefix of online EM's running state among a model file's tensors
_ONLINE = "online."


class OnlineHMMMixin:
    """``partial_fit`` for the HMMs by online EM (Cappé 2011); see the module docstring.

    A model file keeps the running state (the parameters of the run, the filter, Cappé's
    auxiliary statistics, the rows a continued sequence takes its lags from, ``n_steps_``,
    ``n_updates_`` and ``online_log_likelihood_``), so that ``partial_fit`` after ``load``
    continues the run as it would have gone on in memory."""

    #: the run's counts that a model file keeps beside its running state
    _state_fields: ClassVar[dict[str, str]] = {
        "n_steps_": "count",
        "n_updates_": "count",
        "online_log_likelihood_": "float",
    }
    #: whether the running state keeps rows of the previous call (``_online_rows``' carry)
    _online_carries = False

    def partial_fit(
        self,
        X,
        lengths=None,
        *,
        new_sequence: bool = True,
        learning_decay: float = 0.9,
        learning_offset: float = 0.0,
        burn_in: int = 100,
        mstep_every: int = 50,
    ):
        """Online EM (Cappé 2011) over the rows of ``X``: one pass, updating the parameters
        as it reads.

        ``lengths`` (n_sequences,) cuts X into sequences as in ``fit``. ``new_sequence``:
        whether the first sequence of X starts a new series (True, the default: the filter
        restarts from ``startprob_``, while the statistics and parameters carry on) or
        continues the series of the previous call (False: the filter and the statistics carry
        on too, so that a long series fed chunk by chunk gives the fit of the whole series fed
        at once).

        Step sizes ``γ_t = (t + learning_offset)^(−learning_decay)`` for the t-th step read
        (decay in (0.5, 1]; γ_1 = 1); no M-step during the first ``burn_in`` steps, then one
        every ``mstep_every`` steps (counted over all calls). ``params`` says which
        parameters are re-estimated; the MAP priors apply to statistics scaled to the number
        of steps read. The first call on an unfitted model initialises from its X as ``fit``
        does (``init_params``, k-means, given parameters); a call on a fitted model (by
        ``fit`` or parameters set by hand) continues from its parameters with fresh
        statistics, and one saved after ``partial_fit`` and loaded continues the run as it
        would have gone on in memory (its file keeps the running state; a file written
        without it, by ``fit`` or by a latentfit before it was kept, starts fresh statistics
        from its parameters). ``n_init`` does not apply.

        Sets the parameters, ``n_steps_`` (steps read), ``n_updates_`` (M-steps made) and
        ``online_log_likelihood_``, the running average (with the same step sizes) of
        log p(x_t | x_1..t−1) under the parameters of the time: the objective's online
        estimate per step.
        """
        with kept_on_failure(self):  # a call that fails leaves the model as it was
            return self._partial_fit(
                X, lengths, new_sequence, learning_decay, learning_offset, burn_in, mstep_every
            )

    def _partial_fit(
        self, X, lengths, new_sequence, learning_decay, learning_offset, burn_in, mstep_every
    ):
        """:meth:`partial_fit`'s work."""
        if not isinstance(new_sequence, bool | np.bool_):
            raise ParameterError(f"new_sequence must be True or False, got {new_sequence!r}")
        step = StepSize(learning_decay, learning_offset)
        burn_in = check_positive_int(burn_in, "burn_in", minimum=0)
        mstep_every = check_positive_int(mstep_every, "mstep_every")
        self._checked_parameters()
        state = self._online_current_state()
        X = self._online_X(X, first=state is None)
        lengths = check_lengths(lengths, X.shape[0])
        # before anything is read: the sequences this call completes, with what the last left
        self._online_check_sequences(
            lengths, None if state is None else self._online_carry, new_sequence or state is None
        )
        if state is None:
            state = self._online_start(X, lengths)
            new_sequence = True
        X, carry = self._online_rows(state, X, lengths, new_sequence)
        starts = inference.sequence_starts(lengths, X.shape[0], X.device)
        if not new_sequence:
            starts[0] = False
        hooks = self._online_hooks()
        begin = 0
        ends = _schedule(state.n_steps, X.shape[0], burn_in, mstep_every)
        for end in [*ends, X.shape[0]]:
            if end <= begin:
                continue
            for a in range(begin, end, BLOCK_STEPS):  # same parameters: pieces add up exactly
                b = min(a + BLOCK_STEPS, end)
                state = self._online_block(state, X[a:b], starts[a:b], step, a)
            begin = end
            if end in ends:
                stats = expected_statistics(state, float(state.n_steps))
                params = hooks.mstep(state.params, self._online_mstep_stats(state.params, stats))
                rho = self._online_moved(state.rho_emission, state.params, params)
                state = state._replace(
                    params=params, rho_emission=rho, n_updates=state.n_updates + 1
                )
        self._set_attributes(state.params)
        self._online_state = state
        self._online_attrs = self._online_attributes()
        self._online_carry = carry
        self.n_steps_, self.n_updates_ = state.n_steps, state.n_updates
        self.online_log_likelihood_ = state.log_likelihood
        return self

    # ------------------------------------------------------------------ adapters
    def _online_block(self, state, X, starts, step, offset: int):
        """:func:`online_block` on rows ``offset ..`` of this call's X, under the model's
        emission functions; DataError naming the row that no state can emit, or that the
        transitions make impossible."""
        params = state.params
        ll = self._fit_emissions(params, X, self._emission_log_likelihood(params, X))  # (n, k)
        new, log_norm = online_block(
            state, ll, lambda W: self._online_emission_stats(params, X, W), starts, step
        )
        bad = (~torch.isfinite(log_norm)).nonzero()
        if len(bad):
            i = int(bad[0])
            if bool(torch.isneginf(ll[i]).all()):
                why = (
                    self._why_impossible(params, X, i)
                    if self._exact_zeros  # a value of probability 0 (emissions kept by params)
                    else self._online_impossible_row(X[i])
                )
                raise BatchRowError(
                    offset + i,
                    "row {row} of X has zero probability under every state: "
                    + why.replace("{", "{{").replace("}", "}}"),
                )
            raise BatchRowError(
                offset + i,
                "row {row} of X has zero probability given the rows before it: the "
                "states that can emit it are out of reach of the filter (zero transition "
                "probabilities, or a likelihood below the floating-point range); check "
                "transmat_, or pass new_sequence=True if the row starts a new series",
            )
        return new

    def _online_impossible_row(self, x: torch.Tensor) -> str:
        """Why a row ``x`` that no state can emit arose online, and what to try (the end of a
        DataError; the categorical models say it in their terms)."""
        top = float(x.double().abs().max()) if x.numel() else 0.0
        return (
            f"it lies so far from every state's emissions that its density is 0 in "
            f"floating point (largest |value| in the row: {top:.3g}). Data on another scale "
            "than the rows seen so far cannot be learnt online: scale it as those were, or "
            "fit the model afresh (fit) on data like it"
        )

    def _online_emission_stats(self, params, X, W) -> dict:
        """The emission statistics of rows X with the weights W (n, k, e) (see
        :func:`online_block`): one call of ``_emission_stats`` with the k·e columns as states,
        for models whose statistics are sums over the states' columns (every key (k, ...));
        a model with another kind of statistic overrides it."""
        n, k, e = W.shape
        stats = self._emission_stats(params, X, W.reshape(n, k * e))
        return {key: v.view(k, e, *v.shape[1:]).movedim(1, -1) for key, v in stats.items()}

    def _online_emission_stats_each(self, params, X, W) -> dict:
        """:meth:`_online_emission_stats` by one call per end state (any model)."""
        each = [self._emission_stats(params, X, W[:, :, i]) for i in range(W.shape[2])]
        return {key: torch.stack([s[key] for s in each], -1) for key in each[0]}

    def _online_mstep_stats(self, params, stats) -> dict:
        """The averaged statistics as the model's M-step takes them (default: as they are; a
        model whose batch statistics are taken about moving parameters converts here)."""
        return stats

    def _online_moved(self, rho: dict, old: dict, new: dict) -> dict:
        """The running emission statistics ``rho``, taken under the parameters ``old``, as the
        blocks after an M-step to ``new`` take theirs (default: unchanged; a model whose
        statistics are about moving parameters moves them here)."""
        return rho

    def _online_hooks(self):
        from latentfit.em.hmm.base import _HMMHooks

        return _HMMHooks(self, None)

    #: the settings the parameters' shapes follow (the autoregressive ``order``...)
    _online_settings = ("n_components", "covariance_type", "n_mix", "order", "n_features")

    def _online_attributes(self) -> tuple:
        """Copies of the parameter attributes and of the settings their shapes follow, to
        tell whether they were changed since."""
        names = ("startprob_", "transmat_", *self._emission_attributes)
        settings = tuple(repr(getattr(self, n, None)) for n in self._online_settings)
        return (settings, *(np.array(getattr(self, n, np.nan), dtype=float) for n in names))

    def _online_current_state(self) -> OnlineHMMState | None:
        """The running state, or None when there is none or the parameters were changed
        since (by ``fit`` or by hand), or a setting their shapes follow
        (``covariance_type``, ``order``...): then the recursion restarts from them, checked
        against the settings as they are now."""
        state = getattr(self, "_online_state", None)
        if state is None:
            return None
        (held_settings, *held), (settings, *now) = self._online_attrs, self._online_attributes()
        same = (
            held_settings == settings
            and len(held) == len(now)
            and all(
                a.shape == b.shape and np.array_equal(a, b) for a, b in zip(held, now, strict=True)
            )
        )
        return state if same else None

    # ------------------------------------------------------------------ persistence
    def _get_state(self):
        tensors, extra = super()._get_state()
        state = self._online_current_state()
        if state is not None and state.filtered is not None:
            # copies: parameters of the run may share storage (a centre and its offsets)
            parts = {
                **{f"params.{k}": v for k, v in state.params.items()},
                "filtered": state.filtered,
                "rho_trans": state.rho_trans,
                "rho_start": state.rho_start,
                **{f"rho_emission.{k}": v for k, v in state.rho_emission.items()},
            }
            if self._online_carry is not None:
                parts["carry"] = self._online_carry
            tensors.update({_ONLINE + k: v.detach().clone() for k, v in parts.items()})
            extra["n_steps_"] = int(state.n_steps)
            extra["n_updates_"] = int(state.n_updates)
            extra["online_log_likelihood_"] = float(state.log_likelihood)
        return tensors, extra

    def _set_state(self, tensors, extra):
        tensors = dict(tensors)
        online = {k[len(_ONLINE) :]: tensors.pop(k) for k in list(tensors) if k.startswith(_ONLINE)}
        fields = {k: extra.pop(k) for k in list(OnlineHMMMixin._state_fields) if k in extra}
        fields = check_fields(fields, type(self))
        super()._set_state(tensors, extra)
        if online or fields:
            # restored once the model is whole and checked: see _check_loaded
            self._online_stored = (online, fields)

    def _check_loaded(self) -> None:
        super()._check_loaded()
        stored = vars(self).pop("_online_stored", None)
        if stored is not None:
            self._restore_online_state(*stored)

    def _restore_online_state(self, online: dict, fields: dict) -> None:
        """The running state read from a model file, checked: all of its parts, its
        parameters those of the model, the filter a distribution over the states, the
        statistics shaped as a block of the model makes them and an M-step from them finite
        (ModelFileError naming what is wrong)."""
        damaged = "; the file was altered or is damaged"
        params = {
            k.removeprefix("params."): v for k, v in online.items() if k.startswith("params.")
        }
        emis = {
            k.removeprefix("rho_emission."): v
            for k, v in online.items()
            if k.startswith("rho_emission.")
        }
        single = ("filtered", "rho_trans", "rho_start", "carry")
        unknown = sorted(
            k for k in online if k not in single and not k.startswith(("params.", "rho_emission."))
        )
        if unknown or ("carry" in online and not self._online_carries):
            names = unknown or ["carry"]
            raise ModelFileError(
                f"the model file holds the tensors {[_ONLINE + k for k in names]}, which a "
                f"{type(self).__name__} does not store{damaged}"
            )
        parts = {
            "the parameters of the run ('online.params.*')": params,
            "'online.filtered'": online.get("filtered"),
            "'online.rho_trans'": online.get("rho_trans"),
            "'online.rho_start'": online.get("rho_start"),
            "the emission statistics ('online.rho_emission.*')": emis,
            **{f"'extra.{k}'": fields.get(k) for k in OnlineHMMMixin._state_fields},
        }
        if self._online_carries:
            parts["the last rows read ('online.carry')"] = online.get("carry")
        lacking = [
            name
            for name, part in parts.items()
            if part is None or (isinstance(part, dict) and not part)
        ]
        if lacking:
            raise ModelFileError(
                "the model file holds part of the state of a partial_fit run but not "
                f"{', '.join(lacking)}{damaged}"
            )
        steps, updates = fields["n_steps_"], fields["n_updates_"]
        loglik = fields["online_log_likelihood_"]
        if steps < 1 or updates > steps or not math.isfinite(loglik):
            raise ModelFileError(
                f"'extra.n_steps_' is {steps}, 'extra.n_updates_' {updates} and "
                f"'extra.online_log_likelihood_' {loglik}, but a partial_fit run that is saved "
                f"has read a step, made at most one M-step per step and a finite "
                f"log-likelihood{damaged}"
            )
        dev, dt = self._device, self._dtype
        params = {k: v.to(device=dev, dtype=dt) for k, v in params.items()}
        emis = {k: v.to(device=dev, dtype=dt) for k, v in emis.items()}
        filtered, trans, start = (
            online[k].to(device=dev, dtype=dt) for k in ("filtered", "rho_trans", "rho_start")
        )
        k = self.n_components
        # the run's parameters set the model's attributes (_set_attributes); those of the
        # file must be the ones they set
        names = ("startprob_", "transmat_", *self._emission_attributes)
        before = dict(self.__dict__)
        try:
            self._set_attributes(params)
            made = {n: np.asarray(getattr(self, n), dtype=float) for n in names}
        except (LatentfitError, ValueError, RuntimeError, KeyError, IndexError) as err:
            made = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        finally:
            self.__dict__.clear()
            self.__dict__.update(before)
        for n in names:
            held = np.asarray(getattr(self, n), dtype=float)
            if (
                isinstance(made, str)
                or made[n].shape != held.shape
                or not np.allclose(made[n], held)
            ):
                why = f"cannot set ({made})" if isinstance(made, str) else "do not give"
                raise ModelFileError(
                    f"the tensors 'online.params.*' (the parameters the partial_fit run stands "
                    f"at) {why} the model's {n}{damaged}"
                )
        for name, t, shape in (
            ("filtered", filtered, (k,)),
            ("rho_trans", trans, (k, k, k)),
            ("rho_start", start, (k, k)),
        ):
            if tuple(t.shape) != shape or not bool(torch.isfinite(t).all()):
                raise ModelFileError(
                    f"the tensor 'online.{name}' must be finite of shape {shape} "
                    f"(n_components = {k}), got shape {tuple(t.shape)}{damaged}"
                )
        if bool((filtered < 0).any()) or abs(float(filtered.sum()) - 1) > 1e-4:
            raise ModelFileError(
                f"the tensor 'online.filtered' must be a distribution over the {k} states "
                f"(entries >= 0 summing to 1), got {filtered.tolist()}{damaged}"
            )
        carry = online.get("carry")
        carry = None if carry is None else carry.to(device=dev, dtype=dt)
        if carry is not None and (carry.dim() != 2 or carry.shape[1] != self.n_features):
            raise ModelFileError(
                f"the tensor 'online.carry' must hold rows of {self.n_features} features, got "
                f"shape {tuple(carry.shape)}{damaged}"
            )
        state = OnlineHMMState(params, filtered, trans, start, emis, float(loglik), steps, updates)
        self._check_online_stats(state, damaged)
        self._online_state = state
        self._online_carry = carry
        self._online_attrs = self._online_attributes()
        self.n_steps_, self.n_updates_ = steps, updates
        self.online_log_likelihood_ = state.log_likelihood

    def _check_online_stats(self, state: OnlineHMMState, damaged: str) -> None:
        """ModelFileError where the running emission statistics are not shaped as those the
        model makes of rows drawn from it, or an M-step from the running state fails or is
        not finite; the model is left as it was."""
        before = dict(self.__dict__)
        params = state.params
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    rows = self.sample(int(getattr(self, "order", 0)) + 2, random_state=0)[0]
                    X = self._checked_X(rows, fitting=False)
                    fresh = OnlineHMMState(params, None, None, None, None, 0.0, 0, 0)
                    X, _ = self._online_rows(fresh, X, [X.shape[0]], True)
                    k = self.n_components
                    W = X.new_zeros(X.shape[0], k, k)
                    made = self._online_emission_stats(params, X, W)
                except (LatentfitError, ValueError, RuntimeError):
                    made = None  # no rows to compare with: the M-step below still checks
                want = None if made is None else {n: tuple(v.shape) for n, v in made.items()}
                if (
                    want is not None
                    and {n: tuple(v.shape) for n, v in state.rho_emission.items()} != want
                ):
                    raise ModelFileError(
                        f"the tensors 'online.rho_emission.*' are not the statistics of this "
                        f"{type(self).__name__} ({want}){damaged}"
                    )
                try:
                    stats = expected_statistics(state, float(state.n_steps))
                    new = self._online_hooks().mstep(
                        params, self._online_mstep_stats(params, stats)
                    )
                except ModelFileError:
                    raise
                except (LatentfitError, ValueError, RuntimeError, KeyError, IndexError) as err:
                    raise ModelFileError(
                        "the running statistics of the partial_fit run in the model file are "
                        f"no statistics the run keeps (their M-step fails: "
                        f"{str(err).splitlines()[0]}){damaged}"
                    ) from None
            bad = [n for n, v in new.items() if not bool(torch.isfinite(v).all())]
            if bad:
                raise ModelFileError(
                    "the running statistics of the partial_fit run in the model file give "
                    f"non-finite {', '.join(bad)} at their M-step{damaged}"
                )
        finally:
            self.__dict__.clear()
            self.__dict__.update(before)

    def _online_X(self, X, *, first: bool) -> torch.Tensor:
        fitted = hasattr(self, "startprob_") and all(
            hasattr(self, n) for n in self._emission_attributes
        )
        fitting = first and not fitted
        if fitted:
            self._infer_n_features()  # parameters set by hand say how many
        check_feature_names(self, X, reset=fitting)
        X = self._checked_X(X, fitting=fitting)  # fitting: its priors' shapes checked there
        if not fitting:  # a fitted model goes on: its priors against its features
            self._check_prior_shapes()
            self._check_batch(X)  # what fit checks of its data, checked of every batch
        return X

    def _online_check_sequences(self, lengths: list[int], carry, new_sequence: bool) -> None:
        """DataError for a sequence the model cannot take, checked before a call reads
        anything: ``lengths`` of this call, ``carry`` what the previous call of the running
        state left (None on a fresh start), ``new_sequence`` whether this call's first
        sequence is a new one (default: every length is fine)."""

    def _online_rows(self, state, X: torch.Tensor, lengths: list[int], new_sequence: bool):
        """The rows the emission functions take for this call's X, and what the next call
        needs of this one's rows (default: X itself, nothing)."""
        return X, None

    def _online_start(self, X: torch.Tensor, lengths: list[int]) -> OnlineHMMState:
        """Initial parameters: those of the fitted model, else ``fit``'s start from X."""
        try:
            check_is_fitted(self, "startprob_")
            params = self._given_params()
        except NotFittedError:  # not (wholly) fitted: initialise as fit does
            params = None
        if params is None:
            gen = make_generator(self.random_state, X.device)
            params = self._initial_params(X, gen)
        else:
            params = self._online_centre(params)
        return OnlineHMMState(params, None, None, None, None, 0.0, 0, 0)

    def _online_centre(self, params: dict) -> dict:
        """Models whose statistics are taken about a fixed centre (the Gaussian ones) add it
        to fitted parameters here; default: nothing to add."""
        return params
