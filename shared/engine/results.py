"""What the engine's entry points return."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class RenderResult:
    """A stylized image (RGB, the requested size) and numbers worth keeping on the job."""

    image: Image.Image
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """A finished training run: a self-describing checkpoint and its loss history."""

    checkpoint: Path
    kind: str  # "fast" | "adain-decoder"
    style_names: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    loss_curve_png: bytes | None = None


@dataclass
class RenderFile:
    """A stylized image already written as a PNG file (too big to hold in memory: the
    assembly of a tiled render writes it band by band, ``shared.imaging.PngRowWriter``)."""

    path: Path
    width: int
    height: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class VideoOutput:
    """One rendered video (a style, or a mix): H.264 mp4 bytes and a poster frame."""

    name: str
    video: bytes
    poster: Image.Image
    frames: int
    fps: str  # the frame rate as a fraction, "30000/1001"
    duration_s: float
    width: int
    height: int
    audio: bool


@dataclass
class VideoResult:
    """Every video a ``video`` job rendered, in the order of its spec's outputs."""

    videos: list[VideoOutput]
    metrics: dict[str, Any] = field(default_factory=dict)
