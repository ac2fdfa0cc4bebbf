"""The engine's side of fan-out: one job split into pieces that many workers render, put
back together by an assembler (the farm's side: ``shared.jobs.fanout``).

A method that fans out names three functions in its registry entry
(``shared.jobs.methods.FanOut``), each ``"module:function"``, all pure (no SQL, storage or
broker: they get an ``EngineContext`` like any entry point):

``split(spec, ctx) -> SplitPlan | None``
    Runs in the worker that claimed the job. ``None``: the job is small enough, the worker
    runs the method's ordinary entry point instead. A plan: the pieces (one child job each,
    ``Piece.data`` is JSON handed back to ``run_piece``) and ``shared`` blobs computed once
    for every piece (e.g. the whole image's normalisation statistics), which the worker
    stores with the parent.
``run_piece(spec, piece, ctx) -> PieceResult``
    Runs in the worker that claimed one child job; ``ctx.read_shared(name)`` reads a blob of
    the plan. The files it returns are stored with the child.
``assemble(spec, pieces, ctx) -> result``
    Runs in the worker that claimed the parent once every child succeeded; ``pieces`` are
    ``PieceOutput`` in piece order (``read(name)`` reads a file the piece stored). Its result
    is stored like the method's ordinary result (a ``RenderResult``: the PNG of the job).

``run_locally`` runs all three in one process (the CLI, tests and benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.engine.context import EngineContext


@dataclass(frozen=True)
class Piece:
    """One piece of a job: a label that names it in problems ("tile 3 of 16 (x 1024-2112,
    y 0-1088)") and JSON its ``run_piece`` gets back."""

    label: str
    data: dict[str, Any]


@dataclass
class SplitPlan:
    """What ``split`` decided: the pieces, and named blobs every piece and the assembler may
    read (``EngineContext.read_shared``)."""

    pieces: list[Piece]
    shared: dict[str, bytes] = field(default_factory=dict)


@dataclass
class PieceResult:
    """What one piece produced: named files (stored with the child job) and metrics."""

    files: dict[str, bytes]
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PieceOutput:
    """One finished piece as the assembler sees it."""

    index: int
    label: str
    data: dict[str, Any]
    metrics: dict[str, Any]
    read: Callable[[str], bytes]  # a file the piece stored, by name


SplitFn = Callable[[Any, EngineContext], SplitPlan | None]
RunPieceFn = Callable[[Any, Piece, EngineContext], PieceResult]
AssembleFn = Callable[[Any, list[PieceOutput], EngineContext], Any]


def run_locally(spec: Any, ctx: EngineContext, split: SplitFn, run_piece: RunPieceFn, assemble: AssembleFn,
                entry_point: Callable[[Any, EngineContext], Any] | None = None) -> Any:
    """Split, run every piece and assemble in this process (what the farm does across
    workers); the ordinary ``entry_point`` when ``split`` answers ``None``."""
    plan = split(spec, ctx)
    if plan is None:
        if entry_point is None:
            raise ValueError("split answered None and there is no entry point to run instead")
        return entry_point(spec, ctx)
    shared = dict(plan.shared)

    def read_shared(name: str) -> bytes:
        return shared[name]

    piece_ctx = EngineContext(**{**ctx.__dict__, "read_shared": read_shared})
    outputs = []
    for index, piece in enumerate(plan.pieces):
        result = run_piece(spec, piece, piece_ctx)
        outputs.append(PieceOutput(index, piece.label, piece.data, result.metrics, result.files.__getitem__))
    return assemble(spec, outputs, piece_ctx)
