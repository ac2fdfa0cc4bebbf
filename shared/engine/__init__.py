"""The stylefarm PyTorch engine: four stylization methods and two training loops.

Pure: nothing here imports redis, boto3 or SQLAlchemy. Each method lives in its own module
with one entry point ``run(spec, ctx)``; ``run_job`` dispatches on ``spec.method``.
"""

from __future__ import annotations

import importlib
from typing import Any

from shared.engine.context import EngineContext, Progress

_MODULES = {
    "optimize": "shared.engine.methods.optimize",
    "masked": "shared.engine.methods.masked",
    "fast": "shared.engine.methods.fast",
    "adain": "shared.engine.methods.adain",
    "train-fast": "shared.engine.training.train_fast",
    "train-adain": "shared.engine.training.train_adain",
}


def run_job(spec: Any, ctx: EngineContext) -> Any:
    """Run any job spec: a ``RenderResult`` for stylizations, a ``TrainResult`` for training."""
    module = importlib.import_module(_MODULES[spec.method])
    return module.run(spec, ctx)


__all__ = ["EngineContext", "Progress", "run_job"]
