"""Every error the API answers is RFC 9457 ``application/problem+json``, built here.

One place maps: ``StylefarmError`` (its status/title/slug/detail and extra members),
FastAPI's ``RequestValidationError`` (422 with an ``errors`` list), Starlette's
``HTTPException`` (unknown routes 404, wrong method 405, ...) and anything unexpected
(500, without leaking internals).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.allowed_methods import allow_header
from shared.errors import StylefarmError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://stylefarm.dev/problems/"
log = logging.getLogger("stylefarm.api")


class Problem(BaseModel):
    """RFC 9457 problem details (extension members such as ``errors`` may follow)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


#: Headers that always come with a problem of that status (see ``_stylefarm_error``).
_PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "the authentication scheme (Bearer)", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}},
}


def _problem_response_doc(status: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if status in _PROBLEM_HEADERS:
        doc["headers"] = _PROBLEM_HEADERS[status]
    return doc


def problem_responses(
    *statuses: int, others: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json answers, after ``others`` (the
    route's own success or redirect answers)."""
    return {**(others or {}), **{status: _problem_response_doc(status) for status in statuses}}


def document_validation_problems(schema: dict[str, Any]) -> None:
    """Make the OpenAPI ``schema`` say what a request validation error really is: FastAPI
    documents its own 422 ``HTTPValidationError`` JSON on every operation with parameters,
    this API answers a 422 problem+json (``_validation_error``)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            response = (operation.get("responses") or {}).get("422")
            if response and "application/json" in response.get("content", {}):
                operation["responses"]["422"] = _problem_response_doc(422)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def problem_response(
    status: int,
    title: str,
    detail: str,
    slug: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response from its parts."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _stylefarm_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StylefarmError)
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="stylefarm"'
    if exc.retryable:
        headers["Retry-After"] = "5"
    body = exc.to_problem(instance=request.url.path)
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers or None)


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only plain fields: pydantic's ctx may hold exception objects that are not JSON.
    errors = [
        {
            "loc": ".".join(str(p) for p in e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['loc'] or 'request'}: {e['msg']}" for e in errors) or "The request is invalid."
    return problem_response(
        422, "Invalid request", detail, "validation-error", instance=request.url.path, errors=errors
    )


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    if status == 404 and detail is None:
        detail = f"There is no resource at {request.url.path}; see /docs for the API."
    headers = dict(exc.headers) if exc.headers else None
    if status == 405:  # Allow names the methods of every route on this path, not just the first
        others = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
        allowed = allow_header(request.app.routes, request.scope) or (exc.headers or {}).get("Allow", "")
        headers = {**others, "Allow": allowed}
        if detail is None:
            use = f"; use {allowed}." if allowed else "."
            detail = f"{request.method} is not allowed on {request.url.path}{use}"
    slug = phrase.lower().replace(" ", "-").replace("'", "")
    return problem_response(status, phrase, detail or phrase + ".", slug, instance=request.url.path, headers=headers)


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        500,
        "Internal error",
        "Something went wrong on our side; the error was logged. Try again later.",
        "internal",
        instance=request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(StylefarmError, _stylefarm_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
