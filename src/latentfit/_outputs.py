"""Checks on the files a command is about to write, made before any work is done.

Every command-line command that writes calls :func:`check_outputs` with its input paths and
its output paths before it reads data or fits anything, so a mistake in a path costs nothing:
an output that is one of the inputs, an existing file (without ``--force``), a folder where a
file is wanted, or a missing or read-only folder is an :class:`~latentfit.errors.OutputError`
naming the option at fault. The writing itself goes through :class:`latentfit._files.atomic_path`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from latentfit.errors import OutputError

__all__ = ["Output", "check_outputs"]


@dataclass(frozen=True)
class Output:
    """One place a command writes: ``path``, the ``option`` that named it (for messages) and
    whether it is a ``file`` or a ``folder`` the command fills (created when missing)."""

    path: Path
    option: str
    folder: bool = False
    #: For a folder: files inside it that the command replaces (refused without ``force``).
    replaces: tuple[str, ...] = ()
    #: The file may exist without ``force`` (e.g. a metrics log that a resumed run continues).
    may_exist: bool = False
    #: For a folder: files inside it that the command writes and may keep (e.g. a checkpoint a
    #: later run resumes from); no other output may name them.
    holds: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        """The files this output writes: its path, or for a folder the files named inside it."""
        if not self.folder:
            return [self.path]
        return [self.path / name for name in (*self.replaces, *self.holds)]


def _same(a: Path, b: Path) -> bool:
    from latentfit._files import write_target

    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    # realpath, not Path.resolve: that raises RuntimeError on a loop of links, which the
    # checks that follow refuse by name
    return write_target(a) == write_target(b)


def _writable_folder(folder: Path) -> str | None:
    """Why nothing can be written into an existing ``folder``, or None if a file can be."""
    from latentfit._files import _probe_folder

    try:
        _probe_folder(folder)
    except OSError as err:
        return err.strerror or str(err)
    return None


def _status(path: Path, opt: str):
    """``os.stat`` of an output path or None when nothing is there; a name the file system
    cannot take (too long, ...) is an OutputError naming ``opt``."""
    from latentfit._files import file_status

    try:
        return file_status(path, OutputError)
    except OutputError as err:
        raise OutputError(f"{opt} {err}") from None


def _nearest_existing(path: Path, opt: str) -> Path:
    path = path.absolute()
    while _status(path, opt) is None and path != path.parent:
        path = path.parent
    return path


def _named(path: Path) -> str:
    """``path`` for a message, with the file it is a symbolic link to (which is written)."""
    if not path.is_symlink():
        return str(path)
    from latentfit._files import write_target

    return f"{path} (a link to {write_target(path)})"


def _check_file(out: Output, force: bool) -> None:
    from latentfit._files import check_writable_target, write_target

    path, opt = out.path, out.option
    # A folder, device, named pipe or socket is refused with or without --force: the rename
    # that ends a write would replace it with a regular file.
    check_writable_target(path, f"{opt} ")
    if _status(path, opt) is not None and not (force or out.may_exist):
        raise OutputError(
            f"{opt} {_named(path)} already exists; pass --force to replace it, or choose "
            "another name"
        )
    # A link is written through (see latentfit._files.write_target): its target's folder
    # is the one written to, and a dangling link's target is created there.
    parent = write_target(path).parent
    if not parent.exists():
        raise OutputError(
            f"{opt} {_named(path)}: the folder {parent} does not exist; create it first "
            f"(mkdir -p {parent})"
        )
    if not parent.is_dir():
        raise OutputError(f"{opt} {_named(path)}: {parent} is not a folder")
    why = _writable_folder(parent)
    if why is not None:
        raise OutputError(
            f"{opt} {_named(path)}: cannot write into the folder {parent} ({why}); "
            "choose a folder you can write to"
        )


def _check_folder(out: Output, force: bool) -> None:
    from latentfit._files import _kind, check_writable_target

    path, opt = out.path, out.option
    status = _status(path, opt)
    if status is not None and not stat.S_ISDIR(status.st_mode):
        what = "a file" if stat.S_ISREG(status.st_mode) else _kind(status.st_mode)
        raise OutputError(f"{opt} {path} is {what}, not a folder; give a folder name")
    if status is not None:
        for name in out.replaces:
            check_writable_target(path / name, f"{opt} ")
        clash = [name for name in out.replaces if (path / name).exists()]
        if clash and not force:
            raise OutputError(
                f"{opt} {path} already holds {', '.join(clash)}; pass --force to replace "
                "it, or choose another folder"
            )
        where = path
    else:  # made when written, through a dangling link to where it points
        from latentfit._files import write_target

        where = _nearest_existing(write_target(path), opt)
        if not where.is_dir():
            raise OutputError(f"{opt} {path}: {where} is a file, so the folder cannot be made")
    why = _writable_folder(where)
    if why is not None:
        raise OutputError(
            f"{opt} {path}: cannot write into {where} ({why}); choose a folder you can write to"
        )


def check_outputs(outputs, inputs=(), *, force: bool = False) -> None:
    """Refuse, before any work, outputs that would lose data or cannot be written.

    ``outputs``: :class:`Output` entries (``None`` entries and ``None`` paths are skipped);
    ``inputs``: paths the command reads. Raises :class:`~latentfit.errors.OutputError` when an
    output is an input (whatever ``force`` says), two outputs are the same file (a folder's
    ``replaces`` and ``holds`` count as its files) or one's file is another's folder, a file output
    exists and ``force`` is false, a file output is a folder (or a folder output a file), or
    its folder is missing or cannot be written to, or it exists and is not a regular file
    (a device, named pipe or socket: the rename that ends a write would replace it).
    """
    outputs = [o for o in outputs if o is not None and o.path is not None]
    inputs = [Path(p) for p in inputs if p is not None]
    for out in outputs:
        for src in inputs:
            for target in out.files():
                if _same(target, src):
                    raise OutputError(
                        f"{out.option} {out.path} is the input {src}: writing it would destroy "
                        "the data; choose another name"
                    )
    for i, a in enumerate(outputs):
        for b in outputs[i + 1 :]:
            if a.folder != b.folder and _same(a.path, b.path):
                raise OutputError(
                    f"{a.option} and {b.option} both name {a.path}, one as a file and one as "
                    "a folder; give them different paths"
                )
            for path in a.files():
                if any(_same(path, other) for other in b.files()):
                    raise OutputError(
                        f"{a.option} and {b.option} both name {path}; give them different files"
                    )
    for out in outputs:
        (_check_folder if out.folder else _check_file)(out, force)
