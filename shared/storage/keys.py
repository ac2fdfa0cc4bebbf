"""Deterministic, tenant-scoped storage keys (see ``shared.storage``)."""

from __future__ import annotations

import re
import uuid

from shared.jobs.tenants import check_tenant

_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*$")
#: Temporary files of atomic writes start with this; ``check_key`` refuses such names.
TMP_PREFIX = ".tmp-"

#: File names under ``result_key``: a render job's PNG, a training job's loss curve and its
#: latest checkpoint.
RENDER_NAME = "output.png"
LOSS_CURVE_NAME = "loss.png"
CHECKPOINT_NAME = "checkpoint.pt"


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


def result_key(tenant: str, job_id: str, name: str) -> str:
    """A file a job produced (``RENDER_NAME``, ``LOSS_CURVE_NAME``, ``CHECKPOINT_NAME``)."""
    return f"tenants/{check_tenant(tenant)}/jobs/{_check_name(job_id)}/{_check_name(name)}"


def checkpoint_key(tenant: str, job_id: str) -> str:
    """The (overwritten) latest checkpoint of a training job, for resuming after a retry."""
    return result_key(tenant, job_id, CHECKPOINT_NAME)


def preview_key(tenant: str, job_id: str) -> str:
    """The (overwritten) latest preview image of a running optimize/masked job."""
    return result_key(tenant, job_id, "preview.png")


def model_key(tenant: str | None, model_id: str, name: str = "model.pt") -> str:
    """A model file; ``tenant=None`` for global (built-in) models."""
    owner = "global" if tenant is None else f"tenants/{check_tenant(tenant)}"
    return f"{owner}/models/{_check_name(model_id)}/{_check_name(name)}"


def dataset_prefix(tenant: str, name: str) -> str:
    """Where a tenant's ``prefix:NAME`` dataset lives: every object directly under it."""
    return f"tenants/{check_tenant(tenant)}/datasets/{check_key(name.strip('/'))}/"


#: Reserved for readiness probes (``Storage.probe``); no tenant's key starts with it.
PROBE_PREFIX = "system/probes/"


def probe_key() -> str:
    """A fresh key under ``PROBE_PREFIX``: concurrent probes of several API replicas never
    read or delete each other's object."""
    return f"{PROBE_PREFIX}{uuid.uuid4().hex}"


def thumbnail_key(tenant: str | None, model_id: str, style: int) -> str:
    """Preview image of one style of a model."""
    return model_key(tenant, model_id, f"thumbnails/{int(style)}.png")
