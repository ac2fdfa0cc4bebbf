"""Bad input, request bodies: over-large, streamed, of the wrong media type, or not a JSON object.

Every body has a byte limit (``api.request_limits``): 256 KiB for job specs, the upload cap
for files. Over it is a 413 before the body is parsed, whether the size is declared or the
body streams in chunks; nothing is stored or queued. A job body must be JSON (415 for
another media type) holding an object (422 ``invalid-spec`` for anything else).

Uploaded files that are not usable images or archives (garbage, truncated, a format not
accepted, too many pixels, empty, no images, members escaping the archive) are covered by
``test_api_inputs.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient

from api.request_limits import MAX_JSON_BODY, MULTIPART_ENVELOPE
from shared.settings import Settings

from api_helpers import (
    MAX_UPLOAD,
    EnqueueRecorder,
    assert_nothing_queued,
    assert_problem,
    post_job_text,
    stored_counts,
    upload,
)


def _spec_padded_to(size: int) -> bytes:
    """A valid-looking job spec made ``size`` bytes long with whitespace."""
    head = b'{"method": "fast", "content": "c"'
    return head + b" " * (size - len(head) - 1) + b"}"


def test_given_declared_body_over_limit_expect_413_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder
) -> None:
    # when a job body is one byte over the limit (Content-Length says so)
    response = post_job_text(client, _spec_padded_to(MAX_JSON_BODY + 1))
    # then 413 names the limit, and nothing is queued
    body = assert_problem(response, 413, "payload-too-large")
    assert body["limit"] == MAX_JSON_BODY and str(MAX_JSON_BODY) in body["detail"]
    assert_nothing_queued(enqueued)


def test_given_body_at_limit_expect_it_read(client: TestClient, enqueued: EnqueueRecorder) -> None:
    # when the body is exactly at the limit, then it is parsed (the spec check answers)
    response = post_job_text(client, _spec_padded_to(MAX_JSON_BODY))
    assert "does not exist" in assert_problem(response, 422, "invalid-spec")["detail"]
    assert_nothing_queued(enqueued)


def test_given_chunked_body_over_limit_expect_413_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder
) -> None:
    # given a body that streams in 64 KiB chunks with no Content-Length, 1 MiB in all
    def chunks() -> Iterator[bytes]:
        yield b'{"method": "fast", "content": "'
        for _ in range(16):
            yield b"c" * 65536

    # when it is submitted, then it is cut off with 413 and nothing is queued
    response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(response, 413, "payload-too-large")
    assert_nothing_queued(enqueued)


def test_given_upload_far_over_cap_expect_413_and_nothing_written(client: TestClient, settings: Settings) -> None:
    # given the upload cap (the route's own check covers a file just over it: test_api_inputs)
    before = stored_counts(settings)
    # when a file bigger than the cap plus the multipart envelope is uploaded
    response = upload(client, b"\x00" * (MAX_UPLOAD + MULTIPART_ENVELOPE + 1))
    # then 413 names the file limit, and no row or object was written
    assert str(MAX_UPLOAD) in assert_problem(response, 413, "payload-too-large")["detail"]
    assert stored_counts(settings) == before


def test_given_chunked_upload_over_cap_expect_413_and_nothing_written(client: TestClient, settings: Settings) -> None:
    # given a multipart upload streamed without Content-Length, far over the cap
    boundary = "x" * 16

    def chunks() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()
        for _ in range(8):
            yield b"\x00" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    before = stored_counts(settings)
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    # when it is sent, then 413, and nothing was written
    assert_problem(client.post("/v1/inputs", content=chunks(), headers=headers), 413, "payload-too-large")
    assert stored_counts(settings) == before


def test_given_job_body_not_json_media_type_expect_415(client: TestClient, enqueued: EnqueueRecorder) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = post_job_text(client, '{"method": "fast", "content": "c"}', content_type=content_type)
        assert content_type.split(";")[0] in assert_problem(response, 415, "unsupported-media-type")["detail"]
    # JSON media types with parameters or a +json suffix are JSON
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = post_job_text(client, '{"method": "fast", "content": "c"}', content_type=content_type)
        assert "does not exist" in assert_problem(response, 422, "invalid-spec")["detail"]
    assert_nothing_queued(enqueued)


def test_given_body_not_a_json_object_expect_422(client: TestClient, enqueued: EnqueueRecorder) -> None:
    cases = [
        (b"{nope", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"", "must be a JSON object"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"fast"', "must be a JSON object"),
    ]
    for raw, message in cases:
        assert message in assert_problem(post_job_text(client, raw), 422, "invalid-spec")["detail"], raw
    assert_nothing_queued(enqueued)
