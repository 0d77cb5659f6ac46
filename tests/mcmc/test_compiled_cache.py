"""The on-disk cache of compiled packages (mcmc/compiled_cache.py): what its key sees, that a
second compile of the same computation loads instead of compiling, and that a corrupt,
disagreeing or half-written package never reaches the sampler.

Each package takes seconds to compile, so one small density serves every test."""

from __future__ import annotations

import pytest
import torch
import torch.distributions as D
from torch.distributions import constraints

from latentfit.errors import CompileCacheWarning
from latentfit.mcmc import Target, compiled_cache
from latentfit.mcmc.compiled import compile_leapfrog
from latentfit.mcmc.kernels import Metric, State, _leapfrog

F64 = torch.float64
Y = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=F64)


def _density(scale: float = 2.0, y: torch.Tensor = Y):
    def log_density(mu, sigma):
        return (
            D.Normal(0.0, scale).log_prob(mu)
            + D.HalfNormal(1.0).log_prob(sigma)
            + D.Normal(mu[..., None], sigma[..., None]).log_prob(y).sum(-1)
        )

    return log_density


def _target(**kwargs) -> Target:
    return Target(
        _density(**kwargs),
        {"mu": (), "sigma": ()},
        {"sigma": constraints.positive},
        vectorized=True,
    )


def _state(target: Target, c: int = 3) -> State:
    u = torch.linspace(-1, 1, c * target.n_free, dtype=F64).reshape(c, target.n_free)
    lp, grad = target.log_prob_and_grad(u)
    return State(u, lp, grad)


def _key(target: Target, c: int = 3, tag: str = "t") -> str | None:
    from latentfit.mcmc.compiled import _raw_step

    state = _state(target, c)
    e = torch.full((c, 1), 0.1, dtype=F64)
    example = (state.u, state.grad, torch.ones_like(state.u), e, e / 2, torch.ones_like(state.u))
    return compiled_cache.fingerprint(_raw_step(target, False), example, tag)


def test_the_key_sees_the_data_the_prior_the_chains_and_nothing_else():
    base = _key(_target())
    assert base is not None and base == _key(_target())  # a new Target of the same model
    assert _key(_target(scale=2.5)) != base  # a prior's scale: a scalar argument
    assert _key(_target(y=Y + 1e-12)) != base  # the data the density holds, to the last bit
    assert _key(_target(y=Y.float())) != base  # its dtype
    assert _key(_target(), c=4) != base  # the number of chains
    assert _key(_target(), tag="other") != base  # what is compiled (leapfrog, metric kind)

    def raises(mu, sigma):
        raise ValueError("no key for a function that fails on the example")

    bad = Target(raises, {"mu": (), "sigma": ()}, vectorized=True)
    assert _key(bad) is None


def test_the_key_sees_every_input_size_layout_and_dtype():
    """A package is compiled for its inputs' sizes and layouts: a computation whose operations
    never name a size (elementwise arithmetic) must still get a key per size, or a package
    would be called with inputs it was not compiled for."""

    def fn(x, y):
        return (x.exp() * y,)

    x = torch.ones(4, 3, dtype=F64)
    keys = {
        compiled_cache.fingerprint(fn, example, "t")
        for example in [
            (x, x.clone()),
            (torch.ones(32, 3, dtype=F64), torch.ones(32, 3, dtype=F64)),
            (x, torch.ones(3, 4, dtype=F64).T),  # same sizes, transposed layout
            (x.float(), x.float()),
            (x.clone(), x.clone()),  # the same again: named by position, not identity
        ]
    }
    assert None not in keys and len(keys) == 4


def _check_step(fn, target, state):
    metric = Metric(torch.ones_like(state.u))
    p = torch.randn(state.u.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    e = torch.full((state.u.shape[0], 1), 0.2, dtype=F64)
    a, pa = _leapfrog(target, metric, state, p, e, e / 2)
    b, pb = fn(target, metric, state, p, e, e / 2)
    torch.testing.assert_close(b.u, a.u, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pb, pa, rtol=1e-10, atol=1e-10)


def test_a_second_compile_loads_the_package_and_bad_packages_are_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    target = _target(scale=1.7)
    state = _state(target)
    step = torch.full((3,), 0.1, dtype=F64)
    metric = Metric(torch.ones_like(state.u))

    fn, _ = compile_leapfrog(target, metric, state, step)
    packages = list((tmp_path / "compiled").glob("*.pt2"))
    assert fn is not None and len(packages) == 1
    _check_step(fn, target, state)

    # the same model again, from a new Target: loaded, nothing compiled
    def no_build(*args, **kwargs):
        raise AssertionError("compiled again although the package is on disk")

    with monkeypatch.context() as m:
        m.setattr(compiled_cache, "build", no_build)
        m.setattr("latentfit.mcmc.compiled._inductor", no_build)
        fn, seconds = compile_leapfrog(_target(scale=1.7), metric, state, step)
    assert fn is not None and seconds < 2.0
    _check_step(fn, target, state)

    # a corrupt package (a crash of another tool, a full disk): compiled again and replaced
    packages[0].write_bytes(b"not a package")
    fn, _ = compile_leapfrog(target, metric, state, step)
    assert fn is not None and packages[0].stat().st_size > 1000
    _check_step(fn, target, state)

    # a package that computes something else under this key: discarded, not used
    with monkeypatch.context() as m:
        m.setattr(compiled_cache, "load", lambda key, device: lambda *xs: [x * 0 for x in xs])
        m.setattr(compiled_cache, "build", _fails)
        with pytest.warns(CompileCacheWarning, match="ahead-of-time compiling failed"):
            fn, _ = compile_leapfrog(target, metric, state, step)
    assert not packages[0].exists()  # discarded; the step came from inductor in-process
    assert fn is not None
    _check_step(fn, target, state)


def _fails(*args, **kwargs):
    raise OSError("ahead-of-time compiling failed")


def test_a_failed_build_leaves_no_partial_package(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))

    def half_written(program, package_path, **kwargs):
        with open(package_path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("torch._inductor.aoti_compile_and_package", half_written)
    target = _target(scale=0.9)
    state = _state(target)
    with pytest.warns(
        CompileCacheWarning, match="not kept in .* because OSError: disk full"
    ) as rec:
        fn, _ = compile_leapfrog(
            target, Metric(torch.ones_like(state.u)), state, torch.full((3,), 0.1, dtype=F64)
        )
    assert rec[0].filename == __file__  # the user's line, not latentfit's
    assert list(tmp_path.rglob("*")) == [tmp_path / "compiled"]  # nothing half-written
    assert fn is not None  # compiled by inductor in-process instead
    _check_step(fn, target, state)


@pytest.mark.parametrize("xdg", [True, False])
def test_where_packages_go(tmp_path, monkeypatch, xdg):
    monkeypatch.delenv("LATENTFIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert compiled_cache.cache_dir() == tmp_path / "xdg" / "latentfit" / "compiled"
    else:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        assert compiled_cache.cache_dir() == tmp_path / ".cache" / "latentfit" / "compiled"


def test_pruning_removes_the_least_recently_used_packages_first(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    folder = compiled_cache.cache_dir()
    folder.mkdir(parents=True)
    for age, name in enumerate(["new", "mid", "old", "kept"]):
        f = folder / f"{name}.pt2"
        f.write_bytes(b"x" * 100)
        os.utime(f, (1e9 - age * 100, 1e9 - age * 100))
    compiled_cache.prune(limit=250, keep=folder / "kept.pt2")
    assert sorted(f.stem for f in folder.glob("*.pt2")) == ["kept", "new"]


def test_the_tree_bookkeeping_compiles_in_a_child_process_and_is_loaded(tmp_path, monkeypatch):
    """A first run compiles NUTS's bookkeeping in a child process while it compiles the
    leapfrog itself; the package the child stores is what compile_merge then loads."""
    from latentfit.mcmc.compiled import compile_merge, start_merge_build

    monkeypatch.setenv("LATENTFIT_CACHE_DIR", str(tmp_path))
    state = _state(_target(), c=3)
    metric = Metric(torch.ones_like(state.u))
    child = start_merge_build(metric, state)
    assert child is not None
    child.wait(timeout=600)
    assert child.done() and not list((tmp_path / "compiled" / "jobs").glob("*.job"))
    assert len(list((tmp_path / "compiled").glob("*.pt2"))) == 1
    assert start_merge_build(metric, state) is None  # stored: no child to start

    def no_build(*args, **kwargs):
        raise AssertionError("compiled again although the child stored the package")

    monkeypatch.setattr(compiled_cache, "build", no_build)
    monkeypatch.setattr("latentfit.mcmc.compiled._inductor", no_build)
    merge, _ = compile_merge(metric, state)
    assert merge is not None
