"""The record of an HMM fit as hmmlearn keeps it (:class:`ConvergenceMonitor`), the save/load
of the models that keep their fit in public attributes (:class:`AttributeStateMixin`) and the
warnings for states that no data visits (:class:`UnvisitedStateWarning`) and for parameters set
by hand that ``init_params`` overwrites (:class:`OverwrittenParameterWarning`)."""

from __future__ import annotations

import warnings
from collections import deque
from typing import ClassVar

import numpy as np
import torch

from latentfit.em.base import RUN_RECORD, run_record
from latentfit.errors import ModelFileError, user_stacklevel
from latentfit.io import Stored, check_fields, check_stored_tensors

__all__ = [
    "AttributeStateMixin",
    "ConvergenceMonitor",
    "OverwrittenParameterWarning",
    "UnvisitedStateWarning",
    "warn_unvisited",
]


class UnvisitedStateWarning(RuntimeWarning):
    """A state received no posterior mass: its parameters were kept instead of re-estimated."""


class OverwrittenParameterWarning(UserWarning):
    """A parameter set by hand on an unfitted model is initialised afresh by fit, because its
    letter is in ``init_params`` (hmmlearn's rule, which hmmlearn reports in its log)."""


class ConvergenceMonitor:
    """hmmlearn's convergence monitor: ``history`` holds the total log-likelihood of every
    iteration, ``iter`` their number, ``converged`` is true when the last gain was below
    ``tol`` or ``n_iter`` iterations were made (hmmlearn's definition; latentfit's stricter
    ``converged_`` attribute is true only for the former)."""

    def __init__(self, tol: float, n_iter: int, verbose: bool, history=()):
        self.tol, self.n_iter, self.verbose = tol, n_iter, verbose
        self.history = deque(history)
        self.iter = len(self.history)

    @property
    def converged(self) -> bool:
        h = self.history
        return self.iter == self.n_iter or (len(h) >= 2 and h[-1] - h[-2] < self.tol)

    def __repr__(self):
        return (
            f"ConvergenceMonitor(tol={self.tol}, n_iter={self.n_iter}, iter={self.iter}, "
            f"history={list(self.history)[-2:]})"
        )


class AttributeStateMixin:
    """save/load of an estimator whose fitted parameters are public attributes (hmmlearn's and
    pykalman's style: the HMMs, the linear-Gaussian state-space model), mixed in before
    :class:`~latentfit.em.base.EMEstimator`. A model file holds the attributes named by
    ``_state_attributes()`` as tensors, and ``lower_bounds_``, ``n_features`` and
    ``feature_names_in_``; loading sets them back and rebuilds ``monitor_`` from the bounds."""

    #: the fields of ``extra`` that a model file must hold
    _required_state_fields: ClassVar[tuple[str, ...]] = ()

    def _state_attributes(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _stored_attribute_specs(self, tensors: dict, extra: dict) -> tuple[dict[str, Stored], str]:
        """What each stored attribute of a model file must be (name → shape and constraint,
        see :func:`latentfit.io.check_stored`), checked before any is set, and the sizes the
        shapes follow from (the header's ``n_features`` and the settings), for the message.
        A model lists its own; here none."""
        return {}, ""

    def _get_state(self):
        names = self._state_attributes()
        tensors = {n: torch.as_tensor(np.asarray(getattr(self, n))) for n in names}
        n_features = getattr(self, "n_features", None)
        extra = {
            "lower_bounds_": [float(v) for v in getattr(self, "lower_bounds_", [])],
            "n_features": None if n_features is None else int(n_features),
            **run_record(self, [n for n in RUN_RECORD if n != "lower_bounds_"]),
        }
        if hasattr(self, "feature_names_in_"):
            extra["feature_names_in_"] = [str(c) for c in self.feature_names_in_]
        return tensors, extra

    def _set_state(self, tensors, extra):
        names = self._state_attributes()
        if set(tensors) != set(names):
            raise ModelFileError(
                f"a {type(self).__name__} file holds the tensors {sorted(names)}; this one holds "
                f"{sorted(tensors)}"
            )
        extra = check_fields(extra, type(self), required=self._required_state_fields)
        specs, sizes = self._stored_attribute_specs(tensors, extra)
        check_stored_tensors(tensors, specs, sizes=sizes)
        for name in names:
            setattr(self, name, tensors[name].numpy())
        if extra.get("n_features") is not None:
            self.n_features = extra["n_features"]
        if "feature_names_in_" in extra:
            self.feature_names_in_ = np.asarray(extra["feature_names_in_"], dtype=object)
        self.lower_bounds_ = extra.get("lower_bounds_", [])
        for name in RUN_RECORD:  # the rest of the fit's record, as the fitted model had it
            if name in extra and name != "lower_bounds_":
                setattr(self, name, extra[name])
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose, self.lower_bounds_)


def warn_unvisited(model, states, why: str, kept: str) -> None:
    """Warn (:class:`UnvisitedStateWarning`) that ``states`` received no posterior mass in an
    M-step of ``model`` (``why``: what no data explains) and keep their previous ``kept``;
    nothing when ``states`` is empty."""
    if states:
        warnings.warn(
            f"{type(model).__name__}: state(s) {list(states)} received no posterior mass "
            f"({why}); they keep their previous {kept}. Try fewer components, another "
            "random_state or n_init > 1.",
            UnvisitedStateWarning,
            stacklevel=user_stacklevel(),
        )
