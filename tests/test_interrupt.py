"""Ctrl-C at the command line (latentfit._interrupt): the first press stops a fit where it can
and keeps it, the second aborts and says what was written. The signal is raised for real
(``signal.raise_signal``) from inside the loops, at a chosen iteration or step; each stopped
fit is compared with the same fit asked for exactly that many iterations or steps."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from latentfit import GaussianHMM, GaussianMixture, load
from latentfit import _interrupt as interrupt
from latentfit._files import all_or_none, atomic_path
from latentfit.em import driver
from latentfit.train import TrainConfig, train
from latentfit.vae import ELBO, build_model

SRC = Path(__file__).resolve().parents[1] / "src"


def blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(size=(n // 2, 2)), rng.normal(size=(n - n // 2, 2)) + 3]


def press_ctrl_c_at(monkeypatch, module, name, call, signum=signal.SIGINT):
    """Raise ``signum`` when ``module.name`` is called for the ``call``-th time."""
    original = getattr(module, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            signal.raise_signal(signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return calls


def test_first_press_in_a_stoppable_loop_asks_a_stop_the_second_aborts(capsys):
    with interrupt.interrupt_handling():
        with interrupt.stoppable("EM iteration", "the fit so far"):
            signal.raise_signal(signal.SIGINT)
            assert interrupt.stop_requested() and not interrupt.aborted()
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
            assert interrupt.aborted()
    assert "stopping at the end of this EM iteration and keeping the fit so far" in (
        capsys.readouterr().err
    )
    assert not interrupt.stop_requested()  # the state ends with the block


def test_sigterm_is_taken_as_ctrl_c_is_and_its_abort_exits_143(capsys):
    with interrupt.interrupt_handling():
        with interrupt.stoppable("optimiser step", "the model so far"):
            signal.raise_signal(signal.SIGTERM)
            assert interrupt.stop_requested() and interrupt.stopped_by() == "SIGTERM"
            with pytest.raises(SystemExit) as ended:
                signal.raise_signal(signal.SIGTERM)
        assert ended.value.code == 143 and interrupt.aborted()
        assert interrupt.abort_words() == "latentfit: aborted (SIGTERM); no file was written"
    assert "latentfit: SIGTERM: stopping at the end of this optimiser step" in (
        capsys.readouterr().err
    )
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_press_outside_a_stoppable_loop_or_inside_a_sweep_aborts_at_once():
    with interrupt.interrupt_handling():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        assert interrupt.aborted() and not interrupt.stop_requested()
    with interrupt.interrupt_handling():
        with interrupt.stoppable("EM iteration", "the fit so far"), interrupt.not_stoppable():
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert not interrupt.stop_requested()


def test_without_the_handler_python_code_gets_its_own_keyboard_interrupt():
    with interrupt.stoppable("EM iteration", "the fit so far"):
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert not interrupt.stop_requested()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_process_that_ignores_ctrl_c_keeps_ignoring_it():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupt.interrupt_handling():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_abort_names_the_files_written_and_not_those_put_back(tmp_path):
    kept, undone = tmp_path / "kept.csv", tmp_path / "undone.lf"
    with interrupt.interrupt_handling():
        assert interrupt.abort_words() == "latentfit: aborted (Ctrl-C); no file was written"
        with atomic_path(kept) as tmp:
            tmp.write_text("1\n")
        with pytest.raises(KeyboardInterrupt), all_or_none([undone]):
            with atomic_path(undone) as tmp:
                tmp.write_text("x")
            signal.raise_signal(signal.SIGINT)
        assert not undone.exists()
        assert interrupt.written_files() == [str(kept)]
        assert interrupt.abort_words() == (
            f"latentfit: aborted (Ctrl-C); written before it: {kept}; nothing else was written"
        )


def _is_the_fit_of_three_iterations(model, X):
    """Assert ``model`` (stopped in its third iteration) holds the fit that ``max_iter=3``
    gives, unconverged; return that fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        three = GaussianMixture(2, max_iter=3, tol=0, random_state=1).fit(X)
    assert model.n_iter_ == 3 and not model.converged_
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(model, name), getattr(three, name))
    return three


def test_a_stopped_gaussian_mixture_is_the_fit_of_that_many_iterations(monkeypatch):
    X = blobs()
    calls = press_ctrl_c_at(monkeypatch, driver, "_reduced_stats", 3)  # iteration 3's E-step
    with interrupt.interrupt_handling(), pytest.warns(ConvergenceWarning) as caught:
        stopped = GaussianMixture(2, max_iter=500, tol=0, random_state=1).fit(X)
    assert calls["n"] == 3  # no iteration after the one that was running
    assert "stopped on request (Ctrl-C) at iteration 3 of 500" in str(caught[-1].message)
    three = _is_the_fit_of_three_iterations(stopped, X)
    assert stopped.lower_bound_ == three.lower_bound_


def test_a_stop_during_a_restart_keeps_the_best_run_so_far_and_makes_no_more(monkeypatch):
    X = blobs(seed=2)
    # HMM iterations: one E-step pass each; 4 iterations a run, the stop in run 2's second
    press_ctrl_c_at(monkeypatch, driver, "_reduced_stats", 6)
    with interrupt.interrupt_handling(), pytest.warns(ConvergenceWarning, match="of init 2 of 5"):
        model = GaussianHMM(2, n_iter=4, tol=0, n_init=5, random_state=0).fit(X)
    assert [len(b) for b in model.all_lower_bounds_] == [4, 2]


def test_a_distributed_fit_is_not_stopped_on_request(monkeypatch):
    monkeypatch.setattr(driver, "_distributed", lambda: True)
    press_ctrl_c_at(monkeypatch, driver, "_reduced_stats", 2)
    with interrupt.interrupt_handling(), pytest.raises(KeyboardInterrupt):
        GaussianMixture(2, max_iter=50, tol=0).fit(blobs())


def small_data(n=120, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    proto = (torch.rand(4, d, generator=g) > 0.5).double() * 0.9 + 0.05
    return proto[torch.randint(4, (n,), generator=g)].float()


def config(**kw):
    base = dict(epochs=3, batch_size=32, lr=3e-3, binarize=True, progress=False)
    return TrainConfig(**{**base, "patience": None, "diagnostics": False, **kw})


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("caller", ["command line", "python"])
def test_a_stopped_training_keeps_the_best_epoch_and_its_checkpoint_resumes(
    caller, tmp_path, monkeypatch
):
    """At the command line, and from Python (train returns, with a warning)."""
    X, spec = small_data(), dict(x_dim=16, z_dim=3, hidden=[12], seed=5)
    full = build_model(**spec)
    train(full, ELBO(), X, None, config())
    one_epoch = build_model(**spec)  # 4 steps an epoch: step 6 is in epoch 2
    train(one_epoch, ELBO(), X, None, config(epochs=1))
    objective = ELBO()
    press_ctrl_c_at(monkeypatch, type(objective), "__call__", 6)
    stopped = build_model(**spec)
    said = r"training stopped by Ctrl-C after 6 optimiser steps \(1 whole epoch"
    with (
        interrupt.interrupt_handling()
        if caller == "command line"
        else pytest.warns(UserWarning, match=said)
    ):
        res = train(stopped, objective, X, None, config(checkpoint_dir=str(tmp_path)))
    assert res.interrupted and res.stopped_on_request and res.steps == 6 and res.epochs == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert all(torch.equal(a, b) for a, b in zip(weights(one_epoch), weights(stopped), strict=True))
    monkeypatch.undo()
    resumed = build_model(**spec)
    train(resumed, ELBO(), X, None, config(checkpoint_dir=str(tmp_path)))
    assert all(torch.equal(a, b) for a, b in zip(weights(full), weights(resumed), strict=True))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_at_the_command_line_saves_the_gaussian_mixture_so_far(signum, tmp_path):
    X = blobs(20_000)
    data, out = tmp_path / "x.csv", tmp_path / "m.lf"
    np.savetxt(data, X, delimiter=",")
    command = [sys.executable, "-m", "latentfit", "fit", "gmm", str(data), "-k", "2"]
    command += ["--tol", "0", "--max-iter", "1000000", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        seen = b""
        while b"lower_bound=" not in seen:  # the progress bar: EM iterations have begun
            chunk = proc.stderr.read1(4096)
            assert chunk, f"the fit ended before any iteration was shown: {seen[-500:]!r}"
            seen += chunk
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = (seen + stderr).decode()
    assert proc.returncode == 0, stderr[-2000:]
    by = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert f"{by}: stopping at the end of this EM iteration" in stderr
    assert f"NOT converged (stopped by {by})" in stdout.decode()
    model = load(out)
    assert not model.converged_ and 1 <= model.n_iter_ < 1_000_000


def test_a_vae_stopped_at_the_command_line_says_so_and_skips_the_long_evaluation(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from latentfit.cli import app
    from latentfit.vae import objectives

    press_ctrl_c_at(monkeypatch, objectives.ELBO, "__call__", 40)  # in epoch 3 (of 50)
    out, ck = tmp_path / "v.lf", tmp_path / "ck"
    args = ["fit", "vae", "--dataset", "digits", "--epochs", "50", "--latent", "2"]
    args += ["--hidden", "16", "--checkpoint-dir", str(ck), "--eval-samples", "1000"]
    with interrupt.interrupt_handling():
        res = CliRunner().invoke(app, [*args, "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert re.search(
        r"stopped by Ctrl-C after \d+ optimiser steps \(the model of epoch \d+, the best",
        res.output,
    )
    assert f"the same command with --force (which replaces {out}) resumes it from its " in (
        res.output
    )
    assert "test log p(x)" not in res.output and (ck / "last.pt").exists()
    assert load(out) is not None


def test_a_flow_stopped_before_its_first_epoch_ended_says_whose_weights_it_kept(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from latentfit.cli import app
    from latentfit.flows import objectives

    data = tmp_path / "x.csv"
    np.savetxt(data, blobs(2000), delimiter=",")
    press_ctrl_c_at(monkeypatch, objectives.FlowNLL, "__call__", 2)
    args = ["fit", "flow", str(data), "--flow", "realnvp", "--layers", "2", "--hidden", "8"]
    args += ["--epochs", "5", "--batch-size", "100", "--out", str(tmp_path / "f.lf"), "--quiet"]
    with interrupt.interrupt_handling():
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "stopped by Ctrl-C before its first epoch ended, the weights of its last step" in (
        res.output
    )
    assert "not resumable: it had no --checkpoint-dir" in res.output


def test_a_signal_while_the_outputs_are_written_undoes_them_and_says_so(
    tmp_path, monkeypatch, capsys
):
    """latentfit's main(): SIGTERM after the model file is written, while the labels are
    computed (no loop that can stop there): the model file is removed again (outputs all or
    none), the abort says nothing was written, and the exit status is 143."""
    from latentfit.cli import main

    data, out, labels = tmp_path / "x.csv", tmp_path / "m.lf", tmp_path / "labels.csv"
    np.savetxt(data, blobs(), delimiter=",")
    calls = press_ctrl_c_at(monkeypatch, GaussianMixture, "predict", 1, signal.SIGTERM)
    argv = ["latentfit", "fit", "gmm", str(data), "-k", "2", "--quiet"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out), "--labels", str(labels)])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 143 and calls["n"] == 1
    err = capsys.readouterr().err
    assert "m.lf removed: a command writes its outputs all or none" in err
    assert "latentfit: aborted (SIGTERM); no file was written" in err
    assert not out.exists() and not labels.exists()


def test_an_abort_landing_as_a_write_ends_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    """SIGTERM taken on entering atomic_path's ``__exit__`` (Python takes a pending signal when
    a function is called, before its ``deferred()`` holds it): the write's own cleanup never
    ran and its ``.lftmp`` file was left (found by tests/property/test_cli_interrupt.py, fit
    arhmm's figure). main() removes it once the abort has unwound."""
    from latentfit import _files
    from latentfit.cli import main

    data, out, labels = tmp_path / "x.csv", tmp_path / "m.lf", tmp_path / "labels.csv"
    np.savetxt(data, blobs(), delimiter=",")
    exit_ = _files.atomic_path.__exit__
    cut = []

    def signalled_on_entry(self, *exc):
        if self.path.name == "labels.csv" and not cut:
            cut.append(self.tmp)
            signal.raise_signal(signal.SIGTERM)  # taken at the next call: here, in place
            signal.getsignal(signal.SIGTERM)  # of the body
        return exit_(self, *exc)

    monkeypatch.setattr(_files.atomic_path, "__exit__", signalled_on_entry)
    argv = ["latentfit", "fit", "gmm", str(data), "-k", "2", "--quiet"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out), "--labels", str(labels)])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 143 and cut
    assert "latentfit: aborted (SIGTERM)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]
    assert not _files._OPEN


def test_an_abort_as_the_handling_block_ends_is_uninstalled_by_the_command_line():
    """A SIGTERM taken inside contextlib's exit of interrupt_handling (a function call, where
    Python runs pending handlers) raises before the block's ``finally``: its timer, which ends
    the process 10 s later, was left running, and a process that went on (a test worker) was
    killed. uninstall(), which main() calls after an abort, cancels it and puts the handlers
    back; the block's own ``finally``, run later, then does nothing."""
    before = signal.getsignal(signal.SIGTERM)
    block = interrupt.interrupt_handling()
    block.__enter__()  # and never left: as if cut while contextlib ends it
    with pytest.raises(SystemExit):
        signal.raise_signal(signal.SIGTERM)
        signal.getsignal(signal.SIGTERM)  # a call: the pending handler runs here
    assert interrupt.aborted() and interrupt._timers
    timer = interrupt._timers[0]
    interrupt.uninstall()
    assert timer.finished.is_set() and not interrupt._timers  # cancelled
    assert signal.getsignal(signal.SIGTERM) is before
    assert not interrupt._state["installed"]
    block.__exit__(None, None, None)  # the generator's finally, late: nothing left to do
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sweep_stopped_during_its_third_fit_is_the_table_of_the_two_before_it(monkeypatch):
    from latentfit.select import select_model

    X = blobs()
    full = select_model(X, family="gmm", n_components=[1, 2, 3, 4], covariance_types=["full"])
    calls = press_ctrl_c_at(monkeypatch, GaussianMixture, "fit", 3)
    with interrupt.interrupt_handling(), interrupt.stoppable("EM iteration", "the fits before"):
        part = select_model(X, family="gmm", n_components=[1, 2, 3, 4], covariance_types=["full"])
    assert calls["n"] == 3 and len(part.rows) == 3
    assert [labels for _, text, labels in part.fit_warnings if "stopped on request" in text] == [
        ["full K=3"]
    ]
    assert [r["bic"] for r in part.rows[:2]] == [r["bic"] for r in full.rows[:2]]
    assert part.rows[2]["error"] == "stopped by Ctrl-C before this fit ended"
    assert np.isnan(part.rows[2]["bic"]) and part.models[2] is None
    assert "stopped by Ctrl-C during fit 3 of 4 (full K=3), shown as NA; the 1 after it were " in (
        " ".join(part.notes)
    )
    assert not any("failed" in note for note in part.notes)


def test_sampling_stopped_at_the_command_line_prints_the_table_of_the_draws_so_far(
    tmp_path, monkeypatch
):
    """Ctrl-C at the 25th transition after 50 of warm-up: 25 draws a chain and their table."""
    from typer.testing import CliRunner

    from latentfit.cli import app
    from latentfit.mcmc import sampler

    path = tmp_path / "counts.csv"
    path.write_text("x\n3\n1\n4\n2\n5\n")
    args = ["fit", "dist", str(path), "--family", "poisson", "--prior", "rate=gamma:2,0.5"]
    args += ["--sample", "nuts", "--chains", "2", "--warmup", "50", "--draws", "400", "--quiet"]
    args += ["--batch-pace"]  # the batched transition is where Ctrl-C is pressed
    calls = press_ctrl_c_at(monkeypatch, sampler._Run, "transition", 50 + 25)
    with interrupt.interrupt_handling():
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert calls["n"] == 75
    assert "stopped by Ctrl-C after 25 of 400 draws per chain: the table is of those" in (
        res.output
    )
    assert "Ctrl-C: stopping at the end of this transition and keeping the draws so far" in (
        res.output
    )


def test_stopped_draws_are_the_first_draws_of_the_run_and_it_resumes_from_them(monkeypatch):
    from torch.distributions import Gamma

    from latentfit import fit_map
    from latentfit.mcmc import sampler

    fit = fit_map("poisson", np.array([3.0, 1, 4, 2, 5]), prior={"rate": Gamma(2.0, 0.5)})
    # the batched transition is where Ctrl-C is pressed (test_paced.py: at the own pace)
    run = dict(num_chains=2, num_warmup=50, generator=3, progress_bar=False, pace="batch")
    whole = fit.sample_posterior(num_draws=60, **run)
    press_ctrl_c_at(monkeypatch, sampler._Run, "transition", 50 + 25)
    with interrupt.interrupt_handling():
        part = fit.sample_posterior(num_draws=60, **run)
    monkeypatch.undo()
    assert part.num_draws == 25
    np.testing.assert_array_equal(part.unconstrained.numpy(), whole.unconstrained[:, :25].numpy())
    rest = part.resume(35, progress_bar=False)  # the rest of the run, as if it had not stopped
    np.testing.assert_array_equal(rest.unconstrained.numpy(), whole.unconstrained.numpy())


def test_an_abort_by_sigterm_that_a_finaliser_swallowed_still_ends_the_process(tmp_path):
    """An exception raised by a signal handler inside a finaliser is dropped by Python: the
    command would run on. The abort then ends the process at once, as SIGTERM's default
    does, once its grace has passed."""
    code = (
        "import signal, time\n"
        "from latentfit import _interrupt as i\n"
        "i.SIGTERM_GRACE = 0.5\n"
        "class Swallow:\n"
        "    def __del__(self):\n"
        "        signal.raise_signal(signal.SIGTERM)\n"
        "with i.interrupt_handling():\n"
        "    Swallow()\n"  # the SystemExit of its __del__ is dropped
        "    print('ran on', flush=True)\n"
        "    time.sleep(30)\n"
        "print('not reached')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 143, res.stderr
    assert res.stdout == "ran on\n" and "SystemExit: 143" in res.stderr
    assert res.stderr.endswith("latentfit: aborted (SIGTERM); ended at once\n")


def test_a_flow_stopped_before_its_first_epoch_ended_saves_a_file_that_loads(tmp_path, monkeypatch):
    """No epoch ended: no best bound (-inf), which load took for a damaged file."""
    from latentfit import MAF
    from latentfit.flows import objectives

    press_ctrl_c_at(monkeypatch, objectives.FlowNLL, "__call__", 1)
    model = MAF(n_layers=2, hidden=8, epochs=3, batch_size=50, random_state=0)
    with interrupt.interrupt_handling():
        model.fit(blobs(400))
    assert model.history_ == [] and model.best_val_log_likelihood_ == -np.inf
    back = load(model.save(tmp_path / "f.lf"))
    np.testing.assert_array_equal(back.score_samples(blobs()), model.score_samples(blobs()))


def test_the_report_of_a_fit_stopped_during_a_restart_counts_the_restarts_made(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from latentfit.cli import app

    data = tmp_path / "x.csv"
    np.savetxt(data, blobs(), delimiter=",")
    press_ctrl_c_at(monkeypatch, driver, "_reduced_stats", 6)  # in the second of 5 restarts
    args = ["fit", "gmm", str(data), "-k", "2", "--n-init", "5", "--max-iter", "4", "--tol", "0"]
    with interrupt.interrupt_handling():
        res = CliRunner().invoke(app, [*args, "--quiet"])
    assert res.exit_code == 0, res.output
    # the first run's 4 iterations are the best; the second stopped at its second
    assert "EM iterations: 4 (NOT converged (stopped by Ctrl-C)); best of 2 of 5 init(s)" in (
        res.output
    )


def test_a_signal_while_a_temporary_file_is_made_is_held_and_the_file_removed(
    tmp_path, monkeypatch
):
    """A Ctrl-C between mkstemp and the name kept (no __exit__ to remove it) left a .lftmp
    file: it is held to the end of that step, then taken, and the file removed."""
    import tempfile

    original = tempfile.mkstemp

    def made_then_pressed(*args, **kwargs):
        made = original(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return made

    monkeypatch.setattr(tempfile, "mkstemp", made_then_pressed)
    with interrupt.interrupt_handling(), pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "m.lf") as tmp:
            tmp.write_text("never")
    assert list(tmp_path.iterdir()) == []


def test_a_signal_while_the_handling_ends_is_dropped_not_raised_past_its_caller():
    """A press as the command line's block ends (its timers cancelled, its handlers put back)
    raised past main's handling of aborts: a traceback. It is dropped: the command has ended."""

    class PressedWhileCancelled:
        def cancel(self):
            signal.raise_signal(signal.SIGINT)

    with interrupt.interrupt_handling():
        interrupt._timers.append(PressedWhileCancelled())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---- from Python: fit keeps the fit so far, then raises KeyboardInterrupt ---------------------


def test_from_python_a_stopped_fit_keeps_that_many_iterations_then_raises(monkeypatch):
    X = blobs()
    calls = press_ctrl_c_at(monkeypatch, driver, "_reduced_stats", 3)
    model = GaussianMixture(2, max_iter=500, tol=0, random_state=1)
    with pytest.warns(ConvergenceWarning), pytest.raises(KeyboardInterrupt) as raised:
        model.fit(X)
    assert calls["n"] == 3
    assert str(raised.value) == (
        "GaussianMixture.fit stopped by Ctrl-C at the end of its EM iteration; the estimator "
        "keeps the fit so far (not converged); set_params(warm_start=True) and fit continue "
        "from it"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    three = _is_the_fit_of_three_iterations(model, X)
    np.testing.assert_array_equal(model.predict(X), three.predict(X))
    monkeypatch.undo()  # as the message says: a warm start continues it, iteration for iteration
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ten = GaussianMixture(2, max_iter=10, tol=0, random_state=1).fit(X)
        model.set_params(warm_start=True, max_iter=7).fit(X)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(model, name), getattr(ten, name))


@pytest.mark.parametrize("presses", [(3, 3), (1,)], ids=["second press", "before the loop"])
def test_from_python_a_second_press_or_one_outside_the_loop_leaves_the_model_as_it_was(
    monkeypatch, presses
):
    X = blobs()
    model = GaussianHMM(2, n_iter=5, random_state=0).fit(X)
    before = {k: v.copy() for k, v in vars(model).items() if isinstance(v, np.ndarray)}
    n = {"calls": 0}
    module, name = (driver, "_reduced_stats") if presses != (1,) else (GaussianHMM, "_prepare_fit")
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        n["calls"] += 1
        for _ in range(presses.count(n["calls"])):  # (3, 3): twice in iteration 3
            signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    with warnings.catch_warnings(), pytest.raises(KeyboardInterrupt) as raised:
        warnings.simplefilter("error")  # no ConvergenceWarning: the fit did not end
        model.set_params(n_iter=50, tol=0, random_state=1).fit(blobs(seed=3))
    assert str(raised.value) == ""  # Python's own, raised at the press
    assert n["calls"] == max(presses)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(model, k), v)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_from_python_an_abort_where_gradients_were_off_leaves_them_on(monkeypatch):
    """A second press raised between ``no_grad()`` turning gradients off and its block
    beginning (so that its ``__exit__`` never runs) must not leave the session without them."""
    n = {"calls": 0}
    original = driver._reduced_stats

    def wrapped(*args, **kwargs):
        n["calls"] += 1
        if n["calls"] == 2:
            torch.set_grad_enabled(False)  # as no_grad().__enter__ does first
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # the abort, before the block would begin
        return original(*args, **kwargs)

    monkeypatch.setattr(driver, "_reduced_stats", wrapped)
    assert torch.is_grad_enabled()
    try:
        with pytest.raises(KeyboardInterrupt):
            GaussianMixture(2, max_iter=50, tol=0, random_state=1).fit(blobs())
        assert torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)  # the tests after this one, whatever it found


def test_from_python_a_flow_stopped_keeps_the_weights_of_its_steps_then_raises(
    tmp_path, monkeypatch
):
    from latentfit import MAF
    from latentfit.flows import objectives

    X = blobs(400)
    whole = MAF(n_layers=2, hidden=8, epochs=3, batch_size=50, random_state=0).fit(X)
    press_ctrl_c_at(monkeypatch, objectives.FlowNLL, "__call__", 11)  # 8 steps an epoch
    model = MAF(n_layers=2, hidden=8, epochs=3, batch_size=50, random_state=0)
    model.set_params(checkpoint_dir=str(tmp_path))
    with pytest.raises(
        KeyboardInterrupt, match=r"MAF\.fit stopped by Ctrl-C at the end of its "
    ) as e:
        model.fit(X)
    assert str(e.value).endswith("; fit again with the same checkpoint_dir resumes it")
    assert len(model.history_) == 1  # the first epoch's row; the best epoch's weights
    assert np.isfinite(model.score_samples(X)).all()
    monkeypatch.undo()  # as the message says: the fit resumes to the uninterrupted one's
    np.testing.assert_array_equal(model.fit(X).score_samples(X), whole.score_samples(X))


def test_from_python_a_handler_of_the_program_s_own_is_left_in_charge(monkeypatch):
    seen = []
    press_ctrl_c_at(monkeypatch, driver, "_reduced_stats", 2)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        model = GaussianMixture(2, max_iter=4, tol=0, random_state=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(blobs())  # the program's handler took the press; the fit ran on
        assert seen == [signal.SIGINT] and model.n_iter_ == 4
    finally:
        signal.signal(signal.SIGINT, previous)


def test_from_python_sampling_stopped_returns_the_draws_so_far_and_resume_continues(monkeypatch):
    """The draws are the sampler's result, so they are returned (with a warning)."""
    from torch.distributions import Gamma

    from latentfit import fit_map
    from latentfit.mcmc import sampler

    fit = fit_map("poisson", np.array([3.0, 1, 4, 2, 5]), prior={"rate": Gamma(2.0, 0.5)})
    run = dict(num_chains=2, num_warmup=50, generator=3, progress_bar=False, pace="batch")
    whole = fit.sample_posterior(num_draws=90, **run)
    calls = press_ctrl_c_at(monkeypatch, sampler._Run, "transition", 50 + 25)
    with pytest.warns(
        UserWarning, match=r"sampling stopped by Ctrl-C after 25 of 60 draws per "
    ) as w:
        part = fit.sample_posterior(num_draws=60, **run)
    assert w[0].filename == __file__  # the user's line
    assert calls["n"] == 75 and part.num_draws == 25
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    np.testing.assert_array_equal(part.unconstrained.numpy(), whole.unconstrained[:, :25].numpy())
    calls["n"] = 0  # resume's 10th transition
    press_ctrl_c_at(monkeypatch, sampler._Run, "transition", 10)
    with pytest.warns(UserWarning, match=r"after 10 of 65 draws per chain.*resume\(55\)") as w:
        more = part.resume(65, progress_bar=False)
    assert w[0].filename == __file__
    assert more.num_draws == 35
    np.testing.assert_array_equal(more.unconstrained.numpy(), whole.unconstrained[:, :35].numpy())
    monkeypatch.undo()
    rest = more.resume(55, progress_bar=False)
    np.testing.assert_array_equal(rest.unconstrained.numpy(), whole.unconstrained.numpy())


def test_from_python_ctrl_c_during_warm_up_raises_at_once(monkeypatch):
    from torch.distributions import Gamma

    from latentfit import fit_map
    from latentfit.mcmc import sampler

    fit = fit_map("poisson", np.array([3.0, 1, 4, 2, 5]), prior={"rate": Gamma(2.0, 0.5)})
    calls = press_ctrl_c_at(monkeypatch, sampler._Run, "transition", 20)
    with pytest.raises(KeyboardInterrupt):
        fit.sample_posterior(
            num_chains=2, num_warmup=50, num_draws=60, progress_bar=False, pace="batch"
        )
    assert calls["n"] == 20
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_from_python_a_sweep_stopped_during_its_third_fit_returns_the_two_before_it(monkeypatch):
    from latentfit.select import select_model

    X = blobs()
    full = select_model(X, family="gmm", n_components=[1, 2, 3, 4], covariance_types=["full"])
    calls = press_ctrl_c_at(monkeypatch, GaussianMixture, "fit", 3)
    with pytest.warns(UserWarning, match=r"select_model: stopped by Ctrl-C during fit 3 of 4 "):
        part = select_model(X, family="gmm", n_components=[1, 2, 3, 4], covariance_types=["full"])
    assert calls["n"] == 3 and len(part.rows) == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert [r["bic"] for r in part.rows[:2]] == [r["bic"] for r in full.rows[:2]]
    assert part.rows[2]["error"] == "stopped by Ctrl-C before this fit ended"
    assert np.isnan(part.rows[2]["bic"]) and part.models[2] is None
