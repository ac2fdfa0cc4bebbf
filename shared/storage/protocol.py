"""The ``Storage`` protocol: what API and worker need from blob storage."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Protocol, runtime_checkable

from shared.errors import StorageUnavailable
from shared.storage.keys import probe_key


@runtime_checkable
class Storage(Protocol):
    """What API and worker need from blob storage."""

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "", limit: int | None = None) -> list[str]: ...
    def presigned_url(self, key: str, expires_s: int) -> str | None: ...
    def download_to(self, key: str, path: str | Path) -> Path: ...
    def upload_file(self, path: str | Path, key: str, content_type: str = "application/octet-stream") -> None: ...
    def ping(self) -> None: ...
    def probe(self) -> None:
        """Write, read back and delete a small object under a reserved key; raises
        ``StorageUnavailable`` when the store cannot do all three."""
        ...


def probe_round_trip(storage: Storage, what: str) -> None:
    """``Storage.probe`` of either backend: put a few random bytes under a fresh
    ``probe_key()``, read them back, delete them; ``what`` names the store in the error."""
    key, payload = probe_key(), secrets.token_bytes(16)
    storage.put_bytes(key, payload)
    try:
        if storage.get_bytes(key) != payload:
            raise StorageUnavailable(f"{what} returned other bytes than it was given; check it.")
    finally:
        storage.delete(key)
