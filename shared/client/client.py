"""``Client``: the stylefarm REST API from Python, over httpx, with idempotent retries.

::

    from shared.client import Client

    with Client("http://127.0.0.1:8000", api_key="...") as farm:
        spec = farm.with_uploads({"method": "fast", "content": "photo.jpg", "style": 3})
        job = farm.submit(spec)
        job = farm.wait(job.id, on_progress=lambda j: print(j.status, j.progress.fraction))
        if job.status == "succeeded":
            farm.result(job.id, "out.png")

Every error is an ``ApiError`` with the server's RFC 9457 problem (``Unreachable`` when no
server answered, ``WaitTimeout`` when ``wait`` ran out of time). Retries follow
``shared.client.retry``: ``POST /v1/jobs`` always carries an ``Idempotency-Key``, made once
per ``submit`` call and sent again on each of its retries, so a response lost on the way
back never makes a second job.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from shared.client.errors import ApiError, Unreachable, WaitTimeout
from shared.client.retry import RetryPolicy, never_sent, retry_status
from shared.client.sse import EventReader
from shared.client.types import Input, Job, JobPage, Model, Queue, Worker
from shared.errors import InvalidImage
from shared.jobs.methods import parse_spec
from shared.jobs.specs import DATASET_PREFIX, JobSpecModel

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, API_KEY_ENV = "STYLEFARM_URL", "STYLEFARM_API_KEY"
#: An uploaded input's id: the sha256 hex of its bytes.
INPUT_ID = re.compile(r"^[0-9a-f]{64}$")
#: Longest silence on an event stream before reconnecting (the API sends a keep-alive every 15 s).
STREAM_READ_TIMEOUT_S = 40.0
#: Answers of a server without the event stream: ``wait`` polls instead.
NO_EVENTS_STATUSES = frozenset({404, 405, 406, 501})

ProgressHandler = Callable[[Job], object]


class _NoEventStream(Exception):
    """The server (or a proxy in front of it) does not stream events."""


class Client:
    """One farm: ``url`` (default ``$STYLEFARM_URL``, else ``DEFAULT_URL``) and ``api_key``
    (default ``$STYLEFARM_API_KEY``; sent as ``Authorization: Bearer``, which httpx drops on
    a redirect to another host such as a presigned storage URL).

    ``transport`` replaces httpx's (tests pass the app's); ``sleep`` the waits between tries.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        poll_interval_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"Accept": "application/json, application/problem+json", "User-Agent": "stylefarm-client"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.retry = retry or RetryPolicy()
        self.poll_interval_s = poll_interval_s
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self._timeout, transport=transport)

    # --- lifecycle ---
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- inputs and jobs ---
    def upload(self, source: str | os.PathLike[str] | bytes, filename: str | None = None) -> Input:
        """Upload an image or a zip/tar archive (a path or the bytes); its ``id`` is the
        reference job specs use. The same bytes again return the same input."""
        if isinstance(source, bytes):
            data, name = source, filename or "upload.bin"
        else:
            path = Path(source).expanduser()
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InvalidImage(f"{source}: cannot read ({exc.strerror or exc})") from None
            name = filename or path.name
        files = {"file": (name, data, "application/octet-stream")}
        return Input.model_validate(self._json("POST", "/v1/inputs", idempotent=True, files=files))

    def with_uploads(self, spec: Mapping[str, Any] | JobSpecModel) -> dict[str, Any]:
        """The spec as JSON, with every image, video and dataset it names that is a local file
        uploaded and replaced by its input id. Input ids and ``prefix:NAME`` datasets stay;
        anything else is an ``InvalidImage`` (a path that does not exist, a folder)."""
        model = spec if isinstance(spec, JobSpecModel) else parse_spec(dict(spec))
        ids: dict[str, str] = {}
        for ref in [*model.image_refs(), *model.video_refs(), *model.dataset_refs()]:
            path = Path(ref).expanduser()
            if ref in ids or INPUT_ID.match(ref) or ref.startswith(DATASET_PREFIX):
                continue
            if path.is_dir():
                raise InvalidImage(f"{ref}: is a folder; upload a zip or tar archive of its images instead")
            if not path.is_file():
                raise InvalidImage(f"{ref}: no such file (and not an input id)")
            ids[ref] = self.upload(path).id
        data = model.model_dump(mode="json", exclude_unset=True)
        data["method"] = model.model_dump(mode="json", include={"method"})["method"]
        return _replace_strings(data, ids)

    def submit(
        self,
        spec: Mapping[str, Any] | BaseModel,
        *,
        priority: int | None = None,
        queue: str | None = None,
        webhook: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a job (its spec's image references must be input ids: see ``with_uploads``).
        ``priority`` (0 normal .. 9 urgent) and ``queue`` go as query parameters, ``webhook``
        (the URL that gets the job's signed final-status event) beside the spec's fields.
        Without an ``idempotency_key`` one is made for this call; a retry of the call's
        request reuses it, so the server creates the job at most once."""
        if isinstance(spec, BaseModel):
            body = spec.model_dump(mode="json", exclude_unset=True)
            body["method"] = spec.model_dump(mode="json", include={"method"})["method"]
        else:
            body = dict(spec)
        if webhook is not None:
            body["webhook"] = webhook
        params = {k: v for k, v in (("priority", priority), ("queue", queue)) if v is not None}
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        data = self._json("POST", "/v1/jobs", idempotent=True, json=body, params=params, headers=headers)
        return Job.model_validate(data)

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        """Ask for the job to stop: a queued job is canceled at once, a running one at its
        next step (``wait`` for it); a finished one is a 409 ``ApiError``."""
        return Job.model_validate(self._json("POST", f"/v1/jobs/{job_id}/cancel", idempotent=False))

    def jobs(
        self, *, status: str | None = None, method: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> JobPage:
        """One page of the caller's jobs, newest first; pass ``next_cursor`` for the next."""
        params: dict[str, Any] = {"limit": limit}
        params.update({k: v for k, v in (("status", status), ("method", method), ("cursor", cursor)) if v})
        return JobPage.model_validate(self._json("GET", "/v1/jobs", params=params))

    def iter_jobs(self, *, status: str | None = None, method: str | None = None, page_size: int = 100) -> Iterator[Job]:
        """Every job of the caller, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.jobs(status=status, method=method, limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def result_bytes(self, job_id: str) -> bytes:
        """The PNG a succeeded job made (following the API's redirect to storage); a 409
        ``ApiError`` while the job has not succeeded."""
        return self._send("GET", f"/v1/jobs/{job_id}/result", idempotent=True, follow_redirects=True).content

    def result(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Download the result to ``path`` (written whole or not at all)."""
        out = Path(path)
        data = self.result_bytes(job_id)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".{out.name}.part")
        try:
            part.write_bytes(data)
            os.replace(part, out)
        finally:
            part.unlink(missing_ok=True)
        return out

    # --- the farm ---
    def models(self) -> list[Model]:
        return [Model.model_validate(m) for m in self._json("GET", "/v1/models")["items"]]

    def workers(self) -> list[Worker] | None:
        """The live workers; None when the server has no ``/v1/workers``."""
        items = self._optional_items("/v1/workers")
        return None if items is None else [Worker.model_validate(w) for w in items]

    def queues(self) -> list[Queue] | None:
        """Depth of each queue; None when the server has no ``/v1/queues``."""
        items = self._optional_items("/v1/queues")
        return None if items is None else [Queue.model_validate(q) for q in items]

    # --- waiting ---
    def wait(self, job_id: str, *, timeout: float | None = None, on_progress: ProgressHandler | None = None) -> Job:
        """Block until the job is succeeded, failed or canceled and return it.

        Watches ``GET /v1/jobs/{id}/events`` (reconnecting with ``Last-Event-ID`` when the
        stream breaks) and polls ``GET /v1/jobs/{id}`` every ``poll_interval_s`` when the
        server has no event stream. ``on_progress(job)`` sees every state observed, the
        first one included. ``WaitTimeout`` after ``timeout`` seconds (the job goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        notify = on_progress or (lambda j: None)
        notify(job)
        last_id: str | None = None
        breaks = 0  # stream breaks in a row without an event
        while not job.final:
            self._check_deadline(deadline, job, timeout)
            if breaks >= self.retry.attempts:
                return self._poll(job, deadline, timeout, notify)
            delay_ms = None
            try:
                for event_id, seen in self._events(job_id, last_id, deadline):
                    if seen is not None:
                        job, last_id, breaks = seen, event_id, 0
                        notify(job)
                        if job.final:
                            return job
                    self._check_deadline(deadline, job, timeout)
            except _NoEventStream:
                return self._poll(job, deadline, timeout, notify)
            except _StreamBroke as broke:
                delay_ms = broke.retry_ms
            breaks += 1
            self._check_deadline(deadline, job, timeout)
            self._sleep(min(5.0, (delay_ms or 1000) / 1000))
        return job

    def _events(
        self, job_id: str, last_id: str | None, deadline: float | None
    ) -> Iterator[tuple[str | None, Job | None]]:
        """(event id, job) per status/progress event of one connection; (id, None) for every
        other line, so the caller can look at its clock. Ends with the stream."""
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        read = STREAM_READ_TIMEOUT_S if deadline is None else min(STREAM_READ_TIMEOUT_S, deadline - time.monotonic())
        timeout = httpx.Timeout(self._timeout.connect or 10.0, read=max(0.5, read))
        path = f"/v1/jobs/{job_id}/events"
        try:
            response = self._send("GET", path, idempotent=True, stream=True, headers=headers, timeout=timeout)
        except ApiError as exc:
            if exc.status in NO_EVENTS_STATUSES and not isinstance(exc, Unreachable):
                raise _NoEventStream from exc
            raise
        reader = EventReader()
        try:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise _NoEventStream
            for line in response.iter_lines():
                event = reader.feed(line)
                if event is not None and event.event in ("status", "progress"):
                    yield event.id, Job.model_validate_json(event.data)
                else:
                    yield last_id, None
        except httpx.TransportError as exc:  # dropped, or silent for longer than the read timeout
            raise _StreamBroke(reader.retry_ms) from exc
        finally:
            response.close()
        raise _StreamBroke(reader.retry_ms)  # ended before a final status (e.g. the API lost its database)

    def _poll(self, job: Job, deadline: float | None, timeout: float | None, notify: ProgressHandler) -> Job:
        seen = (job.status, job.progress)
        while not job.final:
            self._check_deadline(deadline, job, timeout)
            self._sleep(self.poll_interval_s)
            job = self.get(job.id)
            if (job.status, job.progress) != seen:
                seen = (job.status, job.progress)
                notify(job)
        return job

    @staticmethod
    def _check_deadline(deadline: float | None, job: Job, timeout: float | None) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(job.id, timeout or 0.0, job.status)

    # --- HTTP with retries ---
    def _optional_items(self, path: str) -> list[Any] | None:
        try:
            return list(self._json("GET", path)["items"])
        except ApiError as exc:
            if exc.status == 404 and not isinstance(exc, Unreachable):
                return None
            raise

    def _json(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        """The JSON of the answer; GETs are idempotent unless told otherwise."""
        idempotent = method == "GET" if idempotent is None else idempotent
        return self._send(method, path, idempotent=idempotent, **kwargs).json()

    def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        stream: bool = False,
        follow_redirects: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with the retries of ``shared.client.retry``; the response of a 2xx/3xx,
        else ``ApiError`` (``Unreachable`` when no answer came)."""
        attempts = max(1, self.retry.attempts)
        for attempt in range(1, attempts + 1):
            request = self._http.build_request(method, path, **kwargs)
            try:
                response = self._http.send(request, stream=stream, follow_redirects=follow_redirects)
            except httpx.UnsupportedProtocol as exc:
                raise Unreachable(str(request.url), str(exc)) from exc
            except httpx.TransportError as exc:
                if attempt == attempts or not (idempotent or never_sent(exc)):
                    raise Unreachable(str(request.url), _reason(exc, attempt)) from exc
                self._sleep(self.retry.delay(attempt))
                continue
            if response.status_code < 400:
                return response
            if attempt < attempts and retry_status(response, idempotent):
                retry_after = response.headers.get("Retry-After")
                response.close()
                self._sleep(self.retry.delay(attempt, retry_after))
                continue
            if stream:
                response.read()
                response.close()
            raise ApiError.from_response(response)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


class _StreamBroke(Exception):
    def __init__(self, retry_ms: int | None) -> None:
        super().__init__("the event stream broke")
        self.retry_ms = retry_ms


def _reason(exc: httpx.TransportError, attempts: int) -> str:
    text = str(exc) or type(exc).__name__
    return f"{text} ({attempts} {'try' if attempts == 1 else 'tries'})"


def _replace_strings(value: Any, mapping: Mapping[str, str]) -> Any:
    """``value`` with every string that is a key of ``mapping`` replaced by its value."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, dict):
        return {k: _replace_strings(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, mapping) for v in value]
    return value
