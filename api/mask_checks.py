"""Masks are checked before a job is queued: each must have the shape of the image it covers.

The engine refuses a mask whose aspect ratio differs from its image's (``InvalidMask`` on the
worker, after the job waited in the queue). The API knows both sizes from the uploads and
applies the same rule (``shared.jobs.shapes``) at once: 422 ``invalid-mask``, nothing queued.

Uploads record an image's size as encoded; the engine sees it after EXIF orientation, which
may turn either image a quarter. So a mask is refused here only when it fits its image in
neither orientation: every mask refused here the engine would refuse too.
"""

from __future__ import annotations

from shared.errors import InvalidMask
from shared.jobs import inputs
from shared.jobs.shapes import fit_size, mask_mismatch, mask_shapes


def _orientations(width: int, height: int) -> list[tuple[int, int]]:
    return [(width, height), (height, width)]


def check_mask_shapes(tenant: str, spec: object) -> None:
    """422 ``invalid-mask`` naming every mask of ``spec`` whose aspect ratio cannot match its
    image's. Inputs that are missing or have no recorded size are left to the reference check
    and to the worker."""
    shapes = mask_shapes(spec)
    if not shapes:
        return
    rows = inputs.find_inputs(tenant, [s.mask for s in shapes] + [s.image for s in shapes])
    problems: list[str] = []
    refused: list[str] = []
    for shape in shapes:
        mask, image = rows.get(shape.mask), rows.get(shape.image)
        if not (mask and image and mask.width and mask.height and image.width and image.height):
            continue
        image_sizes = _orientations(image.width, image.height)
        if shape.image_side:  # compared with the image as the engine scaled it
            image_sizes = [fit_size(w, h, shape.image_side) for w, h in image_sizes]
        reasons = [
            mask_mismatch(m, i, shape.what, image_what=shape.covers)
            for m in _orientations(mask.width, mask.height)
            for i in image_sizes
        ]
        if all(reasons):
            problems.append(str(reasons[0]))
            refused.append(shape.what)
    if problems:
        raise InvalidMask("; ".join(problems) + ".", masks=refused)
