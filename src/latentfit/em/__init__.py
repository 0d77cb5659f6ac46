"""Expectation-maximisation: the one driver and the models that plug into it.

driver.py is the EM loop (:func:`run_em`) and base.py the one estimator base every EM model
inherits; initialize.py starts a fit; gaussian.py, missing.py and online.py hold the
Gaussian, missing-data and stepwise-EM mathematics the models share; factor.py is FA/PPCA.
The models live in mixture/ and hmm/ (with its kernels in hmm/inference/), the data they read
in sources/.
"""

from latentfit.em.driver import (
    EMMonotonicityWarning,
    EMResult,
    NonFiniteLowerBoundError,
    run_em,
    sum_stats,
)

__all__ = ["EMMonotonicityWarning", "EMResult", "NonFiniteLowerBoundError", "run_em", "sum_stats"]
