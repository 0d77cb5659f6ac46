"""A fit that fails leaves the estimator as it was.

An error found mid-fit (a row of a streamed source, a non-finite iteration, a network that
diverged) or Ctrl-C used to leave the estimator half refitted: the attributes a fit sets
before its loop (``n_features_in_``, the feature names, a DDPM's ``skip_floor_``) were the new
data's, the parameters the previous fit's. Found by hand: a GaussianMixture fitted on 2
columns and refitted on 3 until an error refused every later ``predict`` on the data it was
fitted to. :func:`kept_on_failure` puts the attributes back: a refit that fails leaves the
previous fit whole, a first fit that fails leaves the estimator unfitted.
"""

from __future__ import annotations

from contextlib import contextmanager

from latentfit._interrupt import keeping_fit_on_ctrl_c

__all__ = ["fitting", "kept_on_failure", "resumed_by"]


@contextmanager
def kept_on_failure(estimator):
    """Restore ``estimator``'s attributes when the block raises (any exception, Ctrl-C
    included). A fit assigns new objects (it does not write into the fitted parameters or
    network in place), so the attributes themselves are what is kept: a shallow copy."""
    kept = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(kept)
        raise


@contextmanager
def fitting(estimator, then: str = ""):
    """An estimator's ``fit``: :func:`kept_on_failure`, inside Ctrl-C's handling from Python
    (:func:`latentfit._interrupt.keeping_fit_on_ctrl_c`: a first press keeps the fit so far and
    raises KeyboardInterrupt after it, ``then`` saying how to go on)."""
    with (
        keeping_fit_on_ctrl_c(f"{type(estimator).__name__}.fit", then=then),
        kept_on_failure(estimator),
    ):
        yield


def resumed_by(checkpoint_dir) -> str:
    """How a trained estimator's fit stopped by Ctrl-C goes on (``fitting``'s ``then``): the
    trainer resumes a run from its checkpoint."""
    if checkpoint_dir:
        return "fit again with the same checkpoint_dir resumes it"
    return "fit with a checkpoint_dir can be resumed so"
