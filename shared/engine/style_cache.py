"""A small process-wide LRU cache of style targets.

A render farm sees the same style images again and again; their VGG targets (Gram matrices
for Gatys, channel mean/std for AdaIN) depend only on the style bytes and on how they were
computed, so a worker computes them once. Keys are built by the caller from everything the
target depends on, typically::

    ("gram", style_sha256, (w, h), layers, vgg_weights, dtype, device, mask_sha256, prep)

Values are tensors or (nested) dicts/lists/tuples of tensors, detached; the cache is bounded
both by number of entries and by the bytes of the tensors it holds. Thread-safe; when two
threads miss the same key at once both compute and the last one stores (targets are
deterministic, so either result is right).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")

DEFAULT_MAX_ENTRIES = 64
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data`` (the style part of a cache key)."""
    return hashlib.sha256(data).hexdigest()


def tensor_bytes(value: Any) -> int:
    """Bytes held by the tensors inside ``value`` (tensors, dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    return value


def _freeze(part: Any) -> Hashable:
    """Turn key parts (lists, dicts, dtypes, devices) into a hashable, comparable key."""
    if isinstance(part, (list, tuple)):
        return tuple(_freeze(p) for p in part)
    if isinstance(part, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in part.items()))
    if isinstance(part, (torch.dtype, torch.device)):
        return str(part)
    if isinstance(part, (str, int, float, bool, bytes)) or part is None:
        return part
    return repr(part)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0


class StyleCache:
    """LRU of computed style targets, bounded by entries and by tensor bytes."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get_or_compute(self, key_parts: Iterable[Any], fn: Callable[[], T]) -> T:
        """The cached value for ``key_parts``, or ``fn()`` computed (without grad) and stored."""
        key = _freeze(tuple(key_parts))
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self._hits += 1
                return item[0]
            self._misses += 1
        with torch.no_grad():
            value = _detach(fn())
        self._put(key, value)
        return value

    def _put(self, key: Hashable, value: Any) -> None:
        size = tensor_bytes(value)
        if size > self.max_bytes:
            return  # too big to keep; the caller still gets it
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
                self._evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self._hits = self._misses = self._evictions = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, len(self._items), self._bytes)


_CACHE = StyleCache()


def style_cache() -> StyleCache:
    """The process-wide cache."""
    return _CACHE


def get_or_compute(key_parts: Iterable[Any], fn: Callable[[], T]) -> T:
    """``style_cache().get_or_compute``: the one call most callers need."""
    return _CACHE.get_or_compute(key_parts, fn)


__all__ = ["CacheStats", "StyleCache", "get_or_compute", "sha256_bytes", "style_cache", "tensor_bytes"]
