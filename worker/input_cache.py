"""The worker process's memory cache of uploaded inputs' bytes, within a byte budget.

An input is stored under a key named by its content (the tenant and the sha256 of its
bytes, ``shared.jobs.inputs``), so the right bytes under a key never change. The cache keeps
a copy only after checking that its sha256 is the one the input's row names
(``InputBytesCache.read``): bytes damaged in storage are used once, as before, and not kept,
so a repaired object is read again. What the cache saves is the storage ``GET`` of a photo that the
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

import hashlib
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

    def get(self, key: str) -> bytes | None:
        """The kept bytes of ``key`` (now the most recently used), or None."""
        with self._lock:
            data = self._entries.get(key)
            if data is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return data

    def keeps(self, size: int) -> bool:
        """Whether an input of ``size`` bytes would be kept (at most a quarter of the budget)."""
        return size * 4 <= self.budget_bytes

    def read(self, key: str, sha256: str, fetch: Callable[[str], bytes]) -> tuple[bytes, bool]:
        """``(bytes, True)`` kept from an earlier read, else ``(fetch(key), False)``; fetched
        bytes are kept only when they hash to ``sha256`` (the input's row), so bytes damaged in
        storage are served as they are, once, and a repaired object is fetched again."""
        kept = self.get(key)
        if kept is not None:
            return kept, True
        data = fetch(key)
        if self.keeps(len(data)) and hashlib.sha256(data).hexdigest() == sha256:
            self.put(key, data)
        return data, False

    def put(self, key: str, data: bytes) -> None:
        """Keep ``data`` under ``key`` unless it is over a quarter of the budget, evicting the
        least recently used entries beyond the budget. Two threads that missed the same key
        both put it: the second replaces the first (the same bytes)."""
        if not self.keeps(len(data)):
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = data
            self._size += len(data)
            while self._size > self.budget_bytes and self._entries:
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
