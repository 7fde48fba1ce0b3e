"""The project's exception root.

Every error the project raises on purpose derives from :class:`AutomlDeftError`.
:class:`UserError` subclasses describe something the user can fix (bad input,
bad config, a corrupt checkpoint); the CLI prints them as one line on stderr and
exits with status 2. :class:`InfrastructureError` is for failures outside the
user's control (a cluster API that keeps failing); the CLI exits with status 3.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_INFRA_ERROR = 3
EXIT_KPI_MISSED = 3
"""``--target`` / ``--fail-on-kpi-miss``: the run worked, the model missed the KPI target
(2 stays "bad input"; a CI or GitOps gate tests for 3)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): what a
    one-line error quotes of a library's exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class AutomlDeftError(Exception):
    """Root of every exception this project raises on purpose."""

    exit_code: int = EXIT_INFRA_ERROR


class UserError(AutomlDeftError):
    """Something the user can fix; the message says what and how."""

    exit_code = EXIT_USER_ERROR


class WorkspaceError(UserError):
    """The workspace (CSVs, images, layout) is invalid.

    Carries every problem found, one line each, so a user fixes them in one go.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SpecError(UserError):
    """A training spec or config file is invalid (unknown key, wrong type)."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


class KPIError(UserError):
    """Scores or labels cannot be judged (NaN scores, no PASS rows, bad target)."""


class StageError(UserError):
    """A DEFT loop stage cannot go on (no route for any weak sample, an SDG command
    that failed, leakage in an assembled set); the loop hard-stops with this message."""


class InfrastructureError(AutomlDeftError):
    """Something outside the user's control failed."""
