"""End to end: a cancel takes effect within seconds even in the middle of one long optimizer
step (a 768 px job, where one loss evaluation takes 10-30 s on these CPUs: the networks check
the cancel flag between their layers, not only between iterations). Adam makes one evaluation
per step, so the test reaches the middle of a step soonest; the same inside an L-BFGS line
search is tests/engine/test_cancel_points.py. Before the layer checks, the L-BFGS variant of
this test measured 26 s from the request to `canceled`."""

from __future__ import annotations

import time

import pytest

from harness import Farm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def test_cancel_lands_inside_a_long_optimizer_step(farm: Farm, content_png: bytes, style_png: bytes) -> None:
    # given an optimize job at 768 px (default VGG layers) that reported its first step: its
    # second step's loss evaluation then runs, about 10 CPU-seconds (bench/cost_calibration.py)
    content, style = farm.upload(content_png), farm.upload(style_png)
    spec = {"method": "optimize", "content": content, "styles": [{"image": style}], "size": 768, "steps": 5000,
            "optimizer": "adam"}
    job = farm.create(spec)
    assert job["estimated_cost"]["gpu_seconds"] > 100
    farm.wait(job["id"], until=lambda j: j["progress"]["step"] >= 1 or j["status"] not in ("queued", "running"),
              timeout=300, interval=0.1)
    time.sleep(1)
    # when canceled in the middle of that evaluation
    t0 = time.monotonic()
    r = farm.client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202, r.text
    done = farm.wait(job["id"], timeout=120, interval=0.1)
    elapsed = time.monotonic() - t0
    # expect canceled within 5 s, before that step could finish
    assert done["status"] == "canceled", done
    assert elapsed < 5, f"cancel took {elapsed:.1f}s"
    assert done["progress"]["step"] == 1, done["progress"]
