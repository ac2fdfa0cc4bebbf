"""The model registry: networks that ``fast`` and ``adain`` jobs name (global or per tenant)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.orm import ModelRow, new_id, utcnow
from shared.db.session import read_scope, session_scope
from shared.errors import Conflict, NotFound
from shared.jobs.tenants import check_tenant

MODEL_KINDS = ("fast", "adain-decoder")
# --- models ----------------------------------------------------------------------------


def _model_by_name(session: Session, name: str, tenant: str | None) -> ModelRow | None:
    tenant_clause = ModelRow.tenant.is_(None) if tenant is None else ModelRow.tenant == tenant
    return session.scalars(select(ModelRow).where(ModelRow.name == name, tenant_clause)).one_or_none()


def register_model(
    *,
    name: str,
    kind: str,
    checksum: str,
    storage_key: str,
    tenant: str | None = None,
    style_names: Sequence[str] = (),
    preprocessing: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    size_bytes: int = 0,
    thumbnails: Mapping[int | str, str] | None = None,
    created_by_job: str | None = None,
    model_id: str | None = None,
    replace: bool = False,
) -> ModelRow:
    """Add a model (``tenant=None`` = global, visible to every tenant).

    Idempotent for start-up hooks: registering the same (tenant, name) with the same
    ``checksum`` returns the existing row. A different checksum raises ``Conflict``
    unless ``replace=True``, which updates the row in place (same id).
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {MODEL_KINDS}, not {kind!r}")
    if tenant is not None:
        check_tenant(tenant)
    fields: dict[str, Any] = {
        "kind": kind,
        "checksum": checksum,
        "storage_key": storage_key,
        "style_names": list(style_names),
        "preprocessing": dict(preprocessing or {}),
        "config": dict(config or {}),
        "size_bytes": size_bytes,
        # JSON object keys are strings; style indices are normalized to "0", "1", ...
        "thumbnails": {str(k): v for k, v in (thumbnails or {}).items()},
        "created_by_job": created_by_job,
    }

    def reuse(session: Session, existing: ModelRow) -> ModelRow:
        if existing.checksum == checksum and not replace:
            return existing
        if not replace:
            raise Conflict(
                f"A model named {name!r} already exists with different weights; pick another name.",
                model_id=existing.id,
            )
        for attr, value in fields.items():
            setattr(existing, attr, value)
        session.flush()
        return existing

    try:
        with session_scope() as session:
            existing = _model_by_name(session, name, tenant)
            if existing is not None:
                return reuse(session, existing)
            model = ModelRow(id=model_id or new_id(), tenant=tenant, name=name, created_at=utcnow(), **fields)
            session.add(model)
        return model
    except IntegrityError:
        with session_scope() as session:  # a concurrent registration of the same name won
            existing = _model_by_name(session, name, tenant)
            if existing is None:
                raise
            return reuse(session, existing)


def list_models(tenant: str) -> list[ModelRow]:
    """The global models and the tenant's own, by name (the tenant's first on a tie)."""
    with session_scope() as session:
        rows = list(session.scalars(select(ModelRow).where(or_(ModelRow.tenant.is_(None), ModelRow.tenant == tenant))))
    return sorted(rows, key=lambda m: (m.name, m.tenant is None, m.created_at))


def get_model(id_or_name: str, tenant: str) -> ModelRow:
    """A model visible to ``tenant`` by id or by name (the tenant's own name shadows a
    global one), or ``NotFound``. One read: every visible row with that id or name, then the
    id first, the tenant's name second, the global name last."""
    with read_scope() as session:
        rows = list(session.scalars(select(ModelRow).where(
            or_(ModelRow.id == id_or_name, ModelRow.name == id_or_name),
            or_(ModelRow.tenant.is_(None), ModelRow.tenant == tenant),
        )))
    ranked = sorted(rows, key=lambda m: (m.id != id_or_name, m.tenant is None))
    if not ranked:
        raise NotFound(f"No model {id_or_name!r}; GET /v1/models lists the available ones.", model_id=id_or_name)
    return ranked[0]
