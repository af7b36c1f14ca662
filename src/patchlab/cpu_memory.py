"""Keep large CPU tensors' memory in the process between forward passes (glibc only).

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a
fresh `mmap` and returns it with `munmap` on free. A batched forward of the default
model allocates activation maps of hundreds of MiB, so every pass faults in every
page again: on the 2-core CPU half of the evaluation's CPU time was kernel time
(page faults). Raising the mmap (1 GiB) and trim (1 GiB) thresholds makes freed
blocks stay on the heap and be reused: the float32 forward at batch 128 went from 57.6 to 131.3
images/s (`experiments/bench_forward.py`). The price is that the process keeps its
peak memory until it exits.

Set PATCHLAB_KEEP_FREED_MEMORY=0 to leave malloc as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # up to 1 GiB of free heap is kept, not given back (both fit a C int)
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are set
    (False on other C libraries or platforms, or when PATCHLAB_KEEP_FREED_MEMORY=0)."""
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux") and os.environ.get("PATCHLAB_KEEP_FREED_MEMORY", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # musl or another libc without mallopt
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            # mallopt returns 0 when a glibc refuses a value (some cap the mmap threshold at 32 MiB)
            _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
