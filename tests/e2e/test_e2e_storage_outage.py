"""End to end, local storage: a job that meets an unavailable storage is requeued with a
``storage-unavailable`` problem (no server path, no traceback) instead of failing, and
succeeds once the storage is back. (On S3 the same mapping is covered against a stopped
moto in ``tests/api/test_storage_errors.py``; the farm's shared moto is not stopped here.)
"""

from __future__ import annotations

import json

import pytest

from harness import Farm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def test_job_on_unavailable_storage_is_requeued_and_succeeds_when_it_is_back(farm: Farm, content_png: bytes) -> None:
    if farm.backend != "sqlite-local":
        pytest.skip("the storage is broken by replacing the local storage folder")
    content = farm.upload(content_png)
    storage, aside = farm.home / "storage", farm.home / "storage-aside"
    storage.rename(aside)
    storage.write_bytes(b"a file where the storage folder was: every access fails with ENOTDIR")
    try:
        job = farm.create({"method": "fast", "content": content, "size": 64, "style": 2})
        requeued = farm.wait(job["id"], until=lambda j: bool(j.get("error")) or j["status"] in ("succeeded", "failed"),
                             timeout=120)
        assert requeued["status"] in ("queued", "running"), requeued
        problem = requeued["error"]
        assert problem["type"].endswith("/storage-unavailable") and problem["retryable"] is True, problem
        text = json.dumps(problem)
        assert str(farm.home) not in text and "Traceback" not in text
    finally:
        storage.unlink()
        aside.rename(storage)
    assert farm.wait(job["id"], timeout=180)["status"] == "succeeded"
