"""No command loses data: every output is checked before any work, written atomically.

Each command that writes is run through the real typer application with its output pointed
at the input, at an existing file, at a folder, into a missing and into a read-only folder.
The refusals must come before any work: the functions that read the data (or the model) and
fit are replaced by ones that fail loudly, so a refusal that arrives after work started shows
up as "work started" instead of the expected message.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import latentfit
from latentfit._files import atomic_path
from latentfit.cli import app
from latentfit.errors import OutputError

runner = CliRunner()
SRC = Path(latentfit.__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list[str]:
    """Temporary files (ours end in .lftmp) left anywhere under ``folder``."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".lftmp"))


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vae")
    rng = np.random.default_rng(1)
    np.save(folder / "x.npy", rng.normal(size=(40, 4)))
    out = folder / "v.safetensors"
    res = runner.invoke(
        app, ["fit", "vae", "--dataset", str(folder / "x.npy"), *VAE_FAST, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    return out


VAE_FAST = ["--epochs", "1", "--hidden", "8", "--latent", "2", "--likelihood", "gaussian",
            "--no-binarize", "--batch-size", "20", "--quiet"]  # fmt: skip


FLOW_FAST = ["--epochs", "1", "--layers", "1", "--hidden", "8", "--batch-size", "20", "--quiet"]
DDPM_FAST = ["--steps", "5", "--hidden", "8", "--n-hidden", "1", "--epochs", "1",
             "--batch-size", "20", "--eval-t", "2", "--quiet"]  # fmt: skip


def _fail_work(*args, **kwargs):
    raise AssertionError("work started")


def _block_work(m: pytest.MonkeyPatch) -> None:
    """Make every way a command starts its work (reading data or a model, fitting) fail."""
    import latentfit.datasets
    import latentfit.select
    import latentfit.tour
    import latentfit.vae
    import latentfit.vae.data
    from latentfit.em.hmm import GaussianHMM
    from latentfit.em.mixture.gmm import GaussianMixture
    from latentfit.vi.bgmm import BayesianGaussianMixture

    m.setattr(latentfit.datasets, "load_array", _fail_work)
    m.setattr(latentfit.vae.data, "load_vae_data", _fail_work)
    m.setattr(latentfit.vae, "load_model", _fail_work)
    m.setattr(latentfit.select, "select_model", _fail_work)
    m.setattr(latentfit.tour, "run_tour", _fail_work)
    for cls in (GaussianMixture, GaussianHMM, BayesianGaussianMixture):
        m.setattr(cls, "fit", _fail_work)


@pytest.fixture
def no_work(monkeypatch):
    _block_work(monkeypatch)


@pytest.fixture
def umask():
    """Run with umask 027 (group may read, others nothing), restored afterwards."""
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


@pytest.fixture
def readonly_dir(tmp_path) -> Path:
    """A folder this process cannot create files in. root ignores permission bits, so as root
    use /sys/kernel (sysfs refuses new files to everyone)."""
    if os.geteuid() == 0:
        yield Path("/sys/kernel")
        return
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@dataclass(frozen=True)
class Case:
    """A command that writes: ``argv(data, model, out)`` names ``out`` with ``option``."""

    id: str
    option: str
    argv: object
    input: str  # "data" or "model": which input the command reads
    suffix: str
    valid: object  # check that the written file is what the command writes

    def args(self, data, model, out, tmp):
        return [str(a) for a in self.argv(data, model, out, tmp)]


def _is_model(path):
    latentfit.load(path)


def _is_vae(path):
    from latentfit.vae import load_model

    load_model(path)


def _is_states(path):
    lines = path.read_text().split()
    assert lines[0] == "state" and set(lines[1:]) <= {"0", "1"}


def _is_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _is_metrics(path):
    assert path.read_text().startswith("epoch")


CASES = [
    Case("fit-gmm--out", "--out", lambda d, m, o, t: ["fit", "gmm", d, "-k", "2", "--quiet",
         "--out", o], "data", ".lf", _is_model),
    Case("fit-hmm--out", "--out", lambda d, m, o, t: ["fit", "hmm", d, "-k", "2", "--quiet",
         "--states", t / "other_states.csv", "--out", o], "data", ".lf", _is_model),
    Case("fit-hmm--states", "--states", lambda d, m, o, t: ["fit", "hmm", d, "-k", "2",
         "--quiet", "--states", o], "data", ".csv", _is_states),
    Case("fit-hsmm--out", "--out", lambda d, m, o, t: ["fit", "hsmm", d, "-k", "2", "--quiet",
         "--states", t / "other_states.csv", "--out", o], "data", ".lf", _is_model),
    Case("fit-hsmm--states", "--states", lambda d, m, o, t: ["fit", "hsmm", d, "-k", "2",
         "--quiet", "--states", o], "data", ".csv", _is_states),
    Case("fit-arhmm--out", "--out", lambda d, m, o, t: ["fit", "arhmm", d, "-k", "2", "--quiet",
         "--states", t / "other_states.csv", "--out", o], "data", ".lf", _is_model),
    Case("fit-arhmm--plot", "--plot", lambda d, m, o, t: ["fit", "arhmm", d, "-k", "2",
         "--quiet", "--states", t / "other_states.csv", "--plot", o], "data", ".png", _is_png),
    Case("fit-bgmm--out", "--out", lambda d, m, o, t: ["fit", "bgmm", d, "-k", "2", "--quiet",
         "--out", o], "data", ".lf", _is_model),
    Case("fit-vae--out", "--out", lambda d, m, o, t: ["fit", "vae", "--dataset", d, *VAE_FAST,
         "--out", o], "data", ".safetensors", _is_vae),
    Case("fit-vae--metrics-csv", "--metrics-csv", lambda d, m, o, t: ["fit", "vae", "--dataset",
         d, *VAE_FAST, "--out", t / "other.safetensors", "--metrics-csv", o], "data", ".csv",
         _is_metrics),
    Case("fit-flow--out", "--out", lambda d, m, o, t: ["fit", "flow", d, *FLOW_FAST, "--out", o],
         "data", ".safetensors", _is_model),
    Case("fit-diffusion--out", "--out", lambda d, m, o, t: ["fit", "diffusion", "--dataset", d,
         *DDPM_FAST, "--out", o], "data", ".safetensors", _is_model),
    Case("sample--out", "--out", lambda d, m, o, t: ["sample", m, "--n", "4", "--out", o],
         "model", ".png", _is_png),
    Case("fit-gmm--plot", "--plot", lambda d, m, o, t: ["fit", "gmm", d, "-k", "2", "--quiet",
         "--plot", o], "data", ".png", _is_png),
    Case("fit-hmm--plot", "--plot", lambda d, m, o, t: ["fit", "hmm", d, "-k", "2", "--quiet",
         "--states", t / "other_states.csv", "--plot", o], "data", ".png", _is_png),
    Case("fit-bgmm--plot", "--plot", lambda d, m, o, t: ["fit", "bgmm", d, "-k", "2",
         "--quiet", "--plot", o], "data", ".png", _is_png),
    Case("fit-vae--plot", "--plot", lambda d, m, o, t: ["fit", "vae", "--dataset", d,
         *VAE_FAST, "--out", t / "other.safetensors", "--plot", o], "data", ".png", _is_png),
    Case("select-gmm--plot", "--plot", lambda d, m, o, t: ["select", "gmm", d, "-k", "1-2",
         "--covariance", "full", "--plot", o], "data", ".png", _is_png),
]  # fmt: skip
IDS = [c.id for c in CASES]


def _inputs(case, data, vae_file, tmp_path):
    """The input and a private copy of the model (so a test may never damage the shared one)."""
    model = tmp_path / "model.safetensors"
    shutil.copy(vae_file, model)
    return (data if case.input == "data" else model), model


@pytest.mark.parametrize("spelling", ["same", "dotdot", "dot-slash", "symlink", "hardlink"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(
    case, spelling, data, vae_file, tmp_path, no_work
):
    src, model = _inputs(case, data, vae_file, tmp_path)
    before = src.read_bytes()
    (tmp_path / "sub").mkdir()
    out = {
        "same": src,
        "dotdot": tmp_path / "sub" / ".." / src.name,
        "dot-slash": f"./{os.path.relpath(src)}",
        "symlink": tmp_path / "link",
        "hardlink": tmp_path / "hard",
    }[spelling]
    (tmp_path / "link").symlink_to(src)
    os.link(src, tmp_path / "hard")
    for force in ([], ["--force"]):  # --force never allows writing over an input
        res = runner.invoke(app, case.args(data, model, out, tmp_path) + force)
        assert res.exit_code == 2, res.output
        assert f"{case.option} " in res.output and "is the input" in res.output, res.output
        assert src.read_bytes() == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_existing_output_needs_force_then_is_replaced_atomically_with_the_umask(
    case, data, vae_file, tmp_path, monkeypatch, umask
):
    _, model = _inputs(case, data, vae_file, tmp_path)
    out = tmp_path / f"result{case.suffix}"
    out.write_bytes(b"old results")
    with monkeypatch.context() as m:
        _block_work(m)
        res = runner.invoke(app, case.args(data, model, out, tmp_path))
    assert res.exit_code == 2 and "already exists" in res.output and "--force" in res.output
    assert out.read_bytes() == b"old results"
    for flag in ("--force", "--overwrite"):
        out.write_bytes(b"old results")
        res = runner.invoke(app, case.args(data, model, out, tmp_path) + [flag])
        assert res.exit_code == 0, res.output
        case.valid(out)
        assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # 0o640, not mkstemp's 0o600
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["missing-folder", "readonly-folder", "a-folder", "file-parent"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_unwritable_output_is_refused_before_any_work(
    case, where, data, vae_file, tmp_path, readonly_dir, no_work
):
    _, model = _inputs(case, data, vae_file, tmp_path)
    out, message = {
        "missing-folder": (tmp_path / "nowhere" / f"r{case.suffix}", "does not exist"),
        "readonly-folder": (readonly_dir / f"r{case.suffix}", "cannot write into"),
        "a-folder": (tmp_path, "is a folder"),
        "file-parent": (data / f"r{case.suffix}", "is not a folder"),
    }[where]
    res = runner.invoke(app, case.args(data, model, out, tmp_path))
    assert res.exit_code == 2, res.output
    assert message in res.output and case.option in res.output, res.output
    assert "Traceback" not in res.output and ".lftmp" not in res.output
    assert not (tmp_path / "nowhere").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_output_that_is_a_link_is_written_through_and_the_link_kept(
    case, data, vae_file, tmp_path
):
    # Found by hand: the rename that ends a write replaced the link itself with a regular
    # file, and the file it pointed to kept the old content.
    _, model = _inputs(case, data, vae_file, tmp_path)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / f"result{case.suffix}"
    link = tmp_path / f"link{case.suffix}"
    link.symlink_to(target)  # dangling: the write creates the file it points to
    res = runner.invoke(app, case.args(data, model, link, tmp_path))
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    case.valid(target)
    target.write_bytes(b"old results")  # now the link points to a file: --force replaces it
    for other in ("other_states.csv", "other.safetensors"):  # the command's other outputs
        (tmp_path / other).unlink(missing_ok=True)
    res = runner.invoke(app, case.args(data, model, link, tmp_path))
    assert res.exit_code == 2 and f"{link} (a link to {target}) already exists" in res.output
    assert target.read_bytes() == b"old results"
    res = runner.invoke(app, case.args(data, model, link, tmp_path) + ["--force"])
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    case.valid(target)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["missing-folder", "readonly-folder"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_link_into_an_unwritable_folder_is_refused_before_any_work(
    case, where, data, vae_file, tmp_path, readonly_dir, no_work
):
    _, model = _inputs(case, data, vae_file, tmp_path)
    target, message = {
        "missing-folder": (tmp_path / "nowhere" / f"r{case.suffix}", "does not exist"),
        "readonly-folder": (readonly_dir / f"r{case.suffix}", "cannot write into"),
    }[where]
    link = tmp_path / f"link{case.suffix}"
    link.symlink_to(target)
    res = runner.invoke(app, case.args(data, model, link, tmp_path))
    assert res.exit_code == 2, (res.output, res.exception)
    assert f"{case.option} {link} (a link to {target})" in res.output and message in res.output
    assert link.is_symlink() and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_loop_of_links_is_refused_by_name_before_any_work(
    case, data, vae_file, tmp_path, no_work
):
    # Found by hand: 'fit gmm d.csv --out loop' (ln -s loop loop) ended in a traceback,
    # "RuntimeError: Symlink loop from 'loop'", from the check against the inputs.
    _, model = _inputs(case, data, vae_file, tmp_path)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    res = runner.invoke(app, case.args(data, model, tmp_path / "a", tmp_path))
    assert res.exit_code == 2, (res.output, res.exception)
    assert f"{case.option} {tmp_path / 'a'} is a loop of symbolic links" in res.output


def test_a_folder_output_that_is_a_loop_of_links_is_refused(tmp_path, no_work):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    res = runner.invoke(app, ["tour", "--out", str(tmp_path / "loop")])
    assert res.exit_code == 2, (res.output, res.exception)
    assert f"--out {tmp_path / 'loop'} is a loop of symbolic links" in res.output


def test_folder_outputs_are_made_through_a_dangling_link(data, tmp_path, monkeypatch):
    # Found by hand: 'tour --out LINK' and '--checkpoint-dir LINK' (LINK -> a folder not yet
    # made) passed the checks, then ended in "error: [Errno 17] File exists: 'LINK'".
    (tmp_path / "report").symlink_to(tmp_path / "made" / "report")
    _fake_sections(monkeypatch, None)
    res = runner.invoke(app, ["tour", "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path / "made" / "report")) == ["gmm_faithful.png", "index.html"]
    ckpt = tmp_path / "ckpt"
    ckpt.symlink_to(tmp_path / "made" / "ckpt")
    args = ["fit", "vae", "--dataset", str(data), *VAE_FAST, "--out", str(tmp_path / "v.st")]
    res = runner.invoke(app, [*args, "--checkpoint-dir", str(ckpt)])
    assert res.exit_code == 0, res.output
    assert ckpt.is_symlink() and {"last.pt", "options.json"} <= set(os.listdir(ckpt))


@pytest.mark.parametrize("option", ["--out", "--plot", "--metrics-csv"])
def test_an_output_naming_a_file_read_from_the_idx_folder_is_refused(tmp_path, option, no_work):
    # Found by hand: --dataset mnist-idx --idx D --out D/train-images-idx3-ubyte --force
    # passed the checks (only the folder D was an input) and would have written the model
    # over the training images after the fit.
    idx = tmp_path / "idx"
    idx.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images.idx3-ubyte.gz", "t10k-labels-idx1-ubyte"):  # fmt: skip
        (idx / name).write_bytes(b"digits")
    args = ["fit", "vae", "--dataset", "mnist-idx", "--idx", str(idx), "--force"]
    for name in ("train-images-idx3-ubyte", "t10k-images.idx3-ubyte.gz"):
        outs = {"--out": str(tmp_path / "v.st"), option: str(idx / name)}
        res = runner.invoke(app, [*args, *(a for kv in outs.items() for a in kv)])
        assert res.exit_code == 2, (res.output, res.exception)
        if option == "--metrics-csv" and name.endswith(".gz"):  # a CSV table's name: its
            assert "which a .gz file does not hold" in res.output  # suffix refused first
        else:
            assert f"{option} {idx / name} is the input" in res.output
        assert (idx / name).read_bytes() == b"digits"


def test_hmm_default_states_file_is_not_overwritten_without_force(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "d_states.csv"  # DATA_states.csv in the current folder
    target.write_text("keep me")
    res = runner.invoke(app, ["fit", "hmm", str(data), "-k", "2", "--quiet"])
    assert res.exit_code == 2 and "--states d_states.csv already exists" in res.output
    assert target.read_text() == "keep me"
    res = runner.invoke(app, ["fit", "hmm", str(data), "-k", "2", "--quiet", "--force"])
    assert res.exit_code == 0, res.output
    _is_states(target)


def test_two_outputs_naming_one_file_are_refused(data, tmp_path, no_work):
    out = tmp_path / "both.csv"
    res = runner.invoke(
        app, ["fit", "hmm", str(data), "-k", "2", "--states", str(out), "--out", str(out)]
    )
    assert res.exit_code == 2 and "both name" in res.output


def _file_options() -> list[tuple[list[str], str]]:
    """(command words, option) for every option of every command that names a file to write
    (tour --out and --checkpoint-dir name folders)."""
    import typer.main

    def walk(cmd, words):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*words, name])
            return
        for param in cmd.params:
            names = set(getattr(param, "opts", ()))
            if names & {"--out", "--labels", "--plot", "--states", "--per-row", "--metrics-csv"}:
                if words != ["tour"]:
                    yield words, param.opts[0]

    return list(walk(typer.main.get_command(app), []))


FILE_OPTIONS = _file_options()


@pytest.mark.parametrize("ending", ["/", "/."])
@pytest.mark.parametrize(
    ("words", "option"), FILE_OPTIONS, ids=[f"{' '.join(w)} {o}" for w, o in FILE_OPTIONS]
)
def test_a_file_output_ending_in_a_slash_is_refused(words, option, ending, tmp_path, no_work):
    # Found by hand: pathlib drops a trailing slash, so 'fit gmm d.csv --out newdir/' wrote a
    # file named newdir. The refusal comes as the option is read, before any other check.
    res = runner.invoke(app, [*words, option, f"{tmp_path / 'newdir'}{ending}"])
    assert res.exit_code == 2, res.output
    assert f"{option} {tmp_path / 'newdir'}{ending} names a folder" in res.output, res.output
    assert f"e.g. {tmp_path / 'newdir'}/NAME" in res.output
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("words", "option"), FILE_OPTIONS, ids=[f"{' '.join(w)} {o}" for w, o in FILE_OPTIONS]
)
def test_a_file_output_named_dash_is_refused(words, option, tmp_path, monkeypatch, no_work):
    # Found by hand: 'predict m.lf d.csv --out -' said "80 rows of label written to -" and
    # left a file named '-' instead of printing the labels.
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, [*words, option, "-"])
    assert res.exit_code == 2, res.output
    assert f"{option} - would write a file named '-', not standard output" in res.output
    assert os.listdir(tmp_path) == []


def test_fit_out_newdir_slash_writes_no_file_named_newdir(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in ("newdir/", f"{tmp_path}/"):
        res = runner.invoke(app, ["fit", "gmm", str(data), "-k", "2", "--quiet", "--out", out])
        assert res.exit_code == 2 and "names a folder" in res.output, res.output
    assert os.listdir(tmp_path) == ["d.csv"]


def test_a_folder_output_may_end_in_a_slash(data, tmp_path, no_work):
    res = runner.invoke(app, ["tour", "--out", f"{tmp_path / 'report'}/"])
    assert isinstance(res.exception, AssertionError) and "work started" in str(res.exception)
    args = ["fit", "vae", "--dataset", str(data), *VAE_FAST, "--out", str(tmp_path / "v.st")]
    res = runner.invoke(app, [*args, "--checkpoint-dir", f"{tmp_path / 'ckpt'}/"])
    assert isinstance(res.exception, AssertionError) and "work started" in str(res.exception)


@pytest.mark.parametrize(
    "command",
    [
        ["fit", "flow", "{data}", *FLOW_FAST],
        ["fit", "diffusion", "--dataset", "{data}", *DDPM_FAST],
        ["fit", "vae", "--dataset", "{data}", *VAE_FAST],
    ],
    ids=["flow", "diffusion", "vae"],
)
@pytest.mark.parametrize(
    "clash",
    [
        (["--out", "{ckpt}"], "one as a file and one as a folder"),
        (["--out", "{ckpt}/last.pt"], "both name"),
        (["--out", "{ckpt}/options.json"], "both name"),
    ],
    ids=["out-is-the-folder", "out-is-last.pt", "out-is-options.json"],
)
def test_an_output_naming_the_checkpoint_or_its_folder_is_refused_before_any_work(
    command, clash, data, tmp_path, no_work
):
    # Found by hand: --out CKPT --checkpoint-dir CKPT trained, then failed with a traceback
    # ("CKPT is a folder"); --out CKPT/last.pt wrote the model over the checkpoint.
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    argv, words = clash
    args = [a.format(data=data, ckpt=ckpt) for a in [*command, *argv]]
    res = runner.invoke(app, [*args, "--checkpoint-dir", str(ckpt)])
    assert res.exit_code == 2, (res.output, res.exception)
    assert "--out and --checkpoint-dir" in res.output and words in res.output
    assert os.listdir(ckpt) == []


def test_vae_metrics_or_plot_naming_the_checkpoint_is_refused(data, tmp_path, no_work):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    args = ["fit", "vae", "--dataset", str(data), *VAE_FAST, "--out", str(tmp_path / "v.st")]
    for option in ("--metrics-csv", "--plot"):
        res = runner.invoke(
            app, [*args, option, str(ckpt / "last.pt"), "--checkpoint-dir", str(ckpt)]
        )
        assert res.exit_code == 2, (res.output, res.exception)
        assert f"--checkpoint-dir and {option} both name" in res.output


def test_vae_checkpoint_dir_and_resumed_metrics(data, tmp_path, no_work):
    args = ["fit", "vae", "--dataset", str(data), "--out", str(tmp_path / "v.safetensors")]
    res = runner.invoke(app, [*args, "--checkpoint-dir", str(data)])
    assert res.exit_code == 2 and "--checkpoint-dir" in res.output and "not a folder" in res.output
    ckpt, metrics = tmp_path / "ckpt", tmp_path / "m.csv"
    metrics.write_text("epoch\n")
    res = runner.invoke(app, [*args, "--checkpoint-dir", str(ckpt), "--metrics-csv", str(metrics)])
    assert res.exit_code == 2 and "--metrics-csv" in res.output and "already exists" in res.output
    # A resumed run (last.pt present) continues its own metrics file: the checks pass and the
    # work starts (here: fails at once, proving the refusal above came from the metrics file).
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"")
    res = runner.invoke(app, [*args, "--checkpoint-dir", str(ckpt), "--metrics-csv", str(metrics)])
    assert isinstance(res.exception, AssertionError) and "work started" in str(res.exception)


def test_tour_refuses_an_existing_report_a_file_and_unknown_sections(tmp_path, no_work):
    report = tmp_path / "report"
    res = runner.invoke(app, ["tour", "--only", "foo", "--out", str(report)])
    assert res.exit_code == 2 and "unknown section(s) foo" in res.output
    assert "Traceback" not in res.output and not report.exists()
    for empty in ("", " , "):  # found by hand: ran every section, minutes of work
        res = runner.invoke(app, ["tour", "--only", empty, "--out", str(report)])
        assert res.exit_code == 2 and "names no section" in res.output and not report.exists()
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    res = runner.invoke(app, ["tour", "--out", str(a_file)])
    assert res.exit_code == 2 and "is a file, not a folder" in res.output
    report.mkdir()
    (report / "index.html").write_text("old report")
    res = runner.invoke(app, ["tour", "--out", str(report)])
    assert res.exit_code == 2 and "already holds index.html" in res.output
    assert (report / "index.html").read_text() == "old report"


def test_tour_refuses_a_folder_holding_one_of_its_figures(tmp_path, no_work):
    # Found by hand: only index.html was checked; a folder holding the user's own
    # gmm_faithful.png (and no index.html) had it replaced without --force.
    report = tmp_path / "report"
    report.mkdir()
    (report / "gmm_faithful.png").write_bytes(b"mine")
    res = runner.invoke(app, ["tour", "--only", "gmm", "--out", str(report)])
    assert res.exit_code == 2, (res.output, res.exception)
    assert f"--out {report} already holds gmm_faithful.png; pass --force" in res.output
    assert (report / "gmm_faithful.png").read_bytes() == b"mine"
    # a section that does not write that figure may share the folder
    res = runner.invoke(app, ["tour", "--only", "estimate", "--out", str(report)])
    assert isinstance(res.exception, AssertionError) and "work started" in str(res.exception)


def test_the_tours_figures_are_the_ones_its_sections_save():
    import importlib
    import inspect
    import re

    from latentfit.tour import FIGURES, SECTIONS

    for name, module in SECTIONS:
        source = inspect.getsource(importlib.import_module(module))
        saved = re.findall(r"save_figure\(\s*\w+,\s*\"([^\"]+)\"", source)
        assert sorted(saved) == sorted(FIGURES[name]), name


def test_tour_force_replaces_the_report(tmp_path, monkeypatch, umask):
    from latentfit.tour import write_report

    # the sections themselves are tested in tests/*/test_tour*.py; here only the CLI's output
    monkeypatch.setattr(latentfit.tour, "run_tour", lambda out, **kw: write_report(out, []))
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("old report")
    res = runner.invoke(app, ["tour", "--out", str(report), "--force"])
    assert res.exit_code == 0, res.output
    assert "<html>" in (report / "index.html").read_text()
    assert (report / "index.html").stat().st_mode & 0o777 == 0o640
    assert _leftovers(tmp_path) == []


def _fake_sections(monkeypatch, fail_second: type[BaseException] | None):
    """Two tour sections: the first saves gmm_faithful.png, the second fails (when asked)."""
    import types

    from latentfit.tour.report import Section, subplots

    def first(ctx):
        fig, ax = subplots()
        ax.plot([0, 1])
        return Section("first", figures=[(ctx.save_figure(fig, "gmm_faithful.png"), "new")])

    def second(ctx):
        if fail_second is not None:
            raise fail_second("section two failed")
        return Section("second")

    for name, build in (("first", first), ("second", second)):
        monkeypatch.setitem(sys.modules, f"_tour_{name}", types.SimpleNamespace(build=build))
    monkeypatch.setattr(
        latentfit.tour, "SECTIONS", [(n, f"_tour_{n}") for n in ("first", "second")]
    )


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_tour_that_fails_midway_leaves_the_old_report_whole(tmp_path, monkeypatch, failure):
    # Found by hand: with --force, the figures of the sections built before a failure (or a
    # Ctrl-C) replaced the old report's, under the old index.html.
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("old report")
    (report / "gmm_faithful.png").write_bytes(b"old figure")
    _fake_sections(monkeypatch, failure)
    runner.invoke(app, ["tour", "--out", str(report), "--force"])
    assert (report / "index.html").read_text() == "old report"
    assert (report / "gmm_faithful.png").read_bytes() == b"old figure"
    assert sorted(os.listdir(report)) == ["gmm_faithful.png", "index.html"]


def test_a_tour_replaces_the_figures_and_leaves_no_staging_behind(tmp_path, monkeypatch):
    report = tmp_path / "report"
    report.mkdir()
    (report / "index.html").write_text("old report")
    (report / "gmm_faithful.png").write_bytes(b"old figure")
    _fake_sections(monkeypatch, None)
    res = runner.invoke(app, ["tour", "--out", str(report), "--force"])
    assert res.exit_code == 0, res.output
    assert "gmm_faithful.png" in (report / "index.html").read_text()
    _is_png(report / "gmm_faithful.png")
    assert sorted(os.listdir(report)) == ["gmm_faithful.png", "index.html"]


def test_a_tour_figure_that_cannot_be_written_is_named_in_the_report_folder(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def disk_full(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a png")
        _disk_full()

    _fake_sections(monkeypatch, None)
    monkeypatch.setattr(Figure, "savefig", disk_full)
    monkeypatch.chdir(tmp_path)  # a short path, shown whole in the message
    res = runner.invoke(app, ["tour", "--out", "report"])
    assert res.exit_code == 2, res.output
    # found by hand: the message named report/.tour.HOST-PID-XXXX.lftmp/gmm_faithful.png
    assert "error: cannot write report/gmm_faithful.png: No space left" in res.output
    assert ".lftmp" not in res.output and os.listdir(tmp_path / "report") == []


def test_a_killed_tours_staging_folder_is_removed_by_the_next_tour(tmp_path, monkeypatch):
    from latentfit._files import _TMP_SUFFIX, _tmp_prefix

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process that is gone, as a tour killed by SIGKILL would be
    report = tmp_path / "report"
    stage = report / _tmp_prefix("tour").replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    stage = stage.with_name(stage.name + "x1" + _TMP_SUFFIX)
    stage.mkdir(parents=True)
    (stage / "gmm_faithful.png").write_bytes(b"half written")
    _fake_sections(monkeypatch, None)
    res = runner.invoke(app, ["tour", "--out", str(report)])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(report)) == ["gmm_faithful.png", "index.html"]


# ---- atomic_path itself ---------------------------------------------------------------


def test_atomic_path_fsyncs_before_the_rename_and_follows_the_umask(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        os, "replace", lambda a, b: calls.append(("replace", Path(a).name)) or real_replace(a, b)
    )
    old = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "m.txt") as tmp:
            tmp.write_text("new")
            assert tmp.name.startswith(".m.txt.") and tmp.name.endswith(".lftmp")
    finally:
        os.umask(old)
    assert calls[0] == "fsync" and calls[1][0] == "replace" and calls[2] == "fsync"
    assert calls[1][1].endswith(".lftmp")  # the file, then the rename, then the folder
    assert (tmp_path / "m.txt").read_text() == "new"
    assert (tmp_path / "m.txt").stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize("ending", ["/", "/.", "/.."])
def test_a_file_path_naming_a_folder_is_refused_by_the_library_too(tmp_path, ending):
    # Found by hand: GaussianMixture.save("newdir/") wrote a file named newdir.
    model = latentfit.GaussianMixture(1).fit(np.random.default_rng(0).normal(size=(20, 2)))
    name = f"{tmp_path / 'newdir'}{ending}"
    with pytest.raises(OutputError, match="names a folder"):
        model.save(name)
    with pytest.raises(OutputError, match="names a folder"), atomic_path(name) as tmp:
        tmp.write_text("x")
    assert os.listdir(tmp_path) == []


def test_atomic_path_removes_its_temporary_on_error(tmp_path):
    (tmp_path / "m.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "m.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert (tmp_path / "m.txt").read_text() == "old" and _leftovers(tmp_path) == []


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_write_that_fails_midway_names_the_target_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.txt"
    target.write_text("old")
    with pytest.raises(OutputError) as err, atomic_path(target) as tmp, tmp.open("w") as f:
        f.write("half writ")
        f.flush()
        _disk_full()
    # found by hand: the bare OSError ("No space left on device") named no file
    assert str(err.value) == (
        f"cannot write {target}: No space left on device (the file already there is "
        "unchanged); free some space on its disk or choose another folder"
    )
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_full_disk_while_writing_states_is_one_line_naming_the_file(data, tmp_path, monkeypatch):
    states = tmp_path / "states.csv"
    states.write_text("old states")

    def half_then_full(fname, *args, **kwargs):
        Path(fname).write_text("state\n0\n")
        _disk_full()

    monkeypatch.setattr(np, "savetxt", half_then_full)
    res = runner.invoke(
        app, ["fit", "hmm", str(data), "-k", "2", "--quiet", "--states", str(states), "--force"]
    )
    assert res.exit_code == 2, res.output
    assert f"error: cannot write {states}: No space left on device" in res.output
    assert ".lftmp" not in res.output
    assert states.read_text() == "old states" and _leftovers(tmp_path) == []


# Commands that write several files after their work: (argv, the files written before
# --plot, the last). A figure that cannot be written must leave none of them new.
SEVERAL = {
    "fit-gmm": (lambda d, t: ["fit", "gmm", d, "-k", "2", "--quiet", "--out", t / "m.lf",
                              "--labels", t / "l.csv", "--plot", t / "p.png"], ["m.lf", "l.csv"]),
    "fit-bgmm": (lambda d, t: ["fit", "bgmm", d, "-k", "2", "--quiet", "--out", t / "m.lf",
                               "--labels", t / "l.csv", "--plot", t / "p.png"], ["m.lf", "l.csv"]),
    "fit-hmm": (lambda d, t: ["fit", "hmm", d, "-k", "2", "--quiet", "--states", t / "s.csv",
                              "--out", t / "m.lf", "--plot", t / "p.png"], ["s.csv", "m.lf"]),
    "fit-arhmm": (lambda d, t: ["fit", "arhmm", d, "-k", "2", "--quiet", "--states",
                                t / "s.csv", "--out", t / "m.lf", "--plot", t / "p.png"],
                  ["s.csv", "m.lf"]),
    "fit-vae": (lambda d, t: ["fit", "vae", "--dataset", d, *VAE_FAST, "--out", t / "v.st",
                              "--plot", t / "p.png"], ["v.st"]),
}  # fmt: skip


@pytest.mark.parametrize("old", [False, True], ids=["new-files", "old-files"])
@pytest.mark.parametrize("command", list(SEVERAL), ids=list(SEVERAL))
def test_a_write_that_fails_part_way_leaves_no_output_new(
    command, old, data, tmp_path, monkeypatch
):
    # Found by hand: 'fit gmm --out m.lf --labels l.csv --plot p.png' on a disk that filled
    # up at the figure exited 2 with m.lf and l.csv written (and, with --force, the old ones
    # gone), and the result printed as if all had been saved.
    from matplotlib.figure import Figure

    def disk_full(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a png")
        _disk_full()

    argv, before = SEVERAL[command]
    names = [*before, "p.png"]
    if old:
        for name in names:
            (tmp_path / name).write_bytes(b"old " + name.encode())
    monkeypatch.setattr(Figure, "savefig", disk_full)
    res = runner.invoke(app, [str(a) for a in argv(data, tmp_path)] + ["--force"] * old)
    assert res.exit_code == 2, res.output
    assert f"cannot write {tmp_path / 'p.png'}: No space left on device" in res.output
    undone = ", ".join(f"{tmp_path / n} {'restored' if old else 'removed'}" for n in before)
    assert f"note: {undone}: a command writes its outputs all or none" in res.output
    assert "model saved to" not in res.output  # nothing printed as saved
    if old:
        assert all((tmp_path / n).read_bytes() == b"old " + n.encode() for n in names)
    assert sorted(os.listdir(tmp_path)) == sorted(["d.csv", *names * old])


def test_ssm_states_are_put_back_when_the_model_cannot_be_saved(data, tmp_path, monkeypatch):
    import latentfit.io

    states = tmp_path / "s.csv"
    states.write_text("old states")
    monkeypatch.setattr(latentfit.io, "save_bytes", _disk_full)
    args = ["fit", "ssm", str(data), "-k", "1", "--n-iter", "2", "--quiet", "--states",
            str(states), "--out", str(tmp_path / "m.lf"), "--force"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "No space left on device" in res.output, res.output
    assert f"note: {states} restored" in res.output
    assert states.read_text() == "old states"
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "s.csv"]


def test_an_output_made_while_the_command_worked_is_not_replaced(data, tmp_path, monkeypatch):
    # The checks before the work found no l.csv; one made during the fit (by another program)
    # is refused as any existing file is, before anything is written.
    from latentfit.em.mixture.gmm import GaussianMixture

    labels = tmp_path / "l.csv"
    fit = GaussianMixture.fit

    def fit_then_someone_writes(self, *args, **kwargs):
        labels.write_text("written meanwhile")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(GaussianMixture, "fit", fit_then_someone_writes)
    args = ["fit", "gmm", str(data), "-k", "2", "--quiet", "--out", str(tmp_path / "m.lf"),
            "--labels", str(labels)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and f"--labels {labels} already exists" in res.output
    assert labels.read_text() == "written meanwhile"
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "l.csv"]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, Path]:
    """A GMM and a flow fitted on two clusters (the models of predict, score, sample and
    density), and a table of counts (fit mixture)."""
    folder = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (40, 2)), rng.normal(5, 1, (40, 2))]
    np.savetxt(folder / "d.csv", X, delimiter=",", header="a,b", comments="")
    counts = folder / "counts.csv"
    np.savetxt(counts, rng.poisson(3, (60, 2)), delimiter=",", header="a,b", comments="", fmt="%d")
    gmm, flow = folder / "m.lf", folder / "f.safetensors"
    for args in (["fit", "gmm", "-k", "2", "--quiet", "--out", gmm],
                 ["fit", "flow", *FLOW_FAST, "--out", flow]):  # fmt: skip
        res = runner.invoke(app, [str(a) for a in [*args[:2], folder / "d.csv", *args[2:]]])
        assert res.exit_code == 0, res.output
    return {"gmm": gmm, "flow": flow, "counts": counts}


# Commands that write one output: argv(data, models, out) and the option naming out.
ONE_OUTPUT = {
    "fit-flow": (lambda d, m, o: ["fit", "flow", d, *FLOW_FAST, "--out", o], "--out"),
    "fit-diffusion": (lambda d, m, o: ["fit", "diffusion", "--dataset", d, *DDPM_FAST,
                                       "--out", o], "--out"),
    "fit-mixture": (lambda d, m, o: ["fit", "mixture", m["counts"], "-k", "2", "--family",
                                     "poisson", "--quiet", "--out", o], "--out"),
    "fit-fa": (lambda d, m, o: ["fit", "fa", d, "-k", "1", "--quiet", "--out", o], "--out"),
    "fit-ppca": (lambda d, m, o: ["fit", "ppca", d, "-k", "1", "--quiet", "--out", o], "--out"),
    "select-gmm": (lambda d, m, o: ["select", "gmm", d, "-k", "1-2", "--covariance", "full",
                                    "--plot", o], "--plot"),
    "select-hmm": (lambda d, m, o: ["select", "hmm", d, "-k", "1-2", "--covariance", "diag",
                                    "--plot", o], "--plot"),
    "predict": (lambda d, m, o: ["predict", m["gmm"], d, "--out", o], "--out"),
    "score": (lambda d, m, o: ["score", m["gmm"], d, "--per-row", o], "--per-row"),
    "sample": (lambda d, m, o: ["sample", m["gmm"], "-n", "4", "--out", o], "--out"),
    "density-score": (lambda d, m, o: ["density", "score", m["flow"], d, "--out", o], "--out"),
    "density-sample": (lambda d, m, o: ["density", "sample", m["flow"], "-n", "4", "--out", o],
                       "--out"),
}  # fmt: skip


def _made_after_the_first_check(monkeypatch, path: Path, text: str) -> None:
    """Write ``text`` to ``path`` just after the first check of the outputs that looks at
    it, as another program might while the command reads data and fits: only a check made
    again before the write can see it."""
    import latentfit._outputs

    check = latentfit._outputs.check_outputs

    def check_then_someone_writes(outputs, *args, **kwargs):
        check(outputs, *args, **kwargs)
        named = [f for o in outputs if o is not None and o.path is not None for f in o.files()]
        if path in named and not path.exists():
            path.write_text(text)

    monkeypatch.setattr(latentfit._outputs, "check_outputs", check_then_someone_writes)


@pytest.mark.parametrize("command", list(ONE_OUTPUT), ids=list(ONE_OUTPUT))
def test_a_single_output_made_while_the_command_worked_is_not_replaced(
    command, data, saved_models, tmp_path, monkeypatch
):
    # Found by hand: 'fit flow d.csv --out f.safetensors' replaced, without --force, a
    # f.safetensors made while it trained (the commands that write several outputs already
    # checked them again before writing).
    argv, option = ONE_OUTPUT[command]
    out = tmp_path / ("o.png" if option == "--plot" else "o.csv")
    _made_after_the_first_check(monkeypatch, out, "written meanwhile")
    res = runner.invoke(app, [str(a) for a in argv(data, saved_models, out)])
    assert res.exit_code == 2, res.output
    assert f"error: {option} {out} already exists; pass --force" in res.output
    assert out.read_text() == "written meanwhile"
    assert sorted(os.listdir(tmp_path)) == ["d.csv", out.name]


def test_a_tour_report_made_while_the_tour_worked_is_not_replaced(tmp_path, monkeypatch):
    report = tmp_path / "report"
    report.mkdir()
    _fake_sections(monkeypatch, None)
    _made_after_the_first_check(monkeypatch, report / "index.html", "written meanwhile")
    res = runner.invoke(app, ["tour", "--out", str(report)])
    assert res.exit_code == 2, res.output
    assert f"--out {report} already holds index.html; pass --force" in res.output
    assert (report / "index.html").read_text() == "written meanwhile"
    assert sorted(os.listdir(report)) == ["index.html"]  # no figure moved in, no staging left


def test_a_tour_whose_index_cannot_be_written_puts_the_old_figures_back(tmp_path, monkeypatch):
    # Found by hand: with --force on a full disk, the new figures had replaced the old
    # report's when its index.html could not be written.
    report = tmp_path / "report"
    report.mkdir()
    for name in ("index.html", "gmm_faithful.png"):
        (report / name).write_text(f"old {name}")
    _fake_sections(monkeypatch, None)
    monkeypatch.setattr(latentfit.tour, "FIGURES", {"first": ("gmm_faithful.png",)})
    monkeypatch.setattr(Path, "write_text", _disk_full)  # the index, written last
    res = runner.invoke(app, ["tour", "--out", str(report), "--force"])
    assert res.exit_code == 2, res.output
    assert f"error: cannot write {report / 'index.html'}: No space left on device" in res.output
    assert f"note: {report / 'gmm_faithful.png'} restored: a command writes" in res.output
    for name in ("index.html", "gmm_faithful.png"):
        assert (report / name).read_bytes() == f"old {name}".encode()
    assert sorted(os.listdir(report)) == ["gmm_faithful.png", "index.html"]


def test_a_vae_sample_made_at_the_default_samples_png_meanwhile_is_not_replaced(
    vae_file, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # 'latentfit sample v.safetensors' writes ./samples.png
    _made_after_the_first_check(monkeypatch, Path("samples.png"), "written meanwhile")
    res = runner.invoke(app, ["sample", str(vae_file), "-n", "4"])
    assert res.exit_code == 2, res.output
    assert "error: --out samples.png already exists; pass --force" in res.output
    assert Path("samples.png").read_text() == "written meanwhile"


def test_a_full_disk_while_saving_a_flow_is_one_line_naming_the_file(data, tmp_path):
    # fit flow saves its model outside any try: the command group words the OutputError
    out = tmp_path / "f.safetensors"
    out.write_bytes(b"old model")
    args = ["fit", "flow", str(data), *FLOW_FAST, "--out", str(out), "--force"]
    res = _run_on_a_small_disk(args, 1000, tmp_path)  # this flow's file takes ~2,200
    assert res.returncode == 2, res.stderr
    assert f"error: cannot write {out}: File too large" in res.stderr
    assert "Traceback" not in res.stderr
    assert out.read_bytes() == b"old model"
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "f.safetensors"]


def _run_on_a_small_disk(args: list[str], limit: int, cwd: Path):
    """Run ``latentfit ARGS`` in a process that can write no file past ``limit`` bytes
    (RLIMIT_FSIZE, SIGXFSZ ignored): every write past it fails as on a full disk, whatever
    library writes (Python, torch's C++ or safetensors' Rust)."""
    import resource

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "latentfit", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        preexec_fn=limited,
        timeout=300,
    )


def test_a_full_disk_while_saving_a_model_is_one_line_and_the_old_model_kept(data, tmp_path):
    # Found by hand: safetensors raised "SafetensorError: Error while serializing: I/O error:
    # File too large (os error 27)", a traceback after the fit.
    out = tmp_path / "m.lf"
    out.write_bytes(b"old model")
    args = ["fit", "gmm", str(data), "-k", "2", "--quiet", "--out", str(out), "--force"]
    res = _run_on_a_small_disk(args, 1000, tmp_path)  # a 2-component GMM file takes ~1,500
    assert res.returncode == 2, res.stderr
    assert f"error: cannot write {out}: File too large" in res.stderr
    assert "Traceback" not in res.stderr
    assert out.read_bytes() == b"old model"
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "m.lf"]


# the disk fills up in the first part of the checkpoint, or in its zip directory at the end
@pytest.mark.parametrize("limit", [1500, 4000])
def test_a_full_disk_while_checkpointing_is_one_line_naming_the_checkpoint(data, tmp_path, limit):
    # Found by hand: "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected
    # pos 704 vs 598" from torch.save, after an epoch of training.
    ckpt = tmp_path / "ckpt"
    args = ["fit", "vae", "--dataset", str(data), *VAE_FAST, "--out", str(tmp_path / "v.st"),
            "--checkpoint-dir", str(ckpt)]  # fmt: skip
    res = _run_on_a_small_disk(args, limit, tmp_path)  # its last.pt takes ~20,000
    assert res.returncode == 2, res.stderr
    assert f"error: cannot write {ckpt / 'last.pt'}: File too large" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(os.listdir(ckpt)) == ["options.json"]


def test_a_full_disk_while_recording_the_run_options_leaves_no_half_file(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    args = ["fit", "vae", "--dataset", str(data), *VAE_FAST, "--out", str(tmp_path / "v.st"),
            "--checkpoint-dir", str(ckpt)]  # fmt: skip
    res = _run_on_a_small_disk(args, 100, tmp_path)  # its options.json takes ~360
    assert res.returncode == 2, res.stderr
    # found by hand: "error: File too large", and 100 bytes of options.json left behind
    assert f"error: cannot write {ckpt / 'options.json'}: File too large" in res.stderr
    assert os.listdir(ckpt) == []


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "m.txt"
    code = (
        "import sys, time\n"
        "from latentfit._files import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('half written')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    writers = []
    try:
        for _ in range(2):
            p = subprocess.Popen(
                [sys.executable, "-c", code, str(target)],
                stdout=subprocess.PIPE,
                env=env,
                text=True,
            )
            writers.append(p)
            assert p.stdout.readline().strip() == "ready"
        writers[0].send_signal(signal.SIGKILL)  # a kill leaves no chance to clean up
        writers[0].wait()
        assert len(_leftovers(tmp_path)) == 2
        with atomic_path(target) as tmp:
            tmp.write_text("done")
        # the dead writer's file is gone; the live writer's is its own business
        left = _leftovers(tmp_path)
        assert len(left) == 1 and f"-{writers[1].pid}-" in left[0]
    finally:
        for p in writers:
            p.kill()
            p.wait()
            p.stdout.close()
    assert target.read_text() == "done"


def test_the_installed_script_refuses_to_write_over_its_input(data, tmp_path):
    script = Path(sys.executable).with_name("latentfit")
    assert script.exists(), f"the console script is not installed beside {sys.executable}"
    before = data.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [str(script), "fit", "gmm", str(data), "-k", "2", "--out", str(data)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "--out" in res.stderr and "is the input" in res.stderr
    assert "Traceback" not in res.stderr
    assert data.read_bytes() == before


@pytest.mark.parametrize("command", ["show", "sample"])
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(command, tmp_path):
    # ``latentfit show m.lf | head -1``: the reader closes the pipe; the command stops without
    # "error: Broken pipe" or a traceback. Closing the pipe before the process has started
    # makes its first write meet it closed.
    model = tmp_path / "m.lf"
    latentfit.GaussianMixture(2, random_state=0).fit(
        np.random.default_rng(0).normal(size=(50, 2))
    ).save(model)
    argv = [sys.executable, "-m", "latentfit", command, str(model)]
    argv += ["-n", "20000"] if command == "sample" else []
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), err
    assert err.decode().strip() == ""


def test_atomic_path_errors_name_the_target_never_the_temporary(tmp_path, readonly_dir):
    from latentfit.errors import OutputError

    with pytest.raises(OutputError, match="cannot write") as info:
        with atomic_path(readonly_dir / "m.lf") as tmp:
            tmp.write_text("x")
    assert "m.lf" in str(info.value) and ".lftmp" not in str(info.value)
    (tmp_path / "a-folder").mkdir()
    with pytest.raises(OutputError, match="a-folder") as info:
        latentfit.GaussianMixture(1).fit(np.eye(3)).save(tmp_path / "a-folder")
    assert ".lftmp" not in str(info.value) and _leftovers(tmp_path) == []


def test_a_long_table_is_written_in_chunks_not_held_as_one_text(tmp_path):
    """``sample -n N`` passes its memory check on the draws (24 bytes a value); the CSV text of
    them, as Python strings and lists, is several times that, so it must never be held whole:
    ``sample g.lf -n 20000000 --out big.csv`` under ``ulimit -v 3500000`` ended in a
    MemoryError traceback from ``table_text``. Writing it costs about one chunk."""
    import tracemalloc

    from latentfit.cli.tables import table_text, write_table

    n = 200_000
    columns = [np.arange(n) / 7.0, np.arange(n) % 3]
    text = table_text(["x", "label"], columns)
    tracemalloc.start()
    try:
        write_table(tmp_path / "t.csv", ["x", "label"], columns)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "t.csv").read_text() == text
    assert text.splitlines()[1] == "0.0,0" and len(text.splitlines()) == n + 1
    # held whole, the lists, lines and text peak at ~8x the text (30 MB); chunked, ~0.4x
    assert peak < len(text) / 2, (peak, len(text))


def _full_disk_at_the_flush(path, directory=False):
    if not directory:  # a file's own flush, where a full disk shows up at the latest
        _disk_full()


@pytest.mark.parametrize("command", list(ONE_OUTPUT), ids=list(ONE_OUTPUT))
def test_json_is_printed_only_once_the_output_is_written(
    command, data, saved_models, tmp_path, monkeypatch
):
    # Found by hand: 'predict m.lf d.csv --out o.csv --json' on a full disk printed the JSON
    # of the labels on standard output, then "error: cannot write o.csv" and exit 2: a
    # script reading the JSON took it for a success ('sample' and 'select --plot' alike).
    import latentfit._files

    monkeypatch.chdir(tmp_path)
    argv, option = ONE_OUTPUT[command]
    out = tmp_path / ("o.png" if option == "--plot" else "o.csv")
    if command.startswith("fit-"):
        out = tmp_path / "o.lf"
    monkeypatch.setattr(latentfit._files, "_fsync", _full_disk_at_the_flush)
    res = runner.invoke(app, [str(a) for a in argv(data, saved_models, out)] + ["--json"])
    assert res.exit_code == 2, res.output
    assert f"cannot write {out}: No space left on device" in res.stderr, res.stderr
    assert res.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["d.csv"]


# Commands that write several outputs, with --json: argv(data, folder).
JSON_SEVERAL = {
    "fit-gmm": lambda d, t: ["fit", "gmm", d, "-k", "2", "--quiet", "--out", t / "m.lf",
                             "--labels", t / "l.csv"],
    "fit-bgmm": lambda d, t: ["fit", "bgmm", d, "-k", "2", "--quiet", "--out", t / "m.lf",
                              "--labels", t / "l.csv"],
    "fit-hmm": lambda d, t: ["fit", "hmm", d, "-k", "2", "--quiet", "--states", t / "s.csv",
                             "--out", t / "m.lf"],
    "fit-ssm": lambda d, t: ["fit", "ssm", d, "-k", "1", "--n-iter", "2", "--quiet",
                             "--states", t / "s.csv", "--out", t / "m.lf"],
    "fit-vae": lambda d, t: ["fit", "vae", "--dataset", d, *VAE_FAST, "--out", t / "v.st"],
}  # fmt: skip


@pytest.mark.parametrize("command", list(JSON_SEVERAL), ids=list(JSON_SEVERAL))
def test_json_of_a_command_writing_several_outputs_comes_after_them(
    command, data, tmp_path, monkeypatch
):
    import latentfit._files

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(latentfit._files, "_fsync", _full_disk_at_the_flush)
    res = runner.invoke(app, [str(a) for a in JSON_SEVERAL[command](data, tmp_path)] + ["--json"])
    assert res.exit_code == 2, res.output
    assert "No space left on device" in res.stderr, res.stderr
    assert res.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["d.csv"]


#: The tables written as comma-separated text, with a command line that writes each (DATA
#: and MODEL need not exist: the name is refused as the line is read)
CSV_TABLES = [
    (["fit", "gmm", "none.csv", "-k", "2"], "--labels"),
    (["fit", "bgmm", "none.csv", "-k", "2"], "--labels"),
    (["fit", "hmm", "none.csv", "-k", "2"], "--states"),
    (["fit", "hsmm", "none.csv", "-k", "2"], "--states"),
    (["fit", "arhmm", "none.csv", "-k", "2"], "--states"),
    (["fit", "ssm", "none.csv", "-k", "1"], "--states"),
    (["predict", "none.lf", "none.csv"], "--out"),
    (["score", "none.lf", "none.csv"], "--per-row"),
    (["density", "score", "none.lf", "none.csv"], "--out"),
    (["fit", "vae", "--dataset", "none.csv"], "--metrics-csv"),
]


@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".tsv", ".gz", ".json"])
@pytest.mark.parametrize(
    ("args", "option"), CSV_TABLES, ids=[" ".join(a[:2]) for a, _ in CSV_TABLES]
)
def test_a_table_written_as_csv_refuses_a_name_of_another_format(tmp_path, args, option, suffix):
    """``--labels lab.npy`` or ``predict --out x.parquet`` wrote CSV text under that name,
    which numpy and pyarrow could not read back; the name is refused before anything is read,
    and .csv, .txt or a name of no known format are written as before."""
    name = str(tmp_path / f"table{suffix}")
    res = runner.invoke(app, [*args, option, name])
    assert res.exit_code == 2, res.output
    assert f"which a {suffix} file does not hold; name it .csv" in res.output, res.output
    assert not Path(name).exists()
    for fine in (".csv", ".txt", ".out") if suffix == ".npy" else ():
        res = runner.invoke(app, [*args, option, str(tmp_path / f"table{fine}")])
        assert "does not hold" not in res.output, res.output
