"""FastAPI dependencies: settings, storage and the caller's tenant."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from shared.errors import Unauthorized
from shared.settings import Settings
from shared.storage import Storage


def get_app_settings(request: Request) -> Settings:
    """The ``Settings`` the app was created with."""
    settings: Settings = request.app.state.settings  # Starlette's app.state is untyped
    return settings


def get_app_storage(request: Request) -> Storage:
    """The app's storage backend (created once per app)."""
    storage: Storage = request.app.state.storage
    return storage


def get_tenant(
    settings: Annotated[Settings, Depends(get_app_settings)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """The tenant of the caller.

    Without ``settings.api_keys`` (development) everyone is ``settings.default_tenant``.
    Otherwise ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` must name a
    configured key, and the key's tenant is the caller's.
    """
    keys = settings.api_key_tenants()
    if not keys:
        return settings.default_tenant
    presented = x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            presented = token.strip()
    if not presented:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.")
    tenant = None
    for key, key_tenant in keys.items():  # compare against every key: no timing hint
        if hmac.compare_digest(key.encode(), presented.encode()):
            tenant = key_tenant
    if tenant is None:
        raise Unauthorized("The API key is not valid.")
    return tenant


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StorageDep = Annotated[Storage, Depends(get_app_storage)]
TenantDep = Annotated[str, Depends(get_tenant)]
