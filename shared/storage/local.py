"""``LocalStorage``: keys map to files under a folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import NotFound, StorageUnavailable
from shared.storage.keys import TMP_PREFIX, check_key

# --- local folder ----------------------------------------------------------------------


class LocalStorage:
    """Keys map to files under ``root``; writes are atomic (temp file + ``os.replace``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:  # belt and braces on top of check_key
            raise ValueError(f"invalid storage key {key!r}")
        return path

    @contextmanager
    def _atomic_target(self, key: str) -> Iterator[Path]:
        final = self._path(key)
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
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"No stored object {key!r}.", key=key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        # Walk only the folder the prefix names (its part up to the last '/').
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        keys = []
        for dirpath, dirs, files in os.walk(start):
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
        if not source.is_file():
            raise NotFound(f"No stored object {key!r}.", key=key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{TMP_PREFIX}{target.name}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target

    def upload_file(self, path: str | Path, key: str, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as tmp:
            shutil.copyfile(path, tmp)

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"Local storage {self.root} is not writable.")
