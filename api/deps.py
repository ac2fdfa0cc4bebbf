"""FastAPI dependencies: settings, storage and the caller's tenant."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from shared.errors import Unauthorized
from shared.jobs import api_keys
from shared.settings import Settings
from shared.storage import Storage

log = logging.getLogger("stylefarm.api")

async def get_app_settings(request: Request) -> Settings:
    """The ``Settings`` the app was created with."""
    settings: Settings = request.app.state.settings  # Starlette's app.state is untyped
    return settings


async def get_app_storage(request: Request) -> Storage:
    """The app's storage backend (created once per app)."""
    storage: Storage = request.app.state.storage
    return storage


@dataclass
class KeyCache:
    """What the API knows about stored keys, for at most ``ttl_s`` seconds (so a key created or
    revoked with ``stylefarm keys`` takes effect within that time, with no restart).

    ``tenant_of(key)`` caches by the key's hash: the tenant of a valid key, or None for an
    unknown or revoked one (bounded, least recently used out, so guessing keys cannot grow it).
    ``last_used_at`` is written at most once per ``touch_interval_s`` per key.
    """

    ttl_s: float
    touch_interval_s: float
    max_entries: int = 10_000
    _entries: OrderedDict[str, tuple[float, str | None, str | None]] = field(default_factory=OrderedDict)
    _any: tuple[float, bool] | None = None
    _touched: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def any_keys(self) -> bool:
        """Whether SQL holds any key (then every request needs one). Once true it stays true:
        revoked keys keep their rows, so revoking the last key never opens the API."""
        known = self.any_keys_known()
        if known is None:
            self._any = (time.monotonic(), api_keys.any_keys())
            known = self._any[1]
        return known

    def any_keys_known(self) -> bool | None:
        """``any_keys()`` when it needs no SQL, else None."""
        cached = self._any
        if cached is None or (not cached[1] and time.monotonic() - cached[0] >= self.ttl_s):
            return None
        return cached[1]

    def _fresh_entry(self, digest: str, now: float) -> tuple[str | None, str | None] | None:
        """(tenant, key id) of a cached answer younger than ``ttl_s``, else None."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None or now - entry[0] >= self.ttl_s:
                return None
            self._entries.move_to_end(digest)
            return entry[1], entry[2]

    def _touch_due(self, key_id: str | None, now: float, claim: bool) -> bool:
        """Whether the key's use is to be recorded now; with ``claim`` the caller records it
        (checked and marked under the lock, so concurrent requests record it once)."""
        if key_id is None:
            return False
        with self._lock:
            due = now - self._touched.get(key_id, -1e18) >= self.touch_interval_s
            if due and claim:
                self._touched[key_id] = now
        return due

    def tenant_known(self, key: str) -> tuple[bool, str | None]:
        """``(True, tenant_of(key))`` when that needs no SQL (a fresh entry and no use of the
        key to record now), else ``(False, None)``."""
        now = time.monotonic()
        entry = self._fresh_entry(api_keys.hash_key(key), now)
        if entry is None or self._touch_due(entry[1], now, claim=False):
            return False, None
        return True, entry[0]

    def tenant_of(self, key: str) -> str | None:
        """The tenant of ``key`` (None: unknown or revoked), from the cache or SQL; records the
        key's use at most once per ``touch_interval_s``. May run SQL: call it off the event loop."""
        digest = api_keys.hash_key(key)
        now = time.monotonic()
        entry = self._fresh_entry(digest, now)
        if entry is None:
            row = api_keys.lookup(key)
            valid = row is not None and row.revoked_at is None
            entry = (row.tenant, row.id) if valid and row is not None else (None, None)
            with self._lock:
                self._entries[digest] = (now, *entry)
                self._entries.move_to_end(digest)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        tenant, key_id = entry
        if key_id is not None and self._touch_due(key_id, now, claim=True):
            try:
                api_keys.touch(key_id, self.touch_interval_s)
            except Exception as exc:  # bookkeeping: never fail the request for it
                log.warning("could not record the use of API key %s: %s", key_id, exc)
        return tenant


async def get_key_cache(request: Request) -> KeyCache:
    """The app's ``KeyCache`` (one per app)."""
    cache: KeyCache = request.app.state.key_cache
    return cache


def _presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return x_api_key or None


async def get_tenant(
    settings: Annotated[Settings, Depends(get_app_settings)],
    cache: Annotated[KeyCache, Depends(get_key_cache)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """The tenant of the caller, from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

    A key is one of ``settings.api_keys`` (``key=tenant`` pairs from the environment, for a
    single machine) or a key stored hashed in SQL (``stylefarm keys create``; revoked ones are
    refused). With no keys at all, in development only, everyone is ``settings.default_tenant``;
    production always needs a key.

    Async, so a request whose answer the ``KeyCache`` holds costs no thread hop; SQL (a cache
    miss, recording a key's use) runs in the thread pool, never on the event loop.
    """
    env_keys = settings.api_key_tenants()
    if not env_keys and settings.env == "development":
        any_keys = cache.any_keys_known()
        if any_keys is None:
            any_keys = await run_in_threadpool(cache.any_keys)
        if not any_keys:
            return settings.default_tenant
    presented = _presented_key(authorization, x_api_key)
    if not presented:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.")
    tenant = None
    for key, key_tenant in env_keys.items():  # compare against every key: no timing hint
        if hmac.compare_digest(key.encode(), presented.encode()):
            tenant = key_tenant
    if tenant is None:
        known, tenant = cache.tenant_known(presented)
        if not known:
            tenant = await run_in_threadpool(cache.tenant_of, presented)
    if tenant is None:
        raise Unauthorized("The API key is not valid (unknown or revoked).")
    return tenant


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StorageDep = Annotated[Storage, Depends(get_app_storage)]
TenantDep = Annotated[str, Depends(get_tenant)]
