"""The options every hidden-state sequence command shares (``fit hmm``, ``fit hsmm``,
``fit arhmm``, ``fit ssm``, ``select hmm``) and the checks of their values.

Each factory returns a fresh ``typer.Option``: typer reads the options from every command's
own signature, so a command names each one there."""

from __future__ import annotations

import typer

from latentfit.cli.app import csv_output_option, fail, output_option
from latentfit.cli.figures import plot_option

ALGORITHMS = ("viterbi", "map")
COVARIANCES = ("full", "tied", "diag", "spherical")
MISSING = ("error", "marginalize")


# ---------------------------------------------------------------------- shared options
def components_option():
    """``-k/--components``: the number of hidden states."""
    return typer.Option(..., "-k", "--components", min=1, help="Number of hidden states.")


def lengths_option():
    """``--lengths FILE``: how the rows of DATA are cut into sequences."""
    return typer.Option(
        None, "--lengths", help="Text file of sequence lengths (rows per sequence, in order)."
    )


def emission_option(names: tuple[str, ...]):
    """``--emission``: the law of an observation given its state."""
    return typer.Option("gaussian", help=f"{', '.join(names[:-1])} or {names[-1]}.")


def covariance_option():
    """``--covariance``: the covariance type of Gaussian emissions."""
    return typer.Option("diag", help="full, tied, diag or spherical (Gaussian).")


#: The most EM iterations of a state-space model from the command line (fit ssm, select hmm
#: --model ssm): its EM creeps, and stops by Aitken's estimate (LinearGaussianSSM), often
#: after 1,000-2,000 iterations of ~1 ms.
SSM_N_ITER = 2000


def n_iter_option(what: str = "Baum-Welch", default: int = 100):
    """``--n-iter``/``--max-iter``: the most EM iterations of one restart."""
    return typer.Option(
        default, "--n-iter", "--max-iter", min=1, help=f"Most {what} iterations (n_iter)."
    )


def tol_option(what: str = "log-likelihood", rule: str | None = None):
    """``--tol``: the gain of log-likelihood (or of another objective) below which EM stops;
    ``rule``, the help's words where the model stops by another rule."""
    from latentfit.cli.app import finite_number

    return typer.Option(
        1e-2, callback=finite_number, help=rule or f"Stop when the {what} gains less than this."
    )


def n_init_option():
    """``--n-init``: EM restarts."""
    return typer.Option(1, "--n-init", min=1, help="EM restarts; the best is kept.")


def algorithm_option():
    """``--algorithm``: how the states are decoded."""
    return typer.Option("viterbi", help="viterbi (best path) or map (best states).")


def missing_option():
    """``--missing``: what NaN cells mean to Gaussian emissions."""
    return typer.Option(
        "error",
        help="error, or marginalize to fit, score and decode rows with NaNs (gaussian emissions).",
    )


def columns_option():
    """``--columns``: the columns of DATA to use."""
    return typer.Option(None, help="Comma-separated columns to use (default: all).")


def seed_option():
    """``--seed``: the seed of the initialisation (0 to 2**32 - 1, checked on reading)."""
    from latentfit.cli.app import seed_option as option

    return option("Seed for the initialisation.")


def states_option(what: str = "decoded states"):
    """``--states FILE``: where the per-row states go."""
    return csv_output_option(
        None,
        "--states",
        help=f"Where to write the {what} (default: DATA_states.csv in the current folder, "
        "e.g. s_states.csv for s.csv).",
    )


def out_option():
    """``--out FILE``: the model file to write."""
    return output_option(None, "--out", help="Save the fitted model to this file.")


def quiet_option():
    """``--quiet``: no progress bar."""
    return typer.Option(False, "--quiet/--no-quiet", help="No progress bar.")


def device_option():
    """``--device``: the torch device of the fit."""
    return typer.Option("cpu", help="torch device: cpu, cuda, cuda:1, ...")


def states_plot_option():
    """``--plot FILE``: the series coloured by decoded state."""
    return plot_option("every column over time, coloured by decoded state")


# ---------------------------------------------------------------------- checks of their values
def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse a value of ``option`` outside ``choices``, naming them."""
    if value not in choices:
        fail(f"{option} must be one of {', '.join(choices)}; got {value!r}")


def check_missing(missing: str, emission: str) -> None:
    check_choice("--missing", missing, MISSING)
    if missing == "marginalize" and emission != "gaussian":
        fail(f"--missing marginalize needs --emission gaussian; {emission} emissions take no NaN")
