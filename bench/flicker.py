"""Flicker of per-frame vs temporally coherent video stylization, and the style the frames keep.

    python bench/flicker.py [--size 256] [--frames 40] [--coherence 0.35] [--sweep 0.2,0.5]
                            [--strip strip.png] [--device auto] [--threads 2]

The clip: there is no real video offline, so it is made from real photos: a virtual camera pans
and zooms over a photo (``../shared/data/content/chicago.jpg`` when that team folder is there,
else scikit-image's astronaut) while a cut-out of a second photo (chelsea the cat) crosses it:
real image content with real motion, parallax-free but with occlusions
(``shared.engine.video.clips.camera_frames``).

For each render (``fast``: one style and a mix of two; ``adain``: a style image) the network's
per-frame stylizations are computed ONCE and both rows use them: ``per-frame`` is them as they
are, ``coherent`` is them after ``shared.engine.video.coherent.blend_sequence``, so the two rows
differ only by the method. Measured (``shared.engine.video.metrics``):

* flicker: mean warped difference between consecutive stylized frames (frame t-1 warped onto t
  with the DIS flow of the INPUT clip, non-occluded pixels only), 0-255 units; the input clip's
  own value is the floor the flow's error allows;
* style loss: Gram loss of the frames (relu1_1..relu4_1) against the style's target: the style
  image for ``adain``; for ``fast``, whose style images are not shipped, the same network's
  stylization of another photo (scikit-image's coffee).

Goals (exit status 1 when one is missed): coherent flicker at most 80 % of per-frame (clearly
lower), coherent style loss at most 110 % of per-frame (the style is not washed out). Writes a
PNG strip (rows: input, per-frame, coherent; a few frames) to ``--strip``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
#: The team's photos beside the checkout (``../shared/data``; from a worktree one level further up).
TEAM_DATA = next((p for p in (REPO.parent / "shared" / "data", REPO.parent.parent / "shared" / "data") if p.is_dir()),
                 REPO.parent / "shared" / "data")
FLICKER_GOAL = 0.80
STYLE_GOAL = 1.10


def cpu_line() -> str:
    model, flags = "?", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return (f"CPU {model}, {os.cpu_count()} cores, flags: {' '.join(wanted) or 'none of interest'}, "
            f"load {os.getloadavg()[0]:.1f}")


def _photo(name: str, fallback: str) -> tuple[np.ndarray, str]:
    path = TEAM_DATA / "content" / name
    if path.is_file():
        return np.asarray(Image.open(path).convert("RGB")), f"team data {path.parent.name}/{path.name}"
    from skimage import data

    return np.asarray(getattr(data, fallback)())[..., :3], f"skimage.data.{fallback}"


def _style_image() -> tuple[bytes, str]:
    from shared.imaging import png_bytes

    path = TEAM_DATA / "style" / "candy.jpg"
    if path.is_file():
        return path.read_bytes(), f"team data style/{path.name}"
    from skimage import data

    return png_bytes(np.asarray(data.coffee())), "skimage.data.coffee"


def _strip(rows: list[tuple[str, list[np.ndarray]]], picks: list[int]) -> Image.Image:
    h, w = rows[0][1][0].shape[:2]
    label_w = 90
    sheet = Image.new("RGB", (label_w + w * len(picks), h * len(rows)), "white")
    from PIL import ImageDraw

    draw = ImageDraw.Draw(sheet)
    for r, (label, frames) in enumerate(rows):
        draw.text((4, r * h + h // 2 - 6), label, fill="black")
        for c, t in enumerate(picks):
            f = frames[t]
            arr = f if f.dtype == np.uint8 else (np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)
            sheet.paste(Image.fromarray(arr), (label_w + c * w, r * h))
    return sheet


def _chunk_boundaries(per: list[np.ndarray], pairs: list, c: float, f_per: float, whole: list[np.ndarray]) -> bool:
    """Flicker across chunk boundaries (chunks of 10 frames) with and without the warm-up overlap,
    against the unsplit coherent render's flicker at the same frames; goal: with the overlap, at most
    per-frame's 80 % there too."""
    from shared.engine.video import coherent, metrics
    from shared.engine.video.chunks import DEFAULT_OVERLAP, plan_chunks

    ok = True
    for overlap in (0, DEFAULT_OVERLAP):
        chunks = plan_chunks(len(per), 10, overlap)
        joined: list[np.ndarray] = []
        for ch in chunks:
            part = coherent.blend_sequence(per[ch.warm_start : ch.stop], [None, *pairs[ch.warm_start + 1 : ch.stop]], c)
            joined += part[ch.warm_up :]
        at = [ch.start for ch in chunks[1:]]
        only = [p if t in at else None for t, p in enumerate(pairs)]
        f_split, f_whole = metrics.flicker(joined, only), metrics.flicker(whole, only)
        miss = overlap > 0 and f_split > 0.8 * f_per
        ok &= not miss
        print(f"{'':26} {f'boundaries ov {overlap}':16} {f_split:9.2f} {f_split / f_per:7.2f}   (unsplit at the same "
              f"frames {f_whole:.2f}; chunks of 10, boundaries at {at})" + ("  MISSED" if miss else ""))
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="clip width (height = 3/4)")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--coherence", type=float, default=None, help="default: the spec's default for each render")
    ap.add_argument("--sweep", default="", help="comma-separated extra coherence values to print (no goal)")
    ap.add_argument("--strip", type=Path, default=Path("flicker_strip.png"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from shared.engine.context import EngineContext
    from shared.engine.methods.video import RESTORE_CONTRAST
    from shared.engine.video import clips, coherent, metrics, stylizers
    from shared.jobs.specs import DEFAULT_COHERENCE, StyleRef
    print(cpu_line())
    print(f"torch {torch.__version__}, threads {args.threads}, device {args.device}")
    photo, photo_src = _photo("chicago.jpg", "astronaut")
    sprite, sprite_src = _photo("chelsea.png", "chelsea")
    width, height = args.size, args.size * 3 // 4
    frames = clips.camera_frames(width, height, args.frames, photo=photo, sprite=sprite)
    print(f"clip: {args.frames} frames {width}x{height}, virtual camera over {photo_src}, "
          f"moving cut-out of {sprite_src} (generated; no real clip offline)")
    t0 = time.perf_counter()
    pairs = coherent.frame_pairs(frames)
    print(f"DIS flow + occlusion masks: {time.perf_counter() - t0:.1f} s; "
          f"input clip's own flicker (the flow's floor): {metrics.flicker(frames, pairs):.2f}")

    ctx = EngineContext(device=args.device, precision="fp32")
    style_bytes, style_src = _style_image()
    inputs = {"style.png": style_bytes}
    ctx.read_input = inputs.__getitem__
    reference = np.ascontiguousarray(_photo("coffee.png", "coffee")[0][::2, ::2][:height, :width])
    renders = [
        ("fast", "fast style 3", stylizers.fast_stylizer("multistyle26", {3: 1.0}, ctx), None),
        ("fast", "fast mix 3+17", stylizers.fast_stylizer("multistyle26", {3: 0.5, 17: 0.5}, ctx), None),
        ("adain", f"adain {Path(style_src).name}",
         stylizers.adain_stylizer("adain-default", [StyleRef(image="style.png")], ctx, style_size=256), style_bytes),
    ]
    sweep = [float(v) for v in args.sweep.split(",") if v.strip()]
    print(f"\ncoherence {args.coherence or DEFAULT_COHERENCE} (goals: flicker <= {FLICKER_GOAL:.0%} of per-frame, "
          f"style loss <= {STYLE_GOAL:.0%} of per-frame)")
    print(f"{'render':26} {'row':16} {'flicker':>9} {'ratio':>7} {'style loss':>12} {'ratio':>7}  s")
    ok = True
    strip_rows: list[tuple[str, list[np.ndarray]]] = [("input", frames)]
    for render, name, stylize, style in renders:
        c_default = DEFAULT_COHERENCE[render] if args.coherence is None else args.coherence
        restore = render in RESTORE_CONTRAST
        t0 = time.perf_counter()
        per = coherent.stylize_batched(frames, stylize)
        t_net = time.perf_counter() - t0
        if style is None:
            target = metrics.style_grams(stylize(reference[None])[0])
        else:
            from shared.engine.images import decode_image

            img = decode_image(style)
            img.thumbnail((256, 256))
            target = metrics.style_grams(np.asarray(img, np.float32) / 255.0)
        f_per, s_per = metrics.flicker(per, pairs), metrics.style_loss(per, target)
        print(f"{name:26} {'per-frame':16} {f_per:9.2f} {1:7.2f} {s_per:12.5g} {1:7.2f}  {t_net:.1f} (network)")
        for c in [c_default, *sweep]:
            t0 = time.perf_counter()
            coh = coherent.blend_sequence(per, pairs, c, restore_contrast=restore)
            t_blend = time.perf_counter() - t0
            f_coh, s_coh = metrics.flicker(coh, pairs), metrics.style_loss(coh, target)
            fr, sr = f_coh / f_per, s_coh / s_per
            goal = c == c_default
            miss = goal and (fr > FLICKER_GOAL or sr > STYLE_GOAL)
            ok &= not miss
            label = f"coh {c:g}" + ("" if goal else " (sweep)")
            print(f"{'':26} {label:16} {f_coh:9.2f} {fr:7.2f} {s_coh:12.5g} {sr:7.2f}  {t_blend:.1f} (blend)"
                  + ("  MISSED" if miss else ""))
            if goal and name.startswith("fast style"):
                strip_rows += [("per-frame", per), (f"coherent {c:g}", coh)]
                ok &= _chunk_boundaries(per, pairs, c, f_per, coh)
            if goal and render == "adain":
                strip_rows += [("adain per-frame", per), (f"adain coh {c:g}", coh)]
    picks = [round(i * (len(frames) - 1) / 5) for i in range(6)]
    _strip(strip_rows, picks).save(args.strip)
    print(f"\nstrip (frames {picks}; rows input / per-frame / coherent): {args.strip}")
    print("PASS" if ok else "FAIL: a goal was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
