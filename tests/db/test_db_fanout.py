"""Fan-out in shared.jobs.store: a parent split into child jobs, settled exactly once, failed
by a piece, canceled with its children; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from shared.errors import InvalidTransition, LeaseLost, NotFound
from shared.jobs import store
from shared.jobs.status import JobStatus

from harness import race

SPEC = {"method": "fast", "content": "b" * 64, "size": 2048}
PROBLEM = {"type": "https://stylefarm.dev/problems/engine-error", "title": "x", "status": 500, "detail": "out of ink"}
PIECE_RESULT = {"kind": "piece", "keys": {"image.png": "k"}, "metrics": {}}


def split_parent(n: int = 3) -> tuple[str, list[str]]:
    """A parent claimed and split into ``n`` queued children (through the public functions)."""
    parent, _ = store.create_job("t1", SPEC)
    claimed = store.claim_job(parent.id, task_id="p", worker="w0")
    assert claimed is not None
    pieces = [store.NewPiece(label=f"tile {i + 1} of {n}", data={"i": i}) for i in range(n)]
    children = store.split_job(parent.id, pieces, token=claimed.fencing_token)
    return parent.id, [c.id for c in children]


def finish_child(child_id: str, ok: bool = True) -> None:
    job = store.claim_job(child_id, task_id=f"t-{child_id}", worker="w1")
    assert job is not None
    if ok:
        store.succeed_job(child_id, PIECE_RESULT, token=job.fencing_token)
    else:
        store.fail_job(child_id, PROBLEM, token=job.fencing_token)


def test_given_running_parent_when_split_expect_waiting_children_queued_lease_released(db_url: str) -> None:
    parent_id, children = split_parent(3)
    parent = store.get_job(parent_id)
    assert parent.status == "waiting" and parent.lease_expires_at is None and parent.worker is None
    assert (parent.step, parent.total) == (0, 3)
    rows = store.children_of(parent_id)
    assert [c.id for c in rows] == children
    assert all(c.status == "queued" and c.parent_id == parent_id and c.spec == parent.spec for c in rows)
    assert [c.piece for c in rows][1] == {"index": 1, "total": 3, "label": "tile 2 of 3", "data": {"i": 1}}


def test_given_stale_token_when_split_expect_lease_lost_and_no_children(db_url: str) -> None:
    parent, _ = store.create_job("t1", SPEC)
    claimed = store.claim_job(parent.id, task_id="p", worker="w0")
    assert claimed is not None
    with pytest.raises(LeaseLost):
        store.split_job(parent.id, [store.NewPiece("a", {})], token=claimed.fencing_token + 1)
    assert store.children_of(parent.id) == [] and store.get_job(parent.id).status == "running"


def test_given_cancel_requested_when_split_expect_refused_and_no_children(db_url: str) -> None:
    parent, _ = store.create_job("t1", SPEC)
    claimed = store.claim_job(parent.id, task_id="p", worker="w0")
    assert claimed is not None
    store.request_cancel(parent.id, "t1")
    with pytest.raises(InvalidTransition, match="cancel"):
        store.split_job(parent.id, [store.NewPiece("a", {})], token=claimed.fencing_token)
    assert store.children_of(parent.id) == []


def test_given_pieces_done_one_by_one_expect_progress_then_assembling_once(db_url: str) -> None:
    parent_id, children = split_parent(3)
    finish_child(children[0])
    assert store.settle_parent(parent_id) is None
    parent = store.get_job(parent_id)
    assert parent.status == "waiting" and (parent.step, parent.total) == (1, 3)
    summary = store.pieces_summary(parent_id)
    assert summary is not None and (summary.done, summary.total, summary.children) == (1, 3, children)
    for child in children[1:]:
        finish_child(child)
    moved = store.settle_parent(parent_id)
    assert moved is not None and moved.status == "assembling" and moved.attempts == 0
    assert store.settle_parent(parent_id) is None  # once
    claimed = store.claim_job(parent_id, task_id="a", worker="w2")
    assert claimed is not None and claimed.status == "running" and claimed.attempts == 1
    store.succeed_job(parent_id, {"kind": "render", "keys": {"image": "k"}, "width": 1, "height": 1,
                                  "size_bytes": 1}, token=claimed.fencing_token)
    assert store.get_job(parent_id).status == "succeeded"


def test_given_last_two_children_finish_at_the_same_moment_expect_exactly_one_assembly(db_url: str) -> None:
    """Each racer succeeds its own child, then settles: the conditional UPDATE lets exactly
    one of them move the parent (the other finds it no longer waiting, or its child not
    yet committed)."""
    for _ in range(3):
        parent_id, children = split_parent(6)
        for child in children[:2]:
            finish_child(child)
        last = children[2:]
        claims = [store.claim_job(c, task_id=f"t{c}", worker="w") for c in last]

        def finish_and_settle(i: int, claims: list = claims, parent_id: str = parent_id) -> object:
            job = claims[i]
            assert job is not None
            store.succeed_job(job.id, PIECE_RESULT, token=job.fencing_token)
            return store.settle_parent(parent_id)

        results = race(len(last), finish_and_settle)
        assert not [r for r in results if isinstance(r, Exception)], results
        movers = [r for r in results if r is not None]
        assert len(movers) == 1 and store.get_job(parent_id).status == "assembling"


def test_given_many_settlers_at_once_expect_one_mover(db_url: str) -> None:
    parent_id, children = split_parent(2)
    for child in children:
        finish_child(child)
    results = race(8, lambda i: store.settle_parent(parent_id))
    assert sum(r is not None and not isinstance(r, Exception) for r in results) == 1, results


def test_given_a_failed_piece_expect_parent_failed_naming_it_and_other_pieces_canceled(db_url: str) -> None:
    parent_id, children = split_parent(3)
    finish_child(children[0])
    running = store.claim_job(children[2], task_id="x", worker="w3")
    assert running is not None
    finish_child(children[1], ok=False)
    moved = store.settle_parent(parent_id)
    assert moved is not None and moved.status == "failed"
    problem = moved.error or {}
    assert problem["type"].endswith("/piece-failed") and problem["piece_index"] == 1
    assert "tile 2 of 3" in problem["detail"] and "out of ink" in problem["detail"]
    assert problem["child_id"] == children[1] and problem["child_problem"]["detail"] == "out of ink"
    assert store.get_job(children[2]).cancel_requested  # running: asked to stop
    assert store.settle_parent(parent_id) is None


def test_given_waiting_parent_when_canceled_expect_queued_children_canceled_running_asked(db_url: str) -> None:
    parent_id, children = split_parent(3)
    finish_child(children[0])
    running = store.claim_job(children[1], task_id="x", worker="w3")
    assert running is not None
    parent = store.request_cancel(parent_id, "t1")
    assert parent.status == "canceled"
    rows = {c.id: c for c in store.children_of(parent_id)}
    assert rows[children[0]].status == "succeeded"
    assert rows[children[1]].status == "running" and rows[children[1]].cancel_requested
    assert rows[children[2]].status == "canceled"
    store.mark_canceled(children[1], token=running.fencing_token)
    assert store.settle_parent(parent_id) is None and store.get_job(parent_id).status == "canceled"


def test_given_children_expect_list_shows_parents_unless_asked(db_url: str) -> None:
    parent_id, children = split_parent(2)
    other, _ = store.create_job("t1", {"method": "fast", "content": "c" * 64})
    listed = [j.id for j in store.list_jobs("t1")[0]]
    assert set(listed) == {parent_id, other.id}
    assert {j.id for j in store.list_jobs("t1", include_children=True)[0]} == {parent_id, other.id, *children}
    assert {j.id for j in store.list_jobs("t1", parent_id=parent_id)[0]} == set(children)


def test_given_waiting_parent_expect_not_claimable(db_url: str) -> None:
    parent_id, _ = split_parent(1)
    assert store.claim_job(parent_id, task_id="again", worker="w9") is None
    assert store.get_job(parent_id).status == JobStatus.WAITING


# --- the sweeper recovers what a dead worker left (worker.sweeper (d) and (b)) -------------


@pytest.fixture
def broker(redis_server, monkeypatch: pytest.MonkeyPatch):
    """Settings on a Redis database of its own, emptied before and after."""
    import redis

    from shared.settings import Settings

    url = redis_server.url.rsplit("/", 1)[0] + "/11"
    monkeypatch.setenv("STYLEFARM_BROKER_URL", url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield Settings()
    client.flushdb()


def test_given_all_pieces_done_but_never_settled_when_swept_expect_assembling_and_sent_once(
    db_url: str, broker
) -> None:
    """The worker of the last piece died between its success and settling the parent: the
    sweeper's pass settles it and sends it for assembly; a lost assembly message is sent again."""
    from shared.broker.client import queue_lengths
    from worker.sweeper import sweep

    parent_id, children = split_parent(2)
    for child in children:
        finish_child(child)  # succeeded, nobody settled
    report = sweep(broker, queued_after_s=3600)
    assert report.settled == [parent_id] and store.get_job(parent_id).status == "assembling"
    assert queue_lengths(broker)["gpu"] == 1
    assert sweep(broker, queued_after_s=3600).settled == []  # once
    import redis

    redis.Redis.from_url(broker.broker_url).flushdb()  # the assembly message is lost
    assert sweep(broker, queued_after_s=0).resent == [parent_id]  # an assembling job counts as waiting for a claim


def test_given_a_piece_failed_unsettled_when_swept_expect_parent_failed(db_url: str, broker) -> None:
    from worker.sweeper import sweep

    parent_id, children = split_parent(2)
    finish_child(children[0], ok=False)
    assert sweep(broker, queued_after_s=3600).settled == [parent_id]
    parent = store.get_job(parent_id)
    assert parent.status == "failed" and parent.error["piece_index"] == 0
    assert store.get_job(children[1]).status == "canceled"


def test_given_jobs_in_line_and_a_split_parent_when_read_expect_position_and_pieces_in_one_read(db_url: str) -> None:
    # given queued jobs on two queues and priorities, a running one, and a parent split in three
    small = {"method": "fast", "content": "c" * 64, "size": 64}
    early, _ = store.create_job("t1", small, priority=9)  # urgent and oldest, but running: not in line
    assert store.claim_job(early.id, task_id="e", worker="w0") is not None
    a, _ = store.create_job("t1", small)
    b, _ = store.create_job("t1", small, priority=5)
    c, _ = store.create_job("t2", small)
    other, _ = store.create_job("t1", small, queue="cpu")
    running, _ = store.create_job("t1", small)
    assert store.claim_job(running.id, task_id="r", worker="w0") is not None
    parent_id, children = split_parent(3)
    # when each is read the way GET /v1/jobs/{id} reads it
    reads = {j: store.read_job(j, tenant="t1" if j != c.id else "t2")
             for j in (a.id, b.id, c.id, other.id, running.id, parent_id, *children)}
    # expect the queued jobs' places (priority first, then age; per queue; any tenant), and None
    # for jobs not queued
    # (the children, created together, wait behind b, a and c on the parent's queue, in id
    # order; running, waiting and other queues' jobs are not in line)
    assert [reads[j].position for j in (b.id, a.id, c.id, other.id)] == [0, 1, 2, 0]
    assert sorted(reads[j].position for j in children) == [3, 4, 5]  # type: ignore[type-var]
    assert reads[running.id].position is None and reads[parent_id].position is None
    # expect the parent's pieces (and none for a piece or a plain job)
    pieces = reads[parent_id].pieces
    assert pieces is not None and (pieces.total, pieces.done, pieces.children) == (3, 0, children)
    assert reads[children[0]].pieces is None and reads[a.id].pieces is None
    # expect another tenant's job to be missing
    with pytest.raises(NotFound):
        store.read_job(a.id, tenant="t2")
