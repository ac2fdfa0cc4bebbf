"""``S3Storage``: any S3-compatible store through boto3.

Errors: a missing key is ``NotFound``; every other failure (5xx, throttling, access
denied, timeouts, refused or reset connections) is ``StorageUnavailable`` (retryable)
whose detail names the operation and the error's code, never the endpoint or bucket.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.errors import NotFound, StorageUnavailable
from shared.storage.keys import TMP_PREFIX, check_key
from shared.storage.protocol import probe_round_trip

log = logging.getLogger("stylefarm.storage")

# --- S3 and friends --------------------------------------------------------------------


def _is_missing(exc: Any) -> bool:
    err = getattr(exc, "response", {}).get("Error", {})
    return err.get("Code") in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")


def _client_error_reason(exc: Any) -> str:
    """``Code (HTTP status)`` of a botocore ``ClientError``: no bucket, key or endpoint."""
    response = getattr(exc, "response", {}) or {}
    code = response.get("Error", {}).get("Code") or "error"
    http = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return f"{code}, HTTP {http}" if http else str(code)


def unavailable(operation: str, exc: BaseException, reason: str | None = None) -> StorageUnavailable:
    """``StorageUnavailable`` for a failed ``operation``. The detail names the error's kind,
    never the endpoint URL, bucket or a local path that ``str(exc)`` may show (logged)."""
    log.warning("object storage: %s failed: %s", operation, exc)
    return StorageUnavailable(
        f"Object storage could not {operation} ({reason or type(exc).__name__}); try again shortly."
    )


#: Defaults of ``Settings.s3_*``: a store that does not accept a connection within
#: CONNECT_TIMEOUT_S, or leaves a read waiting READ_TIMEOUT_S, counts as a failed try; a call
#: gives up after MAX_ATTEMPTS tries (the first included) with ``StorageUnavailable``, so a
#: hung store costs a caller about MAX_ATTEMPTS * READ_TIMEOUT_S, never minutes. The read
#: timeout bounds each wait for bytes, not a whole transfer: large uploads and downloads stream.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 2


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
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
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
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                signature_version="s3v4",
            ),
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    @contextmanager
    def _errors(self, operation: str, key: str | None = None) -> Iterator[None]:
        """A missing ``key`` -> ``NotFound``; every other failure (5xx, throttling, access
        denied, timeouts, refused or reset connections, local I/O) -> ``StorageUnavailable``."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            if key is not None and _is_missing(exc):
                raise NotFound(f"No stored object {key!r}.", key=key) from None
            raise unavailable(operation, exc, _client_error_reason(exc)) from None
        except (BotoCoreError, Boto3Error, OSError) as exc:  # unreachable, timeouts, resets; S3Transfer's own
            raise unavailable(operation, exc) from None

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError

        with self._bucket_lock, self._errors("reach its bucket"):
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
        with self._errors(f"write {key!r}"):
            self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        self._ensure_bucket()
        with self._errors(f"read {key!r}", key):
            return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        self._ensure_bucket()
        try:
            with self._errors(f"look up {key!r}", key):
                self.client.head_object(Bucket=self.bucket, Key=check_key(key))
            return True
        except NotFound:
            return False

    def delete(self, key: str) -> None:
        self._ensure_bucket()
        with self._errors(f"delete {key!r}"):
            self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        self._ensure_bucket()
        keys: list[str] = []
        paging = {"MaxItems": limit} if limit is not None else {}
        with self._errors(f"list {prefix!r}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig=paging
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys[:limit] if limit is not None else keys)

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        self._ensure_bucket()
        with self._errors(f"sign a URL for {key!r}"):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)}, ExpiresIn=int(expires_s)
            )

    def download_to(self, key: str, path: str | Path) -> Path:
        self._ensure_bucket()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{TMP_PREFIX}{target.name}")
        try:
            with self._errors(f"read {key!r}", key):
                self.client.download_file(self.bucket, check_key(key), str(tmp))
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return target

    def upload_file(self, path: str | Path, key: str, content_type: str = "application/octet-stream") -> None:
        self._ensure_bucket()
        with self._errors(f"write {key!r}"):
            self.client.upload_file(
                str(path), self.bucket, check_key(key), ExtraArgs={"ContentType": content_type}
            )

    def ping(self) -> None:
        """Reach the bucket now (readiness). Creates it when missing, like first use; other
        calls do not wait on a ping (no shared lock once the bucket is known)."""
        if not self._bucket_ready:
            self._ensure_bucket()
            return
        with self._errors("reach its bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def probe(self) -> None:
        """Write, read back and delete a small object under a reserved key (``probe_key``):
        an unreachable, failing or read-only store raises ``StorageUnavailable``."""
        probe_round_trip(self, "Object storage")
