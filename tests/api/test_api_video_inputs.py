"""POST /v1/inputs with videos: mp4, webm and animated GIF accepted and probed; limits answer 413,
damaged or stream-less files 422; a video job needs a video input. Clips are generated here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared.engine.video.clips import shapes_frames, write_clip
from shared.settings import Settings

from api_helpers import assert_problem, make_client, png_bytes, upload


@pytest.fixture
def video_client(tmp_path: Path, enqueued) -> TestClient:
    settings = Settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0", max_upload_bytes=2_000_000,
                        video_max_seconds=2.0, video_max_frames=40, video_max_side=200)
    yield from make_client(settings)


@pytest.fixture(scope="module")
def frames() -> list:
    return shapes_frames(64, 48, 12)


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("mp4", "video/mp4"), ("webm", "video/webm"), ("gif", "image/gif")]
)
def test_given_video_when_uploaded_expect_201_kind_video_with_size(video_client: TestClient, frames, fmt: str,
                                                                   content_type: str) -> None:
    data = write_clip(frames, 12, fmt)
    response = upload(video_client, data, name=f"clip.{fmt}")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["kind"], body["content_type"], body["width"], body["height"]) == ("video", content_type, 64, 48)
    assert body["id"] == hashlib.sha256(data).hexdigest()
    assert upload(video_client, data).status_code == 200  # stored once, like images


def test_given_video_longer_than_limit_expect_413_video_too_large(video_client: TestClient, frames) -> None:
    data = write_clip(frames[:10], 4, "mp4", tone_hz=None)  # 2.5 s > 2 s
    body = assert_problem(upload(video_client, data), 413, "video-too-large")
    assert body["limit"] == "video_max_seconds" and "2.5" in body["detail"]


def test_given_video_with_too_many_frames_expect_413(video_client: TestClient) -> None:
    data = write_clip(shapes_frames(32, 24, 45), 30, "mp4", tone_hz=None)  # 45 frames > 40
    assert assert_problem(upload(video_client, data), 413, "video-too-large")["limit"] == "video_max_frames"


def test_given_video_wider_than_limit_expect_413(video_client: TestClient) -> None:
    data = write_clip(shapes_frames(256, 64, 4), 12, "mp4", tone_hz=None)
    body = assert_problem(upload(video_client, data), 413, "video-too-large")
    assert body["limit"] == "video_max_side" and "256x64" in body["detail"]


@pytest.mark.parametrize("fmt", ["webm", "mp4"])
def test_given_truncated_video_expect_422_invalid_video_and_nothing_stored(video_client: TestClient, frames,
                                                                           tmp_path: Path, fmt: str) -> None:
    data = write_clip(frames, 12, fmt)
    body = assert_problem(upload(video_client, data[: len(data) // 3]), 422, "invalid-video")
    assert "truncated" in body["detail"]
    assert not (tmp_path / "storage" / "tenants" / "default" / "inputs").exists()


def test_given_still_gif_expect_422_invalid_image(video_client: TestClient) -> None:
    data = write_clip(shapes_frames(16, 16, 1), 1, "gif")
    assert "animated GIF" in assert_problem(upload(video_client, data), 422, "invalid-image")["detail"]


def test_given_video_job_when_content_is_an_image_expect_422(video_client: TestClient) -> None:
    image_id = upload(video_client, png_bytes(16, 12)).json()["id"]
    response = video_client.post("/v1/jobs", json={"method": "video", "content": image_id, "styles": [0, 1]})
    body = assert_problem(response, 422, "invalid-spec")
    assert "a video is needed" in body["detail"]


def test_given_video_job_when_content_is_a_video_expect_202_queued(video_client: TestClient, frames) -> None:
    video_id = upload(video_client, write_clip(frames, 12, "mp4")).json()["id"]
    response = video_client.post("/v1/jobs", json={"method": "video", "content": video_id, "styles": [0, 1, 2],
                                                   "size": 64})
    assert response.status_code == 202, response.text
    assert response.json()["method"] == "video"


def test_given_fast_video_spec_with_style_images_expect_422(video_client: TestClient) -> None:
    response = video_client.post("/v1/jobs", json={"method": "video", "content": "0" * 64, "render": "fast",
                                                   "style_images": [{"image": "1" * 64}]})
    assert "render='adain'" in assert_problem(response, 422, "invalid-spec")["detail"]
