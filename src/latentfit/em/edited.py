"""A fitted model's public attributes edited by its user: read back, checked, or refused.

scikit-learn users set ``means_`` (or ``weights_``, ``rates_``, ``components_``...) on a
fitted model and predict. The HMMs read their public attributes so; the estimators in em/
and vi/ keep their fitted tensors behind a ``_params`` property (:func:`fitted_params`) that
compares the attributes with what was published (:func:`is_edited`) and
- takes an edit up, checked: GaussianMixture (:func:`params_from_attributes`, the other
  covariance attributes follow), the one-family mixtures (:func:`checked_edits`, as a model
  file's tensors are checked), FactorAnalysis/PPCA;
- or, where the attributes summarise parameters with no single value to replace
  (BayesianGaussianMixture, MixtureModel), refuses it by name (:func:`refuse_edits`).
An error names the attribute (ParameterError).
"""

from __future__ import annotations

import numpy as np
import torch

from latentfit._validation import tensors_in_dtype
from latentfit.em.gaussian import (
    covariances_from_precisions,
    precision_cholesky,
    precision_cholesky_from_precisions,
    precisions_from_cholesky,
)
from latentfit.errors import DataError, NotFittedError, ParameterError
from latentfit.io import check_stored

__all__ = [
    "PUBLIC",
    "checked_edits",
    "fitted_params",
    "is_edited",
    "params_from_attributes",
    "refuse_edits",
    "snapshot",
]

#: The public fitted attributes that describe the parameters: an edit to one is taken up (see
#: GaussianMixture._params); the covariance attributes in the order one edit is preferred.
PUBLIC = ("weights_", "means_", "precisions_cholesky_", "precisions_", "covariances_")
_COVARIANCE_ATTRIBUTES = ("precisions_cholesky_", "precisions_", "covariances_")


def params_from_attributes(model, fitted: dict, edited: list[str]) -> dict:
    """The parameters described by the public attributes, checked; ``edited``: the
    attributes changed since they were set. One covariance attribute is taken
    (precisions_cholesky_, else precisions_, else covariances_); another edited one
    must agree with it."""
    ct = model.covariance_type
    k, d = fitted["means"].shape
    dt = fitted["means"].dtype

    def given(name, shape):
        value = vars(model).get(name)
        if value is None:
            raise ParameterError(f"{name} was deleted from the fitted GaussianMixture; fit again")
        try:
            t = model._user_tensor(value, name, shape, dtype=dt)
        except DataError as err:  # NaN/inf, not numbers: a setting, not data
            raise ParameterError(str(err)) from None
        return t.to(fitted["means"].device)

    new = {
        "weights": given("weights_", (k,)),
        "means": given("means_", (k, d)),
    }
    w = new["weights"]
    if bool((w < 0).any()) or abs(float(w.double().sum()) - 1) > max(1e-6, k * torch.finfo(dt).eps):
        raise ParameterError(
            f"weights_ must be non-negative and sum to 1, got {w.cpu().numpy()} (sum "
            f"{float(w.double().sum()):.6g})"
        )
    shape = model._cov_shape(d)
    chosen = next(n for n in (*_COVARIANCE_ATTRIBUTES, None) if n is None or n in edited)
    if chosen is None:
        pc = fitted["prec_chol"]
    else:
        value = given(chosen, shape)
        pc = _prec_chol_from(chosen, value.double(), ct).to(dt)
        for other in _COVARIANCE_ATTRIBUTES:
            if other != chosen and other in edited:
                mine = given(other, shape).double()
                theirs = {
                    "precisions_": precisions_from_cholesky(pc.double(), ct),
                    "covariances_": covariances_from_precisions(pc.double(), ct),
                    "precisions_cholesky_": pc.double(),
                }[other]
                if not torch.allclose(
                    mine, theirs, rtol=1e-5, atol=1e-8 * float(theirs.abs().max())
                ):
                    raise ParameterError(
                        f"{chosen} and {other} were both changed and describe different "
                        f"covariances; set one of them ({chosen} is taken first), the "
                        "others follow it"
                    )
    new["prec_chol"] = pc
    shift = fitted.get("shift")
    if shift is not None:
        new["shift"] = shift
        if "means_" in edited or "delta" not in fitted:
            new["delta"] = new["means"] - shift
        else:  # the fit's own μ − c, which keeps float32 digits (see _centred_means)
            new["delta"] = fitted["delta"]
    return new


def is_edited(value, published: np.ndarray) -> bool:
    """Whether a public attribute no longer holds what was published: replaced by an array of
    other values or shape, changed in place, or deleted."""
    if value is None:
        return True
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return True
    return arr.shape != published.shape or not np.array_equal(arr, published)


def fitted_params(model) -> dict:
    """The fitted tensors a ``_params`` property reads, or NotFittedError (an AttributeError
    too, so that ``hasattr`` says "not fitted" as for any fitted attribute). A model pickled
    by latentfit 0.1 holds them as ``_params`` in its instance dict. A model whose ``dtype``
    was changed since the fit (``set_params(dtype="float32")``) reads them in its dtype now,
    as the HMMs read their attributes: it scores, predicts and samples in that dtype."""
    state = vars(model)
    fitted = state.get("_fitted_params", state.get("_params"))
    if fitted is None:
        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet: call fit before using it"
        )
    dtype = model._dtype
    floats = [t for t in fitted.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if floats and floats[0].dtype != dtype:  # the fit's dtype (what a load reads it in)
        fitted = tensors_in_dtype(fitted, dtype)
    return fitted


def checked_edits(model, fitted: dict, edited: list[str]) -> dict:
    """A one-family mixture's fitted tensors (``weights``, ``rates``, ``means``...) with the
    user's edits to their attributes (``<name>_``), each checked as a model file's tensor is
    (``model._stored_specs``): ParameterError naming the attribute."""
    specs = model._stored_specs(model.n_features_in_)
    new = dict(fitted)
    for name in edited:
        attr = name + "_"
        value = vars(model).get(attr)
        if value is None:
            raise ParameterError(f"{attr} was deleted from the fitted model; fit again")
        shape = tuple(fitted[name].shape)
        try:
            t = model._user_tensor(value, attr, shape, dtype=fitted[name].dtype)
        except DataError as err:  # NaN/inf, not numbers: a setting, not data
            raise ParameterError(str(err)) from None
        spec = specs.get(name)
        if spec is not None:
            check_stored(
                t, name, spec, label=f"{attr}, set after the fit,", error=ParameterError,
                advice="Set it to such values, or fit again",
            )  # fmt: skip
        new[name] = t.to(fitted[name].device)
    return new


def snapshot(value):
    """A comparable copy of a fitted attribute that is not read back (arrays, numbers, tuples,
    lists of dicts of arrays as ``MixtureModel.components_``); see :func:`refuse_edits`."""
    if isinstance(value, dict):
        return tuple((k, snapshot(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(snapshot(v) for v in value))
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return repr(value)
    return (arr.shape, arr.tobytes())


def refuse_edits(model, snapshots: dict, why: str) -> None:
    """ParameterError naming the fitted attributes changed since ``snapshots`` were taken, for
    a model that cannot take them up (``why``: what they are and what to do instead)."""
    edited = [n for n, was in snapshots.items() if snapshot(vars(model).get(n)) != was]
    if edited:
        raise ParameterError(f"{', '.join(edited)} changed after the fit; {why}{warm(model)}")


def warm(model) -> str:
    """What a refusal adds for a warm start, which continues from the fitted parameters."""
    if getattr(model, "warm_start", False):
        return (
            " (warm_start=True continues from the fitted parameters: set it to False to fit afresh)"
        )
    return ""


def _prec_chol_from(name: str, value: torch.Tensor, ct: str) -> torch.Tensor:
    """The precision Cholesky factor from an edited covariance attribute (float64), refusing
    what is not one: a non-positive-definite matrix, a non-positive variance, a Cholesky factor
    that is not triangular with a positive diagonal."""
    if name == "covariances_":
        if ct in ("full", "tied"):
            cov = value if ct == "full" else value.unsqueeze(0)  # (k, d, d)
            bad = (torch.linalg.cholesky_ex(cov).info != 0).nonzero().flatten().tolist()
            if bad or not torch.allclose(cov, cov.mT, rtol=1e-6, atol=0):
                which = f"; component(s) {bad} are not" if ct == "full" and bad else ""
                raise ParameterError(
                    f"covariances_ must be symmetric positive-definite matrices{which}"
                )
        else:
            bad = (value.reshape(value.shape[0], -1) <= 0).any(1).nonzero().flatten().tolist()
            if bad:
                raise ParameterError(
                    f"covariances_ must be positive variances; component(s) {bad} are not"
                )
        return precision_cholesky(value, ct)
    if name == "precisions_":
        if ct in ("full", "tied") and not torch.allclose(value, value.mT, rtol=1e-6, atol=0):
            raise ParameterError("precisions_ must be symmetric positive-definite matrices")
        try:
            pc = precision_cholesky_from_precisions(value, ct)  # lower for full/tied
        except ParameterError:
            raise ParameterError(
                "precisions_ must be symmetric positive-definite matrices"
                if ct in ("full", "tied")
                else "precisions_ must be positive"
            ) from None
    else:
        pc = value
        if ct in ("full", "tied"):
            upper = bool((value.tril(-1) == 0).all())
            triangular = upper or bool((value.triu(1) == 0).all())
            if not triangular or bool((value.diagonal(dim1=-2, dim2=-1) <= 0).any()):
                raise ParameterError(
                    "precisions_cholesky_ must be triangular (upper, as scikit-learn's) with a "
                    "positive diagonal: P with precision P Pᵀ"
                )
            if upper:
                return value
        elif bool((value <= 0).any()):
            raise ParameterError("precisions_cholesky_ must be positive (1 / standard deviations)")
    if ct in ("full", "tied"):  # the fit's upper-triangular factor, P = chol(Σ)⁻ᵀ
        return precision_cholesky(torch.linalg.inv(pc @ pc.mT), ct)
    return pc
