"""The candidates of a model selection and the folds of its held-out log-likelihood: the
family names and criteria, the protocol a sequence model follows (:func:`is_sequence_model`,
:func:`n_free_parameters`), the sweeps of sizes and covariance types (:func:`make_candidates`)
and the folds over rows or whole sequences (:func:`sequence_folds`). See
:mod:`latentfit.select` for the criteria and the rules."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentfit.errors import ParameterError

__all__ = [
    "CRITERIA",
    "CRITERION_ALIASES",
    "FAMILY_NAMES",
    "HMM_FAMILIES",
    "Fold",
    "is_sequence_model",
    "make_candidates",
    "n_free_parameters",
    "sequence_folds",
]

CRITERIA = ("bic", "aic", "icl", "cv_loglik")
#: Other names a criterion is known by (the command line's ``--criterion heldout``).
CRITERION_ALIASES = {"heldout": "cv_loglik"}
FAMILY_NAMES = ("gmm", "bernoulli", "categorical", "multinomial", "poisson", "fa", "ppca")
#: Family names of the hidden Markov models, and the public latentfit class of each.
HMM_FAMILIES = {
    "gaussian_hmm": "GaussianHMM",
    "gmm_hmm": "GMMHMM",
    "poisson_hmm": "PoissonHMM",
    "categorical_hmm": "CategoricalHMM",
    "multinomial_hmm": "MultinomialHMM",
}
_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


# ---------------------------------------------------------------------- the sequence protocol
def is_sequence_model(estimator) -> bool:
    """True when ``estimator.fit`` takes ``lengths``: a model of sequences (hmmlearn's
    convention), whose ``score(X, lengths)`` is the total log-likelihood of the sequences."""
    fit = getattr(estimator, "fit", None)
    if fit is None:
        return False
    try:
        return "lengths" in inspect.signature(fit).parameters
    except (TypeError, ValueError):
        return False


def n_free_parameters(model) -> int:
    """The number of free parameters of a fitted ``model``: its ``n_parameters_``, or
    hmmlearn's ``_get_n_fit_scalars_per_param()`` summed over the letters of ``params`` (those
    are the parameters the fit estimates; one held fixed is not free), or its
    ``_n_parameters()``. For an HMM with K states: K − 1 start probabilities, K(K − 1)
    transitions and the emission parameters, of the letters in ``params`` (the count of
    latentfit's HMMs' own ``bic``/``aic``; hmmlearn's ``bic`` counts every letter, which is
    why the per-letter counts come before ``_n_parameters()``)."""
    value = getattr(model, "n_parameters_", None)
    if value is not None:
        return int(value)
    per_param = getattr(model, "_get_n_fit_scalars_per_param", None)
    if callable(per_param):
        counts = per_param()
        fitted = getattr(model, "params", None)
        if isinstance(fitted, str) and all(len(key) == 1 for key in counts):
            return int(sum(n for key, n in counts.items() if key in fitted))
        return int(sum(counts.values()))
    if callable(getattr(model, "_n_parameters", None)):
        return int(model._n_parameters())
    raise ParameterError(
        f"{type(model).__name__} does not say how many free parameters it has, which BIC and "
        "AIC need: give it an n_parameters_ attribute or an _n_parameters() method"
    )


@dataclass(frozen=True)
class Fold:
    """One held-out split: row indices and the sequence lengths of each side, in order."""

    train: np.ndarray
    train_lengths: list[int]
    test: np.ndarray
    test_lengths: list[int]


def sequence_folds(lengths: Sequence[int], cv: int, random_state=0) -> tuple[list[Fold], str]:
    """Held-out folds made of whole sequences, and a sentence saying how they were made.

    With ``len(lengths) >= cv``: a shuffled K-fold over the sequences. With fewer sequences,
    every sequence is cut into ``cv`` contiguous blocks of near-equal length; fold j holds out
    block j of every sequence and trains on the pieces before and after it, each its own
    sequence (joining them would invent a transition across the gap).
    """
    from sklearn.model_selection import KFold

    from latentfit._validation import draw_seed

    seed = draw_seed(random_state)  # checked even where the folds are not shuffled
    lengths = [int(n) for n in lengths]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    def rows(pieces):
        if not pieces:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b) for a, b in pieces])

    folds = []
    if len(lengths) >= cv:
        split = KFold(cv, shuffle=True, random_state=seed).split(np.arange(len(lengths)))
        for train, test in split:
            tr = [(starts[i], starts[i] + lengths[i]) for i in train]
            te = [(starts[i], starts[i] + lengths[i]) for i in test]
            folds.append(Fold(rows(tr), [b - a for a, b in tr], rows(te), [b - a for a, b in te]))
        return folds, f"{cv} folds of whole sequences (shuffled K-fold over {len(lengths)})"
    shortest = int(np.argmin(lengths))
    if lengths[shortest] < 2 * cv:
        raise ParameterError(
            f"cv={cv}: there are fewer sequences than folds, so each sequence is cut into {cv} "
            f"contiguous blocks, but sequence {shortest} has only {lengths[shortest]} steps; "
            f"use fewer folds (cv <= {max(lengths[shortest] // 2, 1)}) or more sequences"
        )
    for j in range(cv):
        tr, te = [], []
        for s, n in zip(starts, lengths, strict=True):
            cut = np.linspace(0, n, cv + 1).round().astype(np.int64)
            a, b = s + cut[j], s + cut[j + 1]
            te.append((a, b))
            tr += [(lo, hi) for lo, hi in ((s, a), (b, s + n)) if hi > lo]
        folds.append(Fold(rows(tr), [b - a for a, b in tr], rows(te), [b - a for a, b in te]))
    what = "the sequence" if len(lengths) == 1 else f"each of the {len(lengths)} sequences"
    return folds, f"{cv} contiguous blocks of {what} (fewer sequences than folds)"


def _row_folds(n: int, cv: int, random_state) -> list[Fold]:
    from sklearn.model_selection import KFold

    from latentfit._validation import draw_seed

    if cv > n:
        raise ParameterError(f"cv={cv} folds need at least {cv} rows; X has {n}")
    split = KFold(cv, shuffle=True, random_state=draw_seed(random_state)).split(np.arange(n))
    return [Fold(train, [], test, []) for train, test in split]


# ---------------------------------------------------------------------- candidates
def _takes(family, name: str) -> bool:
    """Whether the estimators of ``family`` (a name or a class) take the argument ``name``."""
    if isinstance(family, str):
        return True  # every named family takes random_state
    try:
        return name in inspect.signature(family).parameters
    except (TypeError, ValueError):
        return True


def _sweeps_covariance(family) -> bool:
    return family in ("gmm", "gaussian_hmm", "gmm_hmm")


def _built(cls, what: str, *args, **kwargs):
    """``cls(*args, **kwargs)``, a keyword argument the class does not take said as a
    ParameterError naming it (a typo in select_model's model arguments)."""
    try:
        return cls(*args, **kwargs)
    except TypeError as err:
        why = str(err).replace(f"{cls.__name__}.__init__() ", "")
        raise ParameterError(
            f"{what} builds {cls.__name__}({', '.join(kwargs)}), which {why}; pass only "
            f"arguments {cls.__name__} takes"
        ) from None


def _family_factory(family, **kwargs) -> Callable[[int, str], Any]:
    if not isinstance(family, str):
        if not callable(family):
            raise ParameterError(
                f"family must be a family name or an estimator class, got {family!r:.60}"
            )

        name = getattr(family, "__name__", type(family).__name__)

        def make_any(k, variant):
            extra = {"covariance_type": variant} if variant in _COVARIANCE_TYPES else {}
            try:
                return family(n_components=k, **extra, **kwargs)
            except TypeError as err:  # an argument the class does not take
                given = ", ".join(["n_components", *extra, *kwargs])
                raise ParameterError(
                    f"family={name} cannot be built as {name}({given}): {err}; pass only "
                    "arguments its constructor takes"
                ) from None

        return make_any
    from latentfit.em import factor
    from latentfit.em.mixture import discrete as mixtures
    from latentfit.em.mixture.gmm import GaussianMixture

    classes = {
        "gmm": GaussianMixture,
        "bernoulli": mixtures.BernoulliMixture,
        "categorical": mixtures.CategoricalMixture,
        "multinomial": mixtures.MultinomialMixture,
        "poisson": mixtures.PoissonMixture,
        "fa": factor.FactorAnalysis,
        "ppca": factor.PPCA,
    }
    if family in classes:
        cls = classes[family]

        def make(k, variant):
            extra = {"covariance_type": variant} if family == "gmm" else {}
            return _built(cls, f"family={family!r}", n_components=k, **extra, **kwargs)

        return make
    from latentfit.em.mixture.families import FAMILIES, MixtureModel

    if family in FAMILIES:
        return lambda k, variant: _built(
            MixtureModel, f"family={family!r}", family, n_components=k, **kwargs
        )
    raise ParameterError(
        f"unknown family {family!r}; choose from {list(FAMILY_NAMES) + list(HMM_FAMILIES)}, a "
        f"MixtureModel family {list(FAMILIES)}, or pass an estimator class"
    )


def make_candidates(
    family="gmm",
    n_components: Sequence[int] = range(1, 10),
    covariance_types: Sequence[str] | None = None,
    **kwargs,
) -> list[tuple[str, Any, int, str]]:
    """(label, unfitted estimator, K, variant) for every size (and covariance type, for
    ``gmm``, ``gaussian_hmm`` and ``gmm_hmm``: all four unless ``covariance_types`` says; for
    an estimator class, only when ``covariance_types`` is given)."""
    if isinstance(family, str) and family in HMM_FAMILIES:
        # the same candidates (and labels) as passing the class itself
        import latentfit

        if covariance_types is None and _sweeps_covariance(family):
            covariance_types = _COVARIANCE_TYPES
        cls = getattr(latentfit, HMM_FAMILIES[family])
        return make_candidates(cls, n_components, covariance_types, **kwargs)
    make = _family_factory(family, **kwargs)
    if isinstance(family, str):
        if _sweeps_covariance(family):
            variants = list(_COVARIANCE_TYPES if covariance_types is None else covariance_types)
            return [(f"{v} K={k}", make(k, v), k, v) for v in variants for k in n_components]
        return [(f"{family} K={k}", make(k, family), k, family) for k in n_components]
    name = getattr(family, "__name__", type(family).__name__)
    if covariance_types is not None:
        return [
            (f"{name} {v} K={k}", make(k, v), k, v) for v in covariance_types for k in n_components
        ]
    return [(f"{name} K={k}", make(k, name), k, name) for k in n_components]
