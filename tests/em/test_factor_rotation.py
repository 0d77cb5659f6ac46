"""FactorAnalysis with scikit-learn's remaining settings: ``rotation`` (varimax, quartimax)
against scikit-learn's own rotation and the closed form of a rotated posterior,
``noise_variance_init``, the SVD settings it accepts, ``get_feature_names_out`` /
``set_output``, and scikit-learn's own estimator checks."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis
from sklearn.decomposition._factor_analysis import _ortho_rotation

from latentfit import PPCA, FactorAnalysis
from latentfit.em.rotation import orthogonal_rotation
from latentfit.errors import ParameterError


def _data(n=500, d=8, q=3, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, q))
    return rng.normal(size=(n, q)) @ W.T + rng.normal(size=(n, d)) * 0.5 + 2.0


@pytest.mark.parametrize("method", ["varimax", "quartimax"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_rotation_is_scikit_learns(method, seed):
    W = np.random.default_rng(seed).normal(size=(9, 3))
    ours = orthogonal_rotation(torch.tensor(W), method).numpy()
    np.testing.assert_allclose(ours, _ortho_rotation(W, method).T, rtol=0, atol=1e-12)
    # orthogonal: the model covariance W Wᵀ is unchanged
    np.testing.assert_allclose(ours @ ours.T, W @ W.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [FactorAnalysis, PPCA])
@pytest.mark.parametrize("method", ["varimax", "quartimax"])
def test_a_rotated_fit_rotates_the_loadings_and_the_posterior_only(cls, method):
    X = _data()
    plain = cls(3, tol=1e-10, random_state=0).fit(X)
    rotated = cls(3, tol=1e-10, random_state=0, rotation=method).fit(X)
    W = torch.tensor(plain.components_.T)
    want = orthogonal_rotation(W, method).numpy().T
    np.testing.assert_allclose(rotated.components_, want, rtol=0, atol=1e-12)
    # the likelihood, the covariance and the noise are those of the unrotated fit
    np.testing.assert_allclose(rotated.score_samples(X), plain.score_samples(X), rtol=1e-12)
    np.testing.assert_allclose(rotated.get_covariance(), plain.get_covariance(), atol=1e-12)
    np.testing.assert_array_equal(rotated.noise_variance_, plain.noise_variance_)
    # E[z | x] = M⁻¹ Wᵀ Ψ⁻¹ (x − μ) with W -> W R is Rᵀ E[z | x]: transform(X) R
    R = np.linalg.lstsq(plain.components_.T, rotated.components_.T, rcond=None)[0]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(rotated.transform(X), plain.transform(X) @ R, atol=1e-10)


def test_varimax_loadings_match_scikit_learns_up_to_sign_and_order():
    X = _data()
    ref = SkFactorAnalysis(3, rotation="varimax", tol=1e-12, max_iter=100000).fit(X)
    ours = FactorAnalysis(3, rotation="varimax", tol=1e-12, max_iter=100000).fit(X)
    a, b = ref.components_, ours.components_
    gap = min(
        np.abs(a - np.array(signs)[:, None] * b[list(order)]).max()
        for order in itertools.permutations(range(3))
        for signs in itertools.product([-1, 1], repeat=3)
    )
    # both stop the rotation at a relative change of 1e-6 in its criterion, from different
    # (equally likely) unrotated loadings; measured 4.1e-4 on these data
    assert gap < 2e-3
    np.testing.assert_allclose(ours.score(X), ref.score(X), rtol=1e-9)


def test_partial_fit_rotates_too():
    X = _data()
    model = FactorAnalysis(3, rotation="varimax", random_state=0)
    for part in np.array_split(X, 5):
        model.partial_fit(part)
    W = torch.tensor(model.components_.T)
    np.testing.assert_allclose(orthogonal_rotation(W, "varimax").numpy(), W.numpy(), atol=1e-5)


def test_noise_variance_init_is_where_the_fit_starts():
    X = _data(d=4)
    start = [0.5, 1.0, 1.5, 2.0]
    model = FactorAnalysis(2, noise_variance_init=start, max_iter=0).fit(X)
    np.testing.assert_array_equal(model.noise_variance_, start)
    fitted = FactorAnalysis(2, noise_variance_init=start, tol=1e-10).fit(X)
    default = FactorAnalysis(2, tol=1e-10).fit(X)
    np.testing.assert_allclose(fitted.score(X), default.score(X), rtol=1e-8)


@pytest.mark.parametrize(
    "setting, match",
    [
        ({"rotation": "oblimin"}, "rotation must be None, 'varimax' or 'quartimax'"),
        ({"noise_variance_init": np.ones(3)}, r"noise_variance_init must have shape \(8,\)"),
        ({"noise_variance_init": -np.ones(8)}, "holds -1 at index 0"),
        ({"noise_variance_init": [np.nan] * 8}, "noise_variance_init"),
        ({"svd_method": "arpack"}, "svd_method must be 'lapack' or 'randomized'"),
        ({"iterated_power": -1}, "iterated_power must be an integer >= 0"),
        ({"copy": "yes"}, "copy must be True or False"),
    ],
)
def test_a_bad_setting_is_named(setting, match):
    with pytest.raises(ParameterError, match=match):
        FactorAnalysis(3, **setting).fit(_data())


def test_scikit_learns_svd_settings_are_taken_and_change_nothing():
    X = _data()
    ref = FactorAnalysis(3, random_state=0).fit(X)
    other = FactorAnalysis(3, random_state=0, svd_method="lapack", iterated_power=7, copy=False)
    Xc = X.copy()
    np.testing.assert_array_equal(other.fit(Xc).components_, ref.components_)
    np.testing.assert_array_equal(Xc, X)  # never written to


def test_feature_names_and_pandas_output_as_scikit_learn():
    X = _data()
    model = FactorAnalysis(3, random_state=0).fit(X)
    ref = SkFactorAnalysis(3).fit(X)
    np.testing.assert_array_equal(model.get_feature_names_out(), ref.get_feature_names_out())
    frame = model.set_output(transform="pandas").transform(X)
    assert list(frame.columns) == list(ref.get_feature_names_out())
    np.testing.assert_array_equal(
        frame.to_numpy(), model.set_output(transform="default").transform(X)
    )
