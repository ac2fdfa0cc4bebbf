"""Response shapes of the API and the functions that build them from database rows (the job's:
``shared.jobs.views``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.db.orm import Input, ModelRow

# The job view lives in shared/ (the worker sends it in webhook events); re-exported here.
from shared.jobs.views import CostOut as CostOut
from shared.jobs.views import JobOut as JobOut
from shared.jobs.views import job_out as job_out


class JobListOut(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class WebhookSecretOut(BaseModel):
    secret: str = Field(
        description="whsec_<base64>: the key of the HMAC-SHA256 in each webhook's webhook-signature header "
        "(Standard Webhooks; e.g. standardwebhooks.Webhook(secret).verify(body, headers))"
    )
    created_at: datetime = Field(description="when this secret was made (first use or last rotation)")


class InputOut(BaseModel):
    id: str = Field(description="sha256 hex of the bytes; use it as an image/dataset reference in job specs")
    size: int
    width: int | None
    height: int | None
    content_type: str
    kind: str = Field(description="image | archive | video")
    created_at: datetime


class ModelOut(BaseModel):
    id: str
    name: str
    kind: str
    scope: str = Field(description="global (built in) or tenant")
    style_names: list[str]
    num_styles: int
    preprocessing: dict[str, Any]
    size_bytes: int
    checksum: str
    created_by_job: str | None
    created_at: datetime
    links: dict[str, Any]


class ModelListOut(BaseModel):
    items: list[ModelOut]


def input_out(row: Input) -> InputOut:
    return InputOut(
        id=row.sha256,
        size=row.size,
        width=row.width,
        height=row.height,
        content_type=row.content_type,
        kind=row.kind,
        created_at=row.created_at,
    )


def model_out(model: ModelRow, base: str = "") -> ModelOut:
    self_link = f"{base}/v1/models/{model.id}"
    thumbs = {k: f"{self_link}/thumbnails/{k}" for k in sorted(model.thumbnails or {}, key=lambda s: int(s))}
    return ModelOut(
        id=model.id,
        name=model.name,
        kind=model.kind,
        scope="global" if model.tenant is None else "tenant",
        style_names=list(model.style_names or []),
        num_styles=len(model.style_names or []),
        preprocessing=model.preprocessing or {},
        size_bytes=model.size_bytes,
        checksum=model.checksum,
        created_by_job=model.created_by_job,
        created_at=model.created_at,
        links={"self": self_link, "thumbnails": thumbs},
    )
