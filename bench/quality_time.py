"""Quality per second of the optimization methods: loss against time, and what reaches a given
loss soonest.

    python bench/quality_time.py [--quick] [--size 512] [--steps 300] [--data ../shared/data] [--out DIR] [--json F]

For one content and style pair (the team's candy painting on the astronaut when
``--data`` has them, else scikit-image's coffee photo), at ``--size``:

- ``reference``: single-scale L-BFGS, ``--steps`` iterations (the engine's defaults). Its
  final loss is the *target*; its whole time is the *budget*.
- ``levels=2``: coarse to fine, ``steps`` iterations at half the side (a quarter of the cost
  each) then ``steps/2`` at full size (``coarse_steps``); with ``--bf16`` where the CPU has
  native bf16 (or on a GPU), the same schedule again with ``precision="bf16"`` (its losses are
  computed under bf16 autocast, within ~1 % of fp32's on the same pixels);
- ``init=adain``: start from the built-in AdaIN decoder's rendering of the same pair, ``steps/2``;
- ``adam``: single-scale Adam, ``--steps`` iterations (the spec's learning rate);
- ``masked`` (two regions, joint): the same reference / ``init=adain`` pair of runs;
- ``reference stopped at 40 %``: the reference's schedule again, cut at the iterations it had
  done at 40 % of its time, so the sheet shows what the cheapest way to that budget looks like
  beside the full run (it reaches 1.05x the final loss there at 512 px, not 1.00x).

Every run is a whole ``run_engine`` job in this process (one torch thread); its progress
reports give the loss of each iteration, stamped with the process CPU time since the job
started (set-up, the AdaIN start and coarse levels included), so a busy shared machine
does not move the figures much; wall time is kept beside. Losses of a coarse level are not
comparable (another image size) and are left out of "time to target".

Goal (issue 13): some strategy reaches the reference's final loss in <= 40 % of the
reference's time. The final images go side by side into ``DIR/sheet.png`` (outside the
repository) to check that the faster one is as good.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Goal, finish, machine, table

GOAL_FRACTION = 0.40


def pair(data: Path | None) -> tuple[dict[str, bytes], str]:
    from PIL import Image
    from skimage import data as sk

    def png(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
        return buf.getvalue()

    out = {"content": png(Image.fromarray(sk.astronaut())), "style2": png(Image.fromarray(sk.coffee()))}
    note = "astronaut x coffee (no --data)"
    if data is not None and (data / "style" / "candy.jpg").is_file():
        out["style"] = png(Image.open(data / "style" / "candy.jpg"))
        if (data / "style" / "udnie.jpg").is_file():
            out["style2"] = png(Image.open(data / "style" / "udnie.jpg"))
        note = f"astronaut x candy ({data})"
    else:
        out["style"] = out["style2"]
    w, h = Image.open(io.BytesIO(out["content"])).size
    left = Image.new("L", (w, h), 0)
    left.paste(255, (0, 0, w // 2, h))
    out["mask"], out["mask_inv"] = png(left), png(Image.eval(left, lambda v: 255 - v))
    return out, note


def run(name: str, spec: Any, data: dict[str, bytes], precision: str = "auto") -> dict[str, Any]:
    from shared.engine import EngineContext, run_engine

    curve: list[tuple[float, float, int, str, float]] = []
    c0, w0 = time.process_time(), time.perf_counter()

    def progress(p: Any) -> None:
        if p.loss is not None:
            curve.append((time.process_time() - c0, time.perf_counter() - w0, p.step, p.stage, float(p.loss)))

    result = run_engine(spec, EngineContext(read_input=lambda r: data[r], progress=progress, precision=precision))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    final_stage = curve[-1][3] if curve else ""
    fine = [(c, w, loss) for c, w, _, stage, loss in curve if stage == final_stage]
    print(f"  {name}: {cpu:.0f} s CPU ({wall:.0f} s wall), final loss {fine[-1][2]:.4g}", flush=True)
    return {"name": name, "cpu_s": cpu, "wall_s": wall, "final_loss": fine[-1][2], "fine_curve": fine,
            "delivered_loss": float(result.metrics.get("loss", float("nan"))), "precision": precision,
            "iterations": result.metrics.get("iterations"), "evaluations": result.metrics.get("evaluations"),
            "image": result.image}


def loss_at(r: dict[str, Any], cpu_s: float) -> float | None:
    """The run's last full-size loss reached within ``cpu_s`` of CPU time (None: none by then)."""
    seen = [loss for c, _, loss in r["fine_curve"] if c <= cpu_s]
    return seen[-1] if seen else None


def time_to(r: dict[str, Any], target: float) -> tuple[float | None, float | None]:
    for c, w, loss in r["fine_curve"]:
        if loss <= target:
            return c, w
    return None, None


def sheet(runs: list[dict[str, Any]], path: Path) -> None:
    from PIL import Image, ImageDraw

    tiles = [r["image"] for r in runs]
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    out = Image.new("RGB", (w * len(tiles), h + 24), "white")
    d = ImageDraw.Draw(out)
    for i, (r, t) in enumerate(zip(runs, tiles, strict=True)):
        out.paste(t, (i * w, 24))
        d.text((i * w + 4, 4), f"{r['name']}: loss {r['final_loss']:.3g}, {r['cpu_s']:.0f}s", fill="black")
    out.save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="256 px, 100 steps")
    p.add_argument("--alt-steps", type=int, default=None, help="iterations of the other strategies (default steps/2)")
    p.add_argument("--no-levels", action="store_true")
    p.add_argument("--no-masked", action="store_true")
    p.add_argument("--masked-only", action="store_true", help="only the masked runs")
    p.add_argument("--no-adam", action="store_true")
    p.add_argument("--no-adain", action="store_true")
    p.add_argument("--no-early-stop", action="store_true",
                   help="skip the reference's schedule cut at 40 %% of its time (the picture of a cheaper stop)")
    p.add_argument("--bf16", action="store_true", help="also the coarse-to-fine schedule in bf16 (native bf16 only)")
    p.add_argument("--data", type=Path, default=None,
                   help="the team's image folder (default: ../shared/data of the checkout or of its parent)")
    p.add_argument("--out", type=Path, default=Path("/tmp/stylefarm-quality-time"))
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    import torch

    from shared.jobs.specs import MaskedSpec, OptimizeSpec

    torch.set_num_threads(1)
    size, steps = (256, 100) if a.quick else (a.size, a.steps)
    half = a.alt_steps or max(1, steps // 2)
    root = Path(__file__).resolve().parents[1]
    found = a.data or next((d for d in (root.parent / "shared" / "data", root.parent.parent / "shared" / "data")
                            if d.is_dir()), None)
    data, note = pair(found if found is not None and found.is_dir() else None)
    report: dict[str, Any] = {"machine": machine(), "pair": note, "size": size, "steps": steps}
    print(f"{note}, {size} px, {steps} steps | load average {report['machine']['loadavg']}")
    base = {"content": "content", "styles": [{"image": "style"}], "size": size}
    from shared.engine.device import cpu_has_native_bf16

    specs: dict[str, tuple[Any, str]] = {"reference L-BFGS": (OptimizeSpec(**base, steps=steps), "auto")}
    if not a.no_levels:
        c2f = OptimizeSpec(**base, steps=half, levels=2, coarse_steps=steps)
        specs[f"L-BFGS levels=2, {steps} coarse + {half}"] = (c2f, "auto")
        if a.bf16 and cpu_has_native_bf16():
            specs[f"L-BFGS levels=2 bf16, {steps} coarse + {half}"] = (c2f, "bf16")
    if not a.no_adain:
        specs[f"L-BFGS init=adain, {half}"] = (OptimizeSpec(**base, steps=half, init="adain"), "auto")
    if not a.no_adam:
        specs[f"Adam, {steps}"] = (OptimizeSpec(**base, steps=steps, optimizer="adam"), "auto")
    regions = [{"style": {"image": "style"}, "mask": "mask"}, {"style": {"image": "style2"}, "mask": "mask_inv"}]
    masked: dict[str, tuple[Any, str]] = {} if a.no_masked else {
        "masked reference L-BFGS": (MaskedSpec(content="content", regions=regions, size=size, steps=steps,
                                               mode="joint"), "auto"),
        f"masked levels=2, {steps} coarse + {half}": (MaskedSpec(content="content", regions=regions, size=size,
                                                                  steps=half, levels=2, coarse_steps=steps,
                                                                  mode="joint"), "auto"),
    }
    if a.masked_only:
        specs = {}
    partial = a.out / "partial.jsonl"  # each finished run at once: a long run cut short keeps what it measured
    a.out.mkdir(parents=True, exist_ok=True)
    partial.write_text("")
    runs, mruns = [], []
    for group, todo in ((runs, specs), (mruns, masked)):
        for n, (s, prec) in todo.items():
            group.append(run(n, s, data, prec))
            with partial.open("a") as fh:
                fh.write(json.dumps({k: v for k, v in group[-1].items() if k != "image"}) + "\n")
        if group is runs and runs and not a.no_early_stop:
            # the cheaper stop: the reference's own schedule cut at the goal's budget, so its
            # picture can be set beside the full run's (the loss is the reference curve's there)
            ref_run = runs[0]
            k = sum(1 for c, _, _ in ref_run["fine_curve"] if c <= GOAL_FRACTION * ref_run["cpu_s"])
            if 0 < k < steps:
                group.append(run(f"reference stopped at {GOAL_FRACTION:.0%} of its time, {k}",
                                 OptimizeSpec(**base, steps=k), data))
    rows, goals = [], []
    for group, rs in (("optimize", runs), ("masked", mruns)):
        if not rs:
            continue
        ref = rs[0]
        best = None
        for r in rs:
            c, _ = time_to(r, ref["final_loss"])
            row = {"group": group, "run": r["name"], "cpu_s": r["cpu_s"], "wall_s": r["wall_s"],
                   "final_loss": r["final_loss"], "loss_vs_ref": r["final_loss"] / ref["final_loss"],
                   "to_target_cpu_s": c, "to_target_frac": None if c is None else c / ref["cpu_s"],
                   "loss_at_budget_vs_ref": (None if (b := loss_at(r, GOAL_FRACTION * ref["cpu_s"])) is None
                                             else b / ref["final_loss"]),
                   "evaluations": r["evaluations"]}
            rows.append(row)
            if r is not ref and c is not None and (best is None or c < best[1]):
                best = (r["name"], c)
        goals.append(Goal(f"{group}: reference's final loss reached in a fraction of its time (best: "
                          f"{best[0] if best else 'none reached it'})",
                          None if best is None else best[1] / ref["cpu_s"], GOAL_FRACTION, higher_is_better=False))
    a.out.mkdir(parents=True, exist_ok=True)
    sheet(runs + mruns, a.out / "sheet.png")
    for r in runs + mruns:
        r["image"].save(a.out / f"{r['name'].split(',')[0].replace(' ', '_').replace('=', '-')}.png")
    report["rows"] = rows
    report["curves"] = {r["name"]: r["fine_curve"] for r in runs + mruns}
    print()
    table(rows, [("group", "", ""), ("run", "run", ""), ("cpu_s", "CPU s", ".0f"), ("wall_s", "wall s", ".0f"),
                 ("evaluations", "evals", ""), ("final_loss", "final loss", ".4g"),
                 ("loss_vs_ref", "x ref loss", ".3f"),
                 ("to_target_cpu_s", "to ref loss, CPU s", ".0f"), ("to_target_frac", "of ref time", ".0%"),
                 ("loss_at_budget_vs_ref", "x ref loss at 40 % of its time", ".3f")])
    print(f"side by side: {a.out / 'sheet.png'}")
    return finish(report, goals, a.json)


if __name__ == "__main__":
    sys.exit(main())
