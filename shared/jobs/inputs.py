"""Uploaded inputs: one row per (tenant, sha256)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from shared.db.orm import Input, utcnow
from shared.db.session import read_scope, session_scope
from shared.errors import NotFound
from shared.jobs.tenants import check_tenant

# --- inputs ----------------------------------------------------------------------------


def add_input(
    tenant: str,
    *,
    sha256: str,
    key: str,
    size: int,
    content_type: str,
    kind: str,
    width: int | None = None,
    height: int | None = None,
) -> tuple[Input, bool]:
    """Record an uploaded file once per (tenant, sha256); returns ``(input, created)``."""
    check_tenant(tenant)
    if kind not in ("image", "archive", "video"):
        raise ValueError(f"input kind must be 'image', 'archive' or 'video', not {kind!r}")
    row = Input(
        tenant=tenant,
        sha256=sha256,
        key=key,
        size=size,
        content_type=content_type,
        kind=kind,
        width=width,
        height=height,
        created_at=utcnow(),
    )
    try:
        with session_scope() as session:
            existing = session.scalars(
                select(Input).where(Input.tenant == tenant, Input.sha256 == sha256)
            ).one_or_none()
            if existing is not None:
                return existing, False
            session.add(row)
        return row, True
    except IntegrityError:
        return get_input(sha256, tenant), False  # a concurrent upload of the same bytes won


def get_input(sha256: str, tenant: str) -> Input:
    """The tenant's input with this id (sha256 hex), or ``NotFound``."""
    with read_scope() as session:
        row = session.scalars(select(Input).where(Input.tenant == tenant, Input.sha256 == sha256)).one_or_none()
    if row is None:
        raise NotFound(f"No input with id {sha256!r}; upload it with POST /v1/inputs first.", input_id=sha256)
    return row


def find_inputs(tenant: str, sha256s: Iterable[str]) -> dict[str, Input]:
    """The tenant's inputs among ``sha256s`` (one query), keyed by sha256."""
    wanted = list(dict.fromkeys(sha256s))
    if not wanted:
        return {}
    with read_scope() as session:
        rows = session.scalars(select(Input).where(Input.tenant == tenant, Input.sha256.in_(wanted)))
        return {r.sha256: r for r in rows}


