"""SQLAlchemy 2.0 typed ORM models: ``jobs``, ``inputs``, ``models``, ``api_keys``, ``tenant_limits``,
``webhook_secrets``.

Every row carries a ``tenant`` so multi-tenancy needs no schema change. Timestamps are
stored in UTC and always come back timezone-aware (SQLite forgets the zone, so a small
type decorator puts it back). The Alembic revisions mirror this file by hand;
``tests/db/test_db_migrations.py`` checks that the two agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

TENANT_LEN = 64
ID_LEN = 32
WEBHOOK_URL_LEN = 2048


def new_id() -> str:
    """A fresh row id: uuid4 as 32 lowercase hex characters."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only kind of datetime we store)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A ``TIMESTAMP WITH TIME ZONE`` that always binds UTC and always returns aware UTC.

    PostgreSQL keeps the zone itself; SQLite stores naive text, so values are normalized
    to UTC before binding (keeps string comparison order = time order) and tagged UTC on
    the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; JSON columns map to ``dict``/``list`` values."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class ModelRow(Base):
    """A trained network: a fast (conditional instance norm) model or an AdaIN decoder."""

    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("tenant", "name", name="uq_models_tenant_name"),
        # NULL tenants are distinct in a unique constraint, so global names need their own index.
        Index(
            "uq_models_global_name",
            "name",
            unique=True,
            sqlite_where=text("tenant IS NULL"),
            postgresql_where=text("tenant IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True, default=new_id)
    tenant: Mapped[str | None] = mapped_column(String(TENANT_LEN), nullable=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    style_names: Mapped[list[Any]] = mapped_column(default=list)
    preprocessing: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    checksum: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(1024))
    thumbnails: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by_job: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Input(Base):
    """An uploaded file (image, dataset archive or video), stored once per tenant by content hash."""

    __tablename__ = "inputs"
    __table_args__ = (UniqueConstraint("tenant", "sha256", name="uq_inputs_tenant_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LEN))
    sha256: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # "image" | "archive" | "video"
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One stylization or training job. Its ``status`` is written only by ``shared.jobs.store``."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_tenant_status_created", "tenant", "status", "created_at"),
        # list_jobs pages on (created_at, id) within a tenant.
        Index("ix_jobs_tenant_created_id", "tenant", "created_at", "id"),
        # the sweeper's pass for webhook events whose message was lost: only pending ones
        Index(
            "ix_jobs_webhook_pending",
            "finished_at",
            sqlite_where=text("webhook_state = 'pending'"),
            postgresql_where=text("webhook_state = 'pending'"),
        ),
        # The sweeper's passes (running jobs with an expired lease, queued jobs without a
        # message). Status only: an index on the lease column would make every renewal
        # rewrite an index entry (and no longer be a PostgreSQL HOT update).
        Index("ix_jobs_status", "status"),
        # A queued job's position (``shared.jobs.queue_stats.position_column``): the queued jobs of one
        # queue in the order workers take them. Partial, so it holds only the waiting jobs.
        Index(
            "ix_jobs_queued_order",
            "queue",
            "priority",
            "created_at",
            "id",
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        # the children of a fanned-out parent (settle_parent, GET /v1/jobs/{id}'s pieces)
        Index("ix_jobs_parent_id", "parent_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(TENANT_LEN))
    method: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    stage: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # shared.jobs.outcomes, as JSON
    model_id: Mapped[str | None] = mapped_column(
        String(ID_LEN), ForeignKey("models.id", name="fk_jobs_model_id", ondelete="SET NULL"), nullable=True
    )
    #: The parent of a child job (one piece of a fanned-out job: ``shared.jobs.fanout``).
    parent_id: Mapped[str | None] = mapped_column(String(ID_LEN), nullable=True)
    #: A child job's piece: ``{index, total, label, data}`` (``data``: what its piece runner needs).
    piece: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Fencing token: every claim increments it; a holder's writes carry the token of its claim
    #: and are refused once another claim took the job (``shared.jobs.store``).
    fencing_token: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    #: Until when the current holder owns the running job; renewed by its heartbeat, cleared on
    #: release. The sweeper requeues running jobs whose lease expired.
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Also the heartbeat: every progress write bumps it, so a stale running job is visible.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # +1 on every write of the row (status, progress, cancel request): the id of the job's
    # server-sent events (``GET /v1/jobs/{id}/events``), monotonic whatever the writers' clocks.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # +1 each time the worker uploaded a new preview image (0 = none yet).
    preview_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # shared.jobs.cost: reference GPU-seconds, fixed at admission; quotas sum it over jobs in flight.
    estimated_cost: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    # --- the job's webhook (``shared.webhooks``): one signed event when it reaches a final status ---
    webhook_url: Mapped[str | None] = mapped_column(String(WEBHOOK_URL_LEN), nullable=True)
    # None (no webhook) | pending (not delivered yet) | delivered | failed (gave up or refused)
    webhook_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    webhook_last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # HTTP status of the last try
    webhook_last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    webhook_delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # when the next attempt is due; while an attempt runs, the end of its lease
    webhook_next_attempt_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ApiKey(Base):
    """An API key of a tenant, stored as the sha256 of the key (the key itself is shown once,
    at creation). ``prefix`` (the first characters) identifies it in listings and logs."""

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        Index("ix_api_keys_tenant", "tenant"),
    )

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True, default=new_id)
    tenant: Mapped[str] = mapped_column(String(TENANT_LEN))
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class TenantLimits(Base):
    """An operator's per-tenant budgets (``stylefarm tenants set-limits``); a NULL column means
    the default from ``Settings`` (``quota_*``)."""

    __tablename__ = "tenant_limits"

    tenant: Mapped[str] = mapped_column(String(TENANT_LEN), primary_key=True)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_jobs_in_flight: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_cost_in_flight: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_job_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_upload_bytes_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookSecret(Base):
    """The tenant's webhook signing secret (``whsec_<base64>``), made on first use, rotated on
    request. Kept in the clear: the tenant reads it back to verify signatures."""

    __tablename__ = "webhook_secrets"

    tenant: Mapped[str] = mapped_column(String(TENANT_LEN), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
