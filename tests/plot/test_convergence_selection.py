"""plot_convergence draws exactly the stored bound histories; plot_selection the criteria."""

import math
import warnings

import numpy as np
import pytest
import torch

from latentfit import (
    PPCA,
    BayesianGaussianMixture,
    CategoricalHMM,
    GaussianHMM,
    GaussianMixture,
    PoissonMixture,
    select_model,
)
from latentfit.datasets import load_faithful
from latentfit.errors import ParameterError
from latentfit.plot import plot_convergence, plot_selection

X = load_faithful().data.numpy()


def _fit(model, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(*args)


def _restart_lines(ax):
    return [line for line in ax.lines if str(line.get_label()).startswith("restart")]


@pytest.mark.parametrize(
    "make",
    [
        lambda: _fit(GaussianMixture(3, n_init=4, init_params="random", random_state=0), X),
        lambda: _fit(GaussianHMM(2, n_init=3, n_iter=30, random_state=0), X),
        lambda: _fit(
            CategoricalHMM(2, n_init=2, n_iter=15, random_state=0),
            (X[:, :1] > 3).astype(np.int64),
        ),
        lambda: _fit(PoissonMixture(2, n_init=2, random_state=0), np.round(X)),
    ],
    ids=["gmm", "gaussian-hmm", "categorical-hmm", "poisson-mixture"],
)
def test_every_restart_is_drawn_with_its_history_and_the_kept_one_marked(make):
    model = make()
    ax = plot_convergence(model)
    lines = _restart_lines(ax)
    assert len(lines) == len(model.all_lower_bounds_) > 1
    for line, bounds in zip(lines, model.all_lower_bounds_, strict=True):
        np.testing.assert_array_equal(line.get_ydata(), bounds)
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, len(bounds) + 1))
    kept = [i for i, line in enumerate(lines) if "(kept)" in line.get_label()]
    assert kept == [model.best_init_]
    np.testing.assert_array_equal(lines[model.best_init_].get_ydata(), model.lower_bounds_)


def test_a_single_run_without_restart_record():
    ppca = _fit(PPCA(1, max_iter=50, random_state=0), X)
    (line,) = _restart_lines(plot_convergence(ppca))
    np.testing.assert_array_equal(line.get_ydata(), ppca.lower_bounds_)


def test_a_bayesian_mixture_is_drawn_as_its_elbo_in_nats():
    bg = _fit(BayesianGaussianMixture(n_components=4, n_init=2, random_state=0), X)
    ax = plot_convergence(bg)
    kept = _restart_lines(ax)[bg.best_init_]
    np.testing.assert_allclose(kept.get_ydata(), bg.elbos_, rtol=1e-12)
    assert ax.get_ylabel() == "ELBO (nats)"


def test_a_training_run_draws_its_bounds_per_epoch():
    from latentfit.train import TrainConfig, train
    from latentfit.vae import ELBO, build_model

    g = torch.Generator().manual_seed(0)
    data = torch.rand(60, 16, generator=g).round()
    model = build_model(x_dim=16, z_dim=2, hidden=[8], seed=0)
    cfg = TrainConfig(epochs=3, batch_size=20, progress=False, diagnostics=False, patience=None)
    res = train(model, ELBO(), data[:40], data[40:], cfg)
    ax = plot_convergence(res)
    train_line, val_line = ax.lines
    np.testing.assert_array_equal(train_line.get_ydata(), [r["train_bound"] for r in res.history])
    np.testing.assert_array_equal(val_line.get_ydata(), [r["val_bound"] for r in res.history])
    np.testing.assert_array_equal(train_line.get_xdata(), [1, 2, 3])


def test_convergence_refuses_an_unfitted_model():
    with pytest.raises(ParameterError, match="fit it first"):
        plot_convergence(GaussianMixture(2))


def test_selection_lines_hold_every_criterion_value_and_the_best_is_circled():
    res = select_model(X, n_components=range(1, 4), covariance_types=("full", "diag"))
    for crit in ("bic", "aic", "icl"):
        ax = plot_selection(res, crit)
        by_variant = {line.get_label(): line for line in ax.lines}
        for v in ("full", "diag"):
            rows = sorted(
                (r for r in res.rows if r["variant"] == v), key=lambda r: r["n_components"]
            )
            np.testing.assert_array_equal(by_variant[v].get_xdata(), [1, 2, 3])
            np.testing.assert_array_equal(by_variant[v].get_ydata(), [r[crit] for r in rows])
        best = res.rows[int(np.nanargmin([r[crit] for r in res.rows]))]
        circle = by_variant["best"]
        assert (circle.get_xdata()[0], circle.get_ydata()[0]) == (best["n_components"], best[crit])


def test_selection_shows_failed_fits_as_gaps_and_cv_only_when_computed():
    res = select_model(X, n_components=[1, 2], covariance_types=("full",))
    res.rows[1].update(bic=math.nan, error="failed on purpose")
    (line, _) = plot_selection(res).lines
    assert np.isnan(line.get_ydata()[1])
    with pytest.raises(ParameterError, match="cv="):
        plot_selection(res, "cv_loglik")


def test_a_fitted_flow_draws_its_history():
    from latentfit import MAF

    flow = MAF(n_layers=1, hidden=8, n_hidden=1, epochs=2, patience=None, random_state=0)
    (train_line,) = plot_convergence(flow.fit(X)).lines  # no validation rows: one line
    np.testing.assert_array_equal(train_line.get_ydata(), [r["train_bound"] for r in flow.history_])
    flow.set_params(patience=5).fit(X)  # early stopping holds out validation rows
    train_line, val_line = plot_convergence(flow).lines
    np.testing.assert_array_equal(train_line.get_ydata(), [r["train_bound"] for r in flow.history_])
    np.testing.assert_array_equal(val_line.get_ydata(), [r["val_bound"] for r in flow.history_])


def test_a_sequence_of_bounds_such_as_svi_returns():
    from latentfit.vi.svi import svi

    loc = torch.zeros(1, requires_grad=True)
    data = torch.tensor([0.5, 1.5])

    def objective(batch):
        return torch.distributions.Normal(loc, 1.0).log_prob(data).sum()

    history = svi(objective, torch.optim.SGD([loc], lr=0.1), 20)
    (line,) = _restart_lines(plot_convergence(history))
    np.testing.assert_array_equal(line.get_ydata(), history)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 21))
    with pytest.raises(ParameterError, match="empty"):
        plot_convergence([])
