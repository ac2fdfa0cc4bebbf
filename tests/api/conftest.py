"""Fixtures for the API tests: the real app on a SQLite file DB and local storage, with
the queue replaced by a recorder (the real-broker end-to-end tests live elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.routes import events
from shared.settings import Settings

from api_helpers import MAX_PIXELS, MAX_UPLOAD, EnqueueRecorder, make_client, record_enqueues, served_by_uvicorn


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        broker_url="redis://127.0.0.1:1/0",  # nothing listens there: readiness must say so
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
    )


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> EnqueueRecorder:
    return record_enqueues(monkeypatch)


@pytest.fixture
def client(settings: Settings, enqueued: EnqueueRecorder) -> Iterator[TestClient]:
    yield from make_client(settings)


@pytest.fixture
def api_url(settings: Settings, enqueued: EnqueueRecorder, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real app served by uvicorn on a free port (streams need a socket; the test client
    buffers whole responses), its event stream polling fast so the tests are quick."""
    from api.main import create_app

    monkeypatch.setattr(events, "POLL_S", 0.02)
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.3)
    with served_by_uvicorn(create_app(settings)) as url:
        yield url
