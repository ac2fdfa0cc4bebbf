"""The one error hierarchy of stylefarm.

Every error the engine, the worker or the API raises on purpose is a ``StylefarmError``.
The API maps them to RFC 9457 problem details in one handler (``api/problems.py``) using
``status``, ``title`` and ``slug``; the worker retries exactly those marked ``retryable``
and records every other one on the job as its problem details.
"""

from __future__ import annotations

import errno
import re
from typing import Any


class StylefarmError(Exception):
    """Base of every deliberate error. ``detail`` is a sentence a user can act on."""

    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"
    retryable: bool = False

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem details (without the HTTP layer)."""
        problem: dict[str, Any] = {
            "type": f"https://stylefarm.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            problem["instance"] = instance
        if self.retryable:
            problem["retryable"] = True
        problem.update(self.extra)
        return problem


# --- bad input (4xx): the caller must change something -------------------------------


class BadRequest(StylefarmError):
    status, title, slug = 400, "Bad request", "bad-request"


class InvalidCursor(BadRequest):
    title, slug = "Invalid cursor", "invalid-cursor"


class InvalidSpec(StylefarmError):
    status, title, slug = 422, "Invalid job spec", "invalid-spec"


class InvalidImage(StylefarmError):
    status, title, slug = 422, "Invalid image", "invalid-image"


class InvalidMask(InvalidImage):
    title, slug = "Invalid mask", "invalid-mask"


class InvalidWebhook(StylefarmError):
    """A job's ``webhook`` URL that cannot be used (scheme, form, or a name that does not resolve)."""

    status, title, slug = 422, "Invalid webhook URL", "invalid-webhook"


class WebhookDestinationRefused(InvalidWebhook):
    """A ``webhook`` URL whose host resolves to an address webhooks may not reach (loopback,
    private, link-local, multicast, reserved, cloud metadata) and that the operator did not
    allow (``Settings.webhook_allow_hosts``)."""

    title, slug = "Webhook destination not allowed", "webhook-destination-refused"


class PayloadTooLarge(StylefarmError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class ArchiveTooLarge(PayloadTooLarge):
    """An archive over one of the ``Settings.archive_*`` caps: ``limit`` names the setting,
    ``member`` the member at which it was crossed."""

    title, slug = "Archive too large", "archive-too-large"


class VideoTooLarge(PayloadTooLarge):
    """A video over one of the ``Settings.video_max_*`` limits (``limit`` names the setting)."""

    title, slug = "Video too large", "video-too-large"


class InvalidVideo(StylefarmError):
    """A video upload without a video stream, with a codec FFmpeg cannot decode, or damaged."""

    status, title, slug = 422, "Invalid video", "invalid-video"


class UnsupportedMediaType(StylefarmError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class NotFound(StylefarmError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(StylefarmError):
    status, title, slug = 409, "Conflict", "conflict"


class IdempotencyKeyReused(StylefarmError):
    status, title, slug = 422, "Idempotency key reused with a different body", "idempotency-key-reused"


class InvalidTransition(Conflict):
    """A job status change that the state machine does not allow (or that lost a race)."""

    title, slug = "Invalid job state transition", "invalid-transition"


class LeaseLost(InvalidTransition):
    """A worker wrote with a fencing token that is no longer the job's: its lease expired and
    the job was requeued (and maybe claimed by another worker) or finished meanwhile. The
    write changed nothing; the worker must stop working on the job at once."""

    title, slug = "Lease lost", "lease-lost"


class ModelUnavailable(StylefarmError):
    """A model (weights, checkpoint, trained decoder) the job needs is not there."""

    status, title, slug = 422, "Model unavailable", "model-unavailable"


class Unauthorized(StylefarmError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class QuotaExceeded(StylefarmError):
    """A tenant's budget (queued jobs, jobs in flight, cost in flight, upload bytes per day)
    is used up; ``extra`` names the limit, its value and the usage. Retryable: the budget
    frees up as jobs finish (``retry_after_s`` becomes the ``Retry-After`` header)."""

    status, title, slug = 429, "Quota exceeded", "quota-exceeded"
    retryable = True

    def __init__(self, detail: str, *, retry_after_s: int, **extra: Any) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, **extra)
        self.retry_after_s = retry_after_s


class JobTooExpensive(StylefarmError):
    """One job's estimated cost is above the tenant's single-job limit: waiting never helps,
    so this is not a 429; the caller must ask for less (smaller size, fewer steps)."""

    status, title, slug = 422, "Job too expensive", "job-too-expensive"


# --- job outcomes ----------------------------------------------------------------------


class JobCanceled(StylefarmError):
    """Raised by the engine when the cancel flag is seen between steps."""

    status, title, slug = 409, "Job canceled", "job-canceled"


class EngineError(StylefarmError):
    status, title, slug = 500, "Stylization failed", "engine-error"


class TimeLimitExceeded(StylefarmError):
    status, title, slug = 500, "Time limit exceeded", "time-limit-exceeded"


# --- transient infrastructure (5xx, retryable) --------------------------------------


class RetryableError(StylefarmError):
    status, title, slug = 503, "Service temporarily unavailable", "unavailable"
    retryable = True


class StorageUnavailable(RetryableError):
    title, slug = "Storage unavailable", "storage-unavailable"


class DatabaseUnavailable(RetryableError):
    title, slug = "Database unavailable", "database-unavailable"


class BrokerUnavailable(RetryableError):
    title, slug = "Queue unavailable", "broker-unavailable"


class WorkerLost(RetryableError):
    """The worker running a job stopped renewing its lease (it died, or it was cut off)."""

    title, slug = "Worker lost", "worker-lost"


class WorkerLeft(RetryableError):
    """The worker running a job shut down (scale-down, rolling update) and handed it back."""

    title, slug = "Worker left", "worker-left"


_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.@+-]+/)*[\w.@+-]+")


def describe_unexpected(exc: BaseException, limit: int = 500) -> str:
    """What a problem may say about an exception nobody expected: its type and message, never a
    server path (an ``OSError`` names only its errno; absolute paths elsewhere become
    ``<path>``) and never a traceback."""
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
        return f"{type(exc).__name__}{f' ({name})' if name else ''}: {exc.strerror or 'operating system error'}"
    return f"{type(exc).__name__}: {_ABSOLUTE_PATH.sub('<path>', str(exc))[:limit]}"


class PieceFailed(StylefarmError):
    """A piece of a fanned-out job (a tile, a video chunk: one child job) failed or was
    canceled, so its parent cannot be put together; ``extra`` names the piece, its child job
    and the child's own problem."""

    status, title, slug = 500, "A piece of the job failed", "piece-failed"
