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
