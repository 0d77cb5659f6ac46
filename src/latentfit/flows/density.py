"""Density models by exact maximum likelihood: MAF, Real NVP and neural-spline flows.

log p(x) = log N(f(x); 0, I) + log|det ∂f/∂x| with f a stack of invertible layers from
:mod:`latentfit.flows.layers` (Papamakarios et al. 2017; Dinh et al. 2017; Durkan et al. 2019).
Before the layers, a fixed affine map standardises each feature (its log-determinant is part of
log p); for 8-bit data (``dequantize=True``) the levels are dequantised uniformly and moved to
the real line by a logit, whose Jacobian is counted as well, so scores are bounds on the
discrete log P(x) (see :mod:`latentfit.flows.objectives`). Training goes through
:func:`latentfit.train.train` (early stopping, exact resume, NaN skip, DDP, bf16 autocast).
"""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from latentfit._atomic_fit import fitting, resumed_by
from latentfit._memory import MAX_WORK, allowed_work, check_max_work
from latentfit._moments import column_moments, standard_scale
from latentfit._validation import (
    as_float_tensor,
    check_bool,
    check_feature_names,
    check_module_memory,
    check_positive_int,
    check_sample_count,
    first_nonfinite,
    is_finite_above,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from latentfit.errors import (
    DataError,
    ModelFileError,
    ParameterError,
    ResourceLimitError,
    user_stacklevel,
)
from latentfit.flows.layers import (
    _Autoregressive,
    check_tail_bound,
    flow_forward,
    flow_inverse,
    make_density_layers,
)
from latentfit.flows.objectives import (
    as_levels,
    check_level_scale_option,
    dequantize,
    level_scale,
    logit_transform,
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
    check_fixed_buffers,
    load_module_tensors,
    overflowing_layer,
    watch_finite,
)

__all__ = ["MAF", "FlowDensity", "FlowModule", "NeuralSplineFlow", "RealNVP"]

_LOG_2PI = math.log(2 * math.pi)


def check_level_scale(extra: dict, n_levels: int, setting: str) -> float:
    """``extra.level_scale_`` of a model file of 8-bit data (``setting`` names the option
    that asks for it): the factor :func:`~latentfit.flows.objectives.level_scale` chose at
    fit, 1 (integer levels) or n_levels - 1 (intensities in [0, 1]). Anything else (missing,
    0, negative) would make every draw and score wrong: ModelFileError naming the field."""
    value = extra.get("level_scale_")
    if value is None:
        raise ModelFileError(
            f"the model file's header lacks the field 'extra.level_scale_' that a model fitted "
            f"with {setting}=True stores; the file was altered or is damaged"
        )
    allowed = (1.0, float(n_levels - 1))
    if value not in allowed:
        raise ModelFileError(
            f"the model file's header field 'extra.level_scale_' must be 1 (integer levels) or "
            f"{n_levels - 1} (n_levels - 1: intensities in [0, 1]), got {value!r:.80}; the file "
            "was altered or is damaged"
        )
    return float(value)


def check_finite_draws(
    x: torch.Tensor, what: str, module: nn.Module | None = None, rerun=None, network_finite=True
) -> torch.Tensor:
    """``x`` (n, d) draws of a fitted model, refused (ParameterError naming the first row and
    column) where one is NaN or inf, or where ``network_finite`` is False (a layer of ``module``
    gave NaN or inf that the clip to the levels' range or a tanh hid): the model's weights are
    not usable (the fit diverged, or they were altered), and such draws must not be written as
    if they were samples. With ``module``, the message names the layer that overflows
    (:func:`overflowing_layer`, found by ``rerun()``, which draws again from the same start)."""
    idx = first_nonfinite(x)
    if idx is None and network_finite:
        return x
    found = None if module is None else overflowing_layer(module, rerun)
    if idx is not None:
        said = f"drew a non-finite value ({float(x[idx]):g}) at row {idx[0]}, column {idx[-1]}"
    else:
        said = "gave NaN or inf while drawing (a clip to the data's range or a tanh hid it)"
    if found is None:
        where = ""
    elif found[1]:
        where = f": the layer {found[0]} gives NaN or inf"
    else:  # finite out of every layer, beyond the dtype in the arithmetic after one
        where = f": its arithmetic overflows after the layer {found[0]}"
    raise ParameterError(
        f"{what} {said}{where}. Its fitted weights are not usable (the fit diverged, or the "
        "model file was altered); fit it again with a lower learning rate"
    )


class FlowModule(nn.Module):
    """The network of a flow density: x → standardise → layers → N(0, I).

    ``forward(x, generator)`` returns log p(x) (n,): exact for continuous data; for levels
    (``n_levels`` set) the one-sample dequantisation bound E_u log p((k+u)/L) - d log L.
    """

    def __init__(self, layers: nn.ModuleList, dim: int, n_levels: int | None, alpha: float):
        super().__init__()
        self.layers = layers
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("log_scale", torch.zeros(dim))
        self.dim, self.n_levels, self.alpha = dim, n_levels, alpha

    def log_prob_real(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) of real-valued x (n, d) (after the logit, for 8-bit data)."""
        u = (x - self.shift) * torch.exp(-self.log_scale)
        z, log_det = flow_forward(self.layers, u)
        log_base = -0.5 * (z.square().sum(-1) + self.dim * _LOG_2PI)
        return log_base + log_det - self.log_scale.sum()

    def to_real(self, levels: torch.Tensor, generator=None):
        """Dequantised, logit-transformed levels and the log-determinant of that map."""
        y = dequantize(levels, self.n_levels, generator)
        return logit_transform(y, self.alpha)

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        if self.n_levels is None:
            return self.log_prob_real(x)
        w, log_det = self.to_real(x, generator)
        return self.log_prob_real(w) + log_det - self.dim * math.log(self.n_levels)

    @torch.no_grad()
    def sample(
        self, n: int, generator=None, chunk_rows: int | None = None, real: bool = False
    ) -> torch.Tensor:
        """n draws (n, d): real values, or levels 0..L-1 (as floats) for 8-bit data (``real``:
        the values before the sigmoid, which :meth:`levels` turns into levels).
        ``chunk_rows`` bounds the rows of one pass through the layers (their activations are
        rows x hidden each); the draws do not depend on it."""
        p = self.shift
        z = torch.randn((n, self.dim), generator=generator, device=p.device, dtype=p.dtype)
        rows = n if chunk_rows is None else max(1, int(chunk_rows))
        x = torch.cat(
            [flow_inverse(self.layers, z[i : i + rows]) for i in range(0, max(n, 1), rows)]
        )
        x = x * torch.exp(self.log_scale) + self.shift
        if self.n_levels is None or real:
            return x
        return self.levels(x)

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """Levels 0..L-1 (as floats) of real draws x (n, d) (before the sigmoid)."""
        v = torch.sigmoid(x)
        y = ((v - self.alpha) / (1 - 2 * self.alpha)).clamp(0, 1)
        return torch.floor(y * self.n_levels).clamp(0, self.n_levels - 1)


class FlowDensity(FitSettings, DensityMixin, BaseEstimator):
    """A normalizing-flow density estimator trained by exact maximum likelihood.

    Parameters: ``flow`` "maf", "realnvp" or "spline"; ``n_layers`` layers of MADEs or coupling
    networks with ``n_hidden`` hidden layers of ``hidden`` units (``n_bins`` and ``tail_bound``
    for splines). ``dequantize``: the data are 8-bit levels (integers 0..n_levels-1, or floats
    in [0, 1] on the grid k / (n_levels - 1)); scores and bits/dim are then bounds on the
    discrete log-likelihood. ``level_scale``: how 8-bit data are read, 1 as integer level codes
    0..n_levels-1, n_levels - 1 as intensities k / (n_levels - 1) in [0, 1]; None: codes where
    a value exceeds 1, else intensities (data of 0s and 1s alone are either, and say it here).
    ``alpha``: the logit's margin for 8-bit data. Training: Adam
    (``lr``, ``weight_decay``) for ``epochs`` epochs of ``batch_size`` rows, early stopping
    after ``patience`` epochs without progress on a ``validation_fraction`` of the rows (or on
    ``X_val`` given to ``fit``), ``grad_accum``, ``max_grad_norm``, ``checkpoint_dir`` (resumed
    exactly). ``random_state`` seeds the weights, the split and the training noise.

    Fitted attributes: ``module_`` (the network), ``n_features_in_``, ``history_`` (one dict
    per epoch), ``best_val_log_likelihood_``, ``n_skipped_steps_``. ``module_`` is read in the
    model's dtype: set to another after the fit, the flow scores, samples and saves in it.
    The settings of the layers and of 8-bit data (:meth:`_structure`) are read as the fit
    used them; one changed since takes effect at the next fit (a save refuses it).
    """

    _default_flow = "maf"
    _levels_setting = "dequantize"
    module_ = FittedInDtype()

    def __init__(
        self,
        flow: str | None = None,
        *,
        n_layers: int = 5,
        hidden: int = 128,
        n_hidden: int = 2,
        n_bins: int = 8,
        tail_bound: float = 5.0,
        dequantize: bool = False,
        n_levels: int = 256,
        level_scale: float | None = None,
        alpha: float = 1e-6,
        epochs: int = 50,
        batch_size: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int | None = 10,
        validation_fraction: float = 0.1,
        grad_accum: int = 1,
        max_grad_norm: float | None = None,
        checkpoint_dir: str | None = None,
        random_state=None,
        device=None,
        dtype="float32",
        verbose: bool = False,
    ):
        self.flow = flow
        self.n_layers = n_layers
        self.hidden = hidden
        self.n_hidden = n_hidden
        self.n_bins = n_bins
        self.tail_bound = tail_bound
        self.dequantize = dequantize
        self.n_levels = n_levels
        self.level_scale = level_scale
        self.alpha = alpha
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

    # ---- validation ---------------------------------------------------------------------
    @property
    def _kind(self) -> str:
        return self.flow or self._default_flow

    def _check_parameters(self) -> None:
        if self._kind not in ("maf", "realnvp", "spline"):
            raise ParameterError(f"flow must be 'maf', 'realnvp' or 'spline', got {self.flow!r}")
        counts = ("n_layers", "hidden", "n_hidden", "batch_size", "grad_accum", "n_bins")
        self._check_training_settings(counts)
        check_bool(self.dequantize, "dequantize")  # 'no' would count as true
        self._check_levels()
        check_level_scale_option(self.level_scale, self.n_levels)
        if not (is_finite_above(self.alpha, 0.0) and self.alpha < 0.5):
            raise ParameterError(f"alpha must lie in (0, 0.5), got {self.alpha!r}")
        # every flow's, as scikit-learn checks every setting: a spline's, also where no layer
        # reads it (a MAF's tail_bound='zzz' was taken)
        check_tail_bound(self.tail_bound, resolve_dtype(self.dtype))

    def _structure(self) -> tuple[str, ...]:
        """The settings that fix the fitted flow: its layers, and for 8-bit data the levels
        and the logit's margin it reads them with (see :class:`FitSettings`)."""
        names = ("flow", "n_layers", "hidden", "n_hidden", "dequantize")
        if self._kind == "spline":
            names += ("n_bins", "tail_bound")
        return names + (("n_levels", "alpha") if self.dequantize else ())

    @property
    def _fitted_kind(self) -> str:
        return self._fitted("flow") or self._default_flow

    def _as_input(
        self, X, name: str = "X", reset: bool = False, scoring: bool = False
    ) -> torch.Tensor:
        """X as a tensor of the model's dtype; 8-bit data as levels 0..L-1 (``scoring``: by
        the fitted model, whose levels the data must be on)."""
        check_feature_names(self, X, reset=reset)  # DataFrame columns by name, as scikit-learn
        t = as_float_tensor(X, name=name, dtype=resolve_dtype(self.dtype), device=self._dev)
        if not reset and t.shape[1] != self.n_features_in_:
            raise DataError(
                f"{name} has {t.shape[1]} features, but this {type(self).__name__} was fitted on "
                f"{self.n_features_in_}; pass data with the same columns"
            )
        if not self._fitted("dequantize"):
            return t
        n_levels = self._fitted("n_levels")
        if reset:
            self.level_scale_ = level_scale(t, n_levels, self.level_scale)
        else:
            self._check_levels(fitted=True)
        return as_levels(t, n_levels, self.level_scale_, name, "dequantize=True", scoring)

    @property
    def _dev(self) -> torch.device:
        return resolve_device(self.device)

    def _module(self, d: int, n_layers: int | None = None, n_hidden: int | None = None):
        f = self._fitted
        n_layers = f("n_layers") if n_layers is None else n_layers
        n_hidden = f("n_hidden") if n_hidden is None else n_hidden
        layers = make_density_layers(
            self._fitted_kind, d, n_layers, f("hidden"), n_hidden, f("n_bins"), f("tail_bound")
        )
        return FlowModule(layers, d, f("n_levels") if f("dequantize") else None, f("alpha"))

    def _build(self, d: int) -> FlowModule:
        """The flow for ``d`` features, on the model's device and dtype; refused first where its
        weights could not be held while training (a ``hidden`` or ``n_layers`` off by digits)."""
        dtype = resolve_dtype(self.dtype)
        n_layers, hidden, n_hidden = (self._fitted(k) for k in ("n_layers", "hidden", "n_hidden"))
        check_module_memory(
            lambda n_layers, n_hidden: self._module(d, n_layers, n_hidden),
            f"{type(self).__name__}(n_layers={n_layers}, hidden={hidden}, "
            f"n_hidden={n_hidden}) on {d} features",
            layers=n_layers,
            depth=n_hidden,
            device=self._dev,
            dtype=dtype,
            hint="use fewer or narrower layers (hidden, n_layers, n_hidden)",
        )
        return self._module(d).to(device=self._dev, dtype=dtype)

    # ---- fitting ------------------------------------------------------------------------
    def fit(self, X, y=None, X_val=None):
        """Maximise the (exact or dequantised) log-likelihood of X with the trainer. A fit that fails
        changes nothing, and Ctrl-C keeps the model so far, then raises KeyboardInterrupt
        (:func:`latentfit._atomic_fit.fitting`)."""
        with fitting(self, resumed_by(self.checkpoint_dir)):
            return self._fit(X, X_val)

    def _fit(self, X, X_val=None):
        """:meth:`fit`'s work."""
        from latentfit.train import TrainConfig, train

        self._check_parameters()
        self._record_fit_settings()
        X = self._as_input(X, reset=True)
        self.n_features_in_ = X.shape[1]
        if X.shape[1] < 2:
            raise DataError(
                f"X has {X.shape[1]} feature; a flow's layers split or order at least 2 features. "
                "Fit a one-dimensional density with latentfit.fit_mle or a GaussianMixture"
            )
        if not self.dequantize:
            warn_constant_columns(X)
            warn_whole_numbers(X)
        gen = make_generator(self.random_state)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        if X_val is None and self.validation_fraction > 0 and self.patience is not None:
            X, X_val = holdout_split(X, self.validation_fraction, gen)
        elif X_val is not None:
            X_val = self._as_input(X_val, "X_val")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build(X.shape[1])
        self._init_standardisation(module, X, seed)
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
        from latentfit.flows.objectives import FlowNLL

        result = train(module, FlowNLL(), X, X_val, cfg)
        self.module_ = module.eval()
        self.history_ = result.history
        self.best_val_log_likelihood_ = result.best_val_bound
        self.n_skipped_steps_ = result.n_skipped
        return self

    @torch.no_grad()
    def _init_standardisation(self, module: FlowModule, X: torch.Tensor, seed: int) -> None:
        """Shift and scale every feature to mean 0, sd 1 (on the logit scale for 8-bit data)."""
        if module.n_levels is not None:
            X = module.to_real(X, torch.Generator(X.device).manual_seed(seed))[0]
        mean, sd = column_moments(X)  # (d,) each; finite for data near 1e300
        module.shift.copy_(mean)
        module.log_scale.copy_(torch.log(standard_scale(sd)) if X.shape[0] > 1 else 0.0)

    # ---- scoring and sampling -----------------------------------------------------------
    @torch.no_grad()
    def score_samples(self, X, n_samples: int = 1, random_state=0) -> np.ndarray:
        """log p(x) per row: exact for continuous data; for 8-bit data the dequantisation bound
        on log P(x) with ``n_samples`` draws of u, log (1/S Σ_s p(y_s)) - d log L, a lower bound
        in expectation that tightens with S (Ho et al. 2019, eq. 11)."""
        check_is_fitted(self, "module_")
        n_samples = check_positive_int(n_samples, "n_samples")
        gen = make_generator(random_state, self._dev)  # checked where no draw needs it too
        X = self._as_input(X, scoring=True)
        if not self._fitted("dequantize"):
            log_p = self._batched(lambda xb: self.module_(xb), X)
        else:
            # log Σ_s p(y_s) accumulated draw by draw in float64 (memory (n,) whatever S), the
            # result in the model's dtype as every other score
            total = self._batched(lambda xb: self.module_(xb, gen), X).double()  # (n,)
            for _ in range(n_samples - 1):
                total = torch.logaddexp(total, self._batched(lambda xb: self.module_(xb, gen), X))
            log_p = (total - math.log(n_samples)).to(X.dtype)
        check_finite_log_density(
            log_p,
            f"the {type(self).__name__}",
            self.module_,
            lambda rows: self.module_(X[rows], make_generator(random_state, self._dev)),
            X,
        )
        return log_p.cpu().numpy()

    def _batched(self, fn, X: torch.Tensor, batch: int = 1000) -> torch.Tensor:
        return torch.cat([fn(X[i : i + batch]) for i in range(0, X.shape[0], batch)])

    def score(self, X, y=None) -> float:
        """Mean log-likelihood of the rows of X (nats)."""
        return float(np.mean(self.score_samples(X), dtype=np.float64))

    def bits_per_dim(self, X, n_samples: int = 1, random_state=0) -> float:
        """-mean log p(x) / (d log 2)."""
        ll = self.score_samples(X, n_samples=n_samples, random_state=random_state)
        return float(-np.mean(ll, dtype=np.float64) / (self.n_features_in_ * math.log(2)))

    def sample(self, n_samples: int = 1, random_state=None, max_work=MAX_WORK) -> np.ndarray:
        """``n_samples`` draws (n, d) in the scale of the training data (levels for 8-bit).
        ``random_state``: None draws from the estimator's own ``random_state``, as every
        estimator's ``sample`` (hmmlearn's rule: an int seed gives the same draws each call).
        ``max_work``: the most multiply-adds the draws may take (:func:`check_sampling_work`;
        None: no limit), refused before the first draw."""
        check_is_fitted(self, "module_")
        self._check_levels(fitted=True)
        n_samples = check_sample_count(n_samples, self.n_features_in_, device=self._dev)
        check_sampling_work(n_samples, self.module_.layers, self._fitted_kind, max_work)
        rs = self.random_state if random_state is None else random_state
        gen = make_generator(rs, self._dev)
        start = gen.get_state()

        def draw():  # the same draws on every call (again to find the layer that overflows)
            gen.set_state(start)
            rows = sampling_chunk_rows(self._fitted("hidden"))
            return self.module_.sample(int(n_samples), gen, chunk_rows=rows, real=True)

        if self._fitted(
            "dequantize"
        ):  # levels: a NaN or inf the sigmoid and rounding hide is refused
            out, finite = watch_finite(self.module_, draw)
        else:  # real values keep a non-finite draw, refused below naming the layer; a test of
            # every layer's output (1.3-3x a MAF's sampling time) would only refuse the
            # infinities a tanh takes to their limit, the value the network means
            out, finite = draw(), True
        what = f"the {type(self).__name__}"
        check_finite_draws(out, what, self.module_, draw, network_finite=finite)
        if self._fitted("dequantize"):
            out = self.module_.levels(out) / self.level_scale_
        return out.cpu().numpy()

    # ---- persistence --------------------------------------------------------------------
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
        "best_val_log_likelihood_": "float",
        "n_skipped_steps_": "count",
        "history_": "list",
        "level_scale_": "float",
    }
    #: What every model file of a flow holds (load refuses one without it, naming it).
    _required_state_fields: ClassVar[tuple[str, ...]] = ("n_features_in_",)

    def _get_state(self):
        # the file's settings are those of its network (latentfit.save calls this, not save)
        self._check_fit_settings("save")
        self._check_levels(fitted=True)  # a file its own load would refuse is not written
        tensors = dict(self.module_.state_dict())
        extra = {
            "n_features_in_": int(self.n_features_in_),
            "best_val_log_likelihood_": float(self.best_val_log_likelihood_),
            "n_skipped_steps_": int(self.n_skipped_steps_),
            "history_": stored_history(self.history_),
        }
        if self._fitted("dequantize"):
            extra["level_scale_"] = float(self.level_scale_)
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        return tensors, extra

    def _set_state(self, tensors, extra):
        d = extra.get("n_features_in_")
        if not isinstance(d, int) or d < 1:
            raise ModelFileError(
                f"the model file's field 'extra.n_features_in_' must be an integer >= 1, got {d!r}"
            )
        self._record_fit_settings()  # the file's settings are its fit's
        if self.dequantize:
            check_level_scale(extra, self.n_levels, "dequantize")
        # the standardisation first (its shape is the number of features), then every tensor
        # of the network the header describes, before anything is built
        check_stored_tensors(
            tensors,
            {"shift": Stored((d,)), "log_scale": Stored((d,))},
            sizes=f"extra.n_features_in_ = {d}",
        )
        what = f"a {type(self).__name__} on {d} features"
        check_network_tensors(
            lambda n_layers, n_hidden: self._module(d, n_layers, n_hidden),
            tensors,
            what,
            layers=self.n_layers,
            depth=self.n_hidden,
        )
        for k, v in extra.items():
            setattr(self, k, v)
        if "feature_names_in_" in extra:
            self.feature_names_in_ = np.asarray(extra["feature_names_in_"], dtype=object)
        module = self._build(self.n_features_in_)
        # the masks follow from the settings: the stored ones must be those, not other values
        check_fixed_buffers(
            module,
            tensors,
            f"{what} (n_layers={self.n_layers}, hidden={self.hidden}, n_hidden={self.n_hidden})",
        )
        load_module_tensors(
            module,
            tensors,
            f"{what} (n_layers={self.n_layers}, hidden={self.hidden}, n_hidden={self.n_hidden})",
        )
        self.module_ = module.eval()
        if not self.dequantize:  # the shift is the training data's mean, in the data's scale
            check_finite_density(
                self.score_samples, module.shift.cpu().numpy()[None], f"the {type(self).__name__}"
            )


@serializable
class MAF(FlowDensity):
    """Masked autoregressive flow (Papamakarios et al. 2017): exact log p(x) in one pass,
    sampling in d passes. See :class:`FlowDensity` for the parameters."""

    _default_flow = "maf"


@serializable
class RealNVP(FlowDensity):
    """Real NVP affine-coupling flow (Dinh et al. 2017): one pass both ways."""

    _default_flow = "realnvp"


@serializable
class NeuralSplineFlow(FlowDensity):
    """Rational-quadratic neural-spline coupling flow (Durkan et al. 2019): one pass both ways."""

    _default_flow = "spline"


serializable(FlowDensity)


def holdout_split(X: torch.Tensor, fraction: float, gen: torch.Generator):
    """(training rows, validation rows) of X (n, d): a random ``fraction`` of the rows, rounded,
    held out for early stopping, with at least one row on each side. One row cannot be split:
    DataError naming the ways out (found by hand: ``MAF().fit(X[:1])`` raised torch's
    IndexError from the standardisation of zero training rows, and ``validation_fraction=0.9``
    on two rows a TrainConfig error about batch_size=0)."""
    n = X.shape[0]
    if n < 2:
        raise DataError(
            f"X has {n} row: holding out validation_fraction={fraction!r} of the rows for early "
            "stopping would leave none to train on; pass more rows, pass X_val, or set "
            "validation_fraction=0 (or patience=None) to train on every row"
        )
    perm = torch.randperm(n, generator=gen).to(X.device)
    n_val = min(n - 1, max(1, round(fraction * n)))
    return X[perm[n_val:]], X[perm[:n_val]]


def check_sampling_work(n_samples: int, layers, kind: str, max_work) -> None:
    """Refuse (ResourceLimitError) ``n_samples`` draws through the inverse of ``layers`` whose
    arithmetic exceeds ``max_work`` multiply-adds, naming the largest n_samples that fits;
    None: no limit. A draw passes once through each layer's weights, d times through an
    autoregressive (MAF) layer's, which inverts one of its d coordinates a pass (Papamakarios
    et al. 2017, Sec. 3.1): 10**6 draws of an MNIST-sized MAF fit in memory (19 GB) but take
    days. The draws' memory is checked apart (:func:`~latentfit._memory.check_sample_count`)."""
    max_work = check_max_work(max_work)
    if max_work is None:
        return
    per_draw = sum(
        (layer.dim if isinstance(layer, _Autoregressive) else 1)
        * sum(p.numel() for p in layer.parameters())
        for layer in layers
    )
    per_draw = max(1, per_draw)
    work = n_samples * per_draw
    if work <= max_work:
        return
    raise ResourceLimitError(
        f"n_samples={n_samples:,} draws through the inverse of a {kind} flow of "
        f"{len(layers)} layers ({per_draw:,} multiply-adds a draw) would take about "
        f"{work:.2g} multiply-adds, more than {allowed_work(max_work)}; use n_samples <= "
        f"{max_work // per_draw:,}, or pass max_work=None to run "
        "it anyway"
    )


def sampling_chunk_rows(hidden) -> int:
    """Rows of one sampling pass through a network of ``hidden`` units (a flow's or a DDPM's):
    ~64 MB of float32 activations a layer, so that n_samples is bounded by the draws' own
    memory (checked) and not by n_samples x hidden (5e6 draws through 512 units once tried to
    allocate 10 GB at once)."""
    return max(1024, (64 << 20) // (4 * max(1, int(hidden))))


def warn_constant_columns(
    X: torch.Tensor, eight_bit: str = "dequantize=True (--dequantize)"
) -> None:
    """Warn of columns that hold one value in every training row: a density on continuous data
    is unbounded along such a column (it narrows onto the value, or onto the floor of its
    scale), so the log-likelihood rises every epoch and measures nothing. Found by hand: a CSV
    whose first column was all 1 trained to 7.6 nats a row and climbing, with no word.
    ``eight_bit`` names the option for 8-bit data of the model that warns."""
    if X.shape[0] < 2:
        return
    same = (X == X[0]).all(0)  # (d,)
    if bool(same.any()):
        cols = same.nonzero().flatten().tolist()
        shown = ", ".join(f"{j} ({float(X[0, j]):g})" for j in cols[:10])
        warnings.warn(
            f"column(s) {shown}{', ...' if len(cols) > 10 else ''} hold one value in every row "
            "of X: a density of continuous data is unbounded along such a column, so the "
            "log-likelihood rises every epoch and measures nothing. Drop the column(s), or pass "
            f"{eight_bit} if the data are 8-bit levels",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )


def warn_whole_numbers(X: torch.Tensor, eight_bit: str = "dequantize=True (--dequantize)") -> None:
    """Warn of training rows X (n, d) that hold only whole numbers, with a column that repeats
    its values (fewer distinct values than half the rows): a density of continuous data
    narrows onto such values without bound, so its log-likelihood and bits/dim say nothing
    about the data. Found by hand: a RealNVP on codes 0..4 (300x3) climbed from -5.3 to -4.3
    nats a row in 150 epochs, past -4.83, the most any distribution on those 125 cells can
    give uniform data, with no word. ``eight_bit`` names the option for levels."""
    n = X.shape[0]
    if n < 2 or not bool((X == X.round()).all()):
        return
    ordered = X.sort(0).values  # (n, d)
    distinct = 1 + (ordered[1:] != ordered[:-1]).sum(0)  # (d,)
    tied = ((distinct > 1) & (2 * distinct <= n)).nonzero().flatten().tolist()
    if not tied:
        return
    j = tied[0]
    low, high = float(ordered[0, j]), float(ordered[-1, j])
    warnings.warn(
        f"X holds only whole numbers, and column {j} only {int(distinct[j])} distinct values "
        f"({low:g}..{high:g}) in {n} rows: a density of continuous data narrows onto such "
        "values without bound, so its log-likelihood and bits/dim measure nothing. If the "
        f"data are levels, pass {eight_bit} (with n_levels above {high:g}); else spread "
        "each value over its unit bin (add uniform noise in [0, 1)) before fitting",
        RuntimeWarning,
        stacklevel=user_stacklevel(),
    )
