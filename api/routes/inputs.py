"""``/v1/inputs``: upload images and dataset archives once, refer to them by sha256."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, File, Request, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, StorageDep, TenantDep
from api.problems import problem_responses
from api.schemas import InputOut, input_out
from api.uploads import inspect_upload
from shared.jobs import inputs, quotas
from shared.errors import PayloadTooLarge
from shared.storage import input_key

router = APIRouter(prefix="/v1/inputs", tags=["inputs"])
CHUNK = 1024 * 1024


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The upload is larger than the limit of {limit} bytes.", limit=limit)


async def _read_capped(upload: UploadFile, limit: int) -> bytes:
    """The file's bytes, or 413 as soon as more than ``limit`` bytes were seen."""
    parts: list[bytes] = []
    seen = 0
    while chunk := await upload.read(CHUNK):
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


@router.post(
    "",
    response_model=InputOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The same bytes were uploaded before", "model": InputOut}}
    | problem_responses(401, 413, 422, 429, 503),
    summary="Upload an image or a zip/tar archive of images",
)
async def upload_input(
    request: Request,
    response: Response,
    tenant: TenantDep,
    settings: SettingsDep,
    storage: StorageDep,
    file: UploadFile = File(description="PNG, JPEG, WEBP, BMP or TIFF image, or zip/tar of images"),
) -> InputOut:
    """Identical bytes are stored once: the id is the sha256 of the content; 201 when new,
    200 when the tenant already uploaded them."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    # The multipart envelope adds a little; anything far above the cap is refused unread.
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _too_large(limit)
    data = await _read_capped(file, limit)
    sha256 = hashlib.sha256(data).hexdigest()

    existing = inputs.find_inputs(tenant, [sha256]).get(sha256)
    if existing is not None:
        response.status_code = status.HTTP_200_OK
        return input_out(existing)

    await run_in_threadpool(quotas.check_upload, tenant, len(data), settings)
    info = await run_in_threadpool(inspect_upload, data, settings.max_pixels)
    key = input_key(tenant, sha256)
    # Bytes first, row second: a row never points at a missing object (an orphan object
    # after a crash is harmless, the next identical upload overwrites it).
    await run_in_threadpool(storage.put_bytes, key, data, info.content_type)
    row, created = inputs.add_input(
        tenant,
        sha256=sha256,
        key=key,
        size=len(data),
        content_type=info.content_type,
        kind=info.kind,
        width=info.width,
        height=info.height,
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return input_out(row)


@router.get("/{input_id}", response_model=InputOut, responses=problem_responses(401, 404))
def read_input(input_id: str, tenant: TenantDep) -> InputOut:
    """Metadata of an uploaded input."""
    return input_out(inputs.get_input(input_id, tenant))
