"""What sampling returns: draws with chain and draw dimensions, sampler statistics, diagnostics
from ArviZ and a summary table like ``arviz.summary``."""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import torch

from latentfit._memory import MAX_WORK
from latentfit._validation import check_bool, check_positive_int
from latentfit.errors import MissingDependencyError, ParameterError, UnknownNameError

__all__ = [
    "MCMCResult",
    "arviz_call",
    "arviz_from_dict",
    "arviz_mcse",
    "check_name",
    "draw_or_item",
    "import_arviz",
]


def check_name(result, name, names) -> None:
    """Refuse ``result[name]`` for a ``name`` not among the result's parameters ``names``,
    listing them (a bare ``KeyError: 'nope'`` said neither)."""
    if not (isinstance(name, str) and name in names):
        raise UnknownNameError(
            f"{type(result).__name__} has no parameter {name!r}; its parameters are "
            f"{', '.join(map(repr, names))} (result[NAME] for one of them)"
        )


def draw_or_item(result, key):
    """``result["means"]``: a Gibbs result's draws by name (its ``draws`` dict), as the other
    sampling results give them; an index or slice is the tuple's. The results are
    NamedTuples, which take no mixin: each sets ``__getitem__ = draw_or_item``."""
    if isinstance(key, str):
        check_name(result, key, tuple(result.draws))
        return result.draws[key]
    return tuple.__getitem__(result, key)


def _not_shape_validation(record: logging.LogRecord) -> bool:
    """Drop ArviZ's "Shape validation failed" log line (fewer than 4 draws a chain): it reaches
    the console as a raw logger line, and ``MCMCResult.diagnostics`` says it in words."""
    return "Shape validation failed" not in record.getMessage()


@contextlib.contextmanager
def _shape_validation_unlogged(az):
    """:func:`_not_shape_validation` on ArviZ's logger for the calls latentfit makes, taken off
    after them (also when they raise): the user's own ArviZ calls log as ArviZ does."""
    log = getattr(az, "_log", None)  # ArviZ 0.x logs through its own Logger instance
    if not isinstance(log, logging.Logger):
        log = logging.getLogger("arviz")
    added = _not_shape_validation not in log.filters  # inside another such call: its own
    if added:
        log.addFilter(_not_shape_validation)
    try:
        yield
    finally:
        if added:
            log.removeFilter(_not_shape_validation)


def import_arviz():
    """ArviZ, imported on first use (its diagnostics: rank-normalised split R-hat, ESS, MCSE)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the 1.x refactor notice
            import arviz
    except ImportError as e:  # arviz is a dependency: only a broken install gets here
        missing = getattr(e, "name", None)
        raise MissingDependencyError(
            "latentfit.mcmc diagnostics need ArviZ: pip install arviz"
            if missing in (None, "arviz")
            else f"latentfit.mcmc diagnostics need ArviZ, which is installed but cannot be "
            f"imported: {e}. Install what it names (pip install {missing})"
        ) from e
    return arviz


def arviz_call(name: str, data, **kwargs):
    """``arviz.<name>(data, **kwargs)`` (``summary``, ``ess``, ``rhat``, ``mcse``): an argument
    ArviZ refuses (an unknown method or keyword, an ``hdi_prob`` outside (0, 1]) is said as a
    ParameterError naming the call, not as ArviZ's TypeError or ValueError."""
    az = import_arviz()
    fn = getattr(az, name)
    try:
        with warnings.catch_warnings(), _shape_validation_unlogged(az):
            # numpy's words for a statistic of one draw a chain (the sd of one value): the
            # table shows NaN there and ``MCMCResult.diagnostics`` says why
            warnings.filterwarnings("ignore", "Degrees of freedom <= 0", RuntimeWarning)
            warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
            # R-hat of split chains that each hold one value (within-chain variance 0, between
            # chains not): a huge or inf R-hat in the table says it (and
            # MCMCResult.diagnostics() "R-hat up to ...: run longer")
            warnings.filterwarnings("ignore", "divide by zero encountered", RuntimeWarning)
            return fn(data, **kwargs)
    except (TypeError, ValueError, KeyError) as err:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        text = " ".join(str(err).split())
        raise ParameterError(
            f"{name}({args}): ArviZ refused the arguments: {text}; see help(arviz.{name})"
        ) from err


def arviz_from_dict(groups: dict[str, dict[str, np.ndarray]], dims=None):
    """``arviz.from_dict`` of arrays (chain, draw, *shape): ``InferenceData`` (ArviZ 0.x) or a
    ``DataTree`` (ArviZ 1.x). ArviZ warns "More chains than draws. Passed array should have
    shape (chains, draws, *shape)" whenever there are fewer draws than chains, guessing at a
    transposed array: latentfit builds these arrays in that order, so the warning would only
    blame the user for a short run, and is dropped."""
    az = import_arviz()
    with warnings.catch_warnings(), _shape_validation_unlogged(az):
        warnings.filterwarnings("ignore", r"More chains \(\d+\) than draws", UserWarning)
        if int(az.__version__.split(".")[0]) >= 1:  # pragma: no cover - depends on the install
            return az.from_dict(groups, dims=dims)
        return az.from_dict(**groups, dims=dims)


def arviz_mcse(data, method: str = "mean"):
    """``arviz.mcse(data, method=method)``, except ``method="sd"``: ArviZ 0.x's own calls
    ``float()`` on a one-element array wherever numba is installed, which numpy 2 refuses
    (TypeError, said as a refused argument), so the same estimate is computed here from ArviZ's
    mean-ESS (Vehtari et al. 2021, section 4.4: the MCSE of the variance from the ESS of the
    squared deviations, carried to the sd by the delta method); it equals ``summary``'s
    ``mcse_sd``."""
    if method != "sd":
        return arviz_call("mcse", data, method=method)
    az = import_arviz()
    with _shape_validation_unlogged(az):
        ds = az.convert_to_dataset(data)
    c2 = (ds - ds.mean(("chain", "draw"))) ** 2
    ess = arviz_call("ess", c2, method="mean")
    with np.errstate(divide="ignore", invalid="ignore"):  # constant draws: NaN, as ArviZ gives
        evar = c2.mean(("chain", "draw"))
        return (((c2**2).mean(("chain", "draw")) - evar**2) / ess / evar / 4) ** 0.5


class MCMCResult:
    """Draws of every chain, with the sampler's statistics.

    ``draws[name]`` has shape (chains, draws, *shape) in natural coordinates; ``sample_stats``
    holds per-transition statistics (chains, draws): ``lp`` (log-density in unconstrained
    space), ``accept_stat``, ``n_leapfrog``, ``tree_depth``, ``diverging``, ``energy``;
    ``step_size`` (chains,) and ``inv_metric`` are the adapted values. ``warmup_stats`` holds
    the warm-up's ``accept_stat``, ``n_leapfrog`` and ``tree_depth`` (chains, num_warmup), the
    metric's window ends (``windows``) and the chains moved off a minor mode (``relocated``).
    """

    def __init__(self, target, runner, draws: dict, warmup: dict):
        self.target = target
        self._runner = runner
        self._rec = draws
        self.warmup_stats = warmup
        runner.latest_result = self  # the chains' state is where this result's draws end

    # -- draws ---------------------------------------------------------------------------------
    @property
    def num_chains(self) -> int:
        return self._rec["u"].shape[0]

    @property
    def num_draws(self) -> int:
        return self._rec["u"].shape[1]

    @property
    def unconstrained(self) -> torch.Tensor:
        """Draws in unconstrained space (chains, draws, p)."""
        return self._rec["u"]

    @property
    def draws(self) -> dict[str, torch.Tensor]:
        c, n, p = self._rec["u"].shape
        params, _ = self.target.constrain(self._rec["u"].reshape(c * n, p))
        return {k: v.reshape(c, n, *v.shape[1:]) for k, v in params.items()}

    def __getitem__(self, name: str) -> torch.Tensor:
        check_name(self, name, self.target.names)
        return self.draws[name]

    @property
    def sample_stats(self) -> dict[str, torch.Tensor]:
        keys = ("lp", "accept_stat", "n_leapfrog", "tree_depth", "diverging", "energy")
        return {k: self._rec[k] for k in keys}

    @property
    def step_size(self) -> torch.Tensor:
        return self._runner.step

    @property
    def inv_metric(self) -> torch.Tensor:
        return self._runner.metric.inv

    # -- sampler diagnostics -------------------------------------------------------------------
    @property
    def num_divergent(self) -> torch.Tensor:
        """Divergent transitions per chain (chains,)."""
        return self._rec["diverging"].sum(1)

    def divergences(self) -> dict[str, torch.Tensor]:
        """Where the divergences are: ``chain`` and ``draw`` indices of each divergent
        transition, the draw kept there (``params``, natural coordinates) and ``u_diverged``,
        the unconstrained point where the trajectory's energy error first exceeded 1000."""
        chain, draw = self._rec["diverging"].nonzero(as_tuple=True)
        u = self._rec["u"][chain, draw]
        params, _ = self.target.constrain(u) if len(chain) else ({}, None)
        return {
            "chain": chain,
            "draw": draw,
            "params": params,
            "u_diverged": self._rec["divergence_u"][chain, draw],
        }

    @property
    def tree_depth_saturation(self) -> torch.Tensor:
        """Fraction of transitions per chain that hit ``max_depth`` (NUTS; 0 for HMC)."""
        if self._runner.config.kernel != "nuts":
            return torch.zeros(self.num_chains)
        hit = self._rec["tree_depth"] >= self._runner.config.max_depth
        return hit.double().mean(1)

    @property
    def e_bfmi(self) -> torch.Tensor:
        """Energy Bayesian fraction of missing information per chain (Betancourt 2016):
        ``Σ (E_n − E_{n−1})² / Σ (E_n − Ē)²``; below 0.3 the momenta explore the energy poorly."""
        e = self._rec["energy"]
        num = (e[:, 1:] - e[:, :-1]).pow(2).sum(1)
        den = (e - e.mean(1, keepdim=True)).pow(2).sum(1)
        return num / den

    def diagnostics(self) -> str:
        """Stan-like warnings in words: divergences, tree-depth saturation, low E-BFMI, R-hat."""
        lines = []
        div = int(self.num_divergent.sum())
        total = self.num_chains * self.num_draws
        if div:
            lines.append(
                f"{div} of {total} transitions diverged (per chain {self.num_divergent.tolist()}); "
                "raise target_accept or reparametrise (see divergences())"
            )
        sat = self.tree_depth_saturation
        if bool((sat > 0).any()):
            lines.append(
                f"{100 * float(sat.mean()):.1f}% of transitions hit max_depth="
                f"{self._runner.config.max_depth}; raise max_depth"
            )
        low = (self.e_bfmi < 0.3).nonzero().squeeze(1).tolist()
        if low:
            lines.append(f"E-BFMI below 0.3 in chains {low}: the posterior may have heavy tails")
        if self.num_draws < 4:
            lines.append(
                f"R-hat, ESS and MCSE need at least 4 draws per chain, got {self.num_draws}: "
                "they are not computed (NaN in the summary); draw more"
            )
        elif self.num_chains == 1:
            lines.append(
                "R-hat needs at least 2 chains, got 1: it is not computed (NaN in the summary), "
                "so nothing here checks that the chain converged; run num_chains >= 2"
            )
        else:
            rhat = self.rhat()
            unknown = [k for k, v in rhat.items() if np.isnan(v).any()]
            known = {k: v[~np.isnan(v)] for k, v in rhat.items() if (~np.isnan(v)).any()}
            if unknown:
                lines.append(
                    f"R-hat is NaN for {unknown}: their draws do not vary (a parameter fixed by "
                    "its constraint, or chains that never moved); check the model and the chains"
                )
            worst = max(known, key=lambda k: float(known[k].max()), default=None)
            if worst is not None and float(known[worst].max()) > 1.01:
                lines.append(f"R-hat up to {float(known[worst].max()):.3f} ({worst}): run longer")
        return "\n".join(lines) if lines else "no problems found"

    # -- ArviZ ---------------------------------------------------------------------------------
    def to_arviz(self):
        """The draws as ArviZ data: ``InferenceData`` (ArviZ 0.x) or a ``DataTree`` (ArviZ 1.x),
        with groups ``posterior`` and ``sample_stats`` (ArviZ's names: ``lp``, ``acceptance_rate``,
        ``n_steps``, ``tree_depth``, ``diverging``, ``energy``, ``step_size``)."""
        posterior = {k: v.detach().cpu().numpy() for k, v in self.draws.items()}
        st = self.sample_stats
        stats = {
            "lp": st["lp"],
            "acceptance_rate": st["accept_stat"],
            "n_steps": st["n_leapfrog"],
            "tree_depth": st["tree_depth"],
            "diverging": st["diverging"],
            "energy": st["energy"],
            "step_size": self.step_size[:, None].expand_as(st["lp"]),
        }
        stats = {k: v.detach().cpu().numpy() for k, v in stats.items()}
        return arviz_from_dict({"posterior": posterior, "sample_stats": stats}, _dims(posterior))

    def _stat(self, name: str, **kwargs) -> dict[str, np.ndarray]:
        data = self.to_arviz()
        ds = arviz_mcse(data, **kwargs) if name == "mcse" else arviz_call(name, data, **kwargs)
        return {k: np.asarray(ds[k].values) for k in self.target.names}

    def rhat(self) -> dict[str, np.ndarray]:
        """Rank-normalised split R-hat (Vehtari et al. 2021) per parameter, from ArviZ."""
        return self._stat("rhat", method="rank")

    def ess(self, method: str = "bulk") -> dict[str, np.ndarray]:
        """Effective sample size (``"bulk"`` or ``"tail"``) per parameter, from ArviZ."""
        return self._stat("ess", method=method)

    def mcse(self, method: str = "mean") -> dict[str, np.ndarray]:
        """Monte-Carlo standard error of the posterior mean (or ``"sd"``), from ArviZ."""
        return self._stat("mcse", method=method)

    def summary(self, **kwargs):
        """``arviz.summary`` of the draws (a pandas DataFrame: mean, sd, HDI, MCSE, ESS, R-hat)."""
        return arviz_call("summary", self.to_arviz(), **kwargs)

    def __repr__(self) -> str:
        return (
            f"MCMCResult({self._runner.config.kernel}, {self.num_chains} chains x "
            f"{self.num_draws} draws, parameters {self.target.names}, "
            f"divergences {int(self.num_divergent.sum())})"
        )

    # -- more draws ----------------------------------------------------------------------------
    def resume(
        self, num_draws: int, progress_bar: bool = True, max_work=MAX_WORK, **settings
    ) -> MCMCResult:
        """``num_draws`` more draws from where every chain stopped, with the adapted step size
        and metric and the same random stream (no second warm-up): returns the result holding
        all draws so far. The same seed with ``resume`` gives the same draws as one longer run.
        ``max_work`` caps the new draws' work as ``sample``'s caps a run's (None: no limit).

        A resume continues this run, so it takes no seed, generator, chains or sampler
        settings (a ParameterError says so): for those, call ``sample`` again. A resume that
        raises or is interrupted leaves this result's chains where its draws end: resuming it
        again gives the draws of one resume that ran through. A first Ctrl-C from Python ends
        the draws after a transition (once each chain has 4) and returns them, with a warning;
        a second raises KeyboardInterrupt at once."""
        from latentfit._interrupt import keeping_fit_on_ctrl_c
        from latentfit.mcmc.sampler import check_memory, check_work, warn_stopped

        if settings:
            _refuse_resume_settings(settings, self.num_chains)
        num_draws = check_positive_int(num_draws, "num_draws")
        progress_bar = check_bool(progress_bar, "progress_bar")
        runner = self._runner
        if getattr(runner, "latest_result", self) is not self:
            # the chains have moved on past this result's last draw: its continuation would
            # join draws that do not follow one another
            raise ParameterError(
                "this result has been resumed already, and its chains have moved on past its "
                "last draw; call resume on the result the last resume returned"
            )
        # the draws so far, the new ones and their concatenation
        check_memory(runner.target, runner.config, self.num_chains, 0, self.num_draws + num_draws)
        check_work(runner.target, self.num_chains, num_draws, option="num_draws", max_work=max_work)
        # all or nothing: a resume stopped midway (an error, Ctrl-C) leaves the chains where
        # this result's draws end, so that resuming it again continues them draw for draw
        before = runner.snapshot()
        try:  # Ctrl-C from Python ends the draws after a transition and returns them
            with keeping_fit_on_ctrl_c("resume", raising=False) as pressed:
                more = runner.draw(num_draws, progress_bar)
        except BaseException:
            runner.restore(before)
            raise
        if pressed.stopped and more["u"].shape[1] < num_draws:
            warn_stopped(more["u"].shape[1], num_draws)
        self.warmup_stats.update(self._runner.compile_stats())
        rec = {k: torch.cat([self._rec[k], more[k]], 1) for k in self._rec}
        return MCMCResult(self.target, self._runner, rec, self.warmup_stats)


def _refuse_resume_settings(settings: dict, chains: int) -> None:
    """Refuse keywords ``resume`` does not take (it raised Python's "unexpected keyword
    argument"): a new seed, chain count or sampler setting cannot apply to a run that goes on
    with its own chains, random stream, step size and metric."""
    import inspect

    from latentfit.mcmc.sampler import sample

    run = set(inspect.signature(sample).parameters) | {"seed", "random_state", "chains"}
    given = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    why = (
        f"resume continues this run's own {chains} chain(s) and random stream, with the step "
        "size and metric its warm-up adapted, so it takes no new seed, chains or sampler "
        "settings; for those, sample again (sample(...) or fit.sample_posterior(...): a new "
        "warm-up). "
        if set(settings) & run
        else ""
    )
    raise ParameterError(f"resume({given}): {why}resume takes num_draws, progress_bar and max_work")


def _dims(posterior: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Each parameter's dimension names, ArviZ's ``NAME_dim_I`` unless that is another
    parameter's name (then underscores are added until it is none): with ArviZ's own names,
    parameters ``mu`` (2,) and ``mu_dim_0`` (3,) clashed, ``mu_dim_0`` was dropped and its
    R-hat came back as the coordinate values."""
    taken = set(posterior) | {"chain", "draw"}
    dims = {}
    for name, value in posterior.items():
        names = []
        for i in range(value.ndim - 2):
            dim = f"{name}_dim_{i}"
            while dim in taken:
                dim = "_" + dim
            names.append(dim)
        dims[name] = names
    return dims
