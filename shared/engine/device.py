"""Device and numeric precision choice, in one place.

Workers run on CUDA GPUs in production and on the CPU here. ``pick_device`` turns the
``device`` setting into a ``torch.device``; ``inference_dtype`` chooses the autocast dtype:

- CUDA: bf16 where the GPU supports it (Ampere and newer), else fp16. Convolutions then
  run on tensor cores; the output of every method stays within 40 dB PSNR of fp32
  (checked by ``bench/engine``).
- CPU: bf16 where the CPU has native bf16 dot products (AVX512-BF16 / AMX), where oneDNN
  runs bf16 convolutions 2-4x faster than fp32; fp32 elsewhere, where emulated bf16 is
  slower than fp32.

On a CPU, ``pick_device`` also sets the process's malloc policy once
(``shared.engine.host_memory``): freed activations are reused instead of being returned to the
OS and page-faulted back in by the next layer (20-25 % of a ``fast`` forward).

Optimization-based methods (Gatys) keep their pixel parameters and losses in fp32 and use
autocast only for the VGG forward pass.

On CUDA (reasoning in docs/performance.md, "The GPU path"): ``pick_device`` turns on cuDNN's
benchmark mode once per process (each new input shape is autotuned once, then reused: Gatys
runs hundreds of evaluations of one shape, training thousands, and a farm's feed-forward
jobs fall into a few common sizes); ``to_device`` copies host tensors through pinned memory
with ``non_blocking=True``, so the copy overlaps the host's next work instead of stalling it.
cuDNN's TF32 convolutions stay at PyTorch's default (on); TF32 matmuls stay off, so Gram
matrices keep fp32 precision.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from shared.engine.host_memory import keep_freed_memory


def pick_device(preference: str = "auto") -> torch.device:
    """``auto`` = the first CUDA GPU when there is one, else the CPU."""
    pref = (preference or "auto").lower()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(pref)
    if device.type == "cpu":
        keep_freed_memory()  # once per process: layers reuse freed pages (shared.engine.host_memory)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            from shared.errors import EngineError

            raise EngineError(f"device '{preference}' was asked for but no CUDA GPU is available")
        _configure_cuda()
    return device


@functools.cache
def _configure_cuda() -> None:
    """Once per process: cuDNN autotunes each convolution shape on first use and keeps the winner."""
    torch.backends.cudnn.benchmark = True


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory without blocking
    the host (the caching host allocator keeps the pinned copy alive until the copy is done)."""
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when oneDNN can run bf16 convolutions natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - older builds without the op
        return False


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype networks compute in for ``precision`` (auto | fp32 | bf16 | fp16)."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``; a no-op for fp32."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def seed_everything(seed: int | None) -> torch.Generator | None:
    """Seed torch for reproducible CPU runs; returns a generator for explicit noise."""
    if seed is None:
        return None
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
