"""Ctrl-C (or SIGTERM) at the command line: the first asks the running fit to stop where it
can and keep what it has; the second aborts.

A fit that has run for an hour is worth keeping when its user runs out of patience: EM's
parameters after any complete iteration are a valid (not converged) fit, and a training run's
weights after any optimiser step can be checkpointed and resumed. So the command line installs
:func:`interrupt_handling`, and the loops that can stop cleanly run inside :func:`stoppable`
and ask :func:`stop_requested` at each of their boundaries (EM's iterations in
:func:`latentfit.em.driver.run_em`, the optimiser's steps in :func:`latentfit.train.train`,
the sampler's transitions after warm-up, an online HMM fit's chunks; a ``select`` sweep ends
with the fits before the one stopped).
A press while no such loop runs (reading the data, scoring, writing), or a second press, aborts
at once, saying which files the command had written before it (writes are atomic: a file is
the old one or the new one, never half of either). SIGTERM, which a batch scheduler sends
some seconds before it kills a job (and ``kill`` by default), is taken the same way, so that a
training run ends with its checkpoint written; its abort exits with 143.

From Python (a notebook's "interrupt", Ctrl-C in a script), an estimator's ``fit`` runs inside
:func:`keeping_fit_on_ctrl_c`: the first Ctrl-C inside its loop stops it at the next boundary
as above, the estimator keeps the fit so far, and ``fit`` then raises ``KeyboardInterrupt`` (a
script still stops, a notebook's cell still ends interrupted) with the estimator fitted; a
second press, or one outside the loop, raises ``KeyboardInterrupt`` at once and leaves the
estimator as it was (:mod:`latentfit._atomic_fit`). Where the result is what a call returns
(``mcmc.sample``'s draws and ``resume``, ``train``'s history, ``select_model``'s table), the
first press ends the loop and the call returns what it has, with a warning. SIGTERM, and other
code, get Python's own behaviour, unchanged.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import types

__all__ = [
    "abort_status",
    "abort_words",
    "aborted",
    "deferred",
    "interrupt_handling",
    "keeping_fit_on_ctrl_c",
    "not_stoppable",
    "stop_requested",
    "stoppable",
    "stopped_by",
    "uninstall",
    "written_files",
]

#: What the handler reads: loops that can stop now (depth), what they stop at, whether a stop
#: was asked for, and the files written so far (see :func:`record_written`).
_state: dict = {
    "installed": False,
    "depth": 0,
    "where": "",
    "requested": False,
    "aborted": False,
    "by": "Ctrl-C",
    "deferred": 0,
    "pending": [],
    "python": False,  # keeping_fit_on_ctrl_c's handler is in place (no command line)
    "stopped_at": None,  # (where, keeps) of the loop a first press stopped
}
#: The signals handled, as messages name them (an abort exits with 128 + the signal's number).
_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
_written: list[str] = []
_timers: list[threading.Timer] = []  # see _end_anyway: cancelled when the command has ended


def stop_requested() -> bool:
    """Whether a first Ctrl-C (or SIGTERM) asked the running fit to stop at its next
    boundary."""
    return _state["requested"]


def stopped_by() -> str:
    """What asked for the stop or the abort, as messages name it: "Ctrl-C" or "SIGTERM"."""
    return _state["by"]


def record_written(name: str) -> None:
    """Note a file this process wrote (for the message of an abort)."""
    if _state["installed"] and name not in _written:
        _written.append(name)


def record_undone(name: str) -> None:
    """Note that a file written earlier was put back as it was (an all-or-none write undone)."""
    if name in _written:
        _written.remove(name)


def written_files() -> list[str]:
    """The files written since :func:`interrupt_handling` was entered."""
    return list(_written)


@contextlib.contextmanager
def stoppable(where: str, keeps: str):
    """Run a loop that checks :func:`stop_requested` at every ``where`` ("EM iteration"): a
    first Ctrl-C inside it asks it to stop there, keeping ``keeps`` ("the fit so far"),
    instead of aborting. Inside another such block, the outer block's words are said."""
    depth, previous = _state["depth"], _state["where"]
    # an outer loop's words stand (a sweep's fits: "keeping the fits before it")
    _state["depth"], _state["where"] = depth + 1, previous if depth > 0 else (where, keeps)
    try:
        yield
    finally:
        _state["depth"], _state["where"] = depth, previous


@contextlib.contextmanager
def not_stoppable():
    """Run work that makes several fits and keeps none alone (the tour): Ctrl-C aborts it
    instead of stopping the fit that runs."""
    depth = _state["depth"]
    _state["depth"] = -(10**9)
    try:
        yield
    finally:
        _state["depth"] = depth


def aborted() -> bool:
    """Whether a Ctrl-C or SIGTERM aborted the command (see :func:`abort_words`)."""
    return _state["aborted"]


def abort_status() -> int:
    """The exit status of an abort: 128 + the signal's number (130 for Ctrl-C, 143 SIGTERM)."""
    return 128 + next(n for n, by in _NAMES.items() if by == _state["by"])


def abort_words() -> str:
    """What an abort by Ctrl-C or SIGTERM leaves: the files written before it (and not put
    back)."""
    written, by = written_files(), _state["by"]
    if not written:
        return f"latentfit: aborted ({by}); no file was written"
    shown = ", ".join(written[:6]) + (f" and {len(written) - 6} more" if len(written) > 6 else "")
    return f"latentfit: aborted ({by}); written before it: {shown}; nothing else was written"


@contextlib.contextmanager
def deferred():
    """Hold Ctrl-C and SIGTERM until the block ends, then take them: for the few lines that
    must not be cut (a temporary file made and named, renamed into place or removed), where
    an abort left a ``.lftmp`` file behind (found by tests/property/test_cli_interrupt.py)."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
        if not _state["deferred"]:
            while _state["pending"]:
                _handler(_state["pending"].pop(0), None)


def _handler(signum, frame) -> None:
    if _state["deferred"]:
        _state["pending"].append(signum)
        return
    by = _NAMES[signum]
    if _state["depth"] > 0 and not _state["requested"]:
        _state.update(requested=True, by=by, stopped_at=_state["where"])
        where, keeps = _state["where"]
        again = "press Ctrl-C" if signum == signal.SIGINT else "send it"
        sys.stderr.write(
            f"\nlatentfit: {by}: stopping at the end of this {where} and keeping {keeps}; "
            f"{again} again to abort without it\n"
        )
        sys.stderr.flush()
        return
    _state.update(aborted=True, by=by)
    sys.stderr.write("\n")
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    _end_anyway(signum)
    raise SystemExit(128 + signum)  # unwinds as KeyboardInterrupt does: outputs put back


#: Seconds an abort by SIGTERM has to unwind before the process ends as the signal's default.
SIGTERM_GRACE = 10.0


def _end_anyway(signum: int) -> None:
    """End the process (exit status 128 + ``signum``, nothing unwound, as ``signum``'s default
    would), :data:`SIGTERM_GRACE` seconds from now, if it is still running. An exception raised by a signal handler inside a finaliser (a
    generator closed by the garbage collector) is printed and dropped by Python, and the
    command would run on; SIGTERM must end it (a scheduler's, a supervisor's), as it did
    before this handler. A daemon timer, cancelled when :func:`interrupt_handling`'s block
    ends (the abort unwound)."""
    import os

    def end() -> None:  # in the timer's thread, where no signal handler can be set
        sys.stderr.write(f"latentfit: aborted ({_NAMES[signum]}); ended at once\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    timer = threading.Timer(SIGTERM_GRACE, end)
    timer.daemon = True
    _timers.append(timer)
    timer.start()


@contextlib.contextmanager
def interrupt_handling():
    """Ctrl-C and SIGTERM as described in the module docstring, for the duration of the block
    (the main thread only: signal handlers belong to it). A signal the process was started
    ignoring (a background job's SIGINT) is left ignored. Whether the block was aborted, by
    what, and the files written stay readable after it (:func:`aborted`, :func:`abort_words`:
    the command line says them after the block); a signal while the block ends is dropped
    (the command has ended; an abort raised there would escape its caller's handling)."""
    if threading.current_thread() is not threading.main_thread() or _state["installed"]:
        yield
        return
    previous = _previous_handlers
    previous.clear()
    _state.update(depth=0, where="", requested=False, aborted=False, by="Ctrl-C")
    _state.update(deferred=0, pending=[])
    _written.clear()
    for signum in _NAMES:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _handler)
    _state["installed"] = True  # once the handler is in place
    try:
        yield
    finally:
        uninstall()


#: the handlers :func:`interrupt_handling` replaced, put back by :func:`uninstall`
_previous_handlers: dict = {}


def uninstall() -> None:
    """End :func:`interrupt_handling`'s block: its SIGTERM timers cancelled, the signal
    handlers it replaced put back, a signal from here on dropped. Its own ``finally`` does
    this; the command line calls it again after an abort, because a signal taken while
    contextlib ends the block (a function call, where Python runs pending handlers) raises
    before that ``finally`` runs, which then waits for the generator's collection (and a
    SIGTERM timer left running would end a process that goes on, as a test's does).
    Idempotent: nothing happens once the block has ended."""
    if not _state["installed"]:
        return
    _state["deferred"] += 1  # held, then dropped below
    for timer in _timers:
        timer.cancel()
    _timers.clear()
    for signum, handler in _previous_handlers.items():
        signal.signal(signum, handler)
    _previous_handlers.clear()
    _state.update(installed=False, depth=0, where="", requested=False, deferred=0, pending=[])


@contextlib.contextmanager
def keeping_fit_on_ctrl_c(what: str, raising: bool = True, then: str = ""):
    """Ctrl-C during an estimator's ``fit`` called from Python (``what``: "GaussianMixture.fit"):
    a first press inside a stoppable loop stops it at the loop's next boundary, and when the
    block has ended (the estimator holding the fit so far) ``KeyboardInterrupt`` is raised,
    saying so; a press outside the loop, or a second one, raises ``KeyboardInterrupt`` at once,
    as Python does. With ``raising=False`` (a function whose result is what it keeps: the
    sampler's draws) nothing is raised after the block; it yields an object whose ``stopped``
    says whether a press stopped the loop, for the caller to say so. Nothing changes at the
    command line (:func:`interrupt_handling` is in place), inside another such block, off the
    main thread, or where SIGINT's handler is not Python's own (a program that set its own
    keeps it). ``then``: how to go on from the fit kept, said after it."""
    outcome = types.SimpleNamespace(stopped=False)
    if (
        threading.current_thread() is not threading.main_thread()
        or _state["installed"]
        or _state["python"]
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield outcome
        return
    import torch

    _state.update(depth=0, where="", requested=False, aborted=False, by="Ctrl-C")
    _state.update(deferred=0, pending=[], stopped_at=None)
    previous = signal.signal(signal.SIGINT, _handler)
    _state["python"] = True
    grad = torch.is_grad_enabled()
    try:
        yield outcome
    finally:
        _state["deferred"] += 1  # a press from here on is dropped: the fit has ended
        signal.signal(signal.SIGINT, previous)
        # an abort raised inside ``torch.no_grad()``'s ``__enter__`` (after it turned gradients
        # off, before the block that turns them back on began) would leave the user's session
        # without gradients: the fit puts back the mode it found
        torch.set_grad_enabled(grad)
        stopped_at = _state["stopped_at"] if _state["requested"] else None
        _state.update(python=False, depth=0, where="", requested=False, deferred=0, pending=[])
    outcome.stopped = stopped_at is not None
    if stopped_at is not None and raising:  # the block ended whole: the estimator holds it
        where, keeps = stopped_at
        raise KeyboardInterrupt(
            f"{what} stopped by Ctrl-C at the end of its {where}; the estimator keeps {keeps}"
            + (f"; {then}" if then else "")
        )
