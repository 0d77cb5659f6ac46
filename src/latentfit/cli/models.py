"""``latentfit predict | score | show | sample MODEL``: use a saved model of any kind.

Every command reads a model file with :func:`latentfit.load` (mixtures, BGMM, FA/PPCA, HMMs,
flows, DDPM and VAEs share one format) and acts by the model's kind
(:func:`latentfit.io.model_kind`): a mixture predicts labels and responsibilities, an HMM
(HSMMs and AR-HMMs included) states and posteriors (its data cut into sequences by
``--lengths``, as ``fit hmm`` takes them), a linear-Gaussian state-space model, FA/PPCA and
VAEs the posterior mean of their latent variables; every kind scores rows and draws samples. Data columns are matched by name to the columns the model was fitted on
when both the model and the file carry names.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from latentfit.cli.app import app, check_outputs, fail, force_option
from latentfit.cli.output import json_option, print_json
from latentfit.cli.vae import _NOT_K, _refuse_k

if TYPE_CHECKING:
    import numpy as np

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


#: Kinds whose rows are cut into sequences by ``--lengths``.
SEQUENCE_KINDS = ("hmm", "ssm")


def reads_symbols(model) -> bool:
    """Whether the model reads one column of whole-number symbols (its n_features counts the
    symbols): the categorical HMMs and HSMMs, the variational one included."""
    from latentfit import CategoricalHMM, CategoricalHSMM

    return isinstance(model, CategoricalHMM | CategoricalHSMM)


# ---------------------------------------------------------------------- models and data
def command_kind(model) -> str:
    """The kind the commands act by: :func:`latentfit.io.model_kind`, with ``"ssm"`` for a
    linear-Gaussian state-space model (whose file calls it a density: it has no discrete
    state, but it does have a latent one, smoothed by ``predict``, and sequences)."""
    from latentfit.em.ssm import LinearGaussianSSM
    from latentfit.io import model_kind

    return "ssm" if isinstance(model, LinearGaussianSSM) else model_kind(model)


def load_model(path: Path):
    """(model, kind) from a model file; ModelFileError and a missing file as CLI errors."""
    from latentfit.io import load

    try:
        model = load(path)
    except (ValueError, FileNotFoundError) as err:  # ModelFileError, ResourceLimitError
        fail(str(err))
    return model, command_kind(model)


def model_columns(model, kind: str) -> list[str] | None:
    """The names of the columns the model was fitted on, or None when it has none."""
    names = getattr(model, "feature_names" if kind == "vae" else "feature_names_in_", None)
    return None if names is None else [str(c) for c in names]


def n_columns(model, kind: str) -> int | None:
    import numpy as np

    if kind == "vae":
        return int(model.spec.x_dim)
    if reads_symbols(model):
        return 1  # one column of symbols (its n_features counts the symbols)
    for name in ("n_features_in_", "n_features"):
        value = getattr(model, name, None)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
    return None


def header_names(path: Path, delimiter: str | None = None) -> list[str] | None:
    """The column names of a data file as the reader sees them (a header, a ``#`` comment
    line or a Parquet schema), or None when it names none; see
    :func:`latentfit.datasets.column_names`."""
    from latentfit.datasets import column_names

    return column_names(path, delimiter)


def record_columns(
    model,
    data: Path | None,
    columns: list[str] | None,
    delimiter: str | None = None,
    dataset: str | None = None,
) -> None:
    """Give a model fitted from the command line the names of its data columns (stored in its
    file, shown by ``latentfit show`` and matched by ``predict``/``score``): the file's
    header, or the bundled ``dataset``'s feature names."""
    import numpy as np

    if data is not None:
        names = header_names(data, delimiter)
    elif dataset is not None:
        from latentfit.datasets import load_dataset

        names = list(load_dataset(dataset).feature_names)
    else:
        names = None
    if names is None:
        return
    if columns:
        picked = []
        for c in columns:
            if c in names:
                picked.append(c)
            elif c.isdigit() and int(c) < len(names):
                picked.append(names[int(c)])
            else:
                return
        names = picked
    if len(names) == n_columns(model, "mixture") and len(set(names)) == len(names):
        model.feature_names_in_ = np.asarray(names, dtype=object)


def read_model_data(model, kind: str, data: Path, columns: str):
    """The rows of ``data`` for ``model`` as a (n, d) tensor: ``--columns`` when given, else
    the model's own columns by name when both carry names, else every column."""
    import numpy as np

    from latentfit.cli.app import load_data

    cols = [c for c in columns.split(",") if c] or None
    fitted = model_columns(model, kind)
    if cols is None and fitted is not None:
        names = header_names(data)
        if names is not None:
            missing = [c for c in fitted if c not in names]
            if missing:
                fail(
                    f"{data} lacks the column(s) {missing} the model was fitted on (it has "
                    f"{names}); rename them or pick the columns with --columns"
                )
            cols = fitted
    X = load_data(data, cols, allow_nan=takes_nan(model, kind))
    d = n_columns(model, kind)
    if d is not None and X.shape[1] != d:
        named = f" ({', '.join(fitted)})" if fitted else ""
        fail(
            f"the model was fitted on {d} column(s){named}; {data} gives {X.shape[1]}: pick "
            "them with --columns"
        )
    if reads_symbols(model):
        if not bool((X == X.round()).all()) or bool((X < 0).any()):
            fail(f"{data}: a {type(model).__name__} reads whole-number symbols 0, 1, 2, ...")
        return X.numpy().astype(np.int64)
    if kind == "vae":
        return X.to(next(model.parameters()).dtype)
    return X


def takes_nan(model, kind: str) -> bool:
    """Whether the model reads NaN cells as missing values (a state-space model, a Gaussian
    HMM or HSMM fitted with missing="marginalize")."""
    return kind == "ssm" or getattr(model, "missing", None) == "marginalize"


def _lengths(model, kind: str, lengths: Path | None):
    if lengths is None:
        return None
    if kind not in SEQUENCE_KINDS:
        fail(
            "--lengths cuts the rows of a sequence model's data into sequences (HMMs, HSMMs, "
            f"AR-HMMs, state-space models); a {type(model).__name__} has no sequences"
        )
    from latentfit.cli.hmm_inputs import read_lengths

    return read_lengths(lengths)


# ---------------------------------------------------------------------- writing tables
def _cell(v) -> str:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    return str(v)


def table_text(header: list[str], columns: list) -> str:
    """CSV text of the given columns (1-D arrays of equal length); floats are written in
    full (the shortest text that reads back as the same number)."""
    import numpy as np

    lists = [np.asarray(c).tolist() for c in columns]
    lines = [",".join(header)]
    lines += [",".join(_cell(v) for v in row) for row in zip(*lists, strict=True)]
    return "\n".join(lines) + "\n"


def write_table(out: Path | None, header: list[str], columns: list) -> None:
    """The table to ``out`` (atomically) or to standard output."""
    text = table_text(header, columns)
    if out is None:
        sys.stdout.write(text)
        return
    from latentfit.errors import LatentfitError
    from latentfit.io import atomic_path

    try:
        with atomic_path(out) as tmp:
            tmp.write_text(text)
    except (LatentfitError, OSError) as err:
        fail(str(err))


def write_labels(path: Path, labels) -> None:
    """``fit gmm|bgmm --labels``: the component of every row, one a line under ``label``."""
    import numpy as np

    write_table(path, ["label"], [np.asarray(labels)])
    typer.echo(f"labels written to {path}", err=True)  # stdout may carry --json or --csv


def _split_columns(a, prefix: str) -> tuple[list[str], list]:
    import numpy as np

    a = np.asarray(a)
    a = a.reshape(len(a), -1)
    return [f"{prefix}{j}" for j in range(a.shape[1])], [a[:, j] for j in range(a.shape[1])]


# ---------------------------------------------------------------------- predict
@app.command("predict")
def predict(
    model_path: Path = typer.Argument(..., help="A model file (latentfit fit ... --out)."),
    data: Path = typer.Argument(..., help="CSV, .npy, .npz or Parquet file of rows to label."),
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
    columns: str = typer.Option(
        "", help="Comma-separated columns to use (default: the model's columns by name, or all)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="CSV file to write (default: standard output)."
    ),
    force: bool = force_option(),
    as_json: bool = json_option(),
):
    """Label rows with a saved model (components, states or latent means).

    Mixtures give each row's most probable component, HMMs its state (--proba: their
    probabilities); FA/PPCA and VAEs the posterior mean of their latent variables."""
    import numpy as np

    check_outputs([(out, "--out")], [model_path, data, lengths], force=force)
    model, kind = load_model(model_path)
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
    X = read_model_data(model, kind, data, columns)
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

                with torch.no_grad():
                    values = model.posterior_mean(X, generator=torch.Generator().manual_seed(0))
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
        fail(str(err))
    if as_json:
        print_json(
            {
                "model": str(model_path),
                "class": type(model).__name__,
                "kind": kind,
                "columns": header,
                "values": values,
            }
        )
    if out is not None or not as_json:
        write_table(out, header, cols)
    if out is not None and not as_json:
        typer.echo(f"{len(cols[0])} rows of {', '.join(header[:3])}{'...' * (len(header) > 3)} "
                   f"written to {out}")  # fmt: skip


# ---------------------------------------------------------------------- score
def hmm_row_scores(model, X, lengths):
    """log p(x_t | x_1..x_{t-1}) of every step (t,) and log p of every sequence: the forward
    filter's normalisers, which sum to the model's ``score`` within each sequence."""
    from latentfit.em.hmm.inference import posterior as inference
    from latentfit.em.hsmm.base import HSMMMixin

    if isinstance(model, HSMMMixin):
        return hsmm_row_scores(model, X, lengths)
    params, X, lengths, _ = model._prepare(X, lengths)
    ll = model._emission_log_likelihood(params, X)
    fwd = inference.forward_filter(ll, params["startprob"], params["transmat"], lengths)
    return fwd.log_normalizers.cpu().numpy(), fwd.sequence_log_likelihoods.cpu().numpy()


def hsmm_row_scores(model, X, lengths):
    """:func:`hmm_row_scores` of a hidden semi-Markov model, from its forward messages over
    (state, elapsed steps) (:func:`latentfit.em.hsmm.inference.hsmm_forward`): the prefix
    likelihood log p(x_1..x_t) is their log-sum at t (the segment in progress counts with
    its survival, as a censored last segment does), and every step scores the difference
    of two prefixes. Without right-censoring the sequence must end with a segment: its last
    step takes what that adds, so the steps still sum to the sequence's log-likelihood."""
    import numpy as np
    import torch

    from latentfit.em.hsmm import inference

    params, X, lengths, _ = model._prepare(X, lengths)
    model._check_messages(lengths)  # refuses messages that do not fit in memory
    ll, log_start, log_trans, terms = model._inference_args(
        params, model._emission_log_likelihood(params, X)
    )
    rows, seqs, start = [], [], 0
    for n in lengths:
        alpha, leave = inference.hsmm_forward(ll[start : start + n], log_start, log_trans, terms)
        prefix = torch.logsumexp(alpha.reshape(n, -1), 1)  # (n,) log p(x_1..x_t)
        total = prefix[-1] if model.right_censoring else torch.logsumexp(leave[-1], 0)
        seqs.append(total)
        ends = torch.cat([prefix[:-1], total.reshape(1)])  # log p(x_1..x_t), the last as scored
        rows.append(torch.diff(ends, prepend=ends.new_zeros(1)))
        start += n
    per_seq = torch.stack(seqs)
    model._impossible(params, X, per_seq, lengths)  # a sequence of probability zero: named
    return torch.cat(rows).cpu().numpy(), np.asarray(per_seq.cpu().numpy())


@app.command("score")
def score(
    model_path: Path = typer.Argument(..., help="A model file (latentfit fit ... --out)."),
    data: Path = typer.Argument(..., help="CSV, .npy, .npz or Parquet file of rows to score."),
    lengths: Path | None = typer.Option(
        None,
        "--lengths",
        help="HMMs and state-space models: text file of sequence lengths, as 'fit hmm' takes it.",
    ),
    columns: str = typer.Option(
        "", help="Comma-separated columns to use (default: the model's columns by name, or all)."
    ),
    per_row: Path | None = typer.Option(
        None, "--per-row", help="CSV file of the log-likelihood of every row."
    ),
    samples: int = typer.Option(
        1000, "--samples", min=1, help="VAEs: importance samples per row for log p(x)."
    ),
    old_k: int | None = _refuse_k(),
    seed: int = typer.Option(0, help="Seed of the VAE's importance samples."),
    force: bool = force_option(),
    as_json: bool = json_option(),
):
    """Log-likelihood of rows under a saved model, in total and per row.

    Per row: log p(x); HMMs: log p(x_t | the earlier steps of its sequence), which sums to
    the sequence's log-likelihood; VAEs: importance-sampled with --samples; DDPM: minus its
    bound."""
    import numpy as np

    if old_k is not None:
        fail(_NOT_K)
    check_outputs([(per_row, "--per-row")], [model_path, data, lengths], force=force)
    model, kind = load_model(model_path)
    seq = _lengths(model, kind, lengths)
    X = read_model_data(model, kind, data, columns)
    result: dict = {"model": str(model_path), "class": type(model).__name__, "kind": kind}
    try:
        if kind == "hmm":
            rows, seqs = hmm_row_scores(model, X, seq)
            result["sequence_log_likelihoods"] = seqs
        elif kind == "ssm":
            rows = np.asarray(model.score_samples(X, seq), dtype=np.float64)
            cuts = np.cumsum(seq if seq is not None else [len(rows)])[:-1]
            result["sequence_log_likelihoods"] = [float(r.sum()) for r in np.split(rows, cuts)]
        elif kind == "vae":
            import torch

            from latentfit.vae import marginal_log_likelihood

            ll = marginal_log_likelihood(
                model, X, k=samples, generator=torch.Generator().manual_seed(seed), progress=False
            )
            rows = ll.log_px.cpu().numpy()
        else:
            rows = np.asarray(model.score_samples(X), dtype=np.float64)
    except (ValueError, FloatingPointError) as err:
        fail(str(err))
    total = float(np.sum(rows, dtype=np.float64))
    result.update(n_rows=len(rows), total=total, mean=total / len(rows), per_row=rows)
    if per_row is not None:
        write_table(per_row, ["log_likelihood"], [rows])
    if as_json:
        print_json(result)
        return
    extra = f" in {len(seq)} sequences" if seq is not None else ""
    typer.echo(
        f"{type(model).__name__}: {len(rows)} rows{extra}: total log-likelihood {total:.6f}, "
        f"mean per row {total / len(rows):.6f}"
    )
    if per_row is not None:
        typer.echo(f"per-row log-likelihoods written to {per_row}")


# ---------------------------------------------------------------------- show
#: Fitted attributes that describe a run rather than the model: shown under "fit".
_RUN = ("converged_", "n_iter_", "lower_bound_", "best_init_", "elbo_", "n_components_")


def model_parameters(model, kind: str) -> dict:
    """Name → array of a model's fitted parameters (its public attributes ending in ``_``);
    for networks (flows, DDPM, VAEs) name → shape of every stored tensor instead."""
    import numpy as np
    import torch

    if kind == "vae":
        return {k: list(v.shape) for k, v in model.state_dict().items()}
    if kind == "density":
        return {k: list(v.shape) for k, v in model._get_state()[0].items()}
    out = {}
    names = [n for n in vars(model) if n.endswith("_") and not n.startswith("_")]
    if kind == "hmm" and hasattr(model, "_covars_"):
        names.append("covars_")
    for name in names:
        if name in _RUN or name == "feature_names_in_":
            continue
        value = getattr(model, name)
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            out[name] = value
        elif isinstance(value, float) and not isinstance(value, bool):
            out[name] = np.float64(value)
    return out


def _fmt_number(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _text_table(rows: list[str], cols: list[str], values: np.ndarray) -> list[str]:

    cells = [[_fmt_number(v) for v in row] for row in values.tolist()]
    width = max([len(c) for c in cols] + [len(c) for r in cells for c in r] + [1])
    label = max([len(r) for r in rows] + [1])
    lines = [" " * label + " " + " ".join(c.rjust(width) for c in cols)]
    lines += [r.ljust(label) + " " + " ".join(c.rjust(width) for c in row) for r, row in
              zip(rows, cells, strict=True)]  # fmt: skip
    return lines


#: Parameters whose last axis runs over components, states or symbols, never over columns.
_NOT_PER_COLUMN = (
    "weights_",
    "startprob_",
    "transmat_",
    "emissionprob_",
    "mean_precision_",
    "degrees_of_freedom_",
)


def parameter_text(
    name: str, value: np.ndarray, columns: list[str] | None, n_groups: int | None = None
) -> list[str]:
    """A parameter as tables: the last axis by column name when it runs over the data's
    columns, the others by component / state index (``n_groups``: their number)."""
    import numpy as np

    value = np.asarray(value)
    lines = [f"{name} {tuple(value.shape)}"]
    if value.ndim == 0:
        return [f"{name} = {_fmt_number(value.item())}"]
    d = value.shape[-1]
    per_column = (
        columns is not None
        and len(columns) == d
        and name not in _NOT_PER_COLUMN
        and (value.ndim > 1 or d != n_groups)
    )
    cols = columns if per_column else [str(j) for j in range(d)]
    if value.ndim == 1:
        return lines + ["  " + s for s in _text_table([""], cols, value[None])]
    if value.ndim == 2:
        square = per_column and value.shape[0] == d and ("covar" in name or "precision" in name)
        rows = cols if square else [str(i) for i in range(value.shape[0])]
        return lines + ["  " + s for s in _text_table(rows, cols, value)]
    lead = value.reshape(-1, *value.shape[-2:])
    rows_named = per_column and value.shape[-2] == d
    rows = cols if rows_named else [str(i) for i in range(value.shape[-2])]
    for i, block in enumerate(lead):
        index = np.unravel_index(i, value.shape[:-2])
        lines.append(f"  [{', '.join(str(int(j)) for j in index)}]")
        lines += ["    " + s for s in _text_table(rows, cols, block)]
    return lines


def _settings(model, kind: str, header: dict) -> dict:
    """The model's constructor arguments as loaded (a VAE: its spec)."""
    if kind == "vae":
        from dataclasses import asdict

        return asdict(model.spec)
    from latentfit.io import _jsonable

    return {k: _jsonable(v) for k, v in model.get_params(deep=False).items()}


@app.command("show")
def show(
    model_path: Path = typer.Argument(..., help="A model file (latentfit fit ... --out)."),
    as_json: bool = json_option(),
):
    """Show what a model file holds: kind, columns, settings, version and parameters.

    The parameters are tables with the column names (networks: the shape of every weight);
    the settings are the constructor arguments, the fit record its iterations and bound."""
    import numpy as np

    from latentfit.errors import LatentfitError
    from latentfit.io import read_header

    try:
        header = read_header(model_path)
    except (LatentfitError, FileNotFoundError) as err:
        fail(str(err))
    model, kind = load_model(model_path)
    columns = model_columns(model, kind)
    extra = dict(header.get("extra") or {})
    fit = {k: v for k, v in extra.items() if k != "feature_names_in_"}
    for name in _RUN:
        if name not in fit and hasattr(model, name) and not callable(getattr(model, name)):
            value = getattr(model, name)
            if isinstance(value, (bool, int, float, np.integer, np.floating)):
                fit[name] = value.item() if hasattr(value, "item") else value
    params = model_parameters(model, kind)
    networks = kind in ("vae", "density")
    result = {
        "model": str(model_path),
        "class": header.get("class"),
        "kind": kind,
        "latentfit_version": header.get("latentfit_version"),
        "format_version": header.get("format_version"),
        "feature_names": columns,
        "n_features": n_columns(model, kind),
        "settings": _settings(model, kind, header),
        "fit": fit,
        "split": header.get("split"),
        ("tensor_shapes" if networks else "parameters"): params,
    }
    if networks:
        result["n_parameters"] = int(sum(math.prod(s) for s in params.values()))
    if as_json:
        print_json(result)
        return
    echo = typer.echo
    echo(f"{result['class']} ({kind} model) in {model_path}")
    echo(
        f"written by latentfit {result['latentfit_version']}, model file format "
        f"{result['format_version']}"
    )
    echo(
        f"columns ({result['n_features']}): "
        + (", ".join(columns) if columns else "unnamed (fitted on an array without names)")
    )
    if result["split"]:
        s = result["split"]
        echo(f"data split: {s.get('source')}, {s.get('n_rows')} rows, seed {s.get('seed')}")
    echo("settings:")
    for key, value in (result["settings"] or {}).items():
        echo(f"  {key} = {value}")
    if fit:
        echo("fit:")
        for key, value in fit.items():
            text = value
            if isinstance(value, list) and len(value) > 6:
                text = f"[{', '.join(_fmt_number(v) for v in value[:3])}, ... ({len(value)})]"
            echo(f"  {key} = {text}")
    if networks:
        echo(f"weights ({result['n_parameters']:,} numbers):")
        for key, shape in params.items():
            echo(f"  {key} {tuple(shape)}")
        return
    echo("parameters:")
    for key, value in params.items():
        groups = getattr(model, "n_components", None)
        for line in parameter_text(
            key, value, columns, groups if isinstance(groups, int) else None
        ):
            echo(f"  {line}")


# ---------------------------------------------------------------------- sample
def _image_shape(model, text: str) -> tuple[int, ...]:
    from latentfit.cli.vae import _sizes

    d = model.spec.x_dim
    if text:
        shape = tuple(_sizes(text, "--image-shape", "28,28"))
    elif model.spec.image_shape:
        shape = tuple(model.spec.image_shape)
    else:
        side = math.isqrt(d)
        shape = (side, side) if side * side == d else (1, d)
    if math.prod(shape) != d:
        fail(f"--image-shape {shape} does not hold the model's {d} values")
    return shape


def draw(model, kind: str, n: int, seed: int):
    """(draws (n, d), labels (n,) or None, the labels' name): the draws of a saved model
    with ``seed``, exactly as the same calls on the model in memory give them."""
    import numpy as np
    import torch

    if kind == "vae":
        from latentfit.vae.images import sample_images

        return sample_images(model, n, torch.Generator().manual_seed(seed)).numpy(), None, None
    if kind in SEQUENCE_KINDS:  # an SSM's states are vectors: (n, k)
        X, states = model.sample(n, random_state=seed)
        return np.asarray(X), np.asarray(states), "state"
    if kind == "density":
        return np.asarray(model.sample(n, random_state=seed)), None, None
    model.set_params(random_state=seed)  # mixtures and FA/PPCA draw from their random_state
    out = model.sample(n)
    if isinstance(out, tuple):
        return np.asarray(out[0]), np.asarray(out[1]), "component"
    return np.asarray(out), None, None


@app.command("sample")
def sample(
    model_path: Path = typer.Argument(..., help="A model file (latentfit fit ... --out)."),
    n: int = typer.Option(64, "-n", "--n", min=1, help="Number of draws."),
    seed: int = typer.Option(0, help="Seed of the draws (the same seed gives the same draws)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help=".csv, .npy or (VAEs) .png image grid. Default: CSV on standard output; a VAE "
        "writes samples.png.",
    ),
    image_shape: str = typer.Option(
        "", "--image-shape", help="VAEs, .png: H,W (default: from the model, or square)."
    ),
    force: bool = force_option(),
    as_json: bool = json_option(),
):
    """Draw rows from a saved model of any kind, VAEs included.

    A mixture or HMM also gives each draw's component or state; a VAE the decoded means of
    z ~ p(z), written as an image grid (samples.png) unless --out names a .csv or .npy."""
    import numpy as np

    from latentfit.errors import LatentfitError
    from latentfit.io import read_header

    check_outputs([(out, "--out")], [model_path], force=force)
    if out is None and not as_json:
        try:
            is_vae = read_header(model_path).get("kind") == "vae"
        except (LatentfitError, FileNotFoundError) as err:
            fail(str(err))
        if is_vae:
            out = Path("samples.png")  # what 'latentfit sample' has always written for a VAE
            check_outputs([(out, "--out")], [model_path], force=force)
    if out is not None and out.suffix.lower() not in (".csv", ".npy", ".png"):
        fail(f"--out {out}: write .csv, .npy or (VAEs) .png")
    model, kind = load_model(model_path)
    if out is not None and out.suffix.lower() == ".png" and kind != "vae":
        fail(
            f"--out {out}: a .png grid is drawn for VAEs; write .csv or .npy for a "
            f"{type(model).__name__} (flows and DDPM: 'latentfit density sample')"
        )
    shape = _image_shape(model, image_shape) if kind == "vae" else None
    try:
        X, labels, label = draw(model, kind, n, seed)
    except (ValueError, FloatingPointError) as err:
        fail(str(err))
    names = model_columns(model, kind)
    X2 = X.reshape(len(X), -1)
    if names is None or len(names) != X2.shape[1]:
        names = [f"x{j}" for j in range(X2.shape[1])]
    if as_json:
        result = {"model": str(model_path), "class": type(model).__name__, "kind": kind}
        result.update(columns=names, samples=X2)
        if labels is not None:
            result[f"{label}s"] = labels
        print_json(result)
    suffix = out.suffix.lower() if out is not None else ".csv"
    if suffix == ".png":
        import torch

        from latentfit.vae.images import save_grid

        try:
            save_grid(out, torch.as_tensor(X2), shape, nrow=math.ceil(math.sqrt(n)))
        except (LatentfitError, OSError) as err:
            fail(str(err))
    elif suffix == ".npy":
        from latentfit.io import atomic_path

        try:
            with atomic_path(out) as tmp, tmp.open("wb") as f:
                np.save(f, X2)
        except (LatentfitError, OSError) as err:
            fail(str(err))
    elif out is not None or not as_json:
        cols = [X2[:, j] for j in range(X2.shape[1])]
        header = list(names)
        if labels is not None and labels.ndim == 2:  # continuous states, one column each
            cols += [labels[:, j] for j in range(labels.shape[1])]
            header += [f"{label}_{j}" for j in range(labels.shape[1])]
        elif labels is not None:
            cols.append(labels)
            header.append(label)
        write_table(out, header, cols)
    if out is not None and not as_json:
        typer.echo(f"{n} samples written to {out}")
