"""A video in N styles: temporally coherent feed-forward stylization of every frame.

The method of ``shared.engine.video.coherent`` (optical-flow-guided blending of the previous
stylized frame, after Ruder, Dosovitskiy & Brox 2016, "Artistic style transfer for videos", and
Chen et al. 2017, "Coherent Online Video Style Transfer") on the networks of ``fast``
(Dumoulin et al. 2017) and ``adain`` (Huang & Belongie 2017). Decoding and encoding with PyAV
(``shared.engine.video.media``): each output is H.264 mp4 at the input's frame rate, with its
frame count, duration and audio track (AAC), plus a poster frame PNG (the middle frame).

Entry points:

* ``run(spec, ctx) -> VideoResult``: the whole clip in one job (the renderer runs over the clip
  in windows, so memory holds one window of frames, not the clip).
* For a fleet (parent and child jobs, ``shared.engine.fanout``; the registry's ``FanOut``):
  ``split(spec, ctx)`` plans the chunks (``plan_video``; one chunk: None, the job runs unsplit),
  ``run_piece(spec, piece, ctx)`` renders one (``render_chunk``: every output's kept frames as a
  near-lossless intermediate mp4, no audio), and ``assemble(spec, pieces, ctx)`` concatenates
  the chunks' kept frames in order and encodes each output once with the input's audio
  (``assemble_chunks``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from itertools import islice
from typing import Any

import numpy as np
from PIL import Image

from shared.engine.context import EngineContext
from shared.engine.device import pick_device
from shared.engine.fanout import Piece, PieceOutput, PieceResult, SplitPlan
from shared.engine.results import VideoOutput, VideoResult
from shared.engine.video import media
from shared.engine.video.chunks import (
    DEFAULT_OVERLAP,
    Chunk,
    CoherentRenderer,
    chunk_frames_for,
    plan_chunks,
)
from shared.engine.video.chunks import render_chunk as render_chunk_frames
from shared.engine.video.coherent import FrameStylizer
from shared.errors import EngineError, InvalidVideo
from shared.jobs.specs import StyleRef, VideoSpec

BATCH = 4
#: Renders whose coherent frames get the coarse band's local contrast back (``coherent.blend_sequence``):
#: adain's blended strokes lose contrast (style loss +12 % at coherence 0.6 without it, +7 % at 0.7 with it;
#: ``bench/flicker.py``); fast's do not (restoring it raised fast's style loss by 13-46 %).
RESTORE_CONTRAST = frozenset({"adain"})


def build_stylizers(spec: VideoSpec, ctx: EngineContext) -> list[FrameStylizer]:
    """One frame stylizer per output of ``spec`` (``VideoSpec.outputs``)."""
    from shared.engine.video import stylizers

    out: list[FrameStylizer] = []
    for _name, what in spec.outputs():
        if spec.render == "fast":
            assert isinstance(what, dict)
            out.append(stylizers.fast_stylizer(spec.model_ref, what, ctx, spec.strength, spec.preserve_color))
        else:
            refs = [r for r in what if isinstance(r, StyleRef)]
            out.append(stylizers.adain_stylizer(spec.model_ref, refs, ctx, spec.alpha, spec.style_size))
    return out


def _batched(frames: Iterable[np.ndarray], n: int) -> Iterator[list[np.ndarray]]:
    it = iter(frames)
    while batch := list(islice(it, n)):
        yield batch


class _Outputs:
    """The videos being written, one per output, and their posters (the middle frame)."""

    def __init__(self, spec: VideoSpec, fps: Any, audio_from: bytes | None, n_frames: int, crf: int) -> None:
        self.names = [name for name, _ in spec.outputs()]
        self.writers = [media.Mp4Writer(fps, audio_from, crf) for _ in self.names]
        self.poster_at = n_frames // 2
        self.posters: list[Image.Image | None] = [None] * len(self.names)

    def add(self, per_output: Sequence[Sequence[np.ndarray]]) -> None:
        for k, frames in enumerate(per_output):
            for frame in frames:
                if self.writers[k].frames == self.poster_at or self.posters[k] is None:
                    self.posters[k] = Image.fromarray(frame)
                self.writers[k].add(frame)

    def finish(self, fps: Any, has_audio: bool) -> list[VideoOutput]:
        videos = []
        for name, writer, poster in zip(self.names, self.writers, self.posters, strict=True):
            data = writer.finish()
            assert poster is not None
            videos.append(VideoOutput(
                name=name, video=data, poster=poster, frames=writer.frames, fps=str(fps),
                duration_s=round(writer.frames / float(fps), 6), width=poster.width, height=poster.height,
                audio=has_audio,
            ))
        return videos


def _progress(ctx: EngineContext, total: int) -> Callable[[int], None]:
    done = [0]

    def on_frames(n: int) -> None:
        done[0] += n
        ctx.report(min(done[0], total), total + 1, stage="stylize")

    return on_frames


def run(spec: VideoSpec, ctx: EngineContext) -> VideoResult:
    """Render ``spec.content`` in every output of ``spec``, unsplit."""
    started = time.perf_counter()
    data = ctx.read_input(spec.content)
    info = media.stream_info(data)
    size = media.output_size(info.width, info.height, spec.size)
    stylizers = build_stylizers(spec, ctx)
    ctx.check_cancel()
    outputs = _Outputs(spec, info.fps, data if info.has_audio else None, info.frames, media.FINAL_CRF)
    total = info.frames * len(stylizers)
    renderer = CoherentRenderer(stylizers, spec.coherence_value, BATCH, ctx.check_cancel,
                                spec.render in RESTORE_CONTRAST)
    on_frames = _progress(ctx, total)
    window = chunk_frames_for(len(stylizers), *size)
    for frames in _batched(media.iter_frames(data, size), window):
        outputs.add(renderer.feed(frames, on_frames))
    if renderer.rendered == 0:
        raise InvalidVideo("The video holds no decodable frame.")
    videos = outputs.finish(info.fps, info.has_audio)
    ctx.report(total + 1, total + 1, stage="encode")
    return VideoResult(videos, metrics=_metrics(spec, ctx, info, size, renderer.rendered, started))


def _metrics(spec: VideoSpec, ctx: EngineContext, info: media.VideoStreamInfo, size: tuple[int, int],
             frames: int, started: float, **extra: Any) -> dict[str, Any]:
    seconds = time.perf_counter() - started
    return {
        "render": spec.render, "model": spec.model_ref, "outputs": [n for n, _ in spec.outputs()],
        "coherence": spec.coherence_value, "frames": frames, "fps": str(info.fps), "width": size[0], "height": size[1],
        "audio": info.has_audio, "device": str(pick_device(ctx.device)), "seconds": round(seconds, 3),
        "frames_per_second": round(frames * len(spec.outputs()) / max(seconds, 1e-9), 3), **extra,
    }


# --- a fleet: split, render a chunk, assemble ---------------------------------------------


def plan_video(spec: VideoSpec, data: bytes, overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:
    """The chunks of ``spec``'s video: ``spec.chunk_frames`` kept frames each, or seconds to a
    minute of GPU work (``chunk_frames_for``)."""
    info = media.stream_info(data)
    size = media.output_size(info.width, info.height, spec.size)
    n = spec.chunk_frames or chunk_frames_for(len(spec.outputs()), *size)
    return plan_chunks(info.frames, n, overlap)


def split(spec: VideoSpec, ctx: EngineContext) -> SplitPlan | None:
    """The fan-out splitter: one piece per chunk; None (run unsplit) for a clip of one chunk."""
    chunks = plan_video(spec, ctx.read_input(spec.content))
    if len(chunks) <= 1:
        return None
    return SplitPlan([
        Piece(f"chunk {c.index + 1} of {len(chunks)} (frames {c.start}-{c.stop - 1}, warm-up from {c.warm_start})",
              asdict(c))
        for c in chunks
    ])


def run_piece(spec: VideoSpec, piece: Piece, ctx: EngineContext) -> PieceResult:
    """The fan-out piece: one chunk, ``<output>.mp4`` per output (kept frames only)."""
    started = time.perf_counter()
    chunk = Chunk(**piece.data)
    videos = render_chunk(spec, chunk, ctx)
    files = {f"{name}.mp4": video for (name, _), video in zip(spec.outputs(), videos, strict=True)}
    return PieceResult(files, metrics={"chunk": chunk.index, "frames": chunk.kept, "warm_up": chunk.warm_up,
                                       "seconds": round(time.perf_counter() - started, 3)})


def assemble(spec: VideoSpec, pieces: Sequence[PieceOutput], ctx: EngineContext) -> VideoResult:
    """The fan-out assembler: every chunk's kept frames in order, one final video per output."""
    chunks = [Chunk(**p.data) for p in pieces]
    files = [[p.read(f"{name}.mp4") for name, _ in spec.outputs()] for p in pieces]
    result = assemble_chunks(spec, chunks, files, ctx.read_input(spec.content))
    piece_seconds = [float(p.metrics.get("seconds") or 0.0) for p in pieces]
    result.metrics.update(piece_seconds=piece_seconds, device=str(pick_device(ctx.device)))
    return result


def render_chunk(spec: VideoSpec, chunk: Chunk, ctx: EngineContext) -> list[bytes]:
    """Chunk ``chunk`` of ``spec``'s video: per output, its kept frames as a near-lossless mp4
    (no audio; the assembler adds it once)."""
    data = ctx.read_input(spec.content)
    info = media.stream_info(data)
    size = media.output_size(info.width, info.height, spec.size)
    frames = media.decode_frames(data, size, chunk.warm_start, chunk.stop)
    if len(frames) != chunk.stop - chunk.warm_start:
        raise InvalidVideo(f"chunk {chunk.index}: frames [{chunk.warm_start}, {chunk.stop}) are not all decodable")
    stylizers = build_stylizers(spec, ctx)
    total = len(frames) * len(stylizers)
    per_output = render_chunk_frames(frames, chunk, stylizers, spec.coherence_value, BATCH, ctx.check_cancel,
                                     _progress(ctx, total), spec.render in RESTORE_CONTRAST)
    pieces = [media.encode_mp4(kept, info.fps, None, media.INTERMEDIATE_CRF) for kept in per_output]
    ctx.report(total + 1, total + 1, stage="encode")
    return pieces


def assemble_chunks(spec: VideoSpec, chunks: Sequence[Chunk], pieces: Sequence[Sequence[bytes]], data: bytes,
                    ) -> VideoResult:
    """The final videos from every chunk's pieces (``pieces[c][k]``: chunk c, output k), in chunk
    order, with the audio of the input ``data``; ``EngineError`` if the frames do not add up."""
    started = time.perf_counter()
    info = media.stream_info(data)
    order = sorted(range(len(chunks)), key=lambda c: chunks[c].start)
    expected = 0
    for c in order:
        if chunks[c].start != expected:
            raise EngineError(f"video chunks do not tile the clip: chunk {chunks[c].index} starts at "
                              f"{chunks[c].start}, expected {expected}")
        expected = chunks[c].stop
    outputs = _Outputs(spec, info.fps, data if info.has_audio else None, expected, media.FINAL_CRF)
    for c in order:
        frames_per_output = [media.decode_frames(piece) for piece in pieces[c]]
        for k, frames in enumerate(frames_per_output):
            if len(frames) != chunks[c].kept:
                raise EngineError(f"video chunk {chunks[c].index}, output {outputs.names[k]}: "
                                  f"{len(frames)} frames, expected {chunks[c].kept}")
        outputs.add(frames_per_output)
    videos = outputs.finish(info.fps, info.has_audio)
    size = (videos[0].width, videos[0].height)
    return VideoResult(videos, metrics=_metrics(spec, EngineContext(device="cpu"), info, size, expected, started,
                                                chunks=len(chunks)))
