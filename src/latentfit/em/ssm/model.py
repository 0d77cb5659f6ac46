"""``LinearGaussianSSM``: the linear-Gaussian state-space model (linear dynamical system,
factor analysis in time) fitted by EM with the Kalman smoother, with the interface of the HMMs.

The estimator only adapts its attributes to the pure functions of :mod:`~latentfit.em.ssm.kalman`
(the filter and smoother, and their compiled CPU twin :mod:`~latentfit.em.ssm.kalman_cpu`) and
:mod:`~latentfit.em.ssm.steps` (statistics, M-step, start); the estimator base of
:mod:`latentfit.em.base` runs :func:`latentfit.em.driver.run_em` (restarts, tolerance, history,
warnings), records its result and gives BIC/AIC.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from latentfit import _compiled
from latentfit._validation import (
    as_float_tensor,
    check_allocation,
    check_feature_names,
    check_positive_int,
    check_sample_count,
    make_generator,
)
from latentfit.em.base import CriteriaMixin, EMEstimator, EMFit, check_scored
from latentfit.em.flat_columns import warn_constant_columns
from latentfit.em.gaussian import check_overflow, check_variance_floor
from latentfit.em.hmm.monitor import AttributeStateMixin, ConvergenceMonitor
from latentfit.em.hmm.sequences import check_lengths
from latentfit.em.paths import linear_path
from latentfit.em.ssm import kalman
from latentfit.em.ssm.kalman import FilterResult, SmootherResult, SSMParams
from latentfit.em.ssm.steps import (
    LETTERS,
    initial_params,
    log_prior,
    m_step,
    sufficient_statistics,
)
from latentfit.errors import DataError, LatentfitError, ModelFileError, ParameterError
from latentfit.io import Stored, serializable

__all__ = ["LinearGaussianSSM"]

#: fitted attribute of every parameter, by its field of SSMParams
ATTRIBUTES = {
    "A": "transition_matrix_",
    "C": "observation_matrix_",
    "Q": "transition_covariance_",
    "R": "observation_covariance_",
    "d": "observation_offset_",
    "mu0": "initial_state_mean_",
    "V0": "initial_state_covariance_",
}


def infer(
    p: SSMParams,
    Y: torch.Tensor,
    lengths: list[int],
    *,
    smooth: bool = True,
    workspace: dict | None = None,
):
    """Filter (and smooth): the compiled kernel for CPU tensors, the torch functions elsewhere.
    A covariance that stops being positive definite raises ParameterError naming the row.
    ``workspace`` (EM's iterations): output buffers reused between calls by the kernel."""
    if Y.device.type == "cpu" and _compiled.available():
        from latentfit.em.ssm.kalman_cpu import filter_smooth_cpu  # imports numba

        f, s, bad = filter_smooth_cpu(p, Y, lengths, smooth=smooth, workspace=workspace)
        if bad >= 0:
            _not_positive_definite(bad)
        return f, s
    try:
        f = kalman.kalman_filter(p, Y, lengths)
        s = kalman.rts_smoother(p, f, lengths) if smooth else None
    except kalman.NotPositiveDefinite as e:
        _not_positive_definite(e.row)
    return f, s


#: the covariances a fitted model must hold, and whether strictly positive definite (R) or
#: semi-definite up to rounding (Q, V0)
DEFINITE = (("Q", False), ("R", True), ("V0", False))


def _not_definite(M: torch.Tensor, strict: bool) -> float | None:
    """The smallest eigenvalue of the symmetric M when it is not positive definite (strict)
    or not semi-definite up to 1e-10 of its largest entry; else None."""
    low = float(torch.linalg.eigvalsh(M.double()).min())
    bad = not low > 0 if strict else low < -1e-10 * float(M.abs().max())
    return low if bad else None


def _check_update(p: SSMParams, X: torch.Tensor) -> None:
    """DataError where an M-step's covariance is no longer positive definite (as a fitted
    model's must be, :meth:`LinearGaussianSSM._check_params`): rounding at the data's scale
    lost it, as when one value lies orders of magnitude beyond the others (a sentinel such as
    -9.2e18 for a missing value) or every value is huge. The fit used to end with it, and the model
    could then neither score nor be saved. Names the covariance and the data's largest value."""
    for f, strict in DEFINITE:
        M = getattr(p, f)
        low = _not_definite(M, strict)
        if low is None:
            continue
        top = float(torch.linalg.eigvalsh(M.double()).max())
        where = X.double().abs().nan_to_num(nan=0.0)
        i, j = divmod(int(where.argmax()), X.shape[1])
        what = "positive definite" if strict else "positive semi-definite"
        raise DataError(
            f"the fitted {ATTRIBUTES[f]} stopped being {what} (eigenvalues {low:.3g} to "
            f"{top:.3g}): rounding at the scale of the data lost it. The data's largest value "
            f"lies in row {i}, column {j} ({float(X[i, j]):.3g} from the column's mean): "
            "check it (a value standing for a missing one?), or rescale the columns (e.g. "
            "standardise them)"
        )


def _not_positive_definite(row):
    where = f" at row {row}" if row is not None else ""
    raise ParameterError(
        f"a state or innovation covariance stopped being positive definite{where}: the "
        "parameters are degenerate or the numbers overflow. Try a larger min_covar, float64, "
        "or scaling the data"
    )


class _SSMHooks:
    """EM (Shumway & Stoffer 1982) as the driver's hooks; a batch is a group of sequences.
    ``X`` is the data less ``centre`` (d,), the observed columns' means: the parameters in
    the hooks are those of ``X``, whose offset is ``d − centre`` (see ``_prepare_fit``)."""

    def __init__(
        self, model: LinearGaussianSSM, X: torch.Tensor, lengths: list[int], centre: torch.Tensor
    ):
        self.model, self.X, self.lengths, self.centre = model, X, lengths, centre
        self._workspaces: dict[int, dict] = {}  # per batch: the kernel's output buffers

    def initialize(self, data, generator):
        return self.model._initial_params(self.X, self.lengths, generator, self.centre)

    def estep(self, params, batch):
        Y, lengths = batch
        p = SSMParams(**params)
        # the smoothed moments are reduced to statistics right away: their buffers can be
        # reused by the next E-step
        _, s = infer(p, Y, lengths, workspace=self._workspaces.setdefault(id(Y), {}))
        return sufficient_statistics(p, Y, s, lengths)

    def mstep(self, params, stats):
        m = self.model
        new = m_step(
            SSMParams(**params),
            stats,
            m.params,
            diagonal_R=m.covariance_type == "diag",
            ridge=float(m.ridge),
            min_covar=float(m.min_covar),
        )
        _check_update(new, self.X)
        return new._asdict()

    def lower_bound(self, params, stats):
        m = self.model
        return float(stats["log_likelihood"].sum()) + log_prior(
            SSMParams(**params), float(m.ridge), m.params
        )


@serializable
class LinearGaussianSSM(AttributeStateMixin, EMEstimator, CriteriaMixin, BaseEstimator):
    """Linear-Gaussian state-space model (linear dynamical system), fitted by EM.

    ``x_1 ~ N(mu0, V0)``, ``x_t = A x_{t-1} + w_t`` with ``w_t ~ N(0, Q)``, and
    ``y_t = C x_t + d + v_t`` with ``v_t ~ N(0, R)``; ``n_components`` is the state dimension
    k. The E-step is the Kalman filter (Joseph-form covariance update) and the
    Rauch-Tung-Striebel smoother, the M-step closed-form (Shumway & Stoffer 1982; Ghahramani &
    Hinton 1996). The likelihood is invariant to an invertible change of state coordinates, so
    A, C, Q, mu0 and V0 are identified only up to it; the observation covariance of the data
    under the model is identified.

    Parameters
    ----------
    n_components : state dimension k.
    covariance_type : ``"full"`` or ``"diag"`` observation noise covariance R.
    min_covar : added to the diagonal of every re-estimated covariance (Q, R, V0).
    ridge : λ ≥ 0, matrix-normal priors A | Q ~ MN(0, Q, I/λ) and C | R ~ MN(0, R, I/λ): EM
        then maximises log-likelihood + log prior (MAP), the objective recorded.
    n_iter, tol : at most ``n_iter`` EM iterations, stopping when Aitken's estimate of what
        the objective gains from the iteration before to its maximum is below ``tol``
        (McNicholas et al. 2010; :func:`latentfit.em.driver.run_em`). This model's EM creeps:
        hmmlearn's rule (a last gain below ``tol``) stopped a fit of 300 steps 1.6 nats
        short, with a noise variance 10 times the maximum's, where this one stops 0.01 short.
    params, init_params : letters of the parameters that EM re-estimates / that ``fit``
        initialises (the others are taken from the attributes set by hand): ``a`` A, ``c`` C,
        ``q`` Q, ``r`` R, ``d`` d, ``m`` mu0, ``v`` V0.
    n_init, random_state, verbose, device, dtype : as the HMMs.

    NaN entries of X are missing observations (whole or partial rows): the filter updates on
    the observed coordinates and EM uses their exact conditional moments. With a single
    training sequence, mu0 and V0 are fitted to that sequence's start (V0 shrinks to the
    posterior covariance of its first state); to score or filter new sequences from their
    first step, leave ``m`` and ``v`` out of ``params`` and set those attributes.

    Attributes
    ----------
    transition_matrix_ (k, k), observation_matrix_ (d, k), transition_covariance_ (k, k),
    observation_covariance_ (d, d), observation_offset_ (d,), initial_state_mean_ (k,),
    initial_state_covariance_ (k, k); ``lower_bounds_`` (the objective of every iteration),
    ``monitor_``, ``converged_``, ``n_iter_``, ``n_features``.
    """

    _fitted_attribute = "transition_matrix_"
    _max_iter_name = "n_iter"
    _convergence = "aitken"

    _state_fields: ClassVar[dict[str, str]] = {
        "lower_bounds_": "floats",
        "n_features": "int",
        "feature_names_in_": "strs",
    }
    _required_state_fields = ("n_features",)

    def __init__(
        self,
        n_components=1,
        covariance_type="full",
        min_covar=1e-6,
        ridge=0.0,
        n_iter=10,
        tol=1e-2,
        params="acqrdmv",
        init_params="acqrdmv",
        n_init=1,
        random_state=None,
        verbose=False,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())

    # ------------------------------------------------------------------ settings
    def _check_parameters(self):
        check_positive_int(self.n_components, "n_components")
        check_positive_int(self.n_init, "n_init")
        n_iter = self.n_iter
        if isinstance(n_iter, bool) or not isinstance(n_iter, int | np.integer) or n_iter < 0:
            raise ParameterError(f"n_iter must be an integer >= 0, got {n_iter!r}")
        tol = self.tol
        if (
            isinstance(tol, bool)
            or not isinstance(tol, int | float | np.number)
            or np.isnan(tol)
            or tol == np.inf
        ):
            raise ParameterError(
                f"tol must be a number below +inf (-inf: run every iteration), got {tol!r}"
            )
        for name in ("min_covar", "ridge"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float | np.number)
                or not np.isfinite(v)
                or v < 0
            ):
                raise ParameterError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.covariance_type not in ("full", "diag"):
            raise ParameterError(
                f"covariance_type must be 'full' or 'diag', got {self.covariance_type!r}"
            )
        for name in ("params", "init_params"):
            v = getattr(self, name)
            if not isinstance(v, str) or set(v) - set(LETTERS):
                raise ParameterError(
                    f"{name} must be a string of the letters {''.join(LETTERS)} (a: A, c: C, "
                    f"q: Q, r: R, d: d, m: mu0, v: V0), got {v!r}"
                )
        self._dtype, self._device  # noqa: B018  (ParameterError for a bad dtype or device)

    # ------------------------------------------------------------------ parameters
    def _given(self, field: str) -> torch.Tensor:
        name = ATTRIBUTES[field]
        try:
            arr = np.asarray(getattr(self, name), dtype=np.float64)
        except (TypeError, ValueError):
            raise ParameterError(f"{name} must be an array of numbers") from None
        if not np.all(np.isfinite(arr)):
            raise ParameterError(f"{name} must hold finite numbers")
        return torch.as_tensor(arr, dtype=self._dtype, device=self._device)

    def _current_params(self) -> SSMParams:
        """The attributes as checked tensors (ParameterError naming the one at fault)."""
        missing = [a for a in ATTRIBUTES.values() if not hasattr(self, a)]
        if missing:
            raise NotFittedError(
                f"This LinearGaussianSSM instance has no {missing}: call 'fit', or set every "
                f"parameter ({list(ATTRIBUTES.values())}) by hand before using it"
            )
        p = SSMParams(**{f: self._given(f) for f in ATTRIBUTES})
        if getattr(self, "n_features", None) is None:
            self.n_features = int(p.C.shape[0]) if p.C.dim() == 2 else 0
        self._check_params(p, self.n_features)
        return p

    def _check_params(self, p: SSMParams, dim: int) -> None:
        k = self.n_components
        shapes = {"A": (k, k), "C": (dim, k), "Q": (k, k), "R": (dim, dim), "d": (dim,),
                  "mu0": (k,), "V0": (k, k)}  # fmt: skip
        for f, shape in shapes.items():
            got = tuple(getattr(p, f).shape)
            if got != shape:
                raise ParameterError(
                    f"{ATTRIBUTES[f]} must have shape {shape} (n_components={k}, "
                    f"n_features={dim}), got {got}"
                )
        for f, strict in DEFINITE:
            M = getattr(p, f)
            if not torch.allclose(M, M.T, rtol=1e-6, atol=1e-12 * float(M.abs().max()) + 1e-300):
                raise ParameterError(f"{ATTRIBUTES[f]} must be symmetric")
            low = _not_definite(M, strict)
            if low is not None:
                what = "positive definite" if strict else "positive semi-definite"
                raise ParameterError(
                    f"{ATTRIBUTES[f]} must be {what} (smallest eigenvalue {low:.3g}); "
                    "add a small multiple of the identity"
                )

    def _initial_params(self, X, lengths, gen, centre) -> dict[str, torch.Tensor]:
        """The start for the data X taken about ``centre`` (d,): a given offset moves with it."""
        given = {
            field
            for letter, field in LETTERS.items()
            if letter not in self.init_params and hasattr(self, ATTRIBUTES[field])
        }
        start = {field: self._given(field) for field in given}
        if len(given) < len(LETTERS):  # a start for the others (skipped when all are given)
            fresh = initial_params(
                _impute_column_means(X),
                lengths,
                self.n_components,
                gen,
                diagonal_R=self.covariance_type == "diag",
                min_covar=float(self.min_covar),
            )._asdict()
            start = {**fresh, **start}
        # the shapes first: a given offset of another width would not broadcast with centre
        self._check_params(SSMParams(**start), X.shape[1])
        if "d" in given:
            start["d"] = start["d"] - centre
        return start

    def _set_params(self, p: dict[str, torch.Tensor]) -> None:
        for field, name in ATTRIBUTES.items():
            setattr(self, name, p[field].detach().cpu().numpy())

    # ------------------------------------------------------------------ data
    def _checked_X(self, X, *, fitting: bool) -> torch.Tensor:
        if X is None:
            raise DataError("X is None; pass an array of shape (n_steps, n_features)")
        Y = as_float_tensor(X, dtype=self._dtype, device=self._device, allow_nan=True)
        top = Y.abs().max()  # NaN if any entry is missing: then a second look, without them
        if not bool(torch.isfinite(top)):
            empty = torch.isnan(Y).all(0)  # (d,) columns with no observed value
            if fitting and bool(empty.all()):
                raise DataError(
                    f"X ({Y.shape[0]} x {Y.shape[1]}) is NaN everywhere: there is no observed value"
                )
            if fitting and bool(empty.any()):
                raise DataError(
                    f"column {int(empty.nonzero()[0])} of X is NaN in every row: its "
                    "observation parameters cannot be estimated; drop that column"
                )
            top = torch.nan_to_num(Y).abs().max()
        if not fitting and Y.shape[1] != self.n_features:
            raise DataError(
                f"X has {Y.shape[1]} features but the model was fitted with {self.n_features}"
            )
        if float(top) > 1e150:
            raise DataError("X holds values above 1e150 in magnitude; scale the data first")
        if fitting:  # the start's and the smoother's second moments, in X's dtype (float32)
            check_overflow(Y)
            # added to the diagonal of every re-estimated Q, R and V0
            check_variance_floor(Y, None, self.min_covar, "min_covar", type(self).__name__)
            warn_constant_columns(Y, None, type(self).__name__, "state")
        return Y

    def _prepare(self, X, lengths):
        self._check_parameters()
        p = self._current_params()
        check_feature_names(self, X, reset=False)
        Y = self._checked_X(X, fitting=False)
        lengths = check_lengths(lengths, Y.shape[0])
        self._check_state_memory(Y.shape[0], Y.shape[1])
        return p, Y, lengths

    def _check_state_memory(self, n: int, d: int) -> None:
        """Refuse a state dimension whose filter and smoother moments cannot be held: the
        filtered, predicted, smoothed and lag-one (n, k, k) covariances, the (n, k + d)
        means and the (k + d, k + d) matrices of the M-step."""
        k = int(self.n_components)
        check_allocation(
            8 * (4 * n * k * k + 2 * n * (k + d) + 12 * (k + d) ** 2),
            f"LinearGaussianSSM with n_components={k:,} state dimensions on {n:,} rows",
            device=self._device,
            hint="use a smaller state dimension",
        )

    # ------------------------------------------------------------------ fitting
    def fit(self, X, lengths=None):
        """Estimate the parameters by EM (``n_init`` restarts, the best kept). ``lengths``
        (n_sequences,) gives the rows of every sequence in X; NaN entries are missing."""
        self._fit(X, lengths=lengths)
        return self

    def _prepare_fit(self, X, lengths=None) -> EMFit:
        check_feature_names(self, X, reset=True)
        Y = self._checked_X(X, fitting=True)
        lengths = check_lengths(lengths, Y.shape[0])
        self.n_features = int(Y.shape[1])
        k, n = int(self.n_components), Y.shape[0]
        self._check_state_memory(n, Y.shape[1])  # first: a count beyond the machine
        if k > n:
            # as the HMMs: the k x k dynamics are estimated from the n - 1 transitions, so a
            # state of more dimensions than there are rows is not identified by the data
            raise DataError(
                f"X has {n} rows, fewer than n_components={k}: a state of {k} dimensions "
                f"cannot be estimated from {n} time steps; use a smaller n_components"
            )
        observed, p = int(torch.isfinite(Y).sum()), self._n_parameters()
        if observed <= p:
            # with no more values than parameters the noise covariances can shrink to zero
            # while the states pass through every value: the likelihood has no maximum, and a
            # BIC from it would beat every real fit
            rows = (p - observed) // max(Y.shape[1], 1) + 1
            raise DataError(
                f"X has {n} row(s) of {Y.shape[1]} column(s), {observed} observed value(s), "
                f"no more than the {p} parameters LinearGaussianSSM with n_components={k} "
                f"estimates: its likelihood grows without bound as the noise shrinks to zero; "
                f"give at least {n + rows} rows" + (", or a smaller n_components" if k > 1 else "")
            )
        # the data about their columns' means: the statistics of the M-step (sum y yᵀ, ...)
        # about the origin lost every digit of R on data far from it (offsets near 1e8 in
        # float64, 300 in float32 already cost 10 in the log-likelihood); the model moves
        # with them (y − c = C x + (d − c) + v) and d is moved back at the end (_run_em)
        centre = torch.nanmean(Y.double(), 0).to(Y.dtype)  # (d,)
        Yc = Y - centre
        return EMFit(_SSMHooks(self, Yc, lengths, centre), [(Yc, lengths)], X=Yc)

    def _run_em(self, hooks, data, reduce=None):
        result = super()._run_em(hooks, data, reduce)
        result.params = {**result.params, "d": result.params["d"] + hooks.centre}
        return result

    def _set_params_tensors(self, params: dict[str, torch.Tensor]) -> None:
        self._set_params(params)

    def _store_result(self, result, *, restarts: bool = True) -> None:
        super()._store_result(result, restarts=restarts)
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose, result.lower_bounds)

    # ------------------------------------------------------------------ inference
    def _filter(
        self, X, lengths, smooth: bool
    ) -> tuple[FilterResult, SmootherResult | None, torch.Tensor]:
        p, Y, lengths = self._prepare(X, lengths)
        return (*infer(p, Y, lengths, smooth=smooth), Y)

    def _checked(self, values: torch.Tensor, Y: torch.Tensor, what: str) -> np.ndarray:
        """``values`` (n, ...) as numpy, refused when not finite at some row: a Gaussian model
        gives every step a finite log-likelihood and state, so a non-finite one is an overflow
        (data far off the model's scale, in float32), not a score."""
        check_scored(values, Y, type(self).__name__, what=what)
        return values.cpu().numpy()

    def filter(self, X, lengths=None):
        """Filtered state means (n, k) and covariances (n, k, k): p(x_t | y_1..y_t)."""
        f, _, Y = self._filter(X, lengths, smooth=False)
        means = self._checked(f.filtered_means, Y, "filtered state mean")
        return means, f.filtered_covariances.cpu().numpy()

    def smooth(self, X, lengths=None):
        """Smoothed state means (n, k) and covariances (n, k, k): p(x_t | y_1..y_T)."""
        _, s, Y = self._filter(X, lengths, smooth=True)
        means = self._checked(s.smoothed_means, Y, "smoothed state mean")
        return means, s.smoothed_covariances.cpu().numpy()

    def predict(self, X, lengths=None):
        """Smoothed state means (n, k)."""
        return self.smooth(X, lengths)[0]

    def score_samples(self, X, lengths=None):
        """log p(y_t | y_1..y_{t-1}) of every step (n,), from the filter (0 for a NaN row)."""
        f, _, Y = self._filter(X, lengths, smooth=False)
        return self._checked(f.step_log_likelihoods, Y, "log-likelihood")

    def score(self, X, lengths=None):
        """Total log-likelihood log p(X) summed over the sequences."""
        # summed in float64: the steps of a float32 model can add up beyond float32's range
        return float(self.score_samples(X, lengths).sum(dtype=np.float64))

    def sample(self, n_samples=1, random_state=None):
        """Draw one sequence of ``n_samples`` steps: (observations (n, d), states (n, k))."""
        self._check_parameters()
        p = self._current_params()
        n = check_sample_count(n_samples, sum(v.shape[0] for v in p[:2]))
        rs = self.random_state if random_state is None else random_state
        gen = make_generator(rs, "cpu")
        A, C, Q, R, d, mu0, V0 = (v.double().cpu() for v in p)
        k, dim = A.shape[0], C.shape[0]

        def root(M):  # a square root of a PSD matrix (V0 may be singular)
            w, U = torch.linalg.eigh(M)
            return U * w.clamp_min(0).sqrt()

        w = torch.randn(n, k, generator=gen, dtype=torch.float64) @ root(Q).T
        v = torch.randn(n, dim, generator=gen, dtype=torch.float64) @ root(R).T
        x0 = mu0 + root(V0) @ torch.randn(k, generator=gen, dtype=torch.float64)
        x = torch.from_numpy(linear_path(A.numpy(), x0.numpy(), w.numpy()))  # (n, k)
        y = x @ C.T + d + v
        dt = self._dtype
        return y.to(dt).numpy(), x.to(dt).numpy()

    # ------------------------------------------------------------------ model selection
    def _n_parameters(self) -> int:
        k, dim = self.n_components, self.n_features
        sizes = {"a": k * k, "c": dim * k, "q": k * (k + 1) // 2, "d": dim, "m": k,
                 "v": k * (k + 1) // 2,
                 "r": dim if self.covariance_type == "diag" else dim * (dim + 1) // 2}  # fmt: skip
        return sum(sizes[c] for c in set(self.params))

    def _total_log_likelihood(self, X, lengths=None) -> float:
        return self.score(X, lengths)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Write the fitted model (safetensors + JSON header); read it with latentfit.load."""
        from latentfit.io import save

        self._current_params()
        return save(self, path)

    def _state_attributes(self) -> tuple[str, ...]:
        return tuple(ATTRIBUTES.values())

    def _stored_attribute_specs(self, tensors: dict, extra: dict) -> tuple[dict[str, Stored], str]:
        """A model file's matrices shaped by ``n_components`` (the state dimension) and the
        header's ``n_features``: finite transition and observation matrices and offsets,
        and symmetric positive-definite covariances (the filter inverts and factors them)."""
        s, d = self.n_components, extra["n_features"]
        specs = {
            "transition_matrix_": Stored((s, s)),
            "observation_matrix_": Stored((d, s)),
            "transition_covariance_": Stored((s, s), "pd"),
            "observation_covariance_": Stored((d, d), "pd"),
            "observation_offset_": Stored((d,)),
            "initial_state_mean_": Stored((s,)),
            "initial_state_covariance_": Stored((s, s), "pd"),
        }
        return specs, f"n_components = {s}, n_features = {d}"

    def _check_loaded(self) -> None:
        try:
            self._check_parameters()
            self._current_params()
        except (LatentfitError, NotFittedError) as err:
            raise ModelFileError(f"the stored LinearGaussianSSM is inconsistent: {err}") from None


def _impute_column_means(Y: torch.Tensor) -> torch.Tensor:
    """NaN entries replaced by their column's mean over the observed rows (for the start)."""
    miss = torch.isnan(Y)
    if not bool(miss.any()):
        return Y
    means = torch.nanmean(Y, 0)
    return torch.where(miss, means.expand_as(Y), Y)
