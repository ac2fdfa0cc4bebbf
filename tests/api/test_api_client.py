"""The Python client (``shared.client``) against the real API served by uvicorn in this process.

The network failures are played by ``Scripted``, an httpx transport in front of the real one:
it can drop a response after the server answered (the request was processed), refuse a
connection before anything was sent, or answer like a proxy in front of the API (502, 503,
504, 429). The test plays the worker through ``shared.jobs.store``, as a worker process would.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from shared.cli.stack import free_port
from shared.client import NO_RETRY, ApiError, Client, Job, RetryPolicy, Unreachable, WaitTimeout
from shared.errors import InvalidImage
from shared.jobs import store
from shared.jobs.outcomes import RenderKeys, RenderOutcome
from shared.settings import Settings
from shared.storage import get_storage, result_key

from api_helpers import EnqueueRecorder, png_bytes

pytestmark = pytest.mark.timeout(60)

#: What ``Scripted`` does with a request: None forwards it to the server; "drop" forwards it
#: and then loses the answer; "refuse" fails to connect; an int answers that status itself.
Action = str | int | None


class Scripted(httpx.BaseTransport):
    """The real transport, with scripted failures; records every request and what came of it."""

    def __init__(self, script: Callable[[httpx.Request, int], Action], headers: dict[str, str] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.script = script
        self.headers = headers or {}
        self.seen: list[tuple[httpx.Request, str]] = []

    def calls(self, method: str, path_part: str) -> list[tuple[httpx.Request, str]]:
        return [(r, out) for r, out in self.seen if r.method == method and path_part in r.url.path]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        earlier = sum(1 for r, _ in self.seen if r.method == request.method and r.url.path == request.url.path)
        action = self.script(request, earlier)
        if action == "refuse":
            self.seen.append((request, "refused"))
            raise httpx.ConnectError("connection refused (scripted)", request=request)
        if isinstance(action, int):
            self.seen.append((request, str(action)))
            body = {"type": "about:blank", "title": "Proxy", "status": action, "detail": f"scripted {action}"}
            return httpx.Response(action, json=body, headers=self.headers, request=request)
        response = self.inner.handle_request(request)
        if action == "drop":
            response.read()
            response.close()
            self.seen.append((request, f"dropped {response.status_code}"))
            raise httpx.ReadError("connection reset after the server answered (scripted)", request=request)
        self.seen.append((request, str(response.status_code)))
        return response

    def close(self) -> None:
        self.inner.close()


class Sleeps(list[float]):
    """Records the client's waits instead of sleeping them (the retry tests stay fast)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def first(n: int, action: Action, method: str = "", path_part: str = "") -> Callable[[httpx.Request, int], Action]:
    """Script: ``action`` for the first ``n`` matching requests, then forward."""

    def script(request: httpx.Request, earlier: int) -> Action:
        matches = (not method or request.method == method) and path_part in request.url.path
        return action if matches and earlier < n else None

    return script


@pytest.fixture
def content(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(32, 24))
    return path


@pytest.fixture
def farm(api_url: str) -> Iterator[Client]:
    with Client(api_url, sleep=Sleeps()) as client:
        yield client


def play_worker(job_id: str, settings: Settings, *, delay: float = 0.2) -> threading.Thread:
    """A worker in a thread: claims the job, reports two steps, stores a PNG, succeeds."""

    def run() -> None:
        time.sleep(delay)
        claimed = store.claim_job(job_id, task_id="t1", worker="w1")
        assert claimed is not None
        for step in (1, 2):
            time.sleep(delay)
            store.record_progress(job_id, token=claimed.fencing_token, step=step, total=4, stage="render")
        time.sleep(delay)  # the last progress state lasts as long as the others
        key = result_key("default", job_id, "output.png")
        get_storage(settings).put_bytes(key, png_bytes(20, 10, (1, 2, 3)), "image/png")
        outcome = RenderOutcome(keys=RenderKeys(image=key), width=20, height=10, size_bytes=100, metrics={})
        store.succeed_job(job_id, outcome.model_dump(mode="json"), token=claimed.fencing_token)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# --- inputs, submit, list ----------------------------------------------------------------


def test_given_a_local_image_when_submitted_expect_uploaded_and_queued(
    farm: Client, content: Path, enqueued: EnqueueRecorder
) -> None:
    # given a spec naming a local file
    # when the client uploads what it names and submits it
    body = farm.with_uploads({"method": "fast", "content": str(content), "style": 3})
    job = farm.submit(body)
    # expect the file replaced by its input id (sha256 of the bytes), the job queued and sent to the broker
    assert body == {"method": "fast", "content": hashlib.sha256(content.read_bytes()).hexdigest(), "style": 3}
    assert isinstance(job, Job) and job.status == "queued" and job.method == "fast" and not job.final
    assert job.spec["content"] == body["content"] and enqueued.job_ids == [job.id]
    assert farm.get(job.id).id == job.id
    # and an input id or a path that is not there
    assert farm.with_uploads(body) == body
    with pytest.raises(InvalidImage, match="no such file"):
        farm.with_uploads({"method": "fast", "content": str(content.with_name("missing.png"))})


def test_given_three_jobs_when_listed_by_pages_expect_all_newest_first(farm: Client, content: Path) -> None:
    input_id = farm.upload(content).id
    ids = [farm.submit({"method": "fast", "content": input_id, "style": s}).id for s in range(3)]
    page = farm.jobs(limit=2)
    assert [j.id for j in page.items] == ids[::-1][:2] and page.next_cursor
    assert [j.id for j in farm.iter_jobs(page_size=2)] == ids[::-1]
    assert [j.id for j in farm.jobs(method="fast", limit=5).items] == ids[::-1]


# --- retries ------------------------------------------------------------------------------


def test_given_a_response_dropped_after_the_job_was_created_expect_one_job(
    api_url: str, content: Path, enqueued: EnqueueRecorder
) -> None:
    # given a network that loses the answer to the first POST /v1/jobs (the server did create the job)
    transport = Scripted(first(1, "drop", "POST", "/v1/jobs"))
    sleeps = Sleeps()
    with Client(api_url, transport=transport, sleep=sleeps) as farm:
        body = farm.with_uploads({"method": "fast", "content": str(content)})
        # when the client submits
        job = farm.submit(body)
    # expect a retry with the same Idempotency-Key, answered as a replay (200) of the same job
    posts = transport.calls("POST", "/v1/jobs")
    assert [out for _, out in posts] == ["dropped 202", "200"]
    keys = {r.headers["Idempotency-Key"] for r, _ in posts}
    assert len(keys) == 1 and len(next(iter(keys))) >= 16
    # and one job in the store, queued once
    jobs, _ = store.list_jobs("default")
    assert [j.id for j in jobs] == [job.id] and enqueued.job_ids == [job.id]
    assert len(sleeps) == 1
    # and without retries the same loss is reported, though the job was made: the key is what saves it
    transport = Scripted(first(1, "drop", "POST", "/v1/jobs"))
    with Client(api_url, transport=transport, retry=NO_RETRY) as farm, pytest.raises(Unreachable, match="reset"):
        farm.submit(body)


def test_given_each_submit_call_expect_its_own_key(api_url: str, content: Path) -> None:
    transport = Scripted(lambda r, n: None)
    with Client(api_url, transport=transport) as farm:
        body = farm.with_uploads({"method": "fast", "content": str(content)})
        a, b = farm.submit(body), farm.submit(body)
        c = farm.submit(body, idempotency_key="mine-1")
        d = farm.submit(body, idempotency_key="mine-1")
    assert a.id != b.id and c.id == d.id
    assert [out for _, out in transport.calls("POST", "/v1/jobs")] == ["202", "202", "202", "200"]


def test_given_placement_and_a_webhook_expect_them_beside_the_spec(api_url: str) -> None:
    transport = Scripted(first(1, 422, "POST", "/v1/jobs"))
    with Client(api_url, transport=transport) as farm, pytest.raises(ApiError):
        farm.submit({"method": "fast", "content": "a" * 64}, priority=7, queue="cpu", webhook="https://hooks.test/x")
    ((request, _),) = transport.seen
    assert json.loads(request.content) == {"method": "fast", "content": "a" * 64, "webhook": "https://hooks.test/x"}
    assert dict(request.url.params) == {"priority": "7", "queue": "cpu"}


def test_given_502_503_504_expect_get_retried_with_backoff_or_retry_after(api_url: str) -> None:
    # given a proxy that answers 502, 503 and 504 before it lets the request through
    sleeps = Sleeps()
    transport = Scripted(first(3, 502, "GET", "/v1/jobs"))
    statuses = iter([502, 503, 504])
    transport.script = lambda r, n: next(statuses, None)
    with Client(api_url, transport=transport, sleep=sleeps) as client:
        page = client.jobs()
    # expect the answer after three retries, waiting 0.5 s, 1 s, 2 s (each + up to 25 % jitter)
    assert page.items == [] and [out for _, out in transport.seen] == ["502", "503", "504", "200"]
    assert len(sleeps) == 3
    for wait, base in zip(sleeps, (0.5, 1.0, 2.0), strict=True):
        assert base <= wait <= base * 1.25
    # and when the answers carry Retry-After, that wait instead
    sleeps.clear()
    transport = Scripted(first(2, 503, "GET", "/v1/jobs"), headers={"Retry-After": "3"})
    with Client(api_url, transport=transport, sleep=sleeps) as client:
        client.jobs()
    assert sleeps == [3.0, 3.0] and [out for _, out in transport.seen] == ["503", "503", "200"]


def test_given_429_expect_retried_only_with_retry_after(api_url: str) -> None:
    sleeps = Sleeps()
    transport = Scripted(first(1, 429), headers={"Retry-After": "2"})
    with Client(api_url, transport=transport, sleep=sleeps) as client:
        assert client.jobs().items == []
    assert sleeps == [2.0] and len(transport.seen) == 2
    transport = Scripted(first(1, 429))
    with Client(api_url, transport=transport, sleep=sleeps) as client, pytest.raises(ApiError) as caught:
        client.jobs()
    assert caught.value.status == 429 and len(transport.seen) == 1


def test_given_4xx_expect_never_retried_and_the_problem_carried(api_url: str) -> None:
    transport = Scripted(lambda r, n: None)
    with Client(api_url, transport=transport, sleep=Sleeps()) as client:
        with pytest.raises(ApiError) as missing:
            client.get("no-such-job")
        with pytest.raises(ApiError) as invalid:
            client.submit({"method": "fast", "size": 5})
    # expect one request each, and the RFC 9457 problem on the exception
    assert len(transport.seen) == 2
    assert missing.value.status == 404 and missing.value.type.endswith("/not-found")
    assert "no-such-job" in missing.value.detail and missing.value.problem["status"] == 404
    error = invalid.value
    assert error.status == 422 and error.slug == "invalid-spec" and error.title == "Invalid job spec"
    locs = {e["loc"] for e in error.fields["errors"]}
    assert {"fast.content", "fast.size"} <= locs and "content" in error.detail


def test_given_a_cancel_whose_answer_is_lost_expect_no_retry_but_a_refused_connection_retried(
    farm: Client, api_url: str, content: Path
) -> None:
    job = farm.submit(farm.with_uploads({"method": "fast", "content": str(content)}))
    # a cancel is not idempotent: after a lost answer it is not sent again
    transport = Scripted(first(1, "drop", "POST", "/cancel"))
    with Client(api_url, transport=transport, sleep=Sleeps()) as client, pytest.raises(Unreachable):
        client.cancel(job.id)
    assert [out for _, out in transport.calls("POST", "/cancel")] == ["dropped 202"]
    assert farm.get(job.id).status == "canceled"
    # but a connection that was never made is tried again, whatever the request
    other = farm.submit(farm.with_uploads({"method": "fast", "content": str(content), "style": 1}))
    transport = Scripted(first(1, "refuse", "POST", "/cancel"))
    with Client(api_url, transport=transport, sleep=Sleeps()) as client:
        assert client.cancel(other.id).status == "canceled"
    assert [out for _, out in transport.calls("POST", "/cancel")] == ["refused", "202"]


def test_given_no_server_expect_unreachable_after_the_retries() -> None:
    sleeps = Sleeps()
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, retry=RetryPolicy(attempts=3), sleep=sleeps) as client, pytest.raises(Unreachable) as caught:
        client.get("x")
    assert len(sleeps) == 2 and caught.value.status == 503 and url in caught.value.detail
    assert caught.value.slug == "unreachable" and "3 tries" in caught.value.detail


# --- waiting and results -----------------------------------------------------------------


def test_given_a_job_that_runs_when_waited_expect_its_progress_then_the_result(
    farm: Client, content: Path, settings: Settings, tmp_path: Path
) -> None:
    # given a queued job and a worker that will run it
    job = farm.submit(farm.with_uploads({"method": "fast", "content": str(content)}))
    # each state lasts over two of the event stream's 0.5 s polls, so none is merged away
    worker = play_worker(job.id, settings, delay=1.2)
    seen: list[Job] = []
    # when the client waits for it
    done = farm.wait(job.id, timeout=30, on_progress=seen.append)
    worker.join(5)
    # expect every state in order, from the event stream, and the result downloaded whole
    assert done.status == "succeeded" and done.final and done.result is not None and done.result.width == 20
    assert seen[0].status == "queued" and seen[-1].status == "succeeded"
    fractions = [j.progress.fraction for j in seen if j.status == "running"]
    assert 0.25 in fractions and 0.5 in fractions and fractions == sorted(fractions)
    assert all(j.revision is not None for j in seen[1:])
    out = farm.result(job.id, tmp_path / "nested" / "out.png")
    assert out.read_bytes() == png_bytes(20, 10, (1, 2, 3)) and not list(out.parent.glob(".*part"))


def test_given_an_event_stream_that_breaks_expect_a_resume_with_last_event_id(
    api_url: str, content: Path, settings: Settings
) -> None:
    # given a network that cuts the first event stream after its first event
    transport = CutStream()
    with Client(api_url, transport=transport, sleep=Sleeps()) as farm:
        job = farm.submit(farm.with_uploads({"method": "fast", "content": str(content)}))
        play_worker(job.id, settings)
        # when the client waits
        done = farm.wait(job.id, timeout=30)
    # expect a second connection that resumes after the event it saw, and the final state
    assert done.status == "succeeded"
    assert len(transport.streams) >= 2 and transport.streams[0] is None
    assert transport.streams[1] == transport.first_event_id


def test_given_a_server_without_event_stream_expect_polling(api_url: str, content: Path, settings: Settings) -> None:
    transport = Scripted(first(99, 404, "GET", "/events"))
    with Client(api_url, transport=transport, sleep=time.sleep, poll_interval_s=0.05) as farm:
        job = farm.submit(farm.with_uploads({"method": "fast", "content": str(content)}))
        play_worker(job.id, settings, delay=0.1)
        seen: list[Job] = []
        done = farm.wait(job.id, timeout=30, on_progress=seen.append)
    assert done.status == "succeeded" and len(transport.calls("GET", "/events")) == 1
    assert len(transport.calls("GET", f"/v1/jobs/{job.id}")) > 3 and seen[-1].status == "succeeded"


def test_given_a_job_that_does_not_move_expect_wait_timeout(farm: Client, content: Path) -> None:
    job = farm.submit(farm.with_uploads({"method": "fast", "content": str(content)}))
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        farm.wait(job.id, timeout=0.5)
    assert time.monotonic() - started < 5
    assert caught.value.fields["job_status"] == "queued" and job.id in caught.value.detail


def test_given_a_server_without_fleet_endpoints_expect_none(api_url: str) -> None:
    transport = Scripted(lambda r, n: 404 if r.url.path in ("/v1/workers", "/v1/queues") else None)
    with Client(api_url, transport=transport) as farm:
        assert farm.workers() is None and farm.queues() is None
        assert farm.models() == []


class CutStream(Scripted):
    """Cuts the first event stream after its first event; records each stream's Last-Event-ID."""

    def __init__(self) -> None:
        super().__init__(lambda r, n: None)
        self.streams: list[str | None] = []
        self.first_event_id: str | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.streams.append(request.headers.get("Last-Event-ID"))
        if len(self.streams) > 1:
            return response
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)

        def first_event_then_reset() -> Iterator[bytes]:
            buffer = b""
            for chunk in stream:
                buffer += chunk
                if b"\nid: " in b"\n" + buffer and b"\n\n" in buffer.split(b"id: ", 1)[1]:
                    event = buffer.split(b"id: ", 1)[1].split(b"\n\n", 1)[0]
                    self.first_event_id = event.split(b"\n", 1)[0].decode()
                    yield buffer[: buffer.index(event) + len(event) + 2]
                    raise httpx.ReadError("connection reset mid-stream (scripted)")
            yield buffer

        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Iter(first_event_then_reset(), stream)
        )


class _Iter(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes], inner: httpx.SyncByteStream) -> None:
        self.chunks, self.inner = chunks, inner

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.inner.close()
