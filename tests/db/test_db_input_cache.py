"""A job's inputs come from the worker's memory when a recent job read them, but only after
the job's SQL lookup of the tenant's input row allowed it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import delete

from shared.db.orm import Input
from shared.db.session import session_scope
from shared.errors import NotFound
from shared.jobs import inputs
from shared.settings import Settings
from shared.storage import LocalStorage, input_key
from worker.job_runtime import JobRuntime

PHOTO = b"\x89PNG not really, bytes are bytes here"
SHA = hashlib.sha256(PHOTO).hexdigest()


def stored_input(storage: LocalStorage, tenant: str = "t1") -> str:
    key = input_key(tenant, SHA)
    storage.put_bytes(key, PHOTO)
    inputs.add_input(tenant, sha256=SHA, key=key, size=len(PHOTO), content_type="image/png", kind="image")
    return key


def runtime(tmp_path: Path, storage: LocalStorage, job_id: str, budget: int, tenant: str = "t1") -> JobRuntime:
    settings = Settings(home=tmp_path / "home", input_cache_bytes=budget)
    return JobRuntime(job_id=job_id, tenant=tenant, settings=settings, storage=storage)


@pytest.mark.parametrize("budget", [64 << 20, 0])
def test_given_input_read_by_a_job_when_its_object_vanishes_expect_next_job_served_only_by_the_cache(
        tmp_path: Path, db_url: str, budget: int) -> None:
    # given a stored input that one job read
    storage = LocalStorage(tmp_path / "blobs")
    key = stored_input(storage)
    assert runtime(tmp_path, storage, "j1", budget).read_input(SHA) == PHOTO
    # when its stored object disappears and the next job reads it
    storage.delete(key)
    nxt = runtime(tmp_path, storage, "j2", budget)
    # expect the bytes from the process's memory, or, with the cache off, the store's error
    if budget:
        assert nxt.read_input(SHA) == PHOTO
    else:
        with pytest.raises(NotFound):
            nxt.read_input(SHA)


def test_given_cached_input_when_its_row_is_gone_or_another_tenant_asks_expect_not_found(
        tmp_path: Path, db_url: str) -> None:
    # given an input a job read, so its bytes are in the process's memory
    storage = LocalStorage(tmp_path / "blobs")
    stored_input(storage)
    budget = 64 << 20
    assert runtime(tmp_path, storage, "j1", budget).read_input(SHA) == PHOTO
    # when another tenant names the same id, expect not found (the row lookup is per tenant)
    with pytest.raises(NotFound):
        runtime(tmp_path, storage, "j2", budget, tenant="t2").read_input(SHA)
    # when the tenant's row is deleted, expect not found although the bytes are still cached
    with session_scope() as session:
        session.execute(delete(Input).where(Input.sha256 == SHA))
    with pytest.raises(NotFound):
        runtime(tmp_path, storage, "j3", budget).read_input(SHA)


def test_given_damaged_stored_bytes_when_repaired_expect_the_next_job_reads_the_repaired_bytes(
        tmp_path: Path, db_url: str) -> None:
    # given an input whose stored object was damaged after the upload, read by a job
    storage = LocalStorage(tmp_path / "blobs")
    key = stored_input(storage)
    storage.put_bytes(key, PHOTO[:7])
    budget = 64 << 20
    assert runtime(tmp_path, storage, "j1", budget).read_input(SHA) == PHOTO[:7]  # used as stored, as before
    # when the object is repaired
    storage.put_bytes(key, PHOTO)
    # expect the next job to read the repaired bytes (the damaged ones were not kept), and keep them
    assert runtime(tmp_path, storage, "j2", budget).read_input(SHA) == PHOTO
    storage.delete(key)
    assert runtime(tmp_path, storage, "j3", budget).read_input(SHA) == PHOTO
