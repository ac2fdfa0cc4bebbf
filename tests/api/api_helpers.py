"""Helpers shared by the API tests (payloads and problem+json assertions)."""

from __future__ import annotations

import contextlib
import io
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from archive_samples import zip_bytes  # noqa: F401  (re-exported for the API tests)
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from shared.db import session as db_session
from shared.db.orm import Input, Job
from shared.imaging import png_bytes as encode_png
from shared.settings import Settings

MAX_UPLOAD = 300_000
MAX_PIXELS = 1_000_000


@dataclass
class EnqueueRecorder:
    """Stands in for ``shared.broker.client.enqueue_job``; ``fail`` simulates a broker outage."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    def __call__(self, job_id: str, queue: str, priority: int = 0, **kwargs: Any) -> str:
        if self.fail:
            from shared.errors import BrokerUnavailable

            raise BrokerUnavailable("the job queue is unreachable (test)")
        self.calls.append({"job_id": job_id, "queue": queue, "priority": priority, **kwargs})
        return f"task-{len(self.calls)}"

    @property
    def job_ids(self) -> list[str]:
        return [c["job_id"] for c in self.calls]


def record_enqueues(monkeypatch: pytest.MonkeyPatch) -> EnqueueRecorder:
    """Replace ``shared.broker.client.enqueue_job`` with a fresh recorder for one test."""
    import shared.broker.client

    recorder = EnqueueRecorder()
    monkeypatch.setattr(shared.broker.client, "enqueue_job", recorder)
    return recorder


def make_client(settings: Settings) -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(settings)) as client:
        yield client
    db_session.configure(None)
    db_session.dispose_engines()


def png_bytes(width: int = 16, height: int = 12, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    return encode_png(Image.new("RGB", (width, height), color))


def jpeg_bytes(width: int = 16, height: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


def upload(client: TestClient, data: bytes, name: str = "x.png", **kwargs: Any) -> Any:
    return client.post("/v1/inputs", files={"file": (name, data, "application/octet-stream")}, **kwargs)


def upload_id(client: TestClient, data: bytes | None = None, **kwargs: Any) -> str:
    response = upload(client, data if data is not None else png_bytes(), **kwargs)
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def assert_problem(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is RFC 9457 problem+json with ``status`` (and type slug)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"].startswith("https://")
    if slug is not None:
        assert body["type"].endswith("/" + slug), body
    return body


def post_job_text(client: TestClient, body: bytes | str, content_type: str = "application/json") -> Any:
    """POST raw bytes to /v1/jobs (for bodies ``json=`` cannot send: NaN tokens, bad nesting)."""
    data = body.encode() if isinstance(body, str) else body
    return client.post("/v1/jobs", content=data, headers={"content-type": content_type})


def _row_counts() -> tuple[int, int]:
    """(job rows, input rows) across every tenant."""
    with db_session.session_scope() as session:
        jobs = session.scalar(select(func.count()).select_from(Job)) or 0
        inputs = session.scalar(select(func.count()).select_from(Input)) or 0
    return jobs, inputs


def stored_counts(settings: Settings) -> tuple[int, int, int]:
    """(job rows, input rows, stored objects) across every tenant."""
    root = settings.resolved_storage_dir
    objects = sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0
    return (*_row_counts(), objects)


def assert_nothing_queued(enqueued: EnqueueRecorder) -> None:
    """No job row was created and nothing was sent to the broker."""
    assert (_row_counts()[0], enqueued.calls) == (0, [])


# --- the event stream, read from a real server (tests/api/test_api_events*.py) ---


@dataclass
class Event:
    id: int
    kind: str
    data: dict[str, Any]


class Stream:
    """Reads one event stream in a thread; ``next()`` waits for the next event."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[Event | None] = queue.Queue()
        self.comments: list[str] = []
        self.status_code = 0
        self.content_type = ""
        self.opened = threading.Event()
        self.client = httpx.Client(timeout=httpx.Timeout(20, read=20))
        self.thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                self.status_code, self.content_type = response.status_code, response.headers.get("content-type", "")
                self.opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    elif "data" in fields:
                        self.events.put(Event(int(fields["id"]), fields["event"], json.loads(fields["data"])))
                        fields = {}
                    else:
                        fields = {}  # the retry: block
        except httpx.HTTPError:
            pass  # closed by close()
        finally:
            self.opened.set()
            self.events.put(None)  # end of stream

    def next(self, timeout: float = 10) -> Event | None:
        """The next event, or None when the stream ended."""
        return self.events.get(timeout=timeout)

    def ended(self, timeout: float = 10) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def close(self) -> None:
        self.client.close()
        self.thread.join(10)


def new_job(api_url: str) -> str:
    with httpx.Client(base_url=api_url) as client:
        content = client.post("/v1/inputs", files={"file": ("c.png", png_bytes(), "image/png")}).json()["id"]
        response = client.post("/v1/jobs", json={"method": "fast", "content": content})
        assert response.status_code == 202, response.text
        return response.json()["id"]


@contextlib.contextmanager
def served_by_uvicorn(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free port in a thread (streams need a socket; the test
    client buffers whole responses): its base URL; stopped, and the engines disposed, after."""
    import uvicorn

    from shared.cli.stack import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        db_session.configure(None)
        db_session.dispose_engines()
