"""End to end: real API (uvicorn), real Celery prefork workers, real Redis, and for each
backend real PostgreSQL + S3 (moto) or SQLite + local storage. No mocks, no eager mode.

Sizes are tiny (64 px, a few dozen optimizer steps) so the suite fits a 2-core machine.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from shared.imaging import png_bytes

from harness import Farm, child_pids

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

FINAL = ("succeeded", "failed", "canceled")


def optimize_spec(content: str, style: str, steps: int, size: int = 64) -> dict:
    return {
        "method": "optimize",
        "content": content,
        "styles": [{"image": style}],
        "size": size,
        "steps": steps,
        "optimizer": "adam",
        "learning_rate": 5.0,
        "style_layers": ["relu1_1", "relu2_1", "relu3_1"],
        "content_layers": ["relu3_1"],
    }


def result_keys(farm: Farm, job_id: str) -> list[str]:
    """Every stored object under the job's result prefix (S3 or local folder)."""
    prefix = f"tenants/default/jobs/{job_id}/"
    if farm.s3 is not None:
        return sorted(farm.s3.keys(prefix))
    root = farm.home / "storage" / prefix
    return sorted(prefix + p.name for p in root.iterdir()) if root.is_dir() else []


def test_optimize_progress_rises_and_result_downloads(farm: Farm, content_png: bytes, style_png: bytes) -> None:
    content, style = farm.upload(content_png, "content.png"), farm.upload(style_png, "style.png")
    # long enough (a few seconds) that several throttled progress writes land while it runs
    job = farm.create(optimize_spec(content, style, steps=200))
    assert job["status"] == "queued"

    seen: list[dict] = []
    done = farm.wait(job["id"], seen=seen, interval=0.1, timeout=300)
    assert done["status"] == "succeeded", done["error"]

    running = [j["progress"]["fraction"] for j in seen if j["status"] == "running"]
    intermediate = sorted({f for f in running if 0 < f < 1})
    assert len(intermediate) >= 2, f"progress never rose while running: {running}"
    assert running == sorted(running), f"progress went backwards: {running}"
    assert done["progress"]["fraction"] == 1.0
    assert done["result"]["width"] == 64 and done["result"]["height"] == 48

    img = Image.open(io.BytesIO(farm.result_png(job["id"])))
    assert img.format == "PNG" and img.size == (64, 48)
    assert result_keys(farm, job["id"]) == [
        f"tenants/default/jobs/{job['id']}/{name}" for name in ("output.png", "preview.png")
    ]  # the result, and the last preview the studio showed while it ran


def test_cancel_running_job_stops_quickly(farm: Farm, content_png: bytes, style_png: bytes) -> None:
    content, style = farm.upload(content_png), farm.upload(style_png)
    job = farm.create(optimize_spec(content, style, steps=3000))
    farm.wait(job["id"], until=lambda j: j["status"] == "running" and j["progress"]["step"] >= 1, timeout=180)

    r = farm.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202, r.text
    t0 = time.monotonic()
    done = farm.wait(job["id"], timeout=60, interval=0.1)
    elapsed = time.monotonic() - t0
    assert done["status"] == "canceled"
    assert elapsed < 10, f"cancel took {elapsed:.1f}s"
    assert done["progress"]["step"] < 3000
    # the worker is free again: a canceled job does not block the queue
    nxt = farm.create({"method": "fast", "content": content, "size": 64, "style": 1})
    assert farm.wait(nxt["id"], timeout=120)["status"] == "succeeded"


def test_failing_job_records_problem_details(farm: Farm, style_png: bytes) -> None:
    """Given a job the API accepts but the engine refuses (its content image was damaged in
    storage after the upload: only the worker that decodes it can find out), then the job fails
    with problem details and no traceback."""
    # an image of its own: inputs are shared by sha256, and later tests upload content_png too
    own = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    content, style = farm.upload(png_bytes(own)), farm.upload(style_png)
    farm.corrupt_stored_input(content)
    job = farm.create({"method": "adain", "content": content, "styles": [{"image": style}], "size": 64})
    done = farm.wait(job["id"], timeout=120)
    assert done["status"] == "failed"
    problem = done["error"]
    assert problem["type"].endswith("/invalid-image"), problem
    assert problem["status"] == 422 and problem["detail"]
    assert "Traceback" not in json.dumps(problem)
    r = farm.client.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 409


def test_idempotent_retry_creates_one_job(farm: Farm, content_png: bytes) -> None:
    content = farm.upload(content_png)
    spec = {"method": "fast", "content": content, "size": 64, "mix": {"0": 0.5, "2": 0.5}}
    key = f"e2e-{uuid.uuid4()}"
    first, second = farm.submit(spec, key), farm.submit(spec, key)
    assert (first.status_code, second.status_code) == (202, 200), (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    listing = farm.client.get("/v1/jobs", params={"limit": 200}).json()["items"]
    assert sum(1 for j in listing if j["id"] == first.json()["id"]) == 1
    assert farm.wait(first.json()["id"], timeout=120)["status"] == "succeeded"
    rows = farm.db_rows([first.json()["id"]])
    assert rows[first.json()["id"]]["attempts"] == 1


def test_two_workers_share_a_batch_each_job_runs_once(farm: Farm, content_png: bytes) -> None:
    content = farm.upload(content_png)
    ids = [farm.create({"method": "fast", "content": content, "size": 64, "style": i % 5})["id"] for i in range(8)]
    for jid in ids:
        assert farm.wait(jid, timeout=240)["status"] == "succeeded"
    rows = farm.db_rows(ids)
    workers = {rows[j]["worker"].split("@")[0] for j in ids}
    assert workers == {w.name for w in farm.workers}, f"jobs per worker: {[rows[j]['worker'] for j in ids]}"
    assert all(rows[j]["attempts"] == 1 for j in ids), {j: rows[j]["attempts"] for j in ids}
    # each run is also visible in the workers' logs exactly once
    logs = "".join((farm.home / "logs" / f"{w.name}.log").read_text() for w in farm.workers)
    for jid in ids:
        assert logs.count(f"job {jid}: claimed by") == 1


def test_worker_killed_mid_job_is_redelivered(farm: Farm, content_png: bytes, style_png: bytes) -> None:
    content, style = farm.upload(content_png), farm.upload(style_png)
    job = farm.create(optimize_spec(content, style, steps=300))  # seconds, so the kill lands mid-job
    running = farm.wait(job["id"], until=lambda j: j["status"] == "running" and j["progress"]["step"] >= 2, timeout=180)
    row = farm.db_rows([job["id"]])[job["id"]]
    victim = next(w for w in farm.workers if row["worker"].startswith(w.name + "@"))
    pool = child_pids(victim.pid)
    assert pool, "the worker has no pool process"
    for pid in pool:  # the pool process running the job dies as if OOM-killed
        os.kill(pid, signal.SIGKILL)

    done = farm.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] >= 2 and running["attempts"] == 1
    assert victim.alive(), "the worker's main process should survive and respawn its pool"
    img = Image.open(io.BytesIO(farm.result_png(job["id"])))
    assert img.size == (64, 48)
    # a retried job overwrites its deterministic result key instead of adding one
    assert result_keys(farm, job["id"]) == [
        f"tenants/default/jobs/{job['id']}/{name}" for name in ("output.png", "preview.png")
    ]  # the result, and the last preview the studio showed while it ran


def test_reconciler_resends_a_job_whose_message_was_lost(farm: Farm, content_png: bytes) -> None:
    """A queued row with no message anywhere in Redis (broker lost it) is sent again by a
    one-off pass of the sweeper (``python -m worker.sweeper``)."""
    from shared.db import session as db_session
    from shared.jobs import store

    content = farm.upload(content_png)
    db_session.configure(farm.db_url)
    try:
        job, created = store.create_job("default", {"method": "fast", "content": content, "size": 64})
    finally:
        db_session.configure(None)
        db_session.dispose_engines()
    assert created
    time.sleep(1.5)
    out = subprocess.run([sys.executable, "-m", "worker.sweeper", "--queued-after", "1"],
                         env=farm.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert job.id in report["resent"]
    assert farm.wait(job.id, timeout=120)["status"] == "succeeded"
    # a second pass finds nothing to do for it
    out2 = subprocess.run([sys.executable, "-m", "worker.sweeper", "--queued-after", "1"],
                          env=farm.env, capture_output=True, text=True, timeout=120)
    assert job.id not in json.loads(out2.stdout.strip().splitlines()[-1])["resent"]


def _crops(photo: str, n: int, size: int = 72) -> list[bytes]:
    """``n`` PNG crops of a scikit-image sample photo."""
    import numpy as np
    from skimage import data

    from shared.imaging import png_bytes

    img = getattr(data, photo)()
    rng = np.random.default_rng(len(photo))
    out = []
    for _ in range(n):
        y = int(rng.integers(0, img.shape[0] - size))
        x = int(rng.integers(0, img.shape[1] - size))
        out.append(png_bytes(img[y : y + size, x : x + size]))
    return out


def _zip_of_crops(photo: str, n: int, size: int = 72) -> bytes:
    """A zip archive (one sub-folder, as people upload them) of ``n`` crops of a sample photo."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, crop in enumerate(_crops(photo, n, size)):
            zf.writestr(f"{photo}/{i:03d}.png", crop)
    return buf.getvalue()


def test_train_adain_registers_a_model_that_renders(farm: Farm, content_png: bytes, style_png: bytes) -> None:
    """Training: datasets extracted from archives, checkpoint uploaded, model registered,
    loss curve stored; the new decoder is then resolved (downloaded, cached by checksum)
    by an adain job."""
    contents = farm.upload(_zip_of_crops("astronaut", 6), "contents.zip")
    styles = farm.upload(_zip_of_crops("coffee", 6), "styles.zip")
    name = f"e2e-decoder-{farm.backend}"
    job = farm.create({"method": "train-adain", "name": name, "content_dataset": contents, "style_dataset": styles,
                       "steps": 4, "batch_size": 2, "image_size": 64, "checkpoint_every": 2})
    done = farm.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    model_id = done["model_id"]
    assert model_id
    model = farm.client.get(f"/v1/models/{model_id}")
    assert model.status_code == 200, model.text
    assert model.json()["name"] == name and model.json()["kind"] == "adain-decoder"
    keys = result_keys(farm, job["id"])
    assert f"tenants/default/jobs/{job['id']}/checkpoint.pt" in keys
    assert f"tenants/default/jobs/{job['id']}/loss.png" in keys
    assert Image.open(io.BytesIO(farm.result_png(job["id"]))).format == "PNG"  # the loss curve

    content, style = farm.upload(content_png), farm.upload(style_png)
    render = farm.create({"method": "adain", "content": content, "styles": [{"image": style}], "size": 64,
                          "style_size": 64, "model": model_id})
    out = farm.wait(render["id"], timeout=180)
    assert out["status"] == "succeeded", out["error"]
    assert Image.open(io.BytesIO(farm.result_png(render["id"]))).size == (64, 48)


def put_object(farm: Farm, key: str, data: bytes) -> None:
    """Write an object straight into the farm's storage, as an operator's S3 tool would."""
    if farm.s3 is not None:
        farm.s3.client().put_object(Bucket=farm.s3.bucket, Key=key, Body=data)
        return
    path = farm.home / "storage" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_train_fast_reads_a_dataset_from_a_storage_prefix(farm: Farm, style_png: bytes) -> None:
    """Given images put under the tenant's datasets/NAME/ prefix (no upload), when a train-fast
    job names ``prefix:NAME``, then the worker downloads them and the job trains and registers."""
    name = f"e2e-prefix-{farm.backend}"
    for i, crop in enumerate(_crops("chelsea", 4)):
        put_object(farm, f"tenants/default/datasets/{name}/{i}.png", crop)
    job = farm.create({"method": "train-fast", "name": name, "dataset": f"prefix:{name}",
                       "styles": [farm.upload(style_png)],
                       "steps": 3, "batch_size": 2, "image_size": 32, "style_size": 32})
    done = farm.wait(job["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["model_id"]
    refused = farm.submit({"method": "train-fast", "name": name, "dataset": "prefix:nothing-here",
                           "styles": [farm.upload(style_png)], "steps": 3})
    assert refused.status_code == 422 and "no images directly under" in refused.json()["detail"]


def test_builtin_model_is_registered_with_style_thumbnails(farm: Farm, content_png: bytes) -> None:
    """Given a fresh farm, when a worker has started, then GET /v1/models lists the 26-style
    network with a name and a PNG thumbnail per style, and a fast job can pick it by id."""
    deadline = time.monotonic() + 120
    while True:
        listed = farm.client.get("/v1/models")
        assert listed.status_code == 200, listed.text
        body = listed.json()
        items = body["items"] if isinstance(body, dict) else body
        builtin = [m for m in items if m["name"] == "multistyle26"]
        if builtin or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert builtin, "the worker did not register multistyle26"
    model = farm.client.get(f"/v1/models/{builtin[0]['id']}").json()
    assert model["kind"] == "fast" and len(model["style_names"]) == 26
    thumb = farm.client.get(f"/v1/models/{model['id']}/thumbnails/7", follow_redirects=True)
    assert thumb.status_code == 200, thumb.text
    assert Image.open(io.BytesIO(thumb.content)).format == "PNG"
    assert farm.client.get(f"/v1/models/{model['id']}/thumbnails/26").status_code == 404

    content = farm.upload(content_png)
    job = farm.create(
        {"method": "fast", "content": content, "size": 64, "model": model["id"], "mix": {"7": 1, "19": 1}}
    )
    done = farm.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]


@pytest.mark.parametrize("method", ["train-adain", "train-fast"])
def test_training_killed_mid_run_resumes_from_its_checkpoint(
    farm: Farm, method: str, style_png: bytes, content_png: bytes
) -> None:
    """Given a training job that has uploaded a checkpoint, when its pool process is
    SIGKILLed, then the redelivered job resumes from that checkpoint (not from step 0),
    finishes, and registers a model that a ``fast`` / ``adain`` job then renders with."""
    contents = farm.upload(_zip_of_crops("astronaut", 6), "contents.zip")
    name = f"e2e-resume-{method}-{farm.backend}"
    common = {"name": name, "steps": 60, "batch_size": 2, "checkpoint_every": 5}
    if method == "train-adain":
        styles = farm.upload(_zip_of_crops("coffee", 6), "styles.zip")
        spec = {"method": method, "content_dataset": contents, "style_dataset": styles, "image_size": 32, **common}
    else:
        spec = {"method": method, "dataset": contents, "styles": [farm.upload(style_png)], "image_size": 32,
                "style_size": 32, **common}
    job = farm.create(spec)
    farm.wait(job["id"], until=lambda j: j["status"] == "running" and j["progress"]["step"] >= 12, timeout=300)
    assert f"tenants/default/jobs/{job['id']}/checkpoint.pt" in result_keys(farm, job["id"])
    row = farm.db_rows([job["id"]])[job["id"]]
    victim = next(w for w in farm.workers if row["worker"].startswith(w.name + "@"))
    for pid in child_pids(victim.pid):
        os.kill(pid, signal.SIGKILL)

    done = farm.wait(job["id"], timeout=400)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] >= 2
    assert (done["result"]["metrics"].get("resumed_from") or 0) >= 5
    assert done["model_id"]

    # when a render job names the model the training registered
    content = farm.upload(content_png)
    if method == "train-adain":
        render = {"method": "adain", "content": content, "styles": [{"image": farm.upload(style_png)}], "size": 64,
                  "style_size": 64, "model": done["model_id"]}
    else:
        render = {"method": "fast", "content": content, "size": 64, "model": done["model_id"], "style": 0}
    out = farm.wait(farm.create(render)["id"], timeout=180)
    # then it renders with it
    assert out["status"] == "succeeded", out["error"]
    assert out["result"]["metrics"]["model"] in (done["model_id"], name)
    assert Image.open(io.BytesIO(farm.result_png(out["id"]))).size == (64, 48)
