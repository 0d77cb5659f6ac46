"""The ELBO made visible: log p(x), the ELBO of a q, and their gap KL(q ‖ p(z | x)).

For every q, ``log p(x) = ELBO(q) + KL(q ‖ p(z | x))`` (Neal & Hinton 1998; Bishop 2006
eq. 9.70). EM's E-step sets q to the exact posterior and closes the gap; a mean-field q
cannot represent a coupled posterior, and the gap it leaves is what VI gives up. Pure
functions for models whose log p(x) is tractable — mixtures, hidden Markov models, linear
Gaussian (PPCA/FA) models — and traces per iteration for a Gaussian mixture fitted by EM,
an HMM fitted by Baum-Welch (exact or mean-field E-step), PPCA/FA and a Bayesian mixture
fitted by CAVI.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from latentfit._validation import as_float_tensor, make_generator
from latentfit.em.driver import run_em
from latentfit.em.factor_math import complete_row_stats, factor_mstep, factor_posterior
from latentfit.em.gaussian import (
    check_variance_floor,
    gaussian_mstep,
    log_gaussian_prob,
    moment_stats,
    precision_cholesky,
)
from latentfit.em.hmm.inference.posterior import backward_pass, forward_filter, smoothed_marginals
from latentfit.em.initialize import kmeans
from latentfit.errors import DataError, ParameterError

__all__ = [
    "ELBOGap",
    "GapTrace",
    "HMMChainPosterior",
    "bgmm_gap_trace",
    "bgmm_log_evidence",
    "em_gap_trace",
    "hmm_chain_elbo",
    "hmm_chain_entropy",
    "hmm_exact_posterior",
    "hmm_gap_trace",
    "hmm_mean_field",
    "hmm_mean_field_elbo",
    "hmm_pair_marginals",
    "linear_gaussian_elbo",
    "linear_gaussian_gap_trace",
    "mixture_elbo",
]

_LOG_2PI = math.log(2 * math.pi)


class ELBOGap(NamedTuple):
    """log p(x), ELBO(q) and the gap KL(q ‖ p(z | x)) = log p(x) − ELBO (nats, summed)."""

    log_px: torch.Tensor
    elbo: torch.Tensor
    gap: torch.Tensor


class GapTrace(NamedTuple):
    """Per-iteration series (numpy arrays, length = iterations)."""

    log_px: np.ndarray  # log p(x | θ_t) (or the constant evidence for a Bayesian model)
    elbo: np.ndarray  # the ELBO before the E-step (q from the previous parameters)
    gap: np.ndarray  # log_px − elbo ≥ 0
    gap_after_estep: np.ndarray  # the gap once q is updated (0 for exact E-steps)


class _GapHooks:
    """Variational EM as the EM driver's hooks, watched through the bound. The driver's
    parameters are θ; q lives here. An iteration is θ_{t+1} = M(θ_t, q_t), the ELBO of
    (θ_{t+1}, q_t) ("before": the old q is no longer the posterior), q_{t+1} = E(θ_{t+1}, q_t)
    and the ELBO of (θ_{t+1}, q_{t+1}) ("after", the driver's lower bound). The driver's
    E-step comes first in its iteration, so ``initialize`` makes the first M-step and every
    M-step computes the next iteration's "before"."""

    def __init__(self, theta, q, mstep, estep, elbo):
        self.theta0, self.q = theta, q
        self.m, self.e, self.elbo = mstep, estep, elbo
        self.rows: list[list[float]] = []

    def initialize(self, data, generator):
        theta = self.m(self.theta0, self.q)
        self.before = self.elbo(theta, self.q)
        return theta

    def estep(self, theta, batch):
        self.q = self.e(theta, self.q)
        self.after = self.elbo(theta, self.q)
        return {"elbo": self.after.elbo.reshape(1)}

    def lower_bound(self, theta, stats):
        return float(stats["elbo"].sum())

    def mstep(self, theta, stats):
        theta = self.m(theta, self.q)
        self.next_before = self.elbo(theta, self.q)
        return theta

    def record(self, iteration, bound, theta):
        """The driver's callback: one row (log p(x), ELBO and gap before the E-step, gap
        after it) per iteration."""
        b = self.before
        self.rows.append([float(b.log_px), float(b.elbo), float(b.gap), float(self.after.gap)])
        self.before = self.next_before


def _gap_trace(theta, q, mstep, estep, elbo, n_iter: int, name: str) -> GapTrace:
    """``n_iter`` iterations of variational EM (:class:`_GapHooks`) run by
    :func:`~latentfit.em.driver.run_em`, every one recorded by its callback."""
    hooks = _GapHooks(theta, q, mstep, estep, elbo)
    run_em(
        hooks,
        [None],  # one batch: the data live in the closures
        max_iter=n_iter,
        tol=-math.inf,  # the trace runs every iteration
        convergence="delta",
        callback=hooks.record,
        warn_convergence=False,
        name=name,
    )
    a = np.asarray(hooks.rows)
    return GapTrace(a[:, 0], a[:, 1], a[:, 2], a[:, 3])


def _xlogx(p: torch.Tensor) -> torch.Tensor:
    return torch.special.xlogy(p, p)


def mixture_elbo(log_joint: torch.Tensor, q: torch.Tensor, sample_weight=None) -> ELBOGap:
    """Any model with a discrete latent per sample: ``log_joint`` (n, k) = log p(x_n, z_n = k),
    ``q`` (n, k) rows on the simplex. ELBO = Σ_n Σ_k q (log p(x, k) − log q)."""
    w = torch.ones(log_joint.shape[0], dtype=log_joint.dtype, device=log_joint.device)
    w = w if sample_weight is None else sample_weight
    lse = torch.logsumexp(log_joint, 1)  # (n,)
    log_px = (w * lse).sum()
    elbo = (w * ((q * log_joint).sum(1) - _xlogx(q).sum(1))).sum()
    log_post = log_joint - lse.unsqueeze(1)  # (n, k)
    gap = (w * (_xlogx(q) - q * log_post).sum(1)).sum()  # KL(q ‖ p(z | x)) directly
    return ELBOGap(log_px, elbo, gap)


def hmm_mean_field_elbo(log_emission, startprob, transmat, q) -> ELBOGap:
    """One sequence, mean-field q(z) = Π_t q_t(z_t) (``q`` (t, k)): the ELBO
    E_q[log π_{z_1} + Σ_t log A_{z_{t−1} z_t} + Σ_t log p(x_t | z_t)] + H(q)
    (Ghahramani & Jordan 1997); log p(x) by the forward algorithm."""
    log_a, log_pi = transmat.log(), startprob.log()
    energy = (q * log_emission).sum() + (q[0] * log_pi).sum()
    energy = energy + (q[:-1].unsqueeze(2) * q[1:].unsqueeze(1) * log_a).sum()
    elbo = energy - _xlogx(q).sum()
    log_px = forward_filter(log_emission, startprob, transmat).log_likelihood
    return ELBOGap(log_px, elbo, log_px - elbo)


def hmm_mean_field(log_emission, startprob, transmat, n_sweeps: int = 20, q=None):
    """Coordinate ascent on the factorised q of :func:`hmm_mean_field_elbo`: each q_t is set
    to ∝ exp(log p(x_t | z) + q_{t−1} log A + log A q_{t+1}). Starts from ``q`` (t, k) when
    given (it is not modified), else from the normalised emissions. Returns (q (t, k),
    [ELBOGap after every sweep]); the ELBO never decreases, the gap stays positive when the
    posterior couples neighbouring states."""
    T = log_emission.shape[0]
    log_a, log_pi = transmat.log(), startprob.log()
    q = torch.softmax(log_emission, 1) if q is None else q.clone()  # (t, k)
    trace = []
    for _ in range(n_sweeps):
        for t in range(T):
            logits = log_emission[t].clone()
            logits += log_pi if t == 0 else q[t - 1] @ log_a
            if t < T - 1:
                logits += log_a @ q[t + 1]
            q[t] = torch.softmax(logits, 0)
        trace.append(hmm_mean_field_elbo(log_emission, startprob, transmat, q))
    return q, trace


class HMMChainPosterior(NamedTuple):
    """A distribution over the state path of one sequence that is a Markov chain, given by
    its one- and two-slice marginals — the exact posterior p(z | x, θ) is one."""

    log_px: torch.Tensor  # () log p(x | θ) (forward algorithm)
    gamma: torch.Tensor  # (t, k) q(z_t)
    xi: torch.Tensor  # (t-1, k, k) q(z_{t-1} = i, z_t = j)


def hmm_pair_marginals(log_emission, transmat, filtered, backward) -> torch.Tensor:
    """Per-step two-slice posteriors ξ_t(i, j) = p(z_{t−1} = i, z_t = j | x) ∝
    α_{t−1}(i) A_ij p(x_t | z_t = j) β_t(j) (Rabiner 1989, eq. 37), each (k, k) slice
    normalised to sum 1, from the scaled messages of
    :func:`~latentfit.em.hmm.inference.posterior.forward_filter` (``filtered`` (t, k)) and
    :func:`~latentfit.em.hmm.inference.posterior.backward_pass` (``backward`` (t, k)); one sequence.
    Returns (t−1, k, k)."""
    ell = log_emission[1:]  # (t-1, k)
    shift = ell.amax(1, keepdim=True)  # (t-1, 1) per-step scaling: cancels in the normaliser
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    right = torch.exp(ell - shift) * backward[1:]  # (t-1, k)
    unnorm = filtered[:-1].unsqueeze(2) * transmat * right.unsqueeze(1)  # (t-1, k, k)
    return unnorm / unnorm.sum((1, 2), keepdim=True)


def _check_hmm(log_emission, startprob, transmat) -> int:
    if log_emission.ndim != 2:
        raise DataError(
            f"log_emission must be (t, k) for one sequence, got shape {tuple(log_emission.shape)}"
        )
    k = log_emission.shape[1]
    if startprob.shape != (k,) or transmat.shape != (k, k):
        raise ParameterError(
            f"startprob must be ({k},) and transmat ({k}, {k}) for {k} states, got "
            f"{tuple(startprob.shape)} and {tuple(transmat.shape)}"
        )
    return k


def hmm_exact_posterior(log_emission, startprob, transmat) -> HMMChainPosterior:
    """The Baum-Welch E-step's q(z) = p(z | x, θ) for one sequence (``log_emission`` (t, k)
    = log p(x_t | z_t)), as a Markov chain: smoothed marginals γ and pair marginals ξ from
    the sequential forward and backward messages (Rabiner 1989, eqs. 27 and 37)."""
    _check_hmm(log_emission, startprob, transmat)
    fwd = forward_filter(log_emission, startprob, transmat)
    if not bool(torch.isfinite(fwd.log_likelihood)):
        raise DataError(
            "the sequence has probability zero under these parameters (log p(x) = -inf): "
            "no state path can emit it, so there is no posterior"
        )
    bwd = backward_pass(log_emission, startprob, transmat).backward  # (t, k)
    gamma = smoothed_marginals(fwd.filtered, bwd)  # (t, k)
    xi = hmm_pair_marginals(log_emission, transmat, fwd.filtered, bwd)  # (t-1, k, k)
    return HMMChainPosterior(fwd.log_likelihood, gamma, xi)


def hmm_chain_entropy(gamma, xi) -> torch.Tensor:
    """Entropy of a Markov chain over T steps from its marginals:
    H = H(z_1) + Σ_{t≥2} H(z_t | z_{t−1}) = −Σ_t Σ_ij ξ_t log ξ_t + Σ_{t=2}^{T−1} Σ_i γ_t log γ_t
    (Cover & Thomas 2006, §4.2): every interior state's entropy is counted twice by the
    pairs. ``gamma`` (t, k), ``xi`` (t−1, k, k)."""
    if gamma.shape[0] == 1:
        return -_xlogx(gamma).sum()
    return -_xlogx(xi).sum() + _xlogx(gamma[1:-1]).sum()


def hmm_chain_elbo(log_emission, startprob, transmat, gamma, xi) -> ELBOGap:
    """One sequence, q(z) any Markov chain with marginals ``gamma`` (t, k) and ``xi``
    (t−1, k, k): ELBO = E_q[log π_{z_1} + Σ_t log A_{z_{t−1} z_t} + Σ_t log p(x_t | z_t)]
    + H[q] (:func:`hmm_chain_entropy`); log p(x) by the forward algorithm. With q the exact
    posterior (:func:`hmm_exact_posterior`) the gap is zero; with ξ_t = q_{t−1} ⊗ q_t it is
    the mean-field ELBO of :func:`hmm_mean_field_elbo` (Bishop 2006, eq. 13.17)."""
    _check_hmm(log_emission, startprob, transmat)
    T = log_emission.shape[0]
    if gamma.shape != log_emission.shape or xi.shape != (T - 1, *transmat.shape):
        raise DataError(
            f"gamma must be {tuple(log_emission.shape)} and xi {(T - 1, *transmat.shape)}, "
            f"got {tuple(gamma.shape)} and {tuple(xi.shape)}"
        )
    if T > 1:  # ξ must sum to the neighbouring γ's, else q is not a Markov chain
        tol = 1e3 * torch.finfo(xi.dtype).eps
        rows = (xi.sum(2) - gamma[:-1]).abs().amax(1)  # (t-1,)
        cols = (xi.sum(1) - gamma[1:]).abs().amax(1)  # (t-1,)
        bad = torch.nonzero((rows > tol) | (cols > tol)).flatten()
        if bad.numel():
            raise DataError(
                f"xi[{int(bad[0])}] does not sum to gamma at steps {int(bad[0])} and "
                f"{int(bad[0]) + 1}: the marginals are not those of one Markov chain"
            )
    emit = torch.where(gamma > 0, gamma * log_emission, torch.zeros_like(gamma))
    energy = torch.special.xlogy(gamma[0], startprob).sum() + emit.sum()
    energy = energy + torch.special.xlogy(xi, transmat).sum()
    elbo = energy + hmm_chain_entropy(gamma, xi)
    log_px = forward_filter(log_emission, startprob, transmat).log_likelihood
    return ELBOGap(log_px, elbo, log_px - elbo)


def _gaussian_hmm_mstep(X, gamma, xi, reg_covar):
    """Baum-Welch M-step for diagonal Gaussian emissions from q's marginals: π = γ_1,
    A ∝ Σ_t ξ_t, weighted means and variances (Rabiner 1989, eqs. 40 and 53)."""
    nk = gamma.sum(0)  # (k,)
    means = gamma.T @ X / nk.unsqueeze(1)  # (k, d)
    dev = (X.unsqueeze(1) - means).square()  # (t, k, d)
    var = torch.einsum("tk,tkd->kd", gamma, dev) / nk.unsqueeze(1) + reg_covar  # (k, d)
    counts = xi.sum(0)  # (k, k)
    transmat = counts / counts.sum(1, keepdim=True)
    log_b = torch.distributions.Normal(means, var.sqrt()).log_prob(X.unsqueeze(1)).sum(2)
    return gamma[0], transmat, log_b  # (k,), (k, k), (t, k)


def hmm_gap_trace(
    X,
    n_states: int,
    *,
    n_iter: int = 20,
    mean_field: bool = False,
    n_sweeps: int = 10,
    reg_covar: float = 1e-6,
    random_state=0,
    device=None,
) -> GapTrace:
    """Baum-Welch on one sequence ``X`` (t, d) with diagonal Gaussian emissions, watched
    through the bound. After each M-step the old q is no longer the posterior (gap ≥ 0);
    the exact E-step sets q = p(z | x, θ) as a Markov chain (:func:`hmm_exact_posterior`)
    and the gap returns to zero up to rounding. ``mean_field``: variational EM whose
    E-step runs ``n_sweeps`` CAVI sweeps of :func:`hmm_mean_field` from the previous q; the
    factorised q cannot hold the coupling of neighbouring states and the gap stays open
    (Neal & Hinton 1998; Ghahramani & Jordan 1997). Starts from softened k-means labels."""
    X = as_float_tensor(X, device=device, min_samples=2)
    if not 1 <= n_states <= len(X):
        raise ParameterError(f"n_states must be between 1 and the {len(X)} steps, got {n_states}")
    check_variance_floor(X, None, reg_covar, "reg_covar", "hmm_gap_trace")  # every M-step's
    labels = kmeans(
        X.cpu(), n_states, torch.ones(len(X), dtype=X.dtype), make_generator(random_state)
    )[1].to(X.device)
    onehot = torch.nn.functional.one_hot(labels, n_states).to(X.dtype)  # (t, k)
    gamma = 0.9 * onehot + 0.1 / n_states  # a product q: positive everywhere
    xi = gamma[:-1].unsqueeze(2) * gamma[1:].unsqueeze(1)  # (t-1, k, k)

    def mstep(theta, q):  # θ = (π, A, log b (t, k)) from q's marginals
        return _gaussian_hmm_mstep(X, *q, reg_covar)

    def estep(theta, q):
        if mean_field:
            gamma = hmm_mean_field(theta[2], theta[0], theta[1], n_sweeps, q=q[0])[0]
            return gamma, gamma[:-1].unsqueeze(2) * gamma[1:].unsqueeze(1)
        return hmm_exact_posterior(theta[2], theta[0], theta[1])[1:]

    def elbo(theta, q):
        return hmm_chain_elbo(theta[2], theta[0], theta[1], *q)

    return _gap_trace(None, (gamma, xi), mstep, estep, elbo, n_iter, "hmm_gap_trace")


def linear_gaussian_elbo(X, W, mu, psi, q_mean, q_cov) -> ELBOGap:
    """x = W z + μ + ε, z ~ N(0, I), ε ~ N(0, diag ψ) (PPCA, factor analysis) with
    q(z_n) = N(q_mean_n, q_cov) (``q_cov`` (q, q) shared or (n, q, q)); log p(x) by the
    Woodbury identity (Tipping & Bishop 1999)."""
    n, d = X.shape
    qd = W.shape[1]
    S = q_cov.expand(n, qd, qd)  # (n, q, q)
    R = X - mu - q_mean @ W.T  # (n, d)
    wsw = torch.einsum("dq,nqr,dr->nd", W, S, W)  # (n, d) diag(W S Wᵀ)
    ell = -0.5 * (d * _LOG_2PI + psi.log().sum() + ((R.square() + wsw) / psi).sum(1))
    prior = -0.5 * (qd * _LOG_2PI + q_mean.square().sum(1) + S.diagonal(dim1=1, dim2=2).sum(1))
    entropy = 0.5 * (qd * (_LOG_2PI + 1) + torch.linalg.slogdet(S)[1])
    elbo = (ell + prior + entropy).sum()
    log_px = factor_posterior(X, W, mu, psi).loglik.sum()
    return ELBOGap(log_px, elbo, log_px - elbo)


def em_gap_trace(
    X,
    n_components: int,
    *,
    covariance_type: str = "full",
    n_iter: int = 20,
    reg_covar: float = 1e-6,
    random_state=0,
) -> GapTrace:
    """EM on a Gaussian mixture, watched through the bound: after each M-step the old q is
    no longer the posterior (gap > 0, ELBO ≥ the previous log-likelihood); the E-step then
    sets q = p(z | x, θ) and the gap returns to 0 (Neal & Hinton 1998)."""
    X = as_float_tensor(X)
    n, d = X.shape
    check_variance_floor(X, None, reg_covar, "reg_covar", "em_gap_trace")  # every M-step's
    w = torch.ones(n, dtype=X.dtype)
    zero = torch.zeros(d, dtype=X.dtype)

    def mstep(theta, q):  # θ_{t+1} from q_t, held as log π_k + log p(x_n | θ_k): (n, k)
        stats = moment_stats(X, w, q, covariance_type)
        weights, means, cov = gaussian_mstep(stats, zero, reg_covar, covariance_type)
        pc = precision_cholesky(cov, covariance_type)
        return weights.log() + log_gaussian_prob(X, means, pc, covariance_type)  # (n, k)

    def estep(log_joint, q):  # q_{t+1} = p(z | x, θ_{t+1})
        return torch.softmax(log_joint, 1)

    labels = kmeans(X, n_components, w, make_generator(random_state))[1]
    q = torch.nn.functional.one_hot(labels, n_components).to(X.dtype)  # (n, k)
    return _gap_trace(None, q, mstep, estep, mixture_elbo, n_iter, "em_gap_trace")


def linear_gaussian_gap_trace(
    X,
    n_latent: int,
    *,
    n_iter: int = 30,
    mean_field: bool = False,
    isotropic: bool = True,
    random_state=0,
) -> GapTrace:
    """(Variational) EM for PPCA (``isotropic``) or factor analysis, watched through the bound.

    Exact E-step: q(z_n) = p(z_n | x_n), the gap closes after every E-step. ``mean_field``:
    q(z_n) = Π_j N(z_nj | m_nj, s_j²), whose optimum keeps the posterior means and sets
    s_j² = 1 / Λ_jj (Λ the posterior precision); the gap left is KL(q ‖ p(z | x)) > 0
    whenever the posterior couples the latent coordinates. The M-step maximises the ELBO
    under either q (Tipping & Bishop 1999; Ghahramani & Hinton 1996)."""
    X = as_float_tensor(X)
    n, d = X.shape
    gen = make_generator(random_state)
    mu = X.mean(0)
    W = torch.randn(d, n_latent, generator=gen, dtype=X.dtype)
    psi = X.var(0)
    psi = psi.mean().expand(d).clone() if isotropic else psi

    def estep(theta, q):
        post = factor_posterior(X, *theta)
        cov = torch.diag(1 / torch.linalg.inv(post.cov).diagonal()) if mean_field else post.cov
        return post.mean, cov

    def mstep(theta, q):
        (W, mu, _), (m, S) = theta, q
        # M-step from the expected moments under q, about the current prediction μ + W z
        E = X - mu - m @ W.T  # (n, d)
        stats = complete_row_stats(E, m, torch.ones(n, dtype=X.dtype), n * S, W)
        return factor_mstep(stats, W, mu, isotropic, 1e-9)

    def elbo(theta, q):
        return linear_gaussian_elbo(X, *theta, *q)

    theta = (W, mu, psi)
    q = estep(theta, None)
    return _gap_trace(theta, q, mstep, estep, elbo, n_iter, "linear_gaussian_gap_trace")


def bgmm_log_evidence(X, model) -> float:
    """Exact log p(X) of the Bayesian Gaussian mixture with a symmetric Dirichlet prior and
    full Normal–Wishart components, by summing over all kⁿ labelings (tiny data only): each
    labeling contributes its Dirichlet-multinomial probability times the conjugate marginal
    likelihood of each cluster (Bishop 2006 §10.2; Murphy 2007, "Conjugate Bayesian analysis
    of the Gaussian distribution"). ``model`` is a BayesianGaussianMixture whose prior
    settings (or scikit-learn's data-based defaults) are used."""
    if model.weight_concentration_prior_type != "dirichlet_distribution" or (
        model.covariance_type != "full"
    ):
        raise ParameterError(
            "the exact evidence is written for the Dirichlet distribution prior "
            "and full covariances"
        )
    X = as_float_tensor(X)
    n, d = X.shape
    k = model.n_components
    if k**n > 300_000:
        raise ParameterError(f"{k}^{n} labelings are too many to enumerate; use at most ~12 points")
    prior = model._make_prior(X, torch.ones(n, dtype=X.dtype, device=X.device))
    ar = dict(device=X.device)
    digits = torch.arange(k**n, **ar).unsqueeze(1) // (k ** torch.arange(n, **ar)) % k  # (L, n)
    R = torch.nn.functional.one_hot(digits, k).to(X.dtype)  # (L, n, k)
    N = R.sum(1)  # (L, k)
    sx = torch.einsum("lnk,nd->lkd", R, X)  # (L, k, d)
    sxx = torch.einsum("lnk,nd,ne->lkde", R, X, X)  # (L, k, d, d)
    b0, m0, nu0, C0 = prior.mean_precision, prior.mean, prior.dof, prior.covariance
    bn, nun = b0 + N, nu0 + N  # (L, k)
    mn = (b0 * m0 + sx) / bn.unsqueeze(2)  # (L, k, d)
    Cn = (
        C0
        + sxx
        + b0 * torch.outer(m0, m0)
        - bn[..., None, None] * (mn.unsqueeze(3) * mn.unsqueeze(2))
    )  # (L, k, d, d): W_n⁻¹

    def log_z(beta, nu, logdet_c):  # Normal–Wishart normaliser with W⁻¹ given by its log det
        return (
            0.5 * d * torch.log(2 * math.pi / beta)
            + 0.5 * nu * d * math.log(2.0)
            - 0.5 * nu * logdet_c
            + torch.special.multigammaln(0.5 * nu, d)
        )

    nu0_t = torch.tensor(nu0, dtype=X.dtype)
    lz0 = log_z(torch.tensor(b0, dtype=X.dtype), nu0_t, torch.linalg.slogdet(C0)[1])
    log_lik = (-0.5 * N * d * _LOG_2PI + log_z(bn, nun, torch.linalg.slogdet(Cn)[1]) - lz0).sum(
        1
    )  # (L,)
    g = prior.weight_concentration
    log_pz = (
        math.lgamma(k * g) - math.lgamma(k * g + n) + (torch.lgamma(g + N) - math.lgamma(g)).sum(1)
    )  # (L,)
    return float(torch.logsumexp(log_pz + log_lik, 0))


def bgmm_gap_trace(X, model) -> GapTrace:
    """Fit ``model`` (a BayesianGaussianMixture, Dirichlet distribution prior, full
    covariances) by CAVI and compare its ELBO per iteration with the exact evidence. The gap
    shrinks but stays positive: the mean-field q(z) q(θ) cannot hold the posterior's
    coupling between labels and parameters (nor its k! symmetric modes)."""
    log_px = bgmm_log_evidence(X, model)
    model.fit(X)
    elbo = np.asarray(model.elbos_)
    gap = log_px - elbo
    return GapTrace(np.full_like(elbo, log_px), elbo, gap, gap)
