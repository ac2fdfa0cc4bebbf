"""Validation of uploaded files: an image Pillow can decode, or a zip/tar archive of images.

Nothing uploaded is trusted: the format must be on the allowlist, the pixel count under
``settings.max_pixels`` (checked from the header before decoding, so a decompression
bomb is refused cheaply), and the file must decode completely. Archives must contain
at least one image by name and no member escaping the archive root.
"""

from __future__ import annotations

import io
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from shared.errors import InvalidImage
from shared.imaging import IMAGE_SUFFIXES

ALLOWED_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
MAX_ARCHIVE_MEMBERS = 200_000


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
        except Exception as exc:  # Pillow raises many types on broken headers
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


def _check_member_names(names: list[str]) -> None:
    if len(names) > MAX_ARCHIVE_MEMBERS:
        raise InvalidImage(f"The archive has {len(names)} members; the limit is {MAX_ARCHIVE_MEMBERS}.")
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise InvalidImage(f"The archive member {name!r} points outside the archive.")
    if not any(n.lower().endswith(IMAGE_SUFFIXES) for n in names):
        raise InvalidImage(
            f"The archive contains no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}."
        )


def _inspect_archive(data: bytes) -> UploadInfo | None:
    buf = io.BytesIO(data)
    if zipfile.is_zipfile(buf):
        try:
            with zipfile.ZipFile(buf) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
        except zipfile.BadZipFile as exc:
            raise InvalidImage(f"The zip archive is damaged ({exc}).") from None
        _check_member_names(names)
        return UploadInfo("archive", "application/zip")
    buf.seek(0)
    try:
        with tarfile.open(fileobj=buf, mode="r:*") as tf:
            members = tf.getmembers()
    except (tarfile.TarError, EOFError, OSError):
        return None
    if any(m.issym() or m.islnk() for m in members):
        raise InvalidImage("The tar archive contains links; only regular files are accepted.")
    _check_member_names([m.name for m in members if m.isfile()])
    return UploadInfo("archive", "application/x-tar")


def inspect_upload(data: bytes, max_pixels: int) -> UploadInfo:
    """Classify and validate uploaded bytes; raises ``InvalidImage`` (422) when unusable."""
    if not data:
        raise InvalidImage("The uploaded file is empty.")
    info = _inspect_image(data, max_pixels) or _inspect_archive(data)
    if info is None:
        raise InvalidImage(
            f"The file is neither an image ({', '.join(ALLOWED_IMAGE_FORMATS)}) nor a zip/tar archive of images."
        )
    return info
