"""The trainer: exact resume, skipped non-finite steps, early stopping, collapse warning, files."""

import csv
import math
import warnings

import pytest
import torch
from torch import nn

from latentfit.errors import DataError, ParameterError
from latentfit.train import TrainConfig, train
from latentfit.vae import ELBO, IWAE, VAE, PosteriorCollapseWarning, build_model
from latentfit.vae.likelihoods import BernoulliLikelihood
from latentfit.vae.networks import Decoder, GaussianEncoder, mlp


def small_data(n=120, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    proto = (torch.rand(4, d, generator=g) > 0.5).double() * 0.9 + 0.05  # four crisp patterns
    return proto[torch.randint(4, (n,), generator=g)].float()  # intensities in [0, 1]


def cfg(**kw):
    base = dict(
        epochs=3,
        batch_size=32,
        lr=3e-3,
        binarize=True,
        progress=False,
        patience=None,
        diagnostics=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def params(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("objective", [ELBO(), IWAE(3)])
def test_resume_after_interruption_is_bit_identical(tmp_path, objective):
    X, Xv = small_data(), small_data(40, seed=1)
    spec = dict(x_dim=16, z_dim=3, hidden=[12], seed=5)
    full = build_model(**spec)
    ref = train(full, objective, X, Xv, cfg(kl_schedule="linear", warmup_epochs=2))

    class Interrupt(Exception):
        pass

    calls = 0

    def die_at_sixth_call(module, args):
        """The process 'dies' at the 6th forward pass (mid-epoch 2)."""
        nonlocal calls
        calls += 1
        if calls == 6:
            raise Interrupt

    ck = tmp_path / "ck"
    first = build_model(**spec)
    first.register_forward_pre_hook(die_at_sixth_call)
    with pytest.raises(Interrupt):
        train(
            first,
            objective,
            X,
            Xv,
            cfg(kl_schedule="linear", warmup_epochs=2, checkpoint_dir=str(ck), checkpoint_every=2),
        )
    assert sorted(p.name for p in ck.iterdir()) == ["last.pt"]  # no temporary file left behind
    resumed = build_model(**spec)  # a fresh process: fresh weights, everything from the file
    res = train(
        resumed,
        objective,
        X,
        Xv,
        cfg(kl_schedule="linear", warmup_epochs=2, checkpoint_dir=str(ck), checkpoint_every=2),
    )
    assert all(torch.equal(a, b) for a, b in zip(params(full), params(resumed), strict=True))
    assert res.steps == ref.steps == 12
    for key in ("val_bound", "train_bound", "train_kl", "step"):
        assert [r[key] for r in res.history] == [r[key] for r in ref.history]


def test_max_steps_stops_mid_epoch_and_resumes(tmp_path):
    X = small_data()
    spec = dict(x_dim=16, z_dim=3, hidden=[12], seed=5)
    full = build_model(**spec)
    train(full, ELBO(), X, None, cfg())
    part = build_model(**spec)
    res = train(part, ELBO(), X, None, cfg(checkpoint_dir=str(tmp_path), max_steps=5))
    assert res.interrupted and res.steps == 5
    again = build_model(**spec)
    train(again, ELBO(), X, None, cfg(checkpoint_dir=str(tmp_path)))
    assert all(torch.equal(a, b) for a, b in zip(params(full), params(again), strict=True))


def test_resume_refuses_a_different_batch_size(tmp_path):
    X = small_data()
    train(
        build_model(x_dim=16, z_dim=3, hidden=[12]),
        ELBO(),
        X,
        None,
        cfg(checkpoint_dir=str(tmp_path), max_steps=2),
    )
    with pytest.raises(ValueError, match="batch_size"):
        train(
            build_model(x_dim=16, z_dim=3, hidden=[12]),
            ELBO(),
            X,
            None,
            cfg(checkpoint_dir=str(tmp_path), batch_size=16),
        )


def test_numpy_counts_and_numbers_train_and_resume(tmp_path):
    # np.int64 batch sizes come from min(batch_size, len(X)) and np.float32 rates from arrays;
    # the checkpoint holding them must read back with weights_only=True
    import numpy as np

    X = small_data()
    kw = dict(batch_size=np.int64(32), lr=np.float32(3e-3), seed=np.int64(1))
    first = cfg(checkpoint_dir=str(tmp_path), max_steps=np.int64(2), **kw)
    assert train(build_model(x_dim=16, z_dim=3, hidden=[12]), ELBO(), X, None, first).steps == 2
    res = train(
        build_model(x_dim=16, z_dim=3, hidden=[12]),
        ELBO(),
        X,
        None,
        cfg(checkpoint_dir=str(tmp_path), epochs=np.int64(2), **kw),
    )
    assert res.epochs == 2 and res.steps == 8


def test_non_finite_losses_are_skipped_and_counted():
    X = small_data()
    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    calls = {"n": 0}

    def sometimes_nan(m, x, g, kl_weight=1.0):
        out = ELBO()(m, x, g, kl_weight)
        calls["n"] += 1
        if calls["n"] % 4 == 0:
            return out._replace(loss=out.loss * float("nan"))
        return out

    res = train(model, sometimes_nan, X, None, cfg())
    assert res.n_skipped == 3  # 12 steps, every 4th poisoned
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(r["train_bound"]) for r in res.history)


def test_early_stopping_with_patience():
    X, Xv = small_data(), small_data(40, seed=1)
    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    # lr = 0: the validation bound never improves, so patience 2 stops after epoch 3.
    res = train(model, ELBO(), X, Xv, cfg(epochs=10, lr=0.0, patience=2))
    assert res.stopped_early and res.epochs == 3 and res.best_epoch == 1


def test_best_weights_are_restored():
    X, Xv = small_data(), small_data(40, seed=1)
    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    res = train(model, ELBO(), X, Xv, cfg(epochs=4, lr=1e-2))
    from latentfit.train import validation_bound

    fixed = torch.bernoulli(Xv, generator=torch.Generator().manual_seed(1))  # seed + 1
    assert validation_bound(model, ELBO(), fixed, seed=0) == pytest.approx(res.best_val_bound)


class IgnoresZ(nn.Module):
    """A decoder body whose output does not depend on z: p(x | z) = p(x)."""

    def __init__(self, d):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(d))

    def forward(self, z):
        return self.logits.expand(*z.shape[:-1], -1)


def test_decoder_that_ignores_z_collapses_the_kl_and_warns():
    X = small_data(200)
    model = VAE(GaussianEncoder(mlp([16, 12]), 12, 4), Decoder(IgnoresZ(16), BernoulliLikelihood()))
    with pytest.warns(PosteriorCollapseWarning, match="posterior collapse"):
        res = train(model, ELBO(), X, X[:60], cfg(epochs=15, lr=3e-2, diagnostics=True))
    # Nothing but -KL depends on the encoder, so the optimum is q(z|x) = p(z).
    assert res.history[-1]["kl_total"] < 0.04
    assert res.history[-1]["active_units"] == 0
    assert res.collapse_warned


def test_a_working_vae_does_not_warn():
    X = small_data(200)
    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorCollapseWarning)
        res = train(model, ELBO(), X, X[:60], cfg(epochs=8, lr=1e-2, diagnostics=True))
    assert res.history[-1]["kl_total"] > 0.5 and res.history[-1]["active_units"] >= 1


def test_metrics_csv_and_gradient_accumulation(tmp_path):
    X = small_data()
    path = tmp_path / "m.csv"
    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    train(model, ELBO(), X, X[:40], cfg(grad_accum=2, metrics_csv=str(path), diagnostics=True))
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_bound", "val_bound", "active_units", "mutual_info", "n_skipped"} <= set(rows[0])


def test_bad_input_is_named():
    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    X = small_data()
    X[7, 3] = float("nan")
    with pytest.raises(ValueError, match="row 7, column 3"):
        train(model, ELBO(), X, None, cfg())
    with pytest.raises(ValueError, match="binarize"):
        train(model, ELBO(), small_data() * 3, None, cfg())
    with pytest.raises(ValueError, match="batch_size"):
        train(model, ELBO(), small_data(), None, cfg(batch_size=1, grad_accum=2))


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (dict(model=nn.Identity()), ParameterError, "nn.Module with parameters"),
        (dict(objective=None), ParameterError, "objective must be an objective"),
        (dict(objective="elbo"), ParameterError, "objective must be an objective"),
        (dict(X="train.csv"), DataError, "X_train is the path or string"),
        (dict(X=[[1.0, 2.0], [3.0]]), DataError, "X_train cannot be read"),
        (dict(X=torch.ones(4, 16, dtype=torch.complex64)), DataError, "complex"),
        (dict(config={"epochs": 1}), ParameterError, "config must be a TrainConfig"),
        (dict(config=cfg(adam_betas=None)), ParameterError, "adam_betas=None"),
        (dict(config=cfg(bf16="no")), ParameterError, "bf16='no'"),
        (dict(config=cfg(collapse_min_kl=float("nan"))), ParameterError, "collapse_min_kl"),
        (dict(config=cfg(device="cuda:99")), ParameterError, r"^device='cuda:99' was requested"),
    ],
)
def test_bad_arguments_are_named_not_raised_by_torch(args, error, match):
    # before: StopIteration, TypeError, AttributeError or torch's own message
    call = dict(
        model=build_model(x_dim=16, z_dim=3, hidden=[12]),
        objective=ELBO(),
        X=small_data(),
        config=cfg(),
    )
    call.update(args)
    with pytest.raises(error, match=match):
        train(call["model"], call["objective"], call["X"], None, call["config"])


def test_trains_on_device(device):
    X = small_data()
    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    res = train(model, ELBO(), X, X[:40], cfg(device=device, epochs=2))  # bf16 autocast on CUDA
    assert math.isfinite(res.best_val_bound)
    assert next(model.parameters()).device.type == device


def test_a_non_finite_gradient_behind_a_finite_loss_is_skipped():
    """The skip rule reads the gradients too: d√u/du at u = 0 is infinite, so every 3rd step
    has a finite loss and bound but a non-finite gradient; those steps leave the weights
    unchanged and are counted, and the epoch's sums stay finite."""
    X = small_data()
    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    calls = {"n": 0}

    def sometimes_bad_grad(m, x, g, kl_weight=1.0):
        out = ELBO()(m, x, g, kl_weight)
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            w = next(m.parameters())
            return out._replace(loss=out.loss + torch.sqrt(w.sum() * 0))  # value +0, grad NaN
        return out

    res = train(model, sometimes_bad_grad, X, None, cfg(epochs=1, batch_size=20))
    assert res.n_skipped == 2  # 6 steps, the 3rd and 6th poisoned
    assert all(torch.isfinite(p).all() for p in model.parameters())
    row = res.history[0]
    assert math.isfinite(row["train_bound"]) and math.isfinite(row["train_loss"])


@pytest.mark.parametrize(
    "kw, error, match",
    [
        (dict(X=torch.full((5, 3), 0.5)), "DataError", r"expects 16 columns, X has 3 \(shape"),
        (dict(X=torch.full((0, 16), 0.5)), "DataError", r"non-empty \(n, d\).*\(0, 16\)"),
        (dict(X=torch.full((2, 16), math.nan)), "DataError", "non-finite value at row 0"),
        (dict(X=torch.full((2, 16), 255.0)), "DataError", "holds 255 at row 0, column 0"),
        (dict(batch_size=0), "ParameterError", "batch_size must be an integer >= 1, got 0"),
        (
            dict(seed="a"),
            "ParameterError",
            "seed must be an integer seed from 0 to 2\\*\\*32 - 1, got 'a'",
        ),
        (
            dict(seed=-1),
            "ParameterError",
            "seed=-1 is out of range: a seed is an integer from 0 to 2",
        ),
        (dict(objective="elbo"), "ParameterError", "objective must be an objective such as"),
    ],
)
def test_validation_bound_checks_its_arguments(kw, error, match):
    # found by a bug hunt: called directly, numpy rows raised AttributeError "'numpy.ndarray'
    # object has no attribute 'dim'", batch_size=0 "range() arg 3 must not be zero", a string
    # seed OverflowError, and no rows gave NaN
    import latentfit.errors
    from latentfit.train import validation_bound

    model = build_model(x_dim=16, z_dim=3, hidden=[12])
    args = dict(objective=ELBO(), X=small_data(8), seed=0) | kw
    with pytest.raises(getattr(latentfit.errors, error), match=match):
        validation_bound(model, **args)


def test_validation_bound_takes_numpy_rows():
    from latentfit.train import validation_bound

    model, X = build_model(x_dim=16, z_dim=3, hidden=[12]), small_data(8)
    bound = validation_bound(model, ELBO(), X, seed=0)
    assert math.isfinite(bound)
    assert validation_bound(model, ELBO(), X.numpy(), seed=0) == bound


def test_a_validation_row_with_a_non_finite_bound_is_named():
    # before: every epoch's validation bound was -inf, so training stopped after `patience`
    # epochs and returned the first epoch's weights as the best, without a word
    from latentfit.flows import MAF

    g = torch.Generator().manual_seed(0)
    X, X_val = torch.randn(200, 2, generator=g), torch.randn(20, 2, generator=g)
    X_val[3] = 1e30  # finite in float32; its log-density overflows
    with pytest.raises(DataError, match=r"is -inf after epoch 1: row 3 of them has -inf"):
        MAF(hidden=4, n_layers=1, epochs=4, patience=2, random_state=0).fit(X, X_val=X_val)


class _FailsInEval:
    """ELBO in training mode; in eval mode (validation) a bound of -inf for its first
    ``bad_calls`` calls, then an error (an objective whose model breaks on some rows)."""

    def __init__(self, bad_calls):
        self.elbo, self.bad_calls = ELBO(), bad_calls

    def __call__(self, model, x, gen, **kw):
        out = self.elbo(model, x, gen, **kw)
        if model.training:
            return out
        if self.bad_calls == 0:
            raise DataError("the decoder cannot score these rows")
        self.bad_calls -= 1
        return out._replace(bound=torch.full_like(out.bound, -math.inf))


@pytest.mark.parametrize("bad_calls", [0, 1], ids=["validation_bound", "its_finite_check"])
def test_a_validation_that_raises_leaves_the_model_in_training_mode(bad_calls):
    # before: the validation put the model into eval mode and set it back only when the
    # objective returned, so an error raised from it (in _validation_bound, or where
    # _check_finite_validation scores the rows again to name the bad one) left the user's
    # model in eval mode (dropout and batch norm off in whatever trained it next)
    from latentfit.train import validation_bound

    model = build_model(x_dim=16, z_dim=3, hidden=[12], seed=0)
    with pytest.raises(DataError, match="cannot score these rows"):
        train(model, _FailsInEval(bad_calls), small_data(), small_data(40, seed=1), cfg())
    assert model.training
    model.eval()  # and a model in eval mode stays so
    with pytest.raises(DataError, match="cannot score these rows"):
        validation_bound(model, _FailsInEval(0), small_data(8), seed=0)
    assert not model.training


def test_a_warmup_that_never_reaches_weight_one_is_warned_about():
    # warmup_epochs=50 with epochs=2 trained every step at a KL weight of at most 0.04 and
    # said nothing: the model returned (and saved by 'fit vae') was fitted to a surrogate
    # with a down-weighted KL, not to the bound it reports
    X, Xv = small_data(), small_data(40, seed=1)
    spec = dict(x_dim=16, z_dim=3, hidden=[12], seed=5)
    with pytest.warns(UserWarning, match=r"KL weight of only 0\.0.*warmup_epochs") as seen:
        train(
            build_model(**spec),
            ELBO(),
            X,
            Xv,
            cfg(epochs=2, kl_schedule="linear", warmup_epochs=50),
        )
    assert seen[0].filename == __file__  # it points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warm-up that finishes, or none, warns nothing
        train(
            build_model(**spec), ELBO(), X, Xv, cfg(epochs=2, kl_schedule="linear", warmup_epochs=1)
        )
        train(build_model(**spec), ELBO(), X, Xv, cfg(epochs=2, warmup_epochs=50))
