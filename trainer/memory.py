"""glibc malloc settings for CPU training, handing the freed heap back between runs, and what to
do when a run does not fit in memory."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
from typing import Optional

import torch


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


# What PyTorch's CPU allocator raises (a plain RuntimeError) when the OS refuses memory; CUDA's
# allocator raises torch.OutOfMemoryError.
CPU_ALLOCATION_FAILED = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the device running out of memory (CUDA's allocator, or the CPU's)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and CPU_ALLOCATION_FAILED in str(exc))


def halved_micro_batch(cfg):
    """`cfg` at half the micro-batch with twice the gradient accumulation: the same tokens per
    iteration, so the same training and comparable losses, at about half the activation memory;
    None when the micro-batch is 1 or odd (halving it would change the tokens per iteration)."""
    if cfg.batch_size < 2 or cfg.batch_size % 2:
        return None
    return dataclasses.replace(cfg, batch_size=cfg.batch_size // 2,
                               gradient_accumulation_steps=cfg.gradient_accumulation_steps * 2)
