"""Host memory policy of an engine process: keep freed tensor memory for the next layer.

A CPU forward allocates a fresh activation per layer (16 MB for 32 x 512 x 512 bf16) and frees
it a layer later. glibc's malloc serves blocks above its mmap threshold with a fresh ``mmap``
and returns them with ``munmap``; the threshold starts at 128 KiB and follows the largest block
freed so far (up to 32 MiB), and the heap is trimmed whenever more than twice that is free at
its top. In a worker that only runs bf16 ``fast`` jobs both keep happening: every layer's
buffer is new pages, which the kernel zero-fills on their first write. Measured on this
project's CPU machine (one thread, a process running only the 512 px bf16 ``fast`` forward):
~8,900 minor page faults and 94-96 ms per forward with glibc's defaults; 0-30 faults and
73-75 ms with the policy below. The time had gone to the memory-bound passes (norm, padding).

``keep_freed_memory`` fixes two ``mallopt`` parameters, once per process:

- ``M_MMAP_THRESHOLD`` = ``MMAP_THRESHOLD_BYTES`` (32 MiB, the ceiling glibc's own adaptation
  stops at): blocks up to it come from the heap, where the next layer reuses them;
- ``M_TRIM_THRESHOLD`` = ``TRIM_THRESHOLD_BYTES`` (256 MiB): a heap goes back to the OS only
  when more than that is free at its top, so the engine's thread keeps at most that much idle
  memory (each malloc arena trims by itself: a process whose other threads allocate large
  blocks too may keep that much per arena).

Larger blocks (a 1024 px ``fast`` layer: 64 MB; VGG's fp32 activations at 512 px and up, which
Gatys' autograd keeps by the dozen) are still mapped and unmapped per use. A 1 GiB threshold
served those from the heap too, but fragmented it: ``bench/memory.py`` measured ``optimize``
and ``masked`` peaks 30-35 % higher (768 px ``optimize``: 3.0 GB instead of 2.3 GB); with
32 MiB they stay within 1 % of glibc's defaults.

Only glibc (Linux) has these knobs; elsewhere (musl, macOS) the call does nothing and says so.
GPU workers do their tensor work in CUDA's caching allocator, which already keeps freed blocks;
the policy is applied where the engine computes on the CPU (``shared.engine.device.pick_device``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

log = logging.getLogger("stylefarm.engine")

#: Largest block served from the heap (larger ones are mapped per use, as glibc does).
MMAP_THRESHOLD_BYTES = 32 << 20
#: Free memory at the heap's top kept for reuse before it is returned to the OS.
TRIM_THRESHOLD_BYTES = 256 << 20

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
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    ok = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and ok
    if not ok:
        log.info("malloc kept its defaults (mallopt refused): freed tensor memory goes back to the OS")
    return ok
