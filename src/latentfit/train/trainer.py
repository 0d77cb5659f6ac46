"""The training loop for VAEs: a dataclass config and one flat function, read top to bottom.

Adam on a differentiable objective (:mod:`latentfit.vae.objectives`), validation every epoch,
early stopping on the validation bound, checkpoints that resume exactly, non-finite steps
skipped and counted, bf16 autocast on CUDA, gradient accumulation and DistributedDataParallel.

Randomness: the epoch permutation comes from one generator seeded by ``seed`` (saved in the
checkpoint); the noise of micro-batch j of optimiser step t (binarisation, samples of z) comes
from a generator seeded by (seed, t, j). A global batch is always cut into the same
``world_size × grad_accum`` micro-batches, so one process accumulating 2 micro-batches and two
processes with one each compute the same step, and a resumed run repeats an uninterrupted one
bit for bit.
"""

from __future__ import annotations

import contextlib
import csv
import math
import numbers
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from latentfit._files import atomic_path
from latentfit._interrupt import keeping_fit_on_ctrl_c, stop_requested, stoppable
from latentfit._validation import (
    SEED_MAX,
    as_numeric_array,
    check_positive_int,
    check_seed,
    resolve_device,
)
from latentfit.errors import DataError, ModelFileError, ParameterError
from latentfit.train import distributed as dist_utils
from latentfit.train.checkpoint import (
    CHECKPOINT_FORMAT,
    RESULT_KEYS,
    check_optimizer_state,
    check_resume,
    first_line,
    read_checkpoint,
    run_identity,
    save_checkpoint,
)
from latentfit.vae.data import data_sha256
from latentfit.vae.diagnostics import check_collapse, diagnose, model_rows
from latentfit.vae.likelihoods import check_model_data, check_training_columns, integer_levels
from latentfit.vae.schedules import make_schedule

__all__ = ["TrainConfig", "TrainResult", "train", "validation_bound"]


@dataclass
class TrainConfig:
    """Settings of :func:`train` (plain values, stored in every checkpoint).

    ``batch_size`` is the global batch per optimiser step, split over processes and
    ``grad_accum`` micro-batches. ``kl_schedule`` "none" / "linear" / "cyclical" over
    ``warmup_epochs`` epochs (``n_cycles`` cycles). ``patience``: stop after that many epochs
    without a validation bound better by ``min_delta`` (None: never stop early); the best
    weights are restored at the end when ``restore_best``. ``checkpoint_dir``: write
    ``last.pt`` at each epoch end and every ``checkpoint_every`` steps, and resume from it when
    ``resume``. A resume is refused unless every setting that shapes the result (all fields
    but ``epochs``, ``device``, ``max_steps`` and the checkpoint / reporting ones), the
    objective, a custom schedule, the model spec and the training and validation data (by
    SHA-256) equal the checkpoint's; the error names each difference. ``epochs`` may grow. ``max_steps``: stop (with a checkpoint) after that many optimiser steps in total.
    ``binarize``: draw x ~ Bernoulli(pixel intensity) afresh each time a training batch is used
    (dynamic binarisation); validation data are binarised once with a fixed seed.
    """

    epochs: int = 20
    batch_size: int = 100
    lr: float = 1e-3
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float | None = None
    kl_schedule: str = "none"
    warmup_epochs: float = 10.0
    n_cycles: int = 4
    patience: int | None = 10
    min_delta: float = 0.0
    restore_best: bool = True
    binarize: bool = False
    seed: int = 0
    device: str = "cpu"
    bf16: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    resume: bool = True
    max_steps: int | None = None
    diagnostics: bool = True
    collapse_min_kl: float = 0.01
    progress: bool = True
    metrics_csv: str | None = None
    tensorboard_dir: str | None = None
    val_batch_size: int = 500


@dataclass
class TrainResult:
    """What :func:`train` did. ``history`` holds one dict of metrics per epoch."""

    history: list[dict] = field(default_factory=list)
    best_val_bound: float = -math.inf
    best_epoch: int = -1
    n_skipped: int = 0
    steps: int = 0
    epochs: int = 0
    stopped_early: bool = False
    interrupted: bool = False
    #: Stopped by Ctrl-C at the command line (:mod:`latentfit._interrupt`): ``interrupted``
    #: too, but the best epoch's weights are restored as at a run's end.
    stopped_on_request: bool = False
    collapse_warned: bool = False


def _stream_seed(seed: int, step: int, j: int) -> int:
    """A 63-bit seed for micro-batch j of step t; distinct streams for distinct (t, j)."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + j * 0x94D049BB133111EB) % 2**64
    x ^= x >> 31
    return x % 2**63


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all gradients as one vector: one foreach kernel per device and dtype (what
    ``torch.nn.utils.get_total_norm`` does, without its per-call grouping in Python)."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault((g.device, g.dtype), []).append(g)
    first = grads[0].device
    norms = [n.to(first) for group in groups.values() for n in torch._foreach_norm(group)]
    return torch.linalg.vector_norm(torch.stack(norms))


def _check_data(X, name: str, binarize: bool) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        if X.is_complex():
            raise DataError(f"{name} is complex: Complex data not supported, fit real values")
    else:  # text, None, objects and ragged rows refused by name, not by torch's TypeError
        X = torch.from_numpy(np.ascontiguousarray(as_numeric_array(X, name)))
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty (n, d) array, got shape {tuple(X.shape)}")
    X = X.float() if not X.is_floating_point() else X
    # min and max propagate NaN and show ±inf: one fast pass (isfinite is ~10x slower on CPU)
    lo, hi = (float(v) for v in torch.aminmax(X))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        r, c = (int(i) for i in (~torch.isfinite(X)).nonzero()[0])
        raise DataError(
            f"{name} holds a non-finite value at row {r}, column {c}; remove or impute it"
        )
    if binarize and (lo < 0 or hi > 1):
        raise DataError(
            f"binarize=True needs {name} in [0, 1] (pixel intensities), got values in "
            f"[{lo:.3g}, {hi:.3g}]; scale the data or set binarize=False"
        )
    return X


def _check_objective(objective) -> None:
    if not callable(objective):
        raise ParameterError(
            f"objective must be an objective such as ELBO() or IWAE(k), called as "
            f"objective(model, x, generator); got {objective!r:.80}"
        )


def validation_bound(model, objective, X: torch.Tensor, seed: int, batch_size: int = 500) -> float:
    """Mean of the objective's bound over X, e.g. L_k for IWAE(k).

    Batch b of X uses noise seeded by (seed, b) and is evaluated by process b mod world, so the
    value does not depend on the number of processes. ``X`` is checked as every VAE function
    checks its rows (``model_rows``: non-empty (n, d), the model's columns, finite, in the
    likelihood's support), ``seed`` is an integer from 0 to 2**32 - 1 and ``batch_size`` one >= 1.
    """
    _check_objective(objective)
    X = model_rows(model, X)
    seed = check_seed(seed, "seed")
    batch_size = check_positive_int(batch_size, "batch_size")
    return _validation_bound(model, objective, X, seed, batch_size)


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """The model in eval mode inside the block, back in the mode it had on every way out
    (an objective that raises included), so a failed validation leaves the caller's model
    as it found it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _validation_bound(model, objective, X: torch.Tensor, seed: int, batch_size: int) -> float:
    """:func:`validation_bound` on rows and settings already checked (the training loop's
    call at every epoch's end)."""
    rank, world = dist_utils.rank(), dist_utils.world_size()
    total = torch.zeros(2, dtype=torch.float64, device=X.device)
    with _evaluating(model), torch.no_grad():
        for b, start in enumerate(range(0, X.shape[0], batch_size)):
            if b % world != rank:
                continue
            gen = torch.Generator(X.device).manual_seed(_stream_seed(seed, 2**40 + b, 0))
            out = objective(model, X[start : start + batch_size], gen)
            total[0] += out.bound.double().sum()
            total[1] += out.bound.shape[0]
    dist_utils.all_reduce_sum(total)
    return float(total[0] / total[1])


def _check_finite_validation(model, objective, X, seed, batch_size, value, epoch) -> None:
    """Refuse a non-finite validation bound (DataError naming the first row that makes it so):
    early stopping and the best epoch would be chosen on a number that cannot improve, and
    the model of the first epoch returned as the best. Found by hand: one validation row at
    1e30 made every epoch's bound -inf, so training stopped after ``patience`` epochs with the
    first epoch's weights, silently. The rows are scored again only on this failure path, with
    the seeds of :func:`_validation_bound`."""
    if math.isfinite(value):
        return
    where = ""
    with _evaluating(model), torch.no_grad():
        for b, start in enumerate(range(0, X.shape[0], batch_size)):
            gen = torch.Generator(X.device).manual_seed(_stream_seed(seed, 2**40 + b, 0))
            bound = objective(model, X[start : start + batch_size], gen).bound
            bad = (~torch.isfinite(bound)).nonzero()
            if len(bad):
                i = int(bad[0, 0])
                where = f": row {start + i} of them has {float(bound[i])}"
                break
    raise DataError(
        f"the bound on the validation rows (X_val, or those held out of X) is {value} after "
        f"epoch {epoch}{where}, so no epoch could be chosen as the best. Such a row lies where "
        "the model's arithmetic overflows (values far outside the training rows): remove or "
        "rescale it"
    )


def _write_csv(path: Path, history: list[dict]) -> None:
    if not history or not dist_utils.is_main():
        return
    keys = list(history[0])
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def _tensorboard(logdir):
    if logdir is None or not dist_utils.is_main():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # TensorBoard is optional
        return None
    return SummaryWriter(logdir)


#: The fields of TrainConfig that are counts and numbers: stored as plain int and float.
_COUNTS = (
    "epochs",
    "batch_size",
    "grad_accum",
    "n_cycles",
    "patience",
    "checkpoint_every",
    "max_steps",
    "val_batch_size",
    "seed",
)
_NUMBERS = (
    "lr",
    "adam_eps",
    "weight_decay",
    "max_grad_norm",
    "warmup_epochs",
    "min_delta",
    "collapse_min_kl",
)


def _check_config(cfg) -> TrainConfig:
    """ParameterError naming each TrainConfig field outside its range; else a copy of ``cfg``
    with numpy integers and floats (``np.int64(100)`` as batch_size, ``np.float32(1e-3)`` as
    lr) as plain int and float, as every estimator takes them and as the checkpoint, read
    back with ``weights_only=True``, must hold them."""

    def number(v, lo, hi=math.inf, lo_open=False):
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        return ok and (v > lo if lo_open else v >= lo) and v <= hi

    def count(v, lo):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo

    rules = [
        ("epochs", count(cfg.epochs, 0), "an integer >= 0"),
        ("batch_size", count(cfg.batch_size, 1), "an integer >= 1"),
        ("grad_accum", count(cfg.grad_accum, 1), "an integer >= 1"),
        ("lr", number(cfg.lr, 0), "a finite number >= 0"),
        ("adam_eps", number(cfg.adam_eps, 0, lo_open=True), "a positive finite number"),
        ("weight_decay", number(cfg.weight_decay, 0), "a finite number >= 0"),
        (
            "adam_betas",
            isinstance(cfg.adam_betas, (tuple, list))
            and len(cfg.adam_betas) == 2
            and all(number(b, 0, 1) and b < 1 for b in cfg.adam_betas),
            "two numbers in [0, 1)",
        ),
        (
            "max_grad_norm",
            cfg.max_grad_norm is None or number(cfg.max_grad_norm, 0, lo_open=True),
            "None or a positive number",
        ),
        ("warmup_epochs", number(cfg.warmup_epochs, 0), "a finite number >= 0"),
        ("n_cycles", count(cfg.n_cycles, 1), "an integer >= 1"),
        ("patience", cfg.patience is None or count(cfg.patience, 1), "None or an integer >= 1"),
        ("min_delta", number(cfg.min_delta, 0), "a finite number >= 0"),
        ("checkpoint_every", count(cfg.checkpoint_every, 0), "an integer >= 0 (0: epoch ends)"),
        ("max_steps", cfg.max_steps is None or count(cfg.max_steps, 1), "None or an integer >= 1"),
        ("val_batch_size", count(cfg.val_batch_size, 1), "an integer >= 1"),
        ("seed", count(cfg.seed, 0) and cfg.seed <= SEED_MAX, "an integer from 0 to 2**32 - 1"),
        ("collapse_min_kl", number(cfg.collapse_min_kl, 0), "a finite number >= 0"),
    ]
    flags = ("restore_best", "binarize", "bf16", "resume", "diagnostics", "progress")
    rules += [(name, isinstance(getattr(cfg, name), bool), "True or False") for name in flags]
    bad = [f"{name}={getattr(cfg, name)!r} (must be {what})" for name, ok, what in rules if not ok]
    if bad:
        raise ParameterError(f"invalid TrainConfig: {'; '.join(bad)}")
    plain = {k: None if getattr(cfg, k) is None else int(getattr(cfg, k)) for k in _COUNTS}
    plain |= {k: None if getattr(cfg, k) is None else float(getattr(cfg, k)) for k in _NUMBERS}
    return replace(cfg, **plain, adam_betas=tuple(float(b) for b in cfg.adam_betas))


def _check_diverged(count: int, params: list[torch.Tensor], epoch: int, n_batches: int) -> None:
    """Refuse to go on (and so to return a model that would be saved as fitted) when training
    has diverged: every step of the epoch was skipped as non-finite (``count`` = 0 rows used),
    or a weight is NaN or inf. An occasional skipped step is kept as before (counted in
    ``n_skipped``)."""
    hint = (
        "lower the learning rate (lr, e.g. 1e-3), the KL weight (beta) or the free bits, set "
        "max_grad_norm, or check the data for extreme values"
    )
    if count == 0:
        raise ParameterError(
            f"training diverged: all {n_batches} optimiser step(s) of epoch {epoch} gave a "
            f"non-finite (NaN or inf) loss or gradient and were skipped, so the model did not "
            f"train; {hint}"
        )
    if params and not math.isfinite(float(_total_norm([p.detach() for p in params]))):
        raise ParameterError(
            f"training diverged: the weights hold NaN or inf after epoch {epoch}; {hint}"
        )


def _check_warmup_finished(cfg: TrainConfig, schedule, custom: bool, res: TrainResult) -> None:
    """Warn when a KL warm-up of the config had not reached weight 1 by the last optimiser
    step of a finished run: the model was then trained on a down-weighted KL throughout,
    not on the bound it reports (``warmup_epochs`` longer than ``epochs``, or early stopping
    inside the warm-up). A custom schedule is the caller's own choice, and a run stopped by
    ``max_steps`` is to be resumed, so neither is warned about."""
    if custom or cfg.kl_schedule == "none" or res.steps == 0 or res.interrupted:
        return
    last = float(schedule(res.steps - 1))
    if last >= 1.0:
        return
    warnings.warn(
        f"the {cfg.kl_schedule} KL warm-up over warmup_epochs={cfg.warmup_epochs:g} epochs "
        f"had reached a KL weight of only {last:.3g} at the last step (epoch {res.epochs}"
        f"{', stopped early' if res.stopped_early else ''}): the model was trained on a "
        "down-weighted KL, not on the bound it reports; use warmup_epochs well below epochs "
        "(e.g. half of them) or train for more epochs",
        UserWarning,
        stacklevel=4,  # the caller of train (train -> _train -> here)
    )


def train(
    model: nn.Module,
    objective,
    X_train,
    X_val=None,
    config: TrainConfig | None = None,
    schedule=None,
) -> TrainResult:
    """Fit ``model`` by minimising ``objective``'s loss on X_train; validate on X_val each epoch.

    ``schedule``: a KL-weight schedule object (step → weight) overriding ``config.kl_schedule``.
    Under torchrun (or after :func:`latentfit.train.distributed.init_process`) the model is
    wrapped in DistributedDataParallel and each process trains on its micro-batches of every
    global batch. The model is trained in place; the returned :class:`TrainResult` holds the
    per-epoch history.

    Ctrl-C (a notebook's interrupt) stops the run after an optimiser step, as ``max_steps``
    does (one process only): the checkpoint is written, the best epoch's weights restored, and
    the result returned with ``stopped_on_request`` and a warning; a second Ctrl-C raises
    KeyboardInterrupt at once.
    """
    with keeping_fit_on_ctrl_c("train", raising=False) as pressed:
        res = _train(model, objective, X_train, X_val, config, schedule)
    if pressed.stopped and res.stopped_on_request:
        kept = (
            "the weights of its best epoch so far"
            if res.best_epoch > 0 and (config is None or config.restore_best)
            else "the weights of its last step"
        )
        again = (
            "train with the same checkpoint_dir resumes it"
            if config is not None and config.checkpoint_dir
            else "give a checkpoint_dir to be able to resume a run"
        )
        warnings.warn(
            f"training stopped by Ctrl-C after {res.steps} optimiser steps ({res.epochs} whole "
            f"epoch(s)); the model holds {kept}, and {again}",
            UserWarning,
            stacklevel=2,
        )
    return res


def _train(model, objective, X_train, X_val, config, schedule) -> TrainResult:
    """:func:`train`'s work."""
    if config is not None and not isinstance(config, TrainConfig):
        raise ParameterError(
            f"config must be a TrainConfig (or None for the defaults), got "
            f"{type(config).__name__}; build one with TrainConfig(epochs=..., ...)"
        )
    cfg = _check_config(config or TrainConfig())
    _check_objective(objective)
    if not isinstance(model, nn.Module) or not any(p.requires_grad for p in model.parameters()):
        raise ParameterError(
            f"model must be a torch.nn.Module with parameters to train, got "
            f"{type(model).__name__}{'' if isinstance(model, nn.Module) else ' (not a Module)'}"
        )
    try:
        device = resolve_device(cfg.device)
    except ParameterError:  # names the device and what to use instead
        raise
    except (RuntimeError, ValueError) as err:
        raise ParameterError(
            f"device={cfg.device!r} cannot be used: {str(err).splitlines()[0]}; try 'cpu'"
        ) from err
    rank, world = dist_utils.rank(), dist_utils.world_size()
    n_micro = world * cfg.grad_accum
    if cfg.batch_size < n_micro:
        raise ParameterError(
            f"batch_size={cfg.batch_size} cannot be cut into {world} processes × "
            f"{cfg.grad_accum} accumulation steps; raise batch_size"
        )
    dtype = next(model.parameters()).dtype
    # integer level codes of a categorical likelihood, read as its intensities
    X_train = integer_levels(model, X_train, "X_train")
    X_val = None if X_val is None else integer_levels(model, X_val, "X_val")
    X = _check_data(X_train, "X_train", cfg.binarize).to(device, dtype)
    Xv = None
    ckpt = Path(cfg.checkpoint_dir) / "last.pt" if cfg.checkpoint_dir else None
    data_ids = None
    if X_val is not None:
        Xv = _check_data(X_val, "X_val", cfg.binarize).to(device, dtype)
    if ckpt is not None:  # before binarisation: the data, not the noise
        data_ids = {"train": data_sha256(X), "val": None if Xv is None else data_sha256(Xv)}
    check_model_data(model, X, "X_train")  # a VAE's data must lie in its likelihood's support
    check_training_columns(model, X, "X_train")
    if Xv is not None:
        check_model_data(model, Xv, "X_val")
    if Xv is not None and cfg.binarize:
        Xv = torch.bernoulli(Xv, generator=torch.Generator(device).manual_seed(cfg.seed + 1))
    n = X.shape[0]
    n_batches = math.ceil(n / cfg.batch_size)

    model.to(device)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    # The fused Adam kernel (one op for all parameters, CPU and CUDA) makes the same update
    # as the textbook loop at a third of its cost, which matters for small networks.
    opt = torch.optim.Adam(
        model.parameters(),
        lr=cfg.lr,
        betas=tuple(cfg.adam_betas),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )
    custom_schedule = schedule is not None
    if schedule is None:
        schedule = make_schedule(
            cfg.kl_schedule, max(1, round(cfg.warmup_epochs * n_batches)), cfg.n_cycles
        )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.bf16 and device.type == "cuda"
        else contextlib.nullcontext()
    )

    perm_gen = torch.Generator().manual_seed(cfg.seed)
    # This epoch's training sums (bound, kl, loss·n) on the device and the rows they cover:
    # read on the host only at the epoch's end (the checkpoint stores them as one (4,) tensor).
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    count = 0
    res = TrainResult()
    epoch, batch, perm, best_state, bad_epochs = 0, 0, None, None, 0
    identity = None
    if ckpt is not None:
        identity = run_identity(model, objective, schedule if custom_schedule else None, data_ids)
    if ckpt is not None and cfg.resume and ckpt.exists():
        state = read_checkpoint(ckpt)
        check_resume(ckpt, state, cfg, identity, model, n, n_batches)
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            perm_gen.set_state(state["perm_gen"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise ModelFileError(
                f"checkpoint {ckpt} does not fit this run: {first_line(err)}; delete it to "
                "start afresh"
            ) from err
        check_optimizer_state(ckpt, opt, model, cfg)
        sums = state["epoch_sums"][:3].to(device, torch.float64)
        count = int(state["epoch_sums"][3])
        perm = state["perm"]
        epoch, batch, bad_epochs = state["epoch"], state["batch"], state["bad_epochs"]
        best_state = state["best_model"]
        for key in RESULT_KEYS:
            setattr(res, key, state[key])
        # a run that early stopping ended is over: more epochs do not reopen it, as the
        # uninterrupted run with as many epochs stops there too
        res.stopped_early = cfg.patience is not None and bad_epochs >= cfg.patience and batch == 0

    def checkpoint():
        if ckpt is None:
            return
        save_checkpoint(
            ckpt,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "perm_gen": perm_gen.get_state(),
                "epoch_sums": torch.cat([sums, sums.new_tensor([count])]),
                "perm": perm,
                "epoch": epoch,
                "batch": batch,
                "bad_epochs": bad_epochs,
                "best_model": best_state,
                "config": asdict(cfg),
                "format": CHECKPOINT_FORMAT,
                "identity": identity,
                **{k: getattr(res, k) for k in RESULT_KEYS},
            },
        )

    writer = _tensorboard(cfg.tensorboard_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    # One generator per micro-batch slot, reseeded at every step: the streams are those of
    # fresh generators seeded by (seed, t, j), without building one per micro-batch.
    gens = [torch.Generator(device) for _ in range(cfg.grad_accum)]
    model.train()
    # Ctrl-C at the command line (latentfit._interrupt) stops after an optimiser step, as
    # max_steps does, with a checkpoint to resume from; one process only (a distributed run's
    # processes must stop at the same step)
    with (
        stoppable("optimiser step", "the model so far") if world == 1 else contextlib.nullcontext()
    ):
        while epoch < cfg.epochs and not res.stopped_early:
            if perm is None:
                perm = torch.randperm(n, generator=perm_gen)
            start_time = time.perf_counter()
            if batch == 0:
                sums, count = torch.zeros(3, dtype=torch.float64, device=device), 0
            bar = None
            if cfg.progress and dist_utils.is_main():
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=n_batches,
                    initial=batch,
                    desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    leave=False,
                )
            while batch < n_batches:
                idx = perm[batch * cfg.batch_size : (batch + 1) * cfg.batch_size]
                micro = idx.tensor_split(n_micro)[
                    rank * cfg.grad_accum : (rank + 1) * cfg.grad_accum
                ]
                kl_weight = float(schedule(res.steps))
                step_sums = None
                opt.zero_grad(set_to_none=True)
                for a, mb in enumerate(micro):
                    gen = gens[a].manual_seed(
                        _stream_seed(cfg.seed, res.steps, rank * cfg.grad_accum + a)
                    )
                    x = X[mb.to(device)]
                    if cfg.binarize:
                        x = torch.bernoulli(x, generator=gen)
                    last = a == len(micro) - 1
                    sync = contextlib.nullcontext() if last or world == 1 else net.no_sync()
                    with sync:
                        with autocast:
                            out = objective(net, x, gen, kl_weight=kl_weight)
                        # Weight each micro-batch mean by its share of the global batch; DDP
                        # averages over processes, hence the factor world.
                        share = world * x.shape[0] / idx.shape[0]
                        (out.loss if share == 1.0 else out.loss * share).backward()
                    part = torch.stack(
                        [out.bound.sum(), out.kl.sum(), out.loss.detach() * x.shape[0]]
                    ).double()
                    step_sums = part if step_sums is None else step_sums + part
                dist_utils.all_reduce_sum(step_sums)
                grads = [p.grad for p in params if p.grad is not None]
                norm = _total_norm(grads) if grads else torch.zeros((), device=device)
                # One host sync per step: a sum is finite iff every term is (float32 terms cannot
                # overflow a float64 sum). All-reduced sums and gradients are equal on every
                # process, so every process takes the same decision.
                if math.isfinite(float(step_sums.sum() + norm)):
                    if cfg.max_grad_norm is not None:
                        torch.nn.utils.clip_grads_with_norm_(params, cfg.max_grad_norm, norm)
                    opt.step()
                    sums += step_sums
                    count += idx.shape[0]  # the micro-batches of all processes cover the batch
                else:
                    res.n_skipped += 1  # identical on every process: the sums were all-reduced
                res.steps += 1
                batch += 1
                if bar is not None:
                    bar.update(1)
                    if batch % 20 == 0 or batch == n_batches:
                        bar.set_postfix(
                            bound=f"{float(sums[0]) / max(count, 1):.2f}", refresh=False
                        )
                if cfg.checkpoint_every and res.steps % cfg.checkpoint_every == 0:
                    checkpoint()
                if cfg.max_steps is not None and res.steps >= cfg.max_steps:
                    break
                if stop_requested():
                    res.stopped_on_request = True
                    break
            if bar is not None:
                bar.close()
            if batch < n_batches:  # stopped by max_steps or a request inside the epoch
                res.interrupted = True
                checkpoint()
                break

            # End of epoch: validate, diagnose, early-stop, record, checkpoint.
            _check_diverged(count, params, epoch + 1, n_batches)
            perm, batch = None, 0
            totals = sums.tolist()  # the epoch's one read of the sums
            rows = count or math.nan
            row = {
                "epoch": epoch + 1,
                "step": res.steps,
                "kl_weight": kl_weight,
                "train_bound": totals[0] / rows,
                "train_kl": totals[1] / rows,
                "train_loss": totals[2] / rows,
                "n_skipped": res.n_skipped,
            }
            if Xv is not None:
                val = _validation_bound(model, objective, Xv, cfg.seed, cfg.val_batch_size)
                _check_finite_validation(
                    model, objective, Xv, cfg.seed, cfg.val_batch_size, val, epoch + 1
                )
                row["val_bound"] = val
            if cfg.diagnostics:
                # at most 2,000 points: the I(x; z) estimate costs O(n²)
                diag = diagnose(
                    model,
                    (Xv if Xv is not None else X)[:2000],
                    torch.Generator(device).manual_seed(cfg.seed + 2),
                )
                row["active_units"] = diag.n_active
                row["mutual_info"] = diag.mutual_info
                row["kl_total"] = None if diag.kl_per_dim is None else float(diag.kl_per_dim.sum())
                if not res.collapse_warned and check_collapse(
                    diag.kl_per_dim, epoch + 1, cfg.collapse_min_kl
                ):
                    res.collapse_warned = True
            row["seconds"] = time.perf_counter() - start_time
            epoch += 1
            monitored = row.get("val_bound", row["train_bound"])
            if monitored > res.best_val_bound + cfg.min_delta or res.best_epoch < 0:
                res.best_val_bound, res.best_epoch, bad_epochs = monitored, epoch, 0
                if cfg.restore_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            res.history.append(row)
            if cfg.metrics_csv:
                _write_csv(Path(cfg.metrics_csv), res.history)
            if writer is not None:
                for key, value in row.items():
                    if isinstance(value, (int, float)) and key != "epoch":
                        writer.add_scalar(key, value, epoch)
            stop = cfg.patience is not None and bad_epochs >= cfg.patience
            checkpoint()
            if stop:
                res.stopped_early = True
                break
            if (cfg.max_steps is not None and res.steps >= cfg.max_steps) or stop_requested():
                res.interrupted = epoch < cfg.epochs
                res.stopped_on_request = stop_requested() and res.interrupted
                break
    if writer is not None:
        writer.close()
    res.epochs = epoch
    _check_warmup_finished(cfg, schedule, custom_schedule, res)
    if (
        cfg.restore_best
        and best_state is not None
        and (not res.interrupted or res.stopped_on_request)
    ):  # a run stopped by Ctrl-C ends as a finished one does (its checkpoint resumes it)
        model.load_state_dict(best_state)
    return res
