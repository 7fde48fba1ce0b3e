"""Keep freed tensor memory in the process instead of handing it back to the kernel.

On Linux, glibc serves blocks above ``M_MMAP_THRESHOLD`` (128 KiB at start, raised
as the process frees) with fresh ``mmap`` pages and returns them on free: every
training step's activations then cost page faults, zeroed pages and ``munmap``s.
On the CPU this was most of the system time of a colour SMT training (10 steps of
batch 16 at 3x128x128: 8.35 s with 6.8 s of it in the kernel, 2.87 M minor page
faults; 4.57 s and 0.94 M with :func:`keep_freed_memory`; 2 idle CPU cores,
``make bench`` measures the trainer end to end).
Raising the mmap threshold to its 32 MiB ceiling and the trim threshold to 1 GiB
keeps those blocks for reuse; the memory stays in the process (at most what a step
used). A no-op where glibc's ``mallopt`` is not there (macOS, musl, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""glibc's ceiling for ``M_MMAP_THRESHOLD`` on 64-bit systems."""
TRIM_THRESHOLD_BYTES = 1024**3


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's allocator once per process; True when it was tuned."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    log.debug("glibc mallopt (mmap threshold 32 MiB, trim 1 GiB): %s", ok)
    return ok


__all__ = ["keep_freed_memory"]
