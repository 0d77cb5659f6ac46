"""fit_mle and fit_map over every family, on generated good and bad data.

Each call ends in success with finite estimates and log-likelihood (and a summary that prints),
or in a documented error with a message; the data passed in are never written to.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from latentfit import fit_map, fit_mle
from latentfit.estimate import FAMILIES, get_family

from .oracle import Documented, assert_unchanged, attempt, budget, snapshot
from .strategies import matrices

# One name per family (FAMILIES also holds aliases), with the data kind it is fitted to.
KIND = {
    "bernoulli": "binary",
    "binomial": "counts",
    "categorical": "codes",
    "geometric": "counts",
    "negativebinomial": "counts",
    "poisson": "counts",
    "multinomial": "counts",
    "normal": "real",
    "cauchy": "real",
    "gumbel": "real",
    "studentt": "real",
    "mvn": "real",
    "vonmises": "real",
    "exponential": "positive",
    "gamma": "positive",
    "lognormal": "positive",
    "weibull": "positive",
    "halfnormal": "positive",
    "beta": "unit",
    "dirichlet": "simplex",
}


def _family_names():
    names = {}
    for name, fam in FAMILIES.items():
        names.setdefault(fam.name, name)
    return sorted(names.values())


def test_every_family_has_a_data_kind():
    missing = [
        n for n in _family_names() if get_family(n).name not in {get_family(k).name for k in KIND}
    ]
    assert not missing, f"families without a property strategy: {missing}"


@st.composite
def family_cases(draw):
    family = draw(st.sampled_from(sorted(KIND)))
    case = draw(matrices(KIND[family]))
    fixed = None
    fam = get_family(family)
    if fam.required_fixed or draw(st.booleans()):
        fixed = {
            name: draw(st.sampled_from([1, 5, 30, 0, -1, 2.5, float("nan")]))
            for name in (fam.required_fixed or fam.params[:1])
        }
    return family, case, fixed


def _check(result, what):
    for name, value in result.params.items():
        arr = torch.as_tensor(value).detach().cpu().numpy()
        assert np.all(np.isfinite(arr)), (
            f"{what} returned a non-finite {name} = {arr!r} without an error"
        )
    assert np.isfinite(result.log_likelihood), (
        f"{what} returned log-likelihood {result.log_likelihood} without an error"
    )
    try:
        attempt(f"{what}.summary", result.summary)
    except Documented:
        pass


@budget(100)
@given(case=family_cases(), dtype=st.sampled_from([None, "float32"]))
def test_fit_mle(case, dtype):
    family, data, fixed = case
    before = snapshot(data.X)
    try:
        result = attempt(f"fit_mle({family!r})", fit_mle, family, data.X, fixed=fixed, dtype=dtype)
    except Documented:
        result = None
    assert_unchanged(before, data.X, f"fit_mle({family!r})")
    if result is not None:
        _check(result, f"fit_mle({family!r})")


@budget(50)
@given(case=family_cases(), scale=st.sampled_from([10.0, 1e-3, 1e300]))
def test_fit_map(case, scale):
    family, data, fixed = case
    fam = get_family(family)
    free = [p for p in fam.params if not fixed or p not in fixed]
    prior = {free[0]: torch.distributions.Normal(0.0, scale)} if free else {}
    before = snapshot(data.X)
    try:
        result = attempt(f"fit_map({family!r})", fit_map, family, data.X, prior, fixed=fixed)
    except Documented:
        result = None
    assert_unchanged(before, data.X, f"fit_map({family!r})")
    if result is not None:
        _check(result, f"fit_map({family!r})")
