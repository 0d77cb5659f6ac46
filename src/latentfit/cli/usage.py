"""Usage errors (an unknown option or command, a missing or extra argument, a value of the wrong
type) in the command line's words: one ``error:`` line that names the command, what was typed
and what to try, as every other failure of the command line reads, in place of click's usage
line and rich's boxed panel.

:class:`UsageCommand` and :class:`UsageGroup` are the classes of every command and group
(:class:`Typer` makes them the default); they note what was typed, which click's errors do
not keep. :func:`usage_words` turns one of click's errors into the line.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

import typer
from typer.core import TyperCommand, TyperGroup

#: click's exceptions: typer's own copy of click (typer 0.20 and later) or the click package
_click = importlib.import_module(typer.BadParameter.__module__)


class UsageCommand(TyperCommand):
    """A command whose usage errors remember the words typed after its name (``given``)."""

    def parse_args(self, ctx, args):
        with _remembered(ctx, args):
            return super().parse_args(ctx, args)


class UsageGroup(TyperGroup):
    """A group of commands whose usage errors remember the words typed after its name."""

    def parse_args(self, ctx, args):
        with _remembered(ctx, args):
            return super().parse_args(ctx, args)

    def resolve_command(self, ctx, args):
        with _remembered(ctx, args):
            return super().resolve_command(ctx, args)


@contextmanager
def _remembered(ctx, args):
    """Note on a usage error raised inside the words typed (``args``) and the context it
    happened in: click's parser leaves the context out of some (``-k`` without a value)."""
    given = list(args)
    try:
        yield
    except _click.UsageError as err:
        if getattr(err, "given", None) is None:
            err.given = given
        if err.ctx is None:
            err.ctx = ctx
        raise


class Typer(typer.Typer):
    """``typer.Typer`` whose groups and commands are :class:`UsageGroup` and
    :class:`UsageCommand` unless told otherwise."""

    def __init__(self, *, cls=None, **kwargs):
        super().__init__(cls=cls or UsageGroup, **kwargs)

    def command(self, name=None, *, cls=None, **kwargs):
        return super().command(name, cls=cls or UsageCommand, **kwargs)


def command_words(ctx) -> str:
    """The command as a person types it: ``latentfit fit gmm``, whatever the program was called
    as (``python -m latentfit``, a test runner's name)."""
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    root = names.pop()
    names.append(root if root.endswith("latentfit") else "latentfit")
    return " ".join(reversed([n for n in names if n]))


def usage_words(err) -> str:
    """One of click's usage errors as the line that follows ``error:``: what is wrong, in the
    words typed, what to try where a guess can be made, and the ``--help`` of the command."""
    ctx = err.ctx
    if ctx is None:
        return str(err.format_message())
    command = command_words(ctx)
    given = getattr(err, "given", None) or []
    words = None
    if isinstance(err, _click.NoSuchOption):
        words = _no_such_option(ctx, err.option_name, given)
    elif isinstance(err, _click.MissingParameter):
        words = _missing(ctx, given)
    elif isinstance(err, _click.BadParameter) and err.param is not None:
        words = _bad_value(err)
    elif isinstance(err, _click.BadOptionUsage):
        words = _bad_option_usage(ctx, err.option_name)
    elif type(err) is _click.UsageError and isinstance(ctx.command, TyperGroup):
        words = _no_such_command(ctx, given)
    elif type(err) is _click.UsageError:
        words = _extra_arguments(ctx, given)
    if words is None:
        words = f"{command}: {err.format_message()}"
    return f"{words} (try '{command} --help')"


def _option_names(param) -> str:
    """``-k/--components``; an argument as its metavar, ``DATA`` (``MODEL_PATH`` without)."""
    if param.param_type_name == "option":
        return "/".join(param.opts)
    return param.metavar or (param.name or "").upper()


def _no_such_option(ctx, name: str, given: list[str]) -> str:
    """An unknown option, as typed (``-bogus``, which click reads as ``-b`` ``-o`` ...), with
    the closest options of the command (difflib's measure, on the names without dashes)."""
    from difflib import get_close_matches

    typed = name
    if len(name) == 2 and name[0] == "-":  # a short option, perhaps the start of a long one
        long = [t for t in given if t.startswith(name) and len(t) > 2 and t[:2] != "--"]
        typed = long[0].split("=", 1)[0] if long else name
    names = [
        n
        for p in ctx.command.get_params(ctx)
        if p.param_type_name == "option" and not p.hidden
        for n in (*p.opts, *p.secondary_opts)
    ]
    bare = {n.lstrip("-"): n for n in sorted(names, key=len)}
    close = [bare[b] for b in get_close_matches(typed.lstrip("-"), list(bare), n=3)]
    words = f"{command_words(ctx)} has no option {typed}"
    if typed != name and not typed.startswith("--") and f"-{typed}" in names:
        return f"{words}: a long option takes two dashes, -{typed}"
    if isinstance(ctx.command, TyperGroup):
        owners = _commands_with(ctx.command, typed)
        if owners:  # latentfit -k 2 fit gmm: the option of a command, typed before its name
            named = [o for o in owners if all(w in given for w in o.split())]
            if named:
                owner = f"{command_words(ctx)} {max(named, key=len)}"
            else:
                owner = f"{len(owners)} commands, such as {command_words(ctx)} {owners[0]}"
            return f"{words}: {typed} is an option of {owner}; put it after the command's name"
    if close:
        return f"{words}: did you mean {' or '.join(close)}?"
    return words


def _commands_with(group, option: str) -> list[str]:
    """The commands under ``group`` (as ``fit gmm``) that take ``option``."""
    found = []
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            found += [f"{name} {below}" for below in _commands_with(command, option)]
        elif any(option in (*p.opts, *getattr(p, "secondary_opts", ())) for p in command.params):
            found.append(name)
    return found


def _missing(ctx, given: list[str]) -> str:
    """Every required option and argument not given (click names the first only), and DATA
    where neither DATA nor ``--dataset`` was given: the commands need one of the two."""
    command = ctx.command
    params = command.get_params(ctx)
    opts, _, _ = command.make_parser(ctx).parse_args(args=list(given))
    missing = [_option_names(p) for p in params if p.required and opts.get(p.name) is None]
    names = {p.name for p in params}
    if {"data", "dataset"} <= names and opts.get("data") is None and "dataset" not in opts:
        missing.insert(0, "DATA (or --dataset)")
    listed = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
    return f"{command_words(ctx)} needs {listed}" + _after_dashes(given)


def _bad_value(err) -> str:
    """A value that is not of the option's type or is out of its range, with the value and
    what the option takes."""
    param = err.param
    names = _option_names(param)
    cause = err.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else []
    if not errors:  # a typer that words its own conversion errors, naming the value
        return f"{names}: {err.message}"
    value = errors[0].get("input")
    shown = f"{value}" if _is_number(value) else repr(value)
    info = getattr(getattr(param, "type_descriptor", None), "parameter_info", None)
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    kinds = {int: "a whole number", float: "a number", bool: "true or false"}
    kind = kinds.get(annotation)
    if kind is None:
        return f"{names}: {err.message}; got {shown}"
    low, high = (_bound(getattr(info, end, None)) for end in ("min", "max"))
    if low is not None and high is not None:
        kind += f" from {low} to {high}"
    elif low is not None:
        kind += f" of at least {low}"
    elif high is not None:
        kind += f" of at most {high}"
    return f"{names} takes {kind}; got {shown}"


def _bound(value) -> str | None:
    """An option's limit as typed: a whole number in full (--seed's 4294967295, not 4.29497e+09),
    else the shortest form of the number."""
    if value is None:
        return None
    return str(value) if isinstance(value, int) else f"{value:g}"


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _bad_option_usage(ctx, name: str) -> str | None:
    """An option without its value (the last word), or a switch given one (``--quiet=yes``)."""
    for param in ctx.command.get_params(ctx):
        if name in (*param.opts, *getattr(param, "secondary_opts", ())):
            if getattr(param, "is_flag", False):
                return f"{name} is a switch and takes no value: write {name} alone"
            return f"{name} needs a value after it: write {name} VALUE"
    return None


def _no_such_command(ctx, given: list[str]) -> str | None:
    """A command name that names none, with the closest names or else all of them."""
    from difflib import get_close_matches

    if not given or given[0].startswith("-"):
        return None
    group = ctx.command
    names = [n for n, c in group.commands.items() if not c.hidden]
    close = get_close_matches(given[0], names, n=3)
    words = f"{command_words(ctx)} has no command {given[0]!r}"
    if close:
        return f"{words}: did you mean {' or '.join(close)}?"
    return f"{words}; its commands are {', '.join(names)}"


def _extra_arguments(ctx, given: list[str]) -> str | None:
    """Words that are neither an option, an option's value nor an argument of the command."""
    command = ctx.command
    _, extra, _ = command.make_parser(ctx).parse_args(args=list(given))
    if not extra:
        return None
    takes = [
        p.metavar or (p.name or "").upper()
        if p.required
        else f"[{p.metavar or (p.name or '').upper()}]"
        for p in command.get_params(ctx)
        if p.param_type_name == "argument"
    ]
    what = f"takes {' '.join(takes)} and options" if takes else "takes options only"
    plural = "s" if len(extra) > 1 else ""
    words = f"{command_words(ctx)} {what}; got the extra argument{plural} {' '.join(extra)}"
    return words + _after_dashes(given)


def _after_dashes(given: list[str]) -> str:
    """What ``--`` did, where an option was typed after it."""
    if "--" in given and any(t.startswith("-") for t in given[given.index("--") + 1 :]):
        return "; after -- every word is an argument: put the options before --"
    return ""
