"""``latentfit predict MODEL DATA``: label rows with a saved model (components, states or
latent means); registered as ``latentfit predict`` by :mod:`latentfit.cli.models`."""

from __future__ import annotations

from pathlib import Path

import typer

from latentfit.cli.app import (
    check_device,
    check_outputs,
    cli_words,
    csv_output_option,
    delimiter_option,
    fail,
    force_option,
    header_option,
    written_together,
)
from latentfit.cli.hmm_options import device_option
from latentfit.cli.model_data import _lengths, load_model, read_model_data, vae_generator
from latentfit.cli.output import check_json_size, json_option, print_json
from latentfit.cli.tables import write_table

#: What ``predict`` writes for each kind: (the column of ``predict``, the prefix of the
#: ``--proba`` columns); None where the kind has no such output.
_PREDICT = {
    "mixture": ("label", "component_"),
    "hmm": ("state", "state_"),
    "ssm": (None, None),
    "factor": (None, None),
    "vae": (None, None),
    "density": (None, None),
}


def _split_columns(a, prefix: str) -> tuple[list[str], list]:
    import numpy as np

    a = np.asarray(a)
    a = a.reshape(len(a), -1)
    return [f"{prefix}{j}" for j in range(a.shape[1])], [a[:, j] for j in range(a.shape[1])]


# ---------------------------------------------------------------------- predict
def predict(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A model file (latentfit fit ... --out)."
    ),
    data: Path = typer.Argument(
        ..., metavar="DATA", help="CSV, .npy, .npz or Parquet file of rows to label."
    ),
    proba: bool = typer.Option(
        False,
        "--proba/--no-proba",
        help="Responsibilities (mixtures) or posterior state probabilities (HMMs) instead of "
        "the most probable component or state.",
    ),
    lengths: Path | None = typer.Option(
        None,
        "--lengths",
        help="HMMs and state-space models: text file of sequence lengths, as 'fit hmm' takes it.",
    ),
    algorithm: str | None = typer.Option(
        None, help="HMMs: viterbi or map (default: the model's own setting)."
    ),
    columns: str | None = typer.Option(
        None, help="Comma-separated columns to use (default: the model's columns by name, or all)."
    ),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    out: Path | None = csv_output_option(
        None, "--out", help="CSV file to write (default: standard output)."
    ),
    device: str = device_option(),
    force: bool = force_option(),
    as_json: bool = json_option(),
):
    """Label rows with a saved model (components, states or latent means).

    Mixtures give each row's most probable component, HMMs its state (--proba: their
    probabilities); FA/PPCA and VAEs the posterior mean of their latent variables (a
    Monte-Carlo mean for a VAE with a flow posterior and for the ladder VAE's lower layer)."""
    import numpy as np

    check_device(device)
    check_outputs([(out, "--out")], [model_path, data, lengths], force=force)
    model, kind = load_model(model_path, device)
    if kind == "density":
        fail(
            f"a {type(model).__name__} has no hidden variable to predict; use 'latentfit score' "
            "for log p(x) or 'latentfit sample' to draw from it"
        )
    if algorithm is not None and (kind != "hmm" or algorithm not in ("viterbi", "map")):
        fail(
            "--algorithm takes viterbi or map, for HMMs"
            + ("" if kind == "hmm" else f"; {model_path} holds a {type(model).__name__}")
        )
    seq = _lengths(model, kind, lengths)
    X = read_model_data(model, kind, data, columns, delimiter, header)
    label, prefix = _PREDICT[kind]
    try:
        if kind in ("factor", "vae", "ssm"):
            if proba:
                fail(
                    f"--proba gives component or state probabilities; a {type(model).__name__} "
                    "has continuous latent variables (predict writes their posterior means)"
                )
            if kind == "factor":
                values = model.transform(X)
            elif kind == "ssm":
                values = model.predict(X, seq)  # the smoothed state means
            else:
                import torch

                from latentfit.vae.likelihoods import check_model_data

                # rows off the likelihood's support (a Bernoulli VAE given raw values) have
                # no posterior under it, though the encoder maps them: 'score' refuses them too
                check_model_data(model, X, str(data))
                with torch.no_grad():
                    gen = vae_generator(model, 0)
                    values = model.posterior_mean(X.to(gen.device), generator=gen)
                values = values.cpu().numpy()
            header, cols = _split_columns(values, "z_")
        elif proba:
            values = model.predict_proba(X, seq) if kind == "hmm" else model.predict_proba(X)
            header, cols = _split_columns(values, prefix)
        else:
            if kind == "hmm":
                values = model.decode(X, seq, algorithm=algorithm)[1]
            else:
                values = model.predict(X)
            header, cols = [label], [np.asarray(values)]
    except (ValueError, FloatingPointError) as err:
        fail(cli_words(str(err), str(data)))
    if as_json:
        check_json_size(
            int(np.asarray(values).size),
            f"{len(cols[0]):,} rows of {len(header)} column(s)",
            hint="write them with --out FILE.csv instead of --json",
        )
    if out is not None or not as_json:
        with written_together([(out, "--out")], [model_path, data, lengths], force):
            write_table(out, header, cols)
    if as_json:  # once --out is written: a summary on stdout says the command succeeded
        print_json(
            {
                "model": str(model_path),
                "class": type(model).__name__,
                "kind": kind,
                "columns": header,
                "values": values,
            }
        )
    if out is not None and not as_json:
        typer.echo(f"{len(cols[0])} rows of {', '.join(header[:3])}{'...' * (len(header) > 3)} "
                   f"written to {out}")  # fmt: skip
