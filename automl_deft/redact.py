"""Mask credential values in text the project stores or prints.

Output of a subprocess (an SDG command, a KFP task, a Katib trial's message) can hold
the value of a credential it was given, e.g. a generator that echoes ``$HF_TOKEN`` in
an error. Before such text goes into an error line, a log, ``deft_state.json`` or a
report, :func:`redact` replaces the value of every credential variable
(:data:`automl_deft.credentials.CREDENTIALS`) and of any variable the config marks
secret (``sdg.options.secret_env``) with ``***``::

    redact("token hf_abc123", extra_names=["MY_API_KEY"])  # "token ***"

The names are never masked, only values; values shorter than :data:`MIN_SECRET_CHARS`
are left alone (masking ``"1"`` would mask every digit).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from automl_deft.credentials import CREDENTIALS

__all__ = ["MASK", "MIN_SECRET_CHARS", "NOT_SECRET", "redact", "secret_values"]

MASK = "***"
MIN_SECRET_CHARS = 4
NOT_SECRET = frozenset({"KUBECONFIG"})
"""Credential variables whose value is a file path, not a secret (kept readable in errors)."""


def secret_values(
    extra_names: Iterable[str] = (), env: Mapping[str, str] | None = None
) -> list[str]:
    """The values to mask, longest first (so a value holding another is masked whole).

    Args:
        extra_names: more environment variables whose values are secret.
        env: the environment to read (default ``os.environ``).
    """
    env = os.environ if env is None else env
    names = [c.name for c in CREDENTIALS if c.name not in NOT_SECRET]
    names += [n for n in extra_names if n not in names]
    values = {env.get(n) or "" for n in names}
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(
    text: str, *, extra_names: Iterable[str] = (), env: Mapping[str, str] | None = None
) -> str:
    """``text`` with every secret value (see :func:`secret_values`) replaced by ``***``."""
    values = secret_values(extra_names, env)
    if not text or not values:
        return text
    return re.sub("|".join(re.escape(v) for v in values), MASK, text)
