"""The number of states as a compile-time constant for the compiled CPU kernels
(:mod:`~latentfit.em.hmm.viterbi_cpu`, :mod:`~latentfit.em.hmm.posterior_cpu`).

A kernel takes ``states``: either the int k, or a tuple of k zeros, whose length is part of
the tuple's numba type. Given the tuple, numba compiles the kernel for that exact k: the loops
over states unroll and running values stay in registers (the Viterbi recursion at k = 8 took
11 ms instead of 33 ms for 10^6 steps). Each k then compiles once (cached on disk), so only
the common range is specialised.
"""

from __future__ import annotations

import numba

__all__ = ["UNROLL_STATES", "n_states", "states_arg"]

UNROLL_STATES = (4, 16)  # k in this range: kernels compiled for the exact k


def n_states(states):
    """k from a kernel's ``states`` argument (an int, or a tuple of k items)."""
    return states if isinstance(states, int) else len(states)


@numba.extending.overload(n_states)
def _n_states_overload(states):
    if isinstance(states, numba.types.Integer):
        return lambda states: states
    return lambda states: len(states)


def states_arg(k: int):
    """The ``states`` argument for k states: a tuple of k zeros in :data:`UNROLL_STATES`, else
    the int k."""
    lo, hi = UNROLL_STATES
    return (0,) * k if lo <= k <= hi else k
