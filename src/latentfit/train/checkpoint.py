"""Checkpoints of the training loop: writing them atomically, reading them with every failure a
:class:`~latentfit.errors.ModelFileError`, and refusing a resume whose settings, objective,
model or data differ from the checkpoint's (each difference named).

A checkpoint records the config, the objective and schedule as plain values, the model spec
and tensor shapes, and the SHA-256 of the training and validation data; only the settings in
``_FREE_SETTINGS`` (where and how a run reports, and more epochs) may change on resume. It
also holds the SHA-256 of its own contents (``sha256``), checked on reading, so that a
checkpoint damaged after it was written is refused rather than resumed from other weights.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import asdict
from pathlib import Path

import torch

from latentfit._files import atomic_path
from latentfit.errors import ModelFileError, ParameterError
from latentfit.model_tensors import check_fixed_buffers
from latentfit.train import distributed as dist_utils


def save_checkpoint(path: Path, payload: dict) -> None:
    if dist_utils.is_main():
        # Serialised in memory and written by Python: a full disk is then an OSError (which
        # atomic_path words as "cannot write last.pt: No space left on device"). torch.save
        # writing a path or a file itself says "[enforce fail at inline_container.cc]
        # unexpected pos ..." wherever its zip writer notices the failed write.
        buffer = io.BytesIO()
        torch.save({**payload, "sha256": contents_digest(payload)}, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())
    dist_utils.barrier()


def _feed(digest, value) -> None:
    # every value with its type, containers item by item (a dict's in sorted order), a
    # tensor by its dtype, shape and bytes: what torch.load gives back from a checkpoint
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"tensor {t.dtype} {tuple(value.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[" if isinstance(value, list) else b"(")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def contents_digest(payload: dict) -> str:
    """SHA-256 of a checkpoint's contents (every field but ``sha256`` itself)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != "sha256"})
    return digest.hexdigest()


CHECKPOINT_FORMAT = "latentfit-checkpoint/2"
RESULT_KEYS = ("history", "best_val_bound", "best_epoch", "n_skipped", "steps", "collapse_warned")
# Settings a resumed run may change: where and how it runs and reports, not what it computes.
# ``epochs`` may grow (a continuation) but not fall below the epochs already done.
_FREE_SETTINGS = frozenset(
    {
        "epochs",
        "device",
        "checkpoint_dir",
        "checkpoint_every",
        "resume",
        "max_steps",
        "progress",
        "metrics_csv",
        "tensorboard_dir",
        "collapse_min_kl",
    }
)


def first_line(err: BaseException) -> str:
    """The error's type and first sentence (torch's messages run to several lines)."""
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text.split('. ')[0]}"


def _plain(value):
    """Tuples as lists, so that settings compare equal however they were stored."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _describe(obj) -> dict | None:
    """An objective or schedule as plain values: its class and its number/string settings."""
    if obj is None:
        return None
    attrs = {
        k: _plain(v)
        for k, v in sorted(vars(obj).items())
        if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None), tuple))
    }
    return {"class": type(obj).__qualname__, **attrs}


def run_identity(model, objective, schedule, data_ids) -> dict:
    """What a resumed run must share with the checkpoint besides the config: objective, custom
    schedule, model spec and tensor shapes, and the SHA-256 of the training and validation data."""
    spec = getattr(model, "spec", None)
    return {
        "objective": _describe(objective),
        "schedule": _describe(schedule),
        "spec": None if spec is None else _plain(asdict(spec)),
        "tensors": {k: list(v.shape) for k, v in model.state_dict().items()},
        "data": data_ids,
    }


def read_checkpoint(ckpt: Path) -> dict:
    """torch.load (tensors and plain containers only) with every failure a ModelFileError."""
    try:
        # on the CPU: the generator state must be a CPU tensor; weights are copied to the device
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, unpickling and storage errors all mean a damaged file
        raise ModelFileError(
            f"checkpoint {ckpt} cannot be read ({first_line(err)}): it is damaged or not a "
            "latentfit checkpoint; delete it (or use another checkpoint_dir) to start afresh"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ModelFileError(
            f"checkpoint {ckpt} is not a {CHECKPOINT_FORMAT} checkpoint (found {found!r}); "
            "delete it (or use another checkpoint_dir) to start afresh"
        )
    types = {
        "model": dict,
        "optimizer": dict,
        "perm_gen": torch.Tensor,
        "epoch_sums": torch.Tensor,
        "perm": (torch.Tensor, type(None)),
        "epoch": int,
        "batch": int,
        "bad_epochs": int,
        "best_model": (dict, type(None)),
        "config": dict,
        "identity": dict,
        "history": list,
        "best_val_bound": float,
        "best_epoch": int,
        "n_skipped": int,
        "steps": int,
        "collapse_warned": bool,
    }
    for key, kind in types.items():
        if (
            key not in state
            or not isinstance(state[key], kind)
            or isinstance(state[key], bool) != (kind is bool)
        ):
            raise ModelFileError(
                f"checkpoint {ckpt}: field {key!r} is missing or has the wrong type "
                f"({type(state.get(key)).__name__}); the file is damaged or was altered, "
                "delete it to start afresh"
            )
    unknown = sorted(str(k) for k in set(state) - set(types) - {"format", "sha256"})
    if unknown:
        raise ModelFileError(
            f"checkpoint {ckpt} holds the field(s) {unknown}, which latentfit does not write; "
            "the file is damaged or was altered, delete it to start afresh"
        )
    # checkpoints written before the checksum was stored have none: read as they are
    if "sha256" in state and state["sha256"] != contents_digest(state):
        raise ModelFileError(
            f"checkpoint {ckpt}: its contents do not match the SHA-256 checksum written with "
            "them: it changed after it was written (a damaged disk or copy, or an edit). Delete "
            "it (or use another checkpoint_dir) to start afresh"
        )
    return state


def check_resume(ckpt: Path, state: dict, cfg, identity: dict, model, n: int, n_batches: int):
    """Refuse a resume whose settings differ from the checkpoint's, naming every difference
    (the data's rows where the model's dtype is the checkpoint's: in another dtype it alone
    is named).

    A different architecture or a damaged state is a ModelFileError; different settings,
    objective or data a ParameterError. Only the settings in ``_FREE_SETTINGS`` may change.
    """

    def damaged(what: str):
        return ModelFileError(
            f"checkpoint {ckpt}: {what}; the file is damaged or was altered, delete it to "
            "start afresh"
        )

    old_id = state["identity"]
    arch, diffs = [], []
    old_spec, new_spec = old_id.get("spec") or {}, identity["spec"] or {}
    for key in sorted(set(old_spec) | set(new_spec)):
        if old_spec.get(key) != new_spec.get(key):
            # the seed of the initial weights is a setting; every other field is architecture
            (diffs if key == "seed" else arch).append(
                f"model {key}: {old_spec.get(key)!r} in the checkpoint, {new_spec.get(key)!r} now"
            )
    shapes = {k: list(v.shape) for k, v in state["model"].items() if isinstance(v, torch.Tensor)}
    if shapes != identity["tensors"] and not arch:
        names = sorted(set(shapes) | set(identity["tensors"]))
        diff = [n for n in names if shapes.get(n) != identity["tensors"].get(n)]
        arch.append(
            "model tensors differ: "
            + ", ".join(
                f"{n} {shapes.get(n)} in the checkpoint, {identity['tensors'].get(n)} now"
                for n in diff[:4]
            )
        )

    # the precision is a setting too: float32 weights resumed in float64 (or the reverse) would
    # continue as a run that never was, so neither matches an uninterrupted one
    old_dt, new_dt = _float_dtypes(state["model"]), _float_dtypes(model.state_dict())
    if old_dt != new_dt:
        diffs.append(f"model dtype: {old_dt} in the checkpoint, {new_dt} now")

    old_cfg, new_cfg = _plain(state["config"]), _plain(asdict(cfg))
    for key in sorted(set(old_cfg) | set(new_cfg)):
        if key in _FREE_SETTINGS or old_cfg.get(key) == new_cfg.get(key):
            continue
        diffs.append(f"{key}: {old_cfg.get(key)!r} in the checkpoint, {new_cfg.get(key)!r} now")
    if cfg.epochs < state["epoch"]:
        diffs.append(
            f"epochs: the checkpoint has done {state['epoch']} epochs, this run asks for "
            f"{cfg.epochs} (more epochs continue the run; fewer cannot)"
        )
    for key, label in (("objective", "objective"), ("schedule", "KL schedule")):
        old, new = old_id.get(key), identity[key]
        if old == new:
            continue
        if old is None or new is None or old.get("class") != new.get("class"):
            diffs.append(f"{label}: {_show(old)} in the checkpoint, {_show(new)} now")
            continue
        for field_ in sorted(set(old) | set(new)):
            if old.get(field_) != new.get(field_):
                diffs.append(
                    f"{label} {field_}: {old.get(field_)!r} in the checkpoint, "
                    f"{new.get(field_)!r} now"
                )
    # the rows as the model is trained on them, which a model may compute in its dtype (a
    # DDPM's standardised or [-1, 1] rows): in another dtype the same data give other digits,
    # so the rows are compared in the checkpoint's dtype only, not said to differ with it
    old_data, new_data = old_id.get("data") or {}, identity["data"] or {}
    for key, label in (("train", "training data"), ("val", "validation data")):
        if old_dt == new_dt and old_data.get(key) != new_data.get(key):
            diffs.append(f"{label}: not the rows the checkpoint was trained with (SHA-256 differs)")
    if arch or diffs:
        kind = ModelFileError if arch else ParameterError
        # every caller has a checkpoint_dir and the file; not every one a resume switch (the
        # estimators resume whenever their checkpoint_dir holds a checkpoint)
        raise kind(
            f"checkpoint {ckpt} was written by a different run: "
            + "; ".join(arch + diffs)
            + ". Resume with the checkpoint's settings (more epochs are allowed), or start "
            "afresh in another checkpoint_dir (or delete that checkpoint)"
        )

    # the fields the loop indexes with: a tampered value must not reach it
    perm = state["perm"]
    if perm is not None and (
        perm.dtype != torch.int64
        or perm.shape != (n,)
        or not torch.equal(perm.sort().values, torch.arange(n, device=perm.device))
    ):
        raise damaged(f"'perm' is not a permutation of the {n} training rows")
    if not 0 <= state["batch"] <= n_batches or (state["batch"] > 0 and perm is None):
        raise damaged(f"'batch' is {state['batch']}, outside [0, {n_batches}]")
    if state["epoch_sums"].shape != (4,):
        raise damaged(f"'epoch_sums' has shape {tuple(state['epoch_sums'].shape)}, not (4,)")
    if state["batch"] > 0:
        # the sums of the epoch's finished steps (only finite steps are added) and the rows
        # they cover: the epoch's reported bound is the one divided by the other
        sums, rows = state["epoch_sums"][:3], float(state["epoch_sums"][3])
        most = min(n, state["batch"] * cfg.batch_size)
        if not bool(torch.isfinite(sums).all()) or not (0 <= rows <= most and rows == int(rows)):
            raise damaged(
                f"'epoch_sums' {state['epoch_sums'].tolist()} are not the sums of the epoch's "
                f"first {state['batch']} batch(es): finite sums and a count of 0 to {most} rows"
            )
    if state["epoch"] < 0 or state["steps"] < 0 or state["bad_epochs"] < 0:
        raise damaged("'epoch', 'steps' or 'bad_epochs' is negative")
    if math.isnan(state["best_val_bound"]) or state["best_val_bound"] == math.inf:
        # no later bound would compare better: early stopping would keep a stale best model
        raise damaged(f"'best_val_bound' is {state['best_val_bound']}, not a bound a run reaches")
    if not all(isinstance(row, dict) for row in state["history"]):
        raise damaged("'history' holds something other than one dict per epoch")
    for key in ("model", "best_model"):
        sd = state[key]
        if sd is None:
            continue
        got = {k: list(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}
        if got != identity["tensors"] or len(got) != len(sd):
            raise damaged(f"the tensors in {key!r} do not match the model")
        for name, t in sd.items():  # a NaN weight would read as a diverged run
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                i = tuple((~torch.isfinite(t)).nonzero()[0].tolist())
                raise damaged(
                    f"the tensor {name!r} of {key!r} holds {t[i].item()} at index {i}, where "
                    "training keeps every weight finite"
                )
        try:  # the flow layers' masks follow from the architecture: the stored ones must too
            check_fixed_buffers(model, sd, "the model being trained")
        except ModelFileError as err:
            raise ModelFileError(
                f"checkpoint {ckpt}: in {key!r}, {err}; delete it to start afresh"
            ) from None


def check_optimizer_state(ckpt: Path, opt, model, cfg) -> None:
    """The optimiser state read from a checkpoint, once loaded into ``opt``: its settings
    (lr, betas, eps, weight decay) are the config's, which the resume was checked against
    (the state's own would silently replace them), and Adam's moments match their
    parameter in shape and hold finite values (the second moment >= 0), as a run leaves
    them. Anything else raises :class:`ModelFileError`."""

    def damaged(what: str):
        return ModelFileError(
            f"checkpoint {ckpt}: {what}; the file is damaged or was altered, delete it to "
            "start afresh"
        )

    want = {
        "lr": cfg.lr,
        "betas": tuple(cfg.adam_betas),
        "eps": cfg.adam_eps,
        "weight_decay": cfg.weight_decay,
    }
    for group in opt.param_groups:
        for key, value in want.items():
            got = tuple(group.get(key)) if key == "betas" else group.get(key)
            if got != value:
                raise damaged(
                    f"the optimiser's {key} is {got!r}, but the run's settings (the same in "
                    f"the checkpoint's config) give {value!r}"
                )
    for name, p in model.named_parameters():
        for key, v in opt.state.get(p, {}).items():
            if not isinstance(v, torch.Tensor):
                continue
            if v.ndim > 0 and v.shape != p.shape:
                raise damaged(
                    f"the optimiser's {key!r} for {name} has shape {tuple(v.shape)}, the "
                    f"parameter {tuple(p.shape)}"
                )
            low = 0.0 if key in ("step", "exp_avg_sq", "max_exp_avg_sq") else -math.inf
            bad = ~torch.isfinite(v) | (v < low)
            if bool(bad.any()):
                i = tuple(bad.nonzero()[0].tolist())
                raise damaged(
                    f"the optimiser's {key!r} for {name} holds {v[i].item()} at index {i}, "
                    f"where a run leaves {'finite numbers >= 0' if low == 0 else 'finite numbers'}"
                )


def _float_dtypes(state_dict: dict) -> str:
    """The floating-point dtypes of a state dict's tensors, e.g. 'float32' or 'float32,
    float64' (a DDPM keeps its Gaussian skip in float64 whatever the network's dtype)."""
    found = {
        str(v.dtype).removeprefix("torch.")
        for v in state_dict.values()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    }
    return ", ".join(sorted(found))


def _show(desc: dict | None) -> str:
    if desc is None:
        return "none"
    args = ", ".join(f"{k}={v!r}" for k, v in desc.items() if k != "class")
    return f"{desc['class']}({args})"
