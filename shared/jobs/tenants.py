"""Tenants: what a tenant name may look like, and the operator's per-tenant limits.

Tenants end up in SQL rows and in storage keys (``tenants/<tenant>/...``), so they are
restricted to a safe alphabet: letters, digits, ``.``, ``_``, ``-``; 1-64 characters;
not starting with a dot (no ``.``/``..`` path segments).

A tenant exists by having an API key (``shared.jobs.api_keys``) or rows; its budgets are the
``Settings.quota_*`` defaults unless the operator set its own in ``tenant_limits``
(``stylefarm tenants set-limits``); ``shared.jobs.quotas`` enforces them.
"""

from __future__ import annotations

import re

from shared.db.orm import TenantLimits, utcnow
from shared.db.session import session_scope

TENANT_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")


def check_tenant(tenant: str) -> str:
    """Return ``tenant`` unchanged if valid, else raise ``ValueError`` (a programming error:
    tenants come from settings / API keys, never from request bodies)."""
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise ValueError(f"invalid tenant name {tenant!r}: use 1-64 of [A-Za-z0-9._-], not starting with '.'")
    return tenant


# --- per-tenant limits (the operator's overrides of the Settings defaults) ----------------

#: The budgets an operator can set per tenant: column of ``tenant_limits`` -> its ``Settings`` default.
LIMIT_DEFAULTS = {
    "max_queued_jobs": "quota_max_queued_jobs",
    "max_jobs_in_flight": "quota_max_jobs_in_flight",
    "max_cost_in_flight": "quota_max_cost_in_flight",
    "max_job_cost": "quota_max_job_cost",
    "max_upload_bytes_per_day": "quota_max_upload_bytes_per_day",
}


def get_limit_overrides(tenant: str) -> dict[str, float | int | None]:
    """The operator's overrides of ``tenant`` (None = the Settings default), one per limit."""
    with session_scope() as session:
        row = session.get(TenantLimits, tenant)
        return {name: getattr(row, name) if row is not None else None for name in LIMIT_DEFAULTS}


def set_limits(tenant: str, **limits: float | int | None) -> dict[str, float | int | None]:
    """Set some of ``tenant``'s limits (a value of None restores the default); the others stay.
    Returns the tenant's overrides after the change."""
    check_tenant(tenant)
    unknown = set(limits) - set(LIMIT_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; expected some of {', '.join(LIMIT_DEFAULTS)}")
    for name, value in limits.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 (0 refuses every job), got {value}")
    with session_scope() as session:
        row = session.get(TenantLimits, tenant, with_for_update=True)
        if row is None:
            row = TenantLimits(tenant=tenant, **dict.fromkeys(LIMIT_DEFAULTS))
            session.add(row)
        for name, value in limits.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
    return get_limit_overrides(tenant)
