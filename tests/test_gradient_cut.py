"""unfollowed: a function whose value follows a parameter its autograd gradient does not."""

from __future__ import annotations

import pytest
import torch

from latentfit._gradient_cut import unfollowed, value_and_grad_rows

F64 = torch.float64
BLOCKS = [("a", 0, 1), ("b", 1, 2)]


def _copy(t):
    with torch.no_grad():
        return t * 1.0


@pytest.mark.parametrize(
    "f, u, want",
    [
        # followed: a smooth function, at its mode (a gradient of zero), at a kink (autograd's
        # |x|' = 0 at 0), flat in a block, and a constant
        (lambda u: -((u - 1) ** 2).sum(), [1.0, 1.0, 1.0], None),
        (lambda u: -u[0].abs() - u[1:].abs().sum(), [0.0, 0.0, 0.0], None),
        (lambda u: -(u[0] ** 2), [0.3, 2.0, -1.0], None),
        (lambda u: torch.tensor(-1.0, dtype=F64), [0.3, 2.0, -1.0], None),
        (lambda u: torch.tensor(1e300, dtype=F64) - u[0], [0.3, 2.0, -1.0], None),
        # cut: a copy of a, of one entry of b, a difference of b's entries (moved unequally)
        (lambda u: -(_copy(u[0]) ** 2) - (u[1:] ** 2).sum(), [0.3, 2.0, -1.0], "a"),
        (lambda u: -(u[0] ** 2) - _copy(u[2]) ** 2, [0.3, 2.0, -1.0], "b"),
        (lambda u: -(u[0] ** 2) - _copy(u[1] - u[2]) ** 2, [0.3, 1.0, 1.0], "b"),
        # cut at the copy's own mode: its value still changes over the step
        (lambda u: -((_copy(u[0]) - 0.3) ** 2) - (u[1:] ** 2).sum(), [0.3, 2.0, -1.0], "a"),
    ],
)
def test_unfollowed_names_the_block_whose_gradient_is_cut(f, u, want):
    assert unfollowed(value_and_grad_rows(f), torch.tensor(u, dtype=F64), BLOCKS) == want


def test_a_block_where_the_function_is_not_finite_is_not_judged():
    def f(u):
        return torch.where(u[0] > 0.3, -torch.inf, -_copy(u[0]) - u[1:].sum())

    assert (
        unfollowed(value_and_grad_rows(f), torch.tensor([0.3, 0.0, 0.0], dtype=F64), BLOCKS) is None
    )


def test_a_function_that_draws_at_random_is_not_judged():
    """Its value at one point changes from call to call (dropout in a network): a change
    over the step says nothing about the gradient, and was taken for a cut."""
    g = torch.Generator().manual_seed(0)

    def f(u):
        return -(u**2).sum() + 0.1 * torch.randn((), generator=g, dtype=F64)

    u = torch.tensor([0.3, 2.0, -1.0], dtype=F64)
    assert unfollowed(value_and_grad_rows(f), u, BLOCKS) is None
