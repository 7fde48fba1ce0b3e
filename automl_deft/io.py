"""Atomic file writes: write a temp file beside the target, fsync, rename.

A reader never sees a half-written file, and a killed writer leaves the old
file (or none) in place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from automl_deft.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed onto ``path``.

    An ``OSError`` that names no file, or only the temporary one (a full disk, a
    read-only folder), is re-raised naming ``path``, and so is a writer's
    ``RuntimeError`` when the disk is full (as ``ENOSPC``: ``torch.save`` hides it).
    An existing directory at ``path`` is refused before anything is written
    (``IsADirectoryError``).
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        _blame(exc, target)
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode a plain open() would (shared volumes).
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        _blame(exc, target)
        raise
    except RuntimeError as exc:
        # A writer that hides the OS error (torch.save's "unexpected pos") on a full disk.
        if _disk_full(target.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _blame(exc: OSError, target: Path) -> None:
    """Make ``exc`` name ``target`` where it names no file or a temporary file of it
    (only the file system's errors: one without an errno is a library's message)."""
    temp_prefix = str(target.parent / f".{target.name}.")
    if exc.errno is None:
        return
    name = exc.filename
    if name is None or (
        isinstance(name, str | bytes | os.PathLike) and os.fsdecode(name).startswith(temp_prefix)
    ):
        exc.filename = str(target)
        exc.filename2 = None


FULL_BELOW_BYTES = 1024**2
"""A file system with less free space than this counts as full (see :func:`atomic_path`)."""


def _disk_full(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < FULL_BELOW_BYTES


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], writer: Callable[[IO[Any]], None], *, binary: bool = False
) -> None:
    """Call ``writer(fh)`` on a temp file and atomically move it onto ``path``."""
    mode, encoding = ("wb", None) if binary else ("w", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as fh:
        writer(fh)


def atomic_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy ``src`` onto ``dest`` atomically (a reader never sees a half-copied file)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically replace ``path`` with ``text``."""

    def write(fh: IO[Any]) -> None:
        fh.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically replace ``path`` with ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_csv(path: str | os.PathLike[str], frame: Any) -> None:
    """Atomically write a pandas DataFrame as CSV (no index, ``\\n`` line ends)."""
    atomic_write(path, lambda fh: frame.to_csv(fh, index=False, lineterminator="\n"))


def refuse_directory(
    path: str | os.PathLike[str] | None, what: str, *, example: str | None = None
) -> None:
    """Refuse an output *file* path that is an existing directory, before any work.

    Raises:
        UserError: ``path`` is a directory (None passes: nothing will be written).
    """
    if path is not None and Path(path).is_dir():
        hint = f", e.g. {Path(path) / example}" if example else ""
        raise UserError(f"{what} {path} is a directory; give a file path{hint}")


@contextlib.contextmanager
def exclusive_lock(
    path: str | os.PathLike[str], busy: Callable[[str], Exception]
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the duration (the holder's pid inside).

    ``flock`` is released by the kernel when the process dies, so a killed holder
    never leaves a stale lock behind.

    Raises:
        the exception ``busy(pid_of_holder)`` when another process holds the lock.
    """
    import fcntl

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fh = open(target, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise busy(fh.read().strip() or "?") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()
