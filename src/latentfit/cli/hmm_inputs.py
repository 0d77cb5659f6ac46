"""What a hidden-state sequence command reads: the rows of DATA (or --dataset) and the
sequence lengths of --lengths, and where its decoded states go by default."""

from __future__ import annotations

from pathlib import Path

from latentfit.cli.app import data_source, fail, load_data


def states_target(states: Path | None, data: Path | None, dataset: str | None) -> Path:
    """--states, or DATA_states.csv in the current folder (s.csv.gz: s_states.csv)."""
    from latentfit.datasets._files import file_stem

    stem = file_stem(data) if data is not None else dataset
    return states if states is not None else Path(f"{stem}_states.csv")


def read_series(
    data,
    columns,
    dataset,
    delimiter,
    emission: str,
    missing: str = "error",
    header=None,
    variational: bool = False,
):
    """The rows of DATA or --dataset as a (n, d) array; whole-number symbols (int64) in one
    column for categorical emissions. A NaN is told what takes it: --missing marginalize
    with Gaussian emissions fitted by EM (``variational``: the VB fit, which takes none)."""
    import numpy as np

    name = data_source(data, dataset)
    X = load_data(
        data,
        columns,
        dataset=dataset,
        delimiter=delimiter,
        header=header,
        allow_nan=missing == "marginalize",
        # only Gaussian emissions take --missing marginalize (check_missing)
        nan_advice=(
            "fit them with --missing marginalize and without --variational (the variational "
            "HMMs take no missing values)"
            if variational
            else None
            if emission == "gaussian"
            else f"fit them with --emission gaussian --missing marginalize ({emission} "
            "emissions take no missing values)"
        ),
    ).numpy()
    if emission == "categorical":
        if X.shape[1] != 1:
            fail(f"categorical emissions need one column of symbols; {name} has {X.shape[1]}")
        bad = np.flatnonzero((X[:, 0] != np.round(X[:, 0])) | (X[:, 0] < 0))
        if len(bad):
            fail(
                "categorical emissions need whole-number symbols 0, 1, 2, ...; row "
                f"{bad[0]} holds {X[bad[0], 0]:g}"
            )
        X = X.astype(np.int64)
    return X


def read_lengths(path: Path) -> list[int]:
    """Sequence lengths from a text file: integers separated by newlines, commas or spaces."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        fail(f"the lengths file {path} is not a text file of whole numbers")
    except OSError as err:
        fail(f"cannot read the lengths file {path}: {err.strerror or err}")
    tokens = text.replace(",", " ").split()
    try:
        values = [int(t) for t in tokens]
    except ValueError:
        fail(f"{path} must hold whole numbers (one sequence length each); got {tokens[:5]}")
    if not values:
        fail(f"{path} holds no sequence lengths")
    huge = next((v for v in values if abs(v) > 2**63 - 1), None)
    if huge is not None:  # numpy would hold it as an object, not a length
        line = next(
            i
            for i, row in enumerate(text.splitlines(), 1)
            if str(huge) in row.replace(",", " ").split()
        )
        fail(
            f"--lengths {path}, line {line}: the length {huge} is too large (a sequence length "
            "is a number of rows of DATA); check the file"
        )
    return values
