"""glibc malloc settings for CPU training, and handing the freed heap back between runs."""

from __future__ import annotations

import ctypes
import functools
from typing import Optional


@functools.cache
def _glibc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return None


def keep_freed_memory_mapped() -> None:
    """On glibc, keep freed blocks mapped instead of returning them to the OS. On CPU every step
    allocates and frees logits of batch x block x vocab floats (hundreds of MB); by default each is
    a fresh mmap the kernel must zero again, which took ~40% of a CPU step (bench/README.md)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks up to 1 GiB from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap


def release_freed_memory() -> None:
    """Give the freed heap back to the OS (glibc's malloc_trim), for a process that runs one
    training after another (a sweep's trials): the heap kept mapped during a run otherwise
    fragments and the process grows by a logits buffer every few runs."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
