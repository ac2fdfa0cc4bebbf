"""Bad input, unknown things: fields, job methods, routes and HTTP methods.

An unknown field or job method is a 422 ``invalid-spec``; an unknown route a 404 problem; a
method a path does not serve a 405 problem whose ``Allow`` lists every method the path
serves. ``OPTIONS`` on a known path answers 204 with the same ``Allow``. Nothing is queued.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from api_helpers import EnqueueRecorder, assert_nothing_queued, assert_problem, upload_id

#: Every path of the API (one concrete example each) and the methods it serves.
PATHS = {
    "/v1/jobs": "GET, OPTIONS, POST",
    "/v1/jobs/abc": "DELETE, GET, OPTIONS",
    "/v1/jobs/abc/cancel": "OPTIONS, POST",
    "/v1/jobs/abc/result": "GET, OPTIONS",
    "/v1/inputs": "OPTIONS, POST",
    "/v1/inputs/abc": "GET, OPTIONS",
    "/v1/models": "GET, OPTIONS",
    "/v1/models/abc": "GET, OPTIONS",
    "/v1/models/abc/thumbnails/1": "GET, OPTIONS",
    "/healthz": "GET, OPTIONS",
    "/readyz": "GET, OPTIONS",
}


def test_given_unknown_field_expect_422_naming_it(client: TestClient, enqueued: EnqueueRecorder) -> None:
    spec = {"method": "fast", "content": upload_id(client), "colour": "blue"}
    body = assert_problem(client.post("/v1/jobs", json=spec), 422, "invalid-spec")
    assert "colour" in body["detail"] and "not permitted" in body["detail"]
    assert_nothing_queued(enqueued)


def test_given_unknown_or_missing_job_method_expect_422(client: TestClient, enqueued: EnqueueRecorder) -> None:
    for spec in ({"method": "paint", "content": "x"}, {"content": "x"}, {"method": None}):
        assert "method" in assert_problem(client.post("/v1/jobs", json=spec), 422, "invalid-spec")["detail"]
    assert_nothing_queued(enqueued)


def test_given_unknown_route_expect_404_problem(client: TestClient) -> None:
    assert "/nope" in assert_problem(client.get("/nope"), 404, "not-found")["detail"]
    assert_problem(client.options("/nope"), 404, "not-found")


def test_given_wrong_method_expect_405_problem_allowing_every_method_of_the_path(
    client: TestClient, enqueued: EnqueueRecorder
) -> None:
    for path, allowed in PATHS.items():
        for method in ("PUT", "PATCH"):
            # when a path gets a method it does not serve
            response = client.request(method, path)
            # then 405, and Allow (header and detail) names all the methods the path serves
            body = assert_problem(response, 405, "method-not-allowed")
            assert response.headers["allow"] == allowed, (method, path)
            assert method in body["detail"] and allowed in body["detail"]
    assert_nothing_queued(enqueued)


def test_given_options_on_each_path_expect_204_with_allow(client: TestClient) -> None:
    for path, allowed in PATHS.items():
        response = client.options(path)
        assert (response.status_code, response.headers.get("allow"), response.content) == (204, allowed, b""), path
