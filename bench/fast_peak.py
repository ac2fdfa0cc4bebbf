"""How close the ``fast`` network runs to this machine's convolution peak, and what limits it.

    python bench/fast_peak.py [--sizes 512] [--repeat 7] [--batch 4] [--compile] [--json F]

One torch thread; variants interleaved A/B/A/B after a warm-up; medians of CPU time (see
``bench/common.py``) with wall time beside. The built-in ``multistyle26`` network, style 0,
on the astronaut photo:

- ``eager fp32``: ``CINTransformer.forward`` as trained (the PSNR reference);
- ``eager <auto>``: the same module under the engine's precision (bf16 on a CPU with native
  bf16, via the module's own cast);
- ``engine <auto>`` / ``engine fp32``: ``shared.engine.methods.fast.stylize_tensor``, the
  path a job takes (the ``InferencePlan``: sub-pixel upsampling convolutions, space-to-depth
  last layer);
- ``engine <auto> batch N``: N images of one size and model in one forward, per image;
- ``engine <auto> + torch.compile`` (``--compile``): inductor over the plan, compile time
  reported separately (it is paid once per process and input shape).

FLOPs are the model's useful convolution FLOPs (``torch.utils.flop_counter`` on the eager
module), the same numerator for every variant: zero taps the rewrites add are not counted.
Goal (issue 13): the engine's path at 512 px reaches >= 60 % of the measured conv peak in its
precision, with >= 40 dB PSNR against fp32 eager. A torch.profiler table of the engine's
path says where the rest of the time goes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Goal,
    finish,
    flops_of,
    interleaved,
    machine,
    measure_peak,
    print_machine,
    print_peak,
    psnr,
    table,
)
from bench.engine import auto_name, decode_fit, inputs

GOAL_PEAK_FRACTION = 0.60
PSNR_FLOOR = 40.0


def profile_top(fn: Any, n: int = 10) -> list[dict]:
    """Self CPU time by op over three calls of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_ms_per_call": e.self_cpu_time_total / 3 / 1000, "share": e.self_cpu_time_total / total,
             "calls": e.count // 3} for e in events[:n]]


def bench_size(size: int, repeat: int, batch: int, compile_: bool, peak: dict) -> tuple[list[dict], dict]:
    import torch

    from shared.engine.device import autocast, inference_dtype
    from shared.engine.methods.fast import inference_plan, load_fast_model, stylize_tensor

    auto = inference_dtype(torch.device("cpu"), "auto")
    an = auto_name(auto)
    net = load_fast_model("multistyle26").net
    x = decode_fit(inputs()["content"], size, 4)  # (1, 3, H, W)
    xb = x.expand(batch, -1, -1, -1).contiguous()  # (N, 3, H, W)
    vec = net.style_vector(0)

    def eager(dtype: torch.dtype) -> Any:
        with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
            return net(x.contiguous(), vec).float()

    variants: dict[str, Any] = {
        "eager fp32": lambda: eager(torch.float32),
        f"engine {an}": lambda: stylize_tensor(net, x, vec, auto),
    }
    if auto != torch.float32:
        variants[f"eager {an}"] = lambda: eager(auto)
        variants["engine fp32"] = lambda: stylize_tensor(net, x, vec, torch.float32)
    if batch > 1:
        variants[f"engine {an} batch {batch} (per image)"] = lambda: stylize_tensor(net, xb, vec, auto)
    compile_s = None
    if compile_:
        plan = inference_plan(net, auto, torch.device("cpu"))
        compiled = torch.compile(plan.__call__)
        xc = x.clone().contiguous(memory_format=torch.channels_last)

        def run_compiled() -> Any:
            with torch.no_grad():
                return compiled(xc, vec.clone())

        t = time.perf_counter()
        run_compiled()
        compile_s = time.perf_counter() - t
        variants[f"engine {an} + torch.compile"] = run_compiled
    med, outs = interleaved(variants, repeat)
    flops = flops_of(lambda: eager(torch.float32))
    ref = outs["eager fp32"]
    rows = []
    for name, m in med.items():
        per = batch if "batch" in name else 1
        dt = "fp32" if "fp32" in name else an
        gflops = flops * per / m["cpu_s"] / 1e9
        out = outs[name][:1] if per > 1 else outs[name]
        rows.append({"size": size, "variant": name, "dtype": dt, "wall_s": m["wall_s"] / per, "cpu_s": m["cpu_s"] / per,
                     "gflop": flops / 1e9, "gflops": gflops,
                     "peak_frac": gflops / peak["float32" if dt == "fp32" else "bfloat16"]["conv_gflops"],
                     "psnr_db": None if name == "eager fp32" else psnr(out, ref),
                     "vs_eager_fp32": med["eager fp32"]["cpu_s"] / (m["cpu_s"] / per)})
    extra = {"compile_s": compile_s, "profile": profile_top(lambda: stylize_tensor(net, x, vec, auto))}
    return rows, extra


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="512")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--compile", action="store_true", help="also torch.compile the plan (~30-60 s of compiling)")
    p.add_argument("--quick", action="store_true", help="256 px, 3 repeats")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sizes = [256] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 3 if args.quick else args.repeat
    report: dict[str, Any] = {"machine": machine(), "settings": vars(args) | {"json": str(args.json)}}
    print_machine(report["machine"])
    peak = report["peak"] = measure_peak()
    print_peak(peak)
    rows, extras = [], {}
    for size in sizes:
        r, extras[size] = bench_size(size, repeat, args.batch, args.compile, peak)
        rows += r
    report["rows"], report["extras"] = rows, extras
    print()
    table(rows, [("size", "px", "d"), ("variant", "variant", ""), ("wall_s", "wall s", ".4f"),
                 ("cpu_s", "CPU s", ".4f"), ("gflop", "GFLOP", ".2f"), ("gflops", "GFLOP/s", ".0f"),
                 ("peak_frac", "of conv peak", ".0%"),
                 ("vs_eager_fp32", "x eager fp32", ".2f"), ("psnr_db", "PSNR dB", ".1f")])
    for size, ex in extras.items():
        if ex["compile_s"] is not None:
            print(f"{size} px: torch.compile took {ex['compile_s']:.1f} s (once per process and shape)")
        print(f"\n{size} px, engine path, top ops by self CPU time:")
        table(ex["profile"], [("op", "op", ""), ("self_ms_per_call", "ms/forward", ".2f"), ("share", "share", ".0%"),
                              ("calls", "calls/forward", "d")])
    goals = []
    an = auto_name(__import__("shared.engine.device", fromlist=["x"]).inference_dtype(torch.device("cpu"), "auto"))
    for r in rows:
        if r["size"] == 512 and r["variant"] == f"engine {an}":
            p = peak["float32" if r["dtype"] == "fp32" else "bfloat16"]["conv_gflops"]
            goals.append(Goal("fast 512 px engine path, fraction of conv peak", r["peak_frac"], GOAL_PEAK_FRACTION,
                              note=f"{r['dtype']} peak {p:.0f} GFLOP/s"))
        if r["psnr_db"] is not None and "engine" in r["variant"]:
            goals.append(Goal(f"fast {r['size']} {r['variant']} PSNR vs fp32 eager", r["psnr_db"], PSNR_FLOOR,
                              unit=" dB"))
    return finish(report, goals, args.json)


if __name__ == "__main__":
    sys.exit(main())
