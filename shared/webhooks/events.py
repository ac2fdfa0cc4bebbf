"""The webhook event of a job and its Standard Webhooks signature.

Body (JSON, UTF-8)::

    {"type": "job.succeeded" | "job.failed" | "job.canceled",
     "timestamp": "<when the job finished, ISO 8601 UTC>",
     "data": <the job as GET /v1/jobs/{id} shows it, without its "webhook" member>}

``data.error`` is the problem details of a failed job, ``data.links.result`` the result
of a succeeded one (links are absolute when ``Settings.public_url`` is set on the workers).
The body is the same on every attempt.

Headers: ``webhook-id: evt_<job id>_<status>`` (``state.event_id``; the same on every attempt,
so a receiver dedupes on it), ``webhook-timestamp`` (seconds since the epoch, of this
attempt: receivers refuse stale ones) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` keyed with the tenant's secret, made by the
``standardwebhooks`` package (whose ``Webhook(secret).verify(body, headers)`` checks it).
"""

from __future__ import annotations

import json
from datetime import datetime
from math import floor

from standardwebhooks import Webhook

from shared.db.orm import Job, utcnow
from shared.jobs.views import job_out

USER_AGENT = "stylefarm-webhooks/1"


def event_type(job: Job) -> str:
    return f"job.{job.status}"


def event_body(job: Job, base: str = "") -> str:
    """The JSON body (see the module docstring); ``base`` prefixes the links."""
    data = job_out(job, base).model_dump(mode="json", exclude={"webhook"})
    finished = job.finished_at or job.updated_at
    event = {"type": event_type(job), "timestamp": finished.isoformat().replace("+00:00", "Z"), "data": data}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def signed_headers(secret: str, msg_id: str, body: str, when: datetime | None = None) -> dict[str, str]:
    """The headers of one attempt sending ``body``, signed with ``secret`` at ``when`` (now)."""
    when = when or utcnow()
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(floor(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body),
    }
