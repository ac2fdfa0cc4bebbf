"""What a tenant name may look like.

Tenants end up in SQL rows and in storage keys (``tenants/<tenant>/...``), so they are
restricted to a safe alphabet: letters, digits, ``.``, ``_``, ``-``; 1-64 characters;
not starting with a dot (no ``.``/``..`` path segments).
"""

from __future__ import annotations

import re

TENANT_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")


def check_tenant(tenant: str) -> str:
    """Return ``tenant`` unchanged if valid, else raise ``ValueError`` (a programming error:
    tenants come from settings / API keys, never from request bodies)."""
    if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
        raise ValueError(f"invalid tenant name {tenant!r}: use 1-64 of [A-Za-z0-9._-], not starting with '.'")
    return tenant
