"""Blob storage for inputs, results, checkpoints and models: S3-compatible or a local folder.

Keys are deterministic and tenant-scoped (see the ``*_key`` helpers), so the same bytes
always land at the same place and retries overwrite instead of duplicating::

    tenants/<tenant>/inputs/<sha256>
    tenants/<tenant>/jobs/<job_id>/output.png             a render job's image
    tenants/<tenant>/jobs/<job_id>/loss.png               a training job's loss curve
    tenants/<tenant>/jobs/<job_id>/checkpoint.pt          its latest training checkpoint
    tenants/<tenant>/datasets/<name>/...                  ``prefix:NAME`` datasets
    tenants/<tenant>/jobs/<job_id>/preview.png            latest preview of a running job
    tenants/<tenant>/models/<model_id>/<name>             models a tenant trained
    global/models/<model_id>/<name>                       built-in models (tenant None)
    .../models/<model_id>/thumbnails/<style>.png

Errors: a missing key is ``NotFound``; every other failure of either backend (local:
read-only or full disk, permissions, I/O errors, a vanished root; S3: refused or reset
connections, timeouts, 5xx, throttling, access denied) is ``StorageUnavailable``
(retryable: 503 with ``Retry-After`` at the API, a requeue on the worker) whose detail
never shows a server path or endpoint. ``probe()`` writes, reads back and deletes an
object under ``PROBE_PREFIX`` (``/readyz``). boto3 is imported lazily so LocalStorage
users (and the API's import time) do not pay for it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from shared.storage.keys import (
    CHECKPOINT_NAME,
    LOSS_CURVE_NAME,
    PROBE_PREFIX,
    RENDER_NAME,
    check_key,
    checkpoint_key,
    dataset_prefix,
    input_key,
    model_key,
    preview_key,
    result_key,
    thumbnail_key,
)
from shared.storage.local import LocalStorage
from shared.storage.protocol import Storage
from shared.storage.s3 import S3Storage

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = [
    "CHECKPOINT_NAME",
    "LOSS_CURVE_NAME",
    "PROBE_PREFIX",
    "RENDER_NAME",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "check_key",
    "checkpoint_key",
    "dataset_prefix",
    "get_storage",
    "input_key",
    "model_key",
    "preview_key",
    "result_key",
    "thumbnail_key",
]

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
            settings.s3_connect_timeout_s,
            settings.s3_read_timeout_s,
            settings.s3_max_attempts,
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
                    connect_timeout_s=settings.s3_connect_timeout_s,
                    read_timeout_s=settings.s3_read_timeout_s,
                    max_attempts=settings.s3_max_attempts,
                )
            else:
                storage = LocalStorage(settings.resolved_storage_dir)
            _cache[key] = storage
    return storage
