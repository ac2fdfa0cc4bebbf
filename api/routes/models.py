"""``/v1/models``: the fast-style and AdaIN models a tenant can use."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep, StorageDep, TenantDep
from api.problems import problem_responses
from api.routes.blobs import BLOB_RESPONSES, serve_blob
from api.schemas import ModelListOut, ModelOut, model_out
from shared.errors import NotFound
from shared.jobs import model_registry

router = APIRouter(prefix="/v1/models", tags=["models"])



@router.get("", response_model=ModelListOut, responses=problem_responses(401, 503))
def list_models(tenant: TenantDep, settings: SettingsDep) -> ModelListOut:
    """Global (built-in) models and the tenant's own trained ones."""
    base = settings.public_url.rstrip("/")
    return ModelListOut(items=[model_out(m, base) for m in model_registry.list_models(tenant)])


@router.get("/{model_id}", response_model=ModelOut, responses=problem_responses(401, 404, 503))
def read_model(model_id: str, tenant: TenantDep, settings: SettingsDep) -> ModelOut:
    """A model by id or by name."""
    return model_out(model_registry.get_model(model_id, tenant), settings.public_url.rstrip("/"))


@router.get(
    "/{model_id}/thumbnails/{style}",
    responses=problem_responses(401, 404, 422, 503, others=BLOB_RESPONSES),
    response_class=Response,
)
async def read_thumbnail(
    model_id: str, style: int, tenant: TenantDep, settings: SettingsDep, storage: StorageDep
) -> Response:
    """Preview of one style of the model: a redirect to storage, or the PNG itself."""
    model = await run_in_threadpool(model_registry.get_model, model_id, tenant)
    key = (model.thumbnails or {}).get(str(style))
    if not key:
        raise NotFound(f"Model {model.name!r} has no thumbnail for style {style}.", model_id=model.id, style=style)
    return await serve_blob(storage, key, settings.presign_expiry_s)
