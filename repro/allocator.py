"""glibc malloc settings for the training process: keep freed tensor memory for reuse instead of returning it.

With glibc's defaults the allocator's mmap threshold adapts upwards and freed heap memory above 128 KiB is trimmed back
to the system, so a CPU training step's activation and gradient buffers (hundreds of KiB to a few MiB each) are
returned and re-faulted every step: 20-35 % of a MNIST CNN step was system time in page faults. Fixing the mmap
threshold at 32 MiB (glibc's maximum on 64-bit) and the trim threshold at 1 GiB keeps them in the heap. Measured with
`repro bench --workloads mnist --variants nsgan --threads 1`, alternating settings, under a load of 2.9-3.1 on 2 cores:
445-466 ms per iteration with glibc's defaults, 335-345 ms with both set (system time 2.4-2.6 s -> 0.9 s per bench
process); the trim threshold alone was 1.8x slower (it also freezes the mmap threshold at 128 KiB) and the mmap
threshold alone changed nothing. The cost: up to 1 GiB of freed memory stays mapped to the process.
``REPRO_MALLOC=default`` leaves glibc's settings alone; elsewhere than glibc this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: larger values are refused
TRIM_THRESHOLD = 1024 * 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring); True if both were set."""
    if os.environ.get("REPRO_MALLOC", "") == "default":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
