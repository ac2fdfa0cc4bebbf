"""Bad input, masks of the wrong shape: refused at the API, before a worker sees the job.

The engine refuses a mask whose aspect ratio differs from the image it covers by more than
2 % (``shared.engine.images.check_mask_aspect``). The API knows both sizes from the uploads
and applies the same rule (``shared.jobs.shapes``) to content masks (``masked`` regions,
``adain`` masks) and style masks: 422 ``invalid-mask`` naming each bad mask; nothing queued.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api_helpers import EnqueueRecorder, assert_nothing_queued, assert_problem, png_bytes, upload_id

WHITE = (255, 255, 255)


@pytest.fixture
def image(client: TestClient):
    """Upload an image of a size (distinct bytes per colour) and return its id."""

    def make(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> str:
        return upload_id(client, png_bytes(width, height, color))

    return make


def _refused(client: TestClient, spec: dict) -> dict:
    return assert_problem(client.post("/v1/jobs", json=spec), 422, "invalid-mask")


def test_given_region_mask_of_other_shape_expect_422_naming_it(
    client: TestClient, enqueued: EnqueueRecorder, image
) -> None:
    # given a 64x48 content, a mask of its shape and a square one
    content, style = image(64, 48), image(40, 40, (9, 9, 9))
    good, square = image(32, 24, WHITE), image(64, 64, WHITE)
    regions = [{"style": {"image": style}, "mask": good}, {"style": {"image": style}, "mask": square}]
    # when a masked job uses both, then the square one is refused by name, with both sizes
    body = _refused(client, {"method": "masked", "content": content, "regions": regions})
    assert body["masks"] == ["regions[1].mask"]
    assert "regions[1].mask: aspect ratio 64x64 does not match the content image 64x48" in body["detail"]
    assert_nothing_queued(enqueued)


def test_given_adain_mask_of_other_shape_expect_422(client: TestClient, enqueued: EnqueueRecorder, image) -> None:
    content, style, mask = image(64, 48), image(40, 40, (9, 9, 9)), image(40, 40, WHITE)
    spec = {"method": "adain", "content": content, "styles": [{"image": style}], "masks": [mask]}
    assert _refused(client, spec)["masks"] == ["masks[0]"]
    assert_nothing_queued(enqueued)


def test_given_style_masks_of_other_shape_expect_422(client: TestClient, enqueued: EnqueueRecorder, image) -> None:
    # given a 40x40 style with a 30x60 mask: a style mask must match its style image
    content, style, mask = image(64, 48), image(40, 40, (9, 9, 9)), image(30, 60, WHITE)
    cases = [
        ({"method": "optimize", "content": content, "styles": [{"image": style, "mask": mask}]}, "styles[0].mask",
         "40x40"),
        # adain compares with the style image as scaled to style_size, as its engine does
        ({"method": "adain", "content": content, "styles": [{"image": style, "mask": mask}], "style_size": 256},
         "styles[0].mask", "256x256"),
        ({"method": "masked", "content": content, "regions": [{"style": {"image": style, "mask": mask},
                                                              "mask": image(64, 48, WHITE)}]},
         "regions[0].style.mask", "40x40"),
    ]
    for spec, what, size in cases:
        body = _refused(client, spec)
        assert body["masks"] == [what] and f"does not match the style image {size}" in body["detail"], body
    assert_nothing_queued(enqueued)


def test_given_masks_of_the_right_shape_expect_accepted(client: TestClient, image) -> None:
    # given a 100x75 content: a 100x76 mask is within the 2 % tolerance, a 100x80 one is not
    content, style = image(100, 75), image(40, 40, (9, 9, 9))
    near, far = image(100, 76, WHITE), image(100, 80, WHITE)

    def masked(mask: str) -> dict:
        return {"method": "masked", "content": content, "regions": [{"style": {"image": style}, "mask": mask}]}

    assert client.post("/v1/jobs", json=masked(near)).status_code == 202
    _refused(client, masked(far))
    # a mask at another resolution with the same shape is fine, for every method
    small = image(20, 15, WHITE)
    assert client.post("/v1/jobs", json=masked(small)).status_code == 202
    adain = {"method": "adain", "content": content, "styles": [{"image": style}], "masks": [small]}
    assert client.post("/v1/jobs", json=adain).status_code == 202


def test_given_quarter_turned_mask_expect_left_to_the_worker(client: TestClient, image) -> None:
    # given a 64x48 content and a 48x64 mask: stored sizes are as encoded, and EXIF
    # orientation (applied by the engine) may turn either image a quarter; the API cannot
    # tell, so it refuses only masks that fit in neither orientation (the worker checks the rest)
    content, style, turned = image(64, 48), image(40, 40, (9, 9, 9)), image(48, 64, WHITE)
    spec = {"method": "masked", "content": content, "regions": [{"style": {"image": style}, "mask": turned}]}
    assert client.post("/v1/jobs", json=spec).status_code == 202
