"""``latentfit predict | score | show | sample MODEL``: use a saved model of any kind.

Every command reads a model file with :func:`latentfit.load` (mixtures, BGMM, FA/PPCA, HMMs,
flows, DDPM and VAEs share one format) and acts by the model's kind
(:func:`latentfit.io.model_kind`): a mixture predicts labels and responsibilities, an HMM
(HSMMs and AR-HMMs included) states and posteriors (its data cut into sequences by
``--lengths``, as ``fit hmm`` takes them), a linear-Gaussian state-space model, FA/PPCA and
VAEs the posterior mean of their latent variables; every kind scores rows and draws samples. Data columns are matched by name to the columns the model was fitted on
when both the model and the file carry names.

The commands live in :mod:`~latentfit.cli.predict`, :mod:`~latentfit.cli.score`,
:mod:`~latentfit.cli.show` and :mod:`~latentfit.cli.sample`, what they share in
:mod:`~latentfit.cli.model_data` (the model file and the data it reads) and
:mod:`~latentfit.cli.tables` (the CSV they write). This module registers the four commands, in
the order ``latentfit --help`` lists them, and re-exports the public names other modules
imported from here before the split.
"""

from __future__ import annotations

from latentfit.cli.app import app
from latentfit.cli.model_data import (
    SEQUENCE_KINDS,
    command_kind,
    header_names,
    load_model,
    model_columns,
    n_columns,
    read_model_data,
    reads_symbols,
    record_columns,
    takes_nan,
)
from latentfit.cli.predict import predict
from latentfit.cli.sample import draw, sample
from latentfit.cli.score import hmm_row_scores, hsmm_row_scores, score
from latentfit.cli.show import model_parameters, parameter_text, show
from latentfit.cli.tables import table_text, write_labels, write_table

__all__ = [
    "SEQUENCE_KINDS",
    "command_kind",
    "draw",
    "header_names",
    "hmm_row_scores",
    "hsmm_row_scores",
    "load_model",
    "model_columns",
    "model_parameters",
    "n_columns",
    "parameter_text",
    "predict",
    "read_model_data",
    "reads_symbols",
    "record_columns",
    "sample",
    "score",
    "show",
    "table_text",
    "takes_nan",
    "write_labels",
    "write_table",
]

app.command("predict")(predict)
app.command("score")(score)
app.command("show")(show)
app.command("sample")(sample)
