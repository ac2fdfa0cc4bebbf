"""Image geometry that the API and the engine both apply: arithmetic on sizes, no pixels.

The engine sizes images with ``fit_size`` and refuses a mask whose aspect ratio is not the
one of the image it covers (``mask_mismatch``); the API applies the same rule before a job
is queued, to the sizes stored with each uploaded input (``mask_shapes`` lists, for a spec,
every mask and the image it covers, as the engine pairs them).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.jobs.specs import AdainSpec, MaskedSpec, OptimizeSpec, StyleRef

#: How far (relative) a mask's aspect ratio may differ from its image's.
ASPECT_TOLERANCE = 0.02


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longest side is ``max_side``, aspect kept, each side >= 1."""
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def mask_mismatch(
    mask_size: tuple[int, int],
    image_size: tuple[int, int],
    what: str,
    tolerance: float = ASPECT_TOLERANCE,
    image_what: str = "content image",
) -> str | None:
    """Why a mask of ``mask_size`` cannot cover an image of ``image_size`` (None when it can):
    a mask must have the image's aspect ratio, at any resolution."""
    mw, mh = mask_size
    cw, ch = image_size
    if abs(mw / mh - cw / ch) <= tolerance * (cw / ch):
        return None
    return (
        f"{what}: aspect ratio {mw}x{mh} does not match the {image_what} {cw}x{ch}; "
        "a mask must have the same shape as the image it covers"
    )


@dataclass(frozen=True)
class MaskShape:
    """One mask of a spec and the image it must match; ``image_side``: the longest side the
    engine scales that image to before comparing (None: compared at its own size)."""

    what: str  # where the mask is in the spec, e.g. "regions[1].mask"
    mask: str
    image: str
    covers: str = "content image"  # or "style image"
    image_side: int | None = None


def _style_masks(styles: list[StyleRef], where: str, image_side: int | None = None) -> list[MaskShape]:
    return [
        MaskShape(f"{where}[{i}].mask", s.mask, s.image, "style image", image_side)
        for i, s in enumerate(styles)
        if s.mask
    ]


def mask_shapes(spec: object) -> list[MaskShape]:
    """Every (mask, image) pair of ``spec`` the engine checks with ``mask_mismatch``: content
    masks against the content, style masks against their style image."""
    if isinstance(spec, OptimizeSpec):
        return _style_masks(spec.styles, "styles")
    if isinstance(spec, MaskedSpec):
        shapes = [MaskShape(f"regions[{i}].mask", r.mask, spec.content) for i, r in enumerate(spec.regions)]
        for i, r in enumerate(spec.regions):
            if r.style.mask:
                shapes.append(MaskShape(f"regions[{i}].style.mask", r.style.mask, r.style.image, "style image"))
        return shapes
    if isinstance(spec, AdainSpec):
        shapes = [MaskShape(f"masks[{i}]", m, spec.content) for i, m in enumerate(spec.masks or [])]
        # the engine scales a style image to style_size first and compares its mask with that
        return shapes + _style_masks(spec.styles, "styles", spec.style_size)
    return []
