"""A clip as chunks of frames, each rendered on its own, and the renderer they share.

* ``plan_chunks``: frames [0, n) cut into chunks of about ``chunk_frames`` kept frames; each
  chunk also renders the ``overlap`` frames before its first kept one (warm-up) so the coherent
  chain (``shared.engine.video.coherent``) is in step at the chunk's first kept frame; the
  warm-up outputs are dropped, so the chunks' kept frames tile the clip exactly once.
* ``chunk_frames_for``: chunk length so that one chunk is seconds to a minute of GPU work.
* ``CoherentRenderer``: the online renderer: feed it input frames in order (any batch sizes),
  get each output's coherent frames back; it keeps the previous input frame and the previous
  output of each output between calls. A chunk is one renderer fed warm-up + kept frames; an
  unsplit job is one renderer fed the whole clip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.engine.video.coherent import FrameStylizer, blend_sequence, frame_pairs, stylize_batched, to_uint8
from shared.engine.video.flow import FramePair, frame_pair

#: Frames rendered before each chunk's first kept frame (dropped again).
DEFAULT_OVERLAP = 8
#: Frame renders (frames x outputs) at 512 x 512 that one chunk holds: about half a minute on a
#: mid-range GPU for ``fast`` (which renders ~100 frames/s there), a few seconds on a fast one.
CHUNK_RENDER_BUDGET = 1200
MIN_CHUNK_FRAMES = 8


@dataclass(frozen=True)
class Chunk:
    """Frames [start, stop) are this chunk's; it renders from ``warm_start`` (<= start)."""

    index: int
    start: int
    stop: int
    warm_start: int

    @property
    def kept(self) -> int:
        return self.stop - self.start

    @property
    def warm_up(self) -> int:
        return self.start - self.warm_start


def plan_chunks(n_frames: int, chunk_frames: int, overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:
    """Chunks whose kept frames tile [0, n_frames) in order, of near-equal lengths <= ``chunk_frames``."""
    if n_frames <= 0:
        raise ValueError("a clip has at least one frame")
    count = max(1, math.ceil(n_frames / max(1, chunk_frames)))
    bounds = [round(i * n_frames / count) for i in range(count + 1)]
    return [
        Chunk(i, bounds[i], bounds[i + 1], max(0, bounds[i] - overlap))
        for i in range(count)
        if bounds[i + 1] > bounds[i]
    ]


def chunk_frames_for(n_outputs: int, width: int, height: int, budget: int = CHUNK_RENDER_BUDGET) -> int:
    """Kept frames per chunk: ``budget`` frame renders at 512 x 512, scaled by the frame area."""
    scale = (width * height) / (512 * 512)
    return max(MIN_CHUNK_FRAMES, int(budget / max(1, n_outputs) / max(scale, 1e-3)))


class CoherentRenderer:
    """Online coherent rendering of several outputs (styles) of the same clip."""

    def __init__(self, stylizers: Sequence[FrameStylizer], coherence: float, batch: int = 4,
                 check: Callable[[], None] = lambda: None, restore_contrast: bool = False) -> None:
        self.stylizers = list(stylizers)
        self.coherence = coherence
        self.restore_contrast = restore_contrast
        self.batch = batch
        self.check = check
        self._last_input: np.ndarray | None = None
        self._last_output: list[np.ndarray | None] = [None] * len(self.stylizers)
        self.rendered = 0

    def feed(self, frames: Sequence[np.ndarray], on_frames: Callable[[int], None] = lambda n: None,
             ) -> list[list[np.ndarray]]:
        """Outputs (per stylizer, (H, W, 3) uint8 per frame) of the next input frames (H, W, 3) uint8."""
        if not frames:
            return [[] for _ in self.stylizers]
        pairs: list[FramePair | None] = []
        if self.coherence > 0:
            first: FramePair | None = None
            if self._last_input is not None:
                first = frame_pair(self._last_input, frames[0])
            pairs = [first, *frame_pairs(frames, self.check)[1:]]
        else:
            pairs = [None] * len(frames)
        out = []
        for k, stylize in enumerate(self.stylizers):
            per_frame = stylize_batched(frames, stylize, self.batch, self.check, on_frames)
            coherent = blend_sequence(per_frame, pairs, self.coherence, self._last_output[k], self.restore_contrast)
            self._last_output[k] = coherent[-1]
            out.append([to_uint8(y) for y in coherent])
        self._last_input = frames[-1]
        self.rendered += len(frames)
        return out


def render_chunk(
    frames: Sequence[np.ndarray], chunk: Chunk, stylizers: Sequence[FrameStylizer], coherence: float,
    batch: int = 4, check: Callable[[], None] = lambda: None, on_frames: Callable[[int], None] = lambda n: None,
    restore_contrast: bool = False,
) -> list[list[np.ndarray]]:
    """The kept frames of ``chunk`` for each stylizer; ``frames`` are input frames
    [chunk.warm_start, chunk.stop) in order."""
    if len(frames) != chunk.stop - chunk.warm_start:
        raise ValueError(f"chunk {chunk.index}: got {len(frames)} frames for [{chunk.warm_start}, {chunk.stop})")
    renderer = CoherentRenderer(stylizers, coherence, batch, check, restore_contrast)
    outputs = renderer.feed(frames, on_frames)
    return [frames_of[chunk.warm_up :] for frames_of in outputs]
