"""The one fit of the EM estimators (EMEstimator._fit): what it does the same way for all."""

import numpy as np
import pytest

import latentfit as lf
from latentfit.em.sources.chunks import ArraySource
from latentfit.errors import ParameterError


@pytest.mark.parametrize(
    "model",
    [lf.BayesianGaussianMixture(n_components=2), lf.LinearGaussianSSM(1), lf.GaussianHSMM(2)],
)
def test_a_model_that_reads_no_source_says_so(model):
    # these fit arrays only; a source used to reach the array checks ("X holds <...ArraySource
    # object> at its only value") instead of a message about sources
    X = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ParameterError, match=f"{type(model).__name__} fits arrays held in memory"):
        model.fit(ArraySource(X))


def test_settings_are_checked_before_the_data_as_parameter_errors():
    # a family's own ValueError from a setting becomes ParameterError, for every model alike
    X = np.zeros((3, 2))
    for model in (lf.GaussianMixture(0), lf.GaussianHMM(0), lf.FactorAnalysis(max_iter=-1)):
        with pytest.raises(ParameterError):
            model.fit(X)


def _em_classes():
    from latentfit.em.base import EMEstimator

    found = {getattr(lf, n) for n in lf.__all__}
    return sorted(
        (c for c in found if isinstance(c, type) and issubclass(c, EMEstimator)),
        key=lambda c: c.__name__,
    )


@pytest.mark.parametrize("cls", _em_classes(), ids=lambda c: c.__name__)
def test_the_constructor_stores_exactly_its_arguments(cls):
    # scikit-learn's rule: __init__ sets one attribute per argument, as given, and nothing else
    from sklearn.base import clone

    model = cls()
    assert set(vars(model)) == set(cls._get_param_names()) == set(model.get_params())
    twin = clone(model.set_params(random_state=7))
    assert twin.get_params() == model.get_params()


@pytest.mark.parametrize("cls", [lf.GaussianHMM, lf.GaussianHSMM, lf.AutoregressiveHMM])
def test_every_hmm_refuses_a_start_state_out_of_range_alike(cls):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    model = cls(n_components=2, n_iter=2, random_state=0).fit(X)
    for bad in (2, -1, 1.0, True):
        with pytest.raises(ParameterError, match=r"currstate must be a state index 0\.\.1, got"):
            model.sample(5, currstate=bad)
    assert model.sample(5, currstate=1)[1][0] == 1


def test_batches_carry_the_known_states_of_their_own_rows():
    import torch

    from latentfit.em.hmm.sequences import batch_sequences, with_states

    X = torch.arange(20.0).reshape(10, 2)
    states = torch.tensor([0, -1, 1, 1, -1, 0, 0, -1, 1, 0])
    lengths = [3, 2, 4, 1]
    plain = batch_sequences(X, lengths, 5)
    assert with_states(plain, None) is plain
    for Xb, lb, sb in with_states(plain, states):
        rows = (Xb[:, 0] / 2).long()  # the row index of every step in the batch
        assert torch.equal(sb, states[rows]) and sum(lb) == len(rows)


def test_the_progress_bar_shows_no_change_before_the_second_iteration(capsys):
    """The first iteration's change is from -inf: the bar showed ``change=inf``."""
    X = np.random.default_rng(0).normal(size=(60, 2))
    lf.FactorAnalysis(1, verbose=True, max_iter=3, tol=0.0).fit(X)
    err = capsys.readouterr().err
    assert "lower_bound=" in err and "change=" in err
    assert "change=inf" not in err
