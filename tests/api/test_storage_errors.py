"""Storage failures of both backends are the retryable ``StorageUnavailable`` (503
``storage-unavailable`` with ``Retry-After`` at the API, a requeue on the worker), and no
problem shows a server path, an endpoint or a traceback.

How the failures are made, as root and without mounts:

* local: the storage root is replaced by a regular file, so every operation under it fails
  with ``ENOTDIR`` (root ignores permission bits and ``chattr``/read-only bind mounts need
  privileges, so a real ``EROFS`` is not available here; the other errnos are checked on
  the mapping itself with ``OSError`` values as the kernel would raise them);
* S3: a moto server of our own is stopped with SIGSTOP (requests time out) or SIGKILL
  (connections are refused), with one-second timeouts and no retries.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.routes.health import CACHE_S as READINESS_CACHE_S
from shared.errors import NotFound, StorageUnavailable
from shared.settings import Settings
from shared.storage import PROBE_PREFIX, LocalStorage, S3Storage, input_key
from shared.storage import local as local_storage
from worker.job_runtime import JobRuntime

from api_helpers import assert_problem, png_bytes, upload
from harness import S3Server, Unavailable, missing_backend

RETRYABLE_ERRNOS = [errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EIO, errno.ENOTDIR]


def break_local_root(root: Path) -> None:
    """The storage folder is gone and a regular file stands in its place: ENOTDIR below it."""
    shutil.rmtree(root)
    root.write_bytes(b"not a folder")


def assert_no_internals(problem: dict, *secrets: str) -> None:
    text = json.dumps(problem)
    assert "Traceback" not in text
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into {text}"


# --- local storage ------------------------------------------------------------------------


@pytest.mark.parametrize("code", RETRYABLE_ERRNOS, ids=[errno.errorcode[c] for c in RETRYABLE_ERRNOS])
def test_given_os_error_of_any_kind_expect_unavailable_naming_errno_not_path(code: int) -> None:
    exc = OSError(code, os.strerror(code), "/srv/stylefarm/storage/tenants/a/inputs/.tmp-x")
    err = local_storage.unavailable("write 'tenants/a/inputs/x'", exc)
    assert err.retryable and err.slug == "storage-unavailable" and errno.errorcode[code] in err.detail
    assert_no_internals(err.to_problem(), "/srv/stylefarm")


def test_given_local_root_replaced_by_a_file_expect_every_operation_unavailable(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    storage = LocalStorage(root)
    storage.put_bytes("tenants/a/inputs/x", b"1")
    break_local_root(root)
    local_file = tmp_path / "local.bin"
    local_file.write_bytes(b"2")

    operations = {
        "put_bytes": lambda: storage.put_bytes("tenants/a/inputs/y", b"1"),
        "get_bytes": lambda: storage.get_bytes("tenants/a/inputs/x"),
        "exists": lambda: storage.exists("tenants/a/inputs/x"),
        "delete": lambda: storage.delete("tenants/a/inputs/x"),
        "list": lambda: storage.list("tenants/a/"),
        "download_to": lambda: storage.download_to("tenants/a/inputs/x", tmp_path / "out.bin"),
        "upload_file": lambda: storage.upload_file(local_file, "tenants/a/inputs/z"),
        "probe": storage.probe,
    }
    for name, operation in operations.items():
        with pytest.raises(StorageUnavailable) as info:
            operation()
        assert info.value.retryable, name
        assert_no_internals(info.value.to_problem(), str(tmp_path))


def test_given_working_local_root_expect_missing_key_still_not_found(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    with pytest.raises(NotFound):
        storage.get_bytes("tenants/a/inputs/missing")
    assert storage.exists("tenants/a/inputs/missing") is False
    assert storage.list("tenants/a/") == []
    storage.probe()
    assert storage.list(PROBE_PREFIX) == []  # the probe cleaned up after itself


# --- the API and the worker on broken local storage --------------------------------------


def test_given_broken_storage_when_uploading_expect_503_retry_after_no_path_no_row(
    client: TestClient, settings: Settings
) -> None:
    client.get("/readyz")  # the storage object exists before it breaks
    break_local_root(settings.resolved_storage_dir)
    data = png_bytes()

    response = upload(client, data)

    body = assert_problem(response, 503, "storage-unavailable")
    assert int(response.headers["Retry-After"]) > 0 and body["retryable"] is True
    assert_no_internals(body, str(settings.home.resolve()), str(settings.resolved_storage_dir))
    assert_problem(client.get(f"/v1/inputs/{hashlib.sha256(data).hexdigest()}"), 404)  # no row without its object


def test_given_broken_storage_expect_readyz_reports_storage_without_path(
    client: TestClient, settings: Settings
) -> None:
    assert client.get("/readyz").json()["checks"]["storage"] == "ok"
    assert LocalStorage(settings.resolved_storage_dir).list(PROBE_PREFIX) == []  # probe objects are deleted

    break_local_root(settings.resolved_storage_dir)
    time.sleep(READINESS_CACHE_S)  # readiness answers are reused that long
    body = assert_problem(client.get("/readyz"), 503)

    assert body["checks"]["storage"].startswith("error") and "StorageUnavailable" in body["checks"]["storage"]
    assert_no_internals(body, str(settings.resolved_storage_dir))


def test_given_stored_input_lost_when_same_bytes_uploaded_again_expect_object_restored(
    client: TestClient, settings: Settings
) -> None:
    data = png_bytes(20, 10)
    input_id = upload(client, data).json()["id"]
    stored = settings.resolved_storage_dir / input_key("default", input_id)
    stored.unlink()  # storage lost the object behind the API's back

    again = upload(client, data)

    assert again.status_code == 200 and again.json()["id"] == input_id
    assert stored.read_bytes() == data
    runtime = JobRuntime(
        job_id="j1", tenant="default", settings=settings, storage=LocalStorage(settings.resolved_storage_dir)
    )
    assert runtime.read_input(input_id) == data  # what a job using it reads


def test_given_broken_storage_when_a_job_reads_its_input_expect_retryable_without_path(
    client: TestClient, settings: Settings
) -> None:
    input_id = upload(client, png_bytes()).json()["id"]
    break_local_root(settings.resolved_storage_dir)
    runtime = JobRuntime(
        job_id="j1", tenant="default", settings=settings, storage=LocalStorage(settings.resolved_storage_dir)
    )

    with pytest.raises(StorageUnavailable) as info:
        runtime.read_input(input_id)

    assert info.value.retryable  # the task requeues and retries it instead of failing the job
    assert_no_internals(info.value.to_problem(instance="/v1/jobs/j1"), str(settings.home.resolve()))


# --- S3 ------------------------------------------------------------------------------------


def start_moto(base: Path) -> S3Server:
    try:
        return S3Server.start(base)
    except Unavailable as exc:
        missing_backend("The S3 server (moto)", exc)


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[S3Server]:
    server = start_moto(tmp_path)
    try:
        yield server
    finally:
        server.process.signal(signal.SIGCONT, group=True)
        server.stop()


def impatient_s3(server: S3Server) -> S3Storage:
    from harness import S3_KEY

    return S3Storage(server.bucket, endpoint_url=server.endpoint, access_key=S3_KEY, secret_key=S3_KEY,
                     connect_timeout_s=1, read_timeout_s=1, max_attempts=1)


def test_given_s3_stopped_then_killed_expect_unavailable_then_back_after_resume(moto: S3Server) -> None:
    storage = impatient_s3(moto)
    storage.probe()
    assert moto.keys(PROBE_PREFIX) == []

    moto.process.signal(signal.SIGSTOP, group=True)  # hung: connections open, nothing answers
    started = time.monotonic()
    for operation in (
        lambda: storage.put_bytes("tenants/a/inputs/x", b"1"),
        lambda: storage.get_bytes("k"),
        storage.probe,
    ):
        with pytest.raises(StorageUnavailable) as info:
            operation()
        assert info.value.retryable
        assert_no_internals(info.value.to_problem(), moto.endpoint, moto.endpoint.split("//")[1], moto.bucket)
    assert time.monotonic() - started < 15

    moto.process.signal(signal.SIGCONT, group=True)
    storage.probe()  # back

    moto.process.kill()  # gone: connections refused
    with pytest.raises(StorageUnavailable) as info:
        storage.probe()
    assert_no_internals(info.value.to_problem(), moto.endpoint.split("//")[1])


@pytest.mark.parametrize(
    ("code", "http"),
    [
        ("InternalError", 500),
        ("ServiceUnavailable", 503),
        ("SlowDown", 503),
        ("Throttling", 400),
        ("AccessDenied", 403),
    ],
)
def test_given_s3_error_answer_expect_unavailable_with_its_code(code: str, http: int) -> None:
    from botocore.exceptions import ClientError

    storage = S3Storage("bucket-name", endpoint_url="http://10.1.2.3:9000", access_key="a", secret_key="b")
    answer = {"Error": {"Code": code, "Message": "at http://10.1.2.3:9000/bucket-name/k"},
              "ResponseMetadata": {"HTTPStatusCode": http}}
    with pytest.raises(StorageUnavailable) as info, storage._errors("write 'k'", "k"):
        raise ClientError(answer, "PutObject")
    assert code in info.value.detail and info.value.retryable
    assert_no_internals(info.value.to_problem(), "10.1.2.3", "bucket-name")


def test_given_s3_no_such_key_expect_not_found() -> None:
    from botocore.exceptions import ClientError

    storage = S3Storage("b", endpoint_url="http://10.1.2.3:9000", access_key="a", secret_key="b")
    with pytest.raises(NotFound), storage._errors("read 'k'", "k"):
        raise ClientError({"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject")
