"""Limits on request bodies, enforced before a body is parsed.

- **Size.** Every body has a byte limit: the multipart upload of ``POST /v1/inputs`` gets
  ``settings.max_upload_bytes`` plus room for the multipart envelope, every other body (the
  JSON of ``POST /v1/jobs``) ``MAX_JSON_BODY``. A declared ``Content-Length`` over the limit is
  answered 413 without reading a byte; a body without one (chunked) is counted as it streams
  in and cut off with 413 as soon as it passes the limit, so no handler ever holds more.
- **Media type.** A JSON endpoint refuses a ``Content-Type`` that is not JSON with 415.
- **Shape.** A JSON body may nest at most ``MAX_JSON_DEPTH`` arrays/objects (a job spec needs
  four); deeper ones are refused before ``json.loads`` could recurse, numbers too long to read
  and malformed text are 422 problems naming the reason, never a 500.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response
from shared.errors import InvalidSpec, PayloadTooLarge, UnsupportedMediaType

MAX_JSON_BODY = 256 * 1024
MAX_JSON_DEPTH = 32
#: Multipart boundaries, part headers and the form field name around an uploaded file.
MULTIPART_ENVELOPE = 64 * 1024

_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def too_large(limit: int, what: str = "request body") -> PayloadTooLarge:
    return PayloadTooLarge(f"The {what} is larger than the limit of {limit} bytes.", limit=limit)


class BodyLimitMiddleware:
    """ASGI middleware: 413 for a body over its path's limit, declared or streamed.

    A POST to one of ``upload_paths`` may carry a file of ``upload_limit`` bytes (plus the
    multipart envelope); every other request a body of ``json_limit`` bytes.
    """

    def __init__(self, app: ASGIApp, *, upload_limit: int, upload_paths: tuple[str, ...] = ("/v1/inputs",),
                 json_limit: int = MAX_JSON_BODY) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.upload_paths = frozenset(upload_paths)
        self.json_limit = json_limit

    def limit_for(self, scope: Scope) -> tuple[int, PayloadTooLarge]:
        """The bytes a request may send, and the error that says so."""
        if scope["method"] == "POST" and scope["path"].rstrip("/") in self.upload_paths:
            return self.upload_limit + MULTIPART_ENVELOPE, too_large(self.upload_limit, "upload")
        return self.json_limit, too_large(self.json_limit, "request body")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, error = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, error)
            return

        seen = 0
        exceeded: PayloadTooLarge | None = None
        replaced = False

        async def counted_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = error
                    raise exceeded
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app answers once the body was cut off (a parser may turn the error
            # into its own 400), the client gets the 413.
            nonlocal replaced
            if exceeded is None:
                await send(message)
            elif not replaced and message["type"] == "http.response.start":
                replaced = True
                await self._refuse(scope, receive, send, exceeded)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except PayloadTooLarge:
            if exceeded is None or replaced:
                raise
            replaced = True
            await self._refuse(scope, receive, send, exceeded)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: PayloadTooLarge) -> None:
        response = problem_response(
            error.status, error.title, error.detail, error.slug, instance=scope["path"],
            headers={"Connection": "close"}, **error.extra,
        )
        await response(scope, receive, send)


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in JSON text (brackets inside strings do not count)."""
    # Escaped backslashes, then escaped quotes, go first (left to right, as JSON reads them);
    # what lies between the remaining quotes is string content, every other piece is outside.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[0::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    return max(accumulate((1 if b in b"[{" else -1 for b in brackets), initial=0))


def _is_json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("application/json", "") or media_type.endswith("+json")


async def read_json_object(request: Request, what: str = "a job spec with a 'method' field") -> dict[str, Any]:
    """The request's JSON object body: 415 for another media type, 422 ``invalid-spec`` for
    text that is not JSON, nests deeper than ``MAX_JSON_DEPTH`` or is not an object.
    (The body's size is bounded by ``BodyLimitMiddleware`` before it gets here.)"""
    content_type = request.headers.get("content-type", "")
    if not _is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"The body must be JSON (Content-Type: application/json), not {content_type.split(';', 1)[0]!r}."
        )
    raw = await request.body()
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise InvalidSpec(f"The body nests {depth} levels of arrays/objects; at most {MAX_JSON_DEPTH} are accepted.")
    try:
        body = json.loads(raw or b"null")
    except json.JSONDecodeError as exc:
        raise InvalidSpec(f"The body is not valid JSON ({exc}).") from None
    except UnicodeDecodeError:
        raise InvalidSpec("The body is not valid JSON: it is not UTF-8 text.") from None
    except (ValueError, RecursionError):  # e.g. an integer of more than 4300 digits
        raise InvalidSpec("The body is not valid JSON this API can read: a number in it is too long.") from None
    if not isinstance(body, dict):
        raise InvalidSpec(f"The body must be a JSON object: {what}.")
    return body
