"""Blob storage for inputs, results, checkpoints and models: S3-compatible or a local folder.

Keys are deterministic and tenant-scoped (see the ``*_key`` helpers), so the same bytes
always land at the same place and retries overwrite instead of duplicating::

    tenants/<tenant>/inputs/<sha256>
    tenants/<tenant>/jobs/<job_id>/<name>                 results (e.g. result.png)
    tenants/<tenant>/jobs/<job_id>/checkpoint.pt          training checkpoints
    tenants/<tenant>/models/<model_id>/<name>             models a tenant trained
    global/models/<model_id>/<name>                       built-in models (tenant None)
    .../models/<model_id>/thumbnails/<style>.png

Errors: a missing key is ``NotFound``; connection failures and 5xx answers are
``StorageUnavailable`` (retryable). boto3 is imported lazily so LocalStorage users (and
the API's import time) do not pay for it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from shared.errors import NotFound, StorageUnavailable
from shared.tenants import check_tenant

if TYPE_CHECKING:
    from shared.settings import Settings

_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*$")
_TMP_PREFIX = ".tmp-"


def check_key(key: str) -> str:
    """Validate a storage key: ``/``-separated segments of ``[A-Za-z0-9._=+-]``, no empty,
    ``.`` or ``..`` segments, no leading dot (temp files), at most 1024 characters."""
    if not key or len(key) > 1024 or not all(_SEGMENT_RE.match(seg) for seg in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def _check_name(name: str) -> str:
    check_key(name)
    return name


# --- deterministic keys ----------------------------------------------------------------


def input_key(tenant: str, sha256: str) -> str:
    """Where an uploaded input lives: one object per (tenant, content hash)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"tenants/{check_tenant(tenant)}/inputs/{sha256}"


def result_key(tenant: str, job_id: str, name: str = "result.png") -> str:
    """A file a job produced (``result.png``, ``loss.png``, ...)."""
    return f"tenants/{check_tenant(tenant)}/jobs/{_check_name(job_id)}/{_check_name(name)}"


def checkpoint_key(tenant: str, job_id: str) -> str:
    """The (overwritten) latest checkpoint of a training job, for resuming after a retry."""
    return result_key(tenant, job_id, "checkpoint.pt")


def model_key(tenant: str | None, model_id: str, name: str = "model.pt") -> str:
    """A model file; ``tenant=None`` for global (built-in) models."""
    owner = "global" if tenant is None else f"tenants/{check_tenant(tenant)}"
    return f"{owner}/models/{_check_name(model_id)}/{_check_name(name)}"


def dataset_prefix(tenant: str, name: str) -> str:
    """Where a tenant's ``prefix:NAME`` dataset lives: every object directly under it."""
    return f"tenants/{check_tenant(tenant)}/datasets/{check_key(name.strip('/'))}/"


def thumbnail_key(tenant: str | None, model_id: str, style: int) -> str:
    """Preview image of one style of a model."""
    return model_key(tenant, model_id, f"thumbnails/{int(style)}.png")


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
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=final.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, final)  # readers see the old file or the new one, never half
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as tmp:
            with open(tmp, "wb") as fh:
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
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        # Walk only the folder the prefix names (its part up to the last '/').
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        keys = []
        for dirpath, dirs, files in os.walk(start):
            dirs.sort()
            for name in sorted(files):
                if name.startswith(_TMP_PREFIX):
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
        tmp = target.with_name(f"{_TMP_PREFIX}{target.name}")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target

    def upload_file(self, path: str | Path, key: str, content_type: str = "application/octet-stream") -> None:
        with self._atomic_target(key) as tmp:
            shutil.copyfile(path, tmp)

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"Local storage {self.root} is not writable.")


# --- S3 and friends --------------------------------------------------------------------


def _is_missing(exc: Any) -> bool:
    err = getattr(exc, "response", {}).get("Error", {})
    return err.get("Code") in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")


def _is_server_side(exc: Any) -> bool:
    meta = getattr(exc, "response", {}).get("ResponseMetadata", {})
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return int(meta.get("HTTPStatusCode") or 0) >= 500 or code in ("SlowDown", "RequestTimeout", "Throttling")


class S3Storage:
    """Any S3-compatible store (AWS, MinIO, Ceph, R2, moto) through boto3.

    The bucket is created on first use if missing, so a fresh MinIO needs no setup.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout_s: float = 5,
        read_timeout_s: float = 60,
        max_attempts: int = 3,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.region = region
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                signature_version="s3v4",
            ),
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            if key is not None and _is_missing(exc):
                raise NotFound(f"No stored object {key!r}.", key=key) from None
            if _is_server_side(exc):
                raise StorageUnavailable(f"Object storage answered an error ({exc}); try again shortly.") from exc
            raise
        except BotoCoreError as exc:  # endpoint unreachable, timeouts, connection resets
            raise StorageUnavailable(f"Object storage is unreachable ({exc}); try again shortly.") from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError

        with self._bucket_lock, self._errors():
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if not _is_missing(exc):
                    raise
                kwargs: dict[str, Any] = {"Bucket": self.bucket}
                if self.region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
                try:
                    self.client.create_bucket(**kwargs)
                except ClientError as create_exc:
                    code = create_exc.response.get("Error", {}).get("Code")
                    if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._ensure_bucket()
        with self._errors():
            self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        self._ensure_bucket()
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        self._ensure_bucket()
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=check_key(key))
            return True
        except NotFound:
            return False

    def delete(self, key: str) -> None:
        self._ensure_bucket()
        with self._errors():
            self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        self._ensure_bucket()
        keys: list[str] = []
        paging = {"MaxItems": limit} if limit is not None else {}
        with self._errors():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig=paging
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys[:limit] if limit is not None else keys)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        self._ensure_bucket()
        with self._errors():
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=int(expires_s)
            )

    def download_to(self, key: str, path: str | Path) -> Path:
        self._ensure_bucket()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{_TMP_PREFIX}{target.name}")
        try:
            with self._errors(key):
                self.client.download_file(self.bucket, check_key(key), str(tmp))
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return target

    def upload_file(self, path: str | Path, key: str, content_type: str = "application/octet-stream") -> None:
        self._ensure_bucket()
        with self._errors():
            self.client.upload_file(
                str(path), self.bucket, check_key(key), ExtraArgs={"ContentType": content_type}
            )

    def ping(self) -> None:
        self._bucket_ready = False  # re-check: readiness must reflect the store now
        self._ensure_bucket()


_cache: dict[tuple[Any, ...], Storage] = {}
_cache_lock = threading.Lock()


def get_storage(settings: Settings | None = None) -> Storage:
    """The storage ``settings.storage`` selects (``"local"`` or ``"s3"``), cached per config."""
    if settings is None:
        from shared.settings import get_settings

        settings = get_settings()
    if settings.storage == "s3":
        key: tuple[Any, ...] = (
            "s3",
            settings.s3_bucket,
            settings.s3_endpoint_url,
            settings.s3_region,
            settings.s3_access_key,
            settings.s3_secret_key,
        )
    else:
        key = ("local", str(settings.resolved_storage_dir))
    with _cache_lock:
        storage = _cache.get(key)
        if storage is None:
            if settings.storage == "s3":
                storage = S3Storage(
                    settings.s3_bucket,
                    endpoint_url=settings.s3_endpoint_url,
                    region=settings.s3_region,
                    access_key=settings.s3_access_key,
                    secret_key=settings.s3_secret_key,
                )
            else:
                storage = LocalStorage(settings.resolved_storage_dir)
            _cache[key] = storage
    return storage
