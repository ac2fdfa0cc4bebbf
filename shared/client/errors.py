"""The client's errors: every failure is an ``ApiError`` carrying an RFC 9457 problem.

The problem is the one the server answered (``application/problem+json``), or one the client
writes itself for what no server answered: ``Unreachable`` (connection refused, timeouts,
dropped responses after the retries) and ``WaitTimeout`` (``Client.wait`` ran out of time).
All are ``shared.errors.StylefarmError``, the project's one error hierarchy.
"""

from __future__ import annotations

import contextlib
from http import HTTPStatus
from typing import Any

import httpx

from shared.errors import StylefarmError

PROBLEM_BASE = "https://stylefarm.dev/problems/"
#: The members every problem has; anything else is an extension member (``fields``).
STANDARD_MEMBERS = ("type", "title", "status", "detail", "instance")


class ApiError(StylefarmError):
    """A problem: ``type``, ``status``, ``title``, ``detail`` and the extension members in
    ``fields`` (e.g. ``errors`` of an invalid spec, ``missing_inputs``, ``limit``)."""

    def __init__(self, problem: dict[str, Any]) -> None:
        self.problem = dict(problem)
        self.type = str(problem.get("type") or "about:blank")
        self.fields = {k: v for k, v in problem.items() if k not in STANDARD_MEMBERS}
        detail = str(problem.get("detail") or problem.get("title") or "the request failed")
        super().__init__(detail, **self.fields)
        self.status = int(problem.get("status") or 0)
        self.title = str(problem.get("title") or "")
        self.slug = self.type.rsplit("/", 1)[-1]
        self.retryable = bool(problem.get("retryable", False))

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The problem a response carries; a made-up one for a body that is not a problem
        (a proxy's HTML error page, say)."""
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        if isinstance(body, dict) and "status" in body and ("detail" in body or "title" in body):
            return cls(body)
        try:
            phrase = HTTPStatus(response.status_code).phrase
        except ValueError:
            phrase = "Error"
        text = " ".join(response.text.split())[:200] if response.text else ""
        return cls({
            "type": "about:blank",
            "title": phrase,
            "status": response.status_code,
            "detail": f"{response.request.method} {response.request.url.path}: {response.status_code} {phrase}"
            + (f" ({text})" if text else ""),
        })  # fmt: skip

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}" if self.title else self.detail


class Unreachable(ApiError):
    """No answer from the server (after the retries): it is down, the address is wrong, or
    the network dropped the connection."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__({
            "type": PROBLEM_BASE + "unreachable",
            "title": "Server unreachable",
            "status": 503,
            "detail": f"{url}: {reason}",
            "url": url,
        })  # fmt: skip


class WaitTimeout(ApiError):
    """``Client.wait`` gave up before the job reached a final status (the job goes on)."""

    def __init__(self, job_id: str, seconds: float, status: str) -> None:
        super().__init__({
            "type": PROBLEM_BASE + "wait-timeout",
            "title": "Timed out",
            "status": 408,
            "detail": f"job {job_id} is still {status} after {seconds:g} s",
            "job_id": job_id,
            "job_status": status,
        })  # fmt: skip
