"""tests/device_tags.py, the CPU-side check of device placement, against cases whose answer is
known: the bug it exists for (a tensor latentfit makes without ``device=`` meeting the model's
data), the code that is right (``device=x.device``, ``zeros_like``, ``.to(device)``, a
module moved with ``.to``), and what torch allows across devices (0-dim tensors, basic-index
assignment). Code "of latentfit's" runs from a file name inside the package
(``_library_code``): the tool tells latentfit's frames from a test's by their file."""

from __future__ import annotations

import numpy as np
import torch

from latentfit._validation import as_float_tensor
from latentfit.em.gaussian import weighted_mean
from latentfit.em.initialize import kmeans
from tests.device_tags import LIBRARY, DeviceTags, Simulated, paused


def _data(device):
    return as_float_tensor(np.random.default_rng(0).normal(size=(50, 2)), device=device)


def _library_code(source: str, **names):
    """Run ``source`` as if it were a file of latentfit's (the tool tells latentfit's frames
    from a test's by their file): returns its namespace."""
    ns = {"torch": torch, **names}
    exec(compile(source, LIBRARY + "_device_tags_case.py", "exec"), ns)
    return ns


def test_a_library_host_tensor_meeting_device_data_is_reported_with_where_it_was_made():
    with DeviceTags() as tags:
        X = _data(torch.device(Simulated("cpu")))
        # the GaussianMixture bug the first GPU run found: an eye made without device=
        _library_code("out = X - 1e-6 * torch.eye(2, dtype=X.dtype)", X=X[:2])
    assert len(tags.mixed) == 1
    assert tags.mixed[0].startswith("sub at latentfit/_device_tags_case.py:1: a device tensor")
    assert "(eye at latentfit/_device_tags_case.py:1)" in tags.mixed[0]
    assert "_device_tags_case.py" in tags.report()
    with DeviceTags() as tags:  # the same with device= is right
        X = _data(torch.device(Simulated("cpu")))
        _library_code("out = X - torch.eye(2, dtype=X.dtype, device=X.device)", X=X[:2])
    assert tags.mixed == []


def test_what_torch_allows_across_devices_is_not_reported_and_advanced_indexing_is():
    """Made in latentfit without device=: a 0-dim tensor, a value put in by basic indexing
    (a copy across devices) and a module moved with .to are fine on a GPU; a value put in by
    advanced indexing (index_put_) is not."""
    with DeviceTags() as tags:
        X = _data(torch.device(Simulated("cpu")))
        _library_code(
            "a = X.sum() * torch.tensor(2.0)\n"
            "X[:2] = torch.zeros(2, 2, dtype=X.dtype)\n"
            "net = torch.nn.Linear(2, 1).double().to(X.device)\n"
            "y = net(X)\n",
            X=X,
        )
    assert tags.mixed == []
    with DeviceTags() as tags:
        X = _data(torch.device(Simulated("cpu")))
        _library_code(
            "X[torch.tensor([0, 1]).to(X.device)] = torch.zeros(2, 2, dtype=X.dtype)", X=X
        )
    assert len(tags.mixed) == 1 and tags.mixed[0].startswith("__setitem__ at latentfit/")


def test_code_that_keeps_to_the_device_is_not_reported():
    with DeviceTags() as tags:
        dev = Simulated("cpu")
        X = _data(torch.device(dev))
        w = torch.ones(50, dtype=X.dtype, device=X.device)
        kmeans(X, 2, w, torch.Generator().manual_seed(0))
        weighted_mean(X, torch.zeros_like(w) + 1)
        y = torch.arange(3.0).to(dev) + X[:3, 0]  # moved first
        z = X.sum() * torch.tensor(2.0)  # a 0-dim host tensor: allowed by torch
        X[:2] = torch.zeros(2, 2)  # basic indexing copies across devices
        net = torch.nn.Linear(2, 1).double().to(dev)
        net(X)
        assert y.shape == (3,) and z.dim() == 0
    assert tags.mixed == []


def test_a_test_s_own_reference_computation_is_not_reported():
    with DeviceTags() as tags:
        X = _data(torch.device(Simulated("cpu")))
        with paused():
            ref = kmeans(X.clone(), 2, torch.ones(50, dtype=X.dtype), torch.Generator())
        host = torch.ones(50, dtype=X.dtype)  # made by the test, not by latentfit
        assert (X[:, 0] * host).shape == (50,) and ref[0].shape == (2, 2)
    assert tags.mixed == []
