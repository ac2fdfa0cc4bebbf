"""Fast (N-style CIN) stylization: ONNX import parity, style mixing, sizes, validation, blending."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.engine.context import EngineContext
from shared.engine.images import fit_size, to_tensor
from shared.engine.methods import fast
from shared.engine.nets.onnx_import import (
    BUILTIN_STYLE_NAMES,
    builtin_onnx_path,
    config_from_onnx,
    load_onnx_transformer,
)
from shared.engine.nets.transformer import CINTransformer, TransformerConfig
from shared.errors import InvalidSpec
from shared.jobs.specs import FastSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def builtin() -> CINTransformer:
    return load_onnx_transformer()


@pytest.fixture()
def content_path(tmp_path: Path, make_png) -> Path:
    path = tmp_path / "content.png"
    path.write_bytes(make_png(60, 44, seed=7))
    return path


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _render(content: Path, **kwargs) -> fast.RenderResult:
    precision = kwargs.pop("precision", "fp32")
    spec = FastSpec(content=str(content), size=kwargs.pop("size", 48), **kwargs)
    return fast.run(spec, EngineContext(precision=precision))


# --- ONNX import -------------------------------------------------------------------------


def test_config_from_onnx_reads_the_architecture() -> None:
    # given the wheel's ONNX graph
    import onnx

    model = onnx.load(str(builtin_onnx_path()))
    # when its architecture is derived
    cfg = config_from_onnx(model)
    # expect the 26-style 32-32-32 / 6-block / 8-4 network
    assert cfg == TransformerConfig(
        n_styles=26, down_channels=(32, 32, 32), n_res=6, up_channels=(8, 4), first_kernel=9, last_kernel=9,
        norm_eps=1e-5,
    )
    assert len(BUILTIN_STYLE_NAMES) == 26 and len(set(BUILTIN_STYLE_NAMES)) == 26


@pytest.mark.parametrize("weights", [{3: 1.0}, {0: 0.25, 7: 0.5, 19: 0.25}, "uniform"])
def test_onnx_parity(builtin: CINTransformer, weights) -> None:
    # given a random image with odd-looking (but multiple-of-4) sides and a style vector
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 44, 68), dtype=np.float32)
    vec = np.full(26, 1 / 26, np.float32) if weights == "uniform" else builtin.style_vector(weights).numpy()
    session = ort.InferenceSession(str(builtin_onnx_path()), providers=["CPUExecutionProvider"])
    # when both run it
    expected = session.run(None, {"image": image, "style_weights": vec})[0]
    with torch.inference_mode():
        ours = builtin(torch.from_numpy(image), torch.from_numpy(vec)).numpy()
    # expect the same output (in [0, 1] units)
    assert ours.shape == expected.shape == (1, 3, 44, 68)
    assert np.abs(ours - expected).max() < 1e-3


def test_checkpoint_export_round_trips(builtin: CINTransformer, tmp_path: Path) -> None:
    # given the built-in model exported as a stylefarm checkpoint
    from shared.engine.nets.onnx_import import export_builtin_checkpoint

    path = export_builtin_checkpoint(tmp_path / "multistyle26.pt")
    # when it is loaded through the generic checkpoint path
    model = fast.load_fast_model(str(path))
    x = torch.rand(1, 3, 32, 32)
    # expect the same network (bit-equal weights), names included
    pairs = zip(model.net.state_dict().values(), builtin.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with torch.inference_mode():
        assert torch.allclose(model.net(x, model.net.style_vector(4)), builtin(x, builtin.style_vector(4)), atol=1e-5)
    assert list(model.style_names) == BUILTIN_STYLE_NAMES


# --- fast.run -------------------------------------------------------------------------


def test_mix_of_one_style_is_that_style(content_path: Path) -> None:
    # given one style by index and the same style as a one-entry mix (any weight)
    by_index = _render(content_path, style=5)
    by_mix = _render(content_path, mix={5: 3.0})
    # expect identical pixels
    assert np.array_equal(_pixels(by_index.image), _pixels(by_mix.image))
    assert by_index.metrics["styles"] == {BUILTIN_STYLE_NAMES[5]: 1.0}


def test_mix_of_two_styles_differs_from_both(content_path: Path) -> None:
    # given two styles and their 50/50 mix
    a = _pixels(_render(content_path, style=3).image)
    b = _pixels(_render(content_path, style=19).image)
    mix = _pixels(_render(content_path, mix={3: 1.0, 19: 1.0}).image)
    # expect the mix to be its own image, not either style
    assert np.abs(mix - a).mean() > 0.02
    assert np.abs(mix - b).mean() > 0.02


def test_default_style_is_zero(content_path: Path) -> None:
    assert np.array_equal(_pixels(_render(content_path).image), _pixels(_render(content_path, style=0).image))


@pytest.mark.parametrize("wh,size", [((97, 41), 64), ((41, 97), 33), ((300, 17), 40), ((64, 64), 32)])
def test_output_has_the_requested_size(tmp_path: Path, make_png, wh: tuple[int, int], size: int) -> None:
    # given content with an odd aspect ratio (even one that ends up 2 px high)
    path = tmp_path / "odd.png"
    path.write_bytes(make_png(*wh, seed=1))
    # when rendered at a longest side
    result = _render(path, size=size, style=1)
    # expect exactly the size the longest side implies
    assert result.image.size == fit_size(*wh, size)
    assert result.image.mode == "RGB"
    assert (result.metrics["width"], result.metrics["height"]) == result.image.size


@pytest.mark.parametrize("kwargs", [{"style": 26}, {"mix": {0: 1.0, 30: 1.0}}])
def test_style_index_out_of_range_is_invalid_spec(content_path: Path, kwargs) -> None:
    # given an index the 26-style model does not have
    # expect InvalidSpec naming the range
    with pytest.raises(InvalidSpec, match=r"26 styles \(0 to 25\)"):
        _render(content_path, **kwargs)


def test_strength_zero_returns_the_content(content_path: Path) -> None:
    # given strength 0
    result = _render(content_path, style=7, strength=0.0)
    # expect the (resized) content back, up to 8-bit rounding
    content = Image.open(content_path).convert("RGB").resize(result.image.size, Image.Resampling.LANCZOS)
    assert np.abs(_pixels(result.image) - _pixels(content)).max() <= 1.5 / 255


def test_half_strength_is_between(content_path: Path) -> None:
    full = _pixels(_render(content_path, style=7).image)
    zero = _pixels(_render(content_path, style=7, strength=0.0).image)
    half = _pixels(_render(content_path, style=7, strength=0.5).image)
    assert np.abs(half - (full + zero) / 2).max() <= 1.5 / 255


def test_preserve_color_keeps_the_content_chroma(content_path: Path) -> None:
    # given a colourful style with colour preservation
    from shared.engine.color import rgb_to_yiq

    plain = _render(content_path, style=17)
    kept = _render(content_path, style=17, preserve_color=True)
    content = Image.open(content_path).convert("RGB").resize(kept.image.size, Image.Resampling.LANCZOS)
    def iq(img: Image.Image) -> torch.Tensor:
        return rgb_to_yiq(to_tensor(img))[:, 1:]  # (1, 2, H, W): chroma

    # expect the chroma of the content (up to clamping/rounding), the luma of the stylized image
    assert (iq(kept.image) - iq(content)).abs().mean() < 0.02
    assert (iq(plain.image) - iq(content)).abs().mean() > 0.04

    def luma(img: Image.Image) -> torch.Tensor:
        return rgb_to_yiq(to_tensor(img))[:, :1]  # (1, 1, H, W)

    assert (luma(kept.image) - luma(plain.image)).abs().mean() < 0.03


def test_progress_and_metrics(content_path: Path) -> None:
    seen = []
    spec = FastSpec(content=str(content_path), size=40, style=2)
    result = fast.run(spec, EngineContext(progress=seen.append))
    assert [p.step for p in seen] == [1, 2, 3] and seen[-1].fraction == 1.0
    assert result.metrics["dtype"] in ("float32", "bfloat16")
    assert result.metrics["seconds"] > 0 and result.metrics["model"] == "multistyle26"


def test_bf16_matches_fp32(builtin: CINTransformer) -> None:
    # given a real-ish photo through the optimized path in bf16 and in fp32
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio

    img = Image.fromarray(data.astronaut()).resize((96, 96), Image.Resampling.LANCZOS)
    x = to_tensor(img)
    model = fast.load_fast_model("multistyle26")
    vec = model.net.style_vector(19)
    y32 = fast.stylize_tensor(model.net, x, vec, torch.float32)
    ybf = fast.stylize_tensor(model.net, x, vec, torch.bfloat16)
    # expect >= 40 dB PSNR (the engine's precision contract)
    assert peak_signal_noise_ratio(y32.numpy(), ybf.numpy(), data_range=1.0) >= 40.0
    # and channels_last/inference_mode changes nothing in fp32
    with torch.inference_mode():
        assert torch.allclose(y32, builtin(x, vec), atol=1e-5)
