"""The stylefarm REST API: ``uvicorn api.main:app``.

A thin FastAPI app: routers in ``api/routes``, dependencies in ``api/deps.py``, every
error as problem+json from ``api/problems.py``. It never imports torch, the engine or
the worker package: it only writes rows and queue messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from api.allowed_methods import OptionsMiddleware
from api.deps import KeyCache
from api.job_wakeups import JobWakeups
from api.metrics import install_metrics
from api.problems import Problem, document_validation_problems, install_problem_handlers
from api.request_limits import BodyLimitMiddleware
from api.routes import events, fleet, health, inputs, jobs, models, webhooks
from shared.db import session as db_session
from shared.logs import configure_logging
from shared.process_gc import freeze_startup_objects
from shared.settings import Settings, get_settings
from shared.storage import get_storage


def _openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI with the JobSpec sub-schemas and the Problem schema in components."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in jobs.JOB_SPEC_DEFS.items():
        components.setdefault(name, definition)
    components.setdefault("Problem", Problem.model_json_schema())
    document_validation_problems(schema)
    app.openapi_schema = schema
    return schema


#: The web studio: plain HTML, CSS and JavaScript modules, no build step, nothing from the internet.
STUDIO_DIR = Path(__file__).with_name("static")
STUDIO_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data: http: https:; "
    "connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'",
    "Cache-Control": "no-cache",
}


def mount_studio(app: FastAPI) -> None:
    """``/`` serves the studio page, ``/studio/*`` its files (images and results are read
    through the API itself, with the key the page keeps in the browser)."""

    @app.get("/", include_in_schema=False)
    def studio_page() -> FileResponse:
        return FileResponse(STUDIO_DIR / "index.html", headers=STUDIO_HEADERS)

    app.mount("/studio", StaticFiles(directory=STUDIO_DIR), name="studio")


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """Build the app for ``settings`` (default: the environment).

    ``migrate`` runs the Alembic migrations at start-up (safe with several replicas).
    """
    settings = settings or get_settings()
    # Every shared.jobs.store call opens its own session on the default engine: point it here.
    db_session.configure(settings.resolved_database_url, statement_timeout_s=settings.db_statement_timeout_s)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # uvicorn's own loggers log through the same handler and format as ours
        configure_logging(settings, service="api", adopt=("uvicorn", "uvicorn.access"))
        if migrate:
            from shared.db.migrate import upgrade

            await run_in_threadpool(upgrade, settings.resolved_database_url)
        if settings.gc_freeze:
            freeze_startup_objects()  # full GC pauses of ~0.1 s otherwise (shared.process_gc)
        listener = asyncio.create_task(_app.state.job_wakeups.run(), name="job-wakeups")
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    app = FastAPI(
        title="stylefarm",
        version="0.1.0",
        description="Neural style transfer render farm: upload inputs, submit jobs, fetch results.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.storage = get_storage(settings)
    app.state.job_wakeups = JobWakeups(settings.resolved_listen_url)  # the event streams' notifications
    app.state.key_cache = KeyCache(ttl_s=settings.api_key_cache_s, touch_interval_s=settings.api_key_touch_interval_s)
    install_problem_handlers(app)
    app.add_middleware(OptionsMiddleware, routes=app.router.routes)
    app.add_middleware(BodyLimitMiddleware, upload_limit=settings.max_upload_bytes)
    install_metrics(app, settings)  # the outermost middleware: it sees every answer
    for module in (health, inputs, jobs, events, models, fleet, webhooks):
        app.include_router(module.router)
    mount_studio(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
