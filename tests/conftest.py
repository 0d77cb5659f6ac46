import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from latentfit.datasets import load_faithful
from tests.device_tags import DeviceTags, Simulated

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Property tests draw the same examples on every run, so CI never turns red on a case a
# previous run did not try. "ci" (the default, what `make test` runs) keeps hypothesis's
# default of 100 examples per test; tests/property/ scales its own per-test budgets from this
# number (see tests/property/oracle.py `budget`), so that suite stays within a few minutes.
# HYPOTHESIS_PROFILE=dev searches afresh with 20x the examples, for hunting bugs locally
# ("explore" is the older name of a fresh search at the default size).
settings.register_profile(
    "ci", derandomize=True, max_examples=100, deadline=None, print_blob=True, database=None
)
settings.register_profile("dev", max_examples=2000, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: the files that take longest (seconds of one core, measured under `make test`), longest
#: first: run first, so that under `-n 2 --dist loadfile --no-loadscope-reorder` no worker is
#: left with one of them at the end while the other has finished. Only an order: a file not
#: named here runs after them, in collection order. (xdist's default reorder sorts files by
#: their number of tests, which put the compiling files, with few tests each, last.)
SLOW_FILES = (
    "tests/mcmc/test_compiled.py",  # 74 s: compile=True builds its packages, ~15 s each
    "tests/cli/test_outputs.py",  # 71
    "tests/em/test_distributed.py",  # 52: torchrun process groups
    "tests/cli/test_usage_errors.py",  # 38
    "tests/cli/test_models.py",  # 35
    "tests/mcmc/test_compiled_cache.py",  # 35
    "tests/cli/test_compile.py",  # 33: numba kernels compiled in fresh processes
    "tests/test_compiled_fallbacks.py",  # 29
    "tests/mcmc/test_nuts.py",  # 26
    "tests/property/test_cli.py",  # 26
    "tests/test_readme.py",  # 25
    "tests/mcmc/test_posteriordb.py",  # 21
    "tests/mcmc/test_background.py",  # 21
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return SLOW_FILES.index(path) if path in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)  # stable: as collected within a file and after the named files


@pytest.fixture(scope="session", autouse=True)
def pythons_own_sigint():
    """Tests press Ctrl-C for real (``signal.raise_signal``; latentfit._interrupt). A process
    started in the background by a shell without job control ignores SIGINT (POSIX), and every
    press would then be nothing (53 tests failed so): the session runs with Python's own
    handler, as one started at a terminal does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session", autouse=True)
def compiled_cache_dir(tmp_path_factory):
    """compile=True keeps compiled packages on disk (mcmc/compiled_cache.py): in a folder of
    the test session's, never the user's cache, unless LATENTFIT_CACHE_DIR is set already
    (to rerun the suite with warm packages)."""
    if os.environ.get("LATENTFIT_CACHE_DIR"):
        yield Path(os.environ["LATENTFIT_CACHE_DIR"])
        return
    path = tmp_path_factory.mktemp("latentfit-cache")
    os.environ["LATENTFIT_CACHE_DIR"] = str(path)
    yield path
    del os.environ["LATENTFIT_CACHE_DIR"]
    from latentfit.mcmc import builds

    builds.wait(timeout=0)  # children still compiling for a test's run: not past the session


@pytest.fixture(autouse=os.environ.get("LATENTFIT_DEVICE_TAGS") == "all")
def device_tags_everywhere():
    """``LATENTFIT_DEVICE_TAGS=all``: every test inside ``DeviceTags``, not only the
    device-aware ones (a hunt: a model given ``device=None`` resolves it as the device, so any
    test that fits one checks where its tensors would live; slower, not part of make test).
    Its reports need reading: tests that hand latentfit's internals tensors of their own, and
    a "cpu" typed on the command line, look like the host to it."""
    with DeviceTags() as tags:
        yield
    assert not tags.mixed, "tensors of two devices on CUDA:\n" + tags.report()


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device-aware test runs on the CPU and, when one is present, on CUDA. On the CPU
    it runs inside ``DeviceTags`` (tests/device_tags.py), which fails the test where latentfit
    combines a tensor it made for ``device`` with one it made without ``device=``: the code
    that a CUDA run would stop on with "Expected all tensors to be on the same device", caught
    on machines that have no GPU."""
    if request.param != "cpu":
        yield request.param
        return
    with DeviceTags() as tags:
        yield Simulated(request.param)
    assert not tags.mixed, "tensors of two devices on CUDA:\n" + tags.report()


@pytest.fixture(scope="module")
def faithful_csv(tmp_path_factory):
    """Old Faithful written as a CSV with a header, for command-line tests: (path, X)."""
    path = tmp_path_factory.mktemp("data") / "faithful.csv"
    X = load_faithful().data.numpy()
    np.savetxt(path, X, delimiter=",", header="eruptions,waiting", comments="")
    return path, X
