"""Export a training checkpoint of the AdaIN decoder as the small shipped fp16 decoder.

Reads ``WORK/checkpoint.pt`` (written by ``stylefarm train adain --work-dir WORK``), drops the
optimizer state, RNG states and the per-step history, converts the weights to fp16 and
writes a self-describing ``adain-decoder`` checkpoint (``shared.engine.checkpoint``) whose
``meta`` says how it was made: steps, hours, final losses, data, the commands. The loss
history is kept only as a short summary (mean losses per block of steps).

Usage::

    python deploy/train/export_adain_decoder.py --checkpoint /work/data/adain/run128/checkpoint.pt \
        --out shared/engine/weights/adain_decoder.pt [--data-manifest /work/data/adain/manifest.json] \
        [--command "stylefarm train adain ..."] [--stage 128:/work/data/adain/run128/checkpoint.pt]

``--resumable`` keeps the step, the RNG states and the loss history but not the Adam state:
a checkpoint a quarter the size of ``checkpoint.pt`` (7 MB fp16) that ``train_adain`` resumes
from with fresh Adam moments; copy it to ``WORK/checkpoint.pt`` to carry a run between
short GPU leases.

``--stage`` (repeatable) records earlier stages (e.g. the 128 px run a 256 px fine-tune
started from) in the meta, read from their own checkpoints.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Run as a script: the repo root goes first on sys.path so that `shared` imports from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from shared.engine.checkpoint import load_checkpoint, save_checkpoint
from shared.engine.methods.adain import CHECKPOINT_KIND, Decoder, decoder_from_checkpoint


def summarize(history: torch.Tensor, blocks: int = 20) -> dict[str, Any]:
    """Mean (total, content, lambda*style) losses over ``blocks`` equal blocks of steps."""
    n = int(history.shape[0])
    if n == 0:
        return {"steps": 0, "blocks": []}
    edges = sorted({round(i * n / blocks) for i in range(blocks + 1)})
    rows = []
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        m = history[a:b].double().mean(0)
        rows.append({"steps": [a + 1, b], "total": float(m[0]), "content": float(m[1]), "style": float(m[2])})
    tail = history[-max(1, min(100, n // 10)):].double().mean(0)
    head = history[: max(1, min(100, n // 10))].double().mean(0)
    return {
        "steps": n,
        "first_mean": {"total": float(head[0]), "content": float(head[1]), "style": float(head[2])},
        "final_mean": {"total": float(tail[0]), "content": float(tail[1]), "style": float(tail[2])},
        "final_window": int(max(1, min(100, n // 10))),
        "blocks": rows,
    }


def stage_info(path: Path) -> dict[str, Any]:
    payload = load_checkpoint(path, kind=CHECKPOINT_KIND)
    training = payload.get("training") or {}
    meta = payload.get("meta") or {}
    history = training.get("history", torch.zeros(0, 3)).float()
    return {
        "checkpoint": str(path),
        "step": int(training.get("step", 0)),
        "hours": round(float(training.get("seconds", meta.get("train_seconds", 0.0))) / 3600, 3),
        "spec": meta.get("spec"),
        "dtype": meta.get("dtype"),
        "device": meta.get("device"),
        "losses": summarize(history),
    }


def _resume_state(payload: dict[str, Any]) -> dict[str, Any]:
    """What ``train_adain`` needs to go on from this step (its Adam moments start from zero)."""
    training = payload.get("training") or {}
    return {k: training[k] for k in ("step", "history", "data_rng", "torch_rng", "seconds") if k in training}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="WORK/checkpoint.pt of a train_adain run")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-manifest", type=Path, default=None, help="manifest.json of prepare_adain_data.py")
    ap.add_argument("--command", action="append", default=[], help="command(s) that produced it (repeatable)")
    ap.add_argument("--stage", action="append", default=[], help="LABEL:PATH of an earlier stage's checkpoint")
    ap.add_argument("--fp32", action="store_true", help="keep fp32 weights (default fp16)")
    ap.add_argument("--resumable", action="store_true",
                    help="keep the step, RNG states and loss history (not the Adam state): a small checkpoint.pt "
                         "that train_adain resumes from with fresh Adam moments, to carry between GPU leases")
    args = ap.parse_args(argv)

    payload = load_checkpoint(args.checkpoint, kind=CHECKPOINT_KIND)
    decoder = decoder_from_checkpoint(payload, str(args.checkpoint))  # checks the architecture
    info = stage_info(args.checkpoint)
    meta: dict[str, Any] = dict(payload.get("meta") or {})
    meta.update({
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exported_from": str(args.checkpoint),
        "steps": info["step"],
        "hours": info["hours"],
        "losses": info["losses"],
        "commands": args.command,
        "weights_dtype": "float32" if args.fp32 else "float16",
    })
    if args.stage:
        meta["stages"] = {}
        for s in args.stage:
            label, _, path = s.partition(":")
            meta["stages"][label] = stage_info(Path(path))
    if args.data_manifest is not None:
        manifest = json.loads(args.data_manifest.read_text())
        meta["data"] = {
            "counts": manifest.get("counts"),
            "held_out": manifest.get("held_out"),
            "short_side": manifest.get("short_side"),
            "content_sources": sorted({c["source"] for c in manifest.get("content", [])}),
            "style_paintings": [s["path"] for s in manifest.get("style", []) if s.get("files")],
            "recipe": "deploy/train/prepare_adain_data.py",
        }
    out = save_checkpoint(
        args.out,
        kind=CHECKPOINT_KIND,
        config=payload.get("config") or Decoder.config(),
        state_dict=decoder.state_dict(),
        style_names=[],
        preprocessing=payload.get("preprocessing") or {},
        training=_resume_state(payload) if args.resumable else None,
        meta=meta,
        half=not args.fp32,
    )
    out.chmod(0o644)  # the atomic writer's temp file is 0600; the shipped file is world-readable
    # Read it back the way the engine will.
    decoder_from_checkpoint(load_checkpoint(out, kind=CHECKPOINT_KIND), str(out))
    print(json.dumps({"out": str(out), "bytes": out.stat().st_size, "steps": info["step"], "hours": info["hours"],
                      "final": info["losses"].get("final_mean")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
