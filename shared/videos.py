"""Video files without the engine: recognise a video upload and read its header cheaply.

Torch-free and OpenCV-free (PyAV only, which bundles FFmpeg's demuxers and decoders), so the
API probes an upload with it: ``probe_video`` demuxes the packets (no decoding) to count the
frames and decodes only the first frame to prove the codec works. The engine's decoding and
encoding live in ``shared.engine.video.media``.

Accepted: mp4 / mov (H.264, HEVC, MPEG-4 ...), webm / mkv (VP8, VP9, AV1 where FFmpeg decodes it)
and animated GIF; the container's first video stream is the picture, its first audio stream (if
any) the sound.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from shared.errors import InvalidVideo, VideoTooLarge

#: Container (FFmpeg demuxer name) -> content type of the stored input.
CONTENT_TYPES: dict[str, str] = {
    "mov,mp4,m4a,3gp,3g2,mj2": "video/mp4",
    "matroska,webm": "video/webm",
    "gif": "image/gif",
}
#: File name endings of video files (the CLI's local runs tell videos from images by these).
VIDEO_SUFFIXES: tuple[str, ...] = (".gif", ".m4v", ".mkv", ".mov", ".mp4", ".webm")
_GIF_MAGIC = (b"GIF87a", b"GIF89a")


@dataclass(frozen=True)
class VideoInfo:
    """What the header and the packets of a video tell, before any frame is stylized."""

    container: str  # FFmpeg's demuxer name ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "gif")
    codec: str  # the video stream's codec ("h264", "vp9", "gif", ...)
    width: int
    height: int
    frames: int  # video packets = frames (one frame per packet in every accepted container)
    fps: Fraction  # average frame rate
    duration_s: float
    audio_codec: str | None = None
    audio_rate: int | None = None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES.get(self.container, "video/mp4")

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


@dataclass(frozen=True)
class VideoLimits:
    """What a video input may be (``Settings.video_max_*``)."""

    max_seconds: float
    max_frames: int
    max_side: int

    @classmethod
    def from_settings(cls, settings: Any) -> VideoLimits:
        return cls(settings.video_max_seconds, settings.video_max_frames, settings.video_max_side)


def looks_like_gif(data: bytes) -> bool:
    return data[:6] in _GIF_MAGIC


def looks_like_video(data: bytes) -> bool:
    """The first bytes of an ISO media file (mp4, mov: an ``ftyp`` box) or of an EBML file (webm, mkv)."""
    return data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3" or looks_like_gif(data)


def _open(data: bytes) -> Any:
    import av

    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, UnicodeDecodeError):
        return None


def probe_video(data: bytes, limits: VideoLimits | None = None) -> VideoInfo | None:
    """``VideoInfo`` of a video file; None when FFmpeg does not recognise a video container.

    ``InvalidVideo`` (422) for a container without a video stream, a codec that cannot be decoded
    or a damaged file; ``VideoTooLarge`` (413) the moment one of ``limits`` is crossed (the frame
    count is checked while the packets are counted, so a huge file is not demuxed to its end).
    """
    import av

    container = _open(data)
    if container is None:
        if looks_like_video(data):
            raise InvalidVideo("The video is damaged or truncated: its container could not be read.")
        return None
    with container:
        fmt = container.format.name
        if fmt not in CONTENT_TYPES:
            return None  # an image or anything else FFmpeg happens to open: not a video upload
        if not container.streams.video:
            raise InvalidVideo(f"The {fmt.split(',')[0]} file holds no video stream.")
        vs = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        width, height = vs.codec_context.width, vs.codec_context.height
        codec = vs.codec_context.name
        if limits is not None and max(width, height) > limits.max_side:
            raise VideoTooLarge(
                f"The video is {width}x{height}; the longest side may be at most {limits.max_side} pixels.",
                limit="video_max_side",
            )
        frames, first_pts, last_end = 0, None, None
        try:
            for packet in container.demux(vs):
                if packet.size == 0:
                    continue  # the demuxer's flush packet
                frames += 1
                if limits is not None and frames > limits.max_frames:
                    raise VideoTooLarge(
                        f"The video has more than {limits.max_frames} frames, the limit.", limit="video_max_frames"
                    )
                if packet.pts is not None:
                    first_pts = packet.pts if first_pts is None else min(first_pts, packet.pts)
                    end = packet.pts + (packet.duration or 0)
                    last_end = end if last_end is None else max(last_end, end)
        except av.FFmpegError as exc:
            raise InvalidVideo(f"The video is damaged or truncated ({exc}).") from None
        if frames == 0 or width <= 0 or height <= 0:
            raise InvalidVideo("The video holds no frames.")
        duration = _duration_s(container, vs, first_pts, last_end)
        declared = float(container.duration or 0) / 1_000_000  # the header's duration (0: none)
        if declared > 0 and duration < 0.8 * declared - 0.1:
            raise InvalidVideo(
                f"The video is truncated: its header says {declared:.2f} s, its frames cover {duration:.2f} s."
            )
        fps = _frame_rate(vs, frames, duration)
        if limits is not None and duration > limits.max_seconds:
            raise VideoTooLarge(
                f"The video lasts {duration:.1f} s; the limit is {limits.max_seconds:g} s.", limit="video_max_seconds"
            )
    _check_decodes(data, codec)
    return VideoInfo(
        container=fmt, codec=codec, width=width, height=height, frames=frames, fps=fps, duration_s=duration,
        audio_codec=audio.codec_context.name if audio is not None else None,
        audio_rate=audio.codec_context.sample_rate if audio is not None else None,
    )


def _duration_s(container: Any, vs: Any, first_pts: int | None, last_end: int | None) -> float:
    if first_pts is not None and last_end is not None and vs.time_base and last_end > first_pts:
        return float((last_end - first_pts) * vs.time_base)
    if vs.duration and vs.time_base:
        return float(vs.duration * vs.time_base)
    return float(container.duration or 0) / 1_000_000


def _frame_rate(vs: Any, frames: int, duration: float) -> Fraction:
    """The stream's average rate; else frames / duration (an animated GIF's delays vary)."""
    rate = vs.average_rate or vs.guessed_rate
    if rate and 0 < float(rate) <= 240 and vs.codec_context.name != "gif":
        return Fraction(rate).limit_denominator(1001)
    if duration > 0:
        return Fraction(frames / duration).limit_denominator(1001)
    return Fraction(10)


def _check_decodes(data: bytes, codec: str) -> None:
    """Decode the first frame: a codec FFmpeg cannot decode, or a damaged start, answers 422."""
    import av

    container = _open(data)
    if container is None:
        raise InvalidVideo("The video could not be opened a second time.")
    try:
        with container:
            for _frame in container.decode(video=0):
                return
    except av.FFmpegError as exc:
        raise InvalidVideo(f"The {codec} video could not be decoded ({exc}).") from None
    raise InvalidVideo(f"No frame of the {codec} video could be decoded.")
