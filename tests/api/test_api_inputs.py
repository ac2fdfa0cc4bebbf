"""POST/GET /v1/inputs: validation, dedupe by content hash, byte cap."""

from __future__ import annotations

import hashlib
import io

from fastapi.testclient import TestClient
from PIL import Image

from api_helpers import MAX_UPLOAD, assert_problem, jpeg_bytes, png_bytes, upload, zip_bytes


def test_given_png_when_uploaded_expect_201_with_sha256_id(client: TestClient) -> None:
    data = png_bytes(16, 12)
    response = upload(client, data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"] == hashlib.sha256(data).hexdigest()
    assert (body["width"], body["height"], body["kind"], body["content_type"]) == (16, 12, "image", "image/png")
    assert body["size"] == len(data)


def test_given_same_bytes_twice_expect_200_same_id_stored_once(client: TestClient, settings) -> None:
    data = png_bytes()
    first = upload(client, data, name="a.png")
    again = upload(client, data, name="b.png")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    stored = list((settings.resolved_storage_dir / "tenants" / "default" / "inputs").iterdir())
    assert [p.name for p in stored] == [first.json()["id"]]


def test_given_uploaded_when_read_back_expect_metadata(client: TestClient) -> None:
    input_id = upload(client, png_bytes()).json()["id"]
    response = client.get(f"/v1/inputs/{input_id}")
    assert response.status_code == 200 and response.json()["id"] == input_id


def test_given_unknown_input_expect_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/inputs/" + "0" * 64), 404, "not-found")


def test_given_too_many_bytes_expect_413_problem(client: TestClient) -> None:
    body = assert_problem(upload(client, b"\x00" * (MAX_UPLOAD + 1)), 413, "payload-too-large")
    assert str(MAX_UPLOAD) in body["detail"]


def test_given_garbage_bytes_expect_422_invalid_image(client: TestClient) -> None:
    body = assert_problem(upload(client, b"definitely not an image"), 422, "invalid-image")
    assert "PNG" in body["detail"]


def test_given_truncated_png_expect_422_invalid_image(client: TestClient) -> None:
    data = png_bytes(64, 64)
    assert_problem(upload(client, data[: len(data) // 2]), 422, "invalid-image")


def test_given_gif_expect_422_format_not_allowed(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "GIF")
    body = assert_problem(upload(client, buf.getvalue(), name="x.gif"), 422, "invalid-image")
    assert "GIF" in body["detail"]


def test_given_too_many_pixels_expect_422(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("L", (1100, 1000)).save(buf, "PNG")  # 1.1 MP > 1 MP cap, few bytes
    body = assert_problem(upload(client, buf.getvalue()), 422, "invalid-image")
    assert "pixels" in body["detail"]


def test_given_empty_file_expect_422(client: TestClient) -> None:
    assert_problem(upload(client, b""), 422, "invalid-image")


def test_given_zip_of_images_expect_archive_input(client: TestClient) -> None:
    archive = zip_bytes({"a.png": png_bytes(), "b.jpg": jpeg_bytes(), "README.txt": b"x"})
    response = upload(client, archive, name="d.zip")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "archive" and body["content_type"] == "application/zip" and body["width"] is None


def test_given_zip_without_images_expect_422(client: TestClient) -> None:
    assert_problem(upload(client, zip_bytes({"readme.txt": b"hi"}), name="d.zip"), 422, "invalid-image")


def test_given_zip_slip_member_expect_422(client: TestClient) -> None:
    data = zip_bytes({"../evil.png": png_bytes()})
    assert "outside" in assert_problem(upload(client, data, name="d.zip"), 422)["detail"]


def test_given_no_file_field_expect_422_validation_problem(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/inputs", data={"x": "1"}), 422, "validation-error")
    assert body["errors"] and body["errors"][0]["loc"].endswith("file")
