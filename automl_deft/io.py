"""Atomic file writes: write a temp file beside the target, fsync, rename.

A reader never sees a half-written file, and a killed writer leaves the old
file (or none) in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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
    finally:
        tmp.unlink(missing_ok=True)


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
