"""Validation of uploaded files: an image Pillow can decode, or a zip/tar archive of images.

Nothing uploaded is trusted: the format must be on the allowlist, the pixel count under
``settings.max_pixels`` (checked from the header before decoding, so a decompression
bomb is refused cheaply), and the file must decode completely. Archives are streamed
through ``shared.archives`` under the ``Settings.archive_*`` caps (members, uncompressed
bytes, pixels per image and in all), every image member decoded; they must contain at
least one image and no member escaping the archive root, and any refusal names the member.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from shared.archives import ArchiveLimits, no_images_error, scan_archive
from shared.errors import InvalidImage

ALLOWED_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")


@dataclass(frozen=True)
class UploadInfo:
    kind: str  # "image" | "archive"
    content_type: str
    width: int | None = None
    height: int | None = None


def _inspect_image(data: bytes, max_pixels: int) -> UploadInfo | None:
    """UploadInfo for an allowed image; None if Pillow does not recognize the bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = img.format, img.size
        except UnidentifiedImageError:
            return None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidImage(f"The image has too many pixels; the limit is {max_pixels}.") from None
        except Exception as exc:
            raise InvalidImage(f"The image header could not be read ({exc}).") from None
    if fmt not in ALLOWED_IMAGE_FORMATS:
        raise InvalidImage(f"{fmt} images are not accepted; use one of {', '.join(ALLOWED_IMAGE_FORMATS)}.")
    if width * height > max_pixels:
        raise InvalidImage(f"The image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # structural checks (chunk CRCs, ...)
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # and a full decode: verify() misses truncated JPEGs
    except Exception as exc:
        raise InvalidImage(f"The {fmt} image is damaged or truncated ({exc}).") from None
    return UploadInfo("image", Image.MIME.get(fmt, "application/octet-stream"), width, height)


def _inspect_archive(data: bytes, limits: ArchiveLimits) -> UploadInfo | None:
    """UploadInfo for a zip / tar of images within ``limits``; None if not an archive."""
    summary = scan_archive(io.BytesIO(data), limits, full_decode=True)
    if summary is None:
        return None
    if summary.images == 0:
        raise no_images_error("The archive")
    return UploadInfo("archive", summary.content_type)


def inspect_upload(data: bytes, max_pixels: int, limits: ArchiveLimits) -> UploadInfo:
    """Classify and validate uploaded bytes; raises ``InvalidImage`` (422) when unusable and
    ``ArchiveTooLarge`` (413) for an archive over one of ``limits``."""
    if not data:
        raise InvalidImage("The uploaded file is empty.")
    info = _inspect_image(data, max_pixels) or _inspect_archive(data, limits)
    if info is None:
        raise InvalidImage(
            f"The file is neither an image ({', '.join(ALLOWED_IMAGE_FORMATS)}) nor a zip/tar archive of images."
        )
    return info
