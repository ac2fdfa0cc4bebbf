"""Hostile and broken archives at POST /v1/inputs: every one is refused with its problem
type, the cap (``limit``) it crossed and the member where, and leaves nothing behind (no
input row, no stored object, nothing queued).

The caps here are small (``ARCHIVE_BYTES`` etc.) so bombs built in memory stay tiny."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from archive_samples import (
    BOMB_BYTES,
    image_bytes,
    tar_bytes,
    tar_with_symlink,
    zeros_bomb,
    zip_bytes,
)
from fastapi.testclient import TestClient

from shared.settings import Settings

from api_helpers import MAX_PIXELS, MAX_UPLOAD, EnqueueRecorder, assert_problem, upload

ARCHIVE_BYTES = 8 * 1024 * 1024
ARCHIVE_MEMBERS = 40
ARCHIVE_TOTAL_PIXELS = 3 * MAX_PIXELS  # three images at the per-image cap (max_pixels)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        broker_url="redis://127.0.0.1:1/0",
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
        archive_max_bytes=ARCHIVE_BYTES,
        archive_max_members=ARCHIVE_MEMBERS,
        archive_max_total_pixels=ARCHIVE_TOTAL_PIXELS,
    )


def megapixel_png(width: int = 1000, height: int = 1000) -> bytes:
    return image_bytes(width, height, mode="L")  # a few KB on the wire


def truncated_png() -> bytes:
    data = image_bytes(64, 64)
    return data[: len(data) // 2]


# (case id, archive bytes, status, problem slug, the Settings cap named or None, member named)
CASES = [
    ("zip-bomb", lambda: zeros_bomb("zip"), 413, "archive-too-large", "archive_max_bytes", "bomb.png"),
    ("tar-gz-bomb", lambda: zeros_bomb("gz"), 413, "archive-too-large", "archive_max_bytes", "bomb.png"),
    ("tar-xz-bomb", lambda: zeros_bomb("xz"), 413, "archive-too-large", "archive_max_bytes", "bomb.png"),
    ("zip-bomb-spread-over-members",
     lambda: zip_bytes({f"{i:02d}.png": bytes(3 * 1024 * 1024) for i in range(4)}),
     413, "archive-too-large", "archive_max_bytes", "02.png"),
    ("zip-too-many-members",
     lambda: zip_bytes({"a.png": image_bytes(), **{f"n/{i}.txt": b"" for i in range(ARCHIVE_MEMBERS)}}),
     413, "archive-too-large", "archive_max_members", f"n/{ARCHIVE_MEMBERS - 1}.txt"),
    ("tar-too-many-members",
     lambda: tar_bytes({f"{i}.txt": b"" for i in range(ARCHIVE_MEMBERS + 5)}),
     413, "archive-too-large", "archive_max_members", f"{ARCHIVE_MEMBERS}.txt"),
    ("member-with-too-many-pixels",
     lambda: zip_bytes({"ok.png": image_bytes(), "big.png": megapixel_png(1100, 1000)}),
     413, "archive-too-large", "archive_max_member_pixels", "big.png"),
    ("too-many-pixels-in-all",
     lambda: zip_bytes({f"{i}.png": megapixel_png() for i in range(4)}),
     413, "archive-too-large", "archive_max_total_pixels", "3.png"),
    ("member-not-an-image", lambda: zip_bytes({"a.png": image_bytes(), "b.jpg": b"x"}),
     422, "invalid-image", None, "b.jpg"),
    ("member-truncated", lambda: zip_bytes({"a.png": image_bytes(), "t.png": truncated_png()}),
     422, "invalid-image", None, "t.png"),
    ("tar-member-truncated", lambda: tar_bytes({"t.png": truncated_png()}),
     422, "invalid-image", None, "t.png"),
    ("member-in-a-refused-format", lambda: zip_bytes({"icon.png": image_bytes(8, 8, fmt="ICO")}),
     422, "invalid-image", None, "icon.png"),
    ("zip-slip", lambda: zip_bytes({"../evil.png": image_bytes()}), 422, "invalid-image", None, "../evil.png"),
    ("tar-absolute-path", lambda: tar_bytes({"/etc/evil.png": image_bytes()}, mode="w"),
     422, "invalid-image", None, "/etc/evil.png"),
    ("tar-symlink", lambda: tar_with_symlink("link.png"), 422, "invalid-image", None, "link.png"),
    ("tar-pax-header-bomb", lambda: tar_bytes({"a.png": image_bytes()}, pax_headers={"comment": "x" * (3 << 20)}),
     422, "invalid-image", None, None),
    ("zip-without-images", lambda: zip_bytes({"readme.txt": b"hi", "folder/": b""}), 422, "invalid-image", None, None),
]


def assert_nothing_kept(client: TestClient, settings: Settings, data: bytes, enqueued: EnqueueRecorder) -> None:
    """No input row, no stored object, nothing sent to the queue."""
    assert_problem(client.get(f"/v1/inputs/{hashlib.sha256(data).hexdigest()}"), 404, "not-found")
    root = settings.resolved_storage_dir
    assert not root.exists() or [p for p in root.rglob("*") if p.is_file()] == []
    assert enqueued.calls == []


@pytest.mark.parametrize(
    ("build", "status", "slug", "limit", "member"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_given_hostile_archive_when_uploaded_expect_refused_naming_member_and_nothing_kept(
    client: TestClient, settings: Settings, enqueued: EnqueueRecorder, build, status, slug, limit, member
) -> None:
    data = build()
    assert len(data) <= MAX_UPLOAD  # small on the wire: the caps, not the upload limit, refuse it

    body = assert_problem(upload(client, data, name="dataset.zip"), status, slug)

    if limit is not None:
        assert body["limit"] == limit and limit in body["detail"]
        # archive_max_member_pixels is unset here: it falls back to max_pixels
        assert body["maximum"] == (getattr(settings, limit) or settings.max_pixels)
    if member is not None:
        assert body["member"] == member and member in body["detail"]
    assert_nothing_kept(client, settings, data, enqueued)


def test_given_zip_bomb_expect_refused_before_decompressing(client: TestClient, settings: Settings) -> None:
    """The bomb's central directory declares 50 MB: it is refused from the declared sizes,
    long before decompressing would take measurable time."""
    data = zeros_bomb("zip")
    started = time.perf_counter()
    assert_problem(upload(client, data, name="bomb.zip"), 413, "archive-too-large")
    assert time.perf_counter() - started < 2.0
    assert len(data) * 500 < BOMB_BYTES  # the ratio that made it a bomb


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_given_tar_of_images_within_caps_expect_201_archive(client: TestClient, mode: str) -> None:
    data = tar_bytes({"a.png": image_bytes(), "sub/b.jpg": image_bytes(fmt="JPEG"), "notes.txt": b"ok"}, mode=mode)
    response = upload(client, data, name="d.tar")
    assert response.status_code == 201, response.text
    assert (response.json()["kind"], response.json()["content_type"]) == ("archive", "application/x-tar")


def test_given_archive_exactly_at_the_caps_expect_accepted(client: TestClient) -> None:
    data = zip_bytes({f"{i}.png": megapixel_png() for i in range(3)})  # 3 x 1 MP = the total cap
    assert upload(client, data, name="d.zip").status_code == 201
