"""The worker's side of fan-out (worker.fanout, worker.tasks), run eagerly in this process on
SQLite and local storage with a toy FanOut plugged into a registered method: the same plug a
new kind of fanned-out job (video chunks) uses. Split -> children queued and sent; each child's
run stores its files; the last one sends the parent to assembly exactly once; the assembler
reads every piece's files and the split's shared blob."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import update

from shared.db.orm import Job
from shared.db.session import session_scope
from shared.engine.context import EngineContext
from shared.engine.fanout import Piece, PieceOutput, PieceResult, SplitPlan
from shared.engine.results import RenderResult
from shared.jobs import methods, store
from shared.jobs.methods import FanOut

PIECES = 3
CALLS: dict[str, list[Any]] = {"split": [], "piece": [], "assemble": []}


def toy_split(spec: Any, ctx: EngineContext) -> SplitPlan:
    CALLS["split"].append(spec.size)
    return SplitPlan([Piece(f"band {i + 1} of {PIECES}", {"value": 60 * (i + 1)}) for i in range(PIECES)],
                     {"offset": b"\x05"})


def toy_piece(spec: Any, piece: Piece, ctx: EngineContext) -> PieceResult:
    CALLS["piece"].append(piece.label)
    if piece.data["value"] == 999:
        raise ValueError("no ink")
    value = piece.data["value"] + ctx.read_shared("offset")[0]
    return PieceResult({"band.bin": bytes([value]) * 8}, {"value": value})


def toy_assemble(spec: Any, pieces: list[PieceOutput], ctx: EngineContext) -> RenderResult:
    CALLS["assemble"].append([p.index for p in pieces])
    rows = np.stack([np.frombuffer(p.read("band.bin"), np.uint8) for p in pieces])  # (3, 8)
    return RenderResult(Image.fromarray(np.repeat(rows[:, :, None], 3, axis=2)), {"pieces": len(pieces)})


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, job_db: str) -> list[tuple[str, str]]:
    """``fast`` fans out with the toy functions of this module; sends are recorded, not made."""
    import shared.broker.client

    for calls in CALLS.values():
        calls.clear()
    mod = __name__
    fan = FanOut(f"{mod}:toy_split", f"{mod}:toy_piece", f"{mod}:toy_assemble")
    monkeypatch.setitem(methods.REGISTRY, "fast", dataclasses.replace(methods.REGISTRY["fast"], fanout=fan))
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(shared.broker.client, "enqueue_job",
                        lambda job_id, queue, priority=0, **kw: sent.append((job_id, queue)))
    return sent


def run(job_id: str) -> str:
    from worker.tasks import execute_job

    return execute_job.apply(args=[job_id], task_id=f"task-{job_id}").get()


def test_given_a_fanned_out_job_expect_split_pieces_then_one_assembly(toy: list[tuple[str, str]]) -> None:
    parent, _ = store.create_job("default", {"method": "fast", "content": "x" * 64, "size": 2048})
    assert run(parent.id) == "waiting"
    children = store.children_of(parent.id)
    assert len(children) == PIECES and [c for c, _ in toy] == [c.id for c in children]
    assert store.get_job(parent.id).status == "waiting"
    for child in children[:-1]:
        assert run(child.id) == "succeeded"
    assert store.get_job(parent.id).status == "waiting" and parent.id not in [c for c, _ in toy]
    assert run(children[-1].id) == "succeeded"
    assert store.get_job(parent.id).status == "assembling"
    assert [c for c, _ in toy].count(parent.id) == 1  # sent for assembly once, by the last piece
    assert run(children[-1].id) == "skipped"  # a message delivered again changes nothing
    assert [c for c, _ in toy].count(parent.id) == 1
    assert run(parent.id) == "succeeded"
    done = store.get_job(parent.id)
    assert done.result is not None and (done.result["width"], done.result["height"]) == (8, PIECES)
    assert CALLS["assemble"] == [[0, 1, 2]] and CALLS["split"] == [2048]
    piece_out = store.get_job(children[1].id).result
    assert piece_out is not None and piece_out["kind"] == "piece" and piece_out["metrics"]["value"] == 125


def test_given_a_piece_that_fails_expect_parent_failed_naming_it(toy: list[tuple[str, str]]) -> None:
    parent, _ = store.create_job("default", {"method": "fast", "content": "y" * 64, "size": 2048})
    assert run(parent.id) == "waiting"
    children = store.children_of(parent.id)
    with session_scope() as session:  # piece 2 will fail: its data says so
        session.execute(update(Job).where(Job.id == children[1].id).values(
            piece={**(children[1].piece or {}), "data": {"value": 999}}))
    assert run(children[0].id) == "succeeded"
    assert run(children[1].id) == "failed"
    failed = store.get_job(parent.id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["piece_label"] == "band 2 of 3" and "no ink" in failed.error["detail"]
    assert store.get_job(children[2].id).status == "canceled"
    assert parent.id not in [c for c, _ in toy]
