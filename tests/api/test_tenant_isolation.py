"""Tenants over the real API: keys stored hashed in SQL (and from the environment), every
resource of one tenant invisible to another (404, never 403, never its data), and budgets
that answer 429 with ``Retry-After`` and a problem naming the limit.

Resources: jobs (read, list, cancel, delete, result), inputs, models (by id and by name),
model thumbnails. (There are no events or webhooks in the API yet.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.jobs import api_keys, model_registry, store, tenants
from shared.jobs.outcomes import RenderKeys, RenderOutcome
from shared.settings import Settings
from shared.storage import get_storage, result_key, thumbnail_key

from api_helpers import EnqueueRecorder, assert_problem, make_client, png_bytes, upload, upload_id


@pytest.fixture
def keyed(settings: Settings, enqueued: EnqueueRecorder) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """A client of an API with SQL keys for tenants acme and globex, and an environment key of
    initech; the key cache lives half a second. Yields (client, headers per tenant)."""
    cfg = settings.model_copy(update={"api_keys": "env-key-of-initech-0123456789=initech", "api_key_cache_s": 0.5})
    for client in make_client(cfg):
        headers = {t: {"Authorization": f"Bearer {api_keys.create_key(t, 'test')[1]}"} for t in ("acme", "globex")}
        headers["initech"] = {"X-API-Key": "env-key-of-initech-0123456789"}
        yield client, headers


def fast_job(client: TestClient, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    content = upload_id(client, png_bytes(), headers=headers)
    response = client.post("/v1/jobs", json={"method": "fast", "content": content, **extra}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def assert_not_found(response: Any, *secrets: str) -> None:
    """404 problem (not 403, not 401) that shows none of the other tenant's data."""
    body = assert_problem(response, 404, "not-found")
    text = response.text
    for secret in secrets:
        assert secret not in text, body


# --- keys ----------------------------------------------------------------------------------


def test_sql_and_environment_keys_name_their_tenants(keyed) -> None:
    client, h = keyed
    for tenant in ("acme", "globex", "initech"):
        job = fast_job(client, h[tenant])
        assert store.get_job(job["id"]).tenant == tenant
    assert_problem(client.get("/v1/jobs"), 401, "unauthorized")
    assert_problem(client.get("/v1/jobs", headers={"Authorization": "Bearer sf_not-a-key"}), 401)


def test_revoked_key_stops_working_within_the_cache_time_and_last_use_is_recorded(keyed) -> None:
    client, _ = keyed
    row, key = api_keys.create_key("acme", "laptop")
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/jobs", headers=auth).status_code == 200
    assert api_keys.find_key(row.id).last_used_at is not None
    # when revoked (another process, e.g. `stylefarm keys revoke`), expect 401 within 0.5 s
    api_keys.revoke_key(row.id)
    time.sleep(0.6)
    body = assert_problem(client.get("/v1/jobs", headers=auth), 401, "unauthorized")
    assert "revoked" in body["detail"]
    # a key created now works on its first use, without a restart
    _, fresh = api_keys.create_key("acme", "new")
    assert client.get("/v1/jobs", headers={"X-API-Key": fresh}).status_code == 200


def test_with_keys_in_sql_only_the_api_needs_a_key(settings: Settings, enqueued: EnqueueRecorder) -> None:
    # given no environment keys but one key in SQL (revoked, even): development is no longer open
    for client in make_client(settings.model_copy(update={"api_key_cache_s": 0})):
        assert client.get("/v1/jobs").status_code == 200  # no keys anywhere: open (development)
        row, _ = api_keys.create_key("acme", "x")
        api_keys.revoke_key(row.id)
        assert_problem(client.get("/v1/jobs"), 401)


def test_production_without_any_key_refuses_everyone(settings: Settings, enqueued: EnqueueRecorder) -> None:
    prod = settings.model_copy(update={"env": "production", "database_url": settings.resolved_database_url})
    for client in make_client(prod):
        body = assert_problem(client.get("/v1/jobs"), 401, "unauthorized")
        assert "API key" in body["detail"]


# --- isolation -----------------------------------------------------------------------------


def test_another_tenants_job_is_404_on_every_route(keyed, settings: Settings) -> None:
    client, h = keyed
    job = fast_job(client, h["acme"])
    job_id = job["id"]
    # given the job succeeded with a stored PNG
    key = result_key("acme", job_id, "output.png")
    get_storage(settings).put_bytes(key, png_bytes(), "image/png")
    claimed = store.claim_job(job_id, task_id="t1", worker="w1")
    assert claimed is not None
    outcome = RenderOutcome(keys=RenderKeys(image=key), width=16, height=12, size_bytes=len(png_bytes()))
    store.succeed_job(job_id, outcome.model_dump(mode="json"), token=claimed.fencing_token)
    assert client.get(f"/v1/jobs/{job_id}/result", headers=h["acme"]).status_code == 200
    # expect globex (SQL key) and initech (environment key) to get 404 everywhere, and no listing
    for other in ("globex", "initech"):
        for method, path in (("GET", ""), ("GET", "/result"), ("POST", "/cancel"), ("DELETE", "")):
            response = client.request(method, f"/v1/jobs/{job_id}{path}", headers=h[other])
            assert_not_found(response, job["spec"]["content"])
        assert client.get("/v1/jobs", headers=h[other]).json()["items"] == []
    # and the job is untouched by their cancel attempts
    assert client.get(f"/v1/jobs/{job_id}", headers=h["acme"]).json()["status"] == "succeeded"


def test_another_tenants_input_is_404_and_unusable(keyed) -> None:
    client, h = keyed
    input_id = upload_id(client, png_bytes(20, 10), headers=h["acme"])
    assert client.get(f"/v1/inputs/{input_id}", headers=h["acme"]).status_code == 200
    assert_not_found(client.get(f"/v1/inputs/{input_id}", headers=h["globex"]))
    response = client.post("/v1/jobs", json={"method": "fast", "content": input_id}, headers=h["globex"])
    assert_problem(response, 422, "invalid-spec")
    assert response.json()["missing_inputs"] == [input_id]


def test_another_tenants_model_and_thumbnails_are_404(keyed, settings: Settings) -> None:
    client, h = keyed
    thumb = thumbnail_key("acme", "acme-model-1", 0)
    get_storage(settings).put_bytes(thumb, png_bytes(), "image/png")
    model_registry.register_model(name="secret-style", kind="fast", checksum="c" * 64, tenant="acme",
                                  storage_key="tenants/acme/models/acme-model-1/model.pt", style_names=["s0"],
                                  thumbnails={0: thumb}, model_id="acme-model-1")
    assert client.get("/v1/models/acme-model-1/thumbnails/0", headers=h["acme"]).status_code == 200
    for ref in ("acme-model-1", "secret-style"):
        assert client.get(f"/v1/models/{ref}", headers=h["acme"]).status_code == 200
        assert_not_found(client.get(f"/v1/models/{ref}", headers=h["globex"]), "tenants/acme")
        assert_not_found(client.get(f"/v1/models/{ref}/thumbnails/0", headers=h["globex"]))
    assert "secret-style" not in client.get("/v1/models", headers=h["globex"]).text
    content = upload_id(client, png_bytes(), headers=h["globex"])
    response = client.post("/v1/jobs", json={"method": "fast", "content": content, "model": "acme-model-1"},
                           headers=h["globex"])
    assert_problem(response, 422, "model-unavailable")


# --- budgets -------------------------------------------------------------------------------


def test_a_burst_of_250_jobs_stops_at_the_limit_and_another_tenant_is_unaffected(
    keyed, enqueued: EnqueueRecorder
) -> None:
    # given acme (default limit: 100 queued jobs) submitting 250 jobs as fast as it can
    client, h = keyed
    content = upload_id(client, png_bytes(), headers=h["acme"])
    answers = [client.post("/v1/jobs", json={"method": "fast", "content": content}, headers=h["acme"])
               for _ in range(250)]
    # expect 100 accepted and queued, then 429 with Retry-After and a problem naming the limit
    codes = [r.status_code for r in answers]
    assert codes == [202] * 100 + [429] * 150
    refused = answers[-1]
    body = assert_problem(refused, 429, "quota-exceeded")
    assert refused.headers["retry-after"] == "30"
    assert (body["limit"], body["limit_value"], body["usage"], body["requested"]) == ("max_queued_jobs", 100, 100, 1)
    assert "max_queued_jobs" in body["detail"]
    assert len(enqueued.job_ids) == 100 and len(store.list_jobs("acme", limit=200)[0]) == 100
    # and globex submits as usual
    assert fast_job(client, h["globex"])["status"] == "queued"


def test_cost_limits_answer_with_the_estimate(keyed) -> None:
    client, h = keyed
    # given acme may have 10 reference GPU-seconds in flight and 5 per job
    tenants.set_limits("acme", max_cost_in_flight=10.0, max_job_cost=5.0)
    content = upload_id(client, png_bytes(), headers=h["acme"])
    style = upload_id(client, png_bytes(20, 20, (0, 0, 255)), headers=h["acme"])
    big = {"method": "optimize", "content": content, "styles": [{"image": style}], "size": 2048, "steps": 5000}
    # expect the 2048 px x 5000-step job refused as too expensive (422: waiting would not help)
    body = assert_problem(client.post("/v1/jobs", json=big, headers=h["acme"]), 422, "job-too-expensive")
    assert body["limit"] == "max_job_cost" and body["requested"] > 5.0
    # and jobs of a few seconds each fill the budget, then 429 on cost in flight
    small = {**big, "size": 512, "steps": 300}
    first = client.post("/v1/jobs", json=small, headers=h["acme"]).json()
    cost = first["estimated_cost"]["gpu_seconds"]
    assert 1.0 < cost <= 5.0
    accepted = 1
    while (accepted + 1) * cost <= 10.0:
        assert client.post("/v1/jobs", json=small, headers=h["acme"]).status_code == 202
        accepted += 1
    refused = client.post("/v1/jobs", json=small, headers=h["acme"])
    body = assert_problem(refused, 429, "quota-exceeded")
    assert body["limit"] == "max_cost_in_flight" and body["usage"] == pytest.approx(accepted * cost, abs=0.01)
    assert int(refused.headers["retry-after"]) > 0


def test_upload_budget_answers_429_and_reuploads_are_free(keyed) -> None:
    client, h = keyed
    tenants.set_limits("acme", max_upload_bytes_per_day=len(png_bytes()) + 10)
    assert upload(client, png_bytes(), headers=h["acme"]).status_code == 201
    assert upload(client, png_bytes(), headers=h["acme"]).status_code == 200  # same bytes: no charge
    refused = upload(client, png_bytes(16, 12, (0, 255, 0)), headers=h["acme"])
    body = assert_problem(refused, 429, "quota-exceeded")
    assert body["limit"] == "max_upload_bytes_per_day"
    assert 23 * 3600 < int(refused.headers["retry-after"]) <= 24 * 3600 + 1
    assert upload(client, png_bytes(16, 12, (0, 255, 0)), headers=h["globex"]).status_code == 201
