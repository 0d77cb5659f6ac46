"""``latentfit score MODEL DATA``: the log-likelihood of rows under a saved model, in total
and per row (per step of a sequence model); registered as ``latentfit score`` by
:mod:`latentfit.cli.models`."""

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
    max_work_option,
    seed_option,
    work_limit,
    written_together,
)
from latentfit.cli.hmm_options import device_option
from latentfit.cli.model_data import _lengths, load_model, read_model_data, vae_generator
from latentfit.cli.output import check_json_size, json_option, print_json
from latentfit.cli.tables import write_table
from latentfit.cli.vae import _NOT_K, _refuse_k, samples_words


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
    seqs = fwd.sequence_log_likelihoods
    # -inf as score gives it (a row no state can emit); refused where score refuses it
    model._check_possible(params, X, seqs.sum(), lengths, states=False)
    return fwd.log_normalizers.cpu().numpy(), seqs.cpu().numpy()


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
        step = torch.diff(ends, prepend=ends.new_zeros(1))
        # after a prefix of probability 0 (-inf - -inf): -inf, as the HMMs' filter gives it
        rows.append(torch.where(step.isnan(), -np.inf, step))
        start += n
    per_seq = torch.stack(seqs)
    # a sequence of probability zero scores -inf, as score gives it; refused where score
    # refuses it (a density that underflowed)
    model._check_possible(params, X, per_seq.sum(), lengths, states=False)
    return torch.cat(rows).cpu().numpy(), np.asarray(per_seq.cpu().numpy())


def score(
    model_path: Path = typer.Argument(
        ..., metavar="MODEL", help="A model file (latentfit fit ... --out)."
    ),
    data: Path = typer.Argument(
        ..., metavar="DATA", help="CSV, .npy, .npz or Parquet file of rows to score."
    ),
    lengths: Path | None = typer.Option(
        None,
        "--lengths",
        help="HMMs and state-space models: text file of sequence lengths, as 'fit hmm' takes it.",
    ),
    columns: str | None = typer.Option(
        None, help="Comma-separated columns to use (default: the model's columns by name, or all)."
    ),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    per_row: Path | None = csv_output_option(
        None, "--per-row", help="CSV file of the log-likelihood of every row."
    ),
    samples: int = typer.Option(
        1000, "--samples", min=1, help="VAEs: importance samples per row for log p(x)."
    ),
    old_k: int | None = _refuse_k(),
    seed: int = seed_option("Seed of the VAE's importance samples."),
    max_work: float = max_work_option("a VAE's importance samples"),
    device: str = device_option(),
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
    check_device(device)
    check_outputs([(per_row, "--per-row")], [model_path, data, lengths], force=force)
    model, kind = load_model(model_path, device)
    seq = _lengths(model, kind, lengths)
    X = read_model_data(model, kind, data, columns, delimiter, header)
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
            import sys

            from latentfit.vae import marginal_log_likelihood

            # a bar on a terminal: --samples sets the work (1e12 ran for hours without a word)
            ll = marginal_log_likelihood(
                model,
                X,
                k=samples,
                generator=vae_generator(model, seed),
                progress=sys.stderr.isatty(),
                max_work=work_limit(max_work),
            )
            rows = ll.log_px.cpu().numpy()
        else:
            rows = np.asarray(model.score_samples(X), dtype=np.float64)
    except (ValueError, FloatingPointError) as err:
        text = cli_words(str(err), str(data))
        fail(samples_words(text) if kind == "vae" else text)  # a VAE's k is --samples
    total = float(np.sum(rows, dtype=np.float64))
    result.update(n_rows=len(rows), total=total, mean=total / len(rows), per_row=rows)
    if per_row is not None:
        with written_together([(per_row, "--per-row")], [model_path, data, lengths], force):
            write_table(per_row, ["log_likelihood"], [rows])
    if as_json:
        check_json_size(
            len(rows),
            f"{len(rows):,} per-row log-likelihoods",
            hint="write them with --per-row FILE.csv and print the totals without --json",
        )
        print_json(result)
        return
    extra = f" in {len(seq)} sequences" if seq is not None else ""
    typer.echo(
        f"{type(model).__name__}: {len(rows)} rows{extra}: total log-likelihood {total:.6f}, "
        f"mean per row {total / len(rows):.6f}"
    )
    if per_row is not None:
        typer.echo(f"per-row log-likelihoods written to {per_row}")
