"""latentfit.load on damaged and tampered model files: a documented error, or a model whose
parameters are finite and which scores data without a raw exception. Loading never writes to
the file."""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import latentfit

from .oracle import Documented, assert_finite_fitted, attempt, budget

RNG = np.random.default_rng(0)
X_REAL = np.concatenate([RNG.normal(0, 1, (20, 2)), RNG.normal(5, 1, (20, 2))])
X_CODES = RNG.integers(0, 3, (40, 1))
# flows on 3 features: no MADE mask is all ones, coupling masks alternate; in float64, as
# the other models, so that a drawn value of 1e300 is a finite one there too
X_FLOW = RNG.normal(0, 1, (40, 3))
# rows of five trials (their own generator: the data above stay as they were)
X_TRIALS = np.random.default_rng(1).multinomial(5, [0.2, 0.3, 0.5], size=40)
FLOW_SETTINGS = dict(n_layers=2, hidden=6, n_hidden=2, epochs=1, random_state=0, dtype="float64")


@cache
def _fitted_bytes(name: str) -> bytes:
    """The bytes of a small fitted model of class ``name`` saved by latentfit."""
    model, X = {
        "GaussianMixture": (latentfit.GaussianMixture(2, random_state=0), X_REAL),
        "CategoricalHMM": (latentfit.CategoricalHMM(2, random_state=0, n_iter=3), X_CODES),
        "PPCA": (latentfit.PPCA(1), X_REAL),
        "PoissonMixture": (latentfit.PoissonMixture(2, random_state=0), np.abs(X_CODES)),
        "GaussianHMM": (latentfit.GaussianHMM(2, random_state=0, n_iter=3), X_REAL),
        "BayesianGaussianMixture": (
            latentfit.BayesianGaussianMixture(n_components=2, random_state=0, max_iter=20),
            X_REAL,
        ),
        "FactorAnalysis": (latentfit.FactorAnalysis(1), X_REAL),
        "GMMHMM": (latentfit.GMMHMM(2, n_mix=2, random_state=0, n_iter=3), X_REAL),
        "PoissonHMM": (latentfit.PoissonHMM(2, random_state=0, n_iter=3), np.abs(X_CODES)),
        "MultinomialHMM": (latentfit.MultinomialHMM(2, random_state=0, n_iter=3), X_TRIALS),
        "GaussianHSMM": (latentfit.GaussianHSMM(2, random_state=0, n_iter=3), X_REAL),
        "LinearGaussianSSM": (latentfit.LinearGaussianSSM(1, n_iter=3), X_REAL),
        "BernoulliMixture": (
            latentfit.BernoulliMixture(2, random_state=0),
            (X_CODES > 0).astype(float),
        ),
        "VariationalGaussianHMM": (
            latentfit.VariationalGaussianHMM(2, random_state=0, n_iter=3),
            X_REAL,
        ),
        **{
            flow: (getattr(latentfit, flow)(**FLOW_SETTINGS), X_FLOW)
            for flow in ("MAF", "RealNVP", "NeuralSplineFlow")
        },
    }[name]
    model.fit(X)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        model.save(path)
        return path.read_bytes()


def _split(raw: bytes):
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header: dict, body: bytes) -> bytes:
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + body


TAMPER_FIELDS = {
    "format_version": [0, -1, 2, "1", None, 1.5],
    "class": ["Bogus", "GaussianHMM", "", None, 3, "PoissonMixture"],
    "params": [{}, None, "x", {"n_components": -1}, {"n_components": 10**6}, {"bogus": 1}],
    "extra": [None, "x", {"__class__": "x"}, {"n_features_in_": "two"}, {"_params": 1}],
}


@st.composite
def damaged(draw, raw: bytes) -> tuple[bytes, str]:
    how = draw(
        st.sampled_from(
            ["truncate", "flip", "tamper", "tamper", "drop_key", "nan", "shape", "value"]
        )
    )
    header, body = _split(raw)
    meta = json.loads(header["__metadata__"]["latentfit"])
    if how == "truncate":
        cut = draw(st.integers(0, len(raw) - 1))
        return raw[:cut], f"truncated at {cut}"
    if how == "flip":
        i = draw(st.integers(0, len(raw) - 1))
        return raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :], f"byte {i} flipped"
    # the rest alters the file as a crafted one would, without the checksum latentfit
    # writes, so that the checks behind it are drawn on
    header["__metadata__"].pop("sha256", None)
    if how in ("tamper", "drop_key"):
        field = draw(st.sampled_from(sorted(TAMPER_FIELDS)))
        if how == "drop_key":
            meta.pop(field, None)
        elif field == "params" and draw(st.booleans()):
            value = draw(st.sampled_from(TAMPER_FIELDS["params"][3:]))
            meta["params"] = {**meta["params"], **value}
        else:
            meta[field] = draw(st.sampled_from(TAMPER_FIELDS[field]))
        header["__metadata__"]["latentfit"] = json.dumps(meta)
        return _join(header, body), f"{how} {field} -> {meta.get(field)!r}"
    # Rewrite the tensors themselves: one set to NaN/inf, or given the wrong shape.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        path.write_bytes(raw)
        tensors = load_file(str(path))
        floats = sorted(k for k, v in tensors.items() if v.is_floating_point())
        key = draw(st.sampled_from(floats))
        if how in ("nan", "value"):
            t = tensors[key].clone()
            i = draw(st.integers(0, t.numel() - 1))
            if how == "nan":
                t.view(-1)[i] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
            else:  # a finite value the parameter may not take: its sign, zero, a huge scale
                change = draw(st.sampled_from(["negate", "zero", "1e300", "-1e300"]))
                t.view(-1)[i] = {
                    "negate": -t.view(-1)[i] - 1.0,
                    "zero": 0.0,
                    "1e300": 1e300,
                    "-1e300": -1e300,
                }[change]
                how = f"{change} element {i} of"
            tensors[key] = t
        else:
            tensors[key] = torch.cat(
                [tensors[key].reshape(-1), torch.zeros(1, dtype=tensors[key].dtype)]
            )
        save_file(tensors, str(path), metadata=header["__metadata__"])
        return path.read_bytes(), f"{how} in tensor {key}"


@budget(100)
@given(
    name=st.sampled_from(
        [
            "GaussianMixture",
            "CategoricalHMM",
            "PPCA",
            "PoissonMixture",
            "GaussianHMM",
            "BayesianGaussianMixture",
            "FactorAnalysis",
            "GMMHMM",
            "PoissonHMM",
            "MultinomialHMM",
            "GaussianHSMM",
            "LinearGaussianSSM",
            "BernoulliMixture",
            "VariationalGaussianHMM",
            "MAF",
            "RealNVP",
        ]
    ),
    data=st.data(),
)
def test_load_damaged_model_file(name, data):
    raw, how = data.draw(damaged(_fitted_bytes(name)), label="damage")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(raw)
        digest = hashlib.sha256(raw).hexdigest()
        try:
            model = attempt(f"latentfit.load ({how})", latentfit.load, path)
        except Documented:
            model = None
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "load wrote to the file"
    if model is None:
        return
    assert_finite_fitted(model, after=f"latentfit.load ({how})")
    X = X_CODES if name == "CategoricalHMM" else X_REAL
    if name in ("PoissonMixture", "PoissonHMM"):
        X = np.abs(X_CODES)
    if name == "BernoulliMixture":
        X = (X_CODES > 0).astype(float)
    if name in ("MAF", "RealNVP"):
        X = X_FLOW
    if name == "MultinomialHMM":
        X = X_TRIALS
    try:
        scores = attempt(f"score_samples after load ({how})", model.score_samples, X)
        values = np.asarray(scores[0] if isinstance(scores, tuple) else scores)
        assert not np.any(np.isnan(values)), f"NaN scores from a model loaded after {how}"
    except Documented:
        pass


@st.composite
def altered_mask(draw, mask: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``mask`` changed to other finite values: some entries to any float32, every entry to
    one value, or its rows in another order (each row a valid mask of another unit)."""
    how = draw(st.sampled_from(["entries", "fill", "rows"]))
    out = mask.clone()
    if how == "entries":
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, out.numel() - 1))
            out.view(-1)[i] = draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
    elif how == "fill":
        out.fill_(draw(st.sampled_from([0.0, 1.0, 0.5, -1.0, 3e38])))
    else:
        order = draw(st.permutations(range(out.shape[0])))
        out = out[list(order)].contiguous()
    return out, how


@budget(60)
@given(kind=st.sampled_from(["MAF", "RealNVP", "NeuralSplineFlow"]), data=st.data())
def test_load_flow_with_altered_masks(kind, data):
    """A flow's masks are fixed by its settings: a file whose masks hold any other finite
    values (which load and score finitely, only wrongly) is refused, naming the mask."""
    raw = _fitted_bytes(kind)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(raw)
        tensors = load_file(str(path))
        key = data.draw(st.sampled_from(sorted(k for k in tensors if k.endswith(".mask"))))
        mask, how = data.draw(altered_mask(tensors[key]), label="mask")
        assume(not torch.equal(mask, tensors[key]))
        tensors[key] = mask
        meta = _split(raw)[0]["__metadata__"]
        meta.pop("sha256")  # as a crafted file: the mask check behind the checksum
        save_file(tensors, str(path), metadata=meta)
        try:
            attempt(f"latentfit.load ({how} of {key})", latentfit.load, path)
        except Documented as err:
            assert f"'{key}'" in str(err) and "is not the mask" in str(err), str(err)
        else:
            raise AssertionError(f"a {kind} file with an altered {key} ({how}) loaded")
