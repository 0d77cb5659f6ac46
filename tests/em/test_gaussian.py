"""em.gaussian.check_variance_floor: an absolute variance floor (reg_covar, min_covar) large
against a column's variance is said once, by name, for every Gaussian-emission model; and
em.flat_columns: a column of one value (or a linear relation among columns, under a full
covariance), whose variance only the floor sets."""

import warnings

import numpy as np
import pytest
import torch

from latentfit import AutoregressiveHMM, GaussianHSMM, VariationalGaussianHMM
from latentfit.em.gaussian import FLOOR_FRACTION
from latentfit.em.hmm.gaussian import GaussianHMM
from latentfit.em.hmm.gmmhmm import GMMHMM
from latentfit.em.mixture.families import MixtureModel
from latentfit.em.mixture.gmm import GaussianMixture
from latentfit.em.ssm.model import LinearGaussianSSM
from latentfit.errors import ConstantColumnWarning, DataError, VarianceFloorWarning
from latentfit.vi.bgmm import BayesianGaussianMixture

MODELS = {  # name: (model with its default floor, the floor's argument, its default value)
    "GaussianMixture": (lambda: GaussianMixture(2, random_state=0), "reg_covar", 1e-6),
    "BayesianGaussianMixture": (
        lambda: BayesianGaussianMixture(n_components=2, random_state=0),
        "reg_covar",
        1e-6,
    ),
    "MixtureModel": (lambda: MixtureModel("normal", 2, random_state=0), "reg_covar", 1e-6),
    "GaussianHMM": (lambda: GaussianHMM(2, random_state=0), "min_covar", 1e-3),
    "GMMHMM": (lambda: GMMHMM(2, 1, random_state=0, n_iter=5), "min_covar", 1e-3),
    "LinearGaussianSSM": (lambda: LinearGaussianSSM(1, random_state=0), "min_covar", 1e-6),
}


def _data(d=2):
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(0, 1, (100, d)), rng.normal(5, 0.5, (100, d))])


@pytest.mark.parametrize("name", MODELS)
def test_a_floor_that_swamps_data_in_small_units_is_named(name):
    """X * 1e-80: GaussianMixture's covariances came out 1e-6 (reg_covar's, the data's are
    1e-160) and GaussianHMM started from min_covar's 1e-3, with nothing said. Now one
    warning names the column, its variance, the argument and its value, and what to try."""
    make, argument, value = MODELS[name]
    X = _data() * 1e-80
    X[:, 0] *= 10  # column 1 is the one of least variance
    var = X[:, 1].var()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make().fit(X[:, :1] if name == "MixtureModel" else X)
    floor = [w for w in seen if issubclass(w.category, VarianceFloorWarning)]
    assert len(floor) == 1  # once per fit, for the worst column
    message = str(floor[0].message)
    column = 0 if name == "MixtureModel" else 1
    assert f"{argument}={value:g}" in message
    assert f"column {column} of X" in message
    assert f"({(X[:, column].var() if column == 0 else var):.3g})" in message
    assert "Rescale X" in message and f"smaller {argument}" in message
    if name != "MixtureModel":
        assert "and 1 other column" in message  # column 0 is swamped too


@pytest.mark.parametrize("name", MODELS)
def test_ordinary_data_with_the_default_floor_say_nothing(name):
    """Columns of standard deviation 0.5 to 2.6: no floor is large against them."""
    make, _, _ = MODELS[name]
    X = _data()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        make().fit(X[:, :1] if name == "MixtureModel" else X)
    assert not [w for w in seen if issubclass(w.category, VarianceFloorWarning)]


def test_the_threshold_is_a_fraction_of_the_column_variance():
    """Just below FLOOR_FRACTION of the variance nothing is said; just above, it is. A
    constant column (variance 0) is not a floor swamping the data: it is said of on its own
    (ConstantColumnWarning, below)."""
    X = _data()
    var = X.var(0).min()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        GaussianMixture(2, reg_covar=0.99 * FLOOR_FRACTION * var, random_state=0).fit(X)
        constant = np.column_stack([X, np.full(len(X), 3.0)])
        GaussianMixture(2, covariance_type="diag", random_state=0).fit(constant)
    said = [w.category for w in seen if issubclass(w.category, VarianceFloorWarning)]
    assert said == [ConstantColumnWarning]
    with pytest.warns(VarianceFloorWarning, match=r"reg_covar=.* times the variance"):
        GaussianMixture(2, reg_covar=1.01 * FLOOR_FRACTION * var, random_state=0).fit(X)


def test_a_smaller_reg_covar_as_the_warning_says_fits_the_data():
    """What the warning says to try works: with reg_covar scaled as the data (1e-6 · 1e-160)
    the fit of X * 1e-80 is the unit-scale fit scaled, variances 1e-160 times its own (with
    the default every variance was reg_covar = 1e-6), and nothing is said."""
    X = _data()
    ref = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)  # reg_covar 1e-6
    with pytest.warns(VarianceFloorWarning, match=r"below (\d\.\d+)?e-16\d"):
        swamped = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X * 1e-80)
    assert np.allclose(swamped.covariances_, 1e-6)  # the floor's, not the data's
    with warnings.catch_warnings():
        warnings.simplefilter("error", VarianceFloorWarning)
        fit = GaussianMixture(2, covariance_type="diag", reg_covar=1e-166, random_state=0)
        fit.fit(X * 1e-80)
    np.testing.assert_allclose(fit.covariances_, ref.covariances_ * 1e-160, rtol=1e-8)
    np.testing.assert_allclose(fit.means_, ref.means_ * 1e-80, rtol=1e-8)


def test_an_hmm_warns_only_where_min_covar_exceeds_the_whole_variance():
    """min_covar enters a GaussianHMM's start and the lift of a singular matrix, not every
    M-step: X * 0.1 (column variances ~0.07; min_covar 1e-3 is 1.5% of them, where the
    mixtures' threshold is 1%) says nothing; X * 0.005 (variances ~1.8e-4, below min_covar) is
    named."""
    X = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", VarianceFloorWarning)
        GaussianHMM(2, random_state=0).fit(X * 0.1)
    with pytest.warns(VarianceFloorWarning, match=r"min_covar=0.001 .* column 1 of X"):
        GaussianHMM(2, random_state=0).fit(X * 0.005)


def test_an_hmms_warning_says_what_min_covar_does_to_it():
    """Found by hand: the HMMs' warning said 'the variances fitted there are min_covar's',
    but their min_covar enters the start only (the fitted variances were 7e-8 beside a
    min_covar of 1e-3). What it does is start every state alike: two clusters 5e-4 apart
    (sd 1e-4 and 5e-5) ended in one state with the other unvisited. The words now say so;
    standardised, as they advise, the same data give two states. AutoregressiveHMM, whose
    min_covar floors every M-step, keeps the first words."""
    from latentfit import AutoregressiveHMM

    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (300, 2)), rng.normal(5, 0.5, (300, 2))] * 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", VarianceFloorWarning)
        with pytest.warns(VarianceFloorWarning) as caught:
            tiny = GaussianHMM(2, random_state=0, n_iter=20).fit(X)
        text = str(caught[0].message)
        assert "so every state starts with min_covar's variance there, not the data's" in text
        assert "fitted there" not in text
        assert np.ptp(tiny.predict(X)) == 0  # one state for both clusters
        Z = (X - X.mean(0)) / X.std(0)
        labels = GaussianHMM(2, random_state=0, n_iter=20).fit(Z).predict(Z)
        assert set(labels[:300]) == {labels[0]} and set(labels[300:]) == {1 - labels[0]}
        with pytest.warns(VarianceFloorWarning, match="the variances fitted there are min_covar's"):
            AutoregressiveHMM(1, n_iter=2, random_state=0).fit(X[:, :1])


@pytest.mark.parametrize("how", ["source", "source, n_init=3", "partial_fit"])
def test_gaussian_mixture_names_the_floor_on_a_source_and_in_partial_fit(how):
    """GaussianMixture fitted on a source (em/sources) or by partial_fit on X * 1e-80 got
    reg_covar's variances (1e-6) with nothing said, where fit on the array warns. Now the
    same single warning: from the initialisation sample (here every row, so the same
    variance as the array's) once per fit however many inits read it, and from the first
    partial_fit batch only."""
    from latentfit.em.sources.chunks import ArraySource

    X = _data() * 1e-80
    X[:, 0] *= 10
    var = X[:, 1].var()
    gm = GaussianMixture(2, covariance_type="diag", random_state=0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if how == "partial_fit":
            gm.partial_fit(X)
            gm.partial_fit(X[::2])
        else:
            gm.set_params(n_init=3 if "n_init" in how else 1).fit(ArraySource(X, chunk_rows=50))
    floor = [w for w in seen if issubclass(w.category, VarianceFloorWarning)]
    assert len(floor) == 1
    assert f"column 1 of X ({var:.3g}) (and 1 other column)" in str(floor[0].message)
    assert np.allclose(gm.covariances_, 1e-6)  # what the warning is about: the floor's


def _floor_warnings(fn):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in seen if issubclass(w.category, VarianceFloorWarning)]


CONTINUED = {  # name: a model continuing on rows it was not started from
    "GaussianMixture": lambda: GaussianMixture(2, covariance_type="diag", random_state=0),
    "MixtureModel": lambda: MixtureModel("normal", 2, random_state=0),
}


@pytest.mark.parametrize("name", CONTINUED)
@pytest.mark.parametrize("how", ["warm source", "partial_fit", "partial_fit source"])
def test_a_fit_that_continues_on_new_data_names_the_floor(name, how):
    """A warm-started fit on a source, or partial_fit on a fitted model, reads no start
    sample: on X * 1e-80 they got reg_covar's variances (1e-6) with nothing said, where fit
    on the array warns. Now once (from the first block or batch), and nothing on data in
    ordinary units."""
    from latentfit.em.sources.chunks import ArraySource

    X = _data()
    tiny = X * 1e-80
    tiny[:, 0] *= 10
    if name == "MixtureModel":
        X, tiny = X[:, 1:], tiny[:, 1:]

    def continued(rows):
        model = CONTINUED[name]().set_params(warm_start=how == "warm source")
        assert not _floor_warnings(lambda: model.fit(X))
        if how == "warm source":
            go = lambda: model.fit(ArraySource(rows, chunk_rows=50))
        elif how == "partial_fit source":
            go = lambda: model.partial_fit(ArraySource(rows, chunk_rows=50))
        else:
            go = lambda: [model.partial_fit(rows), model.partial_fit(rows[::2])]
        return _floor_warnings(go), model

    assert not continued(X * 3)[0]
    floor, model = continued(tiny)
    assert len(floor) == 1
    if name == "GaussianMixture":
        assert np.allclose(model.covariances_, 1e-6)  # the floor's, as the warning says
    column = 0 if name == "MixtureModel" else 1
    assert "reg_covar=1e-06" in floor[0] and f"column {column} of X" in floor[0]


@pytest.mark.parametrize("n_init", [1, 3])
def test_an_hmm_fitted_on_a_source_names_min_covar(n_init):
    """GaussianHMM on a source starts from its in-memory sample + min_covar as fit on the
    array does, but said nothing on X * 0.005 (variances below min_covar = 1e-3)."""
    from latentfit.em.sources.chunks import ArraySource

    model = GaussianHMM(2, random_state=0, n_init=n_init, n_iter=5)
    assert not _floor_warnings(lambda: model.fit(ArraySource(_data() * 0.1, chunk_rows=50)))
    floor = _floor_warnings(lambda: model.fit(ArraySource(_data() * 0.005, chunk_rows=50)))
    assert len(floor) == 1 and "min_covar=0.001" in floor[0] and "column 1 of X" in floor[0]


@pytest.mark.parametrize("trace", ["em_gap_trace", "hmm_gap_trace"])
def test_the_gap_traces_name_reg_covar(trace):
    """vi.gap's EM traces add reg_covar to every M-step's variances: on X * 1e-80 the traced
    fit was reg_covar's, with nothing said."""
    from latentfit.vi import gap

    run = getattr(gap, trace)
    assert not _floor_warnings(lambda: run(_data(), 2, n_iter=3))
    floor = _floor_warnings(lambda: run(_data() * 1e-80, 2, n_iter=3))
    assert len(floor) == 1 and f"{trace}: reg_covar=1e-06" in floor[0]


@pytest.mark.parametrize("name", [m for m in MODELS if m != "MixtureModel"])  # d = 1
def test_a_constant_column_whose_mean_rounds_is_left_out(name):
    """200 rows of 0.1 sum (in torch's order) to an average of 0.1 plus an ulp: a variance of
    2e-34 that no row has, which a floor was said to swamp ("reg_covar=1e-06 is 5.2e+27 times
    the variance of column 2"); the column is constant, and said to be (ConstantColumnWarning)."""
    X = np.column_stack([_data(), np.full(200, 0.1)])
    assert float(torch.as_tensor(X[:, 2]).sum() / 200) != 0.1  # the rounding taken for variance
    make, _, _ = MODELS[name]
    if name != "BayesianGaussianMixture":
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            make().fit(X)
        said = [w.category for w in seen if issubclass(w.category, VarianceFloorWarning)]
        assert said == [ConstantColumnWarning], said
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", VarianceFloorWarning)
        # its default covariance_prior is singular: refused, after the floor's warning before
        with pytest.raises(DataError, match="column 2 of X is constant"):
            make().fit(X)


def test_a_constant_column_is_left_out_under_any_weights():
    """Weights of 1e37 (or any not summing exactly) put the mean of a column of 3.0 an ulp
    off: 2e-30 of variance, said to be swamped 6e+23 times by reg_covar in float64."""
    from latentfit.em.gaussian import column_variances

    X = np.column_stack([_data(), np.full(200, 3.0)])
    for w in (np.full(200, 1e37), np.random.default_rng(1).uniform(0.1, 2, 200)):
        var = column_variances(torch.as_tensor(X), torch.as_tensor(w))
        assert float(var[2]) == 0.0 and bool((var[:2] > 0).all()), var
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            GaussianMixture(2, random_state=0).fit(X, sample_weight=w)
        assert not [c for c in caught if c.category is VarianceFloorWarning], caught


def _said(fit) -> list[str]:
    """The ConstantColumnWarning messages of ``fit()``."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit()
    return [str(w.message) for w in seen if w.category is ConstantColumnWarning]


CONSTANT = {  # the Gaussian models whose fit judges its columns: name -> model
    "GaussianMixture": lambda: GaussianMixture(2, random_state=0),
    "GaussianMixture-diag": lambda: GaussianMixture(2, covariance_type="diag", random_state=0),
    "MixtureModel": lambda: MixtureModel("normal", 2, random_state=0),
    "GaussianHMM": lambda: GaussianHMM(2, random_state=0),
    "GMMHMM": lambda: GMMHMM(2, 1, random_state=0, n_iter=5),
    "GaussianHSMM": lambda: GaussianHSMM(2, random_state=0, n_iter=5),
    "AutoregressiveHMM": lambda: AutoregressiveHMM(2, random_state=0, n_iter=5),
    "VariationalGaussianHMM": lambda: VariationalGaussianHMM(2, random_state=0, n_iter=5),
    "LinearGaussianSSM": lambda: LinearGaussianSSM(1, random_state=0, n_iter=20),
}


@pytest.mark.parametrize("name", CONSTANT)
def test_a_constant_column_is_named_with_its_value(name):
    """A column of ones beside real data: its variance is the model's floor, so the
    log-likelihood gains a constant a row (GaussianMixture: exactly -0.5 log(2 pi reg_covar),
    measured below) that says nothing about the data; scikit-learn and hmmlearn fit it
    silently, and so did latentfit. One warning names the column and its value."""
    X = np.column_stack([_data(), np.ones(200)])
    said = _said(lambda: CONSTANT[name]().fit(X))
    assert len(said) == 1, said
    assert "column 2 of X holds one value (1) in every row" in said[0], said[0]
    assert "Drop the column" in said[0]
    assert not _said(lambda: CONSTANT[name]().fit(_data()))


def test_the_constant_a_column_of_ones_adds_is_the_floors():
    """What the warning says, measured: the same fit with and without the column of ones
    differs by -0.5 log(2 pi reg_covar) a row, whatever the data (5.99 nats at 1e-6)."""
    X = _data(1)
    with_ones = np.column_stack([X, np.ones(len(X))])
    for reg_covar in (1e-6, 1e-9):
        a = GaussianMixture(2, reg_covar=reg_covar, random_state=0).fit(X)
        with pytest.warns(ConstantColumnWarning):
            b = GaussianMixture(2, reg_covar=reg_covar, random_state=0).fit(with_ones)
        gain = b.score(with_ones) - a.score(X)
        np.testing.assert_allclose(gain, -0.5 * np.log(2 * np.pi * reg_covar), rtol=1e-9)


def test_constant_columns_are_judged_on_weighted_observed_rows():
    """A column constant among the rows of positive weight (and the observed values, NaN
    being missing) is constant to the fit; columns are listed with their values."""
    X = np.column_stack([_data(), np.full(200, 2.5), np.full(200, -1.0)])
    X[:5, 2] = 9.0  # five rows of weight 0 hold another value
    w = np.ones(200)
    w[:5] = 0
    X[7, 3] = np.nan
    with pytest.warns(
        ConstantColumnWarning,
        match=r"columns 2, 3 of X each hold one value "
        r"\(2.5, -1\) in every row.*Drop the columns: they tell the components",
    ):
        GaussianMixture(2, random_state=0, missing="marginalize").fit(X, sample_weight=w)
    # the rows that differ weighted too
    assert not _said(lambda: GaussianMixture(2, random_state=0).fit(X[:, :3]))


def test_partial_fit_batches_are_not_judged_for_constant_columns():
    """A batch of a stream may well hold one value in a column that varies over the stream:
    only fit, which sees all the rows, says so."""
    X = np.column_stack([_data(), np.r_[np.zeros(100), np.ones(100)]])
    model = GaussianMixture(2, random_state=0)
    assert not _said(lambda: model.partial_fit(X[:100]))
    assert not _said(lambda: model.partial_fit(X[100:]))
    assert not _said(lambda: GaussianHMM(2, random_state=0).partial_fit(X[:100]))
    assert _said(lambda: GaussianMixture(2, random_state=0).fit(X[:100]))  # fit says it


def test_a_constant_count_column_is_no_floors():
    """A Poisson mixture's rate on a column of ones is that column's own (no floor): nothing
    to say."""
    from latentfit import PoissonMixture

    X = np.column_stack([np.random.default_rng(0).poisson(3, 100), np.ones(100)])
    assert not _said(lambda: PoissonMixture(2, random_state=0).fit(X))


DEPENDENT = {  # models whose fit judges linear dependence among its columns: name -> model
    "GaussianMixture": lambda: GaussianMixture(2, random_state=0),
    "GaussianMixture-tied": lambda: GaussianMixture(2, covariance_type="tied", random_state=0),
    "MixtureModel-mvn": lambda: MixtureModel("mvn", 2, random_state=0),
    "GaussianHMM-full": lambda: GaussianHMM(2, covariance_type="full", random_state=0),
    "GMMHMM-full": lambda: GMMHMM(2, 1, covariance_type="full", random_state=0, n_iter=5),
    "GaussianHSMM-full": lambda: GaussianHSMM(2, covariance_type="full", random_state=0, n_iter=5),
    "AutoregressiveHMM": lambda: AutoregressiveHMM(2, random_state=0, n_iter=5),
}


@pytest.mark.parametrize("name", DEPENDENT)
def test_a_column_that_is_a_linear_function_of_another_is_named(name):
    """Twice a column plus one beside it: a full (or tied) covariance is singular along their
    relation, which the floor fills in; the warning says the relation, found by the data's
    correlation matrix."""
    X = _data()
    Y = np.column_stack([X, 2 * X[:, 0] + 1])
    said = _said(lambda: DEPENDENT[name]().fit(Y))
    assert len(said) == 1, said
    assert "(column 2 = 2 * column 0 + 1 in every row)" in said[0], said[0]
    assert ("'normal' family" if name.startswith("MixtureModel") else "'diag'") in said[0]
    noise = np.random.default_rng(1).normal(0, 1e-3, len(X))  # correlated, not dependent
    assert not _said(lambda: DEPENDENT[name]().fit(np.column_stack([X, 2 * X[:, 0] + 1 + noise])))


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_independent_columns_covariances_say_nothing_of_a_relation(covariance_type):
    Y = np.column_stack([_data(), 2 * _data()[:, 0] + 1])
    assert not _said(lambda: GaussianMixture(2, covariance_type=covariance_type).fit(Y))


def test_what_a_relation_adds_grows_as_the_floor_shrinks():
    """The warning's claim, measured: with a dependent column the log-likelihood per row grows
    by 0.5 log(1000) = 3.45 nats when reg_covar shrinks 1000 times (the floor's), where
    without it the fit barely moves."""
    X = _data()
    Y = np.column_stack([X, 2 * X[:, 0] + 1])
    scores = {}
    for reg in (1e-6, 1e-9):
        with pytest.warns(ConstantColumnWarning):
            scores[reg] = GaussianMixture(2, reg_covar=reg, random_state=0).fit(Y).score(Y)
        plain = GaussianMixture(2, reg_covar=reg, random_state=0).fit(X).score(X)
        scores[reg, "plain"] = plain
    np.testing.assert_allclose(scores[1e-9] - scores[1e-6], 0.5 * np.log(1000), rtol=1e-3)
    assert abs(scores[1e-9, "plain"] - scores[1e-6, "plain"]) < 1e-3


def test_three_way_relations_and_too_few_rows_to_tell():
    from latentfit.em.flat_columns import dependent_columns

    rng = np.random.default_rng(0)
    few = rng.normal(size=(4, 6))
    assert dependent_columns(torch.as_tensor(few)) is None  # said by the GMM's own fit
    x, y, z = rng.normal(size=(3, 50))
    found = dependent_columns(torch.as_tensor(np.column_stack([x, y, z, x - 3 * y])))
    assert found is not None and found[0] == 1 and found[1] == [0, 1, 3] and found[2] is None
