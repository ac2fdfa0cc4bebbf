"""What every benchmark in ``bench/`` shares: the machine's description, its measured peak,
interleaved A/B timing with medians, goals and the report.

Timing on a shared machine: each sample records the wall time and the process CPU time of
one call. With one torch thread an op runs on the calling thread, so CPU time is the work
this process did, without the time the scheduler gave to other processes; cache and memory
bandwidth stolen by neighbours still show. Fractions of the peak are computed from CPU time
against a peak measured the same way in the same run; the load average is printed beside
every table.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_info() -> dict[str, Any]:
    """CPU model and the vector flags that decide fp32/bf16 speed (from /proc/cpuinfo)."""
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "flags": {f: f in flags for f in _FLAGS}}


def machine(precision: str = "auto") -> dict[str, Any]:
    """CPU flags, torch build, threads, the engine's chosen precision, load average now; and the
    engine's process set-up as a CPU worker has it (the malloc policy that ``pick_device``
    applies, ``shared.engine.host_memory``), applied here before anything is timed, for ours and the
    references alike (they share the process)."""
    import torch

    from shared.engine.device import cpu_has_native_bf16, inference_dtype
    from shared.engine.host_memory import keep_freed_memory

    return {
        "keeps_freed_memory": keep_freed_memory(),
        "blas_threads": _one_blas_thread(),
        "cpu": cpu_info(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onednn_native_bf16": cpu_has_native_bf16(),
        "engine_precision": str(inference_dtype(torch.device("cpu"), precision)).removeprefix("torch."),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _one_blas_thread() -> int | None:
    """Hold numpy's and scipy's BLAS (OpenBLAS; the L-BFGS-B of Gatys runs on it) to one thread,
    like torch: one thread for everything, ours and the references (a farm's worker gets the same
    from ``OMP_NUM_THREADS=1``). None when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    import numpy  # noqa: F401
    import scipy.optimize  # noqa: F401  (loads scipy's own OpenBLAS, so the limit covers it)

    global _blas_limit
    _blas_limit = threadpool_limits(1, user_api="blas")
    return 1


_blas_limit: Any = None  # kept alive: the limit lasts while the object does


def print_machine(m: dict[str, Any]) -> None:
    flags = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in m["cpu"]["flags"].items())
    print(f"CPU: {m['cpu']['model']} ({m['cpu']['cores']} cores) | {flags}")
    print(f"torch {m['torch']}, {m['torch_threads']} thread(s), oneDNN native bf16: {m['onednn_native_bf16']}, "
          f"engine precision (auto): {m['engine_precision']} | load average {m['loadavg']}")
    print(f"malloc keeps freed memory for reuse (shared.engine.host_memory): {m.get('keeps_freed_memory')}; "
          f"BLAS threads: {m.get('blas_threads') or 'not limited (no threadpoolctl)'}")


# --- timing --------------------------------------------------------------------------------


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def median(self) -> dict[str, float]:
        return {"wall_s": statistics.median(self.wall), "cpu_s": statistics.median(self.cpu), "n": len(self.wall)}


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def interleaved(variants: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1) -> tuple[dict, dict]:
    """Run every variant ``warmup`` times, then A, B, A, B ... ``repeat`` rounds.

    Returns ({name: {wall_s, cpu_s, n}} medians, {name: last output}).
    """
    outs: dict[str, Any] = {}
    for name, fn in variants.items():
        for _ in range(warmup):
            outs[name] = fn()
    samples = {name: Samples() for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            w, c, outs[name] = timed(fn)
            samples[name].wall.append(w)
            samples[name].cpu.append(c)
    return {name: s.median() for name, s in samples.items()}, outs


# --- the machine's peak ---------------------------------------------------------------------


def measure_peak(repeat: int = 5) -> dict[str, dict[str, float]]:
    """GFLOP/s of a large 3x3 convolution (256->256 channels at 64x64, channels_last, the shape
    of VGG's conv3/conv4 layers, where oneDNN is at its best) and a 1024^3 matmul, fp32 and bf16,
    on the current thread count. CPU-time and wall-time figures, median of ``repeat``."""
    import torch
    import torch.nn.functional as F

    out: dict[str, dict[str, float]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        x = torch.randn(1, 256, 66, 66).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 256, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
        a, b = torch.randn(1024, 1024).to(dtype), torch.randn(1024, 1024).to(dtype)
        conv_flops = 2 * 256 * 256 * 9 * 64 * 64
        mm_flops = 2 * 1024**3
        with torch.inference_mode():
            med, _ = interleaved({"conv": lambda x=x, w=w: F.conv2d(x, w), "mm": lambda a=a, b=b: a @ b}, repeat)
        out[name] = {
            "conv_gflops": conv_flops / med["conv"]["cpu_s"] / 1e9,
            "conv_gflops_wall": conv_flops / med["conv"]["wall_s"] / 1e9,
            "matmul_gflops": mm_flops / med["mm"]["cpu_s"] / 1e9,
            "matmul_gflops_wall": mm_flops / med["mm"]["wall_s"] / 1e9,
        }
    return out


def print_peak(peak: dict[str, dict[str, float]]) -> None:
    for dt, p in peak.items():
        print(f"measured peak {dt:8s}: conv {p['conv_gflops']:.0f} GFLOP/s, matmul {p['matmul_gflops']:.0f} GFLOP/s "
              f"(CPU time; wall {p['conv_gflops_wall']:.0f} / {p['matmul_gflops_wall']:.0f})")


def flops_of(fn: Callable[[], Any]) -> int:
    """FLOPs of one call by ``torch.utils.flop_counter`` (convolutions and matmuls, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB of two image tensors in [0, 1]."""
    import math

    import torch.nn.functional as F

    mse = float(F.mse_loss(a.float(), b.float()))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


# --- goals and the report --------------------------------------------------------------------


@dataclass
class Goal:
    name: str
    measured: float | None
    target: float
    higher_is_better: bool = True
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool:
        if self.measured is None:
            return False
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        got = "n/a" if self.measured is None else f"{self.measured:.3g}"
        mark = "MET   " if self.met else "MISSED"
        note = f"  [{self.note}]" if self.note else ""
        return f"{mark} {self.name}: {got}{self.unit} (goal {op} {self.target:g}{self.unit}){note}"


def finish(report: dict[str, Any], goals: list[Goal], json_path: Path | None) -> int:
    """Print the goals, write the JSON, return the exit status (1 when a goal is missed)."""
    report["goals"] = [{"name": g.name, "measured": g.measured, "target": g.target, "met": g.met,
                        "higher_is_better": g.higher_is_better, "unit": g.unit, "note": g.note} for g in goals]
    report.setdefault("machine", {})["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    for g in goals:
        print(g.line())
    print(f"load average at the end: {report['machine']['loadavg_end']}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {json_path}")
    return 0 if all(g.met for g in goals) else 1


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """Print ``rows`` with ``columns`` = [(key, header, format)]; missing values print as '-'."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        line = []
        for key, _, fmt in columns:
            v = r.get(key)
            line.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for i, c in enumerate(cells):
        print("  ".join(s.rjust(widths[j]) if j else s.ljust(widths[j]) for j, s in enumerate(c)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
