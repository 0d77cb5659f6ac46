"""Hidden semi-Markov models with Gaussian, Poisson and categorical emissions.

Each class is its HMM of :mod:`latentfit.em.hmm` (same emission arguments, attributes and
priors) with explicit state durations (:class:`~latentfit.em.hsmm.base.HSMMMixin`).
"""

from __future__ import annotations

from latentfit.em.hmm.discrete import CategoricalHMM, PoissonHMM
from latentfit.em.hmm.gaussian import GaussianHMM
from latentfit.em.hsmm.base import HSMMMixin
from latentfit.io import serializable

__all__ = ["CategoricalHSMM", "GaussianHSMM", "PoissonHSMM"]

_DOC = """
    Durations (Yu 2010): a segment of state k lasts d = 1..``max_duration`` steps with
    probability ``duration_pmf_[k, d - 1]``, from the family ``duration``: ``"poisson"``
    (d − 1 ~ Poisson(``duration_lambdas_``), truncated at D), ``"negative_binomial"``
    (d − 1 ~ NegativeBinomial(``duration_r_``, ``duration_p_``), torch's parametrisation,
    truncated at D) or ``"nonparametric"`` (``duration_probs_`` (k, D)). ``transmat_`` moves
    between segments: its diagonal is zero. ``right_censoring`` (default True): the last
    segment of every sequence may go on after its end (it counts with P(d ≥ steps seen)); False
    makes every sequence end with a segment. Letter ``d`` in ``params``/``init_params``: the
    durations. Inference costs O(T·K·min(D, T)) time and memory per sequence of T steps; a
    fit or score whose messages would not fit in memory is refused first
    (ResourceLimitError). A D past the longest sequence costs what the data need: the pmf is
    computed over the durations the data and its mass reach (a nonparametric pmf starts, and
    stays, at 0 past the longest sequence, so any larger D fits as D = that length does, and
    ``n_durations_``, min(D, longest sequence), is the number of durations whose probabilities
    ``bic``/``aic`` count);
    the negative binomial's M-step works on all D and refuses n_components × D > 2**21.
"""


@serializable
class GaussianHSMM(HSMMMixin, GaussianHMM):
    __doc__ = (
        "Hidden semi-Markov model with Gaussian emissions (the emissions, priors and "
        "``covariance_type`` of :class:`~latentfit.GaussianHMM`; after ``fit``, "
        "``degenerate_components_`` as there).\n" + _DOC
    )

    def __init__(
        self,
        n_components=2,
        max_duration=20,
        duration="poisson",
        right_censoring=True,
        covariance_type="diag",
        min_covar=1e-3,
        startprob_prior=1.0,
        transmat_prior=1.0,
        means_prior=0,
        means_weight=0,
        covars_prior=1e-2,
        covars_weight=1,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stdmc",
        init_params="stdmc",
        n_init=1,
        device=None,
        dtype="float64",
        missing="error",
    ):
        self._set_arguments(locals())


@serializable
class PoissonHSMM(HSMMMixin, PoissonHMM):
    __doc__ = (
        "Hidden semi-Markov model with independent Poisson counts per feature (the emissions "
        "and priors of :class:`~latentfit.PoissonHMM`).\n" + _DOC
    )

    def __init__(
        self,
        n_components=2,
        max_duration=20,
        duration="poisson",
        right_censoring=True,
        startprob_prior=1.0,
        transmat_prior=1.0,
        lambdas_prior=0.0,
        lambdas_weight=0.0,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stdl",
        init_params="stdl",
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())


@serializable
class CategoricalHSMM(HSMMMixin, CategoricalHMM):
    __doc__ = (
        "Hidden semi-Markov model with categorical emissions (symbols 0..n_features-1; the "
        "emissions and prior of :class:`~latentfit.CategoricalHMM`).\n" + _DOC
    )

    def __init__(
        self,
        n_components=2,
        max_duration=20,
        duration="poisson",
        right_censoring=True,
        startprob_prior=1.0,
        transmat_prior=1.0,
        *,
        emissionprob_prior=1.0,
        n_features=None,
        algorithm="viterbi",
        random_state=None,
        n_iter=10,
        tol=1e-2,
        verbose=False,
        params="stde",
        init_params="stde",
        n_init=1,
        device=None,
        dtype="float64",
    ):
        self._set_arguments(locals())
