"""A log-sum-exp over a few components, written out as slices while a log-density is traced for
``compile=True``, so that inductor vectorises the compiled code along the data, not along
the components.

A mixture's log-density sums its components out with ``torch.logsumexp(comp, -1)`` over a
(chains, points, components) tensor. Inductor vectorises a loop along the tensor's last
dimension, so the backward pass of that log-sum-exp (``exp(comp - lse)``, the
responsibilities) runs one vector per point holding 2 of its 16 lanes for two components:
more than half of a compiled leapfrog step on a two-component mixture of 1,000 points was
Sleef's ``exp`` (benchmarks/README.md). Written as ``log(Σ_k exp(comp[..., k] - m)) + m``
over the slices ``comp[..., k]`` before autograd sees it, the forward and backward passes run
along the points instead: 472-484 µs a step at 32 chains against 822-940 µs. On a mixture of
K one-dimensional normals over 1,000 points (32 chains), a step took 644 against 987 µs for
K = 4, 917-1,047 against 5,135-5,266 µs for K = 8, 2,062 against 6,253 µs for K = 16 and
4,741 against 8,494 µs for K = 32.

The rewrite is the same function (the shift ``m`` is the largest term, taken as zero where it
is infinite, as ``torch.logsumexp`` does; its gradient is the softmax either way) and applies
only to a dimension of static size 2 to 32 (``SMALL``) while tracing; the eager sampler and
every other caller of ``torch.logsumexp`` are untouched.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["SMALL", "ShortLogSumExp"]

#: the largest dimension written out as slices
SMALL = 32

_LOGSUMEXP = {torch.logsumexp, torch.Tensor.logsumexp, torch.special.logsumexp}


def _short_logsumexp(x: torch.Tensor, dim: int, keepdim: bool) -> torch.Tensor:
    parts = x.unbind(dim)
    m = parts[0]
    for p in parts[1:]:
        m = torch.maximum(m, p)
    # all -inf: -inf; an inf term: inf. The shift is kept finite by clamping it to the
    # dtype's range, one operation where ``where(|m| == inf, 0, m)`` took three (a replayed
    # gauss_mix step ~8 µs less): a term of -inf or inf still gives exp 0 or inf after it.
    big = torch.finfo(x.dtype).max
    m = torch.clamp(m, -big, big).detach()
    s = torch.exp(parts[0] - m)
    for p in parts[1:]:
        s = s + torch.exp(p - m)
    out = torch.log(s) + m
    return out.unsqueeze(dim) if keepdim else out


class ShortLogSumExp(TorchFunctionMode):
    """While active, ``torch.logsumexp`` (function, method or ``torch.special``) over one
    dimension of static size 2 to ``SMALL`` is computed from that dimension's slices."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LOGSUMEXP and args and isinstance(args[0], torch.Tensor):
            x = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            if isinstance(dim, (list, tuple)) and len(dim) == 1:
                dim = dim[0]
            if (
                isinstance(dim, int)
                and -x.dim() <= dim < x.dim()
                and type(x.shape[dim]) is int  # symbolic sizes (a dynamic trace) as they are
                and 1 < x.shape[dim] <= SMALL
                and x.is_floating_point()
                and "out" not in kwargs
            ):
                return _short_logsumexp(x, dim, bool(keepdim))
        return func(*args, **kwargs)
