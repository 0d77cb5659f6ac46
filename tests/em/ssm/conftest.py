import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The state-space tests use tiny matrix products; on the shared 2-core test machine (xdist -n 2)
    a second BLAS thread per worker only oversubscribes it. Restored after every test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
