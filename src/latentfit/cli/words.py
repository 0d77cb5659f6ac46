"""Library messages in the command line's words: the data argument ``X`` is the DATA file,
``n_components`` the command's ``-k``, and every library setting (``reg_covar``,
``covariance_type='diag'``, ...) the option of the running command that sets it.

Errors pass through :func:`cli_words`, warnings through :func:`warning_words` (the command
being run is click's current context), a VAE's rows through :func:`split_words`. Only these
phrases are changed, so that a Python expression in a hint (``X > 0.5``) is left as it is.
"""

from __future__ import annotations

from pathlib import Path

#: The deepest NUTS tree ``--max-depth`` takes: 2^20 leapfrog steps a transition (the
#: library's ``MAX_NUM_STEPS``), past which a run would not end in any useful time
MAX_CLI_DEPTH = 20


def data_name(data: Path | str | None, dataset: str | None = None) -> str:
    """DATA or ``--dataset`` as a message names it: the file as given, or the bundled set."""
    return str(data) if data is not None else f"the {dataset} data set"


#: A model's message about its data argument ``X`` in the command line's words (see
#: :func:`cli_words`); ``{data}`` is the DATA file. The value of ``X[i, j] = v`` is said first.
_DATA_WORDS = (
    (
        r"Expected n_samples >= n_components but got n_components = (\d+), n_samples = (\d+)",
        r"{data} has \2 rows, fewer than n_components=\1",
    ),
    (  # the estimators' X[i, j]; fit_mle's and fit_map's data[i, j] (fit dist)
        r"\b(?:X|data)\[(\d+), (\d+)\] = ([-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|inf|nan))",
        r"the value \3 at row \1, column \2 of {data}",
    ),
    (r"\b(?:X|data)\[(\d+), (\d+)\]", r"row \1, column \2 of {data}"),
    # a trainer's parts of the data (train(model, X_train, X_val)): the split of DATA
    (r"\bof X_train\b(?![\[.(])", r"of the training rows of {data}"),
    (r"\bof X_val\b(?![\[.(])", r"of the validation rows of {data}"),
    (r"\b(of|in|but|from|needs|reads|[Rr]escale) X\b(?![\[.(_])", r"\1 {data}"),
    (r"(?<![\w.])X(?= (?:has|holds|contains|must|is|cannot) |\s\(\d)", r"{data}"),
    (r"\bn_features\s?=\s?(\d+)", r"the \1 column(s) of {data}"),
    (r"\(rows of ([^)]*)\), got n_samples=(\d+)", r"(rows of \1), got \2"),
    # fit_mle's and fit_map's rows of one column (fit dist): data[i] is the file's row i
    (r"\bdata\[(\d+)\] = ([-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|inf|nan))", r"\2 (row \1 of {data})"),
    (r"\bdata\[(\d+)\]", r"row \1 of {data}"),
    (r"\bevery row of data\b", r"every row of {data}"),
    # fit_mle's multivariate normal on the columns of data (fit dist --family mvn)
    (r"\b(column \d+|the columns|covariance) of data\b", r"\1 of {data}"),
    (r"(?<![\w.])data(?= has \d+ row)", r"{data}"),
)
#: The same for ``n_components``, where the command's option ``-k`` set it (after the above).
_COMPONENT_WORDS = (
    (r"\bn_components\s?=\s?(\d+)", r"{k} \1"),
    (r"\bn_components\b", r"{k}"),
)
#: The same for the number of draws (``check_sample_count``'s words), where the command's
#: option (``-n``) set it.
_COUNT_WORDS = (
    (r"\b(?:n_samples|n)=([\d,]+) draws\b", r"{count} \1 draws"),
    (r"\ba smaller (?:n_samples|n)\b", r"a smaller {count}"),
    (r"\bn_samples <= ([\d,]+)", r"{count} <= \1"),
)
#: Advice that names what only Python can do, in the command line's words: scikit-learn's
#: scaler is the data standardised, and a wider dtype is no option of any command (the EM
#: commands compute in float64 already; flows, diffusion and VAEs in float32 throughout).
_PYTHON_ADVICE = (
    (r" \(e\.g\. StandardScaler\)", " (e.g. standardising each column)"),
    (r", float64(?=, or )", ""),  # "scaling the data, float64, or removing ..."
    # "fewer components, scaling the data, or dtype='float64'." -> "..., or scaling the data."
    (r", ([^,]+), or (?:use )?(?:dtype=)?'?float64'?(?=[.;)]|$)", r", or \1"),
    # the data readers speak both ways: the option, then the keyword argument
    (r" \(\w+=\S* in Python\)", ""),  # "--columns (columns= in Python)"
    (r"(--[\w-]+) \(\w+=\w*\)", r"\1"),  # "--no-header (header=False)"
    (r"\((--[\w-]+), \w+=\)", r"(\1)"),  # "(--delimiter, delimiter=)"
    (r"\b\w+=True \((--[\w-]+) on the command line\)", r"\1"),
    (r"\b\w+=('[^']*'|\S+) \((--[\w-]+) on the command line\)", r"\2 \1"),
    (r"\btorch\.(b?float\d+)\b", r"\1"),
    (r"^device=('[^']*')", r"\1"),  # the refusal of the value --device gave
    # the HMMs' start from means set by hand, which only Python can set
    (
        r", (a smaller \S+), or set \w+ by hand and leave '\w+' out of init_params",
        r" or \1",
    ),  # a dtype by the name the remedies use
    # an interval's level asked for as statsmodels' alpha: the command line takes the level
    (r"\bpass alpha=\S+ \(or (level=[^\s)]+)\)", r"pass \1"),
    # a Gaussian decoder's variance floor and its fixed variance are set in Python only
    (r" \(min_logvar=\S+\)", ""),
    (r", or fix the variance \(variance='fixed'\)", ""),
)
#: The command that fits each of the library's models that a message may recommend.
_MODEL_COMMANDS = {
    "GaussianMixture": "fit gmm",
    "GaussianHMM": "fit hmm",
    "GaussianHSMM": "fit hsmm",
    "FactorAnalysis": "fit fa",
    "PPCA": "fit ppca",
}
#: The loader's advice for a NaN: a model that takes ``missing='marginalize'``, named by class.
MISSING_ADVICE = r"use a model with a missing= argument \(([^)]*)\) and pass missing='marginalize'"


def _model_words(text: str) -> str:
    """A model recommended by its class (``use FactorAnalysis``, ``(PPCA, FactorAnalysis)``)
    or the library's function ``select_model`` as the command that fits it."""
    import re

    classes = "|".join(_MODEL_COMMANDS)
    text = re.sub(rf"\buse ({classes})\b", lambda m: f"use latentfit {_MODEL_COMMANDS[m[1]]}", text)
    text = re.sub(
        rf"\(((?:{classes})(?:, (?:{classes}))+)\)",
        lambda m: "(latentfit " + ", ".join(_MODEL_COMMANDS[c] for c in m[1].split(", ")) + ")",
        text,
    )
    return re.sub(r"\bselect_model\b(?!\()", "latentfit select", text)


def _missing_words(text: str, params: dict | None) -> str:
    """The loader's advice for a NaN in the words of the command whose parameters are
    ``params``: its ``--missing marginalize`` where it has the option, else the commands that
    have it (nothing changed outside a command)."""
    import re

    match = re.search(MISSING_ADVICE, text)
    if match is None or params is None:
        return text
    if "missing" in params:
        said = f"pass {params['missing'].opts[0]} marginalize"
    else:
        names = [_MODEL_COMMANDS.get(name, name) for name in match.group(1).split(", ")]
        *rest, last = names
        said = (
            f"fit them with --missing marginalize, which latentfit {', '.join(rest)} and "
            f"{last} take"
        )
    return text[: match.start()] + said + text[match.end() :]


def _file_columns(text: str, data: str) -> str:
    """``column j of DATA``, and a bare ``column j`` or ``columns j, l`` (a fit's words for the
    columns of the array it was given), where j counts among the columns the command's
    ``--column`` or ``--columns`` picked, as the file's column: its position there, and its
    name where the file has a header (nothing changed when no columns were picked). A column
    ``of`` something else (``column 2 of emissionprob_``), or already named, is left as it is."""
    import re

    ctx = _current_context()
    picked = None if ctx is None else ctx.params.get("columns") or ctx.params.get("column")
    if not picked:
        return text
    picked = picked.split(",") if isinstance(picked, str) else list(picked)
    picked = [str(c).strip() for c in picked]
    header = None
    if ctx.params.get("data") is not None:
        from latentfit.datasets import column_names

        header = column_names(
            ctx.params["data"], ctx.params.get("delimiter"), ctx.params.get("header")
        )

    def file_column(j: str) -> str:
        if int(j) >= len(picked):
            return j
        c = picked[int(j)]
        if header is not None and c in header:
            return f"{header.index(c)} ({c!r})"
        if c.isdigit() and header is not None and int(c) < len(header):
            return f"{c} ({header[int(c)]!r})"
        return c if c.isdigit() else repr(c)

    def file_columns(match) -> str:
        numbers = ", ".join(file_column(j) for j in match[2].split(", "))
        return f"{match[1]} {numbers}{match[3] or ''}"

    of_data = rf" of {re.escape(data)}(?!\w)"
    return re.sub(
        rf"\b(columns?) (\d+(?:, \d+)*)(?![\d.]|, \d| \(')({of_data})?(?! of )",
        file_columns,
        text,
    )


#: The library's way past its work cap (``max_work=None``) in the command line's words.
MAX_WORK_WORDS = ", or pass max_work=None to run it anyway"
RAISE_MAX_WORK = ", or raise the limit with --max-work (such as --max-work 1e16; inf: none)"


def cli_words(
    text: str, data: str | None = None, k: str | None = None, count: str | None = None
) -> str:
    """A library message in the command line's words: the estimator's argument ``X`` is the
    DATA file ``data`` (see :func:`data_name`), and where the command set ``n_components`` by
    an option ``k`` (``-k``), that option; where it set the number of draws (``n_samples``,
    ``n``) by an option ``count`` (``-n``), that option; ``init=`` is ``--init``,
    ``max_iter`` is ``--max-iter``, ``max_work`` is ``--max-work``, ``fit_map`` is
    ``--prior``, the sampler's
    ``target_accept`` and ``max_depth`` are ``--target-accept`` and ``--max-depth``, a
    training checkpoint's ``checkpoint_dir`` is ``--checkpoint-dir``, and
    advice only Python can follow (``divergences()``, ``SamplerConfig``) is left out; the
    other settings are the options of the command being run (``reg_covar`` is
    ``--reg-covar``, see :func:`setting_words`). Only these phrases are changed, so that a
    Python expression in a hint (``X > 0.5``, ``X.reshape(-1, 1)``) is left as it is."""
    import re

    words = (
        (_DATA_WORDS if data is not None else ())
        + (_COMPONENT_WORDS if k else ())
        + (_COUNT_WORDS if count else ())
    )
    names = {"{data}": data or "", "{k}": k or "", "{count}": count or ""}
    for pattern, replacement in words:
        for field, name in names.items():  # a backslash in a file name is no group reference
            replacement = replacement.replace(field, name.replace("\\", "\\\\"))
        text = re.sub(pattern, replacement, text)
    params = _command_params()
    if data is not None:
        text = _file_columns(text, data)
    text = _model_words(_missing_words(text, params))
    if params is not None and "fixed" in params:  # fit_mle's fixed={'total_count': ...}
        option = params["fixed"].opts[0]
        text = re.sub(
            r"\bfixed=\{([^}]*)\}",
            lambda m: " ".join(  # a value "..." is a number to choose, K a count
                f"{option} {name}={'NUMBER' if value == '...' else value}"
                for name, value in re.findall(r"'(\w+)': ([^,}]+)", m[1])
            ),
            text,
        )
    for pattern, replacement in _PYTHON_ADVICE:
        text = re.sub(pattern, replacement, text)
    text = re.sub(r"max_depth=(\d+)", r"--max-depth \1", text)
    # the 8-bit switches of fit flow / diffusion, which the library names both ways
    text = re.sub(r"\b(dequantize|discrete)=True(?: \(--\1\))?", r"--\1", text)
    text = re.sub(r"\(with n_levels above ", "(with --levels above ", text)
    text = text.replace(MAX_WORK_WORDS, RAISE_MAX_WORK)
    text = re.sub(
        r"pass max_work >= (\d+) \(or None: no limit\)",
        r"raise --max-work to \1 or more (inf: none)",
        text,
    )
    # a file's sparse category codes are recoded in the file; only fit dist takes their count
    # (its fixed={...} is --fixed, above), the mixtures and sequence models none
    recode = " (each category as its index among the column's distinct values)"
    text = re.sub(
        r" \(numpy\.unique\((?:column|data|X), return_inverse=True\)\)(?: or pass \w+=\w+)?",
        recode,
        text,
    )
    text = text.replace(
        "pass n_features = the number of distinct symbols, after recoding them as "
        "0..n_features-1" + recode,
        "recode the symbols as 0..K-1" + recode,
    )
    # an HMM's variance at its floor: the floor is set in Python only, named by what it is;
    # the fitted attribute that lists the states is Python's too
    text = re.sub(
        r"at the (?:covars_prior/min_covar|min_covar|covars_prior) floor",
        "at the variance floor",
        text,
    )
    text = text.replace(" The fitted model lists them in degenerate_components_.", "")
    # an autoregressive state's noise at that floor: the remedy a command has is the data
    text = text.replace("on the scale of min_covar", "on the scale of the variance floor")
    text = text.replace("as min_covar shrinks", "as the floor shrinks")
    text = re.sub(
        r"smaller than min_covar=\S+ \(then pass a smaller min_covar, or rescale (.*?)\)\. Try",
        r"smaller than the floor (then rescale \1, e.g. standardise its columns). Try",
        text,
    )
    # GMMHMM's spherical prior when the columns are fewer than --n-mix: the prior is set in
    # Python only; the command's remedy is the covariance type, whose diag prior is flat
    text = re.sub(r"the default covars_prior \(hmmlearn's, \S+ here\)", "the default "
                  "prior on the variances (hmmlearn's)", text)  # fmt: skip
    text = re.sub(
        r" Pass covars_prior=\S+ \(no prior: the likelihood's own update\), or use "
        r"covariance_type='diag'\.",
        " Use --covariance diag, whose default prior is flat (for one column it is the same "
        "model).",
        text,
    )
    # select's too-small data: the floor is a fixed setting there, named by what it does
    text = re.sub(
        r"likelihood is (?:reg_covar|min_covar)'s", "likelihood is the variance floor's", text
    )
    # select's held-out folds: the criterion is an option; the models' priors are not
    text = text.replace("(criterion='bic', 'aic' or 'icl')", "(--criterion bic, aic or icl)")
    text = re.sub(
        r", or give the models a prior that keeps every outcome possible \(.*\)$", "", text
    )
    return setting_words(
        text.replace("pass init= with values", "pass --init NAME=NUMBER with values")
        .replace("pass init= near", "pass --init NAME=NUMBER near")
        .replace("try other init= values", "try other --init values")
        .replace("a larger max_iter", "a larger --max-iter")
        .replace("add a prior (fit_map)", "add a --prior")
        # fit bgmm's default prior covariance: the command takes neither weights nor a prior
        # covariance, so its remedies are the covariance type and the columns
        .replace(" (with positive sample_weight) ", " ")
        .replace(
            "the default covariance_prior (the covariance", "the prior's covariance (the covariance"
        )
        .replace("; pass covariance_prior, use ", "; use ")
        .replace(" or pass covariance_prior", "")
        .replace("add a prior on it (fit_map; --prior on the command line)", "add a --prior on it")
        .replace("run num_chains >= 2", "run --chains 2 or more")
        .replace("fewer warm-up iterations (num_warmup) or chains", "a smaller --warmup")
        .replace("use num_warmup + num_draws <=", "use --warmup + --draws <=")
        .replace(
            "raise target_accept or reparametrise (see divergences())",
            "raise --target-accept (e.g. 0.95; the default is 0.8), which takes smaller steps",
        )
        .replace("raise max_depth", f"raise --max-depth (at most {MAX_CLI_DEPTH})")
        .replace("a smaller max_depth", "a smaller --max-depth")
        .replace(
            "with latentfit.fit_mle or a GaussianMixture",
            "with 'latentfit fit dist' or 'latentfit fit gmm'",
        )
        .replace("2^(max_depth - 1)", "2^(depth - 1)")
        .replace("another checkpoint_dir", "another --checkpoint-dir")
        .replace("draw more", "draw more (a larger --draws)")
        .replace("run longer", "run longer (larger --draws and --warmup)")
        .replace(
            "; pass SamplerConfig(relocate_stranded=False) to keep them where they are "
            "(R-hat then reports them)",
            "",
        ),
        _command_params(),
    )


#: The library's settings (keyword arguments) that a command may set by an option, each with
#: the names of the command parameters that set it (the first the command has is used; none:
#: no command sets it). :func:`setting_words` puts a command's option in their place.
_SETTING_PARAMS = {
    "reg_covar": ("reg_covar",),
    "max_iter": ("max_iter", "n_iter"),
    "n_iter": ("n_iter", "max_iter"),
    "tol": ("tol",),
    "n_init": ("n_init",),
    "random_state": ("seed",),
    "covariance_type": ("covariance",),
    "cov_type": ("cov",),
    "lengths": ("lengths",),
    "n_mix": ("n_mix",),
    "max_duration": ("max_duration",),
    "right_censoring": ("right_censoring",),
    "chunk_rows": ("chunk_rows",),
    "burn_in": ("burn_in",),
    "mstep_every": ("mstep_every",),
    "learning_decay": ("learning_decay",),
    "n_levels": ("levels",),
    "batch_size": ("batch_size",),
    "warmup_epochs": ("warmup_epochs",),
    "free_bits": ("free_bits",),
    "kl_schedule": ("kl_schedule",),
    "n_hidden": ("n_hidden",),
    "vlb_weight": ("vlb_weight",),
    "min_covar": (),
    "covars_prior": (),
    "scale_prior": (),
    "covariance_prior": (),
    "init_params": ("init",),
    "sample_weight": (),
    "validation_fraction": (),
    "warm_start": (),
    "noise_variance_init": (),
    "weight_concentration_prior_type": ("prior",),
    "weight_concentration_prior": ("concentration",),
}
#: Settings whose names are also words of a sentence ("in order", "over 5 epochs"): only
#: ``name=value``, and ``lower name`` and the like, are the setting.
_WORD_SETTING_PARAMS = {
    "order": ("order",),
    "ridge": ("ridge",),
    "epochs": ("epochs",),
    "patience": ("patience",),
    "beta": ("beta",),
    "duration": ("duration",),
    "rotation": ("rotation",),
    "algorithm": ("algorithm",),
    "schedule": ("schedule",),
    "n_steps": ("steps",),
    "lr": ("lr",),
    "level": ("level",),
    "init": ("init",),
    "criterion": ("criterion",),
    "missing": ("missing",),
    "flow": ("flow",),
}
#: What comes before a setting's name: not part of a longer name (``kl_schedule``,
#: ``model.n_iter``, ``--n-iter``), nor a quoted name (a file's field ``'reg_covar'``).
_BEFORE = r"(?<![\w.\-'])"
#: The words before which such a word is the setting ("lower order", "well below epochs").
_AS_SETTING = "lower|raise|below|above"
#: A value as a message writes it after ``name=``: a number or word, or quoted names
#: (``'diag' or 'spherical'``).
_VALUE = r"('[^']*'(?:(?:,| or) '[^']*')*|[^\s,;:)]+)"


def _command_params() -> dict | None:
    """The parameters of the command being run, by name (None outside a command)."""
    ctx = _current_context()
    return None if ctx is None else {p.name: p for p in ctx.command.params}


def setting_words(text: str, params: dict | None) -> str:
    """``text`` with the library's settings (:data:`_SETTING_PARAMS`) in the words of the
    command whose parameters are ``params``: ``reg_covar=1e-3`` is ``--reg-covar 1e-3``,
    ``covariance_type='diag' or 'spherical'`` is ``--covariance diag or spherical``,
    ``right_censoring=True`` is ``--right-censoring``, ``DDPM(n_steps=2, schedule='linear')``
    is ``--steps 2 --schedule linear``; a setting the command has no option for is left as it
    is, and a note says that it is set in Python only. Nothing is changed outside a command
    (``params`` None)."""
    import re

    if params is None:
        return text
    settings = _SETTING_PARAMS | _WORD_SETTING_PARAMS

    def param(name: str):
        return next((params[c] for c in settings.get(name, ()) if c in params), None)

    def options(match: re.Match) -> str:  # Model(a=1, b='x') -> --a 1 --b x, where it can
        said = [re.fullmatch(rf"(\w+)={_VALUE}", arg) for arg in match.group(1).split(", ")]
        if not all(m and param(m.group(1)) for m in said):
            return match.group(0)
        return " ".join(_option_value(param(m.group(1)), m.group(2)) for m in said)

    text = re.sub(r"(?<![\w.])[A-Z]\w*\(((?:\w+=[^,()]+)(?:, \w+=[^,()]+)*)\)", options, text)
    # "init must be 'pca' or 'random'", "ridge must be a finite number": the subject of the
    # refusal, a setting the command sets by an option
    subject = re.match(r"(\w+) must\b", text)
    if subject is not None:
        name = subject.group(1)
        option = param(name) if name in settings else params.get("init") if name == "init" else None
        if option is not None:
            text = option.opts[0] + text[subject.end(1) :]
    python_only = []
    for name in settings:
        said = (
            rf"{_BEFORE}{name}\b"
            if name in _SETTING_PARAMS
            else rf"{_BEFORE}{name}(?==)|\b(?:{_AS_SETTING}) {name}\b"
        )
        if not re.search(said, text):
            continue
        if param(name) is None:
            python_only.append(name)
        else:
            text = _put_option(text, name, param(name), bare=name in _SETTING_PARAMS)
    if python_only:
        *rest, last = python_only
        names = f"{', '.join(rest)} and {last}" if rest else last
        one = not rest
        text += (
            f" ({names} {'is a setting' if one else 'are settings'} of the Python API: this "
            f"command has no option for {'it' if one else 'them'})"
        )
    return text


def _option_value(param, value: str) -> str:
    """``--option value`` for the setting ``name=value`` set by the parameter ``param``: the
    switch for True and False, names unquoted."""
    if value == "True":
        return param.opts[0]
    if value == "False":
        return param.secondary_opts[0] if param.secondary_opts else f"without {param.opts[0]}"
    return f"{param.opts[0]} {value.replace(chr(39), '')}"


def _put_option(text: str, name: str, param, bare: bool) -> str:
    """``text`` with the setting ``name`` in the words of the command's parameter ``param``:
    ``name=value`` the option and the value (:func:`_option_value`), and the name alone the
    option where ``bare`` (else only after lower, raise, below or above)."""
    import re

    option = param.opts[0]
    said = rf"{_BEFORE}{name}={_VALUE}"
    for match in reversed(list(re.finditer(said, text))):
        shown = _option_value(param, match.group(1))
        text = text[: match.start()] + shown + text[match.end() :]
    if bare:
        return re.sub(rf"{_BEFORE}(?<!sequence ){name}\b", option, text)
    # "lower order", "well below epochs": the setting, not the word
    return re.sub(rf"\b({_AS_SETTING}) {name}\b", rf"\1 {option}", text)


def split_words(text: str, split, part: str, data: str) -> str:
    """A library message about the rows of one part (``part``: ``"train"``, ``"val"`` or
    ``"test"``) of a training/validation/test ``split`` (a :class:`latentfit.vae.data.DataSplit`)
    in the command line's words (:func:`cli_words`, ``data`` the DATA file), each ``row i``
    (``X[i, j]``) being the row of ``data`` it came from, counted as the file's reader counts
    them: the split shuffles the rows, so the i-th training row is not the file's i-th. A
    message naming ``X_val`` is about the validation rows (``fit(X, X_val=...)``)."""
    import re

    rows = getattr(split, "val" if re.search(r"\bX_val\b", text) else part)

    def source_row(match: re.Match) -> str:
        i = int(match.group(2))
        return match.group(1) + (str(int(rows[i])) if i < len(rows) else match.group(2))

    text = re.sub(r"(\brow |\bX(?:_train|_val)?\[)(\d+)", source_row, text)
    text = re.sub(r"\bX_(?:train|val)\[", "X[", text)
    # the library's names of the parts (X, X_train, X_val) are all DATA on the command line
    subject = r"(?<![\w.])X(?:_train|_val)?(?= (?:as|has|holds|contains|must|is|cannot) )"
    text = re.sub(subject, data.replace("\\", "\\\\"), text)
    for option in ("dequantize", "discrete"):  # the 8-bit switches of fit flow / diffusion
        text = text.replace(f"{option}=True needs", f"--{option} needs")
    return cli_words(text, data)


def warning_words(text: str) -> str:
    """A warning in the words of the command that is running, as :func:`cli_words` makes its
    errors: ``X`` is its DATA file (or ``--dataset``), ``n_components`` its ``-k`` and the
    number of draws its ``-n``, where the command has them, and the library's settings the
    options (``max_iter`` is ``--max-iter``, ...). The command is click's current
    context (the one being invoked), whose parameters say what DATA it reads."""
    ctx = _current_context()
    if ctx is None:
        return cli_words(text)
    params = ctx.params
    given = params.get("data") is not None or params.get("dataset") is not None
    data = data_name(params.get("data"), params.get("dataset")) if given else None
    opts = {o for p in ctx.command.params for o in p.opts}
    k = "-k" if "-k" in opts else None
    count = "-n" if "-n" in opts else None
    return cli_words(text, data, k, count)


def _current_context():
    """The context of the command being run, None outside one. Typer 0.20 and later run on
    their own copy of click, whose contexts the click package does not see."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # a typer that runs on the click package
        from click import get_current_context
    return get_current_context(silent=True)
