"""While a package compiles: the traced graph replayed by TorchScript's interpreter.

A first run of ``compile=True`` traces the leapfrog step for the child that compiles it
(compiled.py, background.py), and samples for 15-25 s before the package arrives. Run op by op
from Python (eager, or the traced ``torch.fx`` graph itself) a step costs ~2.5 µs of Python
dispatch per tensor operation, which is the whole cost of a small model's step. The same graph
recorded by ``torch.jit.trace`` runs in TorchScript's C++ interpreter at ~0.9 µs an operation
(eight schools, 4 chains: 76 µs a step against 219 µs; diamonds 128 against 390 µs), after a
~10 ms trace and no compiler. Until its package is loaded, each part runs so:

- the leapfrog: its static graph (``compiled.static_graph``, every size fixed) replayed, less
  the operations that compute nothing new at run time (simplify.py), its signs and factors of
  two carried rather than computed (scales.py), its gradient's scattered pieces concatenated
  (assemble.py), and with a mixture's (…, points, components) tensors held with the points
  dimension last (layout.py);
- the tree bookkeeping: ``kernels.merge_subtree`` traced once per number of leaves, as the
  sampler meets them (4-7 ms each), and replayed (25-30% cheaper than eager at 2-32 leaves);
  the first doubling's one-leaf subtree as ``kernels.merge_one_leaf`` (its None inputs left
  out); subtrees whose U-turn checks the eager function would do in blocks run eagerly;
- the work between two doublings (the last leaf written as the trajectory's new end, the next
  direction and end read): ``kernels.next_doubling``, traced once (~20 operations that cost
  a doubling ~25 µs of Python dispatch).

Where this torch has TorchScript's Static Runtime (``torch._C._jit_to_static_module``), the
trace runs there: the same operations as out-variants into buffers planned once, instead of a
tensor allocated per operation, 18-26% cheaper a call (``_static``; eight schools' first run
2.43 -> 1.96 s with the same draws).

The replay runs the aten operations of the graph the package is compiled from, in the same
order: its values are those of that graph run eagerly, bit for bit, and are checked against the
eager function before use (``compiled._agree``), as a package is. ``torch.jit.trace`` is
deprecated in favour of ``torch.export``, which records a graph but leaves running it to Python
or to a compiler; where this torch has no ``torch.jit.trace``, or the trace fails, the part runs
eagerly until its package arrives, as it did before, so nothing depends on it but speed.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable

import torch

from latentfit.mcmc.assemble import assembled_gradients
from latentfit.mcmc.kernels import (
    ONE_LEAF_NONE,
    merge_in_blocks,
    merge_one_leaf,
    merge_subtree,
    next_doubling,
)
from latentfit.mcmc.layout import components_outward
from latentfit.mcmc.scales import carry_scales
from latentfit.mcmc.simplify import simplify
from latentfit.mcmc.uturn import _NODE_CHUNK, LEVELS_FROM

__all__ = ["ReplayedMerge", "replay", "replay_graph"]


@contextlib.contextmanager
def _tracing():
    """``torch.jit.trace``'s deprecation notice and tracer warnings are torch's, not the
    user's: the graph is fixed-size by construction."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def replay(fn: Callable, example: tuple) -> Callable | None:
    """``fn``, a function of tensors whose every size is that of ``example``, recorded by
    ``torch.jit.trace`` on ``example``; None where it cannot be."""
    trace = getattr(getattr(torch, "jit", None), "trace", None)
    if trace is None:
        return None
    try:
        with _tracing(), torch.no_grad():
            traced = trace(fn, example, check_trace=False)
    except Exception:  # any failure of the tracer: the part runs eagerly until its package
        return None
    return _static(traced, example)


def _same(a, b) -> bool:
    a = a if isinstance(a, tuple | list) else (a,)
    b = b if isinstance(b, tuple | list) else (b,)
    return len(a) == len(b) and all(
        isinstance(x, torch.Tensor)
        and isinstance(y, torch.Tensor)
        and x.shape == y.shape
        and x.dtype == y.dtype
        and bool(((x == y) | (x.isnan() & y.isnan())).all())
        for x, y in zip(a, b, strict=True)
    )


def _static(traced: Callable, example: tuple) -> Callable:
    """``traced`` run by TorchScript's Static Runtime where this torch has it: the same
    graph's aten operations, but out-variants writing into buffers planned once, not a
    tensor allocated per operation (a leapfrog step 56 -> 41 µs on eight schools at 4 chains,
    211 -> 169 µs on gauss_mix; the bookkeeping 150 -> 125 µs). Held to the trace's outputs
    bit for bit on the example, to a second call leaving the first's outputs and the inputs
    as they were; ``traced`` itself where any of that fails, and on other devices than the
    CPU."""
    to_static = getattr(torch._C, "_jit_to_static_module", None)
    if to_static is None or any(
        isinstance(x, torch.Tensor) and x.device.type != "cpu" for x in example
    ):
        return traced  # Static Runtime is a CPU runtime; a GPU's launches are asynchronous
    try:
        with _tracing(), torch.no_grad():
            if isinstance(traced, torch.jit.ScriptModule):
                # not frozen: freezing folds the graph's constants in a way that moved the
                # last bits of diamonds' one-chain step (its trace then ran instead, 33% slower)
                runner = to_static(traced._c)
            else:
                runner = to_static(traced.graph)
            inputs = [x.clone() for x in example]
            want = traced(*example)
            first = runner(*example)
            kept = [x.clone() for x in (first if isinstance(first, tuple) else (first,))]
            second = runner(*[x.clone() for x in example])
            if not (
                _same(first, want)
                and _same(second, want)
                and _same(tuple(kept), first)
                and _same(tuple(inputs), tuple(example))
            ):
                return traced
    except Exception:  # no Static Runtime for this graph: TorchScript's interpreter
        return traced
    return runner


def replay_graph(graph: torch.fx.GraphModule, example: tuple) -> Callable | None:
    """A static graph of aten operations (``compiled.static_graph``) replayed without the
    operations that compute nothing new at run time (simplify.py: the leapfrog's 79 -> 57 on
    eight schools, a step 69 -> 56 µs), then with the rewrites of scales.py, assemble.py and
    layout.py (eight schools 57 -> 46 operations, 42 -> 34 µs at 4 chains); each rewrite that
    fails or changes the graph's outputs is left out. Its checks are run after it
    (:func:`_checks_out`)."""
    for rewrite in (simplify, carry_scales, assembled_gradients, components_outward):
        try:
            with torch.no_grad():
                graph = rewrite(graph, example)
        except Exception:  # any failure of a rewrite: the graph runs without that one
            pass
    graph, checks = _checks_out(graph)
    fn = replay(graph, example)
    if fn is None or not checks:
        return fn
    n, single = graph.graph.output_node().meta["latentfit_outputs"]

    def checked(*inputs):
        out = fn(*inputs)
        extra = iter(out[n:])
        for target, tensors, args, kwargs in checks:
            values = {i: next(extra) for i in tensors}
            target(*(values.get(i, a) for i, a in enumerate(args)), **kwargs)
        return out[0] if single else out[:n]

    return checked


def _checks_out(graph: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, list]:
    """``graph`` without its operations that return nothing (checks that raise:
    ``aten._linalg_check_errors`` after a Cholesky factor or an inverse), their tensor
    arguments added to its outputs, and those operations as ``(op, positions of its tensor
    arguments, its arguments, its keyword arguments)``, to run on them after each replay.

    ``torch.jit.trace`` drops an operation whose result nothing uses, and so these: a replayed
    density then gave a failed factor's values (the semicircle's lp NaN, one that used the
    factor only in a solve, finite numbers) instead of raising, which rejects the chains there
    (``Target.log_prob_and_grad``) as the eager sampler and the compiled package do. Run after
    the replay, the check raises as it does eagerly (~2 µs a call; only for graphs with
    checks). ``graph`` itself is left as it is."""
    nodes = [
        n
        for n in graph.graph.nodes
        if n.op == "call_function"
        and getattr(n.target, "_schema", None) is not None
        and not n.target._schema.returns
    ]
    if not nodes:
        return graph, []
    gm = copy.deepcopy(graph)
    g = gm.graph
    output = g.output_node()
    single = not isinstance(output.args[0], tuple | list)
    outs = [output.args[0]] if single else list(output.args[0])
    output.meta["latentfit_outputs"] = (len(outs), single)  # before the checks' arguments
    checks = []
    for node in [
        n for n in g.nodes if n.op == "call_function" and n.name in {m.name for m in nodes}
    ]:
        tensors = [i for i, a in enumerate(node.args) if isinstance(a, torch.fx.Node)]
        outs.extend(node.args[i] for i in tensors)
        checks.append((node.target, tensors, node.args, dict(node.kwargs)))
        g.erase_node(node)
    output.args = (tuple(outs),)
    g.lint()
    gm.recompile()
    return gm, checks


class ReplayedMerge:
    """``merge_subtree`` for one metric kind as the compiled bookkeeping is called
    (``(*args, ps_i, hi, lo, last)``), replayed: a trace per number of chains and of leaves
    ``L``, made and checked the first time such a subtree is merged (``agrees(replayed, L,
    seed, chains)``, ``compiled.merge_agrees``, on a random subtree of that size).
    From ``uturn.LEVELS_FROM`` elements of momenta the trace checks U-turns level by level
    (``kernels.merge_in_blocks``). Where a trace fails or disagrees, or where the U-turn checks
    of all nodes at once would exceed the eager function's block (``uturn._NODE_CHUNK``),
    that size runs eagerly (``kernels.merge_in_blocks``)."""

    def __init__(self, dense: bool, agrees: Callable[..., bool]):
        self.dense, self.agrees = dense, agrees
        self.by_leaves: dict = {}  # 1 (the first doubling's merge), or (chains, L)
        self.between: list[Callable | None] = []  # kernels.next_doubling, once traced

    def next_doubling(self, *args, d: int):
        """``kernels.next_doubling`` (the work between two doublings) replayed: traced the
        first time and held to the eager function bit for bit on those inputs and on random
        ones of the same shapes (a graph that read an input stale would fail the second);
        eager where that fails."""
        if not self.between:
            self.between.append(_make_between(args, d))
        fn = self.between[0]
        return next_doubling(*args, d=d) if fn is None else fn(*args)

    def one_leaf(self, *args):
        """The first doubling's merge (one leaf: ``active`` and ``u01`` None, no node tables),
        replayed as ``kernels.merge_one_leaf``: traced the first time and checked on a random
        one-leaf subtree (``agrees(replayed, 1, 1)``); eager where that fails."""
        kept = tuple(a for i, a in enumerate(args) if i not in ONE_LEAF_NONE)
        if 1 not in self.by_leaves:
            self.by_leaves[1] = self._make_one(kept)
        fn = self.by_leaves[1]
        return merge_one_leaf(self.dense, *kept) if fn is None else fn(*kept)

    def _make_one(self, kept: tuple) -> Callable | None:
        dense = self.dense

        def merge_first(*a):  # a plain function: the tracer names what it records
            return merge_one_leaf(dense, *a)

        fn = replay(merge_first, kept)
        if fn is None:
            return None
        try:
            ok = self.agrees(fn, 1, 1)
        except Exception:  # the replay raised where the eager function did not
            ok = False
        return fn if ok else None

    #: a merge of any number of chains is replayed (a trace per number): a doubling of few
    #: growing chains merges only those (narrow.py)
    any_rows = True

    def __call__(self, *args):
        leaves = args[0]  # (c, 3, L, p)
        c, _, L, d = leaves.shape
        key = (c, L)
        if key not in self.by_leaves:
            levels = c * L * d >= LEVELS_FROM  # the U-turn checks level by level
            fits = levels or c * (L - 1) * 6 * d <= _NODE_CHUNK
            self.by_leaves[key] = self._make(args, levels) if fits else None
        fn = self.by_leaves[key]
        return merge_in_blocks(self.dense, *args) if fn is None else fn(*args)

    def _make(self, args: tuple, levels: bool) -> Callable | None:
        dense = self.dense

        def merge(*a):  # a plain function: the tracer names what it records
            if levels:  # the node tables unread (uturn.LEVELS_FROM)
                return merge_in_blocks(dense, *a)
            return merge_subtree(dense, *a)

        fn = replay(merge, args)
        if fn is None:
            return None
        try:
            c, _, L, _ = args[0].shape
            ok = self.agrees(fn, L, L, c)
        except Exception:  # the replay raised where the eager function did not
            ok = False
        return fn if ok else None


def _make_between(args: tuple, d: int) -> Callable | None:
    def between(*a):  # a plain function: the tracer names what it records
        return next_doubling(*a, d=d)

    fn = replay(between, args)
    if fn is None:
        return None
    try:
        ok = all(_same(fn(*x), between(*x)) for x in (args, _moved(args)))
    except Exception:  # the replay raised where the eager function did not
        ok = False
    return fn if ok else None


def _moved(args: tuple) -> tuple:
    """``next_doubling``'s inputs with every value changed but ``scratch`` and ``rows``
    (the row indices): new ends, leaf, flags, sides, uniforms and steps."""
    g = torch.Generator(device=args[0].device).manual_seed(1)

    def like(x):
        if x.dtype == torch.bool:
            return torch.rand(x.shape, generator=g, device=x.device) < 0.5
        if x.dtype == torch.long:  # a side: 0 or 1
            return torch.randint(0, 2, x.shape, generator=g, device=x.device)
        return torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)

    return tuple(x if i in (8, 9) else like(x) for i, x in enumerate(args))
