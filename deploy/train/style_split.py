"""Which style paintings the AdaIN decoder trains on, which it never sees, and how often each is drawn.

**Split.** A painting is held out when ``sha256(file name) mod 5 == 0``: about a fifth, decided
by its name alone, so adding or removing other files never moves a painting between the two
sets. The held-out names are committed as ``adain_style_holdout.txt`` beside this file (the
model card's evidence); ``prepare_adain_data.py`` refuses to build when the folder and that
list disagree, and ``bench/quality.py`` measures on those paintings only.

**Weights.** Users ask for painterly styles, but most of ``style_train/`` is 17th-19th
century realism with smooth, glazed surfaces, which teaches the decoder little texture. Each
training painting gets a sampling weight from two things:

- its date (``SOURCES.md``: the work's year, else its century, else the artist's death year
  minus 10): *modern* means painted in 1860 or later (Impressionism onwards); x2;
- a measured texture statistic: the mean absolute Laplacian of the grey image at a 256 px
  short side (after a sigma 0.7 blur that ignores JPEG noise). It ranks Van Gogh, Kandinsky,
  Klee, Delaunay and the woodcuts at the top and the smooth portraits at the bottom; its
  percentile ``t`` among the training paintings gives a factor ``0.5 + t`` (0.5 to 1.5).

``weight = (2 if modern else 1) * (0.5 + t)``, 0.5 to 3. The team's permissive paintings
(``../shared/data/style``) get the top weight, 3. A painting's weight becomes its number of
distinct views in the training folder (``round(2 * weight)``, 1 to 6: the whole painting and
tiles at 2x and 3x its short side), since the trainer draws files uniformly; that way the
weighting also works for datasets uploaded to the farm, which are plain folders of images.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HOLDOUT_FILE = Path(__file__).with_name("adain_style_holdout.txt")
HOLDOUT_MODULUS = 5
MODERN_YEAR = 1860
MODERN_FACTOR = 2.0
TEAM_WEIGHT = 3.0
VIEWS_PER_WEIGHT = 2
TEXTURE_SHORT_SIDE = 256
_ROMAN = {"XV": 1450, "XVI": 1550, "XVII": 1650, "XVIII": 1750, "XIX": 1850, "XX": 1920}


def held_out(name: str) -> bool:
    """True for the fifth of the paintings that training never sees (by file name only)."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16) % HOLDOUT_MODULUS == 0


def split(names: list[str]) -> tuple[list[str], list[str]]:
    """(train, held out), each sorted."""
    names = sorted(names)
    return [n for n in names if not held_out(n)], [n for n in names if held_out(n)]


def read_holdout(path: Path = HOLDOUT_FILE) -> list[str]:
    """The committed held-out file names (comments and blank lines skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def write_holdout(held: list[str], total: int, path: Path = HOLDOUT_FILE) -> None:
    header = [
        "# AdaIN style paintings held out from decoder training (../shared/data/style_train/).",
        f"# Rule: sha256(file name) mod {HOLDOUT_MODULUS} == 0 (deploy/train/style_split.py).",
        f"# {len(held)} of {total} files. Training never sees them; bench/quality.py measures on them.",
    ]
    path.write_text("\n".join(header + sorted(held)) + "\n", encoding="utf-8")


# --- metadata ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Painting:
    name: str
    artist: str
    death: int | None
    work: str

    @property
    def year(self) -> int | None:
        return work_year(self.work, self.death)


def parse_sources(text: str, section: str = "style_train/") -> dict[str, Painting]:
    """The rows of SOURCES.md's ``section`` table: file -> artist, death year, work."""
    out: dict[str, Painting] = {}
    in_section = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_section = line[3:].strip().startswith(section)
            continue
        if not in_section or not line.startswith("| ") or line.startswith(("| file", "|---")):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 7 or not cells[0].lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        death = re.search(r"d\. (?:c\. )?(\d{4})", cells[4])
        out[cells[0]] = Painting(cells[0], cells[4], int(death.group(1)) if death else None, cells[5])
    return out


def work_year(work: str, death: int | None) -> int | None:
    """Year a work was made: the first 4-digit year of its title line, else its century
    ("XVIII century" -> 1750), else ten years before the artist's death."""
    years = re.findall(r"\b(1[2-9]\d\d)\b", work)
    if years:
        return int(years[0])
    century = re.search(r"\b(XV|XVI|XVII|XVIII|XIX|XX)\s+century", work)
    if century:
        return _ROMAN[century.group(1)]
    return death - 10 if death else None


# --- texture and weights --------------------------------------------------------------------------


def texture_score(img: Image.Image) -> float:
    """Mean |Laplacian| of the grey image at a 256 px short side, after a sigma 0.7 blur."""
    from scipy import ndimage

    grey = img.convert("L")
    w, h = grey.size
    s = TEXTURE_SHORT_SIDE / min(w, h)
    grey = grey.resize((max(TEXTURE_SHORT_SIDE, round(w * s)), max(TEXTURE_SHORT_SIDE, round(h * s))),
                       Image.Resampling.LANCZOS)
    y = np.asarray(grey, dtype=np.float64)
    return float(np.abs(ndimage.laplace(ndimage.gaussian_filter(y, 0.7))).mean())


def weights(textures: dict[str, float], years: dict[str, int | None]) -> dict[str, float]:
    """Sampling weight of each training painting (see the module docstring)."""
    names = sorted(textures)
    order = np.argsort(np.argsort([textures[n] for n in names], kind="stable"), kind="stable")
    pct = {n: float(r) / max(1, len(names) - 1) for n, r in zip(names, order, strict=True)}
    out = {}
    for n in names:
        modern = (years.get(n) or 0) >= MODERN_YEAR
        out[n] = (MODERN_FACTOR if modern else 1.0) * (0.5 + pct[n])
    return out


def views(weight: float) -> int:
    """Distinct views (files) of a painting in the training folder for its weight."""
    return max(1, round(VIEWS_PER_WEIGHT * weight))
