"""``/v1/webhook-secret``: the tenant's webhook signing secret, to read and to rotate.

Every webhook event a tenant's jobs send is signed with this secret (``shared.webhooks``);
the receiver verifies ``webhook-signature`` with it. It is made on first use. Rotating
replaces it at once: attempts from then on, retries of older events included, carry the
new signature.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import TenantDep
from api.problems import problem_responses
from api.schemas import WebhookSecretOut
from shared.db.orm import WebhookSecret
from shared.webhooks import secrets

router = APIRouter(prefix="/v1/webhook-secret", tags=["webhooks"])


def _out(row: WebhookSecret, response: Response) -> WebhookSecretOut:
    response.headers["Cache-Control"] = "no-store"
    return WebhookSecretOut(secret=row.secret, created_at=row.created_at)


#: Both answer the secret (``response_model`` from the return type) or a problem.
RESPONSES = problem_responses(401, 503)


@router.get("", responses=RESPONSES, summary="The tenant's webhook signing secret")
def read_webhook_secret(tenant: TenantDep, response: Response) -> WebhookSecretOut:
    """The secret that signs the tenant's webhook events (made now if there is none yet)."""
    return _out(secrets.get_secret(tenant), response)


@router.post("/rotate", responses=RESPONSES, summary="Replace the tenant's webhook signing secret")
def rotate_webhook_secret(tenant: TenantDep, response: Response) -> WebhookSecretOut:
    """A new secret, in force at once: every delivery attempt from now on is signed with it."""
    return _out(secrets.rotate_secret(tenant), response)
