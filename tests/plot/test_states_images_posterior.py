"""plot_states, the image grids and the posterior plots draw exactly the values they are given."""

import warnings

import numpy as np
import pytest
import torch

from latentfit import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM
from latentfit.datasets import load_geyser
from latentfit.errors import DataError, ParameterError
from latentfit.plot import (
    plot_image_grid,
    plot_pair,
    plot_reconstructions,
    plot_samples,
    plot_states,
    plot_trace,
)

SERIES = np.asarray(load_geyser().data, dtype=float)  # (299, 2)


def _fit(model, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(*args)


HMMS = {
    "gaussian": lambda: (_fit(GaussianHMM(2, n_iter=20, random_state=0), SERIES), SERIES),
    "gmm": lambda: (_fit(GMMHMM(2, n_mix=2, n_iter=5, random_state=0), SERIES), SERIES),
    "poisson": lambda: (
        _fit(PoissonHMM(2, n_iter=20, random_state=0), np.round(SERIES)),
        np.round(SERIES),
    ),
    "categorical": lambda: (
        _fit(CategoricalHMM(2, n_iter=20, random_state=0), (SERIES[:, 1:] > 3).astype(np.int64)),
        (SERIES[:, 1:] > 3).astype(np.int64),
    ),
}


@pytest.mark.parametrize("kind", list(HMMS))
def test_every_step_is_drawn_once_in_its_decoded_state(kind):
    model, Y = HMMS[kind]()
    lengths = [100, len(Y) - 100]
    _, path = model.decode(Y, lengths)
    axes = plot_states(model, Y, lengths)
    assert len(axes) == Y.shape[1]
    for col, ax in enumerate(axes):
        series, *boundaries = ax.lines
        np.testing.assert_array_equal(series.get_ydata(), Y[:, col])
        drawn = {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}
        for s in np.unique(path):
            pts = drawn[f"state {s}"]
            np.testing.assert_array_equal(pts[:, 0], np.flatnonzero(path == s))
            np.testing.assert_array_equal(pts[:, 1], Y[path == s, col])
        assert sum(len(p) for p in drawn.values()) == len(Y)
        assert [b.get_xdata()[0] for b in boundaries] == [99.5]


def test_given_states_names_and_axes_are_used_and_checked():
    import matplotlib.pyplot as plt

    model, Y = HMMS["gaussian"]()
    states = np.arange(len(Y)) % 2
    _, ax = plt.subplots()
    (drawn,) = plot_states(model, Y, states=states, features=[1], state_names=["a", "b"], ax=ax)
    assert drawn is ax
    assert sorted(c.get_label() for c in ax.collections) == ["a", "b"]
    with pytest.raises(DataError, match="states"):
        plot_states(model, Y, states=states[:-1])
    with pytest.raises(DataError, match=r"0\.\.1"):
        plot_states(model, Y, states=states + 1)
    with pytest.raises(ParameterError, match="one Axes per"):
        plot_states(model, Y, states=states, ax=ax)


def _vae():
    from latentfit.vae import build_model

    return build_model(x_dim=36, z_dim=3, hidden=[8], seed=0)


def test_samples_grid_holds_the_decoded_prior_draws():
    from latentfit.vae.images import sample_images

    model = _vae()
    ax = plot_samples(model, 5, generator=torch.Generator().manual_seed(3), nrow=5)
    grid = np.asarray(ax.images[0].get_array())
    ref = sample_images(model, 5, torch.Generator().manual_seed(3)).numpy()
    assert grid.shape == (1 + 6 + 1, 5 * 7 + 1)  # one row of five 6×6 images, 1-pixel gaps
    for i in range(5):
        np.testing.assert_allclose(
            grid[1:7, 1 + 7 * i : 7 + 7 * i], ref[i].reshape(6, 6), rtol=1e-6
        )


def test_reconstructions_sit_below_their_data_rows():
    from latentfit.vae.images import reconstruct

    model = _vae()
    X = torch.rand(4, 36, generator=torch.Generator().manual_seed(0))
    ax = plot_reconstructions(model, X, n=4, nrow=4)
    grid = np.asarray(ax.images[0].get_array())
    rec = reconstruct(model, X).numpy()
    for i in range(4):
        cols = slice(1 + 7 * i, 7 + 7 * i)
        np.testing.assert_allclose(grid[1:7, cols], X[i].reshape(6, 6).numpy(), rtol=1e-6)
        np.testing.assert_allclose(grid[8:14, cols], rec[i].reshape(6, 6), rtol=1e-6)
    with pytest.raises(ParameterError, match="image_shape"):
        plot_image_grid(X, (5, 5))


def _draws():
    rng = np.random.default_rng(0)
    return {"mu": rng.normal(size=(3, 50)), "cov": rng.normal(size=(3, 50, 2, 2))}


def test_trace_rows_hold_every_chain_of_every_coordinate():
    draws = _draws()
    axes = plot_trace(draws, ["mu", "cov[1]"])
    assert axes.shape == (3, 2)
    wanted = [("mu", draws["mu"]), ("cov[1,0]", draws["cov"][:, :, 1, 0]),
              ("cov[1,1]", draws["cov"][:, :, 1, 1])]  # fmt: skip
    for (label, values), (left, right) in zip(wanted, axes, strict=True):
        assert left.get_ylabel() == label
        assert len(right.lines) == 3
        for c, line in enumerate(right.lines):
            np.testing.assert_array_equal(line.get_ydata(), values[c])
        heights = [p.get_path() for p in left.patches]
        assert len(heights) == 3  # one step histogram per chain
    with pytest.raises(ParameterError, match="max_panels"):
        plot_trace(draws, max_panels=2)
    with pytest.raises(ParameterError, match="no parameter 'sigma'"):
        plot_trace(draws, ["sigma"])
    with pytest.raises(ParameterError, match="shape"):
        plot_trace(draws, ["cov[2,0]"])


def test_pair_scatters_pooled_chains():
    draws = _draws()
    ax = plot_pair(draws, ["mu", "cov[0,1]"])
    (pts,) = [np.asarray(c.get_offsets()) for c in ax.collections]
    np.testing.assert_array_equal(pts[:, 0], draws["mu"].ravel())
    np.testing.assert_array_equal(pts[:, 1], draws["cov"][:, :, 0, 1].ravel())
    grid = plot_pair(draws, ["mu", "cov[0]"])
    assert grid.shape == (3, 3)
    below = np.asarray(grid[2, 0].collections[0].get_offsets())
    np.testing.assert_array_equal(below[:, 1], draws["cov"][:, :, 0, 1].ravel())
    with pytest.raises(ParameterError, match="at least two"):
        plot_pair(draws, ["mu"])


def test_posterior_plots_take_mcmc_gibbs_and_svgd_results():
    import torch.distributions as D

    from latentfit.mcmc import sample
    from latentfit.mcmc.gibbs import gibbs_gmm
    from latentfit.mcmc.svgd import svgd

    obs = torch.tensor([0.1, 0.5, -0.3], dtype=torch.float64)

    def log_density(mu, sigma):
        return D.Normal(mu, sigma).log_prob(obs).sum()

    init = {"mu": torch.tensor(0.0, dtype=torch.float64), "sigma": torch.tensor(1.0,
            dtype=torch.float64)}  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    nuts = sample(log_density, init, constraints={"sigma": D.constraints.positive},
                  num_chains=2, num_warmup=30, num_draws=20, progress_bar=False, generator=gen)  # fmt: skip
    axes = plot_trace(nuts)
    for (_, right), name in zip(axes, ["mu", "sigma"], strict=True):
        for c, line in enumerate(right.lines):
            np.testing.assert_allclose(line.get_ydata(), nuts.draws[name][c].numpy())
    gibbs = gibbs_gmm(torch.as_tensor(SERIES), 2, num_chains=2, num_warmup=5, num_draws=10,
                      generator=gen)  # fmt: skip
    axes = plot_trace(gibbs, ["weights"])
    np.testing.assert_allclose(axes[1, 1].lines[0].get_ydata(), gibbs.weights[0, :, 1].numpy())
    particles = svgd(log_density, init, constraints={"sigma": D.constraints.positive},
                     num_particles=10, num_iter=5, progress_bar=False, generator=gen)  # fmt: skip
    ax = plot_pair(particles)
    np.testing.assert_allclose(np.asarray(ax.collections[0].get_offsets())[:, 0],
                               particles["mu"].numpy())  # fmt: skip
