"""The video engine: PyAV decode/encode keeps frame count, rate, duration and audio; DIS flow and
occlusion masks; coherent blending lowers flicker; chunks tile the clip and agree with an unsplit
render across their boundaries; the fan-out functions of the ``video`` method run end to end.

Clips are generated here (``shared.engine.video.clips``), tiny, on the CPU."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from shared.engine.context import EngineContext
from shared.engine.fanout import run_locally
from shared.engine.methods import video
from shared.engine.video import clips, coherent, flow, media, metrics
from shared.engine.video.chunks import CoherentRenderer, plan_chunks, render_chunk
from shared.jobs.methods import parse_spec


@pytest.fixture(scope="module")
def shapes() -> list[np.ndarray]:
    return clips.shapes_frames(64, 48, 12)


# --- decode / encode ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif"])
def test_given_clip_when_decoded_expect_every_frame_at_the_asked_size(shapes, fmt: str) -> None:
    data = clips.write_clip(shapes, 12, fmt)
    frames = media.decode_frames(data, (32, 24))
    assert len(frames) == 12 and frames[0].shape == (24, 32, 3) and frames[0].dtype == np.uint8
    assert media.decode_frames(data, None, 3, 7)[0].shape == (48, 64, 3)
    assert len(media.decode_frames(data, None, 3, 7)) == 4


def test_given_ntsc_rate_and_opus_audio_when_reencoded_expect_count_rate_duration_and_aac_audio(shapes) -> None:
    fps = Fraction(30000, 1001)
    source = clips.write_clip(shapes, fps, "webm", tone_hz=330.0)
    out = media.encode_mp4(media.decode_frames(source), fps, audio_from=source)
    check = media.inspect_encoded(out)
    assert (check.frames, check.fps, check.width, check.height) == (12, fps, 64, 48)
    assert check.duration_s == pytest.approx(12 * 1001 / 30000)
    assert check.audio_s is not None and abs(check.audio_s - check.duration_s) < 0.05  # AAC frames: 21 ms


def test_given_silent_clip_when_encoded_expect_no_audio_track(shapes) -> None:
    source = clips.write_clip(shapes, 12, "mp4", tone_hz=None)
    assert media.inspect_encoded(media.encode_mp4(shapes, Fraction(12), audio_from=source)).audio_s is None


def test_given_odd_size_expect_even_output_size_never_upscaled() -> None:
    assert media.output_size(641, 361, 512) == (512, 288)
    assert media.output_size(64, 48, 512) == (64, 48)
    assert all(v % 2 == 0 for v in media.output_size(333, 111, 200))


# --- flow and occlusion ---------------------------------------------------------------------


def test_given_a_panned_texture_expect_flow_of_the_shift_and_warp_recovering_the_frame() -> None:
    big = clips._texture(120, 80, seed=3)
    prev, cur = big[10:58, 10:74], big[10:58, 13:77]  # the camera moved 3 px right: content moves left
    pair = flow.frame_pair(prev, cur)
    inner = pair.backward[8:-8, 8:-8]
    assert np.median(inner[..., 0]) == pytest.approx(3.0, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.3)
    warped = pair.warp_previous(prev).astype(float)
    assert np.abs(warped - cur)[8:-8, 8:-8].mean() < 6.0  # 0-255
    assert pair.mask[:, -2:].mean() < 0.5  # the right border came from outside frame t-1: occluded


def test_given_a_square_moving_over_texture_expect_the_disoccluded_strip_masked() -> None:
    bg, patch = clips._texture(80, 60, seed=1), 255 - clips._texture(20, 20, seed=2)
    prev, cur = bg.copy(), bg.copy()
    prev[20:40, 20:40] = patch
    cur[20:40, 28:48] = patch  # a textured square moved 8 px right: columns 20-27 are uncovered in frame t
    mask = flow.frame_pair(prev, cur).mask
    assert mask[22:38, 21:27].mean() < 0.5
    assert mask[5:15, 5:70].mean() > 0.8  # static background far from the square: trusted


# --- coherence and the flicker metric -------------------------------------------------------


def _noisy_stylizer(strength: float = 0.15):
    """Content + fresh blotchy noise per frame (blobs of ~8 px: the coarse shimmer a network adds)."""
    import cv2

    rng = np.random.default_rng(0)

    def stylize(frames: np.ndarray) -> np.ndarray:  # (B, H, W, 3) uint8 -> (B, H, W, 3) float
        noise = np.stack([cv2.GaussianBlur(rng.normal(0, 1, frames.shape[1:3]), (0, 0), 4) for _ in frames])
        noise = strength * noise[..., None] / noise.std()  # (B, H, W, 1)
        return np.clip(frames / 255.0 + noise, 0, 1).astype(np.float32)

    return stylize


def test_given_a_flickering_stylizer_expect_coherent_frames_to_flicker_less(shapes) -> None:
    pairs = coherent.frame_pairs(shapes)
    per_frame = coherent.stylize_batched(shapes, _noisy_stylizer())
    steady = coherent.blend_sequence(per_frame, pairs, 0.75)
    assert metrics.flicker(steady, pairs) < 0.8 * metrics.flicker(per_frame, pairs)
    same = coherent.blend_sequence(per_frame, pairs, 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(same, per_frame, strict=True))  # coherence 0 = per-frame


def test_given_restore_contrast_expect_the_coarse_band_contrast_of_the_blend_back_and_still_less_flicker(
        shapes) -> None:
    def local_std(frames: list[np.ndarray]) -> float:  # the coarse band's std around its local mean
        lows = [coherent._low(f.astype(np.float32)) for f in frames[1:]]
        return float(np.mean([(lo - coherent._window(lo)).std() for lo in lows]))

    pairs = coherent.frame_pairs(shapes)
    per_frame = coherent.stylize_batched(shapes, _noisy_stylizer())
    plain = coherent.blend_sequence(per_frame, pairs, 0.75)
    restored = coherent.blend_sequence(per_frame, pairs, 0.75, restore_contrast=True)
    assert local_std(plain) < 0.95 * local_std(per_frame)  # the blend washes the coarse band out (0.92x here)
    assert local_std(restored) > local_std(plain) and local_std(restored) >= 0.96 * local_std(per_frame)
    assert metrics.flicker(restored, pairs) < 0.9 * metrics.flicker(per_frame, pairs)


def test_given_stylized_frames_expect_flicker_zero_for_the_input_warped_along_its_own_flow() -> None:
    big = clips._texture(120, 80, seed=5)
    frames = [big[10:58, 10 + 2 * t : 74 + 2 * t] for t in range(4)]
    pairs = coherent.frame_pairs(frames)
    assert metrics.flicker(frames, pairs) < 4.0  # what the flow explains is not flicker (0-255 units)
    shuffled = [frames[0], frames[3], frames[1], frames[2]]
    assert metrics.flicker(shuffled, pairs) > 3 * metrics.flicker(frames, pairs)


# --- chunks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "size", "overlap"), [(12, 4, 2), (10, 3, 5), (5, 8, 2), (1, 4, 3)])
def test_given_a_clip_expect_chunks_tiling_it_once_with_warm_up(n: int, size: int, overlap: int) -> None:
    chunks = plan_chunks(n, size, overlap)
    assert [c.start for c in chunks] == [0] + [c.stop for c in chunks[:-1]] and chunks[-1].stop == n
    assert all(0 < c.kept <= size and c.warm_start == max(0, c.start - overlap) for c in chunks)


def test_given_chunked_render_expect_same_frames_as_unsplit_once_warmed_up(shapes) -> None:
    stylize = _deterministic_stylizer()
    whole = CoherentRenderer([stylize], 0.5).feed(shapes)[0]
    chunks = plan_chunks(len(shapes), 6, overlap=4)
    parts = [render_chunk(shapes[c.warm_start : c.stop], c, [stylize], 0.5)[0] for c in chunks]
    joined = [f for part in parts for f in part]
    assert len(joined) == len(whole)
    diff = [float(np.abs(a.astype(float) - b).mean()) for a, b in zip(joined, whole, strict=True)]
    assert max(diff[:6]) == 0.0  # the first chunk starts where the clip does
    assert diff[6] < 2.0  # 0-255: the second chunk's warm-up put its chain in step with the unsplit one


def _deterministic_stylizer():
    def stylize(frames: np.ndarray) -> np.ndarray:
        x = frames.astype(np.float32) / 255.0
        return np.clip(1.0 - x + 0.1 * np.sin(x * 20), 0, 1).astype(np.float32)

    return stylize


# --- the video method: unsplit and fanned out -------------------------------------------------


def test_given_clip_when_rendered_unsplit_and_fanned_out_expect_same_count_rate_audio_and_close_frames(
    shapes, tmp_path: Path
) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(clips.write_clip(shapes, 12, "mp4"))
    spec = parse_spec({"method": "video", "content": str(path), "styles": [2, 7], "size": 64, "chunk_frames": 5})
    ctx = EngineContext(device="cpu", precision="fp32")
    whole = video.run(spec, ctx)
    fanned = run_locally(spec, ctx, video.split, video.run_piece, video.assemble)
    assert [v.name for v in whole.videos] == [v.name for v in fanned.videos] == ["style-02", "style-07"]
    assert fanned.metrics["chunks"] == 3
    for a, b in zip(whole.videos, fanned.videos, strict=True):
        ca, cb = media.inspect_encoded(a.video), media.inspect_encoded(b.video)
        assert (ca.frames, ca.fps, ca.width, ca.height) == (cb.frames, cb.fps, cb.width, cb.height) == (
            12, Fraction(12), 64, 48)
        assert ca.audio_s is not None and cb.audio_s is not None and abs(cb.audio_s - 1.0) < 0.06
        fa, fb = media.decode_frames(a.video), media.decode_frames(b.video)
        assert np.mean([np.abs(x.astype(float) - y).mean() for x, y in zip(fa, fb, strict=True)]) < 8.0
        assert b.poster.size == (64, 48)
    styles = [media.decode_frames(v.video)[6].astype(float) for v in whole.videos]
    assert np.abs(styles[0] - styles[1]).mean() > 10.0  # two styles, two different videos
    assert video.split(spec.model_copy(update={"chunk_frames": 100}), ctx) is None  # one chunk: unsplit


def test_given_cli_render_video_with_two_styles_expect_two_mp4s_and_posters(tmp_path: Path) -> None:
    from shared.cli import main as cli

    clip = tmp_path / "clip.webm"
    clip.write_bytes(clips.write_clip(clips.shapes_frames(48, 32, 6), 6, "webm"))
    argv = ["render", "video", str(clip), "--style", "1", "--style", "4", "--size", "48", "--device", "cpu",
            "--quiet", "-o", str(tmp_path / "out.mp4")]
    assert cli.main(argv) == 0
    for name in ("style-01", "style-04"):
        check = media.inspect_encoded((tmp_path / f"out-{name}.mp4").read_bytes())
        assert (check.frames, check.fps, check.width, check.height) == (6, Fraction(6), 48, 32)
        assert check.audio_s is not None  # the webm's Opus track, now AAC
        assert (tmp_path / f"out-{name}.png").is_file()
    assert cli.main([*argv[:-1], str(tmp_path / "out.png")]) != 0  # a video job writes mp4


def test_given_no_coherence_expect_the_render_default_and_a_given_one_kept() -> None:
    from shared.jobs.specs import DEFAULT_COHERENCE

    fast = parse_spec({"method": "video", "content": "clip.mp4"})
    adain = parse_spec({"method": "video", "content": "clip.mp4", "render": "adain",
                        "style_images": [{"image": "s.png"}]})
    given = parse_spec({"method": "video", "content": "clip.mp4", "render": "adain", "coherence": 0.3,
                        "style_images": [{"image": "s.png"}]})
    assert fast.coherence is None and fast.coherence_value == DEFAULT_COHERENCE["fast"] == 0.6
    assert adain.coherence_value == DEFAULT_COHERENCE["adain"] == 0.7
    assert given.coherence_value == 0.3
