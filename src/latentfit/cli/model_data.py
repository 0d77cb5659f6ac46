"""A saved model and the data it reads: the model file loaded and its kind, the names and
number of the columns it was fitted on (recorded by the ``fit`` commands), and the rows of a
data file matched to them; ``--lengths`` for sequence models."""

from __future__ import annotations

from pathlib import Path

from latentfit.cli.app import fail

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


def load_model(path: Path, device: str | None = None):
    """(model, kind) from a model file, on ``device`` (None: the file's); ModelFileError and a
    missing file as CLI errors."""
    from latentfit.io import load

    try:
        model = load(path, device=device)
    except (ValueError, FileNotFoundError) as err:  # ModelFileError, ResourceLimitError
        fail(str(err))
    return model, command_kind(model)


def vae_generator(model, seed: int):
    """A torch generator seeded with ``seed`` on the device of a VAE's weights, where its
    draws are made (a CPU generator cannot drive a CUDA network's)."""
    import torch

    return torch.Generator(next(model.parameters()).device).manual_seed(seed)


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


def header_names(
    path: Path, delimiter: str | None = None, header: bool | None = None
) -> list[str] | None:
    """The column names of a data file as the reader sees them (a header, a ``#`` comment
    line or a Parquet schema), or None when it names none; see
    :func:`latentfit.datasets.column_names`."""
    from latentfit.datasets import column_names

    return column_names(path, delimiter, header)


def record_columns(
    model,
    data: Path | None,
    columns: list[str] | None,
    delimiter: str | None = None,
    dataset: str | None = None,
    header: bool | None = None,
) -> None:
    """Give a model fitted from the command line the names of its data columns (stored in its
    file, shown by ``latentfit show`` and matched by ``predict``/``score``): the file's
    header, or the bundled ``dataset``'s feature names."""
    import numpy as np

    if data is not None:
        names = header_names(data, delimiter, header)
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


def read_model_data(
    model,
    kind: str,
    data: Path,
    columns: str | None,
    delimiter: str | None = None,
    header: bool | None = None,
):
    """The rows of ``data`` for ``model`` as a (n, d) tensor: ``--columns`` when given, else
    the model's own columns by name when both carry names, else every column; a text file is
    read with ``--delimiter`` and ``--header`` (None: sniffed)."""
    import numpy as np

    from latentfit.cli.app import load_data, split_columns

    cols = split_columns(columns)
    fitted = model_columns(model, kind)
    if cols is None and fitted is not None:
        names = header_names(data, delimiter, header)
        if names is not None:
            missing = [c for c in fitted if c not in names]
            if missing:
                fail(
                    f"{data} lacks the column(s) {missing} the model was fitted on (it has "
                    f"{names}); rename them or pick the columns with --columns"
                )
            cols = fitted
    X = load_data(data, cols, allow_nan=takes_nan(model, kind), delimiter=delimiter, header=header)
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
    if kind == "vae":  # a categorical VAE fitted to integer codes reads codes
        from latentfit.cli.app import cli_words
        from latentfit.cli.vae import from_codes

        X = from_codes(model, X, lambda text: cli_words(text, str(data)))
    return in_model_dtype(X, model_dtype(model, kind), data.name, takes_nan(model, kind))


def model_dtype(model, kind: str):
    """The torch dtype the model computes in: a VAE's weights', else its ``dtype`` setting
    (float64 where it has none)."""
    from latentfit._validation import resolve_dtype

    if kind == "vae":
        return next(model.parameters()).dtype
    return resolve_dtype(getattr(model, "dtype", None))


def in_model_dtype(X, dtype, name: str, allow_nan: bool = False):
    """Rows read from a file (float64) in the model's ``dtype``. A value beyond a float32
    model's range is named here, with the one advice a command line can follow: no command
    sets a loaded model's dtype, so rescaling, not ``dtype=float64``."""
    import torch

    from latentfit._validation import as_float_tensor

    if dtype == torch.float64:
        return X
    try:
        return as_float_tensor(
            X, name=name, dtype=dtype, ndim=None, allow_nan=allow_nan, float64_option=None
        )
    except ValueError as err:  # DataError
        fail(str(err))


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
