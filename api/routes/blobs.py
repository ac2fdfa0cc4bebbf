"""Serving stored files: a redirect to a presigned URL, or the bytes for local storage."""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from shared.storage import Storage

#: OpenAPI ``responses`` of a route answered by ``serve_blob`` (add its problem statuses).
BLOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The PNG itself (local storage)", "content": {"image/png": {}}},
    307: {
        "description": "Redirect to a short-lived presigned storage URL",
        "headers": {"Location": {"description": "the presigned URL", "schema": {"type": "string"}}},
    },
}


async def serve_blob(storage: Storage, key: str, expires_s: int) -> Response:
    """307 to a short-lived URL when the store can sign one, else the bytes themselves."""
    url = await run_in_threadpool(storage.presigned_url, key, expires_s)
    if url:
        # no-store: the signed URL expires; a cached redirect would later point at a 403.
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    data = await run_in_threadpool(storage.get_bytes, key)
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
