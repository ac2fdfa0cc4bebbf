"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import SettingsDep, StorageDep
from api.problems import problem_responses
from shared.db.session import session_scope
from shared.errors import RetryableError
from shared.settings import Settings
from shared.storage import Storage

router = APIRouter(tags=["health"])
BROKER_TIMEOUT_S = 1.0


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database() -> None:
    with session_scope() as session:
        session.execute(text("SELECT 1"))


def _check_broker(settings: Settings) -> str:
    url = settings.broker_url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return "skipped (not a Redis URL)"
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def _check_storage(storage: Storage) -> None:
    storage.ping()


@router.get("/readyz", summary="Database, broker and storage are reachable", responses=problem_responses(503))
def readyz(settings: SettingsDep, storage: StorageDep) -> dict[str, Any]:
    """200 with every check "ok", or a 503 problem whose ``checks`` say what failed."""
    checks: dict[str, str] = {}
    for name, check in (
        ("database", _check_database),
        ("broker", lambda: _check_broker(settings)),
        ("storage", lambda: _check_storage(storage)),
    ):
        try:
            outcome = check()
            checks[name] = outcome if isinstance(outcome, str) else "ok"
        except Exception as exc:  # any failure means "not ready"
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    failed = [name for name, outcome in checks.items() if outcome.startswith("error")]
    if failed:
        raise RetryableError(f"Not ready: {', '.join(failed)} unavailable.", checks=checks)
    return {"status": "ok", "checks": checks}
