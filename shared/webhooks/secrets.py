"""The tenant's webhook signing secret: ``whsec_`` + base64 of 32 random bytes (the Standard
Webhooks format), one row per tenant in ``webhook_secrets``.

Made on first use (the tenant reading it, or the first delivery); ``rotate_secret``
replaces it at once: every attempt from then on, retries of older events included, is
signed with the new one. It is kept in the clear because the tenant reads it back
(``GET /v1/webhook-secret``) to verify signatures.
"""

from __future__ import annotations

import base64
import secrets

from sqlalchemy.exc import IntegrityError

from shared.db.orm import WebhookSecret, utcnow
from shared.db.session import session_scope
from shared.jobs.tenants import check_tenant

PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def get_secret(tenant: str) -> WebhookSecret:
    """The tenant's secret, made now if it has none (two first uses at once agree on one)."""
    check_tenant(tenant)
    with session_scope() as session:
        row = session.get(WebhookSecret, tenant)
        if row is not None:
            return row
    try:
        with session_scope() as session:
            row = WebhookSecret(tenant=tenant, secret=new_secret(), created_at=utcnow())
            session.add(row)
        return row
    except IntegrityError:  # another process made it first: theirs is the one
        with session_scope() as session:
            found = session.get(WebhookSecret, tenant)
            if found is None:
                raise
            return found


def rotate_secret(tenant: str) -> WebhookSecret:
    """Replace the tenant's secret with a new one (made if it had none); returns the new one."""
    get_secret(tenant)
    with session_scope() as session:
        row = session.get(WebhookSecret, tenant, with_for_update=True)
        assert row is not None  # rows are never deleted
        row.secret, row.created_at = new_secret(), utcnow()
        return row
