"""The cost model: what a job will cost the farm, estimated from its spec before it is queued.

The unit is the **reference GPU-second**: one second of one reference GPU worker (an
A100/H100-class GPU running the engine's default fp32 path, where cuDNN runs the
convolutions in TF32). Each method's cost function (named by its entry in
``shared.jobs.methods.REGISTRY``) adds up the networks the engine will run for that spec:

- ``optimize`` / ``masked``: per resolution level, ``steps x evaluations-per-step`` VGG19
  forward+backward passes at the level's size, plus the content and style targets (forward
  only); ``masked`` in ``composite`` mode renders once per region. The VGG work scales with
  the deepest layer asked for (``vgg_fraction``).
- ``fast``: one CIN transformer forward; ``adain``: the encoder on the content and each
  style, one decoder forward.
- ``train-fast`` / ``train-adain``: ``steps x batch_size`` training steps at the crop size.
- Every job adds ``JOB_OVERHEAD_S`` (decode, encode, storage round trips).

Sizes: the spec knows the output's longest side, not its aspect ratio, so the output is
taken as square: the estimate is an upper bound for a given ``size``.

Calibration: ``bench/cost_calibration.py`` times each network on the real engine modules
(fp32, channels_last, best of 3 after a warm-up) and reports CPU seconds per megapixel
(``CPU_S_PER_MP``). A CPU-thread-second becomes reference GPU-seconds by dividing by
``GPU_SPEEDUP``, the ratio of effective throughputs: the reference GPU is taken to sustain
``REFERENCE_GPU_TFLOPS`` on these convolutions; the CPU's effective throughput is the
analytic FLOPs of VGG19's convolutions (``vgg_conv_gflop_per_mp``) over the measured time.
Re-run the script on a GPU worker (``--device cuda``) to replace the assumed figure with a
measured one.

Worker classes (``WORKER_CLASSES``): seconds on a worker of that queue's class per reference
GPU-second, so a job's expected run time is ``gpu_seconds x WORKER_CLASSES[queue]``.

Pure: only the spec models; the API imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.jobs.specs import (
    MAX_SIDE,
    MIN_SIDE,
    AdainSpec,
    FastSpec,
    GatysParams,
    JobSpecModel,
    MaskedSpec,
    OptimizeSpec,
    TrainAdainSpec,
    TrainFastSpec,
    VideoSpec,
)

UNIT = "reference GPU-seconds"

#: CPU seconds per megapixel (per image-megapixel for the training steps), one thread, fp32,
#: measured with ``python bench/cost_calibration.py --threads 1 --size 256`` (process CPU time,
#: best of 3) on the development machine: a 2-core AMD EPYC VM shared with other processes.
CPU_S_PER_MP: dict[str, float] = {
    "vgg_fb": 16.0,  # VGG19 to relu5_1, forward + backward to the pixels (one Gatys evaluation)
    "vgg_f": 6.8,  # the same forward, no gradients (targets; the AdaIN encoder, scaled to relu4_1)
    "fast_f": 3.9,  # CIN transformer forward (fast)
    "decoder_f": 5.0,  # AdaIN decoder forward
    "train_fast": 33.3,  # one train-fast step per image (transformer + VGG, forward + backward, Adam)
    "train_adain": 38.3,  # one train-adain step per image (encoder, decoder + VGG, forward + backward, Adam)
}
#: Loss evaluations per L-BFGS iteration (the Strong-Wolfe line search sometimes needs more
#: than one); measured by the same script on a real ``optimize`` run (48 in 40 iterations).
#: Adam: exactly 1.
LBFGS_EVALS_PER_STEP = 1.2
#: Effective CPU throughput the same run measured on VGG19 forward+backward: 2 x 722 GFLOP per
#: megapixel (``vgg_conv_gflop_per_mp("relu5_1")``, backward to the input only) in 16.0 s.
MEASURED_CPU_GFLOPS = 90.0
#: Effective throughput of the reference GPU on the same convolutions: an ASSUMPTION (no GPU
#: was available to measure it): an A100-class GPU in TF32 (156 TFLOP/s peak) at about a quarter
#: of its peak, which matches the usual figure of about 0.04 s per 512-px L-BFGS evaluation.
REFERENCE_GPU_TFLOPS = 40.0
#: One reference GPU does the work of this many CPU threads of the calibration machine (444).
GPU_SPEEDUP = REFERENCE_GPU_TFLOPS * 1000.0 / MEASURED_CPU_GFLOPS
#: Reference GPU-seconds every job costs besides its networks: decoding inputs, encoding the
#: PNG, storage round trips, loading a model from the worker's cache.
JOB_OVERHEAD_S = 0.5
#: Threads of a CPU worker (the ``cpu`` class), assumed to scale linearly.
CPU_WORKER_THREADS = 8

#: Seconds on a worker of each queue's class per reference GPU-second.
WORKER_CLASSES: dict[str, float] = {"gpu": 1.0, "cpu": GPU_SPEEDUP / CPU_WORKER_THREADS}


@dataclass(frozen=True)
class CostEstimate:
    """A job's estimated cost (``gpu_seconds``, the budget unit) and run time on its queue's class."""

    gpu_seconds: float
    queue: str
    seconds: float

    @classmethod
    def of(cls, gpu_seconds: float, queue: str) -> CostEstimate:
        slowdown = WORKER_CLASSES.get(queue, WORKER_CLASSES["cpu"])  # an unknown class: the slow one
        return cls(gpu_seconds=round(gpu_seconds, 3), queue=queue, seconds=round(gpu_seconds * slowdown, 3))


# --- VGG19 work by depth --------------------------------------------------------------------

#: (block, conv index in the block, input channels, output channels) of VGG19's convolutions.
_VGG19_CONVS = [
    (1, 1, 3, 64), (1, 2, 64, 64),
    (2, 1, 64, 128), (2, 2, 128, 128),
    *[(3, i, 128 if i == 1 else 256, 256) for i in range(1, 5)],
    *[(4, i, 256 if i == 1 else 512, 512) for i in range(1, 5)],
    *[(5, i, 512, 512) for i in range(1, 5)],
]


def vgg_conv_gflop_per_mp(deepest: str) -> float:
    """GFLOPs (2 per multiply-add) of VGG19's 3x3 convolutions up to ``deepest`` (``reluB_I`` or
    ``convB_I``) for one megapixel of input; block B runs at 1/4^(B-1) of the pixels."""
    block, index = int(deepest[4]), int(deepest[6])
    flops = 0.0
    for b, i, c_in, c_out in _VGG19_CONVS:
        if (b, i) > (block, index):
            break
        flops += 2.0 * c_in * c_out * 9 * 1e6 / 4 ** (b - 1)
    return flops / 1e9


_FULL = vgg_conv_gflop_per_mp("relu5_1")


def vgg_fraction(layers: tuple[str, ...] | list[str]) -> float:
    """The share of the calibrated VGG work (to relu5_1) that a pass to the deepest of
    ``layers`` costs (the engine stops at the deepest layer it needs)."""
    deepest = max(layers, key=lambda name: (int(name[4]), int(name[6])))
    return vgg_conv_gflop_per_mp(deepest) / _FULL


# --- cost functions, one per method ---------------------------------------------------------


def _cpu_to_gpu(cpu_seconds: float) -> float:
    return cpu_seconds / GPU_SPEEDUP


def _mp(side: float) -> float:
    """Megapixels of a square output of ``side`` pixels (the upper bound for a longest side)."""
    return side * side / 1e6


def _level_sides(size: int, levels: int) -> list[int]:
    """The longest side of each coarse-to-fine level (as ``gatys.level_sizes``; none dropped)."""
    return [max(MIN_SIDE, round(size / 2 ** (levels - 1 - i))) for i in range(levels)]


def gatys_cpu_seconds(params: GatysParams, n_styles: int) -> float:
    """CPU seconds of one Gatys render with ``n_styles`` style targets."""
    frac = vgg_fraction([*params.content_layers, *params.style_layers])
    evals = LBFGS_EVALS_PER_STEP if params.optimizer == "lbfgs" else 1.0
    total = 0.0
    sides = _level_sides(params.size, params.levels)
    for i, side in enumerate(sides):
        style_side = min(MAX_SIDE, max(MIN_SIDE, side * params.style_scale))
        optimize = params.level_steps(i, len(sides)) * evals * CPU_S_PER_MP["vgg_fb"] * _mp(side)
        targets = CPU_S_PER_MP["vgg_f"] * (_mp(side) + n_styles * _mp(style_side))
        total += frac * (optimize + targets)
    return total


def optimize_cost(spec: OptimizeSpec) -> float:
    return JOB_OVERHEAD_S + _cpu_to_gpu(gatys_cpu_seconds(spec, len(spec.styles)))


def masked_cost(spec: MaskedSpec) -> float:
    n = len(spec.regions)
    if spec.mode == "composite":  # one whole-image render per region
        return JOB_OVERHEAD_S + _cpu_to_gpu(n * gatys_cpu_seconds(spec, 1))
    return JOB_OVERHEAD_S + _cpu_to_gpu(gatys_cpu_seconds(spec, n))


def fast_cost(spec: FastSpec) -> float:
    return JOB_OVERHEAD_S + _cpu_to_gpu(CPU_S_PER_MP["fast_f"] * _mp(spec.size))


def adain_cost(spec: AdainSpec) -> float:
    encode = vgg_fraction(["relu4_1"]) * CPU_S_PER_MP["vgg_f"]
    styles = len(spec.styles) * encode * _mp(spec.style_size)
    return JOB_OVERHEAD_S + _cpu_to_gpu(encode * _mp(spec.size) + styles + CPU_S_PER_MP["decoder_f"] * _mp(spec.size))


#: The cost model sees the spec, not the clip: a video job is priced as a clip of this many frames
#: (20 s at 30 fps), 16:9 at the spec's size, plus the optical flow and encoding per frame.
VIDEO_ASSUMED_FRAMES = 600
VIDEO_FRAME_OVERHEAD_S = 0.01


def video_cost(spec: VideoSpec) -> float:
    mp = _mp(spec.size) * 9 / 16
    if spec.render == "fast":
        per_frame = CPU_S_PER_MP["fast_f"] * mp
    else:
        per_frame = (vgg_fraction(["relu4_1"]) * CPU_S_PER_MP["vgg_f"] + CPU_S_PER_MP["decoder_f"]) * mp
    outputs = len(spec.outputs())
    return JOB_OVERHEAD_S + VIDEO_ASSUMED_FRAMES * (_cpu_to_gpu(per_frame) * outputs + VIDEO_FRAME_OVERHEAD_S)


def train_fast_cost(spec: TrainFastSpec) -> float:
    steps = spec.steps * spec.batch_size * CPU_S_PER_MP["train_fast"] * _mp(spec.image_size)
    targets = len(spec.styles) * CPU_S_PER_MP["vgg_f"] * _mp(spec.style_size)
    return JOB_OVERHEAD_S + _cpu_to_gpu(steps + targets)


def train_adain_cost(spec: TrainAdainSpec) -> float:
    steps = spec.steps * spec.batch_size * CPU_S_PER_MP["train_adain"] * _mp(spec.image_size)
    return JOB_OVERHEAD_S + _cpu_to_gpu(steps)


def flat_cost(spec: JobSpecModel) -> float:
    """A method without a cost function of its own costs only the per-job overhead."""
    return JOB_OVERHEAD_S


def is_finite_cost(value: float) -> bool:
    return math.isfinite(value) and value >= 0
