"""The AdaIN style split and sampling weights (deploy/train/style_split.py, issue 14)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy" / "train"))

import style_split  # noqa: E402

SOURCES_SNIPPET = """
## style/
| file | px | bytes | source | artwork | status |
|---|---|---|---|---|---|
| udnie.jpg | 512x512 | 1 | x | Picabia | OK |

## style_train/  (AdaIN decoder training set)
| file | px | bytes | source (repo `path`) | artist (death) | work | status |
|---|---|---|---|---|---|---|
| a_deer.jpg | 1024x698 | 1 | r `p` | Carl Frederik Aagaard (d. 1895) | Deer beside a Lake, 1888 | OK |
| b_harbour.jpg | 1024x786 | 1 | r `p` | Paolo Anesi (d. 1773) | Harbour Scene, XVIII century | OK |
| c_landscape.jpg | 1024x788 | 1 | r `p` | Etienne Allegrain (d. 1736) | Landscape, second half of XVII century | OK |
| d_portrait.jpg | 737x1024 | 1 | r `p` | attributed to Someone (d. c. 1626) | Portrait of a Man | OK |
"""


def test_the_committed_holdout_list_is_the_hash_rule() -> None:
    # given the held-out list committed beside the data script
    held = style_split.read_holdout()
    # expect about a fifth of the 300 paintings, sorted, unique, each held out by its name's hash
    assert 45 <= len(held) <= 75
    assert held == sorted(set(held))
    assert all(style_split.held_out(name) for name in held)


def test_split_is_stable_and_independent_of_the_other_files() -> None:
    # given a set of names, and the same set with more names added
    names = [f"painting_{i:03d}.jpg" for i in range(200)]
    train, held = style_split.split(names)
    _, held_more = style_split.split(names + [f"extra_{i}.jpg" for i in range(50)])
    # expect a disjoint cover, about a fifth held out, and no painting changing sides
    assert sorted(train + held) == sorted(names) and not set(train) & set(held)
    assert 25 <= len(held) <= 55
    assert set(held) == {n for n in held_more if n.startswith("painting_")}


def test_sources_table_gives_each_work_a_year() -> None:
    # given a SOURCES.md-like text with two tables
    meta = style_split.parse_sources(SOURCES_SNIPPET)
    # expect only the style_train rows, with the year, the century, or the death year minus 10
    assert set(meta) == {"a_deer.jpg", "b_harbour.jpg", "c_landscape.jpg", "d_portrait.jpg"}
    assert [meta[n].year for n in sorted(meta)] == [1888, 1750, 1650, 1616]


def test_modern_textured_paintings_weigh_most() -> None:
    # given four paintings: old/modern x smooth/textured
    textures = {"old_smooth": 1.0, "old_rough": 9.0, "new_smooth": 2.0, "new_rough": 12.0}
    years = {"old_smooth": 1650, "old_rough": 1700, "new_smooth": 1880, "new_rough": 1905}
    # when weighted
    w = style_split.weights(textures, years)
    # expect modern above old at equal texture rank, textured above smooth, within 0.5..3
    assert w["new_rough"] > w["new_smooth"] > w["old_smooth"] and w["new_rough"] > w["old_rough"] > w["old_smooth"]
    assert min(w.values()) >= 0.5 and max(w.values()) <= 3.0
    assert [style_split.views(x) for x in (0.5, 1.0, 3.0)] == [1, 2, 6]


def test_texture_score_ranks_brushwork_above_a_smooth_gradient() -> None:
    # given a smooth gradient and a field of short strokes
    _, xx = np.mgrid[0:300, 0:400]
    smooth = Image.fromarray(np.stack([xx * 255 // 400] * 3, -1).astype(np.uint8))
    rng = np.random.default_rng(0)
    rough = Image.fromarray(rng.integers(0, 255, (75, 100, 3), dtype=np.uint8)).resize((400, 300), Image.NEAREST)
    # expect the statistic to tell them apart by far
    assert style_split.texture_score(rough) > 10 * style_split.texture_score(smooth)
