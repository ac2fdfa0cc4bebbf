"""The worker's side of fan-out (parent and child jobs; the engine's side is
``shared.engine.fanout``, the rows' side ``shared.jobs.store``: ``split_job``,
``settle_parent``).

A claimed job of a method with a ``FanOut`` (``shared.jobs.methods``) is one of three runs
(``stage_of``):

* **split** (a parent with no children yet): the splitter decides; ``None`` -> the ordinary
  entry point runs. A plan: its shared blobs are stored with the parent
  (``shared_key``), one child job per piece is inserted and the parent moves running ->
  waiting in one transaction (``store.split_job``), then the children are sent to the broker.
* **piece** (a child job): ``run_piece`` with ``ctx.read_shared``; its files are stored with
  the child (``piece_key``) and described by a ``PieceOutcome``.
* **assemble** (a parent that has children: it was claimed from ``assembling``, or from
  ``queued`` after a failed assembly attempt): the assembler reads the pieces' files and its
  result is stored like an ordinary one.

``settle(parent_id)`` runs after every run of a child (whatever its end) and in every sweeper
pass for every waiting parent: the one caller whose conditional UPDATE moves the parent to
``assembling`` sends it to the broker (a lost message: the sweeper sends queued and
assembling jobs that have none); a parent failed by a piece gets its webhook event.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.db.orm import Job
from shared.engine.context import EngineContext, cancel_checks
from shared.engine.fanout import Piece, PieceOutput, PieceResult, SplitPlan
from shared.errors import EngineError, StylefarmError
from shared.jobs import store
from shared.jobs.methods import Method
from shared.jobs.outcomes import PieceOutcome, json_safe, parse_outcome
from shared.jobs.status import JobStatus
from shared.settings import Settings
from shared.storage import Storage, result_key
from shared.webhooks.dispatch import notify_final
from worker.job_runtime import JobRuntime

log = logging.getLogger("stylefarm.worker")

SPLIT, PIECE, ASSEMBLE = "split", "piece", "assemble"


def shared_key(tenant: str, parent_id: str, name: str) -> str:
    """Where a blob of the parent's split plan is stored."""
    return result_key(tenant, parent_id, f"shared-{name}")


def piece_key(tenant: str, child_id: str, name: str) -> str:
    """Where a file a piece produced is stored."""
    return result_key(tenant, child_id, f"piece-{name}")


def stage_of(job: Job, method: Method | None) -> str | None:
    """Which fan-out run a claimed job is: ``PIECE``, ``ASSEMBLE``, ``SPLIT``, or None (an
    ordinary job)."""
    if job.parent_id is not None:
        return PIECE
    if method is None or method.fanout is None:
        return None
    return ASSEMBLE if store.children_of(job.id) else SPLIT


def attach_shared(ctx: EngineContext, rt: JobRuntime, parent_id: str) -> None:
    """``ctx.read_shared(name)``: the blobs the parent's split stored."""
    ctx.read_shared = lambda name: rt.storage.get_bytes(shared_key(rt.tenant, parent_id, name))


def split(job: Job, spec: Any, method: Method, rt: JobRuntime, ctx: EngineContext) -> list[Job] | None:
    """The split run: None when the splitter keeps the job whole, else the children it made
    (already queued in SQL; the caller sends them). Raises ``InvalidTransition`` when a cancel
    was requested before the split was recorded."""
    assert method.fanout is not None
    with cancel_checks(ctx):
        plan: SplitPlan | None = method.fanout.load_split()(spec, ctx)
    if plan is None:
        return None
    if not plan.pieces:
        raise EngineError("the splitter made no pieces")
    rt.check_lease()  # a stale holder must not overwrite the new holder's blobs
    for name, blob in plan.shared.items():
        rt.storage.put_bytes(shared_key(rt.tenant, job.id, name), blob, "application/octet-stream")
    pieces = [store.NewPiece(label=p.label, data=p.data) for p in plan.pieces]
    assert rt.token is not None
    return store.split_job(job.id, pieces, token=rt.token)


def send_children(children: list[Job], settings: Settings) -> None:
    """Send the children to the broker; one that is not sent waits for the sweeper."""
    from shared.broker.client import enqueue_job

    for child in children:
        try:
            enqueue_job(child.id, child.queue, child.priority, method=child.method, settings=settings)
        except StylefarmError as exc:
            log.warning("job %s: piece not sent (%s); the sweeper will send it", child.id, exc)


def run_piece(job: Job, spec: Any, method: Method, rt: JobRuntime, ctx: EngineContext) -> PieceOutcome:
    """The piece run of a child job: its files stored with it, described by a ``PieceOutcome``."""
    assert method.fanout is not None and job.parent_id is not None
    attach_shared(ctx, rt, job.parent_id)
    info = job.piece or {}
    piece = Piece(label=str(info.get("label", "")), data=dict(info.get("data") or {}))
    with cancel_checks(ctx):
        result: PieceResult = method.fanout.load_run_piece()(spec, piece, ctx)
    rt.check_lease()
    keys = {}
    for name, blob in result.files.items():
        keys[name] = key = piece_key(rt.tenant, job.id, name)
        rt.storage.put_bytes(key, blob, "image/png" if name.endswith(".png") else "application/octet-stream")
    return PieceOutcome(keys=keys, metrics=json_safe({**result.metrics, "piece": info.get("index")}))


def _reader(storage: Storage, keys: dict[str, str], child_id: str) -> Any:
    def read(name: str) -> bytes:
        if name not in keys:
            raise EngineError(f"piece {child_id} stored no file {name!r}")
        return storage.get_bytes(keys[name])

    return read


def assemble(job: Job, spec: Any, method: Method, rt: JobRuntime, ctx: EngineContext) -> Any:
    """The assembly run of a parent whose children all succeeded: the assembler's result."""
    assert method.fanout is not None
    attach_shared(ctx, rt, job.id)
    outputs: list[PieceOutput] = []
    for child in store.children_of(job.id):
        if child.status != JobStatus.SUCCEEDED.value or child.result is None:
            raise EngineError(f"piece job {child.id} is {child.status}; the job cannot be assembled")
        outcome = parse_outcome(child.result)
        if not isinstance(outcome, PieceOutcome):
            raise EngineError(f"piece job {child.id} holds a {outcome.kind} result, not a piece")
        info = child.piece or {}
        outputs.append(PieceOutput(index=int(info.get("index", len(outputs))), label=str(info.get("label", "")),
                                   data=dict(info.get("data") or {}), metrics=dict(outcome.metrics),
                                   read=_reader(rt.storage, dict(outcome.keys), child.id)))
    with cancel_checks(ctx):
        return method.fanout.load_assemble()(spec, outputs, ctx)


def settle(parent_id: str, settings: Settings | None = None) -> str | None:
    """Decide the parent from its children (``store.settle_parent``) and act on a move: an
    assembling parent is sent to the broker, a failed one gets its webhook event. Returns the
    status THIS call moved the parent to, or None."""
    parent = store.settle_parent(parent_id)
    if parent is None:
        return None
    if parent.status == JobStatus.ASSEMBLING.value:
        from shared.broker.client import enqueue_job

        log.info("job %s: every piece done; sent for assembly", parent_id)
        try:
            enqueue_job(parent.id, parent.queue, parent.priority, method=parent.method, settings=settings)
        except StylefarmError as exc:
            log.warning("job %s: assembly not sent (%s); the sweeper will send it", parent_id, exc)
    else:
        log.warning("job %s: %s", parent_id, (parent.error or {}).get("detail"))
        notify_final(parent, settings)
    return parent.status
