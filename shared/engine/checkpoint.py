"""Self-describing checkpoints: weights next to the config, style names and preprocessing.

A checkpoint is one ``torch.save`` file holding a dict::

    {"format": "stylefarm-checkpoint", "version": 1, "kind": "fast" | "adain-decoder",
     "config": {...architecture...}, "style_names": [...], "preprocessing": {...},
     "state_dict": {...}, "training": {...step, optimizer state, loss history...} | None,
     "meta": {...free-form: data, hours, command...}}

Everything needed to rebuild and use the network is inside; nothing is inferred from a
file name. Training checkpoints carry the optimizer state so a job resumes exactly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from shared.errors import ModelUnavailable

FORMAT = "stylefarm-checkpoint"
VERSION = 1
KINDS = ("fast", "adain-decoder")


def save_checkpoint(
    path: Path | str,
    *,
    kind: str,
    config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    style_names: list[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write atomically (temp file + rename) so a killed worker never leaves half a file."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in state_dict.items()
    }
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "config": config,
        "style_names": list(style_names or []),
        "preprocessing": preprocessing or {},
        "state_dict": weights,
        "training": training,
        "meta": meta or {},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: Path | str, kind: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint; float weights come back as fp32."""
    path = Path(path)
    if not path.is_file():
        raise ModelUnavailable(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and primitives only
    except Exception as exc:
        raise ModelUnavailable(f"checkpoint {path.name} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelUnavailable(f"{path.name} is not a stylefarm checkpoint")
    if payload.get("version", 0) > VERSION:
        raise ModelUnavailable(f"{path.name} was written by a newer stylefarm (version {payload['version']})")
    if kind is not None and payload.get("kind") != kind:
        raise ModelUnavailable(f"{path.name} is a '{payload.get('kind')}' checkpoint, not '{kind}'")
    payload["state_dict"] = {
        k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()
    }
    return payload
