"""Divisions by a broadcast tensor, in a traced graph, as multiplications by its reciprocal.

A log-density standardises its data by a scale: a mixture's ``(y - mu) / sigma`` divides
every point of a (chains, points, components) tensor by a (chains, 1, components) one, and
autograd's backward pass divides by it again (the gradient of a quotient). Inductor compiles
each of these as a division per element inside the loop over the points. A vector division
costs ~16 cycles for 8 doubles against half a cycle for a multiplication, so on a
two-component mixture of 1,000 points (posteriordb's gauss_mix, 32 chains) the divisions were
about half of a compiled leapfrog step: 634-667 µs a step, against 341-368 µs once the four
divisions by the broadcast scale are multiplications by its reciprocal, computed once over
the (chains, components) scales (benchmarks/README.md).

The rewrite applies to the graph that the compiled packages are built from and that the
replay runs (compiled.py, replay.py), never to the eager sampler. It changes a quotient by at
most one rounding (``a * (1/b)`` against ``a / b``), which the check of each package against
the eager step allows; zeros, infinities and NaN give the same values either way. Only a
divisor smaller than the quotient is rewritten, where one reciprocal serves many elements;
a division of two tensors of the same size stays a division.
"""

from __future__ import annotations

import torch

__all__ = ["reciprocal_divisions"]

_DIV = torch.ops.aten.div.Tensor


def _numel(node: torch.fx.Node) -> int | None:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    if not isinstance(val, torch.Tensor) or not val.is_floating_point():
        return None
    n = val.numel()
    return n if type(n) is int else None  # symbolic sizes (a dynamic trace) are left as they are


def reciprocal_divisions(graph: torch.fx.GraphModule) -> int:
    """Rewrite, in place, every ``aten.div.Tensor(a, b)`` of ``graph`` whose divisor ``b`` is a
    floating tensor with fewer elements than the quotient as ``a * reciprocal(b)``, one
    reciprocal per divisor; returns how many divisions were rewritten. The nodes need the
    trace's fake values (``node.meta["val"]``) to be sized."""
    reciprocals: dict[torch.fx.Node, torch.fx.Node] = {}
    rewritten = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target is not _DIV or len(node.args) != 2:
            continue
        a, b = node.args
        n_out, n_b = _numel(node), _numel(b)
        if n_out is None or n_b is None or n_b >= n_out or node.kwargs:
            continue
        if b.meta["val"].dtype != node.meta["val"].dtype:  # a promoted quotient stays one
            continue
        with graph.graph.inserting_before(node):
            if b not in reciprocals:
                reciprocals[b] = graph.graph.call_function(torch.ops.aten.reciprocal.default, (b,))
                # its value's size and dtype, without running a meta kernel (which imports dynamo)
                reciprocals[b].meta["val"] = torch.empty_like(b.meta["val"])
            product = graph.graph.call_function(torch.ops.aten.mul.Tensor, (a, reciprocals[b]))
        product.meta["val"] = node.meta["val"]
        node.replace_all_uses_with(product)
        graph.graph.erase_node(node)
        rewritten += 1
    if rewritten:
        graph.graph.lint()
        graph.recompile()
    return rewritten
