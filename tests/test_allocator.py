"""The allocator tuning is a real call into glibc, once per process, and changes no result."""

from __future__ import annotations

import subprocess
import sys


def test_keep_freed_memory_tunes_glibc_once_and_is_idempotent() -> None:
    code = (
        "import platform; from automl_deft.model.allocator import keep_freed_memory as k;"
        "first = k(); print(first, k() is first, platform.libc_ver()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    tuned, same, libc = out[0] == "True", out[1] == "True", (out[2:] or [""])[0]
    assert same
    assert tuned == (libc == "glibc"), (tuned, libc)
