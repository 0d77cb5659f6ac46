"""``latentfit fit dist DATA --family gamma [--column x]``: maximum likelihood with uncertainty."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import typer

from latentfit.cli.app import (
    MAX_CLI_DEPTH,
    check_device,
    cli_words,
    data_argument,
    data_source,
    dataset_option,
    delimiter_option,
    fail,
    finite_number,
    fit_app,
    header_option,
    load_data,
    max_work_option,
    seed_option,
    show_warnings,
    split_columns,
    work_limit,
)
from latentfit.cli.hmm_options import device_option
from latentfit.cli.output import csv_option, json_option


def _parse_fixed(items: list[str], fam) -> dict:
    """``--fixed total_count=10`` -> {"total_count": 10}, each name named once and one that
    ``fam`` can hold fixed (by the library's rule, :func:`latentfit.estimate.mle.why_not_fixed`,
    its message led by the item at fault)."""
    from latentfit.estimate.mle import why_not_fixed

    fixed, seen = {}, {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            fail(f"--fixed takes NAME=NUMBER (e.g. --fixed total_count=10), got {item!r}")
        try:
            number = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            fail(f"--fixed {item}: {value!r} is not a number; --fixed takes NAME=NUMBER")
        if name in seen:
            fail(f"--fixed {item} and --fixed {seen[name]} both set {name}; give it once")
        why = why_not_fixed(fam, name)
        if why is not None:
            fail(f"--fixed {item}: {why}")
        fixed[name], seen[name] = number, item
    return fixed


def _parse_init(items: list[str], fam) -> dict | None:
    """``--init scale=2 --init loc=0,1`` -> {"scale": 2.0, "loc": [0.0, 1.0]}: a starting value
    (a number, or numbers separated by commas for a vector parameter) for parameters of ``fam``,
    each named once; their shapes and ranges are checked by the fit, which names them."""
    init, seen = {}, {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            fail(
                f"--init takes NAME=NUMBER or NAME=NUMBER,NUMBER,... (e.g. --init scale=2), got {item!r}"
            )
        if name not in fam.params:
            fail(
                f"--init {item}: {fam.name} has no parameter {name!r}; it estimates {', '.join(fam.params)}"
            )
        if name in seen:
            fail(f"--init {item} and --init {seen[name]} both set {name}; give it once")
        try:
            numbers = [float(v) for v in value.split(",")]
        except ValueError:
            fail(f"--init {item}: {value!r} is not a number or a comma-separated list of numbers")
        if not all(math.isfinite(v) for v in numbers):
            fail(f"--init {item}: starting values must be finite numbers")
        init[name], seen[name] = (numbers[0] if len(numbers) == 1 else numbers), item
    return init or None


def _check_finite(fit, data: Path) -> None:
    """A non-finite estimate (e.g. a scale of inf from values near 1e300, whose squares
    overflow float64) is an error, not a result to print."""
    import torch

    from latentfit.errors import DataError

    bad = [k for k, v in fit.params.items() if not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(f"{k} = {fit.params[k].tolist()}" for k in bad)
        raise DataError(
            f"the {fit.family.name} fit of {data} overflowed: {shown} is not finite. The data "
            "are too large (or too spread) for float64 arithmetic; rescale them (e.g. divide "
            "by a power of ten) and fit again"
        )


#: The priors ``--prior`` takes: name -> (torch.distributions class, its numbers in order, how
#: many of them must be given; the others keep torch's defaults). Continuous families only: a
#: prior is a density over the parameter's values.
PRIORS = {
    "normal": ("Normal", ("loc", "scale"), 2),
    "lognormal": ("LogNormal", ("loc", "scale"), 2),
    "halfnormal": ("HalfNormal", ("scale",), 1),
    "cauchy": ("Cauchy", ("loc", "scale"), 2),
    "halfcauchy": ("HalfCauchy", ("scale",), 1),
    "laplace": ("Laplace", ("loc", "scale"), 2),
    "studentt": ("StudentT", ("df", "loc", "scale"), 1),
    "gumbel": ("Gumbel", ("loc", "scale"), 2),
    "gamma": ("Gamma", ("concentration", "rate"), 2),
    "inversegamma": ("InverseGamma", ("concentration", "rate"), 2),
    "exponential": ("Exponential", ("rate",), 1),
    "chi2": ("Chi2", ("df",), 1),
    "weibull": ("Weibull", ("scale", "concentration"), 2),
    "pareto": ("Pareto", ("scale", "alpha"), 2),
    "beta": ("Beta", ("concentration1", "concentration0"), 2),
    "uniform": ("Uniform", ("low", "high"), 2),
}
#: What a parameter without a ``--prior`` gets, as ``fit_map`` gives it (said in the help).
FLAT_PRIOR = (
    "a parameter without a --prior has a flat prior (a constant density over its values), as "
    "fit_map gives it; with few rows such a posterior may not integrate (a scale's can grow "
    "without bound), so give a prior to each parameter the data say little about"
)
_PRIOR_USAGE = (
    "--prior takes NAME=FAMILY:NUMBER,NUMBER or NAME=FAMILY(NUMBER,NUMBER) (e.g. --prior "
    "rate=gamma:2,0.5 or --prior loc=normal(0,10))"
)


#: A prior of :data:`PRIORS` for a parameter that takes every value in (low, high): one whose
#: support is that range, so that ``--sample`` suggests only priors ``--prior`` accepts.
_EXAMPLE_PRIORS = {
    (-math.inf, math.inf): "normal:0,10",
    (0.0, math.inf): "gamma:2,0.5",
    (0.0, 1.0): "beta:2,2",
}


def _prior_examples(fam) -> str:
    """``--prior NAME=FAMILY:ARGS`` for each scalar parameter of ``fam`` (a prior over its
    range: normal for a real one, gamma for a positive one, beta for a probability)."""
    from torch.distributions import constraints

    from latentfit.estimate.map import support_bounds

    said = []
    for name in fam.params:
        con = fam.constraints.get(name, constraints.real)
        example = None if con.event_dim else _EXAMPLE_PRIORS.get(support_bounds(con))
        if example is not None:
            said.append(f"--prior {name}={example}")
    return " ".join(said)


def _prior_family_list() -> str:
    return ", ".join(f"{k} ({','.join(v[1])})" for k, v in PRIORS.items())


def _prior_spec(spec: str, item: str) -> tuple[str, str]:
    """The family and its numbers of a ``--prior`` value's right-hand side: ``gamma:2,0.5``,
    or ``gamma(2,0.5)`` as Stan and PyMC write it (which read as a family named "gamma(2,0.5)"
    before, and was refused as unknown)."""
    family, colon, args = spec.partition(":")
    opened = family.find("(")
    if not colon and opened >= 0:
        if not family.rstrip().endswith(")"):
            fail(f"--prior {item}: a ( without its closing ); {_PRIOR_USAGE}")
        family, args = family[:opened], family.rstrip()[opened + 1 : -1]
    return family.strip().lower(), args


def _did_you_mean(family: str) -> str:
    """`` (did you mean gamma?)`` when ``family`` is a typing slip away from one of PRIORS."""
    import difflib

    close = difflib.get_close_matches(family, list(PRIORS), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _parse_prior(items: list[str], fam) -> tuple[dict, dict] | None:
    """``--prior rate=gamma:2,0.5`` (or ``rate=gamma(2,0.5)``) -> ({"rate": Gamma(2., 0.5)},
    {"rate": the item}).

    Every entry is checked before data are read: a family of :data:`PRIORS`, one prior per
    parameter of ``fam``, the family's numbers (how many, finite, inside their ranges) and a
    support that covers every value the parameter may take."""
    import torch
    import torch.distributions as D

    from latentfit.estimate.map import prior_support_problem
    from latentfit.estimate.mle import describe_support

    if not items:
        return None
    prior, given = {}, {}
    for item in items:
        name, sep, spec = item.partition("=")
        name = name.strip()
        family, args = _prior_spec(spec, item)
        if not sep or not name or not family:
            fail(f"{_PRIOR_USAGE}; got {item!r}")
        if name not in fam.params:
            fail(
                f"--prior {item}: {fam.name} has no parameter {name!r}; it estimates "
                f"{', '.join(fam.params)}"
            )
        if name in given:
            fail(f"--prior {item} and --prior {given[name]} both set the prior of {name}; give one")
        if family not in PRIORS:
            cls = getattr(D, next((n for n in dir(D) if n.lower() == family), ""), None)
            support = vars(cls).get("support") if isinstance(cls, type) else None
            discrete = getattr(support, "is_discrete", False) or getattr(
                cls, "has_enumerate_support", False
            )
            why = (
                f"{family} is a distribution over whole numbers, not a density over "
                f"{fam.name}'s {name}"
                if discrete
                else f"{family!r} is not a prior family latentfit takes{_did_you_mean(family)}"
            )
            fail(f"--prior {item}: {why}; --prior takes the families {_prior_family_list()}")
        cls_name, names, required = PRIORS[family]
        cls = getattr(D, cls_name)
        texts = [a.strip() for a in args.split(",")] if args.strip() else []
        count = f"{required}" if required == len(names) else f"{required} to {len(names)}"
        if not required <= len(texts) <= len(names):
            fail(
                f"--prior {item}: {family} takes {count} number(s), {', '.join(names)}; "
                f"got {len(texts)}"
            )
        values = []
        for arg, text in zip(names, texts, strict=False):
            try:
                v = float(text)
            except ValueError:
                fail(f"--prior {item}: {family}'s {arg} must be a number, got {text!r}")
            if not math.isfinite(v):
                fail(f"--prior {item}: {family}'s {arg} must be a finite number, got {text}")
            con = cls.arg_constraints.get(arg) if isinstance(cls.arg_constraints, dict) else None
            t = torch.tensor(v, dtype=torch.float64)
            if con is not None and not bool(con.check(t)):
                fail(f"--prior {item}: {family}'s {arg} takes {describe_support(con)}; got {text}")
            values.append(t)
        if family == "uniform" and not values[0] < values[1]:
            fail(
                f"--prior {item}: uniform's low must be below its high; got {texts[0]}, {texts[1]}"
            )
        dist = cls(*values, validate_args=False)
        # the support check of fit_map, said with the option's name
        problem = prior_support_problem(dist, fam.constraints.get(name), fam.name, name)
        if problem:
            fail(f"--prior {item}: {problem}")
        prior[name], given[name] = dist, item
    return prior, given


def _check_prior_start(fam, x, fixed: dict, prior: dict, given: dict) -> None:
    """Refuse a prior whose log-density is not finite at the starting values of the fit
    (computed from the data), naming its ``--prior``: numbers so extreme that float64
    arithmetic breaks (a scale of 1e-300, whose square is 0) would otherwise stop the fit with
    a message about the starting values."""
    import torch

    from latentfit.estimate.map import prior_in_dtype
    from latentfit.estimate.mle import prepare_fit
    from latentfit.estimate.parameters import ParameterLayout

    try:
        fam, fixed, x, _ = prepare_fit(fam, x, fixed, None, None, None, None)
        start = dict(fam.init(x, fixed)) if fam.init is not None else {}
    except (ValueError, ArithmeticError):  # the fit itself reports bad data
        return
    for name, dist in prior.items():
        if name not in start:
            continue
        value = torch.as_tensor(start[name], dtype=x.dtype)
        if not bool(torch.isfinite(value).all()):  # the data's fault: the fit says so
            return
        con = fam.constraints.get(name)
        if con is not None and ParameterLayout({name: value.shape}, {name: con}).on_boundary(
            {name: value}
        ):  # on the edge (constant data, a probability of 0): the MAP starts elsewhere
            continue  # (see fit_family)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lp = prior_in_dtype(dist, x.dtype).log_prob(value).sum()
        if not bool(torch.isfinite(lp)):
            fail(
                f"--prior {given[name]}: its log-density at the starting value {name} = "
                f"{value.flatten()[0].item():.6g} (computed from the data) is "
                f"{float(lp)}: its numbers are too extreme for float64 arithmetic (a scale "
                "this small squares to 0); widen the prior (a larger scale)"
            )


def _posterior(
    fit,
    sampler: str,
    chains: int,
    draws: int,
    warmup: int,
    seed: int,
    compile_: bool = False,
    target_accept: float = 0.8,
    max_depth: int = 10,
    max_work: float = 1e15,
    progress: bool = True,
    own_pace: bool | None = None,
):
    """The NUTS draws of the posterior and its table (a pandas frame) with the diagnostics
    (the options were checked by :func:`fit_dist` before the data were read); the sampler's
    progress bar on standard error with ``progress``."""
    res = fit.sample_posterior(
        num_chains=chains,
        num_warmup=warmup,
        num_draws=draws,
        generator=seed,
        progress_bar=progress,
        compile=True if compile_ else "replay",
        target_accept=target_accept,
        max_depth=max_depth,
        max_work=work_limit(max_work),
        pace="batch" if own_pace is False else "own",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = res.summary()
    text = cli_words(res.diagnostics())
    if res.num_draws < draws:  # Ctrl-C ended the draws (latentfit._interrupt)
        from latentfit._interrupt import stopped_by

        text += (
            f"\nstopped by {stopped_by()} after {res.num_draws} of {draws} draws per chain: the "
            "table is of those"
        )
    return table, text


def _check_sampling(
    fam, x, fixed, init, chains, draws, warmup, target_accept, max_depth, max_work
) -> None:
    """Refuse a --sample nuts run too large for memory or --max-work as the sampler would,
    before the MAP fit (the data that do not fit are the fit's to report)."""
    from latentfit.estimate.map import _start_shapes
    from latentfit.estimate.mle import prepare_fit
    from latentfit.mcmc.sampler import check_sample_fit

    try:
        fam, fixed, x, init = prepare_fit(fam, x, fixed, init, None, None, None)
        shapes = _start_shapes(fam, x, fixed, init)
    except (ValueError, ArithmeticError):  # the fit itself reports bad data
        return
    try:
        check_sample_fit(
            fam,
            x,
            shapes,
            num_chains=chains,
            num_warmup=warmup,
            num_draws=draws,
            max_work=work_limit(max_work),
            target_accept=target_accept,
            max_depth=max_depth,
        )
    except ValueError as err:
        fail(cli_words(str(err)))


def _flat(fit, prior: dict) -> list[str]:
    """The fitted parameters of ``fit`` without a ``--prior``: their prior is flat."""
    return [p for p in fit.params if p not in prior]


def _posterior_text(fit, prior, table, diagnostics, chains, draws, warmup, seed) -> str:
    head = (
        f"NUTS posterior: {fit.family.name}, {chains} chains x {draws} draws "
        f"(warm-up {warmup}), seed {seed}"
    )
    flat = _flat(fit, prior)
    if flat:
        head += f"\nflat prior (no --prior) on {', '.join(flat)}"
    return f"{head}\n{table.to_string()}\n{diagnostics}"


def _rows(fit, level: float) -> list[dict]:
    """One row per reported coordinate: its estimate, standard error and Wald interval."""
    est, se, ci = fit.estimates, fit.std_errors(), fit.conf_int(level)
    return [
        {
            "parameter": name,
            "estimate": float(est[i]),
            "std_error": float(se[i]),
            "ci_lower": float(ci[i, 0]),
            "ci_upper": float(ci[i, 1]),
        }
        for i, name in enumerate(fit.param_names)
    ]


@fit_app.command("dist")
def fit_dist(
    data: Path | None = data_argument(),
    dataset: str | None = dataset_option(),
    delimiter: str = delimiter_option(),
    header: bool | None = header_option(),
    family: str = typer.Option(
        ..., "--family", "-f", help="gamma, normal, poisson, beta, weibull, mvn, dirichlet, ..."
    ),
    column: list[str] = typer.Option(
        [], "--column", "-c", help="Column(s) to fit (repeat for vector families); default all."
    ),
    fixed: list[str] = typer.Option(
        [], "--fixed", help="A known parameter, NAME=NUMBER (e.g. total_count=10); repeatable."
    ),
    init: list[str] = typer.Option(
        [],
        "--init",
        help="A starting value, NAME=NUMBER (NAME=N1,N2,... for a vector); repeatable. "
        "Default: method-of-moments values from the data.",
    ),
    max_iter: int = typer.Option(500, "--max-iter", min=1, help="Most optimiser iterations."),
    cov: str = typer.Option("observed", "--cov", help="observed, expected or sandwich."),
    level: float = typer.Option(
        0.95, "--level", help="Confidence level of the Wald intervals.", callback=finite_number
    ),
    prior: list[str] = typer.Option(
        [],
        "--prior",
        help="A prior NAME=DIST:ARGS (e.g. rate=gamma:2,0.5, or rate=gamma(2,0.5)); repeatable: MAP fit. A parameter "
        "without one has a flat prior (a constant density over its values).",
    ),
    sample: str = typer.Option(
        None,
        "--sample",
        help="'nuts': sample the posterior (needs a --prior; parameters without one have a "
        "flat prior, as fit_map(...).sample_posterior() gives them) and print its table.",
    ),
    chains: int | None = typer.Option(
        None, "--chains", help="Chains for --sample (batched).  [default: 4]", show_default=False
    ),
    draws: int | None = typer.Option(
        None, "--draws", help="Draws per chain for --sample.  [default: 1000]", show_default=False
    ),
    warmup: int | None = typer.Option(
        None,
        "--warmup",
        help="Warm-up iterations for --sample.  [default: 1000]",
        show_default=False,
    ),
    target_accept: float | None = typer.Option(
        None,
        "--target-accept",
        help="Acceptance rate the warm-up tunes the step size to, in (0, 1); raise it "
        "(e.g. 0.95) when transitions diverge.  [default: 0.8]",
        show_default=False,
        callback=finite_number,
    ),
    max_depth: int | None = typer.Option(
        None,
        "--max-depth",
        help=f"Deepest NUTS tree (2^depth - 1 leapfrog steps), 1 to {MAX_CLI_DEPTH}; raise it "
        "when transitions hit it.  [default: 10]",
        show_default=False,
    ),
    max_work: float | None = max_work_option(
        "the warm-up and draws of --sample (counted at their least)", default=None
    ),
    seed: int = seed_option("Seed of the sampler."),
    compile_: bool = typer.Option(
        False,
        "--compile/--no-compile",
        help="Run the sampler's leapfrog step and tree bookkeeping compiled: faster steps. "
        "The first time a model is seen they compile in a background process (15-25 s) while "
        "the chains sample; later runs load them from disk in milliseconds. Without it the "
        "steps are traced once and replayed (no compiler).",
    ),
    own_pace: bool | None = typer.Option(
        None,
        "--own-pace/--batch-pace",
        help="Each chain at its own pace inside the batch (the default on the CPU: a compiled "
        "kernel builds the trees), or every chain's transition in step with the others' "
        "(--batch-pace: each runs until its longest trajectory ends; 1.4-3.7x slower on the "
        "CPU).",
        show_default=False,
    ),
    quiet: bool = typer.Option(False, "--quiet/--no-quiet", help="No progress bar (--sample)."),
    device: str = device_option(),
    as_json: bool = json_option(),
    as_csv: bool = csv_option(),
):
    """Fit a distribution by maximum likelihood (or MAP, or sample its posterior); print a table.

    The table gives every parameter's estimate, standard error and Wald confidence interval
    (with --prior and --sample: the posterior's summary)."""
    from latentfit.cli.output import check_format
    from latentfit.estimate import fit_map, fit_mle, get_family
    from latentfit.estimate.result import COV_TYPES

    check_format(as_json, as_csv)
    check_device(device)
    try:
        fam = get_family(family)
    except ValueError as err:
        fail(str(err))
    # every option is checked before the data are read
    if not 0 < level < 1:
        fail(f"--level must lie strictly between 0 and 1, got {level}")
    given = _parse_fixed(fixed, fam)
    start = _parse_init(init, fam)
    both = sorted(set(start or {}) & set(given))
    if both:
        fail(f"--init and --fixed both name {', '.join(both)}: a fixed parameter is not fitted")
    parsed = _parse_prior(prior, fam)
    priors, prior_items = parsed if parsed is not None else (None, {})
    if cov not in COV_TYPES:
        fail(f"--cov must be one of {', '.join(COV_TYPES)}; got {cov!r}")
    if priors is not None and cov != "observed":
        fail(
            f"--cov {cov}: a --prior (MAP) fit reports the Laplace approximation, the inverse "
            "Hessian of the log-posterior; --cov applies to fits without --prior"
        )
    if sample is not None:
        chains = 4 if chains is None else chains
        draws = 1000 if draws is None else draws
        warmup = 1000 if warmup is None else warmup
        if sample != "nuts":
            fail(f"--sample takes 'nuts' (the sampler), got {sample!r}")
        # as fit_map(...).sample_posterior(): a parameter without a --prior has a flat one
        if priors is None:
            examples = _prior_examples(fam)
            fail(
                "--sample needs a prior: add --prior NAME=DIST:ARGS for at least one of "
                f"{', '.join(fam.params)}{f' (e.g. {examples})' if examples else ''}; {FLAT_PRIOR}"
            )
        if as_csv:  # its rows are the MAP table's: the posterior would be drawn and dropped
            fail(
                "--csv writes the MAP estimates' rows, not the posterior of --sample nuts; "
                "use --json for both, or the text table"
            )
        if chains < 1 or draws < 1 or warmup < 0:
            fail(
                "--chains and --draws must be at least 1 and --warmup >= 0; got "
                f"--chains {chains}, --draws {draws}, --warmup {warmup}"
            )
        target_accept = 0.8 if target_accept is None else target_accept
        max_depth = 10 if max_depth is None else max_depth
        max_work = 1e15 if max_work is None else max_work
        if not 0 < target_accept < 1:
            fail(
                f"--target-accept must lie strictly between 0 and 1, got {target_accept}; "
                "0.8 is the default, 0.95 or 0.99 for a posterior whose transitions diverge"
            )
        if not 1 <= max_depth <= MAX_CLI_DEPTH:
            fail(
                f"--max-depth must be 1 to {MAX_CLI_DEPTH}, got {max_depth}: a tree of depth d "
                "takes up to 2^d - 1 leapfrog steps a transition (10 is the default)"
            )
    else:
        # the sampler's options alone would be read and ignored: the user meant to sample
        named = [
            f"--{n}"
            for n, v in (
                ("chains", chains),
                ("draws", draws),
                ("warmup", warmup),
                ("target-accept", target_accept),
                ("max-depth", max_depth),
                ("max-work", max_work),
            )
            if v is not None
        ]
        if compile_:
            named.append("--compile")
        if own_pace is not None:
            named.append("--own-pace" if own_pace else "--batch-pace")
        if named:
            verb = "sets" if len(named) == 1 else "set"
            fail(f"{', '.join(named)} {verb} the sampler of --sample nuts; add --sample nuts")
    name = data_source(data, dataset)
    x = load_data(
        data,
        split_columns(list(column), "--column"),
        dataset=dataset,
        delimiter=delimiter,
        header=header,
    )
    if fam.event_dim == 0 and x.shape[1] > 1:
        fail(f"{fam.name} fits one column, but {name} has {x.shape[1]}; choose one with --column")
    if priors is not None:
        _check_prior_start(fam, x, given, priors, prior_items)
    if sample is not None:  # the sampler's memory and --max-work, before the MAP fit's work
        _check_sampling(
            fam, x, given, start, chains, draws, warmup, target_accept, max_depth, max_work
        )
    failed = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what latentfit warns about a fit, or its level
        for notice in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", notice)  # the libraries' to their developers
        try:
            if priors is None:
                fit = fit_mle(
                    fam, x, fixed=given, init=start, cov_type=cov, max_iter=max_iter, device=device
                )
            else:
                fit = fit_map(
                    fam, x, priors, fixed=given, init=start, max_iter=max_iter, device=device
                )
            _check_finite(fit, name)
            table = fit.summary(level=level)
            rows = _rows(fit, level)
            posterior = None
            if sample is not None:
                posterior = _posterior(
                    fit,
                    sample,
                    chains,
                    draws,
                    warmup,
                    seed,
                    compile_,
                    target_accept,
                    max_depth,
                    max_work,
                    progress=not quiet,
                    own_pace=own_pace,
                )
                text = _posterior_text(fit, priors, *posterior, chains, draws, warmup, seed)
                table += "\n\n" + text
        except ValueError as err:
            failed = cli_words(str(err), name)
    if failed is not None:  # what the fit warned first often says why
        show_warnings(caught)
        fail(failed)
    if as_json:
        from latentfit.cli.output import print_json

        print_json(
            {
                "family": fam.name,
                "method": fit.method,
                "n_obs": fit.n_obs,
                "n_params": fit.n_params,
                "log_likelihood": fit.log_likelihood,
                "log_prior": fit.log_prior,
                "aic": fit.aic,
                "bic": fit.bic,
                "converged": bool(fit.converged),
                "n_iter": fit.n_iter,
                "solver": fit.solver,
                "cov_type": fit.cov_type,
                "level": level,
                "fixed": given,
                "parameters": rows,
                "posterior": None
                if posterior is None
                else {
                    "sampler": sample,
                    "chains": chains,
                    "draws": draws,
                    "warmup": warmup,
                    "seed": seed,
                    "flat_prior": _flat(fit, priors),
                    "summary": posterior[0].to_dict(orient="index"),
                    "diagnostics": posterior[1],
                },
            }
        )
    elif as_csv:
        from latentfit.cli.output import print_csv

        print_csv(rows)
    else:
        typer.echo(table)
    show_warnings(caught)  # each once: the table and the rows both compute the intervals
