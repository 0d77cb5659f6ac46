"""Warnings raised deep inside latentfit point at the user's own line (issue 14)."""

import warnings

import numpy as np

from latentfit import GaussianHMM, GaussianMixture


def _caught(fn):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fn()
    return [w for w in seen if "converge" in str(w.message).lower()]


def test_convergence_warnings_name_this_file():
    X = np.random.default_rng(0).normal(size=(200, 2))
    for fit in (
        lambda: GaussianMixture(3, max_iter=1, random_state=0).fit(X),
        lambda: GaussianHMM(3, n_iter=1, random_state=0).fit(X),
    ):
        seen = _caught(fit)
        assert seen, "no convergence warning"
        assert all(w.filename == __file__ for w in seen), [w.filename for w in seen]
