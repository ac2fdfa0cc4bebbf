"""The quality gate: every method on photos and held-out paintings, measured on the delivered PNGs.

    python bench/quality.py [--data ../shared/data] [--out out/quality] [--size 256] [--quick]
                            [--methods optimize,masked,fast,adain] [--gatys-steps 300] [--decoder PATH]
                            [--device cpu] [--threads N]

Exit status 0 when every method meets its bars, 1 when one misses a bar, 2 on a usage error.

**Inputs** (a fresh clone can run it):
- photos from installed packages: scikit-image ``astronaut``, ``chelsea``, ``coffee`` and
  scikit-learn ``china``, ``flower`` (``--quick``: astronaut and chelsea). The AdaIN decoder
  never trained on them (``deploy/train/prepare_adain_data.py`` holds them out).
- paintings: ``GATE_PAINTINGS`` from ``DATA/style_train`` (``--data``, default
  ``../shared/data`` beside the checkout), each checked against the committed held-out list
  ``deploy/train/adain_style_holdout.txt`` (training never sees them). Without that folder,
  four procedurally generated "paintings" stand in, and the table says so.
- masks for ``masked``: a generated ellipse over the middle of the photo (painting A inside,
  painting B outside).

**Pairs**: photo i with paintings i and i+1 (mod the number of paintings); ``--quick``: the
diagonal only.

**Measures**, all on the PNG a user receives (``shared/engine/quality.py``):
- *style ratio*: Gram style loss (relu1_1..relu5_1, the style resized to the output's long
  side) of a render over that of a Gatys ``optimize`` render of the same pair at the same
  size (the ``OptimizeSpec`` defaults: 300 L-BFGS-B iterations). ``masked`` is measured in
  each region with masked Gram matrices (Gatys et al. 2017), against the ``optimize`` render
  of the photo with that region's painting over the whole picture: each number says how well
  a painting's statistics are matched where it is applied.
- *reported vs delivered* (optimize): the job's ``style_loss`` over the PNG's.
- *dark clipping* (optimize, masked): share of the pixels of the photo's dark regions (luma
  < 60) with a channel at 0 or 255, beyond the inputs' own (the photo's share there, or a
  painting's overall share, whichever is larger).
- *reconstruction* (adain, alpha 0): PSNR against the photo, and the largest mean colour
  shift of a channel in 8-bit levels (a colour cast).
- *grid peaks* (adain alpha 0; fast at 512 px): how far the strongest periodic peak at the
  pixel-grid frequencies (periods 2, 8/3, 4 and 8 px) stands above the photo's own spectrum,
  in dB.
- *alpha midpoint* (adain): where alpha 0.5 lands between alpha 0 and alpha 1 on the log
  style loss (0 = the photo's, 1 = the full style's).
- *content ratio* (fast): relu4_2 content loss over that of the photo's Gatys renders.
- *stroke scale* (fast): dominant texture frequency, in cycles per image, of a 1,024 px
  render over a 512 px one, spec defaults (1.0 = strokes keep their size in the picture).

**Bars** (``BARS``): adain's are the issue's (style ratio geometric mean <= 2, none above 4;
reconstruction >= 20 dB with no colour cast; no periodic pattern). The others are chosen so
that each catches the defect it is named after: see the comments at ``BARS``.

Writes ``OUT/sheet.png`` (a labelled contact sheet), ``OUT/results.json``, each render, and a
cache of the slow Gatys renders (keyed by the inputs and the engine's source) to ``--out``,
which must not be a tracked folder: the sheet holds third-party paintings.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.imaging import png_bytes  # noqa: E402  (after the path: this checkout's shared)

HOLDOUT_LIST = ROOT / "deploy" / "train" / "adain_style_holdout.txt"
PHOTOS = ("astronaut", "chelsea", "coffee", "china", "flower")
# Held-out works (sha256(name) mod 5 == 0), chosen for the painterly styles users ask for,
# plus one realist work; the full gate uses all six, --quick the first two.
GATE_PAINTINGS = (
    "van_gogh_the_night_cafe.jpg",
    "kandinsky_composition_vii.jpg",
    "klee_ad_parnassum.jpg",
    "monet_charing_cross_bridge.jpg",
    "vallotton_camille_mauclair_woodcut_portrait.jpg",
    "courbet_the_cliff_at_etretat_after_the_storm.jpg",
)
FAST_STYLES = (0, 7, 13, 19)
STROKE_CHECK_SIZE = 512  # fast's grid and stroke checks: at 512 px (the case) and twice that
TILE = 192

# (check, aggregate, comparison, bar)
BARS: dict[str, list[tuple[str, str, str, float]]] = {
    # The reference itself: its numbers must be its pixels (issue: the PNG had 1.9-2.6x the
    # reported style loss), and dark regions must not fill with clipped channels (issue: 20 %
    # of the pixels; 30-51 % on the gate's pairs before the bounded optimizer). Bounded, a
    # pixel may still rest on a bound where the constrained optimum is (a deep saturated
    # colour; 8-15 % there, counted by the loss): the bar sits between the two.
    "optimize": [("reported_vs_delivered", "max_abs_log", "<=", math.log(1.01)),
                 ("dark_clipping", "max", "<=", 0.15)],
    # Joint masked style transfer weights each region by its area so that every pixel has the
    # balance of a single-style optimize job: a region should be styled about as strongly.
    "masked": [("style_ratio", "geomean", "<=", 1.5), ("style_ratio", "max", "<=", 3.0),
               ("dark_clipping", "max", "<=", 0.15)],
    # Feed-forward styles: no grid hatching above the photo (issue: a 2 px zig-zag at 512 px),
    # content no less readable than twice a Gatys render's (issue: a dense town unreadable),
    # and strokes that keep their size in the picture when the size doubles.
    # The grid bar: 10 dB lets pass the faint one-pixel checker of the smooth styles (8-9 dB,
    # seen only at 4x zoom) and stops the visible 2 px hatching (styles 13, 19: 14-18 dB).
    "fast": [("grid_peak_db", "max", "<=", 10.0), ("content_ratio", "geomean", "<=", 2.0),
             ("stroke_scale", "max_abs_log", "<=", math.log(1.25))],
    # The bars.
    "adain": [("style_ratio", "geomean", "<=", 2.0), ("style_ratio", "max", "<=", 4.0),
              ("recon_psnr", "mean", ">=", 20.0), ("colour_cast", "max", "<=", 5.0),
              ("grid_peak_db", "max", "<=", 3.0), ("alpha_midpoint", "max", "<=", 0.8)],
}


# --- inputs ------------------------------------------------------------------------------------


def photos(names: tuple[str, ...]) -> dict[str, Image.Image]:
    import skimage.data
    from sklearn.datasets import load_sample_image

    out = {}
    for n in names:
        arr = load_sample_image(f"{n}.jpg") if n in ("china", "flower") else getattr(skimage.data, n)()
        out[n] = Image.fromarray(np.asarray(arr)).convert("RGB")
    return out


def read_holdout() -> set[str]:
    lines = HOLDOUT_LIST.read_text(encoding="utf-8").splitlines()
    return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}


def paintings(data: Path, n: int) -> tuple[dict[str, Image.Image], str]:
    """``n`` held-out paintings from ``data/style_train``, or generated stand-ins."""
    folder = data / "style_train"
    if folder.is_dir():
        held = read_holdout()
        names = [p for p in GATE_PAINTINGS if (folder / p).is_file()][:n]
        stray = [p for p in names if p not in held]
        if stray:
            raise SystemExit(f"{stray}: not in {HOLDOUT_LIST.name}; the gate measures held-out paintings only")
        if names:
            return ({Path(p).stem: Image.open(folder / p).convert("RGB") for p in names},
                    f"held-out paintings from {folder} ({HOLDOUT_LIST.name})")
    return generated_paintings(n), f"generated stand-ins ({folder} not found)"


def generated_paintings(n: int) -> dict[str, Image.Image]:
    """Procedural 'paintings' with strokes, palettes and structure, for a clone without the data."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:384, 0:384] / 384.0
    makers: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("swirls", lambda: np.stack([np.sin(20 * xx + 6 * np.sin(8 * yy)), np.sin(14 * yy + 3 * np.cos(9 * xx)),
                                     np.cos(18 * (xx + yy))], -1)),
        ("blocks", lambda: np.kron(rng.normal(size=(12, 12, 3)), np.ones((32, 32, 1))) * 0.8),
        ("rings", lambda: np.sin(40 * np.hypot(xx - 0.5, yy - 0.4))[..., None] * np.array([1.0, -0.3, 0.6])),
        ("hatching", lambda: np.stack([np.sin(60 * (xx + 0.3 * yy)), np.sin(45 * (yy - 0.2 * xx)),
                                       np.sin(30 * xx) * np.sin(30 * yy)], -1)),
    ]
    out = {}
    for name, make in makers[:n]:
        arr = ((make() * 0.4 + 0.5).clip(0.05, 0.95) * 255).astype(np.uint8)  # no pure colours, like paint
        out[f"generated_{name}"] = Image.fromarray(arr, "RGB")
    return out


def ellipse_mask(size: tuple[int, int]) -> Image.Image:
    w, h = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse((w * 0.2, h * 0.15, w * 0.8, h * 0.9), fill=255)
    return mask


# --- rendering -----------------------------------------------------------------------------------


@dataclass
class Gate:
    """Everything one gate run shares: inputs as engine refs, the loss model, the cache."""

    size: int
    steps: int
    out: Path
    device: str
    decoder: str
    refs: dict[str, bytes] = field(default_factory=dict)
    loss: Any = None
    log: Callable[[str], None] = print

    def ref(self, name: str, img: Image.Image) -> str:
        self.refs[name] = png_bytes(img)
        return name

    def ctx(self):
        from shared.engine.context import EngineContext

        return EngineContext(read_input=self.refs.__getitem__, resolve_model=Path, device=self.device)

    def render(self, spec) -> tuple[Image.Image, dict, float]:
        """(delivered PNG decoded, metrics, seconds) of ``spec``."""
        from shared.engine import run_engine

        t = time.perf_counter()
        result = run_engine(spec, self.ctx())
        seconds = time.perf_counter() - t
        return Image.open(io.BytesIO(png_bytes(result.image))).convert("RGB"), result.metrics, seconds

    def cached(self, kind: str, spec, sources: tuple[str, ...]) -> tuple[Image.Image, dict, float]:
        """A slow render, kept under OUT/cache by the inputs, the spec and the engine's code."""
        h = hashlib.sha256(spec.model_dump_json().encode())
        for ref in sorted(set(_refs_of(spec))):
            h.update(hashlib.sha256(self.refs[ref]).digest())
        for src in sources:
            h.update((ROOT / src).read_bytes())
        path = self.out / "cache" / f"{kind}_{h.hexdigest()[:20]}.png"
        if path.is_file():
            meta = json.loads(path.with_suffix(".json").read_text())
            return Image.open(path).convert("RGB"), meta["metrics"], meta["seconds"]
        img, metrics, seconds = self.render(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        path.with_suffix(".json").write_text(json.dumps({"metrics": metrics, "seconds": seconds}, default=str))
        return img, metrics, seconds


GATYS_SOURCES = ("shared/engine/methods/gatys.py", "shared/engine/losses.py", "shared/engine/nets/vgg.py")


def _refs_of(spec) -> list[str]:
    return spec.image_refs()


# --- the checks ------------------------------------------------------------------------------------


@dataclass
class Row:
    method: str
    photo: str
    what: str  # painting(s) / style / alpha
    values: dict[str, float]
    image: Image.Image | None = None
    seconds: float = 0.0


def aggregate(values: list[float], how: str) -> float:
    """One number per check; NaN (a failed measurement) when there is none or any is NaN."""
    if not values or any(not math.isfinite(v) for v in values):
        return math.nan
    if how == "geomean":
        return float(math.exp(np.mean(np.log(values))))
    if how == "mean":
        return float(np.mean(values))
    if how == "max_abs_log":
        return float(max(abs(math.log(v)) for v in values))
    return float(max(values))


def verdicts(rows: list[Row], methods: tuple[str, ...]) -> list[dict]:
    out = []
    for method in methods:
        for check, how, op, bar in BARS[method]:
            vals = [r.values[check] for r in rows if r.method == method and check in r.values]
            value = aggregate(vals, how)
            ok = bool(vals) and (value <= bar if op == "<=" else value >= bar)
            out.append({"method": method, "check": check, "aggregate": how, "value": value, "bar": f"{op} {bar:.4g}",
                        "n": len(vals), "ok": ok})
    return out


def dark_clipping(out: Image.Image, photo: Image.Image, *paintings: Image.Image) -> float:
    """Clipped share in the photo's dark regions beyond what the inputs have themselves: the
    photo there, and each painting overall (a painting with pure colours may be matched)."""
    from shared.engine import quality

    ref = photo.resize(out.size, Image.Resampling.LANCZOS)
    dark = quality.dark_region(ref)
    if not dark.any():
        return 0.0
    own = max([quality.clipped_fraction(ref, dark)] + [quality.clipped_fraction(p) for p in paintings])
    return quality.clipped_fraction(out, dark) - own


def run_optimize(g: Gate, pairs, photo_imgs, painting_imgs) -> dict[tuple[str, str], Row]:
    from shared.jobs.specs import OptimizeSpec

    rows = {}
    for p, s in pairs:
        spec = OptimizeSpec(content=f"photo:{p}", styles=[{"image": f"painting:{s}"}], size=g.size, steps=g.steps)
        img, metrics, secs = g.cached("optimize", spec, GATYS_SOURCES)
        style = g.loss.gram_style_loss(img, painting_imgs[s], key=s)
        values = {"style_loss": style, "content_loss": g.loss.content_loss(img, photo_imgs[p]),
                  "dark_clipping": dark_clipping(img, photo_imgs[p], painting_imgs[s])}
        if metrics.get("style_loss"):
            values["reported_vs_delivered"] = metrics["style_loss"] / style
        rows[(p, s)] = Row("optimize", p, s, values, img, secs)
        g.log(f"optimize {p}/{s}: style {style:.4g} ({secs:.0f} s)")
    return rows


def run_masked(g: Gate, photos_with_two, photo_imgs, painting_imgs, gatys: dict) -> list[Row]:
    from shared.jobs.specs import MaskedSpec

    rows = []
    for p, (a, b) in photos_with_two:
        mask = ellipse_mask(photo_imgs[p].size)
        inside, outside = g.ref(f"mask:{p}", mask), g.ref(f"mask:{p}:inv", mask.point(lambda v: 255 - v))
        spec = MaskedSpec(content=f"photo:{p}", size=g.size, steps=g.steps, regions=[
            {"style": {"image": f"painting:{a}"}, "mask": inside},
            {"style": {"image": f"painting:{b}"}, "mask": outside}])
        img, _, secs = g.cached("masked", spec, (*GATYS_SOURCES, "shared/engine/methods/masked.py"))
        m = np.asarray(mask.resize(img.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0 > 0.5
        ratios = []
        for name, region in ((a, m), (b, ~m)):
            ours = g.loss.gram_style_loss(img, painting_imgs[name], key=name, region=region)
            ratios.append(ours / gatys[(p, name)].values["style_loss"])
        for name, r in zip((a, b), ratios, strict=True):
            first = img if name == a else None
            rows.append(Row("masked", p, f"{a} in / {b} out: {name}", {"style_ratio": r}, first, secs))
        rows[-2].values["dark_clipping"] = dark_clipping(img, photo_imgs[p], painting_imgs[a], painting_imgs[b])
        g.log(f"masked {p}: style ratios {ratios[0]:.2f} (inside) {ratios[1]:.2f} (outside) ({secs:.0f} s)")
    return rows


def run_fast(g: Gate, photo_imgs, gatys: dict) -> list[Row]:
    from shared.engine import quality
    from shared.jobs.specs import FastSpec

    rows = []
    for p, photo in photo_imgs.items():
        ref = g.ref(f"photo:{p}", photo)
        gatys_content = [r.values["content_loss"] for (pp, _), r in gatys.items() if pp == p]
        side = max(STROKE_CHECK_SIZE, g.size)
        for st in FAST_STYLES:
            img, _, secs = g.render(FastSpec(content=ref, size=g.size, style=st))
            base, _, _ = img, None, None
            if side != g.size:
                base, _, _ = g.render(FastSpec(content=ref, size=side, style=st))
            big, _, _ = g.render(FastSpec(content=ref, size=2 * side, style=st))
            values = {
                "grid_peak_db": quality.worst_grid_peak(base, photo)[1],
                "stroke_scale": quality.dominant_frequency(big) / quality.dominant_frequency(base),
            }
            if gatys_content:
                values["content_ratio"] = g.loss.content_loss(img, photo) / float(np.mean(gatys_content))
            rows.append(Row("fast", p, f"style {st}", values, img, secs))
        grids = ", ".join(f"{r.what} grid {r.values['grid_peak_db']:.1f} dB" for r in rows[-len(FAST_STYLES) :])
        g.log(f"fast {p}: {grids}")
    return rows


def run_adain(g: Gate, pairs, photo_imgs, painting_imgs, gatys: dict) -> list[Row]:
    from shared.engine import quality
    from shared.jobs.specs import AdainSpec

    rows = []
    for p, photo in photo_imgs.items():
        s = next(s for pp, s in pairs if pp == p)
        spec = AdainSpec(content=f"photo:{p}", styles=[{"image": f"painting:{s}"}], alpha=0.0, size=g.size,
                         model=g.decoder)
        img, _, secs = g.render(spec)
        ref = photo.resize(img.size, Image.Resampling.LANCZOS)
        values = {"recon_psnr": quality.psnr(img, ref),
                  "colour_cast": float(np.abs(quality.mean_colour_shift(img, ref)).max()),
                  "grid_peak_db": quality.worst_grid_peak(img, ref)[1]}
        rows.append(Row("adain", p, "alpha 0 (reconstruction)", values, img, secs))
        g.log(f"adain {p} alpha 0: {values['recon_psnr']:.2f} dB, cast {values['colour_cast']:.1f}, "
              f"grid {values['grid_peak_db']:.1f} dB")
    for p, s in pairs:
        base = {"content": f"photo:{p}", "styles": [{"image": f"painting:{s}"}], "size": g.size, "model": g.decoder,
                "style_size": g.size}
        full, _, secs = g.render(AdainSpec(**base, alpha=1.0))
        half, _, _ = g.render(AdainSpec(**base, alpha=0.5))
        zero = next(r.image for r in rows if r.photo == p and r.what.startswith("alpha 0"))
        l1, lh, l0 = (g.loss.gram_style_loss(im, painting_imgs[s], key=s) for im in (full, half, zero))
        values = {"style_ratio": l1 / gatys[(p, s)].values["style_loss"],
                  "alpha_midpoint": math.log(l0 / lh) / math.log(l0 / l1) if l0 > l1 else math.nan}
        rows.append(Row("adain", p, s, values, full, secs))
        rows.append(Row("adain", p, f"{s} alpha 0.5", {}, half))
        g.log(f"adain {p}/{s}: style ratio {values['style_ratio']:.2f}, alpha 0.5 at {values['alpha_midpoint']:.2f}")
    return rows


# --- report ---------------------------------------------------------------------------------------


def _thumb(img: Image.Image | None) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE), (235, 235, 235))
    if img is not None:
        t = img.convert("RGB").copy()
        t.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
        tile.paste(t, ((TILE - t.width) // 2, (TILE - t.height) // 2))
    return tile


def contact_sheet(rows: list[tuple[str, list[tuple[str, Image.Image | None]]]]) -> Image.Image:
    pad, cap, title_h = 6, 28, 16
    cols = max(len(cells) for _, cells in rows)
    sheet = Image.new("RGB", (pad + cols * (TILE + pad), pad + len(rows) * (title_h + cap + TILE + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    for title, cells in rows:
        draw.text((pad, y + 2), title, fill=(0, 0, 120))
        y += title_h
        for i, (caption, img) in enumerate(cells):
            x = pad + i * (TILE + pad)
            draw.multiline_text((x + 2, y), caption, fill="black", spacing=2)
            sheet.paste(_thumb(img), (x, y + cap))
        y += cap + TILE + pad
    return sheet


def sheet_rows(rows: list[Row], photo_imgs, painting_imgs, pairs) -> list:
    by = {(r.method, r.photo, r.what): r for r in rows}
    out = []
    f = lambda r, k: f"{r.values[k]:.2f}" if r and k in r.values else "-"  # noqa: E731
    for p, s in pairs:
        opt, ada, half = by.get(("optimize", p, s)), by.get(("adain", p, s)), by.get(("adain", p, f"{s} alpha 0.5"))
        cells = [(f"photo\n{p}", photo_imgs[p]), (f"painting\n{s[:28]}", painting_imgs[s]),
                 ("optimize (reference)", opt.image if opt else None),
                 (f"adain alpha 1\nstyle ratio {f(ada, 'style_ratio')}", ada.image if ada else None),
                 (f"adain alpha 0.5\nmidpoint {f(ada, 'alpha_midpoint')}", half.image if half else None)]
        out.append((f"{p} x {s}", cells))
    for p in photo_imgs:
        rec = by.get(("adain", p, "alpha 0 (reconstruction)"))
        cells = [(f"photo\n{p}", photo_imgs[p])]
        if rec:
            cells.append((f"adain alpha 0\n{f(rec, 'recon_psnr')} dB grid {f(rec, 'grid_peak_db')}", rec.image))
        cells += [(f"fast {r.what}\ngrid {f(r, 'grid_peak_db')} content {f(r, 'content_ratio')}", r.image)
                  for r in rows if r.method == "fast" and r.photo == p]
        if len(cells) > 1:
            out.append((f"{p}: adain reconstruction and fast", cells))
    for r in rows:
        if r.method == "masked" and r.image is not None:
            a, b = r.what.split(":")[0].split(" in / ")
            b = b.removesuffix(" out")
            nxt = rows[rows.index(r) + 1]
            cells = [(f"photo\n{r.photo}", photo_imgs[r.photo]),
                     ("mask: A inside", ellipse_mask(photo_imgs[r.photo].size)),
                     (f"A\n{a[:28]}", painting_imgs[a]), (f"B\n{b[:28]}", painting_imgs[b]),
                     (f"masked (joint)\nratio A {f(r, 'style_ratio')} B {f(nxt, 'style_ratio')}", r.image)]
            out.append((f"{r.photo}: masked", cells))
    return out


def print_table(verdict_rows: list[dict], rows: list[Row]) -> None:
    print(f"\n{'method':9s} {'check':22s} {'aggregate':12s} {'value':>9s} {'bar':>9s} {'n':>3s}  result")
    for v in verdict_rows:
        value = v["value"]
        shown = math.exp(value) if v["aggregate"] == "max_abs_log" and math.isfinite(value) else value
        bar = v["bar"]
        if v["aggregate"] == "max_abs_log":  # shown as a factor: within x1.25 either way
            op, num = bar.split()
            bar = f"{op} x{math.exp(float(num)):.3g}"
        print(f"{v['method']:9s} {v['check']:22s} {v['aggregate']:12s} {shown:9.3f} {bar:>9s} {v['n']:3d}  "
              f"{'ok' if v['ok'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="team data folder with style_train/ (default: ../shared/data beside the checkout)")
    parser.add_argument("--out", type=Path, default=Path("out/quality"),
                        help="sheet, results.json, renders and the Gatys cache "
                        "(an untracked folder; default out/quality)")
    parser.add_argument("--size", type=int, default=256, help="longest side of every render (default 256)")
    parser.add_argument("--gatys-steps", type=int, default=None,
                        help="iterations of optimize/masked (default 300; --quick 100)")
    parser.add_argument("--quick", action="store_true", help="2 photos x 2 paintings on the diagonal, 100 iterations")
    parser.add_argument("--methods", default="optimize,masked,fast,adain")
    parser.add_argument("--decoder", default="adain-default", help="AdaIN decoder: adain-default or a checkpoint path")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared, busy CPU)")
    args = parser.parse_args(argv)
    import torch

    from shared.engine.quality import GramLoss

    if args.threads:
        torch.set_num_threads(args.threads)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = set(methods) - set(BARS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; use {sorted(BARS)}")
    out = args.out.resolve()
    if out.is_relative_to(ROOT) and not out.is_relative_to(ROOT / "out"):
        parser.error(f"--out {args.out}: inside the repository only under out/ (ignored by git)")
    out.mkdir(parents=True, exist_ok=True)
    steps = args.gatys_steps or (100 if args.quick else 300)

    photo_imgs = photos(PHOTOS[:2] if args.quick else PHOTOS)
    painting_imgs, source = paintings(args.data, 2 if args.quick else len(GATE_PAINTINGS))
    names = list(painting_imgs)
    offsets = (0,) if args.quick else (0, 1)
    pairs = [(p, names[(i + k) % len(names)]) for i, p in enumerate(photo_imgs) for k in offsets]
    print(f"inputs: {len(photo_imgs)} photos, {len(names)} {source}; {len(pairs)} pairs at {args.size} px; "
          f"Gatys {steps} iterations", file=sys.stderr)

    g = Gate(args.size, steps, out, args.device, args.decoder, log=lambda m: print(m, file=sys.stderr, flush=True))
    for p, img in photo_imgs.items():
        g.ref(f"photo:{p}", img)
    for s, img in painting_imgs.items():
        g.ref(f"painting:{s}", img)
    g.loss = GramLoss()
    started = time.perf_counter()
    gatys = run_optimize(g, pairs, photo_imgs, painting_imgs)  # every ratio needs the reference
    rows: list[Row] = list(gatys.values()) if "optimize" in methods else []
    if "masked" in methods:
        two = [(p, [s for pp, s in pairs if pp == p]) for p in photo_imgs]
        two = [(p, ss[:2]) for p, ss in two if len(ss) >= 2][: 2 if not args.quick else 1]
        if not two:  # --quick: the two diagonal paintings on the first photo, with its references
            p = next(iter(photo_imgs))
            two = [(p, names[:2])]
            gatys.update(run_optimize(g, [(p, names[1])], photo_imgs, painting_imgs))
        rows += run_masked(g, two, photo_imgs, painting_imgs, gatys)
    if "fast" in methods:
        rows += run_fast(g, photo_imgs, gatys)
    if "adain" in methods:
        rows += run_adain(g, pairs, photo_imgs, painting_imgs, gatys)

    verdict_rows = verdicts(rows, methods)
    sheet = contact_sheet(sheet_rows(rows, photo_imgs, painting_imgs, pairs))
    sheet.save(out / "sheet.png")
    for r in rows:
        if r.image is not None:
            r.image.save(out / f"{r.method}_{r.photo}_{''.join(c if c.isalnum() else '_' for c in r.what)[:60]}.png")
    result = {"size": args.size, "gatys_steps": steps, "paintings": source, "pairs": pairs, "decoder": args.decoder,
              "seconds": round(time.perf_counter() - started), "verdicts": verdict_rows,
              "rows": [{"method": r.method, "photo": r.photo, "what": r.what, **r.values,
                        "seconds": round(r.seconds, 2)} for r in rows]}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"inputs: {source}; size {args.size}; Gatys {steps} iterations; decoder {args.decoder}")
    print_table(verdict_rows, rows)
    print(f"\nsheet: {out / 'sheet.png'}  results: {out / 'results.json'}")
    missed = sorted({v["method"] for v in verdict_rows if not v["ok"]})
    if missed:
        print(f"MISSED a bar: {', '.join(missed)}")
        return 1
    print("every method meets its bars")
    return 0


if __name__ == "__main__":
    sys.exit(main())
