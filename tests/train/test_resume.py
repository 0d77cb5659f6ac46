"""Resuming from a checkpoint: changed settings are refused by name, more epochs continue the
run exactly, damaged or foreign checkpoints raise ModelFileError naming the file."""

import math

import numpy as np
import pytest
import torch

import latentfit as lf
from latentfit.errors import ModelFileError, ParameterError
from latentfit.train import TrainConfig, train
from latentfit.vae import ELBO, IWAE, build_model

SPEC = dict(x_dim=16, z_dim=3, hidden=[12], seed=5)


def small_data(n=120, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    proto = (torch.rand(4, d, generator=g) > 0.5).double() * 0.9 + 0.05
    return proto[torch.randint(4, (n,), generator=g)].float()


X, XV = small_data(), small_data(40, seed=1)


def cfg(ck, **kw):
    base = dict(
        epochs=2,
        batch_size=32,
        lr=3e-3,
        binarize=True,
        progress=False,
        patience=None,
        diagnostics=False,
        checkpoint_dir=str(ck),
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def ck(tmp_path):
    """A checkpoint folder holding a finished 2-epoch ELBO run."""
    train(build_model(**SPEC), ELBO(), X, XV, cfg(tmp_path))
    return tmp_path


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_changed_lr_and_objective_are_refused_naming_each(ck):
    # before: the optimiser state restored the old lr and the new objective was taken silently
    with pytest.raises(ParameterError) as err:
        train(build_model(**SPEC), IWAE(3), X, XV, cfg(ck, epochs=3, lr=1e-12))
    msg = str(err.value)
    assert str(ck / "last.pt") in msg
    assert "lr: 0.003 in the checkpoint, 1e-12 now" in msg
    assert "objective: ELBO(" in msg and "IWAE(k=3) now" in msg


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (dict(objective=IWAE(3)), "objective"),
        (dict(objective=ELBO(beta=0.5)), "objective beta: 1.0 in the checkpoint, 0.5 now"),
        (dict(objective=ELBO(n_samples=2)), "objective n_samples: 1 in the checkpoint, 2 now"),
        (dict(batch_size=16), "batch_size: 32 in the checkpoint, 16 now"),
        (dict(seed=1), "seed: 0 in the checkpoint, 1 now"),
        (dict(kl_schedule="linear"), "kl_schedule"),
        (dict(weight_decay=0.1), "weight_decay"),
        (dict(grad_accum=2), "grad_accum"),
        (dict(epochs=1), "epochs: the checkpoint has done 2 epochs"),
        (dict(X=small_data(seed=7)), "training data"),
        (dict(XV=small_data(40, seed=8)), "validation data"),
    ],
)
def test_every_setting_is_compared(ck, change, named):
    objective = change.pop("objective", ELBO())
    x, xv = change.pop("X", X), change.pop("XV", XV)
    with pytest.raises(ParameterError, match=named.replace("(", r"\(")):
        train(build_model(**SPEC), objective, x, xv, cfg(ck, **change))


def test_another_architecture_is_a_model_file_error(ck):
    with pytest.raises(ModelFileError, match=r"model hidden: \[12\] in the checkpoint, \[8\] now"):
        train(build_model(**{**SPEC, "hidden": [8]}), ELBO(), X, XV, cfg(ck, epochs=3))


def test_another_precision_is_refused(ck):
    # before: the float32 checkpoint was loaded into the float64 model and the run went on
    with pytest.raises(ParameterError, match="model dtype: float32 in the checkpoint, float64 now"):
        train(build_model(**SPEC).double(), ELBO(), X.double(), XV.double(), cfg(ck, epochs=3))


#: the estimators that resume through the trainer, on 2 real columns or on 8-bit levels
ESTIMATORS = {
    "MAF": lambda **k: lf.MAF(n_layers=1, hidden=4, epochs=1, random_state=0, **k),
    "MAF 8-bit": lambda **k: lf.MAF(
        n_layers=1, hidden=4, epochs=1, dequantize=True, random_state=0, **k
    ),
    "DDPM": lambda **k: lf.DDPM(
        10, hidden=4, n_hidden=1, discrete=False, epochs=1, random_state=0, **k
    ),
    "DDPM 8-bit": lambda **k: lf.DDPM(10, hidden=4, n_hidden=1, epochs=1, random_state=0, **k),
}


@pytest.mark.filterwarnings("ignore::latentfit.errors.CoarseScheduleWarning")  # 10 steps
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_an_estimators_resume_in_another_dtype_names_the_dtype_and_its_way_out(name, tmp_path):
    """A flow or DDPM fitted in float64, fitted again in float32 in the same checkpoint_dir:
    refused by the dtype alone. Before, the advice ended "(or with resume=False)", an argument
    neither estimator takes, and a DDPM's (whose rows are standardised, or put on [-1, 1], in
    its dtype) said "training data: not the rows the checkpoint was trained with" and the same
    of the validation rows, the same data. Other rows in the checkpoint's dtype are named."""
    rng = np.random.default_rng(0)
    eight_bit = name.endswith("8-bit")
    data = rng.integers(0, 256, (60, 2)).astype(float) if eight_bit else rng.normal(size=(60, 2))
    build = ESTIMATORS[name]
    build(dtype="float64", checkpoint_dir=str(tmp_path)).fit(data)
    with pytest.raises(ParameterError) as err:
        build(dtype="float32", checkpoint_dir=str(tmp_path)).fit(data)
    said = str(err.value)
    assert (
        "written by a different run: model dtype: float64 in the checkpoint, float32 now. "
        "Resume with the checkpoint's settings (more epochs are allowed), or start afresh in "
        "another checkpoint_dir (or delete that checkpoint)"
    ) in said, said
    assert "resume=" not in said and "training data" not in said, said
    assert "validation data" not in said, said
    other = data[::-1].copy()  # the same rows in another order: other training rows
    with pytest.raises(ParameterError, match="training data: not the rows"):
        build(dtype="float64", checkpoint_dir=str(tmp_path)).fit(other)


def test_more_epochs_continue_the_run_exactly(ck, tmp_path_factory):
    resumed = build_model(**SPEC)
    res = train(resumed, ELBO(), X, XV, cfg(ck, epochs=3))
    straight = build_model(**SPEC)
    ref = train(straight, ELBO(), X, XV, cfg(tmp_path_factory.mktemp("fresh"), epochs=3))
    assert res.epochs == ref.epochs == 3 and res.steps == ref.steps == 12
    assert all(torch.equal(a, b) for a, b in zip(params(resumed), params(straight), strict=True))
    # the reporting settings may change too
    train(build_model(**SPEC), ELBO(), X, XV, cfg(ck, epochs=3, max_steps=None, progress=False))


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random bytes":
        path.write_bytes(torch.randint(256, (4000,), dtype=torch.uint8).numpy().tobytes())
    elif how == "empty":
        path.write_bytes(b"")
    else:
        state = torch.load(path, weights_only=True)
        # altered as a crafted file would be, without the checksum: the checks behind it
        state.pop("sha256")
        if how == "not a checkpoint":
            state = {"weights": torch.zeros(3)}
        elif how == "missing field":
            del state["optimizer"]
        elif how == "wrong type":
            state["epoch"] = "two"
        elif how == "bad permutation":
            state["perm"] = torch.zeros(X.shape[0], dtype=torch.int64)
            state["batch"] = 1
        elif how == "bad batch":
            state["batch"] = 10**6
        elif how == "wrong optimiser moment":
            moments = next(iter(state["optimizer"]["state"].values()))
            moments["exp_avg"] = torch.zeros(1, 1)
        elif how == "bad history":
            state["history"] = ["epoch 1"]
        elif how == "wrong tensor shape":
            key = next(iter(state["model"]))
            state["model"][key] = torch.zeros(2, 2)
        elif how == "NaN weight":  # before: "training diverged ... lower the learning rate"
            next(iter(state["model"].values())).view(-1)[0] = float("nan")
        elif how == "infinite optimiser moment":  # before: resumed, that weight frozen
            moments = next(iter(state["optimizer"]["state"].values()))
            moments["exp_avg_sq"].view(-1)[0] = float("inf")
        elif how == "optimiser lr":  # before: resumed at lr=100 while the config said 3e-3
            state["optimizer"]["param_groups"][0]["lr"] = 100.0
        elif how == "NaN epoch sums":  # before: the epoch's train_bound came out NaN
            state["epoch_sums"][0] = float("nan")
        elif how == "row count":  # before: the epoch's train_bound came out as -0.0
            state["epoch_sums"][3] = 1e30
        elif how == "NaN best bound":  # before: no later epoch counted as better
            state["best_val_bound"] = float("nan")
        elif how == "altered flow mask":  # right shape, finite, not the mask the spec builds
            state["model"]["flow.0.l1.mask"] = torch.ones_like(state["model"]["flow.0.l1.mask"])
        torch.save(state, path)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "random bytes",
        "empty",
        "not a checkpoint",
        "missing field",
        "wrong type",
        "bad permutation",
        "bad batch",
        "wrong tensor shape",
        "wrong optimiser moment",
        "bad history",
        "altered flow mask",
        "NaN weight",
        "infinite optimiser moment",
        "optimiser lr",
        "NaN epoch sums",
        "row count",
        "NaN best bound",
    ],
)
def test_damaged_checkpoints_raise_model_file_error(tmp_path, how):
    # an interrupted run (mid-epoch), so that a resume reads every field
    spec = {**SPEC, "flow": "iaf", "flow_steps": 2} if how == "altered flow mask" else SPEC
    train(build_model(**spec), ELBO(), X, XV, cfg(tmp_path, max_steps=5))
    _damage(tmp_path / "last.pt", how)
    with pytest.raises(ModelFileError, match=str(tmp_path / "last.pt")) as err:
        train(build_model(**spec), ELBO(), X, XV, cfg(tmp_path))
    if how == "altered flow mask":
        assert "'flow.0.l1.mask'" in str(err.value) and "is not the mask" in str(err.value)
    named = {
        "NaN weight": "holds nan at index (0, 0)",
        "infinite optimiser moment": "'exp_avg_sq' for encoder.body.0.weight holds inf",
        "optimiser lr": "the optimiser's lr is 100.0, but the run's settings",
        "NaN epoch sums": "'epoch_sums' [nan,",
        "row count": "a count of 0 to 32 rows",
        "NaN best bound": "'best_val_bound' is nan",
    }
    assert named.get(how, "") in str(err.value)


def test_checkpoints_are_written_through_a_temporary_file(tmp_path, monkeypatch):
    import latentfit.train.checkpoint as checkpoint
    import latentfit.train.trainer as trainer

    seen = []
    real = trainer.atomic_path

    class Spy(real):
        def __enter__(self):
            seen.append(self.path)
            return super().__enter__()

    monkeypatch.setattr(trainer, "atomic_path", Spy)
    monkeypatch.setattr(checkpoint, "atomic_path", Spy)
    train(build_model(**SPEC), ELBO(), X, XV, cfg(tmp_path, metrics_csv=str(tmp_path / "m.csv")))
    assert set(seen) == {tmp_path / "last.pt", tmp_path / "m.csv"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "m.csv"]


def test_invalid_settings_are_named(tmp_path):
    with pytest.raises(ParameterError, match=r"lr=-0\.1 .*; adam_betas=\[0\.9, 1\.5\]"):
        train(build_model(**SPEC), ELBO(), X, XV, cfg(tmp_path, lr=-0.1, adam_betas=[0.9, 1.5]))
    with pytest.raises(ParameterError, match="device='nonsense'"):
        train(build_model(**SPEC), ELBO(), X, XV, cfg(tmp_path, device="nonsense"))
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_checkpoint_changed_after_it_was_written_is_refused(tmp_path):
    # before: a weight one unit in the last place off (a flipped low bit) resumed silently
    train(build_model(**SPEC), ELBO(), X, XV, cfg(tmp_path, max_steps=5))
    ckpt = tmp_path / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    weight = next(iter(state["model"].values())).view(-1)
    weight[0] = torch.nextafter(weight[0], torch.tensor(math.inf))
    torch.save(state, ckpt)
    with pytest.raises(ModelFileError, match="do not match the SHA-256 checksum") as err:
        train(build_model(**SPEC), ELBO(), X, XV, cfg(tmp_path))
    assert str(ckpt) in str(err.value)
    # a field of another name (the checksum's own, by a flipped bit) is not taken for none
    state["sha257"] = state.pop("sha256")
    torch.save(state, ckpt)
    with pytest.raises(ModelFileError, match=r"holds the field\(s\) \['sha257'\]"):
        train(build_model(**SPEC), ELBO(), X, XV, cfg(tmp_path))


def test_a_checkpoint_without_a_checksum_still_resumes_exactly(tmp_path_factory):
    # written before the checksum was stored: resumed as before, to the same weights
    a, b = (tmp_path_factory.mktemp(n) for n in "ab")
    whole = build_model(**SPEC)
    train(whole, ELBO(), X, XV, cfg(a))
    train(build_model(**SPEC), ELBO(), X, XV, cfg(b, max_steps=5))
    state = torch.load(b / "last.pt", weights_only=True)
    del state["sha256"]
    torch.save(state, b / "last.pt")
    resumed = build_model(**SPEC)
    train(resumed, ELBO(), X, XV, cfg(b))
    assert all(torch.equal(p, q) for p, q in zip(params(whole), params(resumed), strict=True))
