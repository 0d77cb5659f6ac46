"""Usage errors that click finds before a command runs (an unknown option or command, a value of
the wrong type, a missing or extra argument) read as every other failure of the command line:
one ``error:`` line that names the problem in the words typed and the command's ``--help``,
exit 2, no usage line and no boxed panel. Every command and group is enumerated from the
application, so that a new one is covered without being listed here."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from latentfit.cli import app

runner = CliRunner()


def _tree():
    """(words, click command) of every group and command under ``latentfit``."""
    found = []

    def walk(command, words):
        found.append((words, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*words, name])

    walk(typer.main.get_command(app), [])
    return found


GROUPS = [(w, c) for w, c in _tree() if hasattr(c, "commands")]
COMMANDS = [(w, c) for w, c in _tree() if not hasattr(c, "commands")]


def _ids(items):
    return [" ".join(w) or "latentfit" for w, _ in items]


def _refused(args) -> str:
    """The one error line that ``latentfit ARGS`` ends with, checked for the house format."""
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    line = lines[0]
    assert line.startswith("error: "), line
    for boxed in ("│", "╭", "Usage:", "Error", "Try '"):
        assert boxed not in line, line
    assert "(try 'latentfit" in line and line.endswith(" --help')"), line
    return line


def _options(command):
    return [p for p in command.params if p.param_type_name == "option" and not p.hidden]


def _required_values(command) -> list[str]:
    """Words that satisfy a command's required options and arguments (``1`` fits them all:
    a number, a family's name as text, a path), arguments first."""
    words = []
    for p in command.params:
        if p.required and p.param_type_name == "argument":
            words.append("1")
    for p in command.params:
        if p.required and p.param_type_name == "option":
            words += [p.opts[0], "1"]
    return words


def _long_names(command):
    return [n for p in _options(command) for n in p.opts if n.startswith("--") and len(n) >= 5]


def _number_options(command):
    return [
        p
        for p in _options(command)
        if getattr(p.type_descriptor, "annotation", None) in (int, float)
    ]


def _having(what):
    """The commands for which ``what(command)`` is not empty: each test is asked only of the
    commands it applies to (a command with no number option has no wrong number to refuse)."""
    return [(w, c) for w, c in COMMANDS if what(c)]


LONG = _having(_long_names)
NUMBERS = _having(_number_options)
REQUIRING = _having(lambda c: [p for p in c.params if p.required])
ARGUING = _having(lambda c: [p for p in c.params if p.param_type_name == "argument"])
OPTIONED = _having(lambda c: [p for p in _options(c) if not p.is_eager])


@pytest.mark.parametrize(("words", "command"), COMMANDS, ids=_ids(COMMANDS))
def test_an_unknown_option_is_one_line_naming_it(words, command):
    line = _refused([*words, "--bogus-option"])
    assert f"{' '.join(['latentfit', *words])} has no option --bogus-option" in line
    assert f"(try 'latentfit {' '.join(words)} --help')" in line
    assert "did you mean" not in line  # nothing is close to it


@pytest.mark.parametrize(("words", "command"), LONG, ids=_ids(LONG))
def test_a_misspelt_option_suggests_the_closest(words, command):
    # long options with a letter doubled: the option itself is suggested (difflib); four
    # options of each command, spread over its list, keep the test short
    names = _long_names(command)
    for name in names[:: max(1, len(names) // 4)]:
        typo = name[:3] + name[2] + name[3:]
        line = _refused([*words, typo])
        assert f"has no option {typo}: did you mean " in line, line
        assert name in line.split("did you mean")[1], line


@pytest.mark.parametrize(("words", "command"), NUMBERS, ids=_ids(NUMBERS))
def test_a_value_of_the_wrong_type_is_named_with_what_the_option_takes(words, command):
    for p in _number_options(command):
        line = _refused([*words, p.opts[0], "abc"])
        assert f"{'/'.join(p.opts)} takes a " in line, line
        assert "number" in line and "got 'abc'" in line, line
        low = p.type_descriptor.parameter_info.min
        if low is not None:
            assert f"at least {low:g}" in line or f"from {low:g}" in line, line
            below = f"{low - 1:g}"
            line = _refused([*words, p.opts[0], below])
            assert f"got {below}" in line, line
            assert f"at least {low:g}" in line or f"from {low:g}" in line, line


@pytest.mark.parametrize(("words", "command"), COMMANDS, ids=_ids(COMMANDS))
def test_an_option_without_its_value_is_named(words, command):
    for p in _options(command):
        name = p.opts[0]
        if getattr(p, "is_flag", False) or p.is_eager:
            flag = (p.opts + p.secondary_opts)[-1]
            if flag.startswith("--"):
                line = _refused([*words, f"{flag}=yes"])
                assert f"{flag} is a switch and takes no value" in line, line
            continue
        line = _refused([*words, name])
        assert f"{name} needs a value after it" in line, line


@pytest.mark.parametrize(("words", "command"), REQUIRING, ids=_ids(REQUIRING))
def test_every_missing_requirement_is_named_at_once(words, command):
    required = [p for p in command.params if p.required]
    line = _refused(words)
    for p in required:
        name = "/".join(p.opts) if p.param_type_name == "option" else p.metavar or p.name.upper()
        assert name in line, line
    if {"data", "dataset"} <= {p.name for p in command.params}:
        assert "DATA (or --dataset)" in line, line


@pytest.mark.parametrize(("words", "command"), COMMANDS, ids=_ids(COMMANDS))
def test_extra_arguments_are_named_with_what_the_command_takes(words, command):
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    given = [*words, *_required_values(command)]
    given += ["1"] * sum(not p.required for p in arguments)  # the optional ones too
    line = _refused([*given, "extra1", "extra2"])
    assert "got the extra arguments extra1 extra2" in line, line
    assert ("takes options only" if not arguments else "and options;") in line, line
    # an option after -- is an argument (missing a required option, or an extra argument)
    line = _refused([*words, "--", *["1"] * len(arguments), "--quiet"])
    assert "after -- every word is an argument: put the options before --" in line, line


@pytest.mark.parametrize(("words", "group"), GROUPS, ids=_ids(GROUPS))
def test_an_unknown_command_suggests_the_closest_or_lists_them(words, group):
    names = [n for n, c in group.commands.items() if not c.hidden]
    line = _refused([*words, "zzzz"])
    assert f"has no command 'zzzz'; its commands are {', '.join(names)}" in line, line
    for name in names:
        line = _refused([*words, f"{name}x"])
        assert f"has no command '{name}x': did you mean " in line, line
        assert name in line.split("did you mean")[1], line


@pytest.mark.parametrize(("words", "group"), GROUPS, ids=_ids(GROUPS))
def test_an_unknown_option_of_a_group_is_one_line(words, group):
    line = _refused([*words, "--bogus-option"])
    assert "has no option --bogus-option" in line, line


def test_a_single_dash_long_option_is_named_as_typed():
    line = _refused(["fit", "gmm", "-components", "2"])
    assert "has no option -components: a long option takes two dashes, --components" in line
    line = _refused(["fit", "gmm", "-bogus"])
    assert "has no option -bogus" in line and "-b " not in line


def test_the_examples_of_the_report():
    assert _refused(["fit", "gmm", "x.csv", "--bogus"]) == (
        "error: latentfit fit gmm has no option --bogus (try 'latentfit fit gmm --help')"
    )
    assert _refused(["fit", "gmm", "x.csv", "-k", "abc"]) == (
        "error: -k/--components takes a whole number of at least 1; got 'abc' "
        "(try 'latentfit fit gmm --help')"
    )
    assert _refused(["fit", "gmm"]) == (
        "error: latentfit fit gmm needs DATA (or --dataset) and -k/--components "
        "(try 'latentfit fit gmm --help')"
    )
    assert _refused(["fit", "gmn"]) == (
        "error: latentfit fit has no command 'gmn': did you mean gmm? (try 'latentfit fit --help')"
    )


@pytest.mark.parametrize(("words", "command"), ARGUING, ids=_ids(ARGUING))
def test_help_and_errors_name_the_arguments_alike(words, command):
    # the usage line of --help showed {model_path} where the errors say MODEL
    line = _refused([*words, *_required_values(command), "1", "1", "1", "1"])
    takes = line.split(" takes ")[1].split(" and options")[0].split()
    usage = runner.invoke(app, [*words, "--help"], terminal_width=200).output
    usage = next(u for u in usage.splitlines() if "Usage:" in u)
    for name in takes:
        bare = name.strip("[]")
        assert bare.isupper() and bare.replace("_", "").isalpha(), line
        assert bare in usage, usage


@pytest.mark.parametrize(("words", "command"), OPTIONED, ids=_ids(OPTIONED))
def test_an_option_typed_before_its_command_says_where_it_goes(words, command):
    names = [n for p in _options(command) if not p.is_eager for n in p.opts]
    for depth in range(len(words)):  # before each word of the command's name
        line = _refused([*words[:depth], names[0], "1", *words[depth:]])
        group = " ".join(["latentfit", *words[:depth]])
        assert f"{group} has no option {names[0]}: {names[0]} is an option of " in line, line
        assert f"latentfit {' '.join(words)}; put it after the command's name" in line, line
