"""Hidden Markov model with Gaussian vector-autoregressive emissions (a switching VAR(p)).

In state ``z_t = k`` the observation follows its state's linear autoregression of order p
(Hamilton 1989; Murphy 2012, §17.6.1; dynamax's ``LinearAutoregressiveHMM``)::

    x_t | z_t = k, x_{t-1..t-p}  ~  N( sum_{l=1..p} A_{k,l} x_{t-l} + b_k,  Sigma_k )

**The first p rows of every sequence are conditioning values**: they are not scored (their
emission factor is 1), and the likelihood is the conditional one, p(x_{p..T-1} | x_{0..p-1}),
as in the conditional least squares of an AR model (Hamilton 1994, §5.2 and §22.4). The
hidden chain still runs over every row (``startprob_`` is the law of the state at row 0), so
that every row has a state, a posterior and a Viterbi label, and outputs stay aligned with the
rows of X. Chosen over scoring the first rows with a plain or stationary Gaussian because that
would add per-state parameters that the dynamics do not determine (or, for the stationary law,
tie the M-step to an eigen-problem and fail for explosive dynamics), and over dynamax's zero
history because zeros are a value the data need not be near. With it the M-step is exact
weighted least squares and, with all ``A_{k,l} = 0``, the model is the full-covariance
:class:`~latentfit.em.hmm.GaussianHMM` with start probabilities ``startprob_ @ transmat_^p``
on the rows after the first p of each sequence.

The M-step (Baum-Welch with weighted regression) regresses x_t on ``[x_{t-1}, .., x_{t-p}, 1]``
with weights ``gamma_t(k)``: ``W_k = C_k (G_k + R)^{-1}`` with the weighted Gram matrix
``G_k = sum_t gamma z z^T``, ``C_k = sum_t gamma x z^T`` and the ridge ``R = ridge * I`` on the
AR weights (the intercept is not penalised), then ``Sigma_k = (sum_t gamma r r^T + ridge A_k
A_k^T) / N_k`` with its eigenvalues floored at ``min_covar``. Both are the exact maximisers of
the expected complete-data log-likelihood minus the penalty ``ridge/2 tr(A_k^T Sigma_k^{-1}
A_k)`` (a matrix-normal prior on A_k whose row covariance is Sigma_k) over the covariances
with eigenvalues >= ``min_covar``; so the penalised log-likelihood that ``lower_bounds_``
records never decreases. During a fit every state's regression is held about its own centre
c_k (its weighted mean of x_t, from the M-step before): its statistics, its weights and its
densities are those of ``x − c_k``, differenced from the data as they are. About one centre
for all states, the rows of a state far from it lose their digits: the variance of a state
rounds away in ``xx − W C^T − C W^T + W G W^T`` (two groups of rows 1e8 apart, with a noise
sd of 0.1), and the rows themselves round to the centre's spacing (29 rows near 2.4 beside
31 near 1e17, centred on a value near 1e17, all became −1e17). ``score``, ``decode`` and
the posteriors take the fitted parameters about every state's centre likewise (the median of
the rows it explains best), with the intercepts moved there in twice float64's precision.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from latentfit._validation import (
    check_feature_names,
    check_positive_int,
    check_sample_count,
    check_state_index,
    make_generator,
)
from latentfit.em.base import EMFit
from latentfit.em.gaussian import (
    DegenerateComponentError,
    degenerate_components,
    describe_degenerate,
)
from latentfit.em.hmm.base import _HMMHooks
from latentfit.em.hmm.emissions import HMM_REMEDY, draws_in_dtype
from latentfit.em.hmm.gaussian import _ContinuousHMM
from latentfit.em.hmm.labels import check_labels
from latentfit.em.hmm.online import OnlineHMMMixin, OnlineHMMState
from latentfit.em.hmm.sequences import (
    FEATURE_BYTES,
    MAX_BATCH_STEPS,
    batch_sequences,
    with_states,
)
from latentfit.em.hmm.sequences import check_lengths as _check_lengths
from latentfit.em.initialize import kmeans
from latentfit.em.paths import ar_path, markov_chain
from latentfit.errors import DataError, ParameterError, PrecisionLossWarning, user_stacklevel
from latentfit.io import Stored, serializable

__all__ = [
    "AutoregressiveHMM",
    "ar_centres",
    "ar_log_likelihood",
    "ar_mstep",
    "ar_stats",
    "lagged_design",
    "translate_ar_stats",
]

_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------- pure functions
def lagged_design(X: torch.Tensor, lengths: list[int], order: int) -> torch.Tensor:
    """The design rows ``[x_t, x_{t-1}, .., x_{t-p}, scored]`` (t, (p + 1) d + 1) of every row
    of every sequence: lags before a sequence's start are 0 and ``scored`` is 0 on the first
    ``order`` rows of each sequence (conditioning values), 1 elsewhere."""
    t, d = X.shape
    D = X.new_zeros(t, (order + 1) * d + 1)
    start = 0
    for n in lengths:
        seq = X[start : start + n]  # (n, d)
        for lag in range(order + 1):  # column block lag holds x_{t-lag}
            D[start + lag : start + n, lag * d : (lag + 1) * d] = seq[: n - lag]
        D[start + order : start + n, -1] = 1
        start += n
    return D


def _regressors(D: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(responses (t, d), regressors [lags, 1] (t, p d + 1), scored (t,)) of design rows D."""
    ones = D.new_ones(D.shape[0], 1)
    return D[:, :d], torch.cat([D[:, d:-1], ones], 1), D[:, -1]


def ar_log_likelihood(
    D: torch.Tensor,
    weights: torch.Tensor,
    covars: torch.Tensor,
    centres: torch.Tensor | None = None,
    *,
    rows: int = 1 << 15,
    sequence: torch.Tensor | None = None,
    intercepts: torch.Tensor | None = None,
) -> torch.Tensor:
    """log N(x_t; W_k z_t, Sigma_k) for design rows D (t, (p + 1) d + 1): (t, k), 0 at the
    conditioning rows. ``weights`` (k, d, p d + 1) are ``[A_{k,1} .. A_{k,p}, b_k]``,
    ``covars`` (k, d, d). ``centres`` (k, d): the weights of state k are those about c_k
    (of ``x_t − c_k`` on ``[x_{t-1} − c_k, .., 1]``, as :func:`ar_mstep` returns them), and
    its residuals are taken about c_k, so that they keep the digits of rows far from the
    origin. With ``sequence`` (t,), every row's sequence: ``centres`` (q, k, d) and
    ``intercepts`` (q, k, d) are every sequence's own (the intercepts b' about them, see
    :func:`_recentre`; the intercepts in ``weights`` are not used)."""
    k, d, m = weights.shape
    L, info = torch.linalg.cholesky_ex(covars)  # (k, d, d)
    if bool((info != 0).any()):
        bad = (info != 0).nonzero().flatten().tolist()
        raise DegenerateComponentError(
            f"the noise covariance of state(s) {bad} is not positive definite in "
            f"{covars.dtype} arithmetic. {HMM_REMEDY}"
        )
    half_logdet = torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1)  # (k,)
    const = -0.5 * d * _LOG_2PI - half_logdet  # (k,)
    out = D.new_empty(D.shape[0], k)
    for i in range(0, D.shape[0], rows):  # blocks: the (k, r, d) residuals stay small
        Y, Z, scored = _regressors(D[i : i + rows], d)
        if centres is None:
            resid = Y.unsqueeze(0) - Z.unsqueeze(0) @ weights.transpose(1, 2)  # (k, r, d)
        elif sequence is not None:  # every row about its own sequence's centres
            ids = sequence[i : i + rows]  # (r,)
            resid = Y.new_empty(k, Y.shape[0], d)
            for s in range(k):
                c, b = centres[ids, s], intercepts[ids, s]  # (r, d) each
                lags = Z[:, :-1] - c.repeat(1, (m - 1) // d)  # (r, p d)
                torch.addmm(Y - c - b, lags, weights[s, :, :-1].T, alpha=-1, out=resid[s])
        else:  # one (r, m) temporary at a time, not (k, r, m)
            resid = Y.new_empty(k, Y.shape[0], d)
            for s, e in enumerate(_lag_centres(centres, m)):
                torch.addmm(Y - centres[s], Z - e, weights[s].T, alpha=-1, out=resid[s])
        white = torch.linalg.solve_triangular(L, resid.transpose(1, 2), upper=False)  # (k, d, r)
        ll = (const.unsqueeze(1) - 0.5 * white.square().sum(1)).T  # (r, k)
        out[i : i + rows] = torch.where(scored.unsqueeze(1) > 0, ll, 0.0)
    return out


def ar_stats(
    D: torch.Tensor, gamma: torch.Tensor, d: int, centres: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Posterior-weighted sums of the regression: ``post`` (k,), ``zz`` (k, m, m), ``xz``
    (k, d, m), ``xx`` (k, d, d) with m = p d + 1, over the scored rows (Hamilton 1990, eqs. 4.9-4.10).

    ``centres`` (k, d): the sums of state k are taken about its own centre c_k, of
    ``x_t − c_k`` and ``z = [x_{t-1} − c_k, .., x_{t-p} − c_k, 1]`` (0: about the origin of D).
    About one centre, a state whose rows lie far from it (|x − c| of 1e8 beside a spread of
    0.1) keeps no digit of its noise variance in ``xx − W C^T − ..`` (:func:`ar_mstep`)."""
    Y, Z, scored = _regressors(D, d)
    g = gamma * scored.unsqueeze(1)  # (t, k): the conditioning rows add nothing
    k, m = g.shape[1], Z.shape[1]
    zz, xz, xx = D.new_empty(k, m, m), D.new_empty(k, d, m), D.new_empty(k, d, d)
    for s in range(k):  # one (t, m) temporary at a time, not (k, t, m)
        Ys, Zs = Y, Z
        if centres is not None:
            c = centres[s : s + 1].to(D.dtype)  # (1, d)
            Ys, Zs = Y - c, Z - _lag_centres(c, m)
        gY = g[:, s : s + 1] * Ys  # (t, d)
        torch.mm((g[:, s : s + 1] * Zs).T, Zs, out=zz[s])
        torch.mm(gY.T, Zs, out=xz[s])
        torch.mm(gY.T, Ys, out=xx[s])
    return {"post": g.sum(0), "zz": zz, "xz": xz, "xx": xx}


def ar_centres(stats: dict[str, torch.Tensor], centres: torch.Tensor) -> torch.Tensor:
    """Every state's weighted mean of its responses x_t (k, d), from statistics taken about
    ``centres`` (k, d) (:func:`ar_stats`): ``c_k + sum_t gamma (x_t − c_k) / N_k``; a state
    with no weight keeps its centre."""
    N = stats["post"].to(centres.dtype)  # (k,)
    mean = stats["xz"][:, :, -1].to(centres.dtype) / N.clamp_min(torch.finfo(N.dtype).tiny)[:, None]
    return torch.where((N > 0)[:, None], centres + mean, centres)


def translate_ar_stats(stats: dict[str, torch.Tensor], delta: torch.Tensor) -> dict:
    """Statistics of :func:`ar_stats` about centres c_k moved to ``c_k − delta_k`` (delta
    (k, d)): with ``x − c'  = (x − c) + delta`` and ``z' = z + e``, ``e = [delta, .., delta, 0]``,
    ``zz' = zz + s e^T + e s^T + N e e^T``, ``xz' = xz + s_x e^T + delta s^T + N delta e^T``
    and ``xx' = xx + s_x delta^T + delta s_x^T + N delta delta^T`` (``s``, ``s_x`` the
    weighted sums of z and x − c: the last columns of zz and xz). A trailing axis (e,) (the
    end states of online EM) is kept."""
    post, zz, xz, xx = stats["post"], stats["zz"], stats["xz"], stats["xx"]
    online = post.dim() == 2
    if online:  # (k, ..., e) -> (k e, ...)
        e = post.shape[1]
        post, zz, xz, xx = (v.movedim(-1, 1).flatten(0, 1) for v in (post, zz, xz, xx))
        delta = delta.repeat_interleave(e, 0)
    d, m = xz.shape[1], xz.shape[2]
    delta = delta.to(zz.dtype)  # (K, d)
    ev = torch.cat([delta.repeat(1, (m - 1) // d), delta.new_zeros(delta.shape[0], 1)], 1)
    s, sx, N = zz[:, :, -1], xz[:, :, -1], post.reshape(-1, 1, 1)  # (K, m), (K, d)

    def outer(a, b):
        return a.unsqueeze(2) * b.unsqueeze(1)

    zz = zz + outer(s, ev) + outer(ev, s) + N * outer(ev, ev)
    xz = xz + outer(sx, ev) + outer(delta, s) + N * outer(delta, ev)
    xx = xx + outer(sx, delta) + outer(delta, sx) + N * outer(delta, delta)
    out = {"zz": zz, "xz": xz, "xx": xx}
    if online:
        out = {key: v.unflatten(0, (-1, e)).movedim(1, -1) for key, v in out.items()}
    return {**stats, **out}


def ar_mstep(
    stats: dict[str, torch.Tensor],
    ridge: float,
    min_covar: float,
    weights: torch.Tensor | None = None,
    eps: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted least squares M-step: (weights (k, d, m), covars (k, d, d)).

    ``W_k = C_k (G_k + R)^{-1}`` with R = ``ridge`` on the AR weights, 0 on the intercept
    (``weights`` given: those are kept and only the covariances re-estimated);
    ``Sigma_k = (xx_k − W C^T − C W^T + W (G + R) W^T) / N_k`` (the weighted residual scatter
    plus ``ridge A_k A_k^T``, over N_k) with its eigenvalues raised to at least ``min_covar``:
    the maximiser of the expected penalised log-likelihood over covariances with eigenvalues
    >= ``min_covar``, and at least ``100 d eps`` of the largest (``eps`` of the model's
    dtype): a floor far below the data's scale (1e-3 beside 1e26 for data near 1e13) left a
    matrix the next Cholesky could not factor. A singular Gram matrix (a state with fewer
    rows than regressors) takes the minimum-norm solution.

    The weights, given and returned, are about the centres the statistics were taken about
    (:func:`ar_stats`; :func:`ar_log_likelihood` takes them so). The ridge leaves the
    intercept free, so centring changes the intercept only."""
    G, C = stats["zz"], stats["xz"]
    m = G.shape[-1]
    R = torch.full((m,), float(ridge), dtype=G.dtype, device=G.device)
    R[-1] = 0.0
    A = G + torch.diag(R)  # (k, m, m)
    if weights is None:
        L, info = torch.linalg.cholesky_ex(A)
        W = torch.cholesky_solve(C.transpose(1, 2), L).transpose(1, 2)  # (k, d, m)
        bad = info != 0
        if bool(bad.any()):
            W[bad] = C[bad] @ torch.linalg.pinv(A[bad], hermitian=True)
    else:
        W = weights.to(G.dtype)
    S = ar_scatter(stats, W, ridge)
    vals, vecs = torch.linalg.eigh(S)
    eps = torch.finfo(S.dtype).eps if eps is None else eps
    floor = (100 * S.shape[-1] * eps * vals[:, -1:].clamp_min(0)).clamp_min(min_covar)  # (k, 1)
    covars = (vecs * torch.maximum(vals, floor).unsqueeze(1)) @ vecs.transpose(1, 2)
    return W, 0.5 * (covars + covars.transpose(1, 2))


def ar_scatter(stats: dict[str, torch.Tensor], weights: torch.Tensor, ridge: float) -> torch.Tensor:
    """Every state's penalised residual scatter (k, d, d) under the weights (k, d, m), about
    the centres of the statistics (:func:`ar_stats`): ``(xx − W C^T − C W^T + W (G + R) W^T)
    / N`` (R = ``ridge`` on the AR weights), the covariance :func:`ar_mstep` floors."""
    G, C, xx, N = stats["zz"], stats["xz"], stats["xx"], stats["post"]
    R = torch.full((G.shape[-1],), float(ridge), dtype=G.dtype, device=G.device)
    R[-1] = 0.0
    W = weights.to(G.dtype)
    WC = W @ C.transpose(1, 2)  # (k, d, d)
    S = xx - WC - WC.transpose(1, 2) + W @ (G + torch.diag(R)) @ W.transpose(1, 2)
    return 0.5 * (S + S.transpose(1, 2)) / N.clamp_min(torch.finfo(N.dtype).tiny).reshape(-1, 1, 1)


def ar_data_covariance(
    stats: dict[str, torch.Tensor], centres: torch.Tensor | None
) -> torch.Tensor:
    """The covariance (d, d) of the responses x_t of all scored rows, from statistics taken
    about every state's centre (k, d) (None: the origin; :func:`ar_stats`): the sums of the
    states moved to the overall mean (:func:`translate_ar_stats`), added up (the posteriors of
    a row sum to 1), over their weight."""
    N = stats["post"]  # (k,)
    k, d = stats["xx"].shape[:2]
    c = N.new_zeros(k, d) if centres is None else centres.to(N.dtype)
    total = N.sum().clamp_min(torch.finfo(N.dtype).tiny)
    mean = (N.unsqueeze(1) * c + stats["xz"][:, :, -1]).sum(0) / total  # (d,)
    return translate_ar_stats(stats, c - mean)["xx"].sum(0) / total


def ar_rounding(
    stats: dict[str, torch.Tensor], weights: torch.Tensor, ridge: float, eps: float
) -> torch.Tensor:
    """The rounding level (k, d) of every column of the residual covariances of
    :func:`ar_mstep` from the statistics ``stats`` and the weights ``weights`` (k, d, m)
    about the same centres: ``16 m eps (xx_k + W_k (G_k + R) W_k^T)_jj / N_k``, the size of
    the terms that cancel in ``xx − W C^T − C W^T + W (G + R) W^T`` times the relative error
    of their sums. Entry (i, j) of the covariance rounds by about the geometric mean of the
    levels of columns i and j."""
    G, xx, N = stats["zz"], stats["xx"], stats["post"]
    m = G.shape[-1]
    R = torch.full((m,), float(ridge), dtype=G.dtype, device=G.device)
    R[-1] = 0.0
    W = weights.to(G.dtype)
    big = xx.diagonal(dim1=1, dim2=2) + ((W @ (G + torch.diag(R))) * W).sum(2)  # (k, d)
    return 16 * m * eps * big / N.clamp_min(torch.finfo(N.dtype).tiny).unsqueeze(1)


def ridge_penalty(weights: torch.Tensor, covars: torch.Tensor, ridge: float) -> torch.Tensor:
    """``ridge/2 sum_k tr(A_k^T Sigma_k^{-1} A_k)`` (the AR weights, not the intercepts)."""
    if not ridge:
        return weights.new_zeros(())
    L = torch.linalg.cholesky(covars)
    white = torch.linalg.solve_triangular(L, weights[:, :, :-1], upper=False)
    return 0.5 * ridge * white.square().sum()


# ---------------------------------------------------------------------- the estimator
class _ARHooks(_HMMHooks):
    """Baum-Welch hooks whose bound is the penalised log-likelihood that the ridge M-step
    maximises (the plain log-likelihood when ``ridge`` is 0)."""

    def lower_bound(self, params, stats):
        pen = ridge_penalty(params["weights"], params["covars"], self.model.ridge)
        return float(stats["log_likelihood"].sum()) - float(pen)


@serializable
class AutoregressiveHMM(OnlineHMMMixin, _ContinuousHMM):
    """Hidden Markov model with Gaussian vector-autoregressive emissions of order ``order``
    (a Markov-switching VAR(p); dynamax's ``LinearAutoregressiveHMM``), fitted by Baum-Welch
    with a weighted least squares M-step (see the module docstring for the model, the rule
    for the first ``order`` rows of every sequence, and the M-step).

    Fitted attributes: ``startprob_`` (k,), ``transmat_`` (k, k), ``coefs_`` (k, p, d, d) with
    ``coefs_[k, l - 1]`` = A_{k,l}, ``intercepts_`` (k, d) = b_k and full ``covars_`` (k, d, d);
    plus ``lower_bounds_`` (penalised log-likelihood before every M-step), ``converged_``,
    ``n_iter_``, ``monitor_``.

    ``ridge`` (>= 0) penalises the AR weights (MAP under a matrix-normal prior with row
    covariance Sigma_k); ``min_covar`` is the smallest eigenvalue a covariance may take.
    ``params``/``init_params`` letters: ``s`` start, ``t`` transitions, ``a`` AR weights and
    intercepts, ``c`` covariances. Initialisation: k-means on the design rows
    ``[x_t, x_{t-1}, .., x_{t-p}]``, then each cluster's least squares regression. Where a
    series jumps between groups of rows far apart, the design row of the jump (x_t in one
    group, x_{t-1} in the other) lies about as far from both clusters; k-means (as exact
    arithmetic and scikit-learn's KMeans, from the same seeds) puts it in either, by its
    seeds. In the cluster of the group it comes from, that state's regression takes a
    variance of the size of the jump, and EM stays there: 31 rows near 2.4 then 29 near 1e17
    end at a log-likelihood of -1637.9 from 3 of 8 seeds, -474.6 from the others. Compare
    ``n_init`` starts (or several ``random_state``), or give the states of a few rows
    (``y``) or a start (``init_params``).

    Every method takes ``lengths`` as the other HMMs do; each sequence needs more than
    ``order`` rows (a ``partial_fit`` call may hold fewer of one that the next call continues
    with ``new_sequence=False``). Fitting from a data source is not supported (pass the array).
    """

    _emission_letters = "ac"
    _min_covar_floors_every_mstep = True  # ar_mstep raises every eigenvalue to it
    _emission_attributes = ("coefs_", "intercepts_", "covars_")

    def __init__(
        self,
        n_components=1,
        order=1,
        min_covar=1e-3,
        ridge=0.0,
        startprob_prior=1.0,
        transmat_prior=1.0,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stac",
        init_params="stac",
        implementation="log",
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())

    # ------------------------------------------------------------------ settings and data
    def _check_parameters(self):
        super()._check_parameters()
        p = self.order
        if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 1:
            raise ParameterError(
                f"order must be a positive integer (the number of lags p), got {p!r}"
            )
        r = self.ridge
        if (
            isinstance(r, bool)
            or not isinstance(r, int | float | np.number)
            or not 0 <= r < math.inf
        ):
            raise ParameterError(f"ridge must be a finite number >= 0, got {r!r}")

    def _lengths(self, lengths, n: int, fitting: bool = True) -> list[int]:
        """The checked sequence lengths; each must exceed ``order``. Lowering ``order`` is
        advice for a fit only: a fitted model's order is fixed (``fitting=False``)."""
        lengths = _check_lengths(lengths, n)
        short = [i for i, m in enumerate(lengths) if m <= self.order]
        if short:
            i = short[0]
            raise DataError(
                f"sequence {i} has {lengths[i]} row(s); an AutoregressiveHMM of order "
                f"{self.order} needs at least {self.order + 1} per sequence (the first {self.order} are the "
                "conditioning values of the lags). Join or drop the short sequences"
                + (", or lower order" if fitting else "")
            )
        return lengths

    def _check_scored_rows(self, lengths: list[int], name: str) -> None:
        """DataError when the rows after the first ``order`` of each sequence (those the
        emissions score: the design rows of :func:`lagged_design` marked scored) are fewer
        than the states; a last sequence of ``order`` rows or fewer (a ``partial_fit`` call
        may end in one) scores none."""
        p = int(self.order)
        scored = sum(max(m - p, 0) for m in lengths)
        if scored < self.n_components:
            raise DataError(
                f"{name} has {scored} rows after the first {p} of each sequence, fewer "
                f"than n_components={self.n_components}"
            )

    def _design(self, X: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """The design rows (t, (p + 1) d + 1) of X (see :func:`lagged_design`)."""
        return lagged_design(X, lengths, int(self.order))

    def _prepare(self, X, lengths, y=None):
        check_is_fitted(self, "startprob_")
        self._checked_parameters()
        params = self._given_params()
        check_feature_names(self, X, reset=False)
        X = self._checked_X(X, fitting=False)
        lengths = self._lengths(lengths, X.shape[0], fitting=False)
        labels = check_labels(y, X.shape[0], self.n_components, X.device)
        D = self._design(X, lengths)
        # the residuals about every state's centre, as in a fit: about the origin, those of
        # float32 data near 1e6 (sd 1) kept no digit below 0.1. Each sequence's own centres:
        # centres of the whole X made a sequence's answers depend on the others beside it
        return self._about_sequence_centres(params, D, lengths), D, lengths, labels

    def _about_sequence_centres(self, params, D, lengths: list[int]) -> dict:
        """``params`` with every sequence of the design rows D about its own states' centres
        (:meth:`_about_centres` of its rows alone): ``"sequence"`` (t,) every row's sequence,
        ``"centres"`` (q, k, d) and ``"intercepts"`` (q, k, d) every sequence's."""
        q, d = len(lengths), params["covars"].shape[-1]
        sequence = torch.repeat_interleave(
            torch.arange(q, device=D.device), torch.as_tensor(lengths, device=D.device)
        )  # (t,)
        scored = D[:, -1] > 0  # every sequence has some (self._lengths)
        ll = ar_log_likelihood(D[scored], params["weights"], params["covars"])  # (s, k)
        centres = _best_row_medians(D[scored], ll, d, sequence[scored], q)  # (q, k, d)
        W, k = params["weights"], centres.shape[1]
        intercepts = torch.cat([
            _recentre(W.repeat(len(c), 1, 1), c.reshape(-1, d), d)[:, :, -1].reshape(-1, k, d)
            for c in centres.split(1 << 10)  # (q k, d, m) weights at a time, not (q, k, d, m)
        ])  # fmt: skip
        return {**params, "sequence": sequence, "centres": centres, "intercepts": intercepts}

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X,
        lengths=None,
        y=None,
        *,
        batch_steps: int = MAX_BATCH_STEPS,
        feature_bytes: int = FEATURE_BYTES,
    ):
        """Estimate the parameters by Baum-Welch EM with the weighted least squares M-step
        (``n_init`` restarts, the best kept). ``lengths`` (n_sequences,) gives the rows of
        every sequence in ``X``; each needs more than ``order`` rows. ``y`` (n_samples,): known
        states, −1 where unknown, as for every HMM (the E-steps are conditioned on them)."""
        self._fit(X, lengths=lengths, y=y, batch_steps=batch_steps, feature_bytes=feature_bytes)
        return self

    def _prepare_source_fit(self, source, lengths=None, y=None, *, batch_steps, feature_bytes):
        check_positive_int(batch_steps, "batch_steps")
        raise ParameterError(
            "AutoregressiveHMM is fitted in memory only (its lags cross the chunks of a "
            "source); pass the array of observations"
        )

    def _prepare_fit(self, X, lengths=None, y=None, *, batch_steps, feature_bytes) -> EMFit:
        batch_steps = check_positive_int(batch_steps, "batch_steps")
        check_feature_names(self, X, reset=True)
        X = self._checked_X(X, fitting=True)
        self._warn_constant_columns(X)
        lengths = self._lengths(lengths, X.shape[0])
        # refused from the lengths alone, before the design rows are made
        self._check_scored_rows(lengths, "X")
        labels = check_labels(y, X.shape[0], self.n_components, X.device)
        # the data as they are: every state takes its rows about its own centre
        D = self._design(X, lengths)
        batches = with_states(batch_sequences(D, lengths, batch_steps), labels)
        return EMFit(_ARHooks(self, D, feature_bytes, labels), batches, X=X)

    # ------------------------------------------------------------------ online EM
    #: a continued sequence takes its lags from the previous call's last rows (saved with it)
    _online_carries = True

    def _online_start(self, X, lengths) -> OnlineHMMState:
        """``partial_fit``'s start: a fitted model's parameters about every state's centre in
        the first X, else ``fit``'s initialisation on the design rows of the first X."""
        try:
            check_is_fitted(self, "startprob_")
            params = self._about_centres(self._given_params(), self._design(X, lengths))
        except NotFittedError:
            self._check_scored_rows(lengths, "the first X of partial_fit")
            D = self._design(X, lengths)
            params = self._initial_params(D, make_generator(self.random_state, X.device))
        return OnlineHMMState(params, None, None, None, None, 0.0, 0, 0)

    def _online_check_sequences(self, lengths, carry, new_sequence):
        """As ``fit``, every sequence needs more than ``order`` rows; a call may end in the
        middle of one (a chunk of any length continues it with ``new_sequence=False``), so
        the sequences checked are those this call completes: all but its last, the first
        counted with the rows carried from the previous call, and the previous call's last
        when this call starts a new one (refused before this call reads a row, so that
        calling again with ``new_sequence=False`` continues it)."""
        p = int(self.order)
        if new_sequence and carry is not None and len(carry) <= p:
            raise DataError(
                f"the last sequence of the previous partial_fit call has {len(carry)} row(s), "
                f"and this call starts a new one (new_sequence=True); AutoregressiveHMM(order="
                f"{p}) needs at least {p + 1} rows per sequence (the first {p} are the "
                "conditioning values of the lags). Pass new_sequence=False to continue that "
                "sequence with these rows"
            )
        before = 0 if new_sequence else len(carry)
        complete = [before + lengths[0], *lengths[1:]][:-1]  # the last may go on next call
        short = [i for i, m in enumerate(complete) if m <= p]
        if short:
            i = short[0]
            carried = f" ({before} of them from the previous call)" if i == 0 and before else ""
            raise DataError(
                f"sequence {i} of this partial_fit call has {complete[i]} row(s){carried}; "
                f"AutoregressiveHMM(order={p}) needs at least {p + 1} per sequence (the first "
                f"{p} are the conditioning values of the lags). Join or drop the short "
                "sequences"
                # the order is the fitted model's once a fit or a partial_fit call has run
                + (", or lower order" if carry is None and not hasattr(self, "coefs_") else "")
            )

    def _online_emission_stats(self, params, X, W):
        """Every state's statistics about its own centre, for each end state (the k·e
        columns that the default takes as states, state by state, take their state's)."""
        centres = params["centres"].repeat_interleave(W.shape[2], 0)  # (k e, d)
        return super()._online_emission_stats({**params, "centres": centres}, X, W)

    def _online_moved(self, rho, old, new):
        """The running statistics about the centres of ``old`` moved to those of ``new``
        (:func:`translate_ar_stats`): a step of the order of a state's spread."""
        return translate_ar_stats(rho, old["centres"] - new["centres"])

    def _online_rows(self, state, X, lengths, new_sequence):
        """The design rows of X; a continued sequence takes its lags
        from the last rows of the previous call (kept in ``carry``: ``order + 1`` of them, or
        the whole sequence when it is shorter, so that the next call can tell a sequence too
        short to stand alone), so that its rows are those of the whole series."""
        p = int(self.order)
        before = X[:0] if new_sequence else self._online_carry
        D = self._design(torch.cat([before, X]), [len(before) + lengths[0], *lengths[1:]])
        last = lengths[-1] + (len(before) if len(lengths) == 1 else 0)
        return D[len(before) :], torch.cat([before, X])[-min(p + 1, last) :]

    # ------------------------------------------------------------------ parameters
    def _given_weights(self) -> torch.Tensor:
        """``coefs_`` and ``intercepts_`` checked, as the regression weights (k, d, p d + 1)."""
        k, p = self.n_components, int(self.order)
        coefs = self._tensor(self.coefs_, "coefs_")
        d = getattr(self, "n_features", None) or coefs.shape[-1]
        b = self._tensor(self.intercepts_, "intercepts_")
        if tuple(coefs.shape) != (k, p, d, d):
            raise ParameterError(
                f"coefs_ must have shape (n_components, order, n_features, n_features) = "
                f"{(k, p, d, d)}, got {tuple(coefs.shape)}"
            )
        if tuple(b.shape) != (k, d):
            raise ParameterError(
                f"intercepts_ must have shape (n_components, n_features) = {(k, d)}, got "
                f"{tuple(b.shape)}"
            )
        return _pack(coefs, b)

    def _given_covars(self) -> torch.Tensor:
        k = self.n_components
        cov = self._tensor(self.covars_, "covars_")
        d = getattr(self, "n_features", None) or cov.shape[-1]
        if tuple(cov.shape) != (k, d, d):
            raise ParameterError(
                f"covars_ must have shape (n_components, n_features, n_features) = {(k, d, d)}, "
                f"got {tuple(cov.shape)}"
            )
        _, info = torch.linalg.cholesky_ex(cov)
        if bool((info != 0).any()) or not torch.allclose(cov, cov.transpose(1, 2)):
            i = int((info != 0).nonzero()[0]) if bool((info != 0).any()) else 0
            raise ParameterError(f"covars_[{i}] must be a symmetric positive definite matrix")
        return cov

    def _emission_params(self):
        return {"weights": self._given_weights(), "covars": self._given_covars()}

    def _init_emissions(self, D, gen):
        """k-means on the design rows, then the least squares regression of every cluster
        (the M-step with hard responsibilities), each about its cluster's mean. ``centres``
        (k, d): the points each state's regression is held about (its statistics, weights
        and densities), its weighted mean of x_t, updated by every M-step (see
        :func:`ar_stats`)."""
        k, d = self.n_components, self.n_features
        out = {}
        D = D[D[:, -1] > 0]  # the scored rows
        if self._needs_init("a", "coefs_") or self._needs_init("c", "covars_"):
            w = torch.ones(D.shape[0], dtype=D.dtype, device=D.device)
            _, labels = kmeans(D[:, :-1], k, w, gen)
            gamma = torch.nn.functional.one_hot(labels, k).to(D.dtype)  # (t, k)
            centres = _state_means(D, gamma, d)  # (k, d)
            stats = {key: v.double() for key, v in ar_stats(D, gamma, d, centres).items()}
            empty = stats["post"] == 0
            if bool(empty.any()):  # an empty cluster: all rows, so that its start is defined
                whole = ar_stats(D, torch.ones_like(gamma[:, :1]), d, centres[empty][:1])
                for key, v in whole.items():
                    stats[key][empty] = v.double()[0]
            W, cov = ar_mstep(stats, self.ridge, self.min_covar)
            out["weights"], out["covars"] = W.to(D.dtype), cov.to(D.dtype)
            out["centres"] = centres
        if not self._needs_init("c", "covars_"):
            out["covars"] = self._given_covars()
        if not self._needs_init("a", "coefs_"):  # the user's states, not the clusters
            given = {"weights": self._given_weights(), "covars": out["covars"]}
            out.update(self._about_centres(given, D))
        return out

    def _state_centres(self, D, params) -> torch.Tensor:
        """The centres (k, d) of given parameters: every state's median (column by column, a
        value of the data) of the responses of the scored design rows D that it explains
        best, or the response of the row it comes closest to explaining best when it explains
        none (with no scored row, the median of all for every state). A median, not a mean: one row far from a state's others (the row where a series
        jumps from 2.4 to 1e17) moved a mean to 3e15, about which the others lose their
        digits. The log-densities that choose the rows are taken about the origin: they need
        only tell near states from far ones."""
        k, d = params["weights"].shape[:2]
        scored = D[D[:, -1] > 0]  # (t, m)
        if not len(scored):  # the conditioning rows of a partial_fit chunk alone
            return (D[:, :d].median(0).values if len(D) else D.new_zeros(d)).repeat(k, 1)
        ll = ar_log_likelihood(scored, params["weights"], params["covars"])  # (t, k)
        return _best_row_medians(scored, ll, d)

    def _about_centres(self, params, D) -> dict[str, torch.Tensor]:
        """Given parameters (about the origin) held about every state's centre in the design
        rows D (:meth:`_state_centres`), as a fit holds them: the intercepts
        b' = b − (I − sum_l A_l) c, so that the residuals are differences of the data near c."""
        centres = self._state_centres(D, params)  # (k, d)
        weights = _recentre(params["weights"], centres, centres.shape[1])
        return {**params, "weights": weights, "centres": centres}

    def _is_set(self, name):
        if name == "coefs_":
            return all(hasattr(self, n) for n in ("coefs_", "intercepts_"))
        return super()._is_set(name)

    def _set_emission_attributes(self, params):
        d = params["covars"].shape[-1]
        W = params["weights"]
        if "centres" in params:  # back from every state's centre to the origin
            W = _recentre(W, -params["centres"], d)
        coefs, b = _unpack(W, int(self.order), d)
        self.coefs_ = coefs.cpu().numpy()
        self.intercepts_ = b.cpu().numpy()
        self.covars_ = params["covars"].cpu().numpy()
        self.n_features = d

    def _infer_n_features(self) -> None:
        if getattr(self, "n_features", None) is None:
            self.n_features = int(np.shape(self.covars_)[-1])

    def _emission_specs(self, k, d):
        """Finite coefficients (k, order, d, d) and intercepts (k, d), and one symmetric
        positive-definite noise covariance (d, d) per state."""
        if d is None:
            return {"covars_": Stored(None, "pd")}
        return {
            "coefs_": Stored((k, int(self.order), d, d)),
            "intercepts_": Stored((k, d)),
            "covars_": Stored((k, d, d), "pd"),
        }

    # ------------------------------------------------------------------ the emission hooks
    def _emission_log_likelihood(self, params, D, features=None):
        w, cov, c = params["weights"], params["covars"], params.get("centres")
        if "sequence" in params:  # scoring: the sequences of D, each about its own centres
            seq, b = params["sequence"], params["intercepts"]
            return ar_log_likelihood(D, w, cov, c, sequence=seq, intercepts=b)
        return ar_log_likelihood(D, w, cov, c)

    def _emission_rows(self, params, D):
        if "sequence" not in params:
            return super()._emission_rows(params, D)
        ll = self._emission_log_likelihood(params, D)  # (t, k): rows know their sequence
        return lambda a, b: ll[a:b]

    def _emission_stats(self, params, D, gamma, features=None):
        return ar_stats(D, gamma, params["covars"].shape[-1], params.get("centres"))

    def _emission_mstep(self, params, stats):
        dt = params["weights"].dtype
        st = {key: stats[key].double() for key in ("post", "zz", "xz", "xx")}
        fixed = None if "a" in self.params else params["weights"].double()
        W, cov = ar_mstep(st, self.ridge, self.min_covar, fixed, torch.finfo(dt).eps)
        scatter = ar_scatter(st, W, self.ridge) if "c" in self.params else None
        empty = (st["post"] <= 1e-10 * max(float(st["post"].sum()), 1.0)).nonzero().flatten()
        W, cov = W.to(dt), cov.to(dt)
        # a state no data visits keeps its parameters (see BaseHMM)
        W[empty], cov[empty] = params["weights"][empty], params["covars"][empty]
        if "c" in self.params:
            self._warn_unresolved(st, W, cov, empty, torch.finfo(dt).eps)
        new = {}
        if "centres" in params:  # the weights move with the centres, kept or re-estimated
            old = params["centres"]
            new["centres"] = ar_centres(st, old.double()).to(dt)
            new["centres"][empty] = old[empty]
            # a step of the order of a state's spread: the weights keep their digits
            delta = new["centres"].double() - old.double()  # (k, d)
            W = _recentre(W.double(), delta, cov.shape[-1]).to(dt)
        if "a" in self.params or "centres" in params:
            new["weights"] = W
        if "c" in self.params:
            new["covars"] = cov
            # what the data give to every noise covariance, and the responses' own covariance:
            # a state whose residuals vanish has collapsed (_find_degenerate)
            new["scatter"] = scatter
            new["data_cov"] = ar_data_covariance(st, params.get("centres"))
            new["post"] = st["post"]
        return new, empty.tolist()

    def _find_degenerate(self, params) -> dict:
        """The visited states whose noise covariance collapsed: what the data give to it (the
        residual scatter, before the floor) against the responses' covariance
        (:func:`~latentfit.em.gaussian.degenerate_components`, full covariances)."""
        if "scatter" not in params:
            return {}
        found = degenerate_components(
            params["scatter"], "full", params["data_cov"], float(self.min_covar)
        )
        post = params["post"]
        return {k: j for k, j in found.items() if post[k] > 1e-10 * max(float(post.sum()), 1.0)}

    def _describe_degenerate(self, found, rows) -> str:
        why = (
            "Its residuals vanish on the scale of min_covar: either its rows follow an exact "
            "autoregression (the likelihood then grows without bound as min_covar shrinks, "
            "so it is not a real fit and BIC/AIC favour it spuriously) or their noise is "
            f"smaller than min_covar={self.min_covar:g} (then pass a smaller min_covar, or "
            "rescale X). Try fewer states, another random_state or more n_init, or remove the "
            "noise-free stretch."
        )
        return describe_degenerate(
            type(self).__name__,
            found,
            rows,
            "min_covar",
            "state",
            variance="noise variance",
            why=why,
        )

    def _warn_unresolved(self, stats, W, cov, empty, eps) -> None:
        """PrecisionLossWarning for the visited states whose new noise covariance keeps fewer
        than 3 digits: the smallest eigenvalue of Sigma_ij / (d sqrt(l_i l_j)) under 1000,
        with l the rounding levels of its columns (:func:`ar_rounding`; d sqrt(l_i l_j) is
        their sum when the columns share a scale). Each column is measured in its own units,
        as the densities are (their Cholesky factor scales with the columns): against the
        levels summed, columns of sd 1e6 and 0.7 warned at every iteration of an ordinary
        fit. A state whose rows (lags included) lie far apart, beyond what its statistics
        about one centre can resolve (one state over two groups of rows 1e8 apart with a
        noise sd of 0.1: a variance of 0.07 came out as 2.7)."""
        level = ar_rounding(stats, W.double(), self.ridge, eps)  # (k, d)
        scale = level.clamp_min(torch.finfo(level.dtype).tiny).sqrt()  # (k, d)
        units = cov.shape[-1] * scale.unsqueeze(2) * scale.unsqueeze(1)  # (k, d, d)
        smallest = torch.linalg.eigvalsh(cov.double() / units)[:, 0]  # (k,)
        lost = smallest < 1e3
        lost[empty] = False
        if bool(lost.any()):
            i = int(lost.nonzero()[0])
            warnings.warn(
                f"{type(self).__name__}: the noise covariance of state(s) "
                f"{lost.nonzero().flatten().tolist()} keeps fewer than 3 digits (state {i}: "
                f"smallest variance {float(smallest[i]):.3g} times the rounding error of its "
                "statistics, each column in its own units): its rows lie too far apart (groups "
                "of rows far from each other) for the variance to be resolved. Centre each "
                "group of sequences on its own mean, fit far groups separately, or try more "
                "states or another random_state.",
                PrecisionLossWarning,
                stacklevel=user_stacklevel(),
            )

    def _emission_n_params(self):
        k, p, d = self.n_components, int(self.order), self.n_features
        return {"a": k * (p * d * d + d), "c": k * d * (d + 1) // 2}

    # ------------------------------------------------------------------ inference
    def sample(self, n_samples=1, random_state=None, currstate=None, history=None):
        """Draw ``n_samples`` steps of one sequence: (X (n, d), states (n,)).

        Every drawn step follows its state's regression on the ``order`` values before it;
        ``history`` (p, d) gives the values before the first drawn step, oldest first, and
        defaults to zeros (start from a given history to avoid the transient of zeros). The
        draws do not include it; the first state is drawn from ``startprob_`` (or is
        ``currstate``)."""
        check_is_fitted(self, "startprob_")
        params = self._given_params()
        n_samples = check_sample_count(n_samples, getattr(self, "n_features", 1))
        k, p, d = self.n_components, int(self.order), self.n_features
        if history is None:
            hist = np.zeros((p, d))
        else:
            try:
                hist = np.asarray(history, dtype=np.float64)
            except (TypeError, ValueError):
                raise ParameterError(f"history must be an array of shape ({p}, {d})") from None
            if hist.shape != (p, d):
                raise ParameterError(
                    f"history must be {p} finite row(s) of {d} values (the observations before "
                    f"the first drawn step, oldest first), got shape {hist.shape}"
                )
            bad = np.argwhere(~np.isfinite(hist))
            if len(bad):
                i, j = (int(v) for v in bad[0])
                raise ParameterError(
                    f"history[{i}, {j}] is {hist[i, j]}: the {p} row(s) before the first drawn "
                    "step must be observed, finite values (the regression starts from them; "
                    "no value is marginalised here); give observed rows, or leave history "
                    "out to start from zeros"
                )
        check_state_index(currstate, k)
        rs = self.random_state if random_state is None else random_state
        gen = make_generator(rs, "cpu")
        start = params["startprob"].double().cpu()
        trans_cdf = params["transmat"].double().cpu().cumsum(1).numpy()
        W = params["weights"].double().cpu()  # (k, d, p d + 1)
        L = torch.linalg.cholesky(params["covars"].double().cpu())  # (k, d, d)
        s = int(torch.multinomial(start, 1, generator=gen)) if currstate is None else currstate
        noise = torch.randn(n_samples, d, generator=gen, dtype=torch.float64)
        u = torch.rand(n_samples, generator=gen, dtype=torch.float64).numpy()
        states = markov_chain(trans_cdf, u, s)
        eps = torch.empty_like(noise)  # (n, d): L_s noise, state by state
        for j in range(k):
            rows = torch.from_numpy(states == j)
            eps[rows] = noise[rows] @ L[j].T
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below
            X = torch.from_numpy(ar_path(W.numpy(), states, eps.numpy(), hist))
        return draws_in_dtype(X, self._dtype).numpy(), states


def _state_means(D: torch.Tensor, gamma: torch.Tensor, d: int) -> torch.Tensor:
    """Every state's gamma-weighted mean of the responses x_t of the design rows D (k, d)
    over the scored rows; the mean of all of them for a state with no weight."""
    Y, _, scored = _regressors(D, d)
    g = gamma * scored.unsqueeze(1)  # (t, k)
    N = g.sum(0)  # (k,)
    whole = (scored @ Y) / scored.sum().clamp_min(1)  # (d,)
    means = (g.T @ Y) / N.clamp_min(torch.finfo(N.dtype).tiny).unsqueeze(1)  # (k, d)
    return torch.where((N > 0).unsqueeze(1), means, whole)


def _best_row_medians(
    D: torch.Tensor, ll: torch.Tensor, d: int, sequence: torch.Tensor | None = None, q: int = 1
) -> torch.Tensor:
    """Every state's (lower) median, column by column, of the responses x_t of the design rows
    D (t, m) whose log-density ``ll`` (t, k) it has the highest; for a state that has none,
    the response of the row where it comes closest to the best (k, d). With ``sequence``
    (t,), every row's sequence of ``q``: those of every sequence's rows apart (q, k, d)."""
    Y = D[:, :d]  # (t, d)
    t, k = ll.shape
    seq = D.new_zeros(t, dtype=torch.int64) if sequence is None else sequence
    top = ll.max(1, keepdim=True).values  # (t, 1)
    gap = torch.nan_to_num(ll - top, nan=-math.inf)  # (t, k) <= 0, 0 where the state is best
    # the closest rows: the first row of every sequence at its highest gap of every state
    at = seq.unsqueeze(1).expand(t, k)  # (t, k)
    most = gap.new_full((q, k), -math.inf).scatter_reduce(0, at, gap, "amax")  # (q, k)
    steps = torch.arange(t, device=D.device).unsqueeze(1).expand(t, k)  # (t, k)
    hit = torch.where(gap == most[seq], steps, t)
    first = hit.new_full((q, k), t).scatter_reduce(0, at, hit, "amin")  # (q, k)
    out = Y[first.clamp(max=t - 1)].reshape(q * k, d)  # (q k, d)
    # the medians: the rows sorted by group (sequence, best state), within it by value
    group = seq * k + ll.argmax(1)  # (t,)
    order = Y.argsort(dim=0, stable=True)  # (t, d)
    order = order.gather(0, group[order].argsort(dim=0, stable=True))
    counts = torch.bincount(group, minlength=q * k)  # (q k,)
    middle = (counts.cumsum(0) - counts + (counts - 1).div(2, rounding_mode="floor")).clamp(0)
    medians = Y.gather(0, order)[middle.clamp(max=t - 1)]  # (q k, d)
    out = torch.where((counts > 0).unsqueeze(1), medians, out).reshape(q, k, d)
    return out if sequence is not None else out[0]


def _pack(coefs: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(k, p, d, d) A and (k, d) b as the regression weights [A_1 .. A_p, b] (k, d, p d + 1)."""
    k, p, d, _ = coefs.shape
    return torch.cat([coefs.permute(0, 2, 1, 3).reshape(k, d, p * d), b.unsqueeze(2)], 2)


def _unpack(W: torch.Tensor, p: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = W.shape[0]
    coefs = W[:, :, :-1].reshape(k, d, p, d).permute(0, 2, 1, 3).contiguous()
    return coefs, W[:, :, -1].contiguous()


def _lag_centres(centres: torch.Tensor, m: int) -> torch.Tensor:
    """The centres (k, d) of the regressors [x_{t-1}, .., x_{t-p}, 1] (k, m): each lag about
    its state's centre, the constant not moved."""
    k, d = centres.shape
    return torch.cat([centres.repeat(1, (m - 1) // d), centres.new_zeros(k, 1)], 1)


def _recentre(W: torch.Tensor, c: torch.Tensor, d: int) -> torch.Tensor:
    """The weights for data centred on c ((d,), or (k, d): one centre per state):
    x − c = sum_l A_l (x_{t-l} − c) + b', with b' = b − (I − sum_l A_l) c.

    b' is the sum of b, −c and the products A_{l,ij} c_j, each exact (:func:`_two_product`),
    summed in twice float64's precision (:func:`_accurate_sum`) and rounded once: b' is
    small beside the terms when c is near the state's rows, and summed in the working
    precision (float32 at 1e6: terms spaced by 0.06) it kept the rounding of the terms."""
    k = W.shape[0]
    p = (W.shape[2] - 1) // d
    A = W[:, :, :-1].double()  # (k, d, p d): column l d + j holds A_{l,ij}
    c = c.double().expand(k, d)
    hi, lo = _two_product(A, c.repeat(1, p).unsqueeze(1))  # (k, d, p d) each
    terms = torch.cat([W[:, :, -1:].double(), -c.unsqueeze(2), hi, lo], 2)  # (k, d, 2 p d + 2)
    out = W.clone()
    out[:, :, -1] = _accurate_sum(terms).to(W.dtype)
    return out


def _two_product(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fl(a b), its rounding error) of float64 tensors, a b = hi + lo exactly (Dekker 1971,
    Veltkamp's splitting; no fused multiply-add in torch). Where the split overflows (values
    beyond 1e300) the error is left 0."""

    def split(x):  # x = hi + lo, each of at most 26 significant bits
        t = 134217729.0 * x  # 2^27 + 1
        hi = t - (t - x)
        return hi, x - hi

    prod = a * b
    (ah, al), (bh, bl) = split(a), split(b)
    err = ((ah * bh - prod) + ah * bl + al * bh) + al * bl
    return prod, torch.where(torch.isfinite(err), err, 0.0)


def _accurate_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of float64 ``x`` over its last axis as if in twice the precision, then rounded:
    pairwise sums whose rounding errors, exact by Knuth's TwoSum (Knuth 1969, §4.2.2; Ogita,
    Rump & Oishi 2005), are summed on the side and added at the end."""
    err = x.new_zeros(x.shape[:-1])
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = torch.cat([x, x.new_zeros(*x.shape[:-1], 1)], -1)
        a, b = x[..., 0::2], x[..., 1::2]
        s = a + b
        bb = s - a
        err = err + ((a - (s - bb)) + (b - bb)).sum(-1)
        x = s
    return x[..., 0] + err
