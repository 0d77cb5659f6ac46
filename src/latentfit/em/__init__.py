"""Expectation-maximisation: the one driver and the models that plug into it."""

from latentfit.em.driver import (
    EMMonotonicityWarning,
    EMResult,
    NonFiniteLowerBoundError,
    run_em,
    sum_stats,
)

__all__ = ["EMMonotonicityWarning", "EMResult", "NonFiniteLowerBoundError", "run_em", "sum_stats"]
