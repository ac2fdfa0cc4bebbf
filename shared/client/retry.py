"""When the client tries a request again, and how long it waits first.

A request is sent again only when doing it twice cannot do twice what it asks:

- a connection that was never made (``ConnectError``, ``ConnectTimeout``): any request;
- a connection that broke before the answer (``ReadError``, ``RemoteProtocolError``,
  ``ReadTimeout``...), 502, 503 and 504: only *idempotent* requests (GETs, an upload, whose
  id is its bytes' hash, and ``POST /v1/jobs``, which always carries an ``Idempotency-Key``);
- 429 Too Many Requests with ``Retry-After``: any request (the server did nothing).

Every other 4xx is the caller's to fix and is never retried. The waits grow exponentially
with jitter; a ``Retry-After`` (seconds or an HTTP date) overrides them, within a cap.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({502, 503, 504})
TOO_MANY_REQUESTS = 429


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th retry waits ``backoff_s * 2**(n-1)`` (at most
    ``max_backoff_s``, with up to 25 % jitter) or the server's ``Retry-After`` (at most
    ``max_retry_after_s``)."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 60.0

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry)."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.max_retry_after_s)
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return base * (1 + 0.25 * random.random())


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def never_sent(exc: httpx.TransportError) -> bool:
    """The request did not reach the server: safe to send again whatever it is."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def retry_status(response: httpx.Response, idempotent: bool) -> bool:
    """Whether an answered request may be sent again."""
    if response.status_code == TOO_MANY_REQUESTS:
        return parse_retry_after(response.headers.get("Retry-After")) is not None
    return idempotent and response.status_code in RETRY_STATUSES
