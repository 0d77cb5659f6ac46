"""The DDPM as an estimator: fit by the simplified ε-loss through the trainer, scored by the
true variational bound, sampled by the learned reverse process (Ho et al. 2020)."""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from latentfit._atomic_fit import fitting, resumed_by
from latentfit._memory import MAX_WORK, allowed_work, check_max_work
from latentfit._moments import column_moments, standard_scale
from latentfit._validation import (
    as_float_tensor,
    check_allocation,
    check_bool,
    check_feature_names,
    check_module_memory,
    check_positive_int,
    check_sample_count,
    is_finite_above,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from latentfit.diffusion.process import (
    BoundTerms,
    DiffusionModule,
    Schedule,
    TimeMLP,
    coarse_steps,
    fit_gaussian,
    gaussian_log_density,
    make_schedule,
)
from latentfit.errors import (
    CoarseScheduleWarning,
    DataError,
    ModelFileError,
    ParameterError,
    ResourceLimitError,
    user_stacklevel,
)
from latentfit.flows.density import (
    check_finite_draws,
    check_level_scale,
    holdout_split,
    sampling_chunk_rows,
    warn_constant_columns,
    warn_whole_numbers,
)
from latentfit.flows.objectives import (
    as_levels,
    check_level_scale_option,
    level_scale,
)
from latentfit.io import (
    Stored,
    check_network_tensors,
    check_stored_tensors,
    serializable,
    stored_history,
)
from latentfit.io import save as _save
from latentfit.model_tensors import (
    FitSettings,
    FittedInDtype,
    check_finite_density,
    check_finite_log_density,
    load_module_tensors,
    watch_finite,
)
from latentfit.vae.objectives import ObjectiveOutput

__all__ = ["DDPM", "DiffusionLoss"]


def check_timesteps(value, name: str) -> None:
    """The draws of t per row of a bound estimate: None (every t, the sum over t exact; each
    term still one draw of x_t) or an integer >= 1 (one at least T - 1 also sums every t). Zero or a negative count
    would leave the sum over t out of the bound, so scores would be silently wrong."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
    ):
        raise ParameterError(
            f"{name} must be None (every t, exact) or an integer >= 1 (draws of t per row), "
            f"got {value!r}"
        )


def check_sampling_work(n_samples: int, n_steps: int, weights: int, dim: int, max_work) -> None:
    """Refuse (ResourceLimitError) ``n_samples`` draws by ancestral sampling whose arithmetic,
    ``n_steps`` passes of every draw through a denoiser of ``weights`` weights (and its ``dim``
    values' noise and posterior mean), exceeds ``max_work`` multiply-adds, naming the largest
    n_samples that fits; None: no limit. The draws' memory is checked apart
    (:func:`~latentfit._memory.check_sample_count`): 10**8 draws of 2 values fit in 8 GB but
    would take 10**8 x 1000 network calls, weeks of one CPU core."""
    max_work = check_max_work(max_work)
    if max_work is None:
        return
    per_draw = n_steps * (weights + dim)
    work = n_samples * per_draw
    if work <= max_work:
        return
    raise ResourceLimitError(
        f"n_samples={n_samples:,} draws through {n_steps:,} denoising steps of a network of "
        f"{weights:,} weights would take about {work:.2g} multiply-adds, more than "
        f"{allowed_work(max_work)}; use n_samples <= "
        f"{max_work // per_draw:,}, or pass max_work=None to run it anyway"
    )


class DiffusionLoss:
    """Trainer objective: ``loss`` the simplified ε-loss (Ho et al. 2020, eq. 14; plus the
    weighted bound term for a learned variance, Nichol & Dhariwal 2021), ``bound``
    (n,) an unbiased one-draw estimate of minus the true bound (a lower bound on log p(x) in
    expectation), so the trainer's validation and early stopping watch the real bound."""

    def __call__(self, model, x, generator=None, kl_weight: float = 1.0) -> ObjectiveOutput:
        simple, neg_log_p_bound = model(x, generator)
        bound = -neg_log_p_bound.detach().float()
        return ObjectiveOutput(simple.mean(), bound, bound, torch.zeros_like(bound), None)


@serializable
class DDPM(FitSettings, DensityMixin, BaseEstimator):
    """Denoising diffusion probabilistic model (Ho et al. 2020) with an MLP denoiser.

    ``n_steps`` T, ``schedule`` "linear" (``beta_1``..``beta_T``) or "cosine", ``variance``
    "small" (σ_t² = β̃_t), "large" (β_t) or "learned" (per dimension, between the two, as
    Nichol & Dhariwal 2021, trained with ``vlb_weight`` times the bound's term added to the
    loss); ``gaussian_skip``: the network's ε is added to E[ε | x_t] under a Gaussian fitted to
    the training rows (variance floor ``skip_floor``, or chosen on held-out training rows:
    ``skip_floor_``); ``clip_denoised`` (8-bit data): x̂_0 is clipped to the levels' range;
    ``decoder_fraction``: an extra share of training rows drawn at t = 1, with every term
    weighted by 1/p(t) (see :class:`DiffusionModule`);
    ``prediction`` "eps" (the network predicts the
    noise) or "x0" (it predicts x_0 and ε_θ follows in closed form); both are trained by the
    simplified ε-loss; the denoiser is a :class:`TimeMLP` with ``n_hidden``
    layers of ``hidden`` units. ``discrete``: the data are 8-bit levels (integers
    0..n_levels-1 or floats in [0, 1] on the grid k/(n_levels-1)) and the decoder is the
    discretised Gaussian, so the bound is on the discrete -log P(x); otherwise real data are
    standardised per feature (the Jacobian is counted) and the decoder is a Gaussian density.
    ``level_scale``: how 8-bit data are read, 1 as integer level codes 0..n_levels-1,
    n_levels - 1 as intensities in [0, 1]; None: codes where a value exceeds 1, else
    intensities (data of 0s and 1s alone are either, and say it here).
    ``eval_timesteps``: draws of t per row for :meth:`score_samples` (None: every t, exact
    sum). Training settings as in :class:`latentfit.flows.FlowDensity`.

    Fitted attributes: ``module_``, ``n_features_in_``, ``history_``, ``n_skipped_steps_``,
    ``shift_``/``scale_`` (real data) or ``level_scale_`` (8-bit data). ``module_``,
    ``shift_`` and ``scale_`` are read in the model's dtype: set to another after the fit, the
    DDPM scores, samples and saves in it. The settings of the denoiser, the schedule and
    8-bit data (:meth:`_structure`) are read as the fit used them; one changed since takes
    effect at the next fit (a save refuses it).
    """

    _levels_setting = "discrete"
    module_ = FittedInDtype()
    shift_ = FittedInDtype()
    scale_ = FittedInDtype()

    def __init__(
        self,
        n_steps: int = 1000,
        *,
        schedule: str = "linear",
        beta_1: float = 1e-4,
        beta_T: float = 0.02,
        variance: str = "small",
        prediction: str = "eps",
        vlb_weight: float = 0.001,
        gaussian_skip: bool = False,
        skip_floor: float | None = None,
        clip_denoised: bool = False,
        decoder_fraction: float = 0.0,
        hidden: int = 512,
        n_hidden: int = 3,
        time_dim: int = 64,
        discrete: bool = True,
        n_levels: int = 256,
        level_scale: float | None = None,
        eval_timesteps: int | None = 100,
        epochs: int = 50,
        batch_size: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int | None = 20,
        validation_fraction: float = 0.1,
        grad_accum: int = 1,
        max_grad_norm: float | None = 1.0,
        checkpoint_dir: str | None = None,
        random_state=None,
        device=None,
        dtype="float32",
        verbose: bool = False,
    ):
        self.n_steps = n_steps
        self.schedule = schedule
        self.beta_1 = beta_1
        self.beta_T = beta_T
        self.variance = variance
        self.prediction = prediction
        self.vlb_weight = vlb_weight
        self.gaussian_skip = gaussian_skip
        self.skip_floor = skip_floor
        self.clip_denoised = clip_denoised
        self.decoder_fraction = decoder_fraction
        self.hidden = hidden
        self.n_hidden = n_hidden
        self.time_dim = time_dim
        self.discrete = discrete
        self.n_levels = n_levels
        self.level_scale = level_scale
        self.eval_timesteps = eval_timesteps
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.grad_accum = grad_accum
        self.max_grad_norm = max_grad_norm
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose

    @property
    def _dev(self) -> torch.device:
        return resolve_device(self.device)

    def _check_parameters(self) -> None:
        counts = ("n_steps", "hidden", "n_hidden", "time_dim", "batch_size", "grad_accum")
        self._check_training_settings(counts)
        if self.time_dim < 2:
            raise ParameterError(f"time_dim must be at least 2, got {self.time_dim}")
        if self.variance not in ("small", "large", "learned"):
            raise ParameterError(
                f"variance must be 'small', 'large' or 'learned', got {self.variance!r}"
            )
        if self.schedule not in ("linear", "cosine"):  # before the data (make_schedule)
            raise ParameterError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        for name in ("gaussian_skip", "clip_denoised", "discrete"):  # 'no' would count as true
            check_bool(getattr(self, name), name)
        b1, bT = self.beta_1, self.beta_T  # the linear schedule's; checked for either
        if not (is_finite_above(b1, 0.0) and is_finite_above(bT, 0.0) and b1 <= bT < 1):
            raise ParameterError(
                f"beta_1 and beta_T must be numbers with 0 < beta_1 <= beta_T < 1 (the linear "
                f"schedule's first and last noise variances), got beta_1={b1!r}, beta_T={bT!r}"
            )
        if self.gaussian_skip and self.prediction != "eps":
            raise ParameterError("gaussian_skip=True needs prediction='eps'")
        if self.skip_floor is not None and not is_finite_above(self.skip_floor, 0.0):
            raise ParameterError(
                f"skip_floor must be a positive number or None (chosen on held-out training "
                f"rows), got {self.skip_floor!r}"
            )
        if not (isinstance(self.decoder_fraction, (int, float)) and 0 <= self.decoder_fraction < 1):
            raise ParameterError(
                f"decoder_fraction must lie in [0, 1), got {self.decoder_fraction!r}"
            )
        if not (isinstance(self.vlb_weight, (int, float)) and 0 <= self.vlb_weight < math.inf):
            raise ParameterError(
                f"vlb_weight must be a finite number >= 0, got {self.vlb_weight!r}; "
                "0.001 is the weight of Nichol & Dhariwal 2021"
            )
        self._check_levels()
        check_level_scale_option(self.level_scale, self.n_levels)
        check_timesteps(self.eval_timesteps, "eval_timesteps")

    def _structure(self) -> tuple[str, ...]:
        """The settings that fix the fitted DDPM: its schedule, denoiser and variances, and
        for 8-bit data the levels, the clip of x̂_0 and (with a learned variance) the decoder's
        floor that ``decoder_fraction`` sets (see :class:`FitSettings`)."""
        names = ("n_steps", "schedule", "variance", "prediction", "gaussian_skip", "hidden")
        names += ("n_hidden", "time_dim", "discrete")
        if self.schedule == "linear":
            names += ("beta_1", "beta_T")
        if self.discrete:
            names += ("n_levels", "clip_denoised")
        if self.discrete and self.variance == "learned":
            names += ("decoder_fraction",)
        return names

    def _as_model_space(
        self, X, name: str = "X", reset: bool = False, scoring: bool = False
    ) -> torch.Tensor:
        """X → the model's space: levels mapped to [-1, 1], or standardised real data
        (``scoring``: by the fitted model, whose levels the data must be on)."""
        check_feature_names(self, X, reset=reset)  # DataFrame columns by name, as scikit-learn
        t = as_float_tensor(X, name=name, dtype=resolve_dtype(self.dtype), device=self._dev)
        if not reset and t.shape[1] != self.n_features_in_:
            raise DataError(
                f"{name} has {t.shape[1]} features, but this DDPM was fitted on "
                f"{self.n_features_in_}; pass data with the same columns"
            )
        if self._fitted("discrete"):
            n_levels = self._fitted("n_levels")
            if reset:
                self.level_scale_ = level_scale(t, n_levels, self.level_scale)
            else:
                self._check_levels(fitted=True)
            levels = as_levels(t, n_levels, self.level_scale_, name, "discrete=True", scoring)
            return levels * (2.0 / (n_levels - 1)) - 1.0
        if reset:
            # a constant column's likelihood measures nothing: warned (its scale is 1)
            warn_constant_columns(t, "discrete=True (--discrete)")
            warn_whole_numbers(t, "discrete=True (--discrete)")
            self.shift_, sd = column_moments(t)  # (d,) each; finite for data near 1e300
            self.scale_ = standard_scale(sd) if t.shape[0] > 1 else torch.ones_like(t[0])
        return (t - self.shift_) / self.scale_

    def _check_schedule_memory(self) -> None:
        n_steps = self._fitted("n_steps")
        check_allocation(  # the schedule's per-step arrays (betas, alpha-bars, their roots...)
            12 * 8 * n_steps,
            f"DDPM's noise schedule of n_steps={n_steps:,}",
            device=self._dev,
            hint="use fewer diffusion steps (n_steps; 1000 is usual)",
        )

    def _build(self, d: int) -> DiffusionModule:
        """The denoiser for ``d`` features, on the model's device and dtype; refused first where
        its weights could not be held while training (a ``hidden`` or ``n_hidden`` off by
        digits)."""
        dtype = resolve_dtype(self.dtype)
        self._check_schedule_memory()
        f = self._fitted
        out_dim = 2 * d if f("variance") == "learned" else d
        hidden, n_hidden, time_dim = f("hidden"), f("n_hidden"), f("time_dim")
        check_module_memory(
            lambda _, n_hidden: TimeMLP(d, f("n_steps"), hidden, n_hidden, time_dim, out_dim),
            f"DDPM(hidden={hidden}, n_hidden={n_hidden}, time_dim={time_dim}) on {d} features",
            depth=n_hidden,
            device=self._dev,
            dtype=dtype,
            hint="use a narrower or shallower denoiser (hidden, n_hidden, time_dim)",
        )
        return self._module(d).to(device=self._dev, dtype=dtype)

    def _stored_layout(self, d: int, n_hidden: int) -> torch.nn.Module:
        """A module with the persistent tensors of :meth:`_module` (the denoiser, the Gaussian
        skip's buffers), without the noise schedule, whose construction reads values: what a
        model file's tensors are compared with on the meta device before anything is built."""
        out_dim = 2 * d if self.variance == "learned" else d
        layout = torch.nn.Module()
        layout.denoiser = TimeMLP(d, self.n_steps, self.hidden, n_hidden, self.time_dim, out_dim)
        if self.gaussian_skip:
            for name, shape in (("skip_mean", (d,)), ("skip_basis", (d, d)), ("skip_var", (d,))):
                layout.register_buffer(name, torch.empty(shape, dtype=torch.float64))
        return layout

    def _module(self, d: int, n_hidden: int | None = None) -> DiffusionModule:
        f = self._fitted
        n_hidden = f("n_hidden") if n_hidden is None else n_hidden
        sched = make_schedule(f("schedule"), f("n_steps"), f("beta_1"), f("beta_T"))
        out_dim = 2 * d if f("variance") == "learned" else d  # ε_θ, and v for σ_t²
        net = TimeMLP(d, f("n_steps"), f("hidden"), n_hidden, f("time_dim"), out_dim)
        module = DiffusionModule(
            net,
            sched,
            d,
            f("variance"),
            f("n_levels") if f("discrete") else None,
            f("prediction"),
            self.vlb_weight,  # training alone reads it: the next fit's
            f("gaussian_skip"),
            f("clip_denoised"),
            f("decoder_fraction"),
        )
        return module

    def fit(self, X, y=None, X_val=None):
        """Train the denoiser with the simplified loss; validate on the true bound. A fit that fails
        changes nothing, and Ctrl-C keeps the model so far, then raises KeyboardInterrupt
        (:func:`latentfit._atomic_fit.fitting`)."""
        with fitting(self, resumed_by(self.checkpoint_dir)):
            return self._fit(X, X_val)

    def _fit(self, X, X_val=None):
        """:meth:`fit`'s work."""
        from latentfit.train import TrainConfig, train

        self._check_parameters()
        self._record_fit_settings()
        X = self._as_model_space(X, reset=True)
        self.n_features_in_ = X.shape[1]
        gen = make_generator(self.random_state)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        if X_val is None and self.validation_fraction > 0 and self.patience is not None:
            X, X_val = holdout_split(X, self.validation_fraction, gen)
        elif X_val is not None:
            X_val = self._as_model_space(X_val, "X_val")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build(X.shape[1])
        self._warn_coarse_schedule(module)
        if self.gaussian_skip:
            self.skip_floor_ = self._choose_floor(X, gen)
            module.set_gaussian(*fit_gaussian(self._dequantised(X, gen), self.skip_floor_))
        cfg = TrainConfig(
            epochs=self.epochs,
            batch_size=min(self.batch_size, X.shape[0]),
            lr=self.lr,
            weight_decay=self.weight_decay,
            grad_accum=self.grad_accum,
            max_grad_norm=self.max_grad_norm,
            patience=self.patience if X_val is not None else None,
            seed=seed,
            device=str(self._dev),
            checkpoint_dir=self.checkpoint_dir,
            diagnostics=False,
            progress=bool(self.verbose),
        )
        result = train(module, DiffusionLoss(), X, X_val, cfg)
        self.module_ = module.eval()
        self.history_ = result.history
        self.n_skipped_steps_ = result.n_skipped
        return self

    def _warn_coarse_schedule(self, module: DiffusionModule) -> None:
        """CoarseScheduleWarning where the schedule is too coarse for Gaussian reverse steps
        (:func:`~latentfit.diffusion.process.coarse_steps`): such a DDPM trains and scores,
        but its bound and draws are poor (Old Faithful: -26.9 nats a row at T = 5 against
        -5.8 at T = 1000)."""
        found = coarse_steps(
            Schedule(module.betas, module.alphas, module.alpha_bar, module.alpha_bar_prev)
        )
        name = f"DDPM(n_steps={self.n_steps}, schedule={self.schedule!r})"
        if found.t is not None:
            enough = next(  # the fewest steps of this schedule without such a step
                n
                for n in range(self.n_steps + 1, 1001)
                if coarse_steps(make_schedule(self.schedule, n, self.beta_1, self.beta_T)).t is None
            )
            warnings.warn(
                f"{name}: step t={found.t} takes alpha_bar from {found.alpha_bar_prev:.3g} "
                f"to {found.alpha_bar:.3g}, replacing "
                f"{found.alpha_bar_prev - found.alpha_bar:.0%} of the variance by noise at "
                "once, so one Gaussian reverse step must turn that noise back into data and "
                f"the bound and samples will be poor; use n_steps={enough} or more (Ho et "
                "al. use 1000)",
                CoarseScheduleWarning,
                stacklevel=user_stacklevel(),
            )
        if found.alpha_bar_T is not None:
            # the linear schedule keeps alpha_bar_T near its T = 1000 value for T >= 2
            long = make_schedule(self.schedule, 1000, self.beta_1, self.beta_T)
            fix = "more steps" if coarse_steps(long).alpha_bar_T is None else "a larger beta_T"
            warnings.warn(
                f"{name}: alpha_bar_T = {found.alpha_bar_T:.3g}, so x_T keeps "
                f"{math.sqrt(found.alpha_bar_T):.0%} of the data's scale and is far from the "
                f"N(0, I) that sampling starts from; use {fix} (Ho et al.'s schedule ends at "
                "alpha_bar_T = 4e-5)",
                CoarseScheduleWarning,
                stacklevel=user_stacklevel(),
            )

    def _dequantised(self, x: torch.Tensor, gen) -> torch.Tensor:
        """8-bit data spread uniformly over their bins (the Gaussian of the skip path is a
        density: on the bare levels a pixel constant in training gets variance 0)."""
        if not self.discrete:
            return x
        u = torch.rand(x.shape, generator=gen, dtype=torch.float64).to(x.device)
        return x.double() + (u - 0.5) * (2.0 / (self.n_levels - 1))

    #: Candidates for the variance floor of the skip path's Gaussian, in the model's space.
    _FLOORS: ClassVar[tuple[float, ...]] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)

    def _choose_floor(self, X: torch.Tensor, gen) -> float:
        """``skip_floor``, or the floor whose Gaussian, fitted on 90% of the training rows,
        gives the other 10% the highest log-density (a pixel constant in training and not
        in the held-out rows otherwise costs thousands of nats)."""
        if self.skip_floor is not None:
            return float(self.skip_floor)
        if X.shape[0] < 20:
            return 1e-2
        perm = torch.randperm(X.shape[0], generator=gen).to(X.device)
        n_held = max(1, X.shape[0] // 10)
        held = self._dequantised(X[perm[:n_held]], gen)
        rest = self._dequantised(X[perm[n_held:]], gen)
        scores = {}
        for floor in self._FLOORS:
            scores[floor] = float(gaussian_log_density(held, *fit_gaussian(rest, floor)).mean())
        return max(scores, key=scores.get)

    def _log_jacobian(self) -> float:
        """log|det| of the map from the user's scale to the model's space (real data)."""
        return 0.0 if self._fitted("discrete") else -float(torch.log(self.scale_).sum())

    def bound_terms(
        self, X, n_timesteps: int | None = None, random_state=0, batch_size: int = 500
    ) -> BoundTerms:
        """The bound's terms in nats per row (float64 tensors): L_T, Σ L_{t-1} (every t when
        ``n_timesteps`` is None, else an unbiased stratified estimate over t; either way each
        L_{t-1} from one draw of x_t, drawn for the rows in order from ``random_state``), L_0,
        and their sum, an unbiased estimate of an upper bound on -log p(x) (8-bit: on
        -log P(x)). Real data include the Jacobian of the
        standardisation in ``decoder`` and ``total``."""
        check_is_fitted(self, "module_")
        check_timesteps(n_timesteps, "n_timesteps")
        batch_size = check_positive_int(batch_size, "batch_size")
        x0 = self._as_model_space(X, scoring=True)
        gen = make_generator(random_state, self._dev)
        parts = [
            self.module_.bound(x0[i : i + batch_size], gen, n_timesteps)
            for i in range(0, x0.shape[0], batch_size)
        ]
        terms = [
            torch.cat([getattr(p, f) for p in parts]).double().cpu() for f in BoundTerms._fields
        ]
        jac = self._log_jacobian()
        prior, diffusion, decoder, total = terms
        check_finite_log_density(
            jac - total,  # the log-density bound of each row
            "the DDPM",
            self.module_,
            lambda rows: self.module_.bound(
                x0[rows], make_generator(random_state, self._dev), n_timesteps
            ),
            # the rows in the data's scale, for the message only
            lambda: (
                (x0 + 1) * ((self._fitted("n_levels") - 1) / 2 / self.level_scale_)
                if self._fitted("discrete")
                else x0 * self.scale_ + self.shift_
            ),
        )
        return BoundTerms(prior, diffusion, decoder - jac, total - jac)

    def score_samples(self, X) -> np.ndarray:
        """Minus the bound per row in nats, with ``eval_timesteps``: a one-draw Monte Carlo
        estimate, not the bound itself. Each term L_{t-1} is an expectation over x_t ~ q(x_t | x_0),
        and one x_t is drawn per row and t (``eval_timesteps=None`` sums every t, it does not
        average over x_t), so a row's value is a lower bound on log p(x) only in expectation.
        The draws come from a fixed seed (``bound_terms``' ``random_state=0``), one stream for
        the rows in order: a row's value is repeatable for the same rows, but changes with the
        rows scored beside it and their order (spread ~ the bound's per-row Monte Carlo error).
        Average over seeds with ``bound_terms(X, random_state=...)`` for a tighter figure."""
        check_timesteps(self.eval_timesteps, "eval_timesteps")
        return -self.bound_terms(X, self.eval_timesteps).total.numpy()

    def score(self, X, y=None) -> float:
        return float(np.mean(self.score_samples(X)))

    def bits_per_dim(self, X, n_timesteps: int | None = None, random_state=0) -> float:
        """The mean bound in bits per dimension (an upper bound on the NLL)."""
        total = self.bound_terms(X, n_timesteps, random_state).total
        return float(total.mean() / (self.n_features_in_ * math.log(2)))

    def sample(self, n_samples: int = 1, random_state=None, max_work=MAX_WORK) -> np.ndarray:
        """Draws by ancestral sampling (T network calls), in the training data's scale.
        ``random_state``: None draws from the estimator's own ``random_state``, as every
        estimator's ``sample`` (hmmlearn's rule: an int seed gives the same draws each call).
        ``max_work``: the most multiply-adds the draws may take (:func:`check_sampling_work`;
        None: no limit), refused before the first step."""
        check_is_fitted(self, "module_")
        self._check_levels(fitted=True)
        n_samples = check_sample_count(n_samples, self.n_features_in_, device=self._dev)
        weights = sum(p.numel() for p in self.module_.denoiser.parameters())
        check_sampling_work(n_samples, self.module_.n_steps, weights, self.n_features_in_, max_work)
        rs = self.random_state if random_state is None else random_state
        gen = make_generator(rs, self._dev)
        start = gen.get_state()

        def draw():  # the same draws on every call (again to find the layer that overflows)
            gen.set_state(start)
            rows = sampling_chunk_rows(self._fitted("hidden"))
            return self.module_.sample(int(n_samples), gen, chunk_rows=rows, real=True)

        # a NaN or inf of the network before the clip (of x̂_0, of the levels) or the tanh is
        # refused: clipped, it would be written as the end level
        x, finite = watch_finite(self.module_.denoiser, draw, layers=False)
        check_finite_draws(x, "the DDPM", self.module_, draw, network_finite=finite)
        if self._fitted("discrete"):
            x = self.module_.levels(x) / self.level_scale_
        else:
            x = x * self.scale_ + self.shift_
        return check_finite_draws(x, "the DDPM").cpu().numpy()

    def save(self, path):
        """Write the fitted model (safetensors + JSON header); read it with latentfit.load.
        The file holds ``history_`` without each epoch's ``seconds`` (a timing of this run, not
        of the fit), so that one int ``random_state`` gives one file, byte for byte."""
        check_is_fitted(self, "module_")
        return _save(self, path)

    #: What a model file may set on the estimator (checked by latentfit.load).
    _state_fields: ClassVar[dict[str, str]] = {
        "n_features_in_": "int",
        "feature_names_in_": "strs",
        "n_skipped_steps_": "count",
        "history_": "list",
        "level_scale_": "float",
        "skip_floor_": "positive",  # the rule of skip_floor
    }
    #: What every model file of a DDPM holds (load refuses one without it, naming it).
    _required_state_fields: ClassVar[tuple[str, ...]] = ("n_features_in_",)

    def _get_state(self):
        # the file's settings are those of its network (latentfit.save calls this, not save)
        self._check_fit_settings("save")
        self._check_levels(fitted=True)  # a file its own load would refuse is not written
        tensors = dict(self.module_.state_dict())
        extra = {
            "n_features_in_": int(self.n_features_in_),
            "n_skipped_steps_": int(self.n_skipped_steps_),
            "history_": stored_history(self.history_),
        }
        if self.discrete:
            extra["level_scale_"] = float(self.level_scale_)
        else:
            tensors["shift_"], tensors["scale_"] = self.shift_, self.scale_
        if self.gaussian_skip:
            extra["skip_floor_"] = float(self.skip_floor_)
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        return tensors, extra

    def _set_state(self, tensors, extra):
        tensors = dict(tensors)
        d = extra.get("n_features_in_")
        if not isinstance(d, int) or d < 1:
            raise ModelFileError(
                f"the model file's field 'extra.n_features_in_' must be an integer >= 1, got {d!r}"
            )
        self._record_fit_settings()  # the file's settings are its fit's
        if self.discrete:
            check_level_scale(extra, self.n_levels, "discrete")
        else:
            if "shift_" not in tensors or "scale_" not in tensors:
                raise ModelFileError(
                    "the model file lacks the tensors 'shift_' and 'scale_' that a continuous "
                    "DDPM stores; the file was altered or is damaged"
                )
            # the standardisation's scale is a standard deviation floored at 1e-6 by fit
            check_stored_tensors(
                tensors,
                {"shift_": Stored((d,)), "scale_": Stored((d,), "positive")},
                sizes=f"extra.n_features_in_ = {d}",
            )
        for k, v in extra.items():
            setattr(self, k, v)
        if "feature_names_in_" in extra:
            self.feature_names_in_ = np.asarray(extra["feature_names_in_"], dtype=object)
        dt = resolve_dtype(self.dtype)
        if not self.discrete:
            self.shift_ = tensors.pop("shift_").to(self._dev, dt)
            self.scale_ = tensors.pop("scale_").to(self._dev, dt)
        # the header's sizes against the stored tensors' shapes before anything is built
        self._check_schedule_memory()
        check_network_tensors(
            lambda _, n_hidden: self._stored_layout(d, n_hidden),
            tensors,
            f"a DDPM denoiser on {d} features",
            depth=self.n_hidden,
        )
        # the Gaussian skip's variances (persistent buffers of the module) are variances
        check_stored_tensors(tensors, {"skip_var": Stored((d,), "positive", required=False)})
        module = self._build(self.n_features_in_)
        load_module_tensors(
            module,
            tensors,
            f"a DDPM denoiser on {d} features (hidden={self.hidden}, n_hidden={self.n_hidden})",
        )
        self.module_ = module.eval()
        if not self.discrete:  # shift_ is the training data's mean, in the data's scale
            check_finite_density(self.score_samples, self.shift_.cpu().numpy()[None], "the DDPM")
