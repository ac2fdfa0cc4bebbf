"""``/v1/inputs``: upload images, dataset archives and videos once, refer to them by sha256."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, File, Request, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, StorageDep, TenantDep
from api.problems import problem_responses
from api.routes.blobs import serve_blob
from api.schemas import InputOut, input_out
from api.uploads import inspect_upload
from shared.archives import ArchiveLimits
from shared.errors import PayloadTooLarge
from shared.jobs import inputs, quotas
from shared.storage import input_key
from shared.videos import VideoLimits

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
    responses=problem_responses(
        400, 401, 413, 422, 429, 503,
        others={200: {"description": "The same bytes were uploaded before", "model": InputOut}},
    ),
    summary="Upload an image, a zip/tar archive of images or a video",
)
async def upload_input(
    request: Request,
    response: Response,
    tenant: TenantDep,
    settings: SettingsDep,
    storage: StorageDep,
    file: UploadFile = File(
        description="PNG, JPEG, WEBP, BMP or TIFF image, zip/tar of images, or video (mp4, mov, webm, animated GIF)"
    ),
) -> InputOut:
    """Identical bytes are stored once: the id is the sha256 of the content; 201 when new,
    200 when the tenant already uploaded them (and the stored object is written again if it
    went missing). An archive over a ``Settings.archive_*`` cap answers 413
    ``archive-too-large``, a damaged member 422 ``invalid-image``, each naming the member;
    storage failures answer 503 ``storage-unavailable`` with ``Retry-After``. A video over a
    ``Settings.video_max_*`` limit (duration, frame count, longest side) answers 413
    ``video-too-large``, one without a decodable video stream 422 ``invalid-video``."""
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    # The multipart envelope adds a little; anything far above the cap is refused unread.
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _too_large(limit)
    data = await _read_capped(file, limit)
    sha256 = hashlib.sha256(data).hexdigest()

    existing = (await run_in_threadpool(inputs.find_inputs, tenant, [sha256])).get(sha256)
    if existing is not None:
        # The same bytes again also repair a stored object that went missing (the key is
        # the content's hash, so the bytes are the ones inspected at the first upload).
        if not await run_in_threadpool(storage.exists, existing.key):
            await run_in_threadpool(storage.put_bytes, existing.key, data, existing.content_type)
        response.status_code = status.HTTP_200_OK
        return input_out(existing)

    await run_in_threadpool(quotas.check_upload, tenant, len(data), settings)
    info = await run_in_threadpool(
        inspect_upload, data, settings.max_pixels, ArchiveLimits.from_settings(settings),
        VideoLimits.from_settings(settings),
    )
    key = input_key(tenant, sha256)
    # Bytes first, row second: a row never points at a missing object (an orphan object
    # after a crash is harmless, the next identical upload overwrites it).
    await run_in_threadpool(storage.put_bytes, key, data, info.content_type)
    row, created = await run_in_threadpool(
        inputs.add_input,
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


@router.get("/{input_id}", response_model=InputOut, responses=problem_responses(401, 404, 503))
def read_input(input_id: str, tenant: TenantDep) -> InputOut:
    """Metadata of an uploaded input."""
    return input_out(inputs.get_input(input_id, tenant))


@router.get(
    "/{input_id}/content",
    response_class=Response,
    responses=problem_responses(
        401, 404,
        others={
            200: {"content": {"application/octet-stream": {}}},
            307: {"description": "Redirect to a presigned URL"},
        },
    ),
)
async def read_input_content(input_id: str, tenant: TenantDep, settings: SettingsDep, storage: StorageDep) -> Response:
    """The uploaded bytes (e.g. the "before" of a job): a redirect to storage, or the bytes
    with their content type."""
    row = await run_in_threadpool(inputs.get_input, input_id, tenant)
    response = await serve_blob(storage, row.key, settings.presign_expiry_s)
    if response.status_code == 200:
        response.headers["Content-Type"] = row.content_type
    return response
