"""Validation of uploaded files: an image Pillow can decode, a zip/tar archive of images, or a
video (mp4/mov, webm, animated GIF) that PyAV can demux and decode (``shared.videos``).

Nothing uploaded is trusted: the format must be on the allowlist, the pixel count under
``settings.max_pixels`` (checked from the header before decoding, so a decompression
bomb is refused cheaply), and the file must decode completely. Archives are streamed
through ``shared.archives`` under the ``Settings.archive_*`` caps (members, uncompressed
bytes, pixels per image and in all), every image member decoded; they must contain at
least one image and no member escaping the archive root, and any refusal names the member.
Videos are probed under the ``Settings.video_max_*`` limits (duration, frames, longest side:
413 ``video-too-large``); no video stream, a codec FFmpeg cannot decode or a damaged file
answer 422 ``invalid-video``. An animated GIF is a video input; a still GIF is refused.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from shared.archives import ArchiveLimits, no_images_error, scan_archive
from shared.errors import InvalidImage
from shared.videos import VideoLimits, looks_like_gif, probe_video

ALLOWED_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")


@dataclass(frozen=True)
class UploadInfo:
    kind: str  # "image" | "archive" | "video"
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


def _inspect_video(data: bytes, limits: VideoLimits) -> UploadInfo | None:
    """UploadInfo for a video within ``limits``; None if FFmpeg recognises no video container."""
    info = probe_video(data, limits)
    if info is None:
        return None
    return UploadInfo("video", info.content_type, info.width, info.height)


def inspect_upload(data: bytes, max_pixels: int, limits: ArchiveLimits, video_limits: VideoLimits) -> UploadInfo:
    """Classify and validate uploaded bytes; raises ``InvalidImage`` / ``InvalidVideo`` (422)
    when unusable, ``ArchiveTooLarge`` (413) for an archive over one of ``limits`` and
    ``VideoTooLarge`` (413) for a video over one of ``video_limits``."""
    if not data:
        raise InvalidImage("The uploaded file is empty.")
    if looks_like_gif(data):
        video = probe_video(data, video_limits)
        if video is None or video.frames < 2:
            raise InvalidImage(
                f"GIF images are not accepted as still images (use one of {', '.join(ALLOWED_IMAGE_FORMATS)}); "
                "an animated GIF is accepted as a video."
            )
        info: UploadInfo | None = UploadInfo("video", video.content_type, video.width, video.height)
    else:
        info = _inspect_image(data, max_pixels) or _inspect_archive(data, limits) or _inspect_video(data, video_limits)
    if info is None:
        raise InvalidImage(
            f"The file is neither an image ({', '.join(ALLOWED_IMAGE_FORMATS)}), a zip/tar archive of images, "
            "nor a video (mp4, mov, webm, animated GIF)."
        )
    return info
