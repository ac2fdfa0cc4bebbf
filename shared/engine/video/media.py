"""Decode and encode video with PyAV (FFmpeg's libraries, bundled in the wheel: no binary to shell out to).

* ``decode_frames``: RGB frames (H, W, 3) uint8 of a video file (mp4/mov, webm/mkv, animated GIF),
  scaled to an output size on the way (FFmpeg's swscale), optionally only frames [start, stop).
* ``encode_mp4``: H.264 (libx264, yuv420p) in mp4 at the input's frame rate, one packet per frame,
  so the frame count, the frame rate and therefore the duration are the input's; with the input's
  first audio track re-encoded to AAC (any source codec works the same way) and cut to the video's
  duration.
* ``output_size``: the output frame size for a longest side (even sides: yuv420p needs them).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from shared.errors import InvalidVideo
from shared.jobs.shapes import fit_size
from shared.videos import probe_video

#: x264 quality of final videos (visually lossless at 18) and of chunk intermediates (near lossless).
FINAL_CRF = 18
INTERMEDIATE_CRF = 8


@dataclass(frozen=True)
class VideoStreamInfo:
    """The frame rate, frame count and size of a decoded video."""

    fps: Fraction
    frames: int
    width: int
    height: int
    has_audio: bool

    @property
    def duration_s(self) -> float:
        return float(self.frames / self.fps)


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) with the longest side ``max_side`` (never upscaled past the input), both even and >= 2."""
    w, h = fit_size(width, height, min(max_side, max(width, height)))
    return max(2, w - w % 2), max(2, h - h % 2)


def stream_info(data: bytes) -> VideoStreamInfo:
    """Frame rate, frame count (packets), size and audio presence of a video file (no decoding)."""
    info = probe_video(data)
    if info is None:
        raise InvalidVideo("The input is not a video file (mp4, mov, webm or animated GIF).")
    return VideoStreamInfo(info.fps, info.frames, info.width, info.height, info.has_audio)


def iter_frames(data: bytes, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Every frame of the video ``data`` in order as (H, W, 3) uint8 RGB at ``size`` = (w, h)."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            kwargs: dict[str, Any] = {"format": "rgb24"}
            if size is not None:
                kwargs.update(width=size[0], height=size[1], interpolation="AREA")
            for frame in container.decode(stream):
                yield frame.to_ndarray(**kwargs)  # (H, W, 3)
    except (av.FFmpegError, IndexError) as exc:
        raise InvalidVideo(f"The video could not be decoded ({exc}).") from None


def decode_frames(
    data: bytes, size: tuple[int, int] | None = None, start: int = 0, stop: int | None = None
) -> list[np.ndarray]:
    """Frames ``start`` .. ``stop - 1`` (decode order = display order for the accepted codecs'
    output) as (H, W, 3) uint8 RGB arrays at ``size`` = (w, h) (the input's size when None)."""
    frames: list[np.ndarray] = []
    for i, frame in enumerate(iter_frames(data, size)):
        if stop is not None and i >= stop:
            break
        if i >= start:
            frames.append(frame)
    return frames


def _audio_frames(data: bytes, max_seconds: float) -> Iterator[Any]:
    """The first audio track of ``data`` as AAC-ready frames (fltp, its rate and layout), cut
    at ``max_seconds``."""
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            return
        source = container.streams.audio[0]
        rate = source.codec_context.sample_rate or 44100
        layout = "stereo" if (source.codec_context.channels or 1) >= 2 else "mono"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        left = round(max_seconds * rate)
        for frame in container.decode(source):
            for out in resampler.resample(frame):
                if left <= 0:
                    return
                if out.samples > left:
                    arr: Any = out.to_ndarray()[:, :left]  # (channels, samples)
                    cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr), format="fltp", layout=layout)
                    cut.sample_rate = rate
                    out = cut
                left -= out.samples
                out.pts = None
                yield out


def audio_params(data: bytes) -> tuple[int, str] | None:
    """(sample rate, layout) of the first audio track of ``data``; None without one."""
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            return None
        cc = container.streams.audio[0].codec_context
        return cc.sample_rate or 44100, "stereo" if (cc.channels or 1) >= 2 else "mono"


class Mp4Writer:
    """H.264 mp4 written frame by frame (``add``), closed by ``finish`` -> bytes.

    One packet per frame at ``fps`` (time base 1/fps): the frame count and rate are exact. At
    ``finish`` the first audio track of the video file ``audio_from`` (if any) is re-encoded to
    AAC and cut to the frames' duration."""

    def __init__(self, fps: Fraction, audio_from: bytes | None = None, crf: int = FINAL_CRF) -> None:
        self.fps = Fraction(fps)
        self.audio_from = audio_from
        self.crf = crf
        self.frames = 0
        self._buf = io.BytesIO()
        self._out: Any = None
        self._vs: Any = None
        self._astream: Any = None

    def _open(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 in yuv420p needs even sides, got {width}x{height}")
        self._out = av.open(self._buf, mode="w", format="mp4")
        self._vs = self._out.add_stream("libx264", rate=self.fps)
        self._vs.width, self._vs.height, self._vs.pix_fmt = width, height, "yuv420p"
        self._vs.options = {"crf": str(self.crf), "preset": "veryfast"}
        params = audio_params(self.audio_from) if self.audio_from is not None else None
        if params is not None:
            self._astream = self._out.add_stream("aac", rate=params[0])
            self._astream.layout = params[1]

    def add(self, arr: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        if self._out is None:
            self._open(arr.shape[1], arr.shape[0])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        frame.pts = self.frames
        frame.time_base = Fraction(1, 1) / self.fps
        self._out.mux(self._vs.encode(frame))
        self.frames += 1

    def finish(self) -> bytes:
        if self._out is None:
            raise InvalidVideo("There are no frames to encode.")
        self._out.mux(self._vs.encode(None))
        if self._astream is not None and self.audio_from is not None:
            for aframe in _audio_frames(self.audio_from, self.frames / float(self.fps)):
                self._out.mux(self._astream.encode(aframe))
            self._out.mux(self._astream.encode(None))
        self._out.close()
        self._out = None
        return self._buf.getvalue()


def encode_mp4(
    frames: Iterable[np.ndarray],
    fps: Fraction,
    audio_from: bytes | None = None,
    crf: int = FINAL_CRF,
) -> bytes:
    """H.264 mp4 of ``frames`` ((H, W, 3) uint8, even sides) at ``fps`` (``Mp4Writer``)."""
    writer = Mp4Writer(fps, audio_from, crf)
    for arr in frames:
        writer.add(arr)
    return writer.finish()


@dataclass(frozen=True)
class EncodedVideoCheck:
    """What an encoded video holds, read back (tests and the assembler's own check)."""

    frames: int
    fps: Fraction
    duration_s: float
    width: int
    height: int
    audio_s: float | None  # seconds of decoded audio; None: no audio track


def inspect_encoded(data: bytes) -> EncodedVideoCheck:
    """Count the frames (decoded), read the rate and size, and measure the audio track's length."""
    with av.open(io.BytesIO(data), mode="r") as container:
        vs = container.streams.video[0]
        n = sum(1 for _ in container.decode(vs))
        fps = Fraction(vs.average_rate) if vs.average_rate else Fraction(0)
        width, height = vs.codec_context.width, vs.codec_context.height
    audio_s = None
    with av.open(io.BytesIO(data), mode="r") as container:
        if container.streams.audio:
            a = container.streams.audio[0]
            samples = sum(f.samples for f in container.decode(a))
            audio_s = samples / float(a.codec_context.sample_rate)
    return EncodedVideoCheck(n, fps, float(n / fps) if fps else 0.0, width, height, audio_s)
