"""mcmc/record.py: the leapfrog's graph recorded from one eager step holds the operations
torch's own tracer (``make_fx``) writes and gives that graph's values bit for bit, away from
the example too; it imports no dynamo; what a fixed graph cannot hold is refused, and the
caller's ``make_fx`` trace decides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from latentfit.mcmc import compiled, record
from latentfit.mcmc.reciprocal import reciprocal_divisions
from tests.mcmc.test_replay import _equal
from tests.mcmc.test_simplify import leapfrog_parts_of

F64 = torch.float64


def _leapfrog(name: str, c: int = 3):
    _, _, _, raw, example = leapfrog_parts_of(name, c, seed=2)
    return raw, example


def _kinds(graph: torch.fx.GraphModule) -> list[str]:
    return [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]


def _moved(example: tuple, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return tuple(x + 0.01 * torch.randn(x.shape, generator=g, dtype=x.dtype) for x in example)


@pytest.mark.parametrize("name", ["eight_schools", "arK", "gauss_mix", "diamonds"])
def test_the_recorded_leapfrog_is_make_fx_s_graph(name):
    raw, example = _leapfrog(name)
    recorded = record.record_graph(raw, example)
    traced, _ = compiled._trace(raw, example)  # make_fx, with the same rewrites
    reciprocal_divisions(recorded)
    # the same operations in the same order, but one reciprocal per constant divisor where
    # make_fx holds a constant used twice as two (eight schools' sigma)
    kinds, want = _kinds(recorded), _kinds(traced)
    assert [k for k in kinds if "reciprocal" not in k] == [k for k in want if "reciprocal" not in k]
    assert 0 < kinds.count("aten.reciprocal.default") <= want.count("aten.reciprocal.default") or (
        "aten.reciprocal.default" not in want
    )
    for seed in range(3):  # away from the example: nothing of its values is baked in
        moved = _moved(example, seed)
        for got, expected in zip(recorded(*moved), traced(*moved), strict=True):
            assert _equal(got, expected)


def test_recording_imports_no_dynamo():
    code = (
        "import sys, torch\n"
        "from tests.mcmc.test_record import _leapfrog\n"
        "from latentfit.mcmc import compiled\n"
        "raw, example = _leapfrog('eight_schools')\n"
        "graph = compiled.static_graph(raw, example)\n"
        "assert graph is not None\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "False", out.stderr


def test_constants_multi_output_operations_and_values_made_outside_torch():
    w = torch.tensor([0.5, 2.0, 3.0], dtype=F64)

    def f(x):
        t = (x * 3).exp()
        del t  # freed: a later tensor may take its address
        fresh = torch.from_numpy(np.array([1.0, 2.0, 3.0]))  # made without an operation
        a, b, c = torch.unbind(x * w, dim=0)  # a multi-output operation
        return (a + b * c + fresh + w.sum(),)

    x = torch.randn(3, 3, dtype=F64)
    graph = record.record_graph(f, (x,))
    assert graph is not None
    assert "aten.unbind.int" in _kinds(graph)
    for seed in range(3):
        z = torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(seed))
        assert _equal(graph(z)[0], f(z)[0])


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: (x * 2 if x.sum() > 0 else x * 3,),  # a branch on a value
        lambda x: (x[x > 0].sum().reshape(1),),  # a size that depends on the values
        lambda x: (x.nonzero().double(),),
        lambda x: (x.mul_(2),),  # written in place
        lambda x: (torch.unique(x),),
        lambda x: x * 2,  # not a tuple
    ],
    ids=["branch", "mask", "nonzero", "in_place", "unique", "not_a_tuple"],
)
def test_what_a_fixed_graph_cannot_hold_is_refused(fn):
    x = torch.randn(4, dtype=F64)
    assert record.record_graph(fn, (x.clone(),)) is None


def test_a_step_that_raises_is_refused():
    def f(x):
        raise ValueError("no")

    assert record.record_graph(f, (torch.zeros(2, dtype=F64),)) is None


def test_a_refused_step_is_traced_by_make_fx(monkeypatch):
    raw, example = _leapfrog("arK")
    calls = []
    monkeypatch.setattr(record, "_Recorder", _refusing(calls))
    monkeypatch.setattr(compiled, "record_graph", record.record_graph)
    graph = compiled.static_graph(raw, example)
    assert calls  # the recorder was tried, refused, and make_fx traced the step
    for got, expected in zip(graph(*example), raw(*example), strict=True):
        assert _equal(got, expected)


def _refusing(calls):
    class Refusing(record._Recorder):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            raise record._NotAGraph(str(func))

    return Refusing
