"""Optimization-based style transfer: Gatys, Ecker & Bethge 2016, "Image Style Transfer
Using Convolutional Neural Networks" (CVPR 2016).

The output pixels are optimized (L-BFGS by default, or Adam) against VGG19 content loss,
Gram-matrix style loss and total variation; see ``gatys.py`` for the loss, the loop, the
initializations, coarse-to-fine levels and colour preservation (Gatys et al. 2016,
"Preserving Color in Neural Artistic Style Transfer").

Several styles: the style loss is the weighted sum of the per-style Gram losses, with the
``StyleRef.weight`` values normalized to sum to 1 (a single style at any weight is the same
job). Mixing losses rather than Gram targets keeps every style's own texture statistics as
a target; the optimum then sits between them, which is what a blend means here.
A style-side mask takes a style only from the white part of its painting.
"""

from __future__ import annotations

from dataclasses import replace

from shared.engine.context import EngineContext
from shared.engine.images import to_image
from shared.engine.methods.gatys import StepCounter, load_content, load_style, render, total_steps
from shared.engine.results import RenderResult
from shared.jobs.specs import OptimizeSpec


def run(spec: OptimizeSpec, ctx: EngineContext) -> RenderResult:
    """Render ``spec``: an RGB image whose longest side is ``spec.size``."""
    content, digest = load_content(ctx, spec.content)
    styles = [load_style(ctx, s, what=f"styles[{i}]") for i, s in enumerate(spec.styles)]
    total_w = sum(s.weight for s in styles)
    styles = [replace(s, weight=s.weight / total_w) for s in styles]
    # The heaviest style first: it is the one a style init starts from.
    styles.sort(key=lambda s: -s.weight)
    counter = StepCounter(total=total_steps(spec, content))
    x01, metrics = render(spec, content, digest, styles, ctx, counter)
    metrics["method"] = "optimize"
    metrics["styles"] = len(styles)
    return RenderResult(image=to_image(x01), metrics=metrics)
