"""The workspace as a pod sees it: a path on this machine, re-rooted at the PVC's mount path.

A pod (a KFP task, a Katib trial) has only its image's file system and the
volumes mounted into it. The workspace PVC is mounted at one path in every pod
(``/workspace`` by default), so a path computed on the submitting machine — a
laptop's ``/tmp/ws/results/…`` — means nothing there. :class:`WorkspaceMount`
turns such a path into the pod's view: workspace-relative, re-rooted at the
mount path. A path outside the workspace cannot be reached from a pod at all
and is refused with a one-line error, before anything is submitted.

Inside a pod the workspace *is* the mount path, and the mapping is the identity.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from automl_deft.errors import UserError

DEFAULT_MOUNT_PATH = "/workspace"
"""Where the workspace PVC is mounted in every pod unless configured otherwise."""

SHELL_SAFE = re.compile(r"[A-Za-z0-9_./:=@%+,-]+")
"""Characters a POSIX shell takes literally in a word (no quoting needed)."""


def shell_safe(word: str) -> bool:
    """True when ``word`` needs no quoting in ``sh -c`` (Katib joins the trial's command
    and arguments with spaces and runs them that way)."""
    return bool(SHELL_SAFE.fullmatch(word))


@dataclass(frozen=True)
class WorkspaceMount:
    """The workspace root on this machine and the path pods mount it at.

    Attributes:
        host_root: the workspace root here (resolved).
        mount_path: the PVC's mount path in the pods (absolute, POSIX).
    """

    host_root: Path
    mount_path: PurePosixPath

    @classmethod
    def of(
        cls, host_root: str | os.PathLike[str], mount_path: str = DEFAULT_MOUNT_PATH
    ) -> WorkspaceMount:
        """A mount for the workspace at ``host_root``; ``mount_path`` must be absolute."""
        mount = PurePosixPath(mount_path)
        if not mount.is_absolute() or ".." in mount.parts:
            raise UserError(
                f"mount path {mount_path!r} must be an absolute path without '..', e.g. /workspace"
            )
        return cls(host_root=Path(host_root).resolve(), mount_path=mount)

    def to_pod(self, path: str | os.PathLike[str], *, what: str) -> str:
        """``path`` as the pods see it.

        Raises:
            UserError: ``path`` lies outside the workspace (no pod can reach it), or
                a relative path was given (its meaning depends on a working directory).
        """
        given = Path(path)
        if not given.is_absolute():
            raise UserError(f"{what} {path!s} is relative; pass an absolute path in the workspace")
        resolved = given.resolve()
        try:
            rel = resolved.relative_to(self.host_root)
        except ValueError:
            raise UserError(
                f"{what} {path!s} is outside the workspace {self.host_root}: pods only see the "
                f"workspace volume (at {self.mount_path}); move it into the workspace"
            ) from None
        return (self.mount_path / PurePosixPath(*rel.parts)).as_posix()

    def to_pod_word(self, path: str | os.PathLike[str], *, what: str) -> str:
        """:meth:`to_pod`, also checked to be one shell word (for a trial's command line)."""
        pod = self.to_pod(path, what=what)
        if not shell_safe(pod):
            raise UserError(
                f"{what} {pod!r} has a space or a shell metacharacter, which Katib's sh -c "
                "wrapper would split; use letters, digits, '.', '_', '-' and '/' in its name"
            )
        return pod


__all__ = ["DEFAULT_MOUNT_PATH", "SHELL_SAFE", "WorkspaceMount", "shell_safe"]
