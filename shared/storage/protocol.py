"""The ``Storage`` protocol: what API and worker need from blob storage."""


from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable


if TYPE_CHECKING:
    pass

# --- the protocol ----------------------------------------------------------------------


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


