"""Brute-force enumeration of every segmentation of a tiny sequence: the reference the HSMM
recursions are tested against."""

from __future__ import annotations

import itertools
import math

import numpy as np


def compositions(t: int, max_part: int):
    """Every way to cut t steps into consecutive parts of 1..max_part steps."""
    if t == 0:
        yield ()
        return
    for first in range(1, min(t, max_part) + 1):
        for rest in compositions(t - first, max_part):
            yield (first, *rest)


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


def enumerate_hsmm(ll, startprob, transmat, pmf, censored):
    """Every segmentation (states of the segments, their durations) with its log p(x, seg),
    and, for a censored last segment, every full duration d ≥ seen with its weight p(d) (so
    the survival S(seen) = Σ_d p(d) is never computed by the code under test's formula).

    Yields (log_joint, states, durations, full_last_duration)."""
    t, k = ll.shape
    big_d = pmf.shape[1]
    cum = np.vstack([np.zeros(k), np.cumsum(ll, 0)])  # (t + 1, k)
    for durs in compositions(t, big_d):
        n = len(durs)
        for states in itertools.product(range(k), repeat=n):
            if any(a == b for a, b in itertools.pairwise(states)):
                continue
            lp = _log(startprob[states[0]])
            pos = 0
            for i, (s, d) in enumerate(zip(states, durs, strict=True)):
                lp += cum[pos + d, s] - cum[pos, s]
                if i + 1 < n:
                    lp += _log(pmf[s, d - 1]) + _log(transmat[s, states[i + 1]])
                pos += d
            last_s, last_d = states[-1], durs[-1]
            fulls = range(last_d, big_d + 1) if censored else [last_d]
            for full in fulls:
                yield lp + _log(pmf[last_s, full - 1]), states, durs, full


def brute_force(ll, startprob, transmat, pmf, censored):
    """log p(x), posteriors (t, k), start, transition and duration counts, and the Viterbi
    segmentation's path and log-probability, all by enumeration."""
    t, k = ll.shape
    big_d = pmf.shape[1]
    rows = list(enumerate_hsmm(ll, startprob, transmat, pmf, censored))
    logs = np.array([r[0] for r in rows])
    top = logs.max()
    log_l = top + math.log(np.exp(logs - top).sum())
    post = np.zeros((t, k))
    start = np.zeros(k)
    trans = np.zeros((k, k))
    dur = np.zeros((k, big_d))
    # Viterbi: the segmentation's score has S(seen) for a censored last segment
    seg_scores: dict = {}
    for lp, states, durs, full in rows:
        w = math.exp(lp - log_l)
        path = np.repeat(states, durs)
        post[np.arange(t), path] += w
        start[states[0]] += w
        for a, b in itertools.pairwise(states):
            trans[a, b] += w
        for s, d in zip(states[:-1], durs[:-1], strict=True):
            dur[s, d - 1] += w
        dur[states[-1], full - 1] += w
        key = (states, durs)
        seg_scores[key] = np.logaddexp(seg_scores.get(key, -np.inf), lp)
    (best_states, best_durs), best = max(seg_scores.items(), key=lambda kv: kv[1])
    return {
        "log_likelihood": log_l,
        "posteriors": post,
        "start": start,
        "trans": trans,
        "durations": dur,
        "viterbi_log_prob": best,
        "viterbi_path": np.repeat(best_states, best_durs),
    }
