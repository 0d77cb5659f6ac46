"""NUTS with every chain at its own pace (mcmc/paced_kernel.py) over generated subtrees: the
compiled kernel, fed a subtree's leaves one at a time, ends a chain's transition at the leaf
where Stan's recursive build_tree first fails a U-turn check, for every depth, number of
parameters, drift of the momenta and metric (diagonal or dense). A missed or extra check
would be trees of another length than Stan's: a sampler of the right posterior with the
wrong efficiency, or, with a check that ends trees early, a biased one."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.mcmc.test_nuts import _stan_build_tree_turn
from tests.mcmc.test_paced import kernel_turns

from .oracle import budget

F64 = torch.float64


@budget(60)
@given(
    depth=st.integers(1, 7),
    d=st.integers(1, 5),
    chains=st.integers(1, 8),
    drift=st.floats(0.0, 3.0),
    dense=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_the_kernel_turns_where_stans_recursion_does(depth, d, chains, drift, dense, seed):
    g = torch.Generator().manual_seed(seed)
    L = 2**depth
    P = torch.randn(chains, L, d, generator=g, dtype=F64)
    P = P + torch.linspace(drift, -drift, L, dtype=F64)[None, :, None]
    if dense:
        A = torch.randn(chains, d, d, generator=g, dtype=F64)
        inv = A @ A.transpose(1, 2) / d + 0.3 * torch.eye(d, dtype=F64)
        inv = 0.5 * (inv + inv.transpose(1, 2))  # exactly symmetric
        PS = P @ inv
    else:
        inv = torch.rand(chains, d, generator=g, dtype=F64) + 0.2
        PS = P * inv[:, None]
    want = [_stan_build_tree_turn(P[i], PS[i]) for i in range(chains)]
    assert kernel_turns(P, inv) == want
