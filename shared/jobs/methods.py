"""The method registry: everything stylefarm knows about each job method, in one table.

For each method: its spec model (``shared.jobs.specs``), the queue it goes to, its (soft,
hard) time limits, its engine entry point, whether it trains a model and its cost function
(``shared.jobs.cost``; ``estimate_cost`` below). The references a
job names (images, datasets, models) are told by its spec model itself. Everything else
reads this table: the ``JobSpec`` union and ``parse_spec`` below, the API (validation,
``?method=`` filter), the store (default queue), the broker (time limits on each message),
the worker (dispatch, warm-up, time limits) and the CLI (``stylefarm
render`` / ``stylefarm train`` subcommands).

Adding a method = one spec model in ``shared.jobs.specs`` + one engine module with a
``run(spec, ctx)`` function + one ``Method`` entry in ``REGISTRY`` below
(``tests/test_method_registry.py`` then proves it is wired end to end).

Pure: only pydantic; the engine entry point is a ``"module:function"`` string imported on
first use, so the API never imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from shared.errors import InvalidSpec
from shared.jobs import cost
from shared.jobs.specs import (
    AdainSpec,
    FastSpec,
    JobSpecModel,
    MaskedSpec,
    OptimizeSpec,
    TrainAdainSpec,
    TrainFastSpec,
    VideoSpec,
)


def _load(ref: str, what: str) -> Callable[..., Any]:
    module, _, function = ref.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), function)
    if not callable(fn):
        raise TypeError(f"{what} {ref} is not callable")
    return fn


@dataclass(frozen=True)
class FanOut:
    """How a method splits one job into child jobs (pieces) and puts their results back
    together (``shared.engine.fanout`` has the signatures, ``shared.jobs.fanout`` the farm's
    side). Each is a ``"module:function"`` imported on first use (the API never does)::

        split(spec, ctx: EngineContext) -> SplitPlan | None      # None: run unsplit
        run_piece(spec, piece: Piece, ctx: EngineContext) -> PieceResult
        assemble(spec, pieces: list[PieceOutput], ctx: EngineContext) -> result

    The split, each piece and the assembly are runs of their own, each within the method's
    time limits.
    """

    split: str
    run_piece: str
    assemble: str

    def load_split(self) -> Callable[..., Any]:
        return _load(self.split, "splitter")

    def load_run_piece(self) -> Callable[..., Any]:
        return _load(self.run_piece, "piece runner")

    def load_assemble(self) -> Callable[..., Any]:
        return _load(self.assemble, "assembler")


@dataclass(frozen=True)
class Method:
    """One job method and how the farm runs it."""

    name: str
    spec: type[JobSpecModel]
    #: ``"package.module:function"``, called as ``function(spec, ctx)``; imported lazily.
    entry_point: str
    #: (soft, hard) seconds. The soft limit raises inside the engine (the job fails with a
    #: ``time-limit-exceeded`` problem); the hard limit kills the process.
    time_limits: tuple[int, int]
    #: Everything that runs a network prefers a GPU.
    queue: str = "gpu"
    #: A training job: its result is a registered model, its checkpoints resume a retry.
    trains: bool = False
    #: Estimated cost of a spec in reference GPU-seconds (``shared.jobs.cost``).
    cost: Callable[[Any], float] = cost.flat_cost
    #: A method whose jobs may be split into child jobs (``FanOut``); None: never split.
    fanout: FanOut | None = None

    @property
    def soft_limit_s(self) -> int:
        return self.time_limits[0]

    @property
    def hard_limit_s(self) -> int:
        return self.time_limits[1]

    @property
    def engine_module(self) -> str:
        return self.entry_point.partition(":")[0]

    def load_entry_point(self) -> Callable[[Any, Any], Any]:
        """The engine function of this method (imports its module, torch included)."""
        return _load(self.entry_point, f"{self.name}: entry point")


_HOUR = 3600
_TILED = "shared.engine.methods.tiled"
_TILED_GATYS = "shared.engine.methods.tiled_gatys"


def _tiled(method: str, module: str = _TILED) -> FanOut:
    """A render split into tiles above ``Settings.tile_size`` (``shared.engine.methods.tiled``:
    shared normalisation statistics; ``tiled_gatys``: coarse to fine)."""
    return FanOut(f"{module}:{method}_split", f"{module}:{method}_piece", f"{_TILED}:assemble")

REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("optimize", OptimizeSpec, "shared.engine.methods.optimize:run", (1800, 1900), cost=cost.optimize_cost,
               fanout=_tiled("optimize", _TILED_GATYS)),
        Method("masked", MaskedSpec, "shared.engine.methods.masked:run", (2400, 2500), cost=cost.masked_cost,
               fanout=_tiled("masked", _TILED_GATYS)),
        Method("fast", FastSpec, "shared.engine.methods.fast:run", (300, 360), cost=cost.fast_cost,
               fanout=_tiled("fast")),
        Method("adain", AdainSpec, "shared.engine.methods.adain:run", (300, 360), cost=cost.adain_cost,
               fanout=_tiled("adain")),
        Method("video", VideoSpec, "shared.engine.methods.video:run", (1800, 1900), cost=cost.video_cost,
               fanout=FanOut("shared.engine.methods.video:split", "shared.engine.methods.video:run_piece",
                             "shared.engine.methods.video:assemble")),
        Method("train-fast", TrainFastSpec, "shared.engine.training.train_fast:run",
               (3 * _HOUR, 3 * _HOUR + 600), trains=True, cost=cost.train_fast_cost),
        Method("train-adain", TrainAdainSpec, "shared.engine.training.train_adain:run",
               (3 * _HOUR, 3 * _HOUR + 600), trains=True, cost=cost.train_adain_cost),
    )
}

METHOD_NAMES: tuple[str, ...] = tuple(REGISTRY)
TRAINING_METHODS: tuple[str, ...] = tuple(name for name, m in REGISTRY.items() if m.trains)
MAX_SOFT_LIMIT_S = max(m.soft_limit_s for m in REGISTRY.values())
MAX_HARD_LIMIT_S = max(m.hard_limit_s for m in REGISTRY.values())

for _name, _method in REGISTRY.items():  # a wiring mistake fails at import, not on a job
    if _method.spec.model_fields["method"].default != _name:
        raise TypeError(f"method {_name!r}: {_method.spec.__name__}.method must default to {_name!r}")
    if not 0 < _method.soft_limit_s < _method.hard_limit_s:
        raise ValueError(f"method {_name!r}: time limits must be 0 < soft < hard, got {_method.time_limits}")


def get_method(name: str) -> Method:
    """The registry entry of ``name``; ``InvalidSpec`` for a method that does not exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidSpec(f"unknown method {name!r}; expected one of {', '.join(METHOD_NAMES)}") from None


def estimate_cost(spec: JobSpecModel, queue: str | None = None) -> cost.CostEstimate:
    """The estimated cost of ``spec`` (its method's cost function) and its run time on the
    worker class of ``queue`` (default: the method's queue)."""
    method = get_method(spec.method)
    return cost.CostEstimate.of(method.cost(spec), queue or method.queue)


#: The discriminated union of every registered spec model (a body's ``method`` picks one);
#: built at run time from the registry, so type checkers see ``JobSpecModel`` instead.
#: ``Union[...]`` of a run-time tuple has no ``X | Y`` spelling: hence the noqa (UP007's fix breaks it).
JobSpec: Any = Annotated[Union[tuple(m.spec for m in REGISTRY.values())], Field(discriminator="method")]  # noqa: UP007
job_spec_adapter: TypeAdapter[JobSpecModel] = TypeAdapter(JobSpec)


def parse_spec(data: dict[str, Any]) -> JobSpecModel:
    """Validate a dict into its spec model; raises ``InvalidSpec`` with a clear detail."""
    try:
        return job_spec_adapter.validate_python(data)
    except ValidationError as exc:
        errors = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)
        ]
        detail = "; ".join(f"{e['loc'] or 'body'}: {e['msg']}" for e in errors)
        raise InvalidSpec(detail, errors=errors) from None
