import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one intra-op thread is faster, and on a shared 2-core machine it avoids
    OpenMP threads spinning against other processes (100× slower steps were seen)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
