"""Host memory policy of an engine process: keep freed tensor memory for the next layer.

A CPU forward allocates a fresh activation per layer (16 MB for 32 x 512 x 512 bf16, 64 MB at
1024 px) and frees it a layer later. glibc's malloc serves blocks above its mmap threshold
(128 KiB, rising with use to at most 32 MiB) with a fresh ``mmap`` and returns them with
``munmap``, and trims freed memory at the top of the heap above 128 KiB: either way the next
layer's buffer is new pages, and the kernel zero-fills each 4 KiB page on its first write.
Measured on this project's CPU machine (``bench/fast_peak.py``, one thread, bf16): the 512 px
``fast`` forward took ~9,000 minor page faults and 103-110 ms; with the policy below, 0 faults
and 82-85 ms; at 1024 px 62,000 faults and 431 ms -> 1,300 and 334 ms. The time went to the
memory-bound passes (norm, padding copies), which had been writing into unfaulted pages.

``keep_freed_memory`` sets two ``mallopt`` parameters, once per process:

- ``M_MMAP_THRESHOLD`` = ``KEEP_BYTES``: blocks up to 1 GiB come from the heap, whose freed
  blocks are reused by the next allocation of a similar size;
- ``M_TRIM_THRESHOLD`` = ``KEEP_BYTES``: the heap is returned to the OS only when more than
  1 GiB is free at its top, so a process keeps at most that much idle memory beyond what it
  uses (its high-water mark, which a worker's memory limit must cover anyway, is unchanged:
  ``bench/memory.py``).

Setting explicit values also turns off glibc's dynamic threshold. Only glibc (Linux) has these
knobs; elsewhere (musl, macOS) the call does nothing and says so. GPU workers do their tensor
work in CUDA's caching allocator, which already keeps freed blocks; the policy is applied where
the engine computes on the CPU (``shared.engine.device.pick_device``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

log = logging.getLogger("stylefarm.engine")

#: Largest block served from the heap, and the free memory at the heap's top kept for reuse.
KEEP_BYTES = 1 << 30

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Apply the policy above once per process; True when glibc accepted both settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
    if not ok:
        log.info("malloc kept its defaults (mallopt refused): freed tensor memory goes back to the OS")
    return ok
