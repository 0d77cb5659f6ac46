"""Writing files safely: every file latentfit writes goes through :class:`atomic_path`.

A write goes to a temporary file beside the target (``.NAME.HOST-PID-XXXXXXXX.lftmp``, in the
same folder so the rename cannot cross file systems), which is flushed to disk (fsync) and
renamed over the target in one step, the folder flushed too: a reader sees the old file or the
new one, never a half-written one, and an interrupted write leaves the target as it was. A
target the rename would wrongly replace (a folder, device, named pipe or socket) is refused
before anything is written (:func:`check_writable_target`), and a path that cannot be a file
name is refused with a message naming it (:func:`file_status`). Temporary files left by a writer
that was killed are removed on the next write to the same target (:func:`_clean_stale`).

The command line's checks made before any work (an output that is one of the inputs, an
existing file without ``--force``, a missing or read-only folder) are in
:mod:`latentfit._outputs`, built on the helpers here.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from latentfit._interrupt import deferred, record_undone, record_written
from latentfit.errors import LatentfitError, OutputError, ParameterError

_TMP_SUFFIX = ".lftmp"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _tmp_stem(name: str) -> str:
    """The target's name as its temporary files carry it: a long name is cut and given a
    digest, so that a name the file system takes (up to 255 bytes) still leaves room for the
    temporary file's prefix and suffix."""
    if len(name.encode()) <= 160:
        return name
    return name[:120] + "~" + hashlib.sha1(name.encode()).hexdigest()[:12]


def _tmp_prefix(name: str) -> str:
    """Temporary files of a write to ``name`` are ``.NAME.HOST-PID-XXXXXXXX.lftmp``: hidden,
    beside the target, and naming the process that writes them (see :func:`_clean_stale`)."""
    return f".{_tmp_stem(name)}.{_host()}-{os.getpid()}-"


def _shown(path) -> str:
    """``path`` for a message: a very long one cut, with its length."""
    text = str(path)
    return text if len(text) <= 100 else f"{text[:60]}... ({len(text)} characters)"


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, for a message."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((what for test, what in kinds if test(mode)), "not a regular file")


def file_status(path, error: type[LatentfitError] = ParameterError) -> os.stat_result | None:
    """``os.stat(path)`` (links followed), or None when nothing is there. A path that cannot
    be a file name (too long, a loop of links, not a str or os.PathLike, ...) raises ``error``
    naming it: ParameterError for a file to read, OutputError for one to write."""
    if not isinstance(path, str | os.PathLike):
        raise error(
            f"a file path must be a str or os.PathLike (e.g. pathlib.Path), got "
            f"{type(path).__name__} {path!r:.60}"
        )
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            raise error(
                f"{_shown(path)}: the file name is too long for the file system (at most 255 "
                "bytes per name); choose a shorter name"
            ) from None
        if err.errno == errno.ELOOP:
            raise error(
                f"{_shown(path)} is a loop of symbolic links (it points, through them, back to "
                "itself); point the link elsewhere, or give another name"
            ) from None
        raise error(f"cannot use {_shown(path)}: {err.strerror or err}") from None


def names_a_folder(path) -> bool:
    """Whether ``path``, as written, names a folder: it ends in a slash (or in ``/.`` or
    ``/..``, or is ``.`` or ``..``). ``Path`` drops a trailing slash and ``.``
    (``Path("new/")`` is ``new``), so a file written there would take the folder's name."""
    if not isinstance(path, str):  # a Path has no trailing slash left to see
        return False
    seps = os.sep + (os.altsep or "")
    last = path.rstrip(seps).rsplit(os.sep, 1)[-1]
    return bool(path) and (path[-1] in seps or last in (".", ".."))


def write_target(path) -> Path:
    """The file a write to ``path`` replaces: ``path`` with its symbolic links followed, so
    that writing through a link replaces the file it points to and keeps the link (as a shell's
    ``>`` or ``cp`` does), and a dangling link's target is created. The rename that ends a
    write would otherwise replace the link itself with a regular file."""
    return Path(os.path.realpath(path))


def check_writable_target(path, where: str = "") -> None:
    """Refuse a write to ``path`` that would replace something other than a regular file: a
    folder, a device, a named pipe or a socket would be swapped for a regular file by the
    rename that ends every write. ``where`` (e.g. ``"--labels "``) starts the message."""
    try:
        status = file_status(path, OutputError)
    except OutputError as err:
        raise OutputError(f"{where}{err}") from None
    if status is not None and not stat.S_ISREG(status.st_mode):
        what = _kind(status.st_mode)
        advice = (
            "give a file name inside it"
            if what == "a folder"
            else "latentfit writes regular files only (by a rename that would replace it); "
            "give the name of a file"
        )
        raise OutputError(f"{where}{_shown(path)} is {what}, not a regular file: {advice}")


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask can only be read by setting it)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def _clean_stale(folder: Path, name: str) -> None:
    """Remove temporaries (files, or staging folders) of an earlier write to ``folder/name``
    whose writer (a process on this host) is gone, e.g. killed before it could rename or delete
    them."""
    pattern = re.compile(
        rf"^\.{re.escape(_tmp_stem(name))}\.{re.escape(_host())}-(\d+)-[A-Za-z0-9_]+{re.escape(_TMP_SUFFIX)}$"
    )
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):  # a staging folder (see latentfit.tour)
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            pass


def _probe_folder(folder: Path) -> None:
    """Create and remove a temporary file in ``folder``: raises OSError if nothing can be
    written there (read-only folder or file system, no permission, ...)."""
    _clean_stale(folder, "probe")
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix("probe"), suffix=_TMP_SUFFIX, dir=folder)
    os.close(fd)
    os.unlink(tmp)


def _fsync(path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some systems cannot open a folder; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


class atomic_path:
    """Context manager yielding a temporary path beside the target, renamed onto it on success.

    A symbolic link is written through: the file it points to is replaced (created, for a
    dangling link) and the link kept. Missing folders above the target are created (the
    command line refuses them instead, before any work: see :mod:`latentfit._outputs`). The
    temporary file is ``.NAME.HOST-PID-XXXXXXXX.lftmp`` in the target's folder; on success
    it is flushed to disk (fsync), given the mode a new file gets under the umask
    (``0o666 & ~umask``), renamed over the target in one step and the folder is flushed too,
    so a reader sees the old file or the new one, never a half-written one. On an error the
    temporary file is removed; one left by a killed writer is removed on the next write to the
    same target. Errors creating, writing (an OSError in the body, e.g. a full disk) or
    renaming raise :class:`~latentfit.errors.OutputError` naming the target, never the
    temporary name; so does a target that exists and is not a
    regular file (a folder, device, named pipe or socket, which the rename would replace),
    checked before anything is written.
    """

    def __init__(self, path, shown=None):
        if names_a_folder(path):
            raise OutputError(
                f"{_shown(path)} names a folder (it ends in {os.sep}); give the name of a file "
                "to write"
            )
        self.given = Path(path)
        #: The file replaced: ``path`` with its links followed (see :func:`write_target`).
        self.path = write_target(path)
        #: The name messages give the file: ``path`` as given, or where a file written into a
        #: staging folder ends up (see :func:`latentfit.tour.run_tour`).
        self.shown = self.given if shown is None else Path(shown)

    def __enter__(self) -> Path:
        from latentfit.errors import OutputError

        check_writable_target(self.given)  # as given: a message names it, links followed alike
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _clean_stale(folder, self.path.name)
            with deferred():  # a Ctrl-C between the file made and its name kept would leak it
                fd, tmp = tempfile.mkstemp(
                    prefix=_tmp_prefix(self.path.name), suffix=_TMP_SUFFIX, dir=folder
                )
                os.close(fd)
                self.tmp = Path(tmp)
                _OPEN.add(self.tmp)
        except OSError as err:
            advice = (
                "choose a shorter name"
                if err.errno == errno.ENAMETOOLONG
                else "choose a folder you can write to"
            )
            raise OutputError(
                f"cannot write {_shown(self.shown)}: {err.strerror or err}; {advice}"
            ) from None
        except BaseException:  # a Ctrl-C held by deferred() is taken as it ends: no __exit__
            if getattr(self, "tmp", None) is not None:
                self.tmp.unlink(missing_ok=True)
                _OPEN.discard(self.tmp)
            raise
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        with deferred():  # the temporary file renamed into place or removed, never left
            try:
                return self._finish(exc_type, exc)
            finally:
                if not os.path.lexists(self.tmp):  # renamed or removed: no longer open
                    _OPEN.discard(self.tmp)

    def _finish(self, exc_type, exc) -> bool:
        from latentfit.errors import OutputError

        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            if issubclass(exc_type, OSError):  # e.g. a full disk midway through the write
                raise OutputError(_write_failed(self.shown, exc)) from None
            return False
        try:
            _fsync(self.tmp)
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.path)
        except OSError as err:
            self.tmp.unlink(missing_ok=True)
            raise OutputError(_write_failed(self.shown, err)) from None
        _fsync(self.path.parent, directory=True)
        record_written(str(self.shown))
        return False


#: The temporary files of the writes under way (:class:`atomic_path`), until each is renamed
#: into place or removed. An abort by a signal can land where no code of the write runs after
#: it (on entering ``__exit__``, before its ``deferred()`` holds the signal: Python takes a
#: pending signal when a function is called), and the file would be left: the command line
#: removes what is left here when an abort has unwound (:func:`remove_left_temporaries`).
_OPEN: set[Path] = set()


def remove_left_temporaries() -> None:
    """Remove the temporary files of writes that an abort cut short (see ``_OPEN``)."""
    while _OPEN:
        _OPEN.pop().unlink(missing_ok=True)


class all_or_none:
    """Context manager over files written together (a model, its labels, its figure): when
    the block ends in an error, each is put back as it was before it, so that a failure part
    way (the second file on a full disk, a Ctrl-C) leaves none of them new.

    Each file's own write goes through :class:`atomic_path` as usual. On entry a file that
    exists is kept by a hard link beside it (``.NAME.HOST-PID-XXXXXXXX.lftmp``; a copy where
    the file system has no hard links); on an error it is renamed back over the file, and a
    file that was not there is removed. ``undone`` lists, after an error, the paths (as given)
    that a write had replaced or created, each with what was done: "restored" or "removed". Links are followed (see :func:`write_target`).
    """

    def __init__(self, paths):
        self.paths = [Path(p) for p in paths if p is not None]
        self.undone: list[tuple[Path, str]] = []

    def __enter__(self) -> all_or_none:
        try:
            with deferred():  # every kept copy recorded, so that the exit removes it
                return self._keep_all()
        except BaseException:  # a Ctrl-C held by deferred() is taken as it ends: no __exit__
            self._drop()
            raise

    def _keep_all(self) -> all_or_none:
        from latentfit.errors import OutputError

        self._kept: list[tuple[Path, Path, Path | None, os.stat_result | None]] = []
        for given in self.paths:
            target = write_target(given)
            before = file_status(target, OutputError)
            backup = None
            if before is not None:
                try:
                    backup = _keep(target)
                except OSError as err:
                    self._drop()
                    raise OutputError(
                        f"cannot keep {_shown(given)} while it is replaced: "
                        f"{err.strerror or err}; free some space or choose another folder"
                    ) from None
            self._kept.append((given, target, backup, before))
        return self

    def __exit__(self, exc_type, exc, tb):
        with deferred():  # put back whole, the kept copies removed
            return self._undo(exc_type)

    def _undo(self, exc_type) -> bool:
        if exc_type is None:
            self._drop()
            return False
        for given, target, backup, before in reversed(self._kept):
            try:
                now = os.stat(target)
            except OSError:
                now = None
            try:
                if backup is not None and now is not None and os.path.samestat(now, before):
                    backup.unlink()  # not written (a rename onto a hard link of itself is a no-op)
                elif backup is not None:
                    os.replace(backup, target)
                    self.undone.append((given, "restored"))
                    record_undone(str(given))
                elif now is not None:
                    os.unlink(target)
                    self.undone.append((given, "removed"))
                    record_undone(str(given))
            except OSError:
                pass  # the error that ended the block is the one to report
        self.undone.reverse()
        return False

    def _drop(self) -> None:
        for _, _, backup, _ in self._kept:
            if backup is not None:
                backup.unlink(missing_ok=True)


def _keep(target: Path) -> Path:
    """A hard link to ``target`` beside it under a temporary name (a copy where hard links
    cannot be made), which a later rename puts back."""
    import secrets

    _clean_stale(target.parent, target.name)
    prefix = _tmp_prefix(target.name)
    while True:
        backup = target.with_name(f"{prefix}{secrets.token_hex(4)}{_TMP_SUFFIX}")
        try:
            os.link(target, backup)
            return backup
        except FileExistsError:
            continue
        except OSError:
            if backup.exists():
                continue
            shutil.copy2(target, backup)
            return backup


def _write_failed(path: Path, err: OSError) -> str:
    """The message of a write to ``path`` that failed after it started: it names the target
    (never the temporary file) and says that a file already there is unchanged."""
    advice = (
        "free some space on its disk or choose another folder"
        if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        else "choose a folder you can write to"
    )
    kept = " (the file already there is unchanged)" if path.exists() else ""
    return f"cannot write {_shown(path)}: {err.strerror or err}{kept}; {advice}"
