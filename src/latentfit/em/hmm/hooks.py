"""The EM hooks of every hidden Markov model: Baum-Welch as :func:`latentfit.em.driver.run_em`
takes it.

:class:`_HMMHooks` turns a model's ``_emission_*`` methods into the driver's four hooks: the
E-step is the forward-backward algorithm of :mod:`latentfit.em.hmm.kernels` on the model's
emission log-likelihoods, the M-step the Dirichlet MAP of the start and transition
probabilities (:func:`~latentfit.em.hmm.emissions.dirichlet_map`) plus the model's emission
M-step. Used by :meth:`latentfit.em.hmm.base.BaseHMM.fit`.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

import torch

from latentfit.em.hmm import kernels
from latentfit.em.hmm.emissions import dirichlet_map

if TYPE_CHECKING:
    from latentfit.em.hmm.base import BaseHMM


class _HMMHooks:
    """Baum-Welch as the EM driver's hooks; a batch is a group of whole sequences."""

    def __init__(self, model: BaseHMM, X: torch.Tensor):
        self.model, self.X = model, X
        # per in-memory batch: (shift, features) that stay fixed through the fit
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._feature_bytes = 0

    def _batch_features(self, params, X):
        """The model's emission features of batch ``X`` (``_emission_features``): computed
        once per fit for in-memory data while they fit in
        :data:`~latentfit.em.hmm.base.FEATURE_BYTES`, else once per E-step (shared by the
        densities and the statistics); None if the model has none. A batch is one of the
        fixed views made by :func:`~latentfit.em.hmm.base._batches`."""
        from latentfit.em.hmm import base as hmm_base  # its FEATURE_BYTES, read per call

        m = self.model
        shift = params.get("shift")
        cached = self._features.get(id(X)) if self.X is not None else None
        if cached is not None and shift is not None and torch.equal(cached[0], shift):
            return cached[1]
        features = m._emission_features(params, X)
        if features is None or self.X is None or shift is None:
            return features
        size = features.numel() * features.element_size()
        if id(X) in self._features or self._feature_bytes + size <= hmm_base.FEATURE_BYTES:
            if id(X) not in self._features:
                self._feature_bytes += size
            self._features[id(X)] = (shift.clone(), features)
        return features

    def initialize(self, data, generator):
        if self.X is not None:
            return self.model._initial_params(self.X, generator)
        # A source: its in-memory sample (all rows, in order, when small: then the start is
        # the in-memory fit's), the same parameters on every process.
        sample = data.init_chunks(generator)
        X = self.model._stream_batch(sample.X)
        return data.sync_params(self.model._initial_params(X, generator))

    def estep(self, params, batch):
        X, lengths = batch
        m = self.model
        if self.X is None:  # streamed: the source's tensor
            X = m._stream_batch(X)
        features = self._batch_features(params, X)
        if features is None:
            ll = m._emission_log_likelihood(params, X)
            stats_of = functools.partial(m._emission_stats, params, X)
        else:
            ll = m._emission_log_likelihood(params, X, features)
            stats_of = functools.partial(m._emission_stats, params, X, features=features)
        # ll is a temporary: the E-step reuses its buffer
        post = kernels.posterior(
            ll, params["startprob"], params["transmat"], lengths, overwrite=True
        )
        if not bool(torch.isfinite(post.log_likelihood)):
            m._log_likelihoods(params, X)  # names a row no state can emit, if there is one
        stats = stats_of(post.posteriors)
        stats["start"] = post.start_counts
        stats["trans"] = post.transition_counts
        stats["log_likelihood"] = post.log_likelihood.reshape(1)
        return stats

    def mstep(self, params, stats):
        m = self.model
        new = dict(params)
        unvisited: list[int] = []
        if "s" in m.params:
            new["startprob"], _ = dirichlet_map(
                stats["start"], m.startprob_prior, params["startprob"]
            )
        if "t" in m.params:
            new["transmat"], rows = dirichlet_map(
                stats["trans"], m.transmat_prior, params["transmat"]
            )
            unvisited += rows
        emis, states = m._emission_mstep(params, stats)
        new.update(emis)
        unvisited = sorted(set(unvisited) | set(states))
        if unvisited:
            from latentfit.em.hmm.base import UnvisitedStateWarning

            warnings.warn(
                f"{type(m).__name__}: state(s) {unvisited} received no posterior mass (no data "
                "is explained by them); they keep their previous parameters and transition "
                "rows. Try fewer components, another random_state or n_init > 1.",
                UnvisitedStateWarning,
                stacklevel=3,
            )
        return new

    def lower_bound(self, params, stats):
        return float(stats["log_likelihood"].sum())
