"""Job specs: one pydantic discriminated union on ``method``, shared by API, worker and CLI.

Every default and every limit of a job lives here and nowhere else. The API validates a
request body into ``JobSpec``; the worker reads the stored JSON back into the same model;
the CLI builds its options from the same fields.

Image references (``content``, ``StyleRef.image``, masks, datasets) are opaque strings:
through the API they are input ids returned by ``POST /v1/inputs`` (``sha256`` hex of the
bytes); in the local CLI they are file paths. The engine never interprets them: it asks
its ``EngineContext`` for the bytes.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

# --- limits (the API enforces them; the CLI too) ---------------------------------------
MAX_SIDE = 2048
MIN_SIDE = 32
MAX_STEPS = 5000
MAX_STYLES = 8
MAX_TRAIN_STEPS = 1_000_000

VGG_LAYERS = (
    "relu1_1", "relu1_2",
    "relu2_1", "relu2_2",
    "relu3_1", "relu3_2", "relu3_3", "relu3_4",
    "relu4_1", "relu4_2", "relu4_3", "relu4_4",
    "relu5_1", "relu5_2", "relu5_3", "relu5_4",
)  # fmt: skip
VggLayer = Literal[
    "relu1_1", "relu1_2",
    "relu2_1", "relu2_2",
    "relu3_1", "relu3_2", "relu3_3", "relu3_4",
    "relu4_1", "relu4_2", "relu4_3", "relu4_4",
    "relu5_1", "relu5_2", "relu5_3", "relu5_4",
]  # fmt: skip

BUILTIN_FAST_MODEL = "multistyle26"
DEFAULT_ADAIN_MODEL = "adain-default"

ImageRef = Annotated[str, Field(min_length=1, max_length=1024, description="input id (API) or file path (CLI)")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StyleRef(_Spec):
    """One style image and how much it counts."""

    image: ImageRef
    weight: float = Field(1.0, gt=0, le=100, description="blend weight among several styles")
    mask: ImageRef | None = Field(
        None, description="optional mask on the style image: take the style only from its white region"
    )


class Region(_Spec):
    """One style confined to a region of the content image (white = this style)."""

    style: StyleRef
    mask: ImageRef


class _OutputSize(_Spec):
    size: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, description="longest side of the output in pixels")


class GatysParams(_OutputSize):
    """Parameters of the optimization methods (optimize and masked)."""

    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    steps: int = Field(300, ge=1, le=MAX_STEPS, description="optimizer iterations per resolution level")
    learning_rate: float = Field(2.0, gt=0, le=100, description="Adam step size (pixel units, 0-255 scale)")
    content_weight: float = Field(1.0, ge=0)
    style_weight: float = Field(50.0, ge=0)
    tv_weight: float = Field(1.0, ge=0)
    content_layers: tuple[VggLayer, ...] = Field(("relu4_2",), min_length=1)
    style_layers: tuple[VggLayer, ...] = Field(("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), min_length=1)
    init: Literal["content", "noise", "style"] = "content"
    style_scale: float = Field(1.0, ge=0.1, le=4.0, description="style image size relative to the output")
    preserve_color: Literal["none", "luminance", "histogram"] = "none"
    levels: int = Field(1, ge=1, le=4, description="coarse-to-fine resolution levels (1 = single scale)")
    seed: int | None = Field(0, description="random seed; same seed and device give the same pixels")


class OptimizeSpec(GatysParams):
    """Gatys et al. 2016: optimize the pixels against VGG19 content, Gram-style and TV losses."""

    method: Literal["optimize"] = "optimize"
    content: ImageRef
    styles: list[StyleRef] = Field(min_length=1, max_length=MAX_STYLES)


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


class FastSpec(_OutputSize):
    """Dumoulin et al. 2017: one conditional-instance-norm network, many styles, mixable."""

    method: Literal["fast"] = "fast"
    content: ImageRef
    model: str = Field(BUILTIN_FAST_MODEL, description="model id or name (GET /v1/models)")
    style: int | None = Field(None, ge=0, description="one style index of the model")
    mix: dict[int, float] | None = Field(None, description="style index -> weight; weights are normalized")
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
    def _style_or_mix(self) -> "FastSpec":
        if self.style is not None and self.mix is not None:
            raise ValueError("give either style or mix, not both")
        return self

    def style_weights(self) -> dict[int, float]:
        """Normalized style index -> weight (style 0 when neither is given)."""
        raw = self.mix if self.mix is not None else {self.style if self.style is not None else 0: 1.0}
        total = sum(raw.values())
        return {k: w / total for k, w in raw.items() if w > 0}


class AdainSpec(_OutputSize):
    """Huang & Belongie 2017: arbitrary style in one pass with adaptive instance norm."""

    method: Literal["adain"] = "adain"
    content: ImageRef
    styles: list[StyleRef] = Field(min_length=1, max_length=MAX_STYLES)
    masks: list[ImageRef] | None = Field(
        None, description="spatial control: one content mask per style (white = that style)"
    )
    alpha: float = Field(1.0, ge=0, le=1, description="content-style trade-off (0 = content, 1 = full style)")
    style_size: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE)
    preserve_color: bool = False
    stroke_size: int | None = Field(
        512, ge=MIN_SIDE, le=MAX_SIDE,
        description="brush-stroke scale: content is encoded and decoded with its longest side at this many px "
        "(style at style_size) and upsampled edge-aware to `size` (None = work at `size`)",
    )
    model: str = Field(DEFAULT_ADAIN_MODEL, description="decoder model id or name, or checkpoint path in the CLI")

    @model_validator(mode="after")
    def _masks_match(self) -> "AdainSpec":
        if self.masks is not None and len(self.masks) != len(self.styles):
            raise ValueError(f"masks: got {len(self.masks)} masks for {len(self.styles)} styles; give one per style")
        return self


# --- training --------------------------------------------------------------------------


class TrainFastSpec(_Spec):
    """Train a conditional-instance-norm network on N style images (Dumoulin et al. 2017)."""

    method: Literal["train-fast"] = "train-fast"
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    styles: list[ImageRef] = Field(min_length=1, max_length=64)
    style_names: list[str] | None = None
    dataset: ImageRef = Field(
        description="content dataset, a flat folder of images: an uploaded archive's input id, or 'prefix:NAME'"
    )
    steps: int = Field(40_000, ge=1, le=MAX_TRAIN_STEPS)
    batch_size: int = Field(4, ge=1, le=64)
    image_size: int = Field(256, ge=MIN_SIDE, le=1024)
    style_size: int = Field(256, ge=MIN_SIDE, le=1024)
    learning_rate: float = Field(1e-3, gt=0, le=1)
    content_weight: float = Field(1.0, ge=0)
    style_weight: float = Field(1e5, ge=0)
    tv_weight: float = Field(1e-6, ge=0)
    content_layers: tuple[VggLayer, ...] = ("relu3_3",)
    style_layers: tuple[VggLayer, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    seed: int = 0

    @model_validator(mode="after")
    def _names_match(self) -> "TrainFastSpec":
        if self.style_names is not None and len(self.style_names) != len(self.styles):
            raise ValueError("style_names must have one name per style")
        return self


class TrainAdainSpec(_Spec):
    """Train an AdaIN decoder (Huang & Belongie 2017)."""

    method: Literal["train-adain"] = "train-adain"
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    content_dataset: ImageRef = Field(description="flat folder of images: an archive's input id, or 'prefix:NAME'")
    style_dataset: ImageRef = Field(description="flat folder of images: an archive's input id, or 'prefix:NAME'")
    steps: int = Field(160_000, ge=1, le=MAX_TRAIN_STEPS)
    batch_size: int = Field(8, ge=1, le=64)
    image_size: int = Field(256, ge=MIN_SIDE, le=1024, description="random crop size")
    learning_rate: float = Field(1e-4, gt=0, le=1)
    lr_decay: float = Field(5e-5, ge=0)
    style_weight: float = Field(10.0, ge=0, description="lambda in the paper")
    checkpoint_every: int = Field(500, ge=1)
    init_from: str | None = Field(None, description="model id/name of a decoder to fine-tune")
    seed: int = 0


RenderSpec = Annotated[Union[OptimizeSpec, MaskedSpec, FastSpec, AdainSpec], Field(discriminator="method")]
TrainSpec = Annotated[Union[TrainFastSpec, TrainAdainSpec], Field(discriminator="method")]
JobSpec = Annotated[
    Union[OptimizeSpec, MaskedSpec, FastSpec, AdainSpec, TrainFastSpec, TrainAdainSpec],
    Field(discriminator="method"),
]

SPEC_BY_METHOD: dict[str, type[_Spec]] = {
    "optimize": OptimizeSpec,
    "masked": MaskedSpec,
    "fast": FastSpec,
    "adain": AdainSpec,
    "train-fast": TrainFastSpec,
    "train-adain": TrainAdainSpec,
}
METHODS = tuple(SPEC_BY_METHOD)
TRAINING_METHODS = ("train-fast", "train-adain")
# Which queue each method goes to by default: everything that runs a network prefers a GPU.
QUEUE_BY_METHOD: dict[str, str] = {m: "gpu" for m in METHODS}

job_spec_adapter: TypeAdapter = TypeAdapter(JobSpec)


def parse_spec(data: dict) -> OptimizeSpec | MaskedSpec | FastSpec | AdainSpec | TrainFastSpec | TrainAdainSpec:
    """Validate a dict into its spec model; raises ``shared.errors.InvalidSpec`` with a clear detail."""
    from pydantic import ValidationError

    from shared.errors import InvalidSpec

    try:
        return job_spec_adapter.validate_python(data)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)
        ]
        detail = "; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in errors)
        raise InvalidSpec(detail, errors=errors) from None


def image_refs(spec: _Spec) -> list[str]:
    """Every input reference a spec names (content, styles, masks, datasets), in order, unique."""
    refs: list[str] = []

    def add(ref: str | None) -> None:
        if ref and ref not in refs:
            refs.append(ref)

    if isinstance(spec, (OptimizeSpec, MaskedSpec, FastSpec, AdainSpec)):
        add(spec.content)
    if isinstance(spec, (OptimizeSpec, AdainSpec)):
        for s in spec.styles:
            add(s.image)
            add(s.mask)
    if isinstance(spec, AdainSpec) and spec.masks:
        for m in spec.masks:
            add(m)
    if isinstance(spec, MaskedSpec):
        for r in spec.regions:
            add(r.style.image)
            add(r.style.mask)
            add(r.mask)
    if isinstance(spec, TrainFastSpec):
        for s in spec.styles:
            add(s)
    return refs


def model_refs(spec: _Spec) -> list[tuple[str, str, list[int]]]:
    """``(model id or name, kind it must be, style indices it must have)`` for every model a
    spec names: the network of a ``fast`` / ``adain`` job, the decoder a training fine-tunes."""
    if isinstance(spec, FastSpec):
        return [(spec.model, "fast", sorted(spec.style_weights()))]
    if isinstance(spec, AdainSpec):
        return [(spec.model, "adain-decoder", [])]
    if isinstance(spec, TrainAdainSpec) and spec.init_from:
        return [(spec.init_from, "adain-decoder", [])]
    return []


#: A dataset named by storage prefix instead of an uploaded archive: ``prefix:NAME`` is every
#: image object directly under ``tenants/<tenant>/datasets/NAME/`` (put there with any S3
#: tool: ``aws s3 sync photos/ s3://BUCKET/tenants/TENANT/datasets/NAME/``).
DATASET_PREFIX = "prefix:"
#: The files of a dataset (archive member or storage object) that count as images.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
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


def dataset_refs(spec: _Spec) -> list[str]:
    """The dataset references of a training spec (archives or storage prefixes)."""
    if isinstance(spec, TrainFastSpec):
        return [spec.dataset]
    if isinstance(spec, TrainAdainSpec):
        return [spec.content_dataset, spec.style_dataset]
    return []
