"""What the fitted tensors of a model file must be, checked before a model is built from them.

Every model lists its tensors as :class:`Stored` (shape and constraint); :func:`check_stored`
holds one tensor to its entry (a float dtype, the shape, finite values, and the constraint:
a simplex, positive, non-negative, in [0, 1], a precision or lower Cholesky factor, symmetric
positive definite), :func:`check_stored_tensors` a file's tensors to a model's list, and
:func:`check_network_tensors` a network's tensors, as the header describes it, to the stored
ones on torch's meta device, so that a crafted header is refused before anything is built, and
:func:`check_fixed_buffers` the tensors a network's settings fix (the masks of MADE and
coupling layers) to the ones those settings build. Each raises
:class:`~latentfit.errors.ModelFileError` naming the tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from latentfit._validation import _is_real, resolve_dtype, tensors_in_dtype
from latentfit.errors import ModelFileError, ParameterError

__all__ = [
    "CONSTRAINTS",
    "FitSettings",
    "FittedInDtype",
    "Stored",
    "check_finite_density",
    "check_finite_log_density",
    "check_fixed_buffers",
    "check_network_tensors",
    "check_stored",
    "check_stored_tensors",
    "load_module_tensors",
    "overflowing_layer",
    "tensor_mismatches",
    "watch_finite",
]


class Stored(NamedTuple):
    """What a fitted tensor of a model file must be (see :func:`check_stored`): its ``shape``
    (None: any), its ``constraint`` (a key of :data:`CONSTRAINTS`, None: finite only) and
    whether the file must hold it."""

    shape: tuple | None
    constraint: str | None = None
    required: bool = True


#: The constraints :func:`check_stored` knows, in words for its messages.
CONSTRAINTS = {
    "simplex": "probabilities (finite, >= 0) summing to 1 along the last axis",
    "positive": "finite numbers > 0",
    "nonnegative": "finite numbers >= 0",
    "probability": "numbers in [0, 1]",
    "precision_cholesky": "upper-triangular Cholesky factors of precisions, their diagonal > 0",
    "cholesky": "lower-triangular Cholesky factors, their diagonal > 0",
    "pd": "symmetric positive-definite matrices",
}


def _simplex_tolerance(p: torch.Tensor) -> float:
    # check_distribution's 1e-6, widened for float32 files of many components: the exact sum
    # of n values each rounded to float32 may be off by up to n·eps/2
    return max(1e-6, p.shape[-1] * torch.finfo(p.dtype).eps) if p.dim() else 1e-6


def _first(mask: torch.Tensor) -> tuple:
    return tuple(mask.nonzero()[0].tolist())


def check_stored(
    t: torch.Tensor,
    name: str,
    spec: Stored,
    *,
    label: str | None = None,
    error: type[Exception] = ModelFileError,
    advice: str = "The file was altered or is damaged: refit the model",
) -> None:
    """One fitted tensor read from a model file against its :class:`Stored` spec: a floating
    dtype, the shape and the constraint (simplex, positive, Cholesky factor, positive
    definite...). Raises :class:`ModelFileError` naming the tensor, what it holds and what was
    expected. Finiteness is checked for every tensor by :func:`load` already. A fitted
    attribute set by the user is checked the same way, named by ``label`` and refused with
    ``error`` and ``advice`` of its own."""
    words = CONSTRAINTS.get(spec.constraint, "finite numbers")
    shape = tuple(t.shape)

    def refuse(what: str):
        raise error(
            f"{label or f'the tensor {name!r}'} {shape} {what}; it must hold {words}"
            + (f" of shape {tuple(spec.shape)}" if spec.shape is not None else "")
            + f". {advice}"
        )

    if not t.is_floating_point():
        refuse(f"has dtype {str(t.dtype).removeprefix('torch.')}, not a floating-point one")
    if spec.shape is not None and shape != tuple(spec.shape):
        refuse("has the wrong shape")
    if not bool(torch.isfinite(t).all()):
        refuse(
            f"holds {t[_first(~torch.isfinite(t))].item()} at index {_first(~torch.isfinite(t))}"
        )
    c = spec.constraint
    if c is None or t.numel() == 0:
        return
    if c in ("simplex", "nonnegative", "probability") and bool((t < 0).any()):
        i = _first(t < 0)
        refuse(f"holds {t[i].item():.6g} at index {i}")
    if c == "positive" and bool((t <= 0).any()):
        i = _first(t <= 0)
        refuse(f"holds {t[i].item():.6g} at index {i}")
    if c == "probability" and bool((t > 1).any()):
        i = _first(t > 1)
        refuse(f"holds {t[i].item():.6g} at index {i}")
    if c == "simplex":
        s = t.double().sum(-1)
        bad = (s - 1).abs() > _simplex_tolerance(t)
        if bool(bad.any()):
            i = _first(bad) if bad.dim() else ()
            where = f"row {i} sums" if i else "sums"
            refuse(f"{where} to {s[i].item():.6g}")
    if c in ("precision_cholesky", "cholesky", "pd"):
        if t.dim() < 2 or t.shape[-1] != t.shape[-2]:
            refuse("is not a (stack of) square matrices")
        diag = t.diagonal(dim1=-2, dim2=-1)
        if c == "pd":
            # off by more than rounding of the matrix's own scale: a fit in float32 leaves
            # asymmetry of ~eps x its largest entry, which an entry 1e6 times smaller
            # cannot be held to elementwise
            scale = t.abs().amax(dim=(-2, -1), keepdim=True)  # (..., 1, 1)
            if bool(((t - t.mT).abs() > 1e-6 * scale + 1e-300).any()):
                refuse("is not symmetric")
            info = torch.linalg.cholesky_ex(t.double()).info
            if bool((info != 0).any()):
                refuse(f"is not positive definite (matrix {_first(info != 0)})")
            return
        off = t.triu(1) if c == "cholesky" else t.tril(-1)
        if bool((off != 0).any()):
            side = "upper" if c == "cholesky" else "lower"
            refuse(
                f"has non-zero entries above the diagonal ({side} triangle) at {_first(off != 0)}"
            )
        if bool((diag <= 0).any()):
            i = _first(diag <= 0)
            refuse(f"has the diagonal entry {diag[i].item():.6g} at {i}")


def check_stored_tensors(
    tensors: dict, specs: dict[str, Stored], *, exact: bool = False, sizes: str = ""
) -> None:
    """Every spec of ``specs`` (name → :class:`Stored`) checked against ``tensors`` (the
    tensors of a model file): a required one missing, one out of its shape or constraint, or
    (``exact``: the specs list every tensor the model stores) one the model does not store,
    raises :class:`ModelFileError` naming it. ``sizes`` names the settings the expected
    shapes follow from (``"n_components = 2, n_features_in_ = 3"``), for the message."""
    unknown = sorted(set(tensors) - set(specs)) if exact else []
    if unknown:
        raise ModelFileError(
            f"the model file holds the tensor(s) {unknown}, which this model does not store (it "
            f"stores {sorted(specs)}); the file was altered or is not from this latentfit"
        )
    missing = [n for n, s in specs.items() if s.required and n not in tensors]
    if missing:
        raise ModelFileError(
            f"the model file lacks the tensor(s) {missing} (it holds {sorted(tensors)}); the "
            "file was altered or is damaged"
        )
    for name, spec in specs.items():
        t = tensors.get(name)
        if t is not None and spec.shape is not None and tuple(t.shape) != tuple(spec.shape):
            shapes = {k: tuple(v.shape) for k, v in sorted(tensors.items())}
            raise ModelFileError(
                f"the tensors' shapes {shapes} disagree with the model's settings: {name!r} has "
                f"shape {tuple(t.shape)} but {sizes or 'the header'} make it "
                f"{tuple(spec.shape)}. The file was altered or is damaged"
            )
    for name, spec in specs.items():
        if name in tensors:
            check_stored(tensors[name], name, spec)


def check_network_tensors(
    build, tensors: dict, what: str, *, layers: int = 1, depth: int = 1
) -> None:
    """The tensors a network built from a model file's header would have compared with the
    stored ones, before the network is built for real, so that a header whose sizes
    (features, widths, depths) disagree with the stored tensors raises
    :class:`ModelFileError` naming every tensor that differs (:func:`tensor_mismatches`)
    instead of building a network of the header's size first.

    ``build(layers, depth)`` constructs the network with ``layers`` blocks of ``depth``
    hidden layers (as for :func:`latentfit._memory.check_module_memory`); it is run on
    torch's meta device (shapes only, nothing allocated): first at 1-2 blocks and 1-2 hidden
    layers, to refuse a header whose counts would make far more tensors than the file holds
    without constructing them, then at the header's ``layers`` x ``depth``."""

    def state(n_layers: int, n_depth: int) -> dict[str, tuple]:
        with torch.device("meta"):
            module = build(n_layers, n_depth)
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}

    try:
        c11, c21, c12 = (len(state(a, b)) for a, b in ((1, 1), (2, 1), (1, 2)))
        per_depth = c12 - c11
        per_layer = (c21 - c11) - per_depth
        n = (2 * c11 - c21) + layers * (per_layer + per_depth * depth)
        # a few tensors more than the file holds are named one by one below; a header whose
        # counts make many more is refused by its count, before its tensors are constructed
        if n > 2 * len(tensors) + 64:
            raise ModelFileError(
                f"the model file's header describes {what} with {n:,} tensors, but the file "
                f"holds {len(tensors)}: its sizes (params) disagree with the stored tensors. "
                "The file was altered or is damaged"
            )
        expected = state(layers, depth)
    except ModelFileError:
        raise
    except (RuntimeError, ValueError, TypeError, NotImplementedError):
        return  # a construction that reads values: load_module_tensors checks it after the build
    differ = tensor_mismatches(expected, {k: tuple(v.shape) for k, v in tensors.items()})
    if differ:
        raise ModelFileError(
            f"the model file's tensors disagree with {what} that its header describes "
            f"(extra.n_features_in_ and params): {differ}. The file was altered or is damaged"
        )


def tensor_mismatches(expected: dict, stored: dict, limit: int = 10) -> str:
    """The tensors ``stored`` (name → shape) lacks, holds that ``expected`` (name → shape)
    has not, and holds in another shape, in words ("" when the two agree): every name, and
    the file's shape beside the expected one; each list cut after ``limit`` names, with a
    count of the rest (a header sized far beyond its file lacks thousands)."""

    def listed(items: list[str]) -> str:
        more = f" and {len(items) - limit:,} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    shape = {k: tuple(v) for k, v in expected.items()}
    got = {k: tuple(v) for k, v in stored.items()}
    missing = [repr(k) for k in sorted(shape.keys() - got.keys())]
    unexpected = [f"{k!r} {got[k]}" for k in sorted(got.keys() - shape.keys())]
    sizes = [
        f"{k!r} has shape {got[k]} where {shape[k]} is expected"
        for k in sorted(shape.keys() & got.keys())
        if shape[k] != got[k]
    ]
    parts = []
    if missing:
        parts.append(f"the file is missing {listed(missing)}")
    if unexpected:
        parts.append(f"it holds {listed(unexpected)}, which the model has no place for")
    if sizes:
        parts.append(listed(sizes))
    return "; ".join(parts)


def load_module_tensors(module: torch.nn.Module, tensors: dict, what: str) -> None:
    """``tensors`` (a model file's) loaded into ``module`` (built from the file's header), or
    :class:`ModelFileError` naming every tensor the file lacks, holds beyond the module's, or
    holds in another shape (:func:`tensor_mismatches`; torch's own message names only some
    of them, after a first line that names none). ``what`` describes the module."""
    try:
        module.load_state_dict(tensors)
    except (RuntimeError, KeyError) as err:
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        differ = tensor_mismatches(expected, {k: tuple(v.shape) for k, v in tensors.items()})
        detail = differ or " ".join(str(err).split())[:600]  # a failure other than the names
        raise ModelFileError(
            f"the model file's tensors do not fit {what}: {detail}. The file was altered or "
            "is damaged"
        ) from None


def check_fixed_buffers(module: torch.nn.Module, tensors: dict, what: str) -> None:
    """The stored copies of the tensors a network's settings fix, compared with the ones
    ``module``, freshly built from those settings, holds: the buffers each layer class lists
    in its ``fixed_buffers`` (the 0/1 masks of MADE layers, set by the dimension, the hidden
    sizes and the layer's order, and of coupling layers, set by the dimension and the layer's
    parity). Such a tensor is no fitted value: another one, each entry finite, changes the
    network's structure (an all-ones MADE mask lets an output see its own input, so the
    density no longer normalises) and would give wrong but finite log-densities. A stored
    copy that is missing or differs in any entry raises :class:`ModelFileError` naming the
    tensor and its layer; ``what`` describes the network for the message. Call it after the
    names and shapes are checked (:func:`check_network_tensors`), before the tensors are
    loaded into ``module``."""
    for prefix, layer in module.named_modules():
        for name in getattr(type(layer), "fixed_buffers", ()):
            key = f"{prefix}.{name}" if prefix else name
            built = getattr(layer, name).detach().to("cpu", torch.float64)
            stored = tensors.get(key)
            where = f"the tensor {key!r} (the {name} of the {type(layer).__name__} {prefix!r})"
            if stored is None or tuple(stored.shape) != tuple(built.shape):
                got = "is missing" if stored is None else f"has shape {tuple(stored.shape)}"
                raise ModelFileError(
                    f"{where} {got}, but {what} has one of shape {tuple(built.shape)}; the file "
                    "was altered or is damaged"
                )
            differ = stored.detach().to("cpu", torch.float64) != built  # NaN differs too
            if bool(differ.any()):
                i = _first(differ)
                raise ModelFileError(
                    f"{where} is not the {name} that the settings of {what} build: it holds "
                    f"{stored[i].item():.6g} at index {i} where they build {built[i].item():.6g} "
                    f"({int(differ.sum()):,} of {differ.numel():,} entries differ). The {name} "
                    "fixes which inputs each output of the layer depends on; another one gives "
                    "a different flow, in general one whose density no longer normalises. The "
                    "file was altered or is damaged"
                )


class FitSettings:
    """The settings that fix a fitted network model (MAF, RealNVP, NeuralSplineFlow, DDPM):
    its layers, its noise schedule, the levels it reads (the names ``_structure()`` gives),
    as its fit used them. A fitted model scores, samples and is rebuilt (in another dtype, or
    from a file) with the fit's values, as scikit-learn's fitted estimators do: one set since
    (``set_params(n_levels=512)``) takes effect at the next fit. Found by hand: a DDPM fitted
    with n_levels=256 scored its rows on a grid of 512 levels once set to 512 (-60.46 nats a
    row became -60.57), and a MAF saved so wrote n_levels=512 beside its weights, whose load
    scored -18.80 where the fitted model gave -16.67. A file's settings are the fit's (a
    save of a changed one is refused: :meth:`_check_fit_settings`)."""

    def _structure(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _record_fit_settings(self) -> None:
        """The settings of the fit now starting (or of the file being loaded)."""
        self._fit_settings = {name: getattr(self, name) for name in self._structure()}

    def _fitted(self, name: str):
        """Setting ``name`` as the fit used it (the setting itself before any fit)."""
        return vars(self).get("_fit_settings", {}).get(name, getattr(self, name))

    def _check_training_settings(self, counts: tuple[str, ...]) -> None:
        """The settings every network model's training shares, checked before it starts:
        ``counts`` positive integers (True is not one: ``hidden=True`` built one unit), a
        real ``validation_fraction`` in [0, 1) and a ``checkpoint_dir`` that is None or a
        path. A string or a list there raised Python's TypeError from a comparison or from
        ``os.fspath`` during the fit."""
        import os

        for name in counts:
            value = getattr(self, name)
            if (
                isinstance(value, bool | np.bool_)
                or not isinstance(value, int | np.integer)
                or value < 1
            ):
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        fraction = self.validation_fraction
        if not (_is_real(fraction) and 0 <= fraction < 1):
            raise ParameterError(f"validation_fraction must lie in [0, 1), got {fraction!r}")
        where = self.checkpoint_dir
        if where is not None and not isinstance(where, str | os.PathLike):
            raise ParameterError(
                f"checkpoint_dir must be a folder's path (a str or a Path) or None, got {where!r}"
            )

    #: the setting that says the model reads levels (8-bit data): "dequantize" of a flow,
    #: "discrete" of a DDPM
    _levels_setting = ""

    def _check_levels(self, fitted: bool = False) -> None:
        """8-bit data: n_levels within the levels the model's dtype tells apart
        (check_n_levels), at fit and again where the ``fitted`` model reads or draws levels,
        its dtype may have been set since (``set_params(dtype="float32")``); its n_levels is
        the fit's then, and the way out is its dtype."""
        from latentfit.flows.objectives import check_n_levels

        setting = self._fitted if fitted else lambda name: getattr(self, name)
        if setting(self._levels_setting):
            check_n_levels(
                setting("n_levels"),
                resolve_dtype(self.dtype),
                float64_option="set_params(dtype='float64')" if fitted else "dtype='float64'",
                fitted=fitted,
            )
        elif not fitted:  # unused by this fit, but a setting all the same: a whole number
            check_n_levels(self.n_levels, torch.float64)

    def _check_fit_settings(self, action: str) -> None:
        """Refuse (ParameterError) to ``action`` a model one of whose settings that fix the
        fitted network was changed since the fit: a file holds one value of each setting,
        and the fitted network is the one of the fit's."""
        for name, value in vars(self).get("_fit_settings", {}).items():
            now = getattr(self, name)
            if now != value:
                raise ParameterError(
                    f"cannot {action} this {type(self).__name__}: {name}={now!r} was set after "
                    f"the fit, which used {name}={value!r}, so the fitted model is the one of "
                    f"{name}={value!r}; refit, or set it back (set_params({name}={value!r}))"
                )


class FittedInDtype:
    """A fitted network (``nn.Module``) or tensor of a network model (MAF, RealNVP,
    NeuralSplineFlow, DDPM), read in the model's ``dtype`` as the mixtures read theirs
    (:func:`latentfit.em.edited.fitted_params`): set to another dtype after the fit
    (``set_params(dtype="float32")``), the model scores, samples and saves in that dtype. The
    fit's value is kept, so set back the model gives its numbers exactly. A network is built
    again by the model's ``_build(n_features_in_)`` in the new dtype and given the fit's
    weights (:func:`tensors_in_dtype`), as ``latentfit.load`` builds it from a file; that copy
    is kept until the dtype or the attribute changes."""

    def __set_name__(self, owner, name: str) -> None:
        self.name, self.copy = name, f"_{name}in_dtype"

    def __get__(self, model, owner=None):
        if model is None:
            return self
        state = vars(model)
        if self.name not in state:  # not fitted: hasattr says so, as for any fitted attribute
            raise AttributeError(f"{type(model).__name__!r} object has no attribute {self.name!r}")
        fitted, dtype = state[self.name], resolve_dtype(model.dtype)
        if not isinstance(fitted, torch.nn.Module):
            return fitted.to(dtype) if isinstance(fitted, torch.Tensor) else fitted
        if next(fitted.parameters()).dtype == dtype:  # the fit's dtype
            state.pop(self.copy, None)
            return fitted
        copy = state.get(self.copy)
        if copy is None or copy[0] != dtype:
            with torch.random.fork_rng(devices=[]):  # the build's initial weights draw
                module = model._build(model.n_features_in_)
            module.load_state_dict(tensors_in_dtype(fitted.state_dict(), dtype))
            copy = state[self.copy] = (dtype, module.train(fitted.training))
        return copy[1]

    def __set__(self, model, value) -> None:
        vars(model)[self.name] = value
        vars(model).pop(self.copy, None)


def check_finite_density(score, probe, what: str) -> None:
    """A loaded density model scores ``probe`` (1, d), the training data's mean, finitely, as
    every fitted one does: weights each finite can still overflow together (a layer's weights
    of 1e38), and such a model would score every row NaN or infinite."""
    import numpy as np

    from latentfit.errors import LatentfitError

    try:
        values = np.asarray(score(probe), dtype=float)
    except LatentfitError as err:
        if not hasattr(err, "overflow"):
            raise _no_density(what, err) from None
        value, where = err.overflow  # check_finite_log_density's refusal: where it overflowed
        raise ModelFileError(
            f"the stored tensors give {what} a log-density of {value} at the training data's "
            f"mean, where a fit gives a finite one: {where}; the file was altered or is damaged"
        ) from None
    except (RuntimeError, ValueError) as err:
        raise _no_density(what, err) from None
    if not np.isfinite(values).all():
        raise ModelFileError(
            f"the stored tensors give {what} a log-density of {values.ravel()[0]} at the "
            "training data's mean, where a fit gives a finite one (values out of the range a "
            "fit produces); the file was altered or is damaged"
        )


def overflowing_layer(module: torch.nn.Module, run) -> tuple[str, bool] | None:
    """The layer of ``module`` where ``run()`` overflows, in words (its name, its class, its
    largest weight in magnitude and the largest value it gives), and whether its output holds
    NaN or inf: the first layer (in the order the layers run; an inner one before the block
    holding it) whose output does, else the one whose output is largest in magnitude, whose
    values the arithmetic after the network (a square, an exponential, a sampler's next step)
    took beyond the dtype's range; a layer given NaN or inf is passed over. None when no layer
    gives a floating-point output."""
    first, largest = None, None  # (name, layer, None), (name, layer, largest |output|)

    def hook(name: str):
        def check(layer, inputs, output):
            nonlocal first, largest
            outs = output if isinstance(output, (tuple, list)) else (output,)
            outs = [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]
            if first is not None or not outs:
                return
            if not all(
                bool(torch.isfinite(i).all())
                for i in inputs
                if isinstance(i, torch.Tensor) and i.is_floating_point()
            ):  # it passes on a NaN or inf of the arithmetic before it (a sampler's step)
                return
            if not all(bool(torch.isfinite(o).all()) for o in outs):
                first = (name, layer, None)
                return
            top = max(float(o.abs().max()) if o.numel() else 0.0 for o in outs)
            if largest is None or top > largest[2]:
                largest = (name, layer, top)

        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in module.named_modules() if n]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    if first is None and largest is None:
        return None
    name, layer, top = first if first is not None else largest
    weights = [float(p.detach().abs().max()) for p in layer.parameters() if p.numel()]
    words = f"{name!r} ({type(layer).__name__}"
    words += f", largest weight {max(weights):.3g} in magnitude" if weights else ""
    words += ")" if top is None else f") gives values up to {top:.3g}"
    return words, top is None


def watch_finite(module: torch.nn.Module, run, *, layers: bool = True):
    """``run()``'s result and whether every floating-point output of ``module`` and (with
    ``layers``) of each of its layers while it ran was finite. The clip and rounding after a
    network (levels, tanh, clipped x̂_0) turn its NaN or inf into values in range, so the
    draws alone cannot tell; the flags stay on the device until the end (no synchronisation
    per layer). ``layers=False`` watches the network's own output only: a network called
    many times a draw (a DDPM's T steps) paid 23-45% of its sampling time for every layer's
    test, and an inf inside it that reaches its output unsquashed is seen there."""
    finite = None  # one flag for every output so far: a 0-d bool tensor on the device

    def check(_layer, _inputs, output):
        nonlocal finite
        outs = output if isinstance(output, (tuple, list)) else (output,)
        for o in outs:
            if isinstance(o, torch.Tensor) and o.is_floating_point():
                ok = torch.isfinite(o).all()
                finite = ok if finite is None else finite & ok

    handles = [m.register_forward_hook(check) for m in (module.modules() if layers else [module])]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return result, finite is None or bool(finite)


def check_finite_log_density(log_p, what: str, module: torch.nn.Module, rerun, X) -> None:
    """``log_p`` (n,), the log-densities a model gave the n finite rows of ``X``, refused where
    one is NaN or infinite: a model whose weights are each finite gives every finite row a
    finite log-density, and a non-finite one is float arithmetic that overflowed (weights of
    1e38 in float32, or rows far beyond the fitted data), not the model's value.
    ParameterError naming the rows, the first one's largest value and the layer where it
    overflows (:func:`overflowing_layer`, found by ``rerun(rows)``, which runs ``module`` on
    those rows of ``X`` again); ``what`` names the model. ``X`` may be a function giving the
    rows, called only for the message (a copy of the rows in the data's scale costs memory
    the size of the data on every call that passes)."""
    log_p = torch.as_tensor(log_p)
    bad = (~torch.isfinite(log_p)).nonzero().flatten().tolist()
    if not bad:
        return
    X = X() if callable(X) else X
    dt = next(module.parameters()).dtype
    dtype, limit = str(dt).removeprefix("torch."), torch.finfo(dt).max
    found = overflowing_layer(module, lambda: rerun(bad[:1]))
    if found is None:
        where = f"its arithmetic exceeds {dtype}"
    elif found[1]:
        where = f"the layer {found[0]} gives NaN or inf on it"
    else:
        where = (
            f"on it the layer {found[0]}, and the log-density computed from it exceeds "
            f"{dtype} (whose largest number is {limit:.3g})"
        )
    rows = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
    largest = float(torch.as_tensor(X[bad[0]]).abs().max())
    error = ParameterError(
        f"X has log p(x) = {float(log_p[bad[0]])} at row {bad[0]} under {what} ({len(bad):,} "
        f"of the {log_p.numel():,} rows: {rows}; the row's largest |value| is {largest:.3g}): "
        f"{where}. Finite weights give finite rows a finite log-density: this is {dtype} "
        "overflowing, not the model's value. Either the rows lie where the model's arithmetic "
        "overflows (remove or rescale them), or its weights are beyond what it can compute "
        "with (the fit diverged, or the model file was altered: fit it again)"
    )
    error.overflow = (float(log_p[bad[0]]), where)  # for check_finite_density's words
    raise error


def _no_density(what: str, err: Exception) -> ModelFileError:
    return ModelFileError(
        f"the stored tensors give {what} no log-density at the training data's mean "
        f"({str(err).strip().splitlines()[0][:200]}); the file was altered or is damaged"
    )
