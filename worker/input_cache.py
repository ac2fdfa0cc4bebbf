"""The worker process's memory cache of uploaded inputs' bytes, within a byte budget.

An input is stored under a key named by its content (the tenant and the sha256 of its
bytes, ``shared.jobs.inputs``), so the bytes under a key never change, and a cached copy is
always the right one. What the cache saves is the storage ``GET`` of a photo that the
process's last jobs already read: one photo tried in several styles, a batch of
fan-out pieces of one image, a client re-running a job. It never decides whether a job may
use an input: the job's SQL lookup of the tenant's input row (``inputs.get_input``) runs
every time, so a deleted input or another tenant's id is refused as before, and only then
is the row's key looked up here.

Least recently used entries are evicted to stay within ``Settings.input_cache_bytes``
(0 turns the cache off); an input larger than a quarter of the budget is not kept, so one
large upload does not flush every small one. Each Celery pool process has its own cache
(nothing is shared across a fork); its lock makes it safe for a job's threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class InputBytesCache:
    """Bytes by storage key, least recently used evicted beyond ``budget_bytes``."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def get_or_fetch(self, key: str, fetch: Callable[[str], bytes]) -> tuple[bytes, bool]:
        """``(bytes, True)`` from memory, else ``(fetch(key), False)`` (kept when they fit the
        budget).

        The fetch runs outside the lock: two threads missing the same key both fetch it,
        which is correct (same bytes) and rarer than a lock held across a download."""
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return data, True
            self.misses += 1
        data = fetch(key)
        self._put(key, data)
        return data, False

    def _put(self, key: str, data: bytes) -> None:
        if len(data) * 4 > self.budget_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = data
            self._size += len(data)
            while self._size > self.budget_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)


_cache: InputBytesCache | None = None
_cache_lock = threading.Lock()


def process_cache(budget_bytes: int) -> InputBytesCache:
    """This process's cache (made on first use with ``budget_bytes``; a new budget replaces it)."""
    global _cache
    with _cache_lock:
        if _cache is None or _cache.budget_bytes != budget_bytes:
            _cache = InputBytesCache(budget_bytes)
        return _cache


__all__ = ["InputBytesCache", "process_cache"]
