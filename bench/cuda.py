"""The engine on a CUDA GPU: the measured peak, each method in fp32 and the engine's precision.

    python bench/cuda.py [--quick] [--json F]        (part of bench/gpu.sh; needs a CUDA GPU)

Timing: ``torch.cuda.synchronize()`` around each call, medians of interleaved runs after a
warm-up; the first call of each variant is reported apart (cuDNN autotuning in benchmark
mode, ``torch.compile`` nothing: the engine does not compile). Rows:

- peak: bf16 and fp16 matmul (8192^3) and a 3x3 256->256 convolution (batch 8, 128x128,
  channels_last) in bf16, fp16 and fp32 (TF32 convolutions, PyTorch's default);
- ``fast`` multistyle26 at 512/1024/2048 px: the eager module in fp32 (the PSNR reference) and
  under bf16 autocast, the engine's ``stylize_tensor`` (``InferencePlan``, channels_last) in
  fp32 and its precision, and a batch of 8 same-model 512 px images (per image);
- ``adain`` 512/1024 px and ``optimize`` 512 px (100 L-BFGS iterations, per iteration and per
  evaluation) through ``run_engine``, the whole job (decode, host-to-device, the networks,
  the image back); ``optimize`` twice, interleaved: the GPU's projected L-BFGS on the device
  and the CPU's L-BFGS-B on the host (``gatys.lbfgs_on_device``).

Goals: every engine row >= 40 dB PSNR against fp32 eager; the device optimizer's final loss
within 2 % of L-BFGS-B's; exit 1 otherwise or without a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Goal, finish, flops_of, machine, psnr, table
from bench.engine import decode_fit, inputs


def timed_cuda(variants: dict[str, Any], repeat: int) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    import torch

    first: dict[str, float] = {}
    outs: dict[str, Any] = {}
    for name, fn in variants.items():
        torch.cuda.synchronize()
        t = time.perf_counter()
        outs[name] = fn()
        torch.cuda.synchronize()
        first[name] = time.perf_counter() - t
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            torch.cuda.synchronize()
            t = time.perf_counter()
            outs[name] = fn()
            torch.cuda.synchronize()
            samples[name].append(time.perf_counter() - t)
    return {n: {"s": statistics.median(v), "first_s": first[n]} for n, v in samples.items()}, outs


def peak() -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    out = {}
    for dt, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16"), (torch.float32, "fp32/tf32")):
        a = torch.randn(8192, 8192, device="cuda", dtype=dt)
        x = torch.randn(8, 256, 130, 130, device="cuda", dtype=dt).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 256, 3, 3, device="cuda", dtype=dt).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            med, _ = timed_cuda({"mm": lambda a=a: a @ a, "conv": lambda x=x, w=w: F.conv2d(x, w)}, 10)
        out[f"matmul {name}"] = 2 * 8192**3 / med["mm"]["s"] / 1e12
        out[f"conv {name}"] = 2 * 256 * 256 * 9 * 128 * 128 * 8 / med["conv"]["s"] / 1e12
    return out


def bench_fast(sizes: list[int], repeat: int, conv_peak: dict[str, float]) -> list[dict]:
    import torch

    from shared.engine.device import inference_dtype
    from shared.engine.methods.fast import load_fast_model, stylize_tensor

    dev = torch.device("cuda")
    auto = inference_dtype(dev, "auto")
    an = str(auto).removeprefix("torch.")
    net = load_fast_model("multistyle26", device=dev).net
    vec = net.style_vector(0)
    rows = []
    for size in sizes:
        x = decode_fit(inputs()["content"], size, 4).to(dev)  # (1, 3, H, W)
        xb = x.expand(8, -1, -1, -1).contiguous()

        def eager(dtype: torch.dtype, x: torch.Tensor = x) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
                return net(x, vec).float()

        variants = {"eager fp32": lambda: eager(torch.float32), f"eager {an} autocast": lambda: eager(auto),
                    "engine fp32": lambda x=x: stylize_tensor(net, x, vec, torch.float32),
                    f"engine {an}": lambda x=x: stylize_tensor(net, x, vec, auto)}
        if size == 512:
            variants[f"engine {an} batch 8 (per image)"] = lambda xb=xb: stylize_tensor(net, xb, vec, auto)
        med, outs = timed_cuda(variants, repeat)
        flops = flops_of(lambda: eager(torch.float32))
        for name, m in med.items():
            per = 8 if "batch" in name else 1
            out = outs[name][:1]
            key = "conv fp32/tf32" if "fp32" in name else f"conv {'bf16' if auto == torch.bfloat16 else 'fp16'}"
            tflops = flops * per / m["s"] / 1e12
            rows.append({"method": "fast", "size": size, "variant": name, "ms": 1000 * m["s"] / per,
                         "first_ms": 1000 * m["first_s"], "tflops": tflops, "peak_frac": tflops / conv_peak[key],
                         "psnr_db": None if name == "eager fp32" else psnr(out, outs["eager fp32"])})
    return rows


def bench_jobs(quick: bool) -> list[dict]:
    import numpy as np
    import torch

    from shared.engine import EngineContext, run_engine
    from shared.jobs.specs import AdainSpec, OptimizeSpec

    data = inputs()
    rows = []

    def job(spec: Any, precision: str) -> Any:
        res = run_engine(spec, EngineContext(read_input=lambda r: data[r], device="cuda", precision=precision))
        return res, torch.from_numpy(np.array(res.image)).permute(2, 0, 1).unsqueeze(0).float() / 255

    for size in [512] if quick else [512, 1024]:
        spec = AdainSpec(content="content", styles=[{"image": "style"}], size=size)
        med, outs = timed_cuda({"fp32": lambda s=spec: job(s, "fp32"), "auto": lambda s=spec: job(s, "auto")}, 5)
        for name in ("fp32", "auto"):
            rows.append({"method": "adain", "size": size, "variant": f"run_engine {outs[name][0].metrics['dtype']} "
                         "(style cached)", "ms": 1000 * med[name]["s"], "first_ms": 1000 * med[name]["first_s"],
                         "psnr_db": None if name == "fp32" else psnr(outs[name][1], outs["fp32"][1])})
    steps = 30 if quick else 100
    spec_o = OptimizeSpec(content="content", styles=[{"image": "style"}], size=512, steps=steps, optimizer="lbfgs")

    def host_lbfgsb() -> Any:  # the CPU's optimizer (SciPy's L-BFGS-B on the host) on the same GPU
        from shared.engine.methods import gatys

        on_device = gatys.lbfgs_on_device
        gatys.lbfgs_on_device = lambda device: False
        try:
            return job(spec_o, "auto")
        finally:
            gatys.lbfgs_on_device = on_device

    med, outs = timed_cuda({"device": lambda: job(spec_o, "auto"), "host": host_lbfgsb}, 1)
    host_loss = outs["host"][0].metrics["loss"]
    for name, label in (("device", "projected L-BFGS on the device"), ("host", "L-BFGS-B on the host")):
        m = outs[name][0].metrics
        evals, total = int(m.get("evaluations", steps)), med[name]["s"]
        rows.append({"method": "optimize", "size": 512, "variant": f"run_engine {m.get('precision')} {label}, "
                     f"{steps} iters", "ms": 1000 * total / steps, "first_ms": None,
                     "per_eval_ms": 1000 * total / evals, "psnr_db": None, "loss_vs_host": m["loss"] / host_loss})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to measure")
        return 1
    from shared.engine.device import pick_device

    pick_device("cuda")  # the engine's CUDA set-up (cuDNN benchmark mode)
    report: dict[str, Any] = {"machine": machine("auto"), "gpu": torch.cuda.get_device_name(0),
                              "capability": torch.cuda.get_device_capability(0)}
    print(f"GPU: {report['gpu']} (sm_{''.join(map(str, report['capability']))}), torch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}, benchmark={torch.backends.cudnn.benchmark}")
    pk = report["peak"] = peak()
    print("measured peak TFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in pk.items()))
    rows = bench_fast([512] if a.quick else [512, 1024, 2048], 5 if a.quick else 20, pk)
    rows += bench_jobs(a.quick)
    report["rows"] = rows
    print()
    table(rows, [("method", "method", ""), ("size", "px", "d"), ("variant", "variant", ""), ("ms", "ms", ".2f"),
                 ("first_ms", "first call ms", ".1f"), ("tflops", "TFLOP/s", ".1f"),
                 ("peak_frac", "of conv peak", ".0%"),
                 ("per_eval_ms", "ms/eval", ".1f"), ("psnr_db", "PSNR dB", ".1f"),
                 ("loss_vs_host", "loss / L-BFGS-B's", ".3f")])
    goals = [Goal(f"{r['method']} {r['size']} {r['variant']} PSNR vs fp32", r["psnr_db"], 40.0, unit=" dB")
             for r in rows if r.get("psnr_db") is not None]
    goals += [Goal(f"{r['method']} {r['size']} {r['variant']}: final loss / L-BFGS-B's", r["loss_vs_host"], 1.02,
                   higher_is_better=False) for r in rows if "on the device" in str(r.get("variant"))]
    return finish(report, goals, a.json)


if __name__ == "__main__":
    sys.exit(main())
