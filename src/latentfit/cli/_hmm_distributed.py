"""The body of ``latentfit fit hmm DATA --lengths FILE --distributed`` under torchrun: every
process fits on its block of whole sequences (the statistics all-reduced), then scores that
block; the log-likelihood is summed over the processes."""

from __future__ import annotations

from typing import NamedTuple


class DistributedHMMFit(NamedTuple):
    """What :func:`fit_hmm_distributed` returns on every process (totals over all of them)."""

    rank: int
    world_size: int
    n_samples: int
    n_features: int
    loglik: float
    bic: float
    aic: float


def fit_hmm_distributed(
    model, path, columns, lengths, timeout: float, delimiter=None, header=None
) -> DistributedHMMFit:
    """Fit ``model`` (an HMM) on this process's share of the sequences of the data file
    ``path`` (a text file read with ``delimiter`` and ``header``) cut by ``lengths``, as
    ``fit_distributed`` does for mixtures."""
    import math

    import torch
    import torch.distributed as dist

    from latentfit.em.hmm.labels import SequenceRowError
    from latentfit.em.hmm.sequences import SequenceSource
    from latentfit.em.sources.chunks import open_source
    from latentfit.em.sources.distributed import (
        DistributedSource,
        collective_errors,
        in_process_group,
        init_distributed,
        local_device,
    )
    from latentfit.errors import BatchRowError

    device = local_device(model.device)
    started_here = not in_process_group()
    rank, world = init_distributed(
        device, timeout=timeout, command="fit hmm DATA -k 4 --distributed"
    )
    if str(device) != str(model.device):
        model.set_params(device=str(device))
    if rank != 0:
        model.set_params(verbose=False)
    try:
        source = open_source(
            path, columns=columns, delimiter=delimiter, header=header, progress=False
        )
        shared = DistributedSource(source)
        model.fit(shared, lengths)
        if lengths is None:
            lengths = [source.n_samples]
        # Score this process's block of whole sequences at the fitted parameters.
        block = SequenceSource(source, lengths).shard(rank, world)
        local, failed = 0.0, None
        try:
            data = block.configured(
                device=model._device, dtype=model._dtype, allow_nan=model._allow_nan()
            )
            rows = [X for X, _ in data]
            if block.lengths:
                X = torch.cat(rows).cpu().numpy()
                local = model.score(X, block.lengths)
        except SequenceRowError as err:  # named in the block: name it in the whole data
            failed = SequenceRowError(block._row_offset() + err.row, err.message, lengths)
        except BatchRowError as err:
            failed = err.shifted(block._row_offset())
        except Exception as err:
            failed = err
        # the others would wait for this process's sum until the timeout: all stop with it
        shared.stop_together(failed)
        total = torch.tensor([local], dtype=torch.float64, device=device)
        with collective_errors("summing the log-likelihood", timeout=timeout):
            dist.all_reduce(total)
        ll, n = float(total.item()), int(sum(lengths))
        p = sum(model._get_n_fit_scalars_per_param().values())
        d = source.n_features
    finally:
        if started_here and dist.is_initialized():  # leave no process group behind
            dist.destroy_process_group()
    return DistributedHMMFit(rank, world, n, d, ll, -2 * ll + p * math.log(n), -2 * ll + 2 * p)
