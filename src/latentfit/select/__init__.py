"""Model selection for latent-variable models: BIC, AIC and ICL sweeps, with optional K-fold
held-out log-likelihood.

:func:`select_model` fits every candidate — a sweep over the number of components and the
covariance types of a family, or any list of estimators — and returns a
:class:`SelectionResult` whose :meth:`~SelectionResult.table` reads like mclust's BIC table
(Fraley & Raftery 2002): one row per size, one column per covariance type, the best entry
marked. A candidate whose fit fails is reported with its error and never stops the sweep; one
whose fit has a degenerate component (its variance at the regularisation floor on a handful of
tied points, see :func:`latentfit.em.gaussian.degenerate_components`) is reported as NA, as
mclust does, since its likelihood is not that of a real fit. A GaussianMixture, or an HMM or
HSMM of Gaussian or autoregressive emissions, of no fewer parameters than the data hold
observed values is refused likewise (its error names the counts): its components or states
pass through every point, tied covariances included, which no component flags.

Criteria follow scikit-learn's sign (lower is better): BIC = −2 log L + p log n (Schwarz 1978),
AIC = −2 log L + 2p (Akaike 1974), ICL = BIC − 2 Σ_n log p(ẑ_n | x_n) (Biernacki, Celeux &
Govaert 2000), which also penalises overlapping components.

Sequence models (hidden Markov models and their kin) are selected the same way; they plug in
through their own methods, never through a list of classes. A candidate is a sequence model
when its ``fit`` takes ``lengths`` (hmmlearn's convention), and then it needs:

- ``fit(X, lengths)`` and ``score(X, lengths)``: the total log-likelihood of all sequences;
- its number of free parameters, read in this order: an ``n_parameters_`` attribute,
  hmmlearn's ``_get_n_fit_scalars_per_param()`` summed over the letters of ``params`` (a
  parameter held fixed is not free), or a ``_n_parameters()`` method;
- optionally ``decode(X, lengths)`` returning ``(log p(X, ẑ), ẑ)`` for the most probable path
  ẑ, which gives ICL = BIC − 2 log p(ẑ | X) (the sequence form of Biernacki et al.'s ICL, as
  Celeux & Durand 2008 use it for HMMs).

BIC's n is the number of time steps (rows), as hmmlearn's. The held-out log-likelihood of a
sequence model is computed on whole sequences (Celeux & Durand 2008): with at least ``cv``
sequences, the folds are groups of whole sequences (shuffled K-fold over sequences); with fewer
(one long series, say), every sequence is cut into ``cv`` contiguous blocks of near-equal
length, fold j holds out block j of every sequence and trains on the pieces before and after
it, each piece its own sequence, so no transition is invented across the gap. When sequence
models and mixtures are compared on the same data (or ``lengths`` is given), every candidate
uses these same folds.
"""

from latentfit.select.candidates import (
    CRITERIA,
    FAMILY_NAMES,
    HMM_FAMILIES,
    is_sequence_model,
    make_candidates,
    n_free_parameters,
    sequence_folds,
)
from latentfit.select.sweep import COLUMNS, SelectionResult, select_model

__all__ = [
    "COLUMNS",
    "CRITERIA",
    "FAMILY_NAMES",
    "HMM_FAMILIES",
    "SelectionResult",
    "is_sequence_model",
    "make_candidates",
    "n_free_parameters",
    "select_model",
    "sequence_folds",
]
