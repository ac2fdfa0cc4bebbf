"""shared.storage: LocalStorage and S3Storage (moto in-process) behave the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.errors import NotFound, StorageUnavailable
from shared.settings import Settings
from shared.storage import (
    LocalStorage,
    S3Storage,
    Storage,
    checkpoint_key,
    dataset_prefix,
    get_storage,
    input_key,
    model_key,
    result_key,
    thumbnail_key,
)

from harness import missing_backend

SHA = "ab" * 32


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "blobs")
        return
    try:
        import moto
    except ImportError as exc:
        missing_backend("moto (S3 in process)", exc)
    with moto.mock_aws():
        yield S3Storage("sf-test", region="us-east-1", access_key="test", secret_key="test")


def test_keys_are_deterministic_and_tenant_scoped() -> None:
    assert input_key("acme", SHA) == f"tenants/acme/inputs/{SHA}"
    assert result_key("acme", "j1", "output.png") == "tenants/acme/jobs/j1/output.png"
    assert checkpoint_key("acme", "j1") == "tenants/acme/jobs/j1/checkpoint.pt"
    assert model_key(None, "m1") == "global/models/m1/model.pt"
    assert model_key("acme", "m1", "decoder.pt") == "tenants/acme/models/m1/decoder.pt"
    assert thumbnail_key(None, "m1", 3) == "global/models/m1/thumbnails/3.png"
    assert dataset_prefix("acme", "photos/2026") == "tenants/acme/datasets/photos/2026/"
    with pytest.raises(ValueError):
        dataset_prefix("acme", "../other-tenant")


@pytest.mark.parametrize("tenant", ["", "..", "a/b", ".hidden", "x" * 65])
def test_given_bad_tenant_expect_value_error(tenant: str) -> None:
    with pytest.raises(ValueError):
        input_key(tenant, SHA)


def test_given_bad_sha_expect_value_error() -> None:
    with pytest.raises(ValueError):
        input_key("acme", "../../etc/passwd")


def test_given_bytes_when_put_expect_roundtrip_list_and_delete(storage: Storage, tmp_path: Path) -> None:
    storage.put_bytes("tenants/a/x/1.png", b"one", "image/png")
    storage.put_bytes("tenants/a/x/2.png", b"two", "image/png")
    storage.put_bytes("tenants/b/x/3.png", b"three", "image/png")
    assert storage.get_bytes("tenants/a/x/1.png") == b"one"
    assert storage.exists("tenants/a/x/2.png") and not storage.exists("tenants/a/x/9.png")
    assert storage.list("tenants/a/") == ["tenants/a/x/1.png", "tenants/a/x/2.png"]
    storage.put_bytes("tenants/a/x/1.png", b"uno")  # overwrite
    assert storage.get_bytes("tenants/a/x/1.png") == b"uno"
    storage.delete("tenants/a/x/1.png")
    storage.delete("tenants/a/x/1.png")  # deleting twice is fine
    assert not storage.exists("tenants/a/x/1.png")


def test_given_missing_key_expect_not_found(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        storage.get_bytes("tenants/a/missing")
    with pytest.raises(NotFound):
        storage.download_to("tenants/a/missing", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_given_file_when_uploaded_expect_download_same_bytes(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(b"\x00\x01" * 1000)
    storage.upload_file(src, "tenants/a/jobs/j/checkpoint.pt")
    out = storage.download_to("tenants/a/jobs/j/checkpoint.pt", tmp_path / "deep" / "out.bin")
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs", "a//b", "", "a/./b", "a\\b"])
def test_given_unsafe_key_expect_value_error(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError):
        storage.put_bytes(key, b"x")


def test_presigned_url_only_for_s3(storage: Storage) -> None:
    storage.put_bytes("tenants/a/r.png", b"png")
    url = storage.presigned_url("tenants/a/r.png", 60)
    if isinstance(storage, LocalStorage):
        assert url is None
    else:
        assert url and "X-Amz-Expires=60" in url


def test_local_storage_leaves_no_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("k/v", b"1")
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["v"]


def test_given_unreachable_s3_expect_storage_unavailable() -> None:
    storage = S3Storage(
        "b", endpoint_url="http://127.0.0.1:1", access_key="x", secret_key="y", connect_timeout_s=1, max_attempts=1
    )
    with pytest.raises(StorageUnavailable) as info:
        storage.put_bytes("k", b"1")
    assert info.value.retryable


def test_get_storage_picks_backend_from_settings(tmp_path: Path) -> None:
    local = get_storage(Settings(home=tmp_path))
    assert isinstance(local, LocalStorage) and local.root == (tmp_path / "storage").resolve()
    s3 = get_storage(Settings(home=tmp_path, storage="s3", s3_access_key="a", s3_secret_key="b"))
    assert isinstance(s3, S3Storage)


def test_given_many_keys_when_listing_with_a_limit_expect_at_most_that_many(storage: Storage) -> None:
    for i in range(5):
        storage.put_bytes(f"tenants/a/d/{i}.png", b"x")
    storage.put_bytes("tenants/a/dx.png", b"x")  # shares the string prefix "tenants/a/d", not the folder
    assert storage.list("tenants/a/d/", limit=2) == ["tenants/a/d/0.png", "tenants/a/d/1.png"]
    assert len(storage.list("tenants/a/d/")) == 5
    assert storage.list("tenants/a/d") == [*(f"tenants/a/d/{i}.png" for i in range(5)), "tenants/a/dx.png"]
