"""POST/GET /v1/jobs, cancel and result: validation, idempotency, paging, problems."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shared.jobs import model_registry, store
from shared.jobs.outcomes import RenderKeys, RenderOutcome, TrainKeys, TrainOutcome
from shared.settings import Settings
from shared.storage import LOSS_CURVE_NAME, RENDER_NAME, get_storage, model_key, result_key

from api_helpers import EnqueueRecorder, assert_problem, png_bytes, upload_id, zip_bytes

#: The fencing token of a job's first claim: these tests write as that worker would.
FIRST_CLAIM = 1


def fast_spec(client: TestClient, **extra: object) -> dict:
    return {"method": "fast", "content": upload_id(client), **extra}


def submit(client: TestClient, spec: dict, key: str | None = None):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/jobs", json=spec, headers=headers)


def test_given_valid_spec_when_submitted_expect_202_queued_and_enqueued(
    client: TestClient, enqueued: EnqueueRecorder
) -> None:
    response = submit(client, fast_spec(client, style=3))
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert response.headers["retry-after"] == "1"
    assert job["status"] == "queued" and job["method"] == "fast" and job["spec"]["style"] == 3
    assert job["spec"]["model"] == "multistyle26"  # default filled in from shared.jobs.specs
    assert enqueued.calls == [{"job_id": job["id"], "queue": "gpu", "priority": 0, "method": "fast",
                               "settings": enqueued.calls[0]["settings"]}]


def test_given_job_when_read_expect_progress_timings_links(client: TestClient) -> None:
    job_id = submit(client, fast_spec(client)).json()["id"]
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["progress"] == {"fraction": 0.0, "step": 0, "total": 0, "loss": None, "stage": ""}
    assert body["timings"]["created_at"] and body["timings"]["started_at"] is None
    assert body["timings"]["queue_seconds"] >= 0 and body["timings"]["run_seconds"] is None
    assert body["links"] == {"self": f"/v1/jobs/{job_id}", "cancel": f"/v1/jobs/{job_id}/cancel"}
    assert body["error"] is None and body["result"] is None


def test_given_worker_progress_expect_it_in_job_view(client: TestClient) -> None:
    job_id = submit(client, fast_spec(client)).json()["id"]
    store.claim_job(job_id, task_id="t", worker="w")
    store.record_progress(job_id, token=FIRST_CLAIM, step=3, total=4, loss=0.5, stage="render")
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] == "running" and body["progress"]["fraction"] == 0.75 and body["attempts"] == 1
    assert body["timings"]["run_seconds"] is not None


def test_given_unknown_input_ref_expect_422_naming_it(client: TestClient, enqueued: EnqueueRecorder) -> None:
    missing = "f" * 64
    body = assert_problem(submit(client, {"method": "fast", "content": missing}), 422, "invalid-spec")
    assert missing in body["detail"] and body["missing_inputs"] == [missing]
    assert enqueued.calls == []


def _register(name: str, kind: str, n_styles: int = 0) -> None:
    model_registry.register_model(name=name, kind=kind, checksum="c" * 64, storage_key=f"global/models/{name}/model.pt",
                        style_names=[f"s{i}" for i in range(n_styles)], model_id=name)


def test_given_bad_model_references_expect_422_and_nothing_queued(
    client: TestClient, enqueued: EnqueueRecorder
) -> None:
    # given a registered 2-style fast model and a registered AdaIN decoder
    _register("two-styles", "fast", n_styles=2)
    _register("my-decoder", "adain-decoder")
    content, style = upload_id(client), upload_id(client, png_bytes(color=(9, 9, 9)))
    cases = [
        ({"method": "fast", "content": content, "model": "nope"}, "'nope' does not exist"),
        ({"method": "fast", "content": content, "model": "my-decoder"}, "needs a 'fast' model"),
        ({"method": "fast", "content": content, "model": "two-styles", "mix": {"0": 1, "5": 1}},
         "style 5 does not exist"),
        ({"method": "adain", "content": content, "styles": [{"image": style}], "model": "two-styles"},
         "needs a 'adain-decoder' model"),
    ]
    for spec, message in cases:
        # when a job names a missing model, one of the wrong kind, or a style it does not have
        body = assert_problem(submit(client, spec), 422, "model-unavailable")
        # then the problem says which, and nothing is queued
        assert message in body["detail"], body
    assert enqueued.calls == []
    # and the same jobs with good references are accepted
    assert submit(client, {"method": "fast", "content": content, "model": "two-styles", "style": 1}).status_code == 202
    good = {"method": "adain", "content": content, "styles": [{"image": style}], "model": "my-decoder"}
    assert submit(client, good).status_code == 202


def test_given_storage_prefix_dataset_expect_accepted_only_with_images(
    client: TestClient, settings: Settings, enqueued: EnqueueRecorder
) -> None:
    # given a tenant's dataset prefix with two images (and a sub-folder and a text file, which don't count)
    storage = get_storage(settings)
    for name in ("a.png", "b.jpg", "notes.txt", "sub/c.png"):
        storage.put_bytes(f"tenants/default/datasets/photos/{name}", png_bytes())
    storage.put_bytes("tenants/default/datasets/docs/readme.txt", b"no images here")
    style = upload_id(client)
    spec = {"method": "train-fast", "name": "m", "styles": [style], "steps": 1}
    # when a training job names it, then it is queued
    assert submit(client, {**spec, "dataset": "prefix:photos"}).status_code == 202
    # when the prefix holds no images directly, or the name is malformed, then 422 and nothing more is queued
    queued = len(enqueued.calls)
    for ref, message in [("prefix:docs", "no images directly under tenants/default/datasets/docs/"),
                         ("prefix:empty", "no images directly under"),
                         ("prefix:../other", "storage prefix dataset is 'prefix:NAME'")]:
        body = assert_problem(submit(client, {**spec, "dataset": ref}), 422, "invalid-spec")
        assert message in body["detail"], body
    assert len(enqueued.calls) == queued


def test_given_builtin_models_not_registered_yet_expect_jobs_accepted(client: TestClient) -> None:
    # given a farm whose first worker has not registered the built-in models yet
    content, style = upload_id(client), upload_id(client, png_bytes(color=(9, 9, 9)))
    # when jobs name them (explicitly or by default) then they are queued for that worker
    assert submit(client, fast_spec(client, model="multistyle26", style=25)).status_code == 202
    assert submit(client, {"method": "adain", "content": content, "styles": [{"image": style}]}).status_code == 202


def test_given_invalid_spec_expect_422_problem_with_errors(client: TestClient) -> None:
    body = assert_problem(submit(client, {"method": "fast", "content": "x", "size": 1}), 422, "invalid-spec")
    assert "size" in body["detail"] and body["errors"]


def test_given_image_as_dataset_expect_422(client: TestClient) -> None:
    image = upload_id(client)
    spec = {"method": "train-fast", "name": "mine", "styles": [image], "dataset": image}
    assert "archive" in assert_problem(submit(client, spec), 422, "invalid-spec")["detail"]


def test_given_archive_dataset_expect_training_job_accepted(client: TestClient) -> None:
    style = upload_id(client)
    dataset = upload_id(client, zip_bytes({"a.png": png_bytes(), "b.png": png_bytes(color=(1, 2, 3))}))
    spec = {"method": "train-fast", "name": "mine", "styles": [style], "dataset": dataset, "steps": 10}
    response = submit(client, spec)
    assert response.status_code == 202, response.text


# --- idempotency -----------------------------------------------------------------------


def test_given_same_key_and_body_expect_same_job_enqueued_once(client: TestClient, enqueued: EnqueueRecorder) -> None:
    spec = fast_spec(client)
    first = submit(client, spec, key="abc")
    again = submit(client, spec, key="abc")
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"] == again.headers["location"].rsplit("/", 1)[1]
    assert enqueued.job_ids == [first.json()["id"]]


def test_given_same_key_other_body_expect_422(client: TestClient, enqueued: EnqueueRecorder) -> None:
    spec = fast_spec(client)
    submit(client, spec, key="abc")
    assert_problem(submit(client, {**spec, "style": 2}, key="abc"), 422, "idempotency-key-reused")
    assert len(enqueued.calls) == 1


def test_given_broker_down_expect_202_and_job_left_queued(client: TestClient, enqueued: EnqueueRecorder) -> None:
    enqueued.fail = True
    response = submit(client, fast_spec(client))
    assert response.status_code == 202
    assert store.get_job(response.json()["id"]).status == "queued"  # the sweeper sends it later


# --- listing ---------------------------------------------------------------------------


def test_given_jobs_when_listed_in_pages_expect_all_newest_first(client: TestClient) -> None:
    spec = fast_spec(client)
    ids = [submit(client, {**spec, "style": i}).json()["id"] for i in range(5)]
    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_given_status_filter_expect_only_matching(client: TestClient) -> None:
    spec = fast_spec(client)
    a = submit(client, spec).json()["id"]
    b = submit(client, {**spec, "style": 1}).json()["id"]
    client.post(f"/v1/jobs/{a}/cancel")
    assert [j["id"] for j in client.get("/v1/jobs?status=canceled").json()["items"]] == [a]
    assert [j["id"] for j in client.get("/v1/jobs?status=queued&method=fast").json()["items"]] == [b]


def test_given_bad_list_params_expect_problems(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/jobs?status=sleeping"), 422, "validation-error")
    assert body["errors"][0]["loc"] == "query.status"
    assert_problem(client.get("/v1/jobs?limit=0"), 422, "validation-error")
    assert_problem(client.get("/v1/jobs?cursor=garbage"), 400, "invalid-cursor")


# --- cancel ----------------------------------------------------------------------------


def test_given_queued_job_when_canceled_expect_202_canceled(client: TestClient) -> None:
    job_id = submit(client, fast_spec(client)).json()["id"]
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "canceled"
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "canceled"


def test_given_running_job_when_deleted_expect_cancel_requested(client: TestClient) -> None:
    job_id = submit(client, fast_spec(client)).json()["id"]
    store.claim_job(job_id, task_id="t", worker="w")
    body = client.delete(f"/v1/jobs/{job_id}").json()
    assert body["status"] == "running" and body["cancel_requested"] is True


def test_given_finished_job_when_canceled_expect_409(client: TestClient) -> None:
    job_id = submit(client, fast_spec(client)).json()["id"]
    store.claim_job(job_id, task_id="t", worker="w")
    store.fail_job(job_id, {"type": "x", "title": "x", "status": 500, "detail": "x"}, token=FIRST_CLAIM)
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel"), 409, "invalid-transition")


def test_given_unknown_job_expect_404_everywhere(client: TestClient) -> None:
    for method, path in [("GET", ""), ("POST", "/cancel"), ("DELETE", ""), ("GET", "/result")]:
        assert_problem(client.request(method, f"/v1/jobs/{'0' * 32}{path}"), 404, "not-found")


# --- result ----------------------------------------------------------------------------


def test_given_queued_job_when_result_requested_expect_409(client: TestClient) -> None:
    job_id = submit(client, fast_spec(client)).json()["id"]
    body = assert_problem(client.get(f"/v1/jobs/{job_id}/result"), 409, "conflict")
    assert "queued" in body["detail"]


def _running_job(client: TestClient) -> str:
    job_id = submit(client, fast_spec(client)).json()["id"]
    store.claim_job(job_id, task_id="t", worker="w")
    return job_id


def test_given_succeeded_job_expect_result_png_and_summary(client: TestClient, settings: Settings) -> None:
    # given a render job the worker finished with its PNG in storage
    job_id = _running_job(client)
    key = result_key("default", job_id, RENDER_NAME)
    png = png_bytes(20, 10)
    get_storage(settings).put_bytes(key, png, "image/png")
    outcome = RenderOutcome(keys=RenderKeys(image=key), width=20, height=10, size_bytes=len(png), metrics={"ms": 5})
    store.succeed_job(job_id, outcome.model_dump(mode="json"), token=FIRST_CLAIM)

    # when it is read, expect its summary and a link that serves the PNG
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["status"] == "succeeded" and body["progress"]["fraction"] == 1.0
    assert body["result"] == {"width": 20, "height": 10, "metrics": {"ms": 5}, "videos": None}
    assert body["links"]["result"] == f"/v1/jobs/{job_id}/result"
    response = client.get(body["links"]["result"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == png


def test_given_result_row_written_before_outcome_kinds_expect_same_summary_and_png(
    client: TestClient, settings: Settings
) -> None:
    # given a render job whose result the worker stored in the shape it had before ``kind``
    job_id = _running_job(client)
    key = result_key("default", job_id, RENDER_NAME)
    png = png_bytes(20, 10)
    get_storage(settings).put_bytes(key, png, "image/png")
    legacy_row = {
        "keys": {"image": key},
        "width": 20,
        "height": 10,
        "bytes": len(png),
        "content_type": "image/png",
        "metrics": {"ms": 5},
        "seconds": 1.5,
        "worker": "w",
    }
    store.succeed_job(job_id, legacy_row, token=FIRST_CLAIM)

    # when it is read, expect the same summary and PNG as for today's rows
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["result"] == {"width": 20, "height": 10, "metrics": {"ms": 5}, "videos": None}
    assert client.get(f"/v1/jobs/{job_id}/result").content == png


def _trained_model(job_id: str) -> str:
    model = model_registry.register_model(
        name="mine",
        kind="fast",
        checksum="c" * 64,
        storage_key=model_key("default", "m1"),
        tenant="default",
        created_by_job=job_id,
        model_id="m1",
    )
    return model.id


def test_given_succeeded_training_job_expect_loss_curve_served_and_model_linked(
    client: TestClient, settings: Settings
) -> None:
    # given a training job that registered a model and plotted its loss curve
    job_id = _running_job(client)
    model_id = _trained_model(job_id)
    loss_key = result_key("default", job_id, LOSS_CURVE_NAME)
    curve = png_bytes(8, 6, color=(0, 0, 255))
    get_storage(settings).put_bytes(loss_key, curve, "image/png")
    outcome = TrainOutcome(
        keys=TrainKeys(model=model_key("default", model_id), checkpoint="ckpt", loss_curve=loss_key),
        model_id=model_id,
        model_name="mine",
        model_kind="fast",
        metrics={"final_loss": 2.5},
    )
    store.succeed_job(job_id, outcome.model_dump(mode="json"), model_id, token=FIRST_CLAIM)

    # when it is read, expect no image size, its metrics, a model link and the curve as result
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert body["result"] == {"width": None, "height": None, "metrics": {"final_loss": 2.5}, "videos": None}
    assert body["model_id"] == model_id and body["links"]["model"] == f"/v1/models/{model_id}"
    assert client.get(body["links"]["result"]).content == curve


def test_given_training_job_without_loss_curve_expect_result_404_naming_model(client: TestClient) -> None:
    # given a training job that plotted no loss curve
    job_id = _running_job(client)
    model_id = _trained_model(job_id)
    outcome = TrainOutcome(
        keys=TrainKeys(model=model_key("default", model_id), checkpoint="ckpt"),
        model_id=model_id,
        model_name="mine",
        model_kind="fast",
    )
    store.succeed_job(job_id, outcome.model_dump(mode="json"), model_id, token=FIRST_CLAIM)

    # when its result is asked for, expect a 404 problem that points to the model
    body = assert_problem(client.get(f"/v1/jobs/{job_id}/result"), 404, "not-found")
    assert f"/v1/models/{model_id}" in body["detail"]
