"""Job specs: one pydantic model per method, shared by API, worker and CLI.

Every default and every limit of a job lives here and nowhere else. ``shared.jobs.methods``
registers each model under its ``method`` and builds the discriminated union ``JobSpec``
from them: the API validates a request body into it; the worker reads the stored JSON back
into the same model; the CLI builds its options from the same fields. Each model says which
references it names (``image_refs``, ``dataset_refs``, ``model_refs``).

Image references (``content``, ``StyleRef.image``, masks, datasets) are opaque strings:
through the API they are input ids returned by ``POST /v1/inputs`` (``sha256`` hex of the
bytes); in the local CLI they are file paths. The engine never interprets them: it asks
its ``EngineContext`` for the bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.imaging import IMAGE_SUFFIXES

# --- limits (the API enforces them; the CLI too) ---------------------------------------
MAX_SIDE = 2048  # style images, and what one worker renders in one piece at most
#: Longest side of a render's output: above ``Settings.tile_size`` a job is split into tiles
#: (child jobs, ``shared.engine.tiles``), so no worker holds the whole image at once.
MAX_OUTPUT_SIDE = 8192
MIN_SIDE = 32
MAX_STEPS = 5000
MAX_STYLES = 8
MAX_TRAIN_STEPS = 1_000_000
MAX_FAST_STYLES = 64  # styles of one fast (CIN) network: indices 0..63
MAX_LOSS_WEIGHT = 1e9  # content/style/TV weights: finite, and far from float32 overflow
MAX_SEED = 2**63 - 1  # torch.manual_seed takes up to 2**64-1; 63 bits fit a signed 64-bit everywhere
MAX_NAME = 100  # style names and model names

VGG_LAYERS = (
    "relu1_1", "relu1_2",
    "relu2_1", "relu2_2",
    "relu3_1", "relu3_2", "relu3_3", "relu3_4",
    "relu4_1", "relu4_2", "relu4_3", "relu4_4",
    "relu5_1", "relu5_2", "relu5_3", "relu5_4",
)
VggLayer = Literal[
    "relu1_1", "relu1_2",
    "relu2_1", "relu2_2",
    "relu3_1", "relu3_2", "relu3_3", "relu3_4",
    "relu4_1", "relu4_2", "relu4_3", "relu4_4",
    "relu5_1", "relu5_2", "relu5_3", "relu5_4",
]

BUILTIN_FAST_MODEL = "multistyle26"
DEFAULT_ADAIN_MODEL = "adain-default"

ImageRef = Annotated[str, Field(min_length=1, max_length=1024, description="input id (API) or file path (CLI)")]


def _unique_layers(layers: tuple[str, ...]) -> tuple[str, ...]:
    """A VGG layer list names each layer once."""
    twice = sorted({layer for layer in layers if layers.count(layer) > 1})
    if twice:
        raise ValueError(f"each layer may be named once; {', '.join(twice)} appears more than once")
    return layers


class _Spec(BaseModel):
    # allow_inf_nan=False: NaN and +-Infinity (JSON tokens, or 1e400) are refused in every float field.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _unique(refs: Iterable[str | None]) -> list[str]:
    """The references in order, each once, without the empty ones."""
    return list(dict.fromkeys(r for r in refs if r))


class ModelRef(NamedTuple):
    """A model a spec names: id or name, the kind it must be, the style indices it must have."""

    ref: str
    kind: str
    styles: list[int]


class JobSpecModel(_Spec):
    """Base of every job spec (one subclass per method, registered in ``shared.jobs.methods``).

    A spec says which references it names, so the API can check them before queueing and the
    CLI can check the files: override the three methods below when a spec names any.
    """

    if TYPE_CHECKING:  # each subclass declares its own ``method: Literal[...]`` field (the union's tag)
        method: str

    def image_refs(self) -> list[str]:
        """Every image input the spec names (content, styles, masks), in order, each once."""
        return []

    def dataset_refs(self) -> list[str]:
        """The datasets the spec names: an archive's input id or ``prefix:NAME``."""
        return []

    def model_refs(self) -> list[ModelRef]:
        """Every registered model the spec names."""
        return []

    def video_refs(self) -> list[str]:
        """Every video input the spec names."""
        return []


class StyleRef(_Spec):
    """One style image and how much it counts."""

    image: ImageRef
    weight: float = Field(1.0, gt=0, le=100, description="blend weight among several styles")
    mask: ImageRef | None = Field(
        None, description="optional mask on the style image: take the style only from its white region"
    )

    def refs(self) -> list[str | None]:
        return [self.image, self.mask]


class Region(_Spec):
    """One style confined to a region of the content image (white = this style)."""

    style: StyleRef
    mask: ImageRef

    def refs(self) -> list[str | None]:
        return [*self.style.refs(), self.mask]


class _OutputSize(JobSpecModel):
    size: int = Field(
        512, ge=MIN_SIDE, le=MAX_OUTPUT_SIDE,
        description="longest side of the output in pixels; above the farm's tile size (1024) the job is rendered "
        "as overlapping tiles by many workers (child jobs) and blended back",
    )


class GatysParams(_OutputSize):
    """Parameters of the optimization methods (optimize and masked)."""

    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    steps: int = Field(300, ge=1, le=MAX_STEPS, description="optimizer iterations per resolution level")
    learning_rate: float = Field(2.0, gt=0, le=100, description="Adam step size (pixel units, 0-255 scale)")
    content_weight: float = Field(1.0, ge=0, le=MAX_LOSS_WEIGHT)
    style_weight: float = Field(50.0, ge=0, le=MAX_LOSS_WEIGHT)
    tv_weight: float = Field(1.0, ge=0, le=MAX_LOSS_WEIGHT)
    content_layers: tuple[VggLayer, ...] = Field(
        ("relu4_2",), min_length=1, max_length=len(VGG_LAYERS), json_schema_extra={"uniqueItems": True}
    )
    style_layers: tuple[VggLayer, ...] = Field(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        min_length=1,
        max_length=len(VGG_LAYERS),
        json_schema_extra={"uniqueItems": True},
    )
    init: Literal["content", "noise", "style", "adain"] = Field(
        "content",
        description="starting pixels: the content, seeded noise, the style(s), or the built-in AdaIN decoder's "
        "rendering of the same content and styles (regions included), a start that already has the style's "
        "colours (docs/performance.md, quality per second: what each start reaches and costs)",
    )
    style_scale: float = Field(1.0, ge=0.1, le=4.0, description="style image size relative to the output")
    preserve_color: Literal["none", "luminance", "histogram"] = "none"
    levels: int = Field(1, ge=1, le=4, description="coarse-to-fine resolution levels (1 = single scale)")
    coarse_steps: int | None = Field(
        None, ge=1, le=MAX_STEPS,
        description="iterations at each coarser level when levels > 1 (default: steps); an iteration at half the "
        "side costs about a quarter of one at full size",
    )
    seed: int | None = Field(0, ge=0, le=MAX_SEED, description="random seed; same seed and device give the same pixels")

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _layers_once(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _unique_layers(v)

    def level_steps(self, level: int, n_levels: int) -> int:
        """Iterations at level ``level`` (0 = coarsest) of ``n_levels``: the last is ``steps``."""
        return self.steps if level == n_levels - 1 or self.coarse_steps is None else self.coarse_steps


class OptimizeSpec(GatysParams):
    """Gatys et al. 2016: optimize the pixels against VGG19 content, Gram-style and TV losses."""

    method: Literal["optimize"] = "optimize"
    content: ImageRef
    styles: list[StyleRef] = Field(min_length=1, max_length=MAX_STYLES)

    def image_refs(self) -> list[str]:
        return _unique([self.content, *(r for s in self.styles for r in s.refs())])


class MaskedSpec(GatysParams):
    """Several styles on one image, each confined to its region by a mask."""

    method: Literal["masked"] = "masked"
    content: ImageRef
    regions: list[Region] = Field(min_length=1, max_length=MAX_STYLES)
    mode: Literal["joint", "composite"] = Field(
        "joint",
        description="joint: one optimization with masked Gram matrices; composite: render each style, blend by mask",
    )
    feather: float = Field(0.0, ge=0, le=0.25, description="composite edge feathering, fraction of the short side")
    min_coverage: float = Field(0.001, ge=0, le=1, description="each mask must cover at least this fraction")

    def image_refs(self) -> list[str]:
        return _unique([self.content, *(r for region in self.regions for r in region.refs())])


class FastSpec(_OutputSize):
    """Dumoulin et al. 2017: one conditional-instance-norm network, many styles, mixable."""

    method: Literal["fast"] = "fast"
    content: ImageRef
    model: str = Field(
        BUILTIN_FAST_MODEL, min_length=1, max_length=1024, description="model id or name (GET /v1/models)"
    )
    style: int | None = Field(None, ge=0, le=MAX_FAST_STYLES - 1, description="one style index of the model")
    mix: dict[
        Annotated[int, Field(ge=0, le=MAX_FAST_STYLES - 1)], Annotated[float, Field(ge=0, le=MAX_LOSS_WEIGHT)]
    ] | None = Field(
        None,
        max_length=MAX_FAST_STYLES,
        description="style index -> weight; weights are normalized",
        # JSON object keys are strings: the style indices 0..MAX_FAST_STYLES-1 (0..63)
        json_schema_extra={"propertyNames": {"pattern": "^([0-9]|[1-5][0-9]|6[0-3])$"}, "minProperties": 1},
    )
    strength: float = Field(1.0, ge=0, le=1, description="blend of stylized output with the content")
    preserve_color: bool = False
    stroke_size: int | None = Field(
        512, ge=MIN_SIDE, le=MAX_SIDE,
        description="brush-stroke scale: the network runs with the image's longest side at this many px and the "
        "result is upsampled edge-aware to `size`, so any output size has the look of this one (None = run at `size`)",
    )

    @field_validator("mix")
    @classmethod
    def _mix_positive(cls, v: dict[int, float] | None) -> dict[int, float] | None:
        if v is not None:
            if not v:
                raise ValueError("mix must name at least one style")
            if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
                raise ValueError("mix weights must be non-negative and not all zero")
            if any(k < 0 for k in v):
                raise ValueError("mix style indices must be >= 0")
        return v

    @model_validator(mode="after")
    def _style_or_mix(self) -> FastSpec:
        if self.style is not None and self.mix is not None:
            raise ValueError("give either style or mix, not both")
        return self

    def style_weights(self) -> dict[int, float]:
        """Normalized style index -> weight (style 0 when neither is given)."""
        raw = self.mix if self.mix is not None else {self.style if self.style is not None else 0: 1.0}
        total = sum(raw.values())
        return {k: w / total for k, w in raw.items() if w > 0}

    def image_refs(self) -> list[str]:
        return [self.content]

    def model_refs(self) -> list[ModelRef]:
        return [ModelRef(self.model, "fast", sorted(self.style_weights()))]


class AdainSpec(_OutputSize):
    """Huang & Belongie 2017: arbitrary style in one pass with adaptive instance norm."""

    method: Literal["adain"] = "adain"
    content: ImageRef
    styles: list[StyleRef] = Field(min_length=1, max_length=MAX_STYLES)
    masks: list[ImageRef] | None = Field(
        None, max_length=MAX_STYLES, description="spatial control: one content mask per style (white = that style)"
    )
    alpha: float = Field(1.0, ge=0, le=1, description="content-style trade-off (0 = content, 1 = full style)")
    style_size: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE)
    preserve_color: bool = False
    stroke_size: int | None = Field(
        512, ge=MIN_SIDE, le=MAX_SIDE,
        description="brush-stroke scale: content is encoded and decoded with its longest side at this many px "
        "(style at style_size) and upsampled edge-aware to `size` (None = work at `size`)",
    )
    model: str = Field(
        DEFAULT_ADAIN_MODEL,
        min_length=1,
        max_length=1024,
        description="decoder model id or name, or checkpoint path in the CLI",
    )

    @model_validator(mode="after")
    def _masks_match(self) -> AdainSpec:
        if self.masks is not None and len(self.masks) != len(self.styles):
            raise ValueError(f"masks: got {len(self.masks)} masks for {len(self.styles)} styles; give one per style")
        return self

    def image_refs(self) -> list[str]:
        return _unique([self.content, *(r for s in self.styles for r in s.refs()), *(self.masks or [])])

    def model_refs(self) -> list[ModelRef]:
        return [ModelRef(self.model, "adain-decoder", [])]


# --- video ------------------------------------------------------------------------------

MAX_VIDEO_OUTPUTS = 8  # videos one job renders (styles, or one mix)
MAX_VIDEO_SIDE = 1920
FastStyleIndex = Annotated[int, Field(ge=0, le=MAX_FAST_STYLES - 1)]


#: Default ``VideoSpec.coherence`` per render, measured with ``bench/flicker.py`` (flicker at most 80 % of
#: per-frame, style loss at most 110 %): fast 0.66x / 0.88x at 0.6; adain (with its contrast restored) 0.77x /
#: 1.07x at 0.7, 0.80x at 0.6.
DEFAULT_COHERENCE: dict[str, float] = {"fast": 0.6, "adain": 0.7}


class VideoSpec(JobSpecModel):
    """A video input rendered in N styles: one video per style (or one for a mix), each with the
    input's frame rate, frame count, duration and audio, plus a poster frame PNG.

    ``render`` names the feed-forward method: ``fast`` (``model`` a CIN model; ``styles`` its style
    indices, one video each, or ``mix`` one video of a weighted mix; neither: style 0) or ``adain`` (``style_images``,
    one video each, or all blended by their weights into one with ``mix_images``). Frames are made
    temporally coherent (``shared.engine.video.coherent``; ``coherence`` 0 = per-frame).
    """

    method: Literal["video"] = "video"
    content: ImageRef = Field(description="the video input (POST /v1/inputs: mp4, mov, webm, animated GIF)")
    render: Literal["fast", "adain"] = "fast"
    size: int = Field(512, ge=MIN_SIDE, le=MAX_VIDEO_SIDE, description="longest side of the output video in pixels")
    model: str | None = Field(
        None, min_length=1, max_length=1024,
        description=f"model id or name; default {BUILTIN_FAST_MODEL} (fast) or {DEFAULT_ADAIN_MODEL} (adain)",
    )
    styles: list[FastStyleIndex] | None = Field(
        None, min_length=1, max_length=MAX_VIDEO_OUTPUTS, description="fast: style indices, one video each"
    )
    mix: dict[FastStyleIndex, Annotated[float, Field(ge=0, le=MAX_LOSS_WEIGHT)]] | None = Field(
        None, max_length=MAX_FAST_STYLES, description="fast: style index -> weight, one video of the mix",
        json_schema_extra={"propertyNames": {"pattern": "^([0-9]|[1-5][0-9]|6[0-3])$"}, "minProperties": 1},
    )
    style_images: list[StyleRef] | None = Field(
        None, min_length=1, max_length=MAX_VIDEO_OUTPUTS, description="adain: style images, one video each"
    )
    mix_images: bool = Field(False, description="adain: one video with all style images blended by weight")
    strength: float = Field(1.0, ge=0, le=1, description="fast: blend of stylized output with the content")
    alpha: float = Field(1.0, ge=0, le=1, description="adain: content-style trade-off")
    style_size: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, description="adain: longest side of the style images")
    preserve_color: bool = Field(False, description="fast: keep the content's colours")
    coherence: float | None = Field(
        None, ge=0, le=0.95,
        description="weight of the previous stylized frame, warped by optical flow (0 = per-frame stylization); "
        f"empty = the render's default ({', '.join(f'{r} {c}' for r, c in DEFAULT_COHERENCE.items())})",
    )
    chunk_frames: int | None = Field(
        None, ge=4, le=100_000,
        description="frames per piece when the job is split across workers; empty = sized to about half a "
        "minute of GPU work; a clip of one piece is rendered unsplit",
    )

    @property
    def coherence_value(self) -> float:
        """``coherence``, or the render's default (``DEFAULT_COHERENCE``) when it is empty."""
        return DEFAULT_COHERENCE[self.render] if self.coherence is None else self.coherence

    @model_validator(mode="after")
    def _outputs_match_render(self) -> VideoSpec:
        if self.render == "fast":
            if self.style_images is not None or self.mix_images:
                raise ValueError("style_images and mix_images are for render='adain'; fast takes styles or mix")
            if self.styles is not None and self.mix is not None:
                raise ValueError("render='fast' takes either styles (one video each) or mix (one video), not both")
            if self.mix is not None and sum(self.mix.values()) <= 0:
                raise ValueError("mix weights must not all be zero")
            if self.styles is not None and len(set(self.styles)) != len(self.styles):
                raise ValueError("styles: each style index may be named once")
        else:
            if self.styles is not None or self.mix is not None:
                raise ValueError("styles and mix are for render='fast'; adain takes style_images")
            if self.style_images is None:
                raise ValueError("render='adain' needs style_images")
        return self

    @property
    def model_ref(self) -> str:
        return self.model or (BUILTIN_FAST_MODEL if self.render == "fast" else DEFAULT_ADAIN_MODEL)

    def outputs(self) -> list[tuple[str, dict[int, float] | list[StyleRef]]]:
        """One (name, what to render) per output video: fast style weights or adain style refs."""
        if self.render == "fast":
            if self.mix is not None:
                total = sum(self.mix.values())
                return [("mix", {k: w / total for k, w in self.mix.items() if w > 0})]
            return [(f"style-{i:02d}", {i: 1.0}) for i in self.styles or [0]]
        images = list(self.style_images or [])
        if self.mix_images:
            return [("mix", images)]
        return [(f"image-{i + 1}", [ref]) for i, ref in enumerate(images)]

    def image_refs(self) -> list[str]:
        return _unique([r for s in self.style_images or [] for r in s.refs()])

    def video_refs(self) -> list[str]:
        return [self.content]

    def model_refs(self) -> list[ModelRef]:
        if self.render == "fast":
            indices = sorted({i for _, weights in self.outputs() if isinstance(weights, dict) for i in weights})
            return [ModelRef(self.model_ref, "fast", indices)]
        return [ModelRef(self.model_ref, "adain-decoder", [])]


# --- training --------------------------------------------------------------------------


class TrainFastSpec(JobSpecModel):
    """Train a conditional-instance-norm network on N style images (Dumoulin et al. 2017)."""

    method: Literal["train-fast"] = "train-fast"
    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9._-]+$")
    styles: list[ImageRef] = Field(min_length=1, max_length=MAX_FAST_STYLES)
    style_names: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME)]] | None = Field(
        None, max_length=MAX_FAST_STYLES
    )
    dataset: ImageRef = Field(
        description="content dataset, a flat folder of images: an uploaded archive's input id, or 'prefix:NAME'"
    )
    steps: int = Field(40_000, ge=1, le=MAX_TRAIN_STEPS)
    batch_size: int = Field(4, ge=1, le=64)
    image_size: int = Field(256, ge=MIN_SIDE, le=1024)
    style_size: int = Field(256, ge=MIN_SIDE, le=1024)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    content_weight: float = Field(1.0, ge=0, le=MAX_LOSS_WEIGHT)
    style_weight: float = Field(1e5, ge=0, le=MAX_LOSS_WEIGHT)
    tv_weight: float = Field(1e-6, ge=0, le=MAX_LOSS_WEIGHT)
    content_layers: tuple[VggLayer, ...] = Field(
        ("relu3_3",), min_length=1, max_length=len(VGG_LAYERS), json_schema_extra={"uniqueItems": True}
    )
    style_layers: tuple[VggLayer, ...] = Field(
        ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        min_length=1,
        max_length=len(VGG_LAYERS),
        json_schema_extra={"uniqueItems": True},
    )
    checkpoint_every: int = Field(500, ge=1, le=MAX_TRAIN_STEPS, description="steps between checkpoints")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _layers_once(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _unique_layers(v)

    @model_validator(mode="after")
    def _names_match(self) -> TrainFastSpec:
        if self.style_names is not None and len(self.style_names) != len(self.styles):
            raise ValueError("style_names must have one name per style")
        return self

    def image_refs(self) -> list[str]:
        return _unique(self.styles)

    def dataset_refs(self) -> list[str]:
        return [self.dataset]


class TrainAdainSpec(JobSpecModel):
    """Train an AdaIN decoder (Huang & Belongie 2017)."""

    method: Literal["train-adain"] = "train-adain"
    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=r"^[A-Za-z0-9._-]+$")
    content_dataset: ImageRef = Field(description="flat folder of images: an archive's input id, or 'prefix:NAME'")
    style_dataset: ImageRef = Field(description="flat folder of images: an archive's input id, or 'prefix:NAME'")
    steps: int = Field(160_000, ge=1, le=MAX_TRAIN_STEPS)
    batch_size: int = Field(8, ge=1, le=64)
    image_size: int = Field(256, ge=MIN_SIDE, le=1024, description="random crop size")
    learning_rate: float = Field(1e-4, gt=0, le=1)
    lr_decay: float = Field(5e-5, ge=0, le=1, description="inverse-time decay: lr / (1 + lr_decay * step)")
    style_weight: float = Field(10.0, ge=0, le=MAX_LOSS_WEIGHT, description="lambda in the paper")
    checkpoint_every: int = Field(500, ge=1, le=MAX_TRAIN_STEPS)
    init_from: str | None = Field(
        None, min_length=1, max_length=1024, description="model id/name of a decoder to fine-tune"
    )
    upsample: Literal["nearest", "bilinear"] = Field(
        "bilinear",
        description="decoder upsampling of a new or fine-tuned decoder (a resumed run keeps its checkpoint's): "
        "bilinear has no 2/4/8 px grid pattern; nearest is the paper's",
    )
    identity_weight: float = Field(
        100.0, ge=0, le=MAX_LOSS_WEIGHT,
        description="weight of the pixel identity loss g(f(c)) = c (Park & Lee 2019), against colour casts; "
        "0 = the paper's losses only",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)

    def dataset_refs(self) -> list[str]:
        return [self.content_dataset, self.style_dataset]

    def model_refs(self) -> list[ModelRef]:
        return [ModelRef(self.init_from, "adain-decoder", [])] if self.init_from else []


#: A dataset named by storage prefix instead of an uploaded archive: ``prefix:NAME`` is every
#: image object directly under ``tenants/<tenant>/datasets/NAME/`` (put there with any S3
#: tool: ``aws s3 sync photos/ s3://BUCKET/tenants/TENANT/datasets/NAME/``).
DATASET_PREFIX = "prefix:"
_DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")


def dataset_prefix_name(ref: str) -> str | None:
    """``NAME`` of a ``prefix:NAME`` dataset reference, None for an archive input id;
    ``InvalidSpec`` for a malformed name (segments of ``[A-Za-z0-9._-]``, none starting with a dot)."""
    if not ref.startswith(DATASET_PREFIX):
        return None
    name = ref[len(DATASET_PREFIX) :].strip("/")
    if len(name) > 200 or not _DATASET_NAME_RE.match(name):
        from shared.errors import InvalidSpec

        raise InvalidSpec(
            f"dataset {ref!r}: a storage prefix dataset is 'prefix:NAME', NAME made of '/'-separated "
            "segments of letters, digits, '.', '_' and '-' (no segment starting with '.')"
        )
    return name


def prefix_dataset_images(keys: list[str], prefix: str) -> list[str]:
    """The keys of a ``prefix:NAME`` dataset's images: objects directly under ``prefix`` (not in
    sub-folders), with an image suffix, not hidden; sorted."""
    out = []
    for key in keys:
        rest = key[len(prefix) :] if key.startswith(prefix) else "/"
        if "/" not in rest and not rest.startswith(".") and f".{rest.rpartition('.')[2].lower()}" in IMAGE_SUFFIXES:
            out.append(key)
    return sorted(out)
