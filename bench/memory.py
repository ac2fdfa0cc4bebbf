"""Peak resident memory per method and size, and the largest size each fits in a worker's memory.

    python bench/memory.py [--quick] [--limit-gib 16] [--json F]

Every measurement is one job through ``run_engine`` in a FRESH process (one torch thread),
so its peak (``VmHWM``, the high-water mark of the process's own resident set) belongs to
that job alone; ``base`` is the same process's resident set just before the job (Python,
torch, the networks loaded). The job's own memory, ``peak - base``, grows with the pixel
count: the largest size within ``--limit-gib`` is extrapolated from a least-squares line
``peak = a + b * pixels`` through the measured sizes (said in the table: *extrapolated*,
not rendered). Gatys jobs run 3 iterations here. Their L-BFGS-B history (scipy's workspace,
``gatys.LBFGS_HISTORY`` pairs of two image-sized float64 vectors, allocated zeroed up front
and so resident only as a long run fills it) is added analytically.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_info, finish, table
from shared.engine.methods.gatys import LBFGS_HISTORY  # L-BFGS-B correction pairs (scipy, float64)

SIZES = {"fast": [256, 512, 1024, 2048], "adain": [256, 512, 1024], "optimize": [256, 512, 768],
         "masked": [256, 512]}
QUICK = {"fast": [256, 512], "adain": [256, 512], "optimize": [256, 384], "masked": [256]}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(method: str, size: int, folder: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from shared.engine import EngineContext, run_engine
    from shared.jobs.specs import AdainSpec, FastSpec, MaskedSpec, OptimizeSpec

    f = Path(folder)
    data = {p.name: p.read_bytes() for p in f.iterdir()}
    ctx = EngineContext(read_input=lambda ref: data[ref])
    if method == "fast":
        spec: Any = FastSpec(content="content.png", size=size, style=3)
        run_engine(FastSpec(content="content.png", size=64, style=3), ctx)  # load the network first
    elif method == "adain":
        spec = AdainSpec(content="content.png", styles=[{"image": "style.png"}], size=size)
        run_engine(AdainSpec(content="content.png", styles=[{"image": "style.png"}], size=64, style_size=64), ctx)
    elif method == "optimize":
        spec = OptimizeSpec(content="content.png", styles=[{"image": "style.png"}], size=size, steps=3)
        run_engine(OptimizeSpec(content="content.png", styles=[{"image": "style.png"}], size=64, steps=1), ctx)
    else:
        spec = MaskedSpec(content="content.png", size=size, steps=3, mode="joint",
                          regions=[{"style": {"image": "style.png"}, "mask": "mask.png"},
                                   {"style": {"image": "style2.png"}, "mask": "mask_inv.png"}])
        run_engine(OptimizeSpec(content="content.png", styles=[{"image": "style.png"}], size=64, steps=1), ctx)
    base = _rss_kib("VmRSS")
    result = run_engine(spec, ctx)
    w, h = result.image.size
    return {"base_mib": base / 1024, "peak_mib": _rss_kib("VmHWM") / 1024, "width": w, "height": h}


def inputs(folder: Path) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    big = Image.fromarray(data.astronaut()).resize((2048, 2048), Image.Resampling.LANCZOS)  # room for 2048 px jobs
    big.save(folder / "content.png")
    Image.fromarray(data.coffee()).save(folder / "style.png")
    Image.fromarray(data.chelsea()).save(folder / "style2.png")
    m = np.zeros((2048, 2048), np.uint8)
    m[:, :1024] = 255
    Image.fromarray(m, "L").save(folder / "mask.png")
    Image.fromarray(255 - m, "L").save(folder / "mask_inv.png")


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    n = len(xs)
    if n == 1:
        return ys[0], 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--limit-gib", type=float, default=16.0)
    p.add_argument("--methods", default="fast,adain,optimize,masked")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps(child(a.child[0], int(a.child[1]), a.child[2])), flush=True)
        return 0
    from shared.jobs.specs import MAX_SIDE

    report: dict[str, Any] = {"machine": {"cpu": cpu_info(), "loadavg": [round(x, 2) for x in os.getloadavg()]},
                              "limit_gib": a.limit_gib}
    print(f"CPU {report['machine']['cpu']['model']}, load average {report['machine']['loadavg']}")
    folder = Path(tempfile.mkdtemp(prefix="stylefarm-mem-"))
    inputs(folder)
    rows, fits = [], []
    for method in a.methods.split(","):
        points = []
        for size in (QUICK if a.quick else SIZES)[method]:
            proc = subprocess.run([sys.executable, __file__, "--child", method, str(size), str(folder)],
                                  capture_output=True, text=True, timeout=1800)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{method} {size}: failed: {(proc.stderr or proc.stdout)[-400:]}")
                continue
            r = json.loads(line[7:])
            pixels = r["width"] * r["height"]
            history = 0.0
            if method in ("optimize", "masked"):
                history = LBFGS_HISTORY * 2 * 3 * pixels * 8 / 2**20  # MiB of float64 pairs, filled by a long run
            row = {"method": method, "size": size, "wxh": f"{r['width']}x{r['height']}", "base_mib": r["base_mib"],
                   "peak_mib": r["peak_mib"], "job_mib": r["peak_mib"] - r["base_mib"], "history_mib": history,
                   "peak_full_mib": r["peak_mib"] + history}
            rows.append(row)
            points.append((pixels, row["peak_full_mib"]))
            print(f"  {method} {size}: peak {row['peak_mib']:.0f} MiB (base {row['base_mib']:.0f})", flush=True)
        if len(points) >= 2:
            a0, b = fit_line([x for x, _ in points], [y for _, y in points])
            limit = a.limit_gib * 1024
            side = int(math.sqrt(max(0.0, (limit - a0) / b))) if b > 0 else MAX_SIDE
            fits.append({"method": method, "fixed_mib": a0, "mib_per_mpix": b * 1e6,
                         "largest_square_side": min(side, MAX_SIDE), "capped_by_max_side": side >= MAX_SIDE,
                         "measured_up_to": max(int(math.sqrt(x)) for x, _ in points),
                         "extrapolated": side > max(int(math.sqrt(x)) for x, _ in points)})
    report["rows"], report["fits"] = rows, fits
    print()
    table(rows, [("method", "method", ""), ("size", "size", "d"), ("wxh", "output", ""),
                 ("base_mib", "base MiB", ".0f"), ("peak_mib", "peak MiB", ".0f"), ("job_mib", "job MiB", ".0f"),
                 ("history_mib", "+L-BFGS history", ".0f"), ("peak_full_mib", "peak, full run", ".0f")])
    print()
    for f in fits:
        f["label"] = ("max side (capped by MAX_SIDE)" if f["capped_by_max_side"] else
                      ("EXTRAPOLATED" if f["extrapolated"] else "measured"))
    table(fits, [("method", "method", ""), ("fixed_mib", "fixed MiB", ".0f"),
                 ("mib_per_mpix", "MiB per Mpixel", ".0f"), ("measured_up_to", "measured to px", "d"),
                 ("largest_square_side", f"largest side in {a.limit_gib:g} GiB", "d"), ("label", "", "")])
    # no speed goal here: the figures are for operators' memory limits (docs/performance.md)
    return finish(report, [], a.json)


if __name__ == "__main__":
    sys.exit(main())
