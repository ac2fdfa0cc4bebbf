"""The worker's on-disk caches of stored files, each within a disk budget.

Every file is downloaded once per machine, verified, and published atomically (built in a
temp file or folder, then ``os.replace``), so concurrent jobs and worker processes never
see half of one, and a failed build leaves nothing behind.

* ``cached_download``: a model file, keyed by its checksum
  (``Settings.model_cache_budget_bytes``).
* ``sync_prefix_cached``: the images directly under a storage prefix (a ``prefix:NAME``
  dataset), keyed by a hash of the key list.
* ``extract_archive_cached``: an uploaded zip / tar of images, extracted into a flat
  folder keyed by the archive's sha256 through ``shared.archives`` under the same caps as
  the API's upload check (members, uncompressed bytes, pixels), counted while streaming.

Both dataset kinds share ``Settings.dataset_cache_budget_bytes``.

``DiskCache`` keeps one folder within its budget: before an entry is added the least
recently used ones are deleted (a use touches the entry's mtime) until the newcomer fits,
and again after it was added (its real size may exceed the hint). A job holds every entry
it uses (a shared ``flock`` on ``.locks/<name>.lock``, released when the job's
``ExitStack`` closes or its process dies); eviction takes the lock exclusively without
waiting and skips what it cannot take, so an entry in use is never deleted. An evicted
entry is first renamed to a hidden name, then deleted, so no reader sees half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.archives import ArchiveLimits, no_images_error, scan_archive
from shared.checksums import sha256_file
from shared.errors import InvalidSpec, ModelUnavailable
from shared.imaging import IMAGE_SUFFIXES
from shared.jobs.specs import prefix_dataset_images
from shared.storage import Storage

log = logging.getLogger("stylefarm.worker")

LOCKS_DIR = ".locks"
STALE_TEMP_S = 6 * 3600  # a hidden temp entry untouched this long belongs to a dead process


def disk_usage(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 when it vanished meanwhile)."""
    try:
        if not path.is_dir():
            return path.stat().st_size
        total = 0
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(dirpath, name)).st_size
        return total
    except OSError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass(frozen=True)
class CacheEntry:
    name: str
    used: float  # mtime: the last use
    size: int


class DiskCache:
    """Entries (files or folders, named by content) under ``root``, at most ``budget_bytes``
    in all, evicted least recently used; see the module docstring."""

    def __init__(self, root: Path, budget_bytes: int) -> None:
        self.root = Path(root)
        self.budget_bytes = budget_bytes

    def _lock(self, name: str) -> int:
        locks = self.root / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True)
        return os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)

    def hold(self, name: str, holds: contextlib.ExitStack) -> None:
        """Keep ``name`` from eviction until ``holds`` closes (waits while it is being evicted)."""
        fd = self._lock(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            os.close(fd)
            raise
        holds.callback(os.close, fd)  # closing the descriptor releases the lock

    def entries(self) -> list[CacheEntry]:
        """The published entries, least recently used first (hidden temp names skipped)."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for child in self.root.iterdir():
                if child.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    out.append(CacheEntry(child.name, child.stat().st_mtime, disk_usage(child)))
        return sorted(out, key=lambda e: (e.used, e.name))

    def evict(self, name: str) -> bool:
        """Delete entry ``name`` unless a job holds it; True when it is gone."""
        fd = self._lock(name)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            doomed = self.root / f".evicted-{name}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.replace(self.root / name, doomed)
            except FileNotFoundError:
                return True
        finally:
            os.close(fd)
        _remove(doomed)  # already out of sight: no need to keep others waiting
        return True

    def make_room(self, incoming: int = 0) -> int:
        """Evict least recently used entries until they and ``incoming`` bytes fit the
        budget; returns the bytes the entries use afterwards."""
        self._remove_stale_temps()
        entries = self.entries()
        total = sum(e.size for e in entries)
        for entry in entries:
            if total + incoming <= self.budget_bytes:
                break
            if self.evict(entry.name):
                total -= entry.size
                log.info("cache %s: evicted %s (%d bytes)", self.root.name, entry.name, entry.size)
        if total + incoming > self.budget_bytes:
            log.warning("cache %s: %d bytes in use by running jobs exceed the budget of %d",
                        self.root.name, total + incoming, self.budget_bytes)
        return total

    def _remove_stale_temps(self) -> None:
        cutoff = time.time() - STALE_TEMP_S
        with contextlib.suppress(FileNotFoundError):
            for child in self.root.iterdir():
                if child.name.startswith(".") and child.name != LOCKS_DIR:
                    with contextlib.suppress(FileNotFoundError):
                        if child.stat().st_mtime < cutoff:
                            _remove(child)

    def get(self, name: str, build: Callable[[Path], None], holds: contextlib.ExitStack, size_hint: int = 0) -> Path:
        """``root/name``, held until ``holds`` closes; ``build(path)`` publishes it there
        atomically when it is missing, after room was made for ``size_hint`` bytes."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.hold(name, holds)
        path = self.root / name
        if not path.exists():
            self.make_room(size_hint)
            build(path)
        with contextlib.suppress(OSError):
            os.utime(path)  # the use that keeps it off the eviction list longest
        self.make_room()
        return path


def _publish(built: Path, final: Path) -> None:
    """Move a finished temp folder to ``final``; a concurrent builder that got there first wins."""
    try:
        os.replace(built, final)
    except OSError:
        if not final.is_dir():
            raise


def cached_download(
    storage: Storage, key: str, checksum: str, cache: DiskCache, holds: contextlib.ExitStack,
    suffix: str = "", size_hint: int = 0,
) -> Path:
    """``cache/<checksum><suffix>``, downloading ``key`` once; verified, atomic, held."""
    name = f"{checksum or hashlib.sha256(key.encode()).hexdigest()}{suffix}"

    def build(target: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=cache.root, prefix=".dl-", suffix=suffix)
        os.close(fd)
        try:
            storage.download_to(key, tmp)
            got = sha256_file(Path(tmp))
            if checksum and len(checksum) == 64 and got != checksum:
                raise ModelUnavailable(
                    f"model file {key} is corrupt (checksum {got[:12]}..., expected {checksum[:12]}...)"
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    return cache.get(name, build, holds, size_hint)


def sync_prefix_cached(storage: Storage, prefix: str, cache: DiskCache, holds: contextlib.ExitStack) -> Path:
    """Download the image objects directly under ``prefix`` into ``cache/prefix-<hash>`` once.

    The folder is keyed by a hash of the prefix and the sorted list of keys: objects are
    taken as immutable, so a dataset that gains or loses files gets a new folder, while a
    file changed in place under the same key is not noticed (put a new version under a new
    name).
    """
    keys = prefix_dataset_images(storage.list(prefix), prefix)
    if not keys:
        raise InvalidSpec(f"dataset prefix {prefix}: no images directly under it ({', '.join(IMAGE_SUFFIXES)})")
    digest = hashlib.sha256("\n".join([prefix, *keys]).encode()).hexdigest()

    def build(final: Path) -> None:
        work = Path(tempfile.mkdtemp(dir=cache.root, prefix=".sync-"))
        try:
            for n, key in enumerate(keys, 1):
                storage.download_to(key, work / f"{n:06d}{Path(key).suffix.lower()}")
            _publish(work, final)
            log.info("dataset %s synced: %d images", prefix, len(keys))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return cache.get(f"prefix-{digest}", build, holds)


def extract_archive_cached(
    storage: Storage, key: str, sha256: str, cache: DiskCache, holds: contextlib.ExitStack,
    limits: ArchiveLimits, size_hint: int = 0,
) -> Path:
    """Download an archive of images and extract its images into ``cache/<sha256>`` (flat:
    ``000001.png``, ... in archive order), once. The caps in ``limits`` are checked while
    decompressing; whatever fails leaves nothing behind."""

    def build(final: Path) -> None:
        work = Path(tempfile.mkdtemp(dir=cache.root, prefix=".extract-"))
        try:
            archive, flat = work / "archive", work / "flat"
            storage.download_to(key, archive)
            flat.mkdir()
            with open(archive, "rb") as fh:
                summary = scan_archive(fh, limits, keep_images_in=flat)
            if summary is None:
                raise InvalidSpec(f"dataset {sha256[:12]}... is neither a zip nor a tar archive")
            if summary.images == 0:
                raise InvalidSpec(no_images_error(f"dataset {sha256[:12]}...").detail)
            _publish(flat, final)
            log.info("dataset %s extracted: %d images, %d bytes", sha256[:12], summary.images, summary.bytes)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return cache.get(sha256, build, holds, size_hint)
