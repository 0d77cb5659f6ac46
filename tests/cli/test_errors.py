"""Ordinary mistakes on the command line end in one `error:` line (exit 2), never a traceback."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import latentfit
import latentfit.datasets
from latentfit._validation import resolve_device
from latentfit.cli import app
from latentfit.errors import ParameterError

runner = CliRunner()


def _clean_error(res, *needles):
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "Traceback" not in res.output
    for needle in needles:
        assert needle in res.output, res.output


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    files = {
        "empty.csv": b"",
        "binary.csv": bytes(range(128, 256)),
        "binary.npy": bytes(range(256)) * 2,
        "binary.npz": bytes(range(256)) * 2,
        "binary.parquet": bytes(range(256)) * 2,
        "text.csv": b"a,b\n1,x\n2,y\n",
        "header-only.csv": b"a,b\n",
        "ragged.csv": b"a,b\n1,2\n3\n",
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    (folder / "a-folder.csv").mkdir()
    return folder, [*files, "a-folder.csv", "missing.csv"]


COMMANDS = {
    "fit gmm": lambda p, t: ["fit", "gmm", p, "-k", "2", "--quiet"],
    "fit hmm": lambda p, t: ["fit", "hmm", p, "-k", "2", "--quiet", "--states", t / "s.csv"],
    "fit hsmm": lambda p, t: ["fit", "hsmm", p, "-k", "2", "--quiet", "--states", t / "s.csv"],
    "fit arhmm": lambda p, t: ["fit", "arhmm", p, "-k", "2", "--quiet", "--states", t / "s.csv"],
    "fit bgmm": lambda p, t: ["fit", "bgmm", p, "-k", "2", "--quiet"],
    "fit dist": lambda p, t: ["fit", "dist", p, "--family", "normal"],
    "select gmm": lambda p, t: ["select", "gmm", p, "-k", "1-2"],
    "fit vae": lambda p, t: ["fit", "vae", "--dataset", p, "--quiet", "--out", t / "v.lf"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_data_files_are_one_line_errors_naming_the_file(command, bad_files, tmp_path):
    folder, names = bad_files
    for name in names:
        argv = [str(a) for a in COMMANDS[command](folder / name, tmp_path)]
        res = runner.invoke(app, argv)
        _clean_error(res, name)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporaries


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "gmm", "{d}", "-k", "2"],
        ["fit", "bgmm", "{d}", "-k", "2"],
        ["fit", "hmm", "{d}", "-k", "2", "--states", "{t}/s.csv"],
        ["fit", "hsmm", "{d}", "-k", "2", "--states", "{t}/s.csv"],
        ["fit", "arhmm", "{d}", "-k", "2", "--states", "{t}/s.csv"],
        ["fit", "ssm", "{d}", "-k", "1", "--states", "{t}/s.csv"],
        ["fit", "dist", "{d}", "-f", "normal"],
        ["select", "gmm", "{d}", "-k", "1-2"],
        ["select", "poisson", "{d}", "-k", "1-2"],
        ["select", "hmm", "{d}", "-k", "2-3", "--model", "hsmm"],
        ["fit", "vae", "--dataset", "{d}", "--out", "{t}/v.lf"],
        ["eval", "{t}/v.lf", "--dataset", "{d}"],
        ["predict", "{t}/m.lf", "{d}"],
        ["score", "{t}/m.lf", "{d}"],
        ["sample", "{t}/m.lf"],
        ["density", "score", "{t}/m.lf", "{d}"],
        ["density", "sample", "{t}/m.lf", "--out", "{t}/s.npy"],
    ],
)
@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda:99"])
def test_an_unknown_or_absent_device_is_refused(argv, device, tmp_path, monkeypatch):
    monkeypatch.setattr(latentfit.datasets, "load_array", None)  # must not be reached
    d = tmp_path / "d.csv"
    d.write_text("a\n1\n2\n")
    argv = [a.format(d=d, t=tmp_path) for a in argv]
    res = runner.invoke(app, [*argv, "--device", device])
    _clean_error(res, "--device", repr(device))


def test_resolve_device_names_what_is_wrong():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ParameterError, match="'tpu' is not a torch device"):
        resolve_device("tpu")
    with pytest.raises(ParameterError, match="'cuda:x' is not a torch device"):
        resolve_device("cuda:x")
    with pytest.raises(ParameterError, match="cuda:99"):
        resolve_device("cuda:99")  # absent: no CUDA here, or fewer than 100 devices


def test_fit_dist_unknown_fixed_name(tmp_path):
    d = tmp_path / "d.csv"
    np.savetxt(d, np.random.default_rng(0).normal(size=50), header="x", comments="")
    res = runner.invoke(app, ["fit", "dist", str(d), "--family", "normal", "--fixed", "bogus=1"])
    _clean_error(res, "bogus", "loc", "scale")  # the name at fault and the ones it takes


def test_fit_dist_overflowing_estimate_is_an_error(tmp_path):
    x = np.random.default_rng(0).normal(1e300, 1e299, size=50)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.std(x))  # float64 itself overflows on these values
    d = tmp_path / "big.csv"
    np.savetxt(d, x, header="x", comments="")
    res = runner.invoke(app, ["fit", "dist", str(d), "--family", "normal"])
    _clean_error(res, "overflowed", "scale", "rescale")
    # the same values scaled down fit fine: the refusal is about the overflow only
    np.savetxt(d, x / 1e299, header="x", comments="")
    res = runner.invoke(app, ["fit", "dist", str(d), "--family", "normal"])
    assert res.exit_code == 0, res.output


@pytest.fixture
def small_csv(tmp_path):
    X = np.random.default_rng(0).normal(size=(30, 2))
    path = tmp_path / "d.csv"
    np.savetxt(path, X, delimiter=",", header="a,b", comments="")
    return path


def test_select_k_absurd_range_is_refused_before_reading(small_csv, monkeypatch):
    def read(*a, **k):
        raise AssertionError("data read")

    monkeypatch.setattr(latentfit.datasets, "load_array", read)
    res = runner.invoke(app, ["select", "gmm", str(small_csv), "-k", "1-1000000000"])
    _clean_error(res, "1000000000 sizes", "at most 1000")
    res = runner.invoke(app, ["select", "gmm", str(small_csv), "-k", "5-1"])
    _clean_error(res, "5-1 is empty")


def test_select_k_larger_than_the_rows_is_refused(small_csv):
    res = runner.invoke(app, ["select", "gmm", str(small_csv), "-k", "2,31"])
    _clean_error(res, "31", "30 rows")
    res = runner.invoke(app, ["select", "gmm", str(small_csv), "-k", "29-30", "--covariance", "spherical"])  # fmt: skip
    assert "30 rows" not in res.output  # 30 is allowed: no more than the rows


def test_hmm_binary_lengths_file(small_csv, tmp_path):
    (tmp_path / "lengths.txt").write_bytes(bytes(range(128, 256)))
    res = runner.invoke(
        app,
        ["fit", "hmm", str(small_csv), "-k", "2", "--states", str(tmp_path / "s.csv"),
         "--lengths", str(tmp_path / "lengths.txt")],
    )  # fmt: skip
    _clean_error(res, "lengths.txt", "not a text file")


def test_columns_of_an_npy_file_are_used(tmp_path):
    X = np.random.default_rng(0).normal(size=(60, 3)) * [1.0, 5.0, 0.2]
    np.save(tmp_path / "x.npy", X)
    res = runner.invoke(app, ["fit", "gmm", str(tmp_path / "x.npy"), "-k", "1", "--columns", "1"])
    assert res.exit_code == 0, res.output
    assert "d=1" in res.output
    # one Gaussian: the mean is the column's sample mean (closed form)
    printed = float(re.findall(r"-?\d+\.\d+", res.output.split("means:")[1])[0])
    assert abs(printed - X[:, 1].mean()) < 1e-4  # printed to 4 decimals
    res = runner.invoke(app, ["fit", "gmm", str(tmp_path / "x.npy"), "-k", "1", "--columns", "b"])
    _clean_error(res, "no column names", "by position")


def test_vae_negative_learning_rate(small_csv, tmp_path):
    res = runner.invoke(
        app, ["fit", "vae", "--dataset", str(small_csv), "--lr", "-1", "--out", str(tmp_path / "v")]
    )
    _clean_error(res, "--lr")


def test_vae_too_large_for_memory_is_an_error(small_csv, tmp_path):
    # 10^9 latent units: the first layer alone would need 10^9 x 200 x 4 bytes = 800 GB
    res = runner.invoke(
        app,
        ["fit", "vae", "--dataset", str(small_csv), "--no-binarize", "--likelihood", "gaussian",
         "--latent", "1000000000", "--quiet", "--out", str(tmp_path / "v.lf")],
    )  # fmt: skip
    _clean_error(res, "does not fit in memory", "--latent")
    assert not (tmp_path / "v.lf").exists()


def test_vae_out_of_memory_says_the_allocator_s_message_whole(small_csv, tmp_path, monkeypatch):
    """fit vae cut the allocator's message to 160 characters: a CUDA out-of-memory error lost
    how much memory was free and the allocator's own advice."""
    import latentfit.train

    said = (
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.11 "
        "GiB of which 3.12 GiB is free. Of the allocated memory 70.00 GiB is allocated by "
        "PyTorch, and 1.20 GiB is reserved by PyTorch but unallocated. If reserved but "
        "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:"
        "True to avoid fragmentation."
    )

    def out_of_memory(*args, **kwargs):
        raise RuntimeError(said)

    monkeypatch.setattr(latentfit.train, "train", out_of_memory)
    res = runner.invoke(
        app,
        ["fit", "vae", "--dataset", str(small_csv), "--no-binarize", "--likelihood", "gaussian",
         "--quiet", "--out", str(tmp_path / "v.lf")],
    )  # fmt: skip
    _clean_error(res, "does not fit in memory", "--batch-size")
    assert said in " ".join(res.output.split()), res.output


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["fit", "hmm"], ["--tol", "nan"]),
        (["fit", "hmm"], ["--tol", "inf"]),
        (["fit", "hsmm"], ["--tol", "nan"]),
        (["fit", "arhmm"], ["--tol", "inf"]),
        (["fit", "gmm"], ["--tol", "nan"]),
        (["fit", "gmm"], ["--tol", "inf"]),
        (["fit", "bgmm"], ["--tol", "-1"]),
    ],
)
def test_a_tolerance_that_is_not_a_finite_number_is_refused(command, option, small_csv):
    res = runner.invoke(app, [*command, str(small_csv), "-k", "2", *option])
    _clean_error(res, "tol")


@pytest.mark.parametrize("value", ["nan", "inf", "-3"])
def test_fit_dist_bad_total_count_is_a_parameter_error(value, tmp_path):
    d = tmp_path / "b.csv"
    np.savetxt(d, np.array([1, 2, 0, 3]), header="x", comments="")
    res = runner.invoke(
        app, ["fit", "dist", str(d), "-f", "binomial", "--fixed", f"total_count={value}"]
    )
    _clean_error(res, "total_count", "integer >= 1")


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--variational", "--emission", "gmm"], "--variational fits gaussian and categorical"),
        (["--variational", "--emission", "poisson"], "--emission poisson has no variational"),
        (["--variational", "--missing", "marginalize"], "--missing marginalize"),
        (["--variational", "--online"], "--online and --variational"),
        (["--variational", "--distributed"], "--distributed"),
        (["--online", "--distributed"], "--distributed"),
        (["--online", "--n-init", "3"], "--n-init"),
        (["--chunk-rows", "10"], "--chunk-rows"),
        (["--online", "--chunk-rows", "0"], "--chunk-rows"),
        (["--online", "--chunk-rows", "-5"], "--chunk-rows"),
        (["--burn-in", "5"], "--burn-in is a setting of --online"),
        (["--mstep-every", "5"], "--mstep-every is a setting of --online"),
        (["--learning-decay", "0.8"], "--learning-decay is a setting of --online"),
        (["--online", "--burn-in", "-1"], "--burn-in"),
        (["--online", "--mstep-every", "0"], "--mstep-every"),
        (["--online", "--learning-decay", "0.5"], "--learning-decay must lie in (0.5, 1]"),
        (["--online", "--learning-decay", "nan"], "--learning-decay must lie in (0.5, 1]"),
        (["--online", "--learning-decay", "2"], "--learning-decay"),
        (["--variational", "--tol", "nan"], "tol"),
        (["--variational", "--covariance", "round"], "--covariance"),
    ],
)
def test_fit_hmm_variational_and_online_refuse_what_they_do_not_take(option, needle, small_csv):
    """Each refusal names the option at fault; nothing is written."""
    states = small_csv.parent / "s.csv"
    res = runner.invoke(
        app, ["fit", "hmm", str(small_csv), "-k", "2", "--states", str(states), *option]
    )
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert needle in res.output, res.output
    assert not states.exists()


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--model", "vhmm", "--emission", "poisson"], "--model vhmm takes --emission"),
        (["--model", "vhmm", "--order", "2"], "--order"),
        (["--model", "vhmm", "--covariance", "round"], "round"),
    ],
)
def test_select_vhmm_refuses_what_it_does_not_take(option, needle, small_csv):
    res = runner.invoke(app, ["select", "hmm", str(small_csv), "-k", "1-2", *option])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert needle in res.output, res.output


# ------------------------------------------------ a model's words about X, said of DATA
@pytest.mark.parametrize(
    "argv, file, rows, needle",
    [
        (
            ["fit", "gmm", "two.csv", "-k", "3"],
            "two.csv",
            "1,2\n3,4\n",
            "two.csv has 2 rows, fewer than -k 3",
        ),
        (
            ["fit", "bgmm", "two.csv", "-k", "3"],
            "two.csv",
            "1,2\n3,4\n",
            "two.csv has 2 rows, fewer than -k 3",
        ),
        (
            ["fit", "hmm", "two.csv", "-k", "3"],
            "two.csv",
            "1,2\n3,4\n",
            "two.csv has 2 rows, fewer than -k 3",
        ),
        (
            ["fit", "ssm", "two.csv", "-k", "3"],
            "two.csv",
            "1,2\n3,4\n",
            "two.csv has 2 rows, fewer than -k 3",
        ),
        (
            ["fit", "fa", "two.csv", "-k", "3"],
            "two.csv",
            "1,2\n3,4\n",
            "-k 3 must be at most the 2 column(s) of two.csv",
        ),
        (
            ["fit", "hmm", "frac.csv", "-k", "1", "--emission", "multinomial"],
            "frac.csv",
            "1,2\n1.5,3\n",
            "the value 1.5 at row 1, column 0 of frac.csv is fractional",
        ),
        (
            ["fit", "hmm", "two.csv", "-k", "1", "--lengths", "lengths.txt"],
            "two.csv",
            "1,2\n3,4\n",
            "lengths sum to 3 but two.csv has 2 rows",
        ),
    ],
)
def test_model_errors_name_the_data_file_and_the_option(
    tmp_path, monkeypatch, argv, file, rows, needle
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / file).write_text("a,b\n" + rows)
    (tmp_path / "lengths.txt").write_text("3\n")
    res = runner.invoke(app, [*argv, "--quiet"] if argv[1] != "fa" else argv)
    _clean_error(res, needle)
    error = res.output[res.output.index("error:") :]
    assert not re.search(r"\bX\b|n_components|n_samples", error), error


def test_cli_words_change_only_the_words_about_the_data():
    from latentfit.cli.app import cli_words

    said = cli_words(
        "X has 2 rows, fewer than n_components=3; e.g. X > 0.5 or X.reshape(-1, 1)", "a.csv", "-k"
    )
    assert said == "a.csv has 2 rows, fewer than -k 3; e.g. X > 0.5 or X.reshape(-1, 1)"
    assert (
        cli_words("row 4 of X has zero density", r"C:\d\1.csv")
        == r"row 4 of C:\d\1.csv has zero density"
    )
    assert cli_words("fewer than n_components=3", "a.csv") == "fewer than n_components=3"  # no -k


def test_cli_words_say_the_option_that_set_the_number_of_draws():
    from latentfit.cli.app import cli_words

    text = "n=5,000 draws of 3 values would need 9 bytes; draw in batches of a smaller n"
    assert cli_words(text, count="-n") == (
        "-n 5,000 draws of 3 values would need 9 bytes; draw in batches of a smaller -n"
    )
    assert cli_words(
        text.replace("n=", "n_samples=").replace("smaller n", "smaller n_samples"), count="-n"
    ) == ("-n 5,000 draws of 3 values would need 9 bytes; draw in batches of a smaller -n")


@pytest.mark.parametrize("online", [[], ["--online", "--chunk-rows", "10", "--burn-in", "2"]])
def test_fit_hmm_online_names_a_bad_row_of_a_later_chunk_by_its_row_of_the_file(
    tmp_path, monkeypatch, online
):
    # fit hmm --online reads DATA in chunks of --chunk-rows: a negative count in the third
    # chunk was named by its row there (3), not by its row of the file (23) as without --online.
    monkeypatch.chdir(tmp_path)
    X = np.random.default_rng(0).poisson(3, size=(40, 2)).astype(float)
    X[23, 1] = -1
    np.savetxt("counts.csv", X, delimiter=",", fmt="%g")
    res = runner.invoke(
        app,
        ["fit", "hmm", "counts.csv", "-k", "2", "--emission", "poisson", "--no-header", *online],
    )
    _clean_error(res, "row 23, column 1 of counts.csv")
