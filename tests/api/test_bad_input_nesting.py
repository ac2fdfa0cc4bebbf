"""Bad input, nesting: a JSON body nests at most ``MAX_JSON_DEPTH`` arrays/objects.

100,000 ``[`` used to be a 500 (``RecursionError`` in the JSON parser); the depth is now
measured before parsing and a body nested too deep is a 422 ``invalid-spec``, quickly.
Brackets inside strings do not count.
"""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from api.request_limits import MAX_JSON_DEPTH

from api_helpers import EnqueueRecorder, assert_nothing_queued, assert_problem, post_job_text


def test_given_100000_open_brackets_expect_422_quickly_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder
) -> None:
    # when the body is 100,000 '['
    started = time.monotonic()
    response = post_job_text(client, "[" * 100_000)
    # then a 422 says how deep it nests and the limit, fast, and nothing is queued
    detail = assert_problem(response, 422, "invalid-spec")["detail"]
    assert "100000 levels" in detail and f"at most {MAX_JSON_DEPTH}" in detail
    assert time.monotonic() - started < 5
    assert_nothing_queued(enqueued)


def _nested(depth: int) -> str:
    """A fast spec whose ``mix`` is an object nested so the whole body has ``depth`` levels."""
    inner = "1"
    for _ in range(depth - 1):
        inner = f'{{"0": {inner}}}'
    return f'{{"method": "fast", "content": "c", "mix": {inner}}}'


def test_given_depth_just_over_the_limit_expect_422_naming_it(client: TestClient, enqueued: EnqueueRecorder) -> None:
    # when a well-formed body nests one level deeper than allowed
    body = _nested(MAX_JSON_DEPTH + 1)
    assert json.loads(body)
    response = post_job_text(client, body)
    # then it is refused for its depth, before anything looks at its fields
    assert f"nests {MAX_JSON_DEPTH + 1} levels" in assert_problem(response, 422, "invalid-spec")["detail"]
    assert_nothing_queued(enqueued)


def test_given_depth_at_the_limit_expect_spec_validation_instead(client: TestClient, enqueued: EnqueueRecorder) -> None:
    # when the body nests exactly as deep as allowed
    response = post_job_text(client, _nested(MAX_JSON_DEPTH))
    # then it is parsed, and the spec check refuses mix's shape
    detail = assert_problem(response, 422, "invalid-spec")["detail"]
    assert "levels" not in detail and "fast.mix" in detail
    assert_nothing_queued(enqueued)


def test_given_brackets_inside_strings_expect_them_not_counted(client: TestClient, enqueued: EnqueueRecorder) -> None:
    # when a string value holds 2000 "[" (and an escaped quote before them)
    ref = '\\"' + "[" * 2000
    response = post_job_text(client, f'{{"method": "fast", "content": "{ref}"}}')
    # then the body is read normally: the spec check names the (too long) reference
    detail = assert_problem(response, 422, "invalid-spec")["detail"]
    assert "fast.content" in detail and "levels" not in detail
    assert_nothing_queued(enqueued)
