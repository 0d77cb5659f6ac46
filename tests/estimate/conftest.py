import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Estimation tests work on tensors of a few hundred numbers, where intra-op threads only
    add synchronisation; on a loaded machine they slow these tests several-fold. The previous
    setting is restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
