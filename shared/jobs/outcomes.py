"""What a succeeded job produced: the typed contract between the worker and the API.

The worker builds one outcome per job and stores ``outcome.model_dump(mode="json")`` in
``jobs.result`` (``worker.result_store``); the API reads it back with ``parse_outcome``
and never reads the JSON by key. ``kind`` tells the two apart:

* ``RenderOutcome`` (``kind="render"``): the PNG at ``keys.image``, its size and metrics.
* ``TrainOutcome`` (``kind="train"``): the registered model, its checkpoint, the loss-curve
  plot (``keys.loss_curve``) and metrics.
* ``VideoOutcome`` (``kind="video"``): one mp4 and one poster PNG per output video (a style or
  a mix), each named, with its frame count, frame rate, duration, size and audio.
* ``PieceOutcome`` (``kind="piece"``): one piece of a fanned-out job (a child job), its files
  by name.

``GET /v1/jobs/{id}/result`` serves ``outcome.image_key``: the render, a training job's
loss curve, or a video job's first poster; ``GET /v1/jobs/{id}/files/{name}`` serves any file
an outcome lists in ``files()`` (a video job's mp4s and posters).

Rows written before this module had no ``kind`` (a training row's ``kind`` was its model
kind) and stored the render size as ``bytes``; ``parse_outcome`` reads them too. Pydantic
only, no SQL or torch: the API, the worker and clients import it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

OUTCOME_KINDS = ("render", "train", "video", "piece")
#: The file of a piece that ``GET /v1/jobs/{id}/result`` serves for a child job, if it has one.
PIECE_IMAGE = "image.png"
MAX_METRIC_LIST = 1000


def json_safe(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metrics`` as plain JSON: NaN/inf become ``None``, numbers of other types (numpy,
    torch scalars) ``float``, anything else (a list longer than ``MAX_METRIC_LIST`` too) its
    ``str``."""
    out: dict[str, Any] = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, str | int | bool) or v is None:
            out[str(k)] = v
        elif isinstance(v, float):
            out[str(k)] = v if math.isfinite(v) else None
        elif isinstance(v, list | tuple) and len(v) <= MAX_METRIC_LIST:
            out[str(k)] = [x if isinstance(x, str | int | float | bool) or x is None else str(x) for x in v]
        elif isinstance(v, Mapping):
            out[str(k)] = json_safe(v)
        else:
            with contextlib.suppress(Exception):
                out[str(k)] = float(v)
                continue
            out[str(k)] = str(v)
    return out


#: Numbers worth keeping on the job (losses, timings, ``resumed_from`` ...), JSON-safe.
Metrics = Annotated[dict[str, Any], BeforeValidator(json_safe)]


class _Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)  # unknown fields are ignored: a newer worker may add some

    metrics: Metrics = Field(default_factory=dict)
    seconds: float | None = Field(default=None, description="wall time of the attempt that succeeded")
    worker: str | None = Field(default=None, description="the worker that ran it")


class RenderKeys(BaseModel):
    model_config = ConfigDict(frozen=True)

    image: str = Field(description="storage key of the output PNG")


class RenderOutcome(_Outcome):
    """A stylized image stored as a PNG."""

    kind: Literal["render"] = "render"
    keys: RenderKeys
    width: int
    height: int
    size_bytes: int = Field(description="size of the PNG")
    content_type: str = "image/png"

    @property
    def image_key(self) -> str:
        """The image ``GET /v1/jobs/{id}/result`` serves."""
        return self.keys.image


class TrainKeys(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str = Field(description="storage key of the registered model file")
    checkpoint: str = Field(description="storage key of the last training checkpoint")
    loss_curve: str | None = Field(default=None, description="storage key of the loss-curve PNG, if one was plotted")


class TrainOutcome(_Outcome):
    """A trained network, registered in the model registry."""

    kind: Literal["train"] = "train"
    keys: TrainKeys
    model_id: str
    model_name: str
    model_kind: str = Field(description="'fast' | 'adain-decoder'")
    style_names: list[str] = Field(default_factory=list)

    @property
    def image_key(self) -> str | None:
        """The image ``GET /v1/jobs/{id}/result`` serves: the loss curve (``None``: none)."""
        return self.keys.loss_curve


class VideoFile(BaseModel):
    """One output video of a ``video`` job and its poster frame."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the output: 'style-NN' (a fast style), 'image-N' (an adain style image) or 'mix'")
    video: str = Field(description="storage key of the H.264 mp4")
    poster: str = Field(description="storage key of the poster frame PNG")
    frames: int
    fps: str = Field(description="frame rate as a fraction, e.g. '30000/1001'")
    duration_s: float
    width: int
    height: int
    audio: bool = Field(description="whether the video carries the input's audio track")
    size_bytes: int = Field(description="size of the mp4")

    @property
    def video_file(self) -> str:
        return f"{self.name}.mp4"

    @property
    def poster_file(self) -> str:
        return f"{self.name}.png"


class VideoOutcome(_Outcome):
    """A video rendered in N styles: one mp4 and poster per output."""

    kind: Literal["video"] = "video"
    videos: list[VideoFile] = Field(min_length=1)

    @property
    def image_key(self) -> str:
        """The image ``GET /v1/jobs/{id}/result`` serves: the first video's poster."""
        return self.videos[0].poster

    def files(self) -> dict[str, str]:
        """File name -> storage key of everything the job produced (``GET /v1/jobs/{id}/files/{name}``)."""
        out: dict[str, str] = {}
        for v in self.videos:
            out[v.video_file] = v.video
            out[v.poster_file] = v.poster
        return out


class PieceOutcome(_Outcome):
    """One piece of a fanned-out job (a child job: a tile, a video chunk): the files it
    stored, by name (``shared.engine.fanout.PieceResult``); its parent's assembler reads them."""

    kind: Literal["piece"] = "piece"
    keys: dict[str, str] = Field(description="file name -> storage key")

    @property
    def image_key(self) -> str | None:
        """The image ``GET /v1/jobs/{id}/result`` serves: the piece's ``PIECE_IMAGE``, if any."""
        return self.keys.get(PIECE_IMAGE)


AnyOutcome = RenderOutcome | TrainOutcome | VideoOutcome | PieceOutcome
JobOutcome = Annotated[AnyOutcome, Field(discriminator="kind")]
_outcome_adapter: TypeAdapter[AnyOutcome] = TypeAdapter(JobOutcome)


def _from_legacy_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row written before outcomes had ``kind``, in today's shape."""
    data = dict(row)
    keys = dict(data.get("keys") or {})
    if "model_id" in data:  # training: ``kind`` was the model kind, the loss curve also ``keys.image``
        data["model_kind"] = data.pop("kind", None)
        data["kind"] = "train"
        data["keys"] = {
            "model": keys.get("model"),
            "checkpoint": keys.get("checkpoint"),
            "loss_curve": keys.get("loss_curve") or keys.get("image"),
        }
    else:
        data["kind"] = "render"
        data["size_bytes"] = data.pop("bytes", None)
    return data


def parse_outcome(row: Mapping[str, Any]) -> AnyOutcome:
    """The outcome stored in ``jobs.result`` (today's rows and rows written before
    ``kind``); raises ``pydantic.ValidationError`` for a row of neither shape."""
    if row.get("kind") not in OUTCOME_KINDS:
        row = _from_legacy_row(row)
    return _outcome_adapter.validate_python(row)
