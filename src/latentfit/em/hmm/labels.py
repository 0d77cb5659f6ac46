"""Known states of some steps (partial labels) as every HMM, HSMM and AR-HMM takes them:
``y`` (n_samples,) with −1 where the state is unknown."""

from __future__ import annotations

import numpy as np
import torch

from latentfit._validation import check_no_nan_labels
from latentfit.em.hmm.inference import posterior as inference
from latentfit.errors import BatchRowError, DataError

__all__ = ["SequenceRowError", "check_labels", "check_labels_possible", "check_reachable"]


def check_labels(y, n_samples: int, n_components: int, device) -> torch.Tensor | None:
    """Known states ``y`` (n_samples,) as an int64 tensor on ``device``: integers in
    ``-1 .. n_components − 1`` (−1: unknown); None when ``y`` is None or knows no state (then
    every result is exactly the unlabelled one). DataError naming the first bad entry."""
    if y is None:
        return None
    if torch.is_tensor(y):
        y = y.detach().cpu().numpy()
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):
        raise DataError(f"y must be a 1-D array of state indices, got {y!r:.60}") from None
    if arr.ndim != 1:
        raise DataError(
            f"y must be a 1-D array of state indices (one per row of X, -1 where unknown), "
            f"got shape {arr.shape}"
        )
    if arr.shape[0] != n_samples:
        raise DataError(
            f"y has {arr.shape[0]} entries but X has {n_samples} rows: give one state per row "
            "(-1 where it is unknown)"
        )
    check_no_nan_labels(arr, "y", "state")
    if arr.dtype.kind not in "iu":
        raise DataError(
            f"y must hold integer state indices (-1 where unknown), got dtype {arr.dtype}; "
            "convert it with y.astype(int)"
        )
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < -1) | (arr >= n_components))
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"y[{i}] = {arr[i]} is not a state: y holds states 0..{n_components - 1}, or -1 "
            "where the state is unknown"
        )
    if not (arr >= 0).any():
        return None
    return torch.as_tensor(arr, device=device)


def check_labels_possible(ll, sp, tm, lengths, labels) -> None:
    """After a -inf likelihood with known states ``labels`` (n,): if the data alone are
    possible under the emission log-likelihoods ``ll`` (n, k), start ``sp`` (k,) and
    transitions ``tm`` (k, k), the labels made them impossible; DataError naming the first
    step where no path through the known states is left, and why."""
    free = inference.log_likelihood(ll.clone(), sp, tm, lengths)
    if not bool(torch.isfinite(free.log_likelihood)):
        return  # impossible without the labels too: not theirs to explain
    fwd = inference.log_likelihood(ll.clone(), sp, tm, lengths, states=labels)
    dead = (~torch.isfinite(fwd.log_normalizers)).nonzero()
    if not len(dead):
        return
    i = int(dead[0])
    where, step = where_row(i, ll.shape[0], lengths)
    j = int(labels[i])
    if j < 0:
        raise DataError(
            f"{where}, whose state is unknown, has no path left through the known states "
            "(y) before it: every state that can emit it has zero transition probability "
            "from the states the labels allow. Check the labels (y) near this step"
        )
    if not bool(torch.isfinite(ll[i, j])):
        reason = f"state {j} gives that row zero probability"
    elif step == 0 and float(sp[j]) == 0:
        reason = f"startprob_[{j}] is 0, and this is the first step of the sequence"
    else:
        reason = (
            f"state {j} cannot be reached from the states the earlier steps allow "
            "(zero transition probabilities in transmat_)"
        )
    raise DataError(
        f"y[{i}] = {j}, the known state of {where}, is impossible under the model: "
        f"{reason}. Check the label, or let the model give that state probability"
    )


def where_row(i: int, n: int, lengths) -> tuple[str, int]:
    """Row ``i`` of X (n rows cut by ``lengths``) in words, and its step in its sequence."""
    lens = np.asarray([n] if lengths is None else lengths, dtype=np.int64)
    seq = int(np.searchsorted(np.cumsum(lens), i, side="right"))
    step = i - int(np.cumsum(lens)[seq] - lens[seq])
    return f"row {i} of X (step {step} of sequence {seq})", step


class SequenceRowError(BatchRowError):
    """A :class:`~latentfit.errors.BatchRowError` naming its row with the row's step and
    sequence: ``{where}`` in ``message`` becomes ``row i of X (step s of sequence q)``, counted
    in ``lengths``, the sequences of the rows given. ``whole`` (default ``lengths``) holds the
    sequences of the whole data, which :meth:`shifted` names the row in (a group of whole
    sequences of a source, or an E-step batch, knows neither where it starts nor which
    sequence comes first)."""

    def __init__(self, row: int, message: str, lengths, whole=None):
        DataError.__init__(self, message.format(where=where_row(row, 0, lengths)[0]))
        self.row, self.message = row, message
        self.whole = list(lengths if whole is None else whole)

    def shifted(self, offset: int, prefix: str = "") -> SequenceRowError:
        braced = prefix.replace("{", "{{").replace("}", "}}")
        return SequenceRowError(offset + self.row, braced + self.message, self.whole)


def check_reachable(ll, sp, tm, lengths) -> None:
    """After a -inf likelihood of data whose every row some state can emit (emission
    log-likelihoods ``ll`` (n, k)): the start ``sp`` (k,) and transitions ``tm`` (k, k) leave
    no path. Posteriors and paths are then undefined (0/0); DataError naming the first step
    no path reaches."""
    fwd = inference.log_likelihood(ll.clone(), sp, tm, lengths)
    dead = (~torch.isfinite(fwd.log_normalizers)).nonzero()
    if not len(dead):
        return
    i = int(dead[0])
    where, step = where_row(i, ll.shape[0], lengths)
    reason = (
        "every state that can emit it has startprob_ 0"
        if step == 0
        else "every state that can emit it has zero transition probability (transmat_) from "
        "the states that can emit the steps before it"
    )
    raise DataError(
        f"{where} is impossible under the model: {reason}, so X has probability 0 and its "
        "state posteriors and most likely path are undefined. Check that sequence and "
        "lengths, or give those transitions some probability"
    )
