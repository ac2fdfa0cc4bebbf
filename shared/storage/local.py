"""``LocalStorage``: keys map to files under a folder.

Errors: a missing key is ``NotFound``; every other ``OSError`` (read-only or full file
system, permissions, I/O errors, a storage root that is gone or is not a folder) is
``StorageUnavailable`` (retryable) whose detail names the operation and the errno, never a
path: problem details reach API clients and job rows.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import NotFound, StorageUnavailable
from shared.storage.keys import TMP_PREFIX, check_key
from shared.storage.protocol import probe_round_trip

log = logging.getLogger("stylefarm.storage")


def unavailable(operation: str, exc: OSError) -> StorageUnavailable:
    """``StorageUnavailable`` for an ``OSError`` of ``operation``, without the paths that
    ``str(exc)`` would show (the full error is logged)."""
    log.warning("local storage: %s failed: %s", operation, exc)
    code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    reason = os.strerror(exc.errno) if exc.errno else "I/O error"
    return StorageUnavailable(f"Local storage could not {operation} ({code}: {reason}); try again shortly.")


class LocalStorage:
    """Keys map to files under ``root``; writes are atomic (temp file + ``os.replace``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # reported by each operation (and /readyz) instead of at import
            log.warning("local storage root %s is not usable: %s", self.root, exc)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:  # belt and braces on top of check_key
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def _missing(self, key: str, operation: str) -> NotFound | StorageUnavailable:
        """``NotFound`` when the key is absent from a working root; ``StorageUnavailable``
        when the root itself is gone or is no folder (the whole store is missing)."""
        if self.root.is_dir():
            return NotFound(f"No stored object {key!r}.", key=key)
        return unavailable(operation, OSError(errno.ENOENT, os.strerror(errno.ENOENT)))

    @contextmanager
    def _errors(self, operation: str, key: str | None = None) -> Iterator[None]:
        """Map ``OSError`` to ``NotFound`` (``key`` given and the file is absent) or
        ``StorageUnavailable``."""
        try:
            yield
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            if key is None:
                raise unavailable(operation, exc) from None
            raise self._missing(key, operation) from None
        except OSError as exc:
            raise unavailable(operation, exc) from None

    @contextmanager
    def _atomic_target(self, key: str) -> Iterator[Path]:
        final = self._path(key)
        with self._errors(f"write {key!r}"):
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=final.parent)
            os.close(fd)
            try:
                yield Path(tmp)
                os.replace(tmp, final)  # readers see the old file or the new one, never half
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with self._errors(f"read {key!r}", key):
            return path.read_bytes()

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            with self._errors(f"look up {key!r}", key):
                return stat.S_ISREG(path.stat().st_mode)
        except NotFound:
            return False

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            with self._errors(f"delete {key!r}", key):
                path.unlink()
        except NotFound:
            pass

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        # Walk only the folder the prefix names (its part up to the last '/').
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root

        def walk_error(exc: OSError) -> None:
            if isinstance(exc, FileNotFoundError | NotADirectoryError) and self.root.is_dir():
                return  # the prefix's folder does not exist: nothing listed
            raise exc

        keys = []
        with self._errors(f"list {prefix!r}"):
            for dirpath, dirs, files in os.walk(start, onerror=walk_error):
                dirs.sort()
                for name in sorted(files):
                    if name.startswith(TMP_PREFIX):
                        continue
                    key = Path(dirpath, name).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
                        if limit is not None and len(keys) >= limit:
                            return sorted(keys)
        return sorted(keys)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None  # files are served by the API itself

    def download_to(self, key: str, path: str | Path) -> Path:
        source, target = self._path(key), Path(path)
        with self._errors(f"read {key!r}", key):
            if not source.is_file():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{TMP_PREFIX}{target.name}")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        return target

    def upload_file(self, path: str | Path, key: str, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as tmp:
            shutil.copyfile(path, tmp)

    def ping(self) -> None:
        """Cheap: the root is a folder (``probe`` writes and reads back)."""
        if not self.root.is_dir():
            raise unavailable("reach its root", OSError(errno.ENOENT, os.strerror(errno.ENOENT)))

    def probe(self) -> None:
        """Write, read back and delete a small object under a reserved key (``probe_key``):
        a read-only, full or vanished store raises ``StorageUnavailable``."""
        probe_round_trip(self, "Local storage")
