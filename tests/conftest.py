import os

import pytest
import torch
from hypothesis import settings

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Property tests draw the same examples on every run, so CI never turns red on a case a
# previous run did not try; set HYPOTHESIS_PROFILE=explore locally to search afresh.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device-aware test runs on the CPU and, when one is present, on CUDA."""
    return request.param
