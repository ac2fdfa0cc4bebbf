"""Build the AdaIN training folders (content photos + style paintings), reproducibly.

Content (always):
  * Debian wallpaper packages (``apt-get download`` + ``dpkg -x``; nothing is installed).
    Every package below is in Debian ``main`` (DFSG-free); the licence recorded for each is
    the one its ``/usr/share/doc/<pkg>/copyright`` states, and the script checks that the
    copyright file still names that licence before using the package.
  * scikit-image sample photos with a stated free licence (CC0 / public domain), and
    scikit-learn's ``china.jpg`` (CC BY 2.0).
  * Held out for evaluation, never written: scikit-image ``astronaut``, ``chelsea``,
    ``coffee`` and scikit-learn ``flower.jpg``.

Style (with ``--style-train-dir`` and/or ``--style-dir``):
  * ``--style-train-dir ../shared/data/style_train``: 300 public-domain paintings
    (``../shared/data/SOURCES.md``). A fifth is held out by a stable hash of the file name and
    never written (``style_split.py``; the list is committed as ``adain_style_holdout.txt``, and
    the build stops when the folder and the list disagree; ``--write-holdout`` rewrites it).
  * ``--style-dir ../shared/data/style``: the team's permissive paintings; ``mosaic.jpg`` and
    ``candy.jpg`` (origin unclear, see SOURCES.md) are excluded.
  * Weighted sampling: each painting's weight (modern and strongly textured works up to 6x
    the smooth old ones, the team's paintings at the top weight; see ``style_split.py``)
    becomes its number of distinct views: the whole painting and overlapping tiles at 2x and
    3x the short side (capped at its native size). The trainer draws files uniformly, so a
    painting is drawn in proportion to its weight, whatever its pixel count.

Every image is written as a JPEG (quality 92) whose shorter side is ``--short-side`` (300)
px: the whole image, plus square tiles of that size cut from the image resized to 2x and
3x (and more for 4K+ wallpapers) the short side, as long as that is not an upscale. Tiles that
are nearly flat (grey-level std < ``--min-std``) are dropped: solid gradients teach nothing.
Exact duplicates (sha1) and the same wallpaper shipped at several resolutions are kept once
(the largest).

Usage::

    python deploy/train/prepare_adain_data.py --out /work/data/adain \
        --style-train-dir /work/shared/data/style_train --style-dir /work/shared/data/style \
        [--debs-dir /work/data/adain/debs] [--no-content]

Writes ``OUT/content/*.jpg``, ``OUT/style/*.jpg`` and ``OUT/manifest.json`` (sources,
licences, per-painting weights, the held-out list, counts). ``--no-content`` rebuilds only
the style folder (no apt-get). Needs ``apt-get`` and ``dpkg`` (Debian/Ubuntu) unless ``--debs-dir`` already
holds the ``.deb`` files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import style_split

Image.MAX_IMAGE_PIXELS = 60_000_000

# package -> (licence summary from its debian/copyright, a string that file must contain)
PACKAGES: dict[str, tuple[str, str]] = {
    "gnome-backgrounds": ("CC-BY-SA-3.0 / CC-BY-SA-2.0 / CC-BY-2.0 images, GPL-2+ package", "Creative Commons"),
    "mate-backgrounds": ("GPL-2+ (Ubuntu-Mate-*: CC-BY-SA-4.0)", "GPL-2+"),
    "sway-backgrounds": ("Expat (MIT)", "Expat"),
    "plasma-workspace-wallpapers": ("GPL-2+ (KDE Visual Design Group)", "GPL-2+"),
    "lomiri-wallpapers": ("CC-BY-SA-3.0", "CC-BY-SA-3.0"),
    "lomiri-wallpapers-16.04": ("CC-BY-4.0 / CC-BY-SA-4.0 / CC0-1.0 per file", "CC-BY-4.0"),
    "lomiri-wallpapers-20.04": ("CC-BY-SA-3.0", "CC-BY-SA-3.0"),
    "ukui-wallpapers": ("CC-BY-SA-3.0 (Ubuntu Kylin community)", "CC-BY-SA-3.0"),
}
# Looked at and not used: desktop-base (its wallpapers are SVG; the raster files are boot
# screens and logos), xfce4-artwork / budgie-backgrounds / ubuntu-wallpapers (not in Debian 12).
IMAGE_DIRS = ("usr/share/backgrounds", "usr/share/wallpapers")
# The source files this recipe reads. Fixed, not shared.imaging.IMAGE_SUFFIXES: the shipped
# decoder's data was built from exactly these, and a wider set would change the data set.
SOURCE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}

# scikit-image samples: natural photos/textures with a stated free licence.
SKIMAGE_USE = {
    "camera": "CC0 (Lav Varshney)",
    "coins": "no known copyright restrictions (Brooklyn Museum)",
    "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "hubble_deep_field": "public domain (NASA)",
    "rocket": "public domain (SpaceX)",
}
HOLD_OUT_SKIMAGE = ("astronaut", "chelsea", "coffee")
SKLEARN_USE = {"china.jpg": "CC BY 2.0, danielbuechele (Flickr)"}
HOLD_OUT_SKLEARN = ("flower.jpg",)
STYLE_EXCLUDE = ("mosaic.jpg", "candy.jpg")


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def to_rgb(im: Image.Image) -> Image.Image:
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def resize_short(im: Image.Image, short: int) -> Image.Image:
    w, h = im.size
    s = short / min(w, h)
    size = (max(short, round(w * s)), max(short, round(h * s)))
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def emit(im: Image.Image, stem: str, out: Path, short: int, min_std: float, max_scale: int) -> int:
    """Write the whole image and multi-scale tiles; returns the number of files written."""
    n = 0
    whole = resize_short(im, short)
    whole.save(out / f"{stem}.jpg", quality=92)
    n += 1
    native_short = min(im.size)
    for k in range(2, max_scale + 1):
        if native_short < short * k:
            break
        big = resize_short(im, short * k)
        w, h = big.size
        nx, ny = w // short, h // short
        ox, oy = (w - nx * short) // 2, (h - ny * short) // 2
        for iy in range(ny):
            for ix in range(nx):
                tile = big.crop((ox + ix * short, oy + iy * short, ox + (ix + 1) * short, oy + (iy + 1) * short))
                if float(np.asarray(tile.convert("L"), dtype=np.float32).std()) < min_std:
                    continue
                tile.save(out / f"{stem}__s{k}_{iy}_{ix}.jpg", quality=92)
                n += 1
    return n


def emit_views(im: Image.Image, stem: str, out: Path, short: int, min_std: float, views: int) -> int:
    """Exactly ``views`` files per image where possible: the whole image plus overlapping
    ``short``-px tiles on an even grid at up to two larger scales (2x and 3x ``short``, capped
    at the native size). Used for the style paintings so each painting weighs the same in
    training whatever its pixel count."""
    whole = resize_short(im, short)
    whole.save(out / f"{stem}.jpg", quality=92)
    n = 1
    native = min(im.size)
    scales = sorted({min(native, short * k) for k in (2, 3)} - {short})
    scales = [s for s in scales if s > short] or [short]
    per = math.ceil((views - 1) / len(scales))
    for s in scales:
        big = resize_short(im, s)
        w, h = big.size
        # an nx x ny grid with nx / ny close to the aspect ratio and nx * ny >= per
        ny = max(1, round(math.sqrt(per * h / w)))
        nx = max(1, math.ceil(per / ny))
        xs = np.linspace(0, w - short, nx).round().astype(int)
        ys = np.linspace(0, h - short, ny).round().astype(int)
        k = 0
        for y in ys:
            for x in xs:
                if k >= per or n >= views:
                    break
                tile = big.crop((int(x), int(y), int(x) + short, int(y) + short))
                if float(np.asarray(tile.convert("L"), dtype=np.float32).std()) < min_std:
                    continue
                tile.save(out / f"{stem}__v{s}_{int(y)}_{int(x)}.jpg", quality=92)
                n += 1
                k += 1
    return n


def fetch_debs(debs_dir: Path) -> None:
    debs_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not list(debs_dir.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=debs_dir, check=True)


def group_key(rel: str) -> str:
    """Same wallpaper at several resolutions -> one key (keep the largest)."""
    m = re.search(r"wallpapers/([^/]+)/contents/(images[^/]*)/", rel)
    if m:  # Plasma: one picture per folder (images/ and images_dark/ are two pictures)
        return f"plasma:{m.group(1)}:{m.group(2)}"
    stem = Path(rel).stem
    stem = re.sub(r"(_\d+x\d+)(_Portrait)?$", "", stem)  # sway, mate Elephants_3840x2160
    return f"{Path(rel).parent}:{stem}"


def collect_debs(debs_dir: Path, tmp: Path) -> list[tuple[str, str, Path]]:
    """[(package, relative path, file)] after licence checks, dedup and resolution grouping."""
    chosen: dict[str, tuple[int, str, str, Path]] = {}
    seen: set[str] = set()
    for pkg, (_lic, must) in PACKAGES.items():
        debs = sorted(debs_dir.glob(f"{pkg}_*.deb"))
        if not debs:
            raise SystemExit(f"{pkg}: no .deb in {debs_dir}")
        root = tmp / pkg
        root.mkdir()
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(root)], check=True)
        copyright_file = root / "usr/share/doc" / pkg / "copyright"
        if not copyright_file.is_file() or must not in copyright_file.read_text(errors="replace"):
            raise SystemExit(f"{pkg}: copyright file does not state {must!r}; check the licence before use")
        for d in IMAGE_DIRS:
            for f in sorted((root / d).rglob("*")) if (root / d).is_dir() else []:
                if f.suffix.lower() not in SOURCE_SUFFIXES or not f.is_file():
                    continue
                h = sha1(f)
                if h in seen:
                    continue
                seen.add(h)
                rel = str(f.relative_to(root))
                try:
                    with Image.open(f) as im:
                        px = im.size[0] * im.size[1]
                        if min(im.size) < 300:
                            continue
                except Exception as exc:  # unreadable format: report and skip
                    print(f"skip {pkg}/{rel}: {exc}", file=sys.stderr)
                    continue
                key = f"{pkg}:{group_key(rel)}"
                if key not in chosen or px > chosen[key][0]:
                    chosen[key] = (px, pkg, rel, f)
    return [(pkg, rel, f) for _px, pkg, rel, f in sorted(chosen.values(), key=lambda t: (t[1], t[2]))]


def short_rel(rel: str) -> str:
    """'usr/share/wallpapers/Kite/contents/images/1280x1024.jpg' -> 'Kite_images_1280x1024'."""
    for d in IMAGE_DIRS:
        rel = rel.removeprefix(d + "/")
    return str(Path(rel).with_suffix("")).replace("/contents/", "/").replace("/", "_")


def safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120]


def build_style(style_dir: Path, train_dir: Path | None, sources: Path | None, team_dir: Path | None,
                short: int, min_std: float, write_holdout: bool) -> list[dict]:
    """Write the weighted style views; returns the manifest rows (held-out paintings have files=0)."""
    rows: list[dict] = []
    if train_dir is not None:
        names = sorted(f.name for f in train_dir.iterdir() if f.suffix.lower() in SOURCE_SUFFIXES)
        train, held = style_split.split(names)
        if write_holdout:
            style_split.write_holdout(held, len(names))
        committed = style_split.read_holdout()
        if committed != held:
            raise SystemExit(f"{train_dir}: the held-out paintings by the hash rule differ from "
                             f"{style_split.HOLDOUT_FILE.name} ({len(held)} vs {len(committed)}); "
                             "rerun with --write-holdout if the folder changed on purpose")
        meta = style_split.parse_sources(sources.read_text(encoding="utf-8")) if sources and sources.is_file() else {}
        images = {n: to_rgb(Image.open(train_dir / n)) for n in train}
        textures = {n: style_split.texture_score(im) for n, im in images.items()}
        years = {n: meta[n].year if n in meta else None for n in train}
        weights = style_split.weights(textures, years)
        for n in train:
            k = style_split.views(weights[n])
            files = emit_views(images[n], f"train__{Path(n).stem}", style_dir, short, min_std, k)
            rows.append({"source": str(train_dir), "path": n, "size": list(images[n].size), "year": years[n],
                         "texture": round(textures[n], 3), "weight": round(weights[n], 3), "files": files})
        rows += [{"source": str(train_dir), "path": n, "held_out": True, "files": 0} for n in held]
    if team_dir is not None:
        for f in sorted(team_dir.iterdir()):
            if f.suffix.lower() not in SOURCE_SUFFIXES or f.name in STYLE_EXCLUDE:
                continue
            im = to_rgb(Image.open(f))
            k = style_split.views(style_split.TEAM_WEIGHT)
            files = emit_views(im, f"style__{f.stem}", style_dir, short, min_std, k)
            rows.append({"source": str(team_dir), "path": f.name, "size": list(im.size),
                         "weight": style_split.TEAM_WEIGHT, "files": files})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="writes OUT/content, OUT/style, OUT/manifest.json")
    ap.add_argument("--style-train-dir", type=Path, default=None,
                    help="the 300-painting training set (../shared/data/style_train); a fifth is held out")
    ap.add_argument("--sources", type=Path, default=None, help="its SOURCES.md (default: beside the folder)")
    ap.add_argument("--style-dir", type=Path, default=None,
                    help="the team's permissive paintings (../shared/data/style)")
    ap.add_argument("--write-holdout", action="store_true",
                    help=f"rewrite deploy/train/{style_split.HOLDOUT_FILE.name} from the folder (after adding files)")
    ap.add_argument("--no-content", action="store_true", help="rebuild only OUT/style (no apt-get)")
    ap.add_argument("--debs-dir", type=Path, default=None, help="where the .deb files are / go (default OUT/debs)")
    ap.add_argument("--short-side", type=int, default=300)
    ap.add_argument("--min-std", type=float, default=8.0, help="drop tiles flatter than this grey-level std")
    ap.add_argument("--content-max-scale", type=int, default=3, help="tiles at 2..N x short side (content)")
    args = ap.parse_args(argv)

    out: Path = args.out
    content_dir, style_dir = out / "content", out / "style"
    for d in (style_dir,) if args.no_content else (content_dir, style_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    manifest_path = out / "manifest.json"
    manifest: dict = {"short_side": args.short_side, "content": [], "style": [], "held_out": {}}
    if args.no_content and manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        manifest["content"], manifest["held_out"] = old.get("content", []), old.get("held_out", {})
    if not args.no_content:
        build_content(args, content_dir, manifest)

    sources = args.sources or (args.style_train_dir.parent / "SOURCES.md" if args.style_train_dir else None)
    manifest["style"] = build_style(style_dir, args.style_train_dir, sources, args.style_dir, args.short_side,
                                    args.min_std, args.write_holdout)
    manifest["held_out"]["style_train"] = [r["path"] for r in manifest["style"] if r.get("held_out")]
    manifest["held_out"]["style_excluded"] = list(STYLE_EXCLUDE)

    style_files = sorted(style_dir.glob("*.jpg"))
    manifest["counts"] = {
        "content_sources": len(manifest["content"]),
        "content_files": len(list(content_dir.glob("*.jpg"))),
        "style_sources": sum(1 for r in manifest["style"] if r["files"]),
        "style_held_out": len(manifest["held_out"]["style_train"]),
        "style_files": len(style_files),
        "style_bytes": sum(f.stat().st_size for f in style_files),
        "content_by_source": {},
    }
    for c in manifest["content"]:
        k = c["source"]
        manifest["counts"]["content_by_source"][k] = manifest["counts"]["content_by_source"].get(k, 0) + c["files"]
    manifest_path.write_text(json.dumps(manifest, indent=1))
    print(json.dumps(manifest["counts"], indent=1))
    return 0


def build_content(args: argparse.Namespace, content_dir: Path, manifest: dict) -> None:
    """Wallpaper packages and package photos -> OUT/content (see the module docstring)."""
    debs_dir = args.debs_dir or args.out / "debs"
    fetch_debs(debs_dir)
    with tempfile.TemporaryDirectory() as tmp:
        for pkg, rel, f in collect_debs(debs_dir, Path(tmp)):
            with Image.open(f) as im:
                if im.format == "JPEG":  # decode at reduced scale, never below what the tiles need
                    r = args.short_side * args.content_max_scale / min(im.size)
                    if r < 0.5:
                        im.draft("RGB", (int(im.size[0] * r) + 1, int(im.size[1] * r) + 1))
                rgb = to_rgb(im)
            n = emit(rgb, safe_stem(f"{pkg}__{short_rel(rel)}"), content_dir,
                     args.short_side, args.min_std, args.content_max_scale)
            manifest["content"].append({"source": f"deb:{pkg}", "path": rel, "size": list(rgb.size),
                                        "licence": PACKAGES[pkg][0], "files": n})

    import skimage.data
    for name, lic in SKIMAGE_USE.items():
        arr = getattr(skimage.data, name)()
        im = to_rgb(Image.fromarray(np.asarray(arr)))
        n = emit(im, f"skimage__{name}", content_dir, args.short_side, args.min_std, args.content_max_scale)
        manifest["content"].append(
            {"source": "scikit-image", "path": name, "size": list(im.size), "licence": lic, "files": n}
        )
    import sklearn.datasets
    sk_dir = Path(sklearn.datasets.__file__).parent / "images"
    for name, lic in SKLEARN_USE.items():
        im = to_rgb(Image.open(sk_dir / name))
        n = emit(im, f"sklearn__{Path(name).stem}", content_dir, args.short_side, args.min_std, args.content_max_scale)
        manifest["content"].append(
            {"source": "scikit-learn", "path": name, "size": list(im.size), "licence": lic, "files": n}
        )
    manifest["held_out"] = {"scikit-image": list(HOLD_OUT_SKIMAGE), "scikit-learn": list(HOLD_OUT_SKLEARN)}
    written = sum(c["files"] for c in manifest["content"])
    if written != len(list(content_dir.glob("*.jpg"))):
        raise SystemExit("content file names collided; fix the naming")


if __name__ == "__main__":
    raise SystemExit(main())
