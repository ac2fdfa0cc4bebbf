"""GET /v1/jobs/{id}/events (server-sent events) and GET /v1/jobs/{id}/preview.

The event stream is read from a real uvicorn server in this process (the test client
buffers whole responses, a stream needs a socket); the test plays the worker by calling
``shared.jobs.store`` directly, as a worker process would.
"""

from __future__ import annotations

import io
import queue

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from shared.jobs import store
from shared.jobs.outcomes import RenderKeys, RenderOutcome
from shared.settings import Settings
from shared.storage import get_storage, preview_key

from api_helpers import EnqueueRecorder, Stream, assert_problem, make_client, new_job, upload_id

pytestmark = pytest.mark.timeout(60)


def test_given_a_job_when_watched_expect_every_change_in_order_then_the_stream_ends(api_url: str) -> None:
    # given a queued job and a client watching its events
    job_id = new_job(api_url)
    stream = Stream(f"{api_url}/v1/jobs/{job_id}/events")
    assert stream.status_code == 200 and stream.content_type.startswith("text/event-stream")
    first = stream.next()
    assert first is not None and first.kind == "status" and first.data["status"] == "queued"
    # when a worker claims it, reports progress twice (the second with a preview) and succeeds
    token = store.claim_job(job_id, task_id="t1", worker="w1").fencing_token
    running = stream.next()
    store.record_progress(job_id, token=token, step=1, total=4, stage="render")
    half = stream.next()
    store.record_progress(job_id, token=token, step=2, total=4, stage="render", preview=True)
    preview = stream.next()
    outcome = RenderOutcome(keys=RenderKeys(image=f"tenants/default/jobs/{job_id}/output.png"), width=16, height=12,
                            size_bytes=100, metrics={})
    store.succeed_job(job_id, outcome.model_dump(mode="json"), token=token)
    done = stream.next()
    # expect one event per change, in order, with increasing ids, then the end of the stream
    assert running and half and preview and done
    assert [(e.kind, e.data["status"]) for e in (running, half, preview, done)] == [
        ("status", "running"), ("progress", "running"), ("progress", "running"), ("status", "succeeded")
    ]
    assert half.data["progress"]["step"] == 1 and half.data["progress"]["fraction"] == 0.25
    assert "preview" not in half.data["links"]
    assert preview.data["links"]["preview"] == f"/v1/jobs/{job_id}/preview?v=1"
    assert done.data["links"]["result"] == f"/v1/jobs/{job_id}/result"
    ids = [e.id for e in (first, running, half, preview, done)]
    assert ids == sorted(set(ids)) and all(e.data["revision"] == e.id for e in (first, running, done))
    assert stream.next() is None and stream.ended()
    stream.close()


def test_given_a_client_that_reconnects_with_last_event_id_expect_no_status_change_skipped(api_url: str) -> None:
    # given a client that saw the job start running, then lost its connection
    job_id = new_job(api_url)
    token = store.claim_job(job_id, task_id="t1", worker="w1").fencing_token
    stream = Stream(f"{api_url}/v1/jobs/{job_id}/events")
    seen = stream.next()
    assert seen is not None and seen.data["status"] == "running"
    stream.close()
    # when, while it was away, the job was canceled
    store.request_cancel(job_id, "default")
    store.mark_canceled(job_id, token=token)
    resumed = Stream(f"{api_url}/v1/jobs/{job_id}/events", {"Last-Event-ID": str(seen.id)})
    # expect the resumed stream to say so at once, as a status event, and then end
    event = resumed.next()
    assert event is not None and event.kind == "status" and event.data["status"] == "canceled"
    assert event.id > seen.id
    assert resumed.next() is None and resumed.ended()
    resumed.close()
    # and a client that already has the final event gets an empty stream that ends
    again = Stream(f"{api_url}/v1/jobs/{job_id}/events", {"Last-Event-ID": str(event.id)})
    assert again.next() is None and again.ended()
    again.close()


def test_given_a_resumed_stream_with_nothing_new_expect_keepalives_then_the_next_change(api_url: str) -> None:
    # given a client resuming with the job's current revision
    job_id = new_job(api_url)
    stream = Stream(f"{api_url}/v1/jobs/{job_id}/events")
    first = stream.next()
    assert first is not None
    stream.close()
    resumed = Stream(f"{api_url}/v1/jobs/{job_id}/events", {"Last-Event-ID": str(first.id)})
    # when nothing happens for a while
    with pytest.raises(queue.Empty):
        resumed.next(timeout=1.0)
    # expect keep-alive comments only; then the next change arrives as a status event
    assert resumed.comments and set(resumed.comments) == {": keep-alive"}
    store.claim_job(job_id, task_id="t1", worker="w1")
    event = resumed.next()
    assert event is not None and event.kind == "status" and event.data["status"] == "running"
    resumed.close()


def test_given_another_tenants_job_when_events_requested_expect_404(
    settings: Settings, enqueued: EnqueueRecorder
) -> None:
    # given a job of tenant acme
    for client in make_client(settings.model_copy(update={"api_keys": "key-a=acme,key-b=globex"})):
        acme = {"X-API-Key": "key-a"}
        content = upload_id(client, headers=acme)
        job_id = client.post("/v1/jobs", json={"method": "fast", "content": content}, headers=acme).json()["id"]
        # when globex asks for its events or its preview, expect 404 problems as for a missing job
        assert_problem(client.get(f"/v1/jobs/{job_id}/events", headers={"X-API-Key": "key-b"}), 404, "not-found")
        assert_problem(client.get(f"/v1/jobs/{job_id}/preview", headers={"X-API-Key": "key-b"}), 404, "not-found")
        assert_problem(client.get(f"/v1/jobs/{job_id}/events"), 401)


def test_given_openapi_expect_the_event_stream_declared(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert any(p["name"].lower() == "last-event-id" and p["in"] == "header" for p in operation["parameters"])


def test_given_preview_uploaded_by_worker_expect_served_until_replaced(client: TestClient, settings: Settings) -> None:
    from worker.job_runtime import JobRuntime

    # given a running job without a preview yet
    content = upload_id(client)
    job_id = client.post("/v1/jobs", json={"method": "fast", "content": content}).json()["id"]
    token = store.claim_job(job_id, task_id="t1", worker="w1").fencing_token
    assert_problem(client.get(f"/v1/jobs/{job_id}/preview"), 404, "not-found")
    # when the worker's progress callback receives a preview image
    runtime = JobRuntime(job_id=job_id, tenant="default", settings=settings, storage=get_storage(settings),
                         token=token)
    from shared.engine.context import Progress

    runtime.last_progress_write = 0.0  # an interval after the claim: past the progress throttle
    runtime.progress(Progress(step=1, total=10, preview=Image.new("RGB", (40, 30), (10, 200, 30))))
    # expect the PNG at /preview, its version in the job's links, and the key in storage
    response = client.get(f"/v1/jobs/{job_id}/preview")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-cache"
    img = Image.open(io.BytesIO(response.content))
    assert img.size == (40, 30) and img.getpixel((0, 0)) == (10, 200, 30)
    assert client.get(f"/v1/jobs/{job_id}").json()["links"]["preview"] == f"/v1/jobs/{job_id}/preview?v=1"
    assert get_storage(settings).exists(preview_key("default", job_id))
    # and a later preview replaces it under a new version
    runtime.last_progress_write = 0.0  # past the progress throttle
    runtime.progress(Progress(step=2, total=10, preview=Image.new("RGB", (40, 30), (250, 0, 0))))
    assert client.get(f"/v1/jobs/{job_id}").json()["links"]["preview"].endswith("?v=2")
    img = Image.open(io.BytesIO(client.get(f"/v1/jobs/{job_id}/preview").content))
    assert img.getpixel((0, 0)) == (250, 0, 0)
