"""The stylefarm PyTorch engine: four stylization methods and two training loops.

Pure: nothing here imports redis, boto3 or SQLAlchemy. Each method lives in its own module
with one entry point ``run(spec, ctx)``, named in the method registry
(``shared.jobs.methods``); ``run_engine`` calls the one a spec's method names.
"""

from __future__ import annotations

from typing import Any

from shared.engine.context import EngineContext, Progress, cancel_checks
from shared.jobs.methods import get_method


def run_engine(spec: Any, ctx: EngineContext) -> Any:
    """Run any job spec: a ``RenderResult`` for stylizations, a ``TrainResult`` for training.

    The networks check ``ctx``'s cancel flag between their layers while it runs
    (``shared.engine.context.cancel_checks``)."""
    entry_point = get_method(spec.method).load_entry_point()
    with cancel_checks(ctx):
        return entry_point(spec, ctx)


__all__ = ["EngineContext", "Progress", "run_engine"]
