"""Fixtures for the API tests: the real app on a SQLite file DB and local storage, with
the queue replaced by a recorder (the real-broker end-to-end tests live elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared.settings import Settings

from api_helpers import MAX_PIXELS, MAX_UPLOAD, EnqueueRecorder, make_client, record_enqueues


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
