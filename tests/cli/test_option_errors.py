"""A bad option value ends in one error that names the option as typed and the value, before
any data are read or any fit starts (exit 2), never a traceback, torch's text or a silent
default."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from latentfit.cli import app

runner = CliRunner()


def _flat(text: str) -> str:
    """The output with rich's box drawing and line wrapping removed."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def _refused(args, *needles, code: int = 2):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == code, res.output
    out = _flat(res.output)
    assert "Traceback" not in out
    for needle in needles:
        assert _flat(needle) in out, out
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("opts")
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(60, 2))
    data = folder / "d.csv"
    np.savetxt(data, x, delimiter=",", header="a,b", comments="")
    model = folder / "g.lf"
    res = runner.invoke(app, ["fit", "gmm", str(data), "-k", "2", "--out", str(model)])
    assert res.exit_code == 0, res.output
    lengths = folder / "len.txt"
    lengths.write_text("30\n99999999999999999999999999\n")
    # a path that does not exist: an option error must come before the data are read
    return {"data": data, "model": model, "lengths": lengths, "missing": folder / "none.csv"}


# ---------------------------------------------------------------------- fit dist --prior
@pytest.mark.parametrize(
    ("prior", "needles"),
    [
        ("loc=distribution:", ["'distribution' is not a prior family", "normal (loc,scale)"]),
        ("loc=exponentialfamily:0,1", ["is not a prior family", "gamma (concentration,rate)"]),
        ("loc=binomial:3,0.5", ["binomial is a distribution over whole numbers"]),
        ("loc=geometric:0.5", ["geometric is a distribution over whole numbers"]),
        ("loc=uniform:5,10", ["the prior covers values in [5, 10]", "any real value"]),
        ("loc=normal:0,1,2", ["normal takes 2 number(s), loc, scale; got 3"]),
        ("scale=gamma:-1,1,0", ["gamma takes 2 number(s)"]),
        ("scale=gamma:-1,1", ["gamma's concentration takes values > 0"]),
        ("scale=gamma:2,nan", ["gamma's rate must be a finite number"]),
        ("loc=uniform:10,5", ["low must be below its high"]),
        ("zz=normal:0,1", ["Normal has no parameter 'zz'"]),
        ("loc", ["--prior takes NAME=FAMILY"]),
        ("loc=nromal:0,1", ["'nromal' is not a prior family", "(did you mean normal?)"]),
        ("loc=normal(0,1", ["a ( without its closing )", "NAME=FAMILY(NUMBER,NUMBER)"]),
        ("scale=gamma(-1,1)", ["gamma's concentration takes values > 0"]),
    ],
)
def test_a_bad_prior_is_named_before_the_data_are_read(files, prior, needles):
    _refused(
        ["fit", "dist", files["missing"], "-f", "normal", "--prior", prior],
        f"--prior {prior}" if "=" in prior else "--prior",
        *needles,
    )


def test_a_prior_written_as_a_call_is_the_same_prior(files):
    """``gamma(2,1)``, as Stan and PyMC write a prior, was refused as an unknown family
    "gamma(2,1)" (while the error listed gamma among the families it takes)."""
    outs = [
        runner.invoke(
            app,
            ["fit", "dist", str(files["data"]), "-f", "normal", "-c", "a", "--json"]
            + ["--prior", f"scale={spec}", "--prior", "loc=normal:0,10"],
        )
        for spec in ("gamma:2,1", "gamma(2,1)", "Gamma( 2, 1 )")
    ]
    assert all(r.exit_code == 0 for r in outs), [r.output for r in outs]
    first = json.loads(outs[0].stdout)
    for r in outs[1:]:
        other = json.loads(r.stdout)
        assert other["parameters"] == first["parameters"], (other, first)
        assert other["log_prior"] == first["log_prior"]


def test_a_prior_that_breaks_float64_names_its_option(files):
    _refused(
        ["fit", "dist", files["data"], "-f", "normal", "-c", "a", "--prior", "loc=normal:0,1e-300"],
        "--prior loc=normal:0,1e-300",
        "widen the prior",
    )


def test_data_too_large_for_float64_are_blamed_not_the_prior(tmp_path):
    # the starting values computed from such data are NaN: the data are at fault, and the
    # message says so, not that the prior is too narrow
    data = tmp_path / "big.csv"
    np.savetxt(data, [1e300, 2e300, 3e300], header="x", comments="")
    prior = ["--prior", "loc=normal:0,1", "--prior", "scale=gamma:2,1"]
    out = _refused(["fit", "dist", data, "-f", "gumbel", *prior], "too large", "rescale")
    assert "widen the prior" not in out


def test_a_prior_given_twice_is_refused(files):
    out = _refused(
        [
            "fit",
            "dist",
            files["missing"],
            "-f",
            "normal",
            "--prior",
            "loc=normal:0,1",
            "--prior",
            "loc=normal:1,1",
        ],
        "both set the prior of loc",
    )
    assert "init=" not in out


def test_good_priors_still_fit(files):
    res = runner.invoke(
        app,
        [
            "fit",
            "dist",
            str(files["data"]),
            "-f",
            "normal",
            "-c",
            "a",
            "--prior",
            "loc=normal:0,10",
            "--prior",
            "scale=gamma:2,1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "MAP" in res.output or "loc" in res.output


# ---------------------------------------------------------------------- fit dist --fixed, --cov
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--fixed", "loc=1"], ["--fixed loc=1", "Normal estimates 'loc'"]),
        (["--fixed", "foo=1"], ["--fixed foo=1", "no argument 'foo'"]),
        (["--fixed", "scale=x"], ["--fixed scale=x", "is not a number"]),
        (["--cov", "bogus"], ["--cov", "'bogus'", "observed, expected, sandwich"]),
        (["--sample", "nuts", "--cov", "bogus", "--prior", "loc=normal:0,1"], ["--cov"]),
        (["--sample", "hmc", "--prior", "loc=normal:0,1"], ["--sample", "'hmc'"]),
        (["--sample", "nuts"], ["--sample needs a prior"]),
        (["-c", "a", "-c", "a"], ["--column", "more than once"]),
    ],
)
def test_fit_dist_options_are_checked_first(files, args, needles):
    out = _refused(["fit", "dist", files["missing"], "-f", "normal", *args], *needles)
    assert "its parameters are loc, scale" not in out


def test_a_fixed_count_given_twice_is_refused(files):
    _refused(
        [
            "fit",
            "dist",
            files["missing"],
            "-f",
            "binomial",
            "--fixed",
            "total_count=10",
            "--fixed",
            "total_count=3",
        ],
        "both set total_count",
    )


@pytest.mark.parametrize(
    ("family", "name", "required"),
    [
        ("normal", "loc", {}),
        ("normal", "foo", {}),
        ("binomial", "probs", {"total_count": 10}),
        ("binomial", "n", {"total_count": 10}),
        ("categorical", "total_count", {"num_categories": 3}),
    ],
)
def test_fixed_names_are_judged_by_the_rule_of_fit_mle(files, family, name, required):
    # one rule decides which names can be fixed: --fixed says what fit_mle's fixed= says,
    # led by the item at fault instead of fixed[name]
    from latentfit.errors import ParameterError
    from latentfit.estimate import fit_mle

    with pytest.raises(ParameterError) as err:
        fit_mle(family, [0.0, 1.0, 2.0], fixed={**required, name: 1})
    lead = f"fixed[{name!r}]: "
    assert str(err.value).startswith(lead), err.value
    why = str(err.value).removeprefix(lead)
    _refused(
        ["fit", "dist", files["missing"], "-f", family, "--fixed", f"{name}=1"],
        f"--fixed {name}=1: {why}",
    )


def test_fit_mle_names_a_fixed_value_outside_the_support():
    import torch

    from latentfit.errors import ParameterError
    from latentfit.estimate import fit_mle

    x = torch.randn(20, dtype=torch.float64)
    with pytest.raises(ParameterError, match="outside the support of Normal's scale"):
        fit_mle("normal", x, fixed={"scale": -1})
    with pytest.raises(ParameterError, match="Normal estimates 'scale'"):
        fit_mle("normal", x, fixed={"scale": 1.0})


# ---------------------------------------------------------------------- --seed, every command
@pytest.mark.parametrize(
    "command",
    [
        ["fit", "gmm", "{missing}", "-k", "2"],
        ["fit", "hmm", "{missing}", "-k", "2"],
        ["fit", "dist", "{missing}", "-f", "normal"],
        ["fit", "bgmm", "{missing}", "-k", "2"],
        ["fit", "vae", "--dataset", "{missing}"],
        ["select", "gmm", "{missing}", "-k", "1-2"],
        ["select", "hmm", "{missing}", "-k", "1-2"],
        ["sample", "{model}"],
        ["score", "{model}", "{missing}"],
    ],
)
@pytest.mark.parametrize("seed", ["100000000000000000000000", "-1", "4294967296"])
def test_a_seed_out_of_range_is_named(files, command, seed):
    args = [a.format(**files) for a in command]
    _refused(
        [*args, "--seed", seed],
        f"error: --seed takes a whole number from 0 to 4294967295; got {seed}",
    )


# ---------------------------------------------------------------------- select
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--covariance", "full,bogus"], ["--covariance 'bogus'", "full, tied, diag, spherical"]),
        (["--covariance", "FULL"], ["--covariance 'FULL'"]),
        (["--covariance", "full,,diag"], ["--covariance", "empty name"]),
        (["--covariance", "full,full"], ["--covariance", "more than once"]),
        (["--criterion", "heldout"], ["--criterion heldout", "--cv"]),
        (["--criterion", "bogus"], ["--criterion", "'bogus'"]),
        (["--cv", "1"], ["--cv", "got 1"]),
        (["--cv", "-3"], ["--cv", "got -3"]),
    ],
)
def test_select_gmm_options_are_checked_before_the_sweep(files, args, needles):
    out = _refused(["select", "gmm", files["missing"], "-k", "1-3", *args], *needles)
    assert "cv_loglik" not in out and "cv=K" not in out


def test_select_hmm_criterion_names_the_options(files):
    _refused(
        ["select", "hmm", files["missing"], "-k", "1-2", "--criterion", "heldout"],
        "--criterion heldout",
        "--cv",
    )


# ---------------------------------------------------------------------- --columns
@pytest.mark.parametrize(
    ("value", "needle"),
    [("a,a", "more than once"), ("", "empty column name"), (",", "empty column name")],
)
def test_columns_empty_or_twice_is_refused(files, value, needle):
    _refused(["score", files["model"], files["data"], "--columns", value], "--columns", needle)
    _refused(["fit", "gmm", files["data"], "-k", "2", "--columns", value], "--columns", needle)


# ---------------------------------------------------------------------- fit vae
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--beta", "nan"], ["--beta", "nan"]),
        (["--beta", "inf"], ["--beta", "inf"]),
        (["--free-bits", "nan"], ["--free-bits", "nan"]),
        (["--free-bits", "inf"], ["--free-bits", "inf"]),
        (["--warmup-epochs", "nan"], ["--warmup-epochs", "nan"]),
        (["--lr", "inf"], ["--lr", "inf"]),
        (["--lr", "0"], ["--lr", "greater than 0"]),
        (["--hidden", "8,,8"], ["--hidden '8,,8'", "empty size"]),
        (["--latent", "0"], ["--latent takes a whole number of at least 1; got 0"]),
        (["--patience", "-1"], ["--patience takes a whole number of at least 0; got -1"]),
        (["--kl-schedule", "bogus"], ["--kl-schedule", "'bogus'"]),
        (["--objective", "bogus"], ["--objective", "'bogus'"]),
        (["--kind", "ladder", "--flow", "planar"], ["--flow planar", "--kind ladder"]),
    ],
)
def test_fit_vae_options_are_named_before_the_data_are_read(files, tmp_path, args, needles):
    out = _refused(
        ["fit", "vae", "--dataset", files["missing"], "--out", tmp_path / "v.lf", *args],
        *needles,
    )
    for internal in ("ModelSpec(", "TrainConfig", "image_shape="):
        assert internal not in out
    assert not (tmp_path / "v.lf").exists()


def test_fit_vae_conv_on_a_table_names_the_option(files, tmp_path):
    out = _refused(
        [
            "fit",
            "vae",
            "--dataset",
            files["data"],
            "--likelihood",
            "gaussian",
            "--network",
            "conv",
            "--out",
            tmp_path / "v.lf",
        ],
        "--network conv",
        "--network mlp",
    )
    assert "image_shape=" not in out


def test_fit_vae_network_too_large_is_refused_before_it_is_built(files, tmp_path):
    _refused(
        [
            "fit",
            "vae",
            "--dataset",
            files["data"],
            "--likelihood",
            "gaussian",
            "--hidden",
            "1000000000",
            "--out",
            tmp_path / "v.lf",
        ],
        "--hidden 1000000000",
        "would need",
    )


# ---------------------------------------------------------------------- other float options
@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["fit", "gmm", "{missing}", "-k", "2"], "--tol"),
        (["fit", "hmm", "{missing}", "-k", "2"], "--tol"),
        (["fit", "hmm", "{missing}", "-k", "2", "--variational"], "--tol"),
        (["fit", "bgmm", "{missing}", "-k", "2"], "--tol"),
        (["select", "hmm", "{missing}", "-k", "1-2"], "--tol"),
        (["fit", "dist", "{missing}", "-f", "normal"], "--level"),
        (["fit", "flow", "--dataset", "{missing}"], "--lr"),
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_float_options_refuse_nan_and_inf(files, command, option, value):
    args = [a.format(**files) for a in command]
    _refused([*args, option, value], f"error: {option} must be a finite number; got {value}")


# ---------------------------------------------------------------------- hmm inputs
def test_a_huge_length_names_its_line(files):
    _refused(
        [
            "fit",
            "hmm",
            files["data"],
            "-k",
            "2",
            "--lengths",
            files["lengths"],
            "--states",
            files["data"].with_name("s1.csv"),
        ],
        "--lengths",
        "line 2",
        "too large",
    )


def test_online_burn_in_that_leaves_no_m_step_is_refused(files):
    out = _refused(
        [
            "fit",
            "hmm",
            files["data"],
            "-k",
            "2",
            "--online",
            "--quiet",
            "--states",
            files["data"].with_name("s2.csv"),
        ],
        "--burn-in 100",
        "no M-step",
    )
    assert "saved" not in out
    res = runner.invoke(
        app,
        [
            "fit",
            "hmm",
            str(files["data"]),
            "-k",
            "2",
            "--online",
            "--quiet",
            "--burn-in",
            "10",
            "--states",
            str(files["data"].with_name("s3.csv")),
        ],
    )
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("stream", ["64", "0"], ids=["read", "streamed"])
@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_delimiter_for_a_binary_data_file_is_refused(tmp_path, monkeypatch, suffix, stream):
    """`fit gmm data.npy --delimiter ';'` fitted the file as if the option were not there."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    X = np.random.default_rng(0).normal(size=(30, 2))
    if suffix == ".npy":
        np.save("data.npy", X)
    else:
        pd.DataFrame(X, columns=["a", "b"]).to_parquet("data.parquet")
    args = ["fit", "gmm", f"data{suffix}", "-k", "1", "--stream-above", stream]
    _refused([*args, "--delimiter", ";"], f"data{suffix} is a {suffix} file", "--delimiter")
    _refused([*args, "--header"], f"data{suffix} is a {suffix} file", "--header")


# ------------------------------------------------- every word-valued option, before the data
def _word_options():
    """(command path, option) for every option of every command that takes a word (a str):
    the choices (--covariance, --init, --missing, --prior of fit bgmm, --flow, --read-as, ...)
    and the free ones (--delimiter, --device)."""
    import typer

    def walk(cmd, path):
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, (*path, name))
        if not getattr(cmd, "commands", None):
            for p in cmd.params:
                if p.param_type_name == "option" and p.bare_type() in ("str", "list[str]"):
                    yield path, cmd, p.opts[0]

    return list(walk(typer.main.get_command(app), ()))


#: Options whose value can only be judged against what a file holds: the data's column names,
#: the bundled set or data file that --dataset names, and what the saved model is (--algorithm
#: is for HMMs, --image-shape for VAEs)
_JUDGED_BY_A_FILE = {"--columns", "--column", "--dataset", "--algorithm", "--image-shape"}
WORD_OPTIONS = [w for w in _word_options() if w[2] not in _JUDGED_BY_A_FILE]


@pytest.mark.parametrize(
    ("path", "cmd", "option"),
    WORD_OPTIONS,
    ids=[f"{' '.join(p)} {o}" for p, _, o in WORD_OPTIONS],
)
def test_a_word_no_option_takes_is_refused_before_any_file_is_read(tmp_path, path, cmd, option):
    """A value no option takes ('zzz') is named before DATA or MODEL is opened: the file here
    does not exist, so an error about it means the value went unjudged until the data were
    read (fit gmm/bgmm/mixture/fa/ppca --covariance, --init, --missing, --prior; fit flow
    --flow; fit ssm: all after a whole DATA file was read), or was not judged at all (a
    --delimiter beside a bundled data set; select fa --covariance, which only gmm sweeps)."""
    names = {p.name for p in cmd.params}
    args = [*path] + ["missing.csv" for p in cmd.params if p.param_type_name == "argument"]
    if "k" in names and option != "-k":
        args += ["-k", "2"]
    if path == ("fit", "dist") and option != "--family":
        args += ["-f", "normal"]
    if path == ("fit", "mixture") and option != "--family":
        args += ["-f", "poisson"]
    if "dataset" in names and not any(p.param_type_name == "argument" for p in cmd.params):
        args += ["--dataset", str(tmp_path / "missing.csv")]  # not the bundled default
    res = runner.invoke(app, [*args, option, "zzz"], catch_exceptions=False)
    out = _flat(res.output)
    assert res.exit_code == 2, out
    assert "no data file" not in out and "no model file" not in out, out
    assert option in out or "zzz" in out, out
