"""The job state machine in shared.jobs.store: every allowed and forbidden transition, races."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from shared.errors import IdempotencyKeyReused, InvalidTransition, LeaseLost, NotFound
from shared.jobs import status as job_status
from shared.jobs import store
from shared.jobs.status import JobStatus

from harness import race

SPEC = {"method": "fast", "content": "a" * 64}
PROBLEM = {"type": "https://stylefarm.dev/problems/engine-error", "title": "x", "status": 500, "detail": "boom"}


def make(status: JobStatus, task_id: str = "task-1") -> str:
    """A job brought into ``status`` through the public functions only."""
    job, _ = store.create_job("t1", SPEC)
    if status == JobStatus.QUEUED:
        return job.id
    if status == JobStatus.CANCELED:
        store.request_cancel(job.id, "t1")
        return job.id
    claimed = store.claim_job(job.id, task_id=task_id, worker="w1")
    assert claimed is not None
    if status == JobStatus.SUCCEEDED:
        store.succeed_job(job.id, {"keys": {"image": "k"}, "width": 1, "height": 1, "metrics": {}},
                          token=claimed.fencing_token)
    elif status == JobStatus.FAILED:
        store.fail_job(job.id, PROBLEM, token=claimed.fencing_token)
    return job.id


def status_of(job_id: str) -> str:
    return store.get_job(job_id).status


def token_of(job_id: str) -> int:
    """The job's current fencing token: what its holder, if any, writes with."""
    return store.get_job(job_id).fencing_token


# --- allowed transitions ---------------------------------------------------------------


def test_given_new_job_expect_queued_with_defaults_from_specs(db_url: str) -> None:
    job, created = store.create_job("t1", SPEC)
    assert created and job.status == "queued" and len(job.id) == 32
    assert job.queue == "gpu" and job.attempts == 0 and job.cancel_requested is False
    assert job.spec["model"] == "multistyle26" and job.spec["size"] == 512  # filled in by shared.jobs.specs


def test_given_queued_when_claimed_expect_running_attempt_one(db_url: str) -> None:
    job_id = make(JobStatus.QUEUED)
    job = store.claim_job(job_id, task_id="task-1", worker="w1")
    assert job is not None and job.status == "running"
    assert job.attempts == 1 and job.worker == "w1" and job.task_id == "task-1" and job.started_at is not None
    assert job.fencing_token == 1 and job.lease_expires_at is not None and job.lease_expires_at > job.started_at


@pytest.mark.parametrize("task_id", ["task-1", "task-2"])
def test_given_running_under_a_live_lease_when_a_message_comes_again_expect_none(db_url: str, task_id: str) -> None:
    """No running -> running take-over, not even by the same task id (its message delivered
    again after a visibility timeout): the job keeps its holder, token and attempts."""
    job_id = make(JobStatus.RUNNING, task_id="task-1")
    before = store.get_job(job_id)
    assert store.claim_job(job_id, task_id=task_id, worker="w2") is None
    after = store.get_job(job_id)
    assert (after.worker, after.fencing_token, after.attempts) == ("w1", before.fencing_token, 1)


def test_given_running_when_succeeded_expect_result_and_progress_one(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING)
    result = {"keys": {"image": "k"}, "width": 4, "height": 3, "metrics": {"s": 1.0}}
    job = store.succeed_job(job_id, result, token=token_of(job_id))
    assert job.status == "succeeded" and job.progress == 1.0 and job.finished_at is not None
    assert job.result["width"] == 4 and job.lease_expires_at is None


def test_given_running_when_failed_expect_problem_stored(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING)
    job = store.fail_job(job_id, PROBLEM, token=token_of(job_id))
    assert job.status == "failed" and job.error == PROBLEM and job.finished_at is not None


def test_given_queued_when_failed_expect_failed(db_url: str) -> None:
    """queued -> failed: the API fails a job it could not hand to the broker."""
    job_id = make(JobStatus.QUEUED)
    assert store.fail_job(job_id, PROBLEM).status == "failed"


def test_given_running_when_requeued_expect_queued_then_claimable(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING)
    job = store.requeue_job(job_id, PROBLEM, token=token_of(job_id))
    assert job.status == "queued" and job.error == PROBLEM and job.worker is None and job.lease_expires_at is None
    again = store.claim_job(job_id, task_id="task-1", worker="w3")
    assert again is not None and again.attempts == 2 and again.fencing_token == 2


def test_given_running_when_marked_canceled_expect_canceled(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING)
    assert store.mark_canceled(job_id, token=token_of(job_id)).status == "canceled"


def test_given_queued_when_cancel_requested_expect_canceled_at_once(db_url: str) -> None:
    job_id = make(JobStatus.QUEUED)
    job = store.request_cancel(job_id, "t1")
    assert job.status == "canceled" and job.finished_at is not None
    assert store.claim_job(job_id, task_id="task-1", worker="w1") is None


def test_given_running_when_cancel_requested_expect_flag_seen_by_worker(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING)
    token = token_of(job_id)
    assert store.record_progress(job_id, token=token, step=1, total=10) is False
    job = store.request_cancel(job_id, "t1")
    assert job.status == "running" and job.cancel_requested is True
    assert store.is_cancel_requested(job_id) is True
    assert store.record_progress(job_id, token=token, step=2, total=10) is True
    assert store.mark_canceled(job_id, token=token).status == "canceled"


def test_given_canceled_when_cancel_again_expect_same_job(db_url: str) -> None:
    job_id = make(JobStatus.CANCELED)
    assert store.request_cancel(job_id, "t1").status == "canceled"


@pytest.mark.parametrize("final", [JobStatus.SUCCEEDED, JobStatus.FAILED])
def test_given_finished_when_cancel_requested_expect_conflict(db_url: str, final: JobStatus) -> None:
    job_id = make(final)
    with pytest.raises(InvalidTransition) as info:
        store.request_cancel(job_id, "t1")
    assert info.value.status == 409


# --- forbidden transitions -------------------------------------------------------------

#: The holder's writes, each with the job's current token (a queued job's is 0: nobody holds it).
FINISHERS: dict[str, Callable[[str], object]] = {
    "succeed": lambda j: store.succeed_job(j, {"keys": {}, "width": 1, "height": 1, "metrics": {}}, token=token_of(j)),
    "fail": lambda j: store.fail_job(j, PROBLEM, token=token_of(j)),
    "mark_canceled": lambda j: store.mark_canceled(j, token=token_of(j)),
    "requeue": lambda j: store.requeue_job(j, PROBLEM, token=token_of(j)),
}

FORBIDDEN = [
    (JobStatus.QUEUED, "succeed"),
    (JobStatus.QUEUED, "mark_canceled"),
    (JobStatus.QUEUED, "requeue"),
] + [(final, op) for final in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED) for op in FINISHERS]


@pytest.mark.parametrize(("source", "op"), FORBIDDEN, ids=[f"{s.value}-{o}" for s, o in FORBIDDEN])
def test_given_status_when_forbidden_transition_expect_invalid_transition(
    db_url: str, source: JobStatus, op: str
) -> None:
    job_id = make(source)
    with pytest.raises(InvalidTransition):
        FINISHERS[op](job_id)
    assert status_of(job_id) == source.value


@pytest.mark.parametrize("final", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED])
def test_given_finished_when_claimed_expect_none_even_for_same_task(db_url: str, final: JobStatus) -> None:
    job_id = make(final, task_id="task-1")
    assert store.claim_job(job_id, task_id="task-1", worker="w1") is None
    assert status_of(job_id) == final.value


def test_given_finished_when_progress_reported_expect_lease_lost_and_nothing_written(db_url: str) -> None:
    job_id = make(JobStatus.SUCCEEDED)
    with pytest.raises(LeaseLost):
        store.record_progress(job_id, token=token_of(job_id), step=5, total=10)
    assert store.get_job(job_id).step == 0


def test_given_other_token_when_finishing_expect_lease_lost(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING, task_id="task-1")
    with pytest.raises(LeaseLost) as info:
        store.succeed_job(job_id, {"keys": {}}, token=token_of(job_id) + 1)
    assert info.value.status == 409 and "no longer held by token 2" in info.value.detail
    assert store.succeed_job(job_id, {"keys": {}}, token=token_of(job_id)).status == "succeeded"


def test_transition_table_matches_docstring() -> None:
    assert job_status.can_transition("queued", "running") and job_status.can_transition("running", "queued")
    assert not job_status.can_transition("running", "running")  # no take-over: a claim needs a queued job
    assert not job_status.can_transition("succeeded", "running")
    assert not job_status.can_transition("queued", "succeeded")
    for final in job_status.FINAL_STATUSES:
        assert not job_status.TRANSITIONS[final]
    table = {(s.value, t.value) for s, targets in job_status.TRANSITIONS.items() for t in targets}
    assert diagram_edges(job_status.__doc__ or "") == table


def test_diagram_guard_labels_match_guards() -> None:
    labels = set(re.findall(r"\[(\w+)\]", job_status.__doc__ or ""))
    assert labels == {g.value for g in job_status.GUARDS.values()} == {g.value for g in job_status.Guard}


def test_diagram_reader_follows_lines_and_arrowheads() -> None:
    """The reader behind the docstring test: a bent arrow, a reversed one, a broken one."""
    boxes = """
    +---+        +---+
    | a | -----> | b |
    +---+        +---+
      |            ^
      +------------+
    """
    assert diagram_edges(boxes) == {("a", "b")}
    assert diagram_edges(boxes.replace("----->", "<-----")) == {("b", "a"), ("a", "b")}
    with pytest.raises(ValueError, match="breaks"):
        diagram_edges(boxes.replace("----->", "-- -->"))


ARROWHEADS = {">": (0, 1), "<": (0, -1), "v": (1, 0), "^": (-1, 0)}


def diagram_edges(text: str) -> set[tuple[str, str]]:
    """The ``(source, target)`` arrows of an ASCII state diagram drawn by the rules in
    ``shared.jobs.status``: boxes are ``+--+`` rectangles named by their text; a line runs
    along ``-`` / ``|``, turns only at ``+``, ends in an arrowhead touching its target box;
    horizontal ends may keep one blank from a box."""
    grid = text.splitlines()
    width = max(map(len, grid), default=0)
    grid = [row.ljust(width) for row in grid]

    def at(r: int, c: int) -> str:
        return grid[r][c] if 0 <= r < len(grid) and 0 <= c < width else " "

    border: dict[tuple[int, int], str] = {}  # cell on a box's outline -> the box's name
    for r, c in [(r, c) for r in range(len(grid)) for c in range(width)]:
        if at(r, c) != "+" or at(r, c + 1) != "-" or at(r + 1, c) != "|":
            continue
        c2, r2 = c + 1, r + 1
        while at(r, c2) == "-":
            c2 += 1
        while at(r2, c) == "|":
            r2 += 1
        if not (at(r, c2) == at(r2, c) == at(r2, c2) == "+"):
            continue
        if any(at(r2, x) != "-" for x in range(c + 1, c2)) or any(at(y, c2) != "|" for y in range(r + 1, r2)):
            continue
        name = " ".join(grid[y][c + 1 : c2].strip() for y in range(r + 1, r2)).strip()
        for y in range(r, r2 + 1):
            for x in range(c, c2 + 1):
                if y in (r, r2) or x in (c, c2):
                    border[(y, x)] = name

    def box_at(r: int, c: int, dr: int, dc: int) -> str | None:
        """The box at ``(r, c)``, or one blank further in direction ``(dr, dc)``."""
        if (r, c) in border:
            return border[(r, c)]
        return border.get((r + dr, c + dc)) if at(r, c) == " " else None

    edges = set()
    for r, c in [(r, c) for r in range(len(grid)) for c in range(width)]:
        if at(r, c) not in ARROWHEADS:
            continue
        dr, dc = ARROWHEADS[at(r, c)]
        if at(r - dr, c - dc) not in ("|" if dr else "-", "+"):
            continue  # a letter in a label, not an arrowhead
        target = box_at(r + dr, c + dc, dr, dc)
        if target is None:
            continue
        y, x, dy, dx = r, c, -dr, -dc  # walk the line back to its source
        while True:
            y, x = y + dy, x + dx
            cell = at(y, x)
            if (y, x) in border or cell == " ":
                source = box_at(y, x, dy, dx)
                if source is None:
                    raise ValueError(
                        f"the arrow at line {r + 1}, column {c + 1} breaks at line {y + 1}, column {x + 1}"
                    )
                break
            if cell == "+":
                turns = [(ty, tx) for ty, tx in ((dx, dy), (-dx, -dy)) if at(y + ty, x + tx) == ("|" if ty else "-")]
                if len(turns) != 1:
                    raise ValueError(f"the corner at line {y + 1}, column {x + 1} does not turn one way")
                dy, dx = turns[0]
            elif cell not in "-|":
                raise ValueError(f"the arrow at line {r + 1}, column {c + 1} runs into {cell!r} at line {y + 1}")
        edges.add((source, target))
    return edges


# --- guards: named conditions attached to transitions, one SQL each ---------------------


def test_every_guard_has_its_sql_and_sits_on_an_allowed_transition() -> None:
    assert set(store.GUARD_SQL) == set(job_status.Guard)
    for (source, target), _guard in job_status.GUARDS.items():
        assert job_status.can_transition(source, target)


def test_guard_sql_is_part_of_the_transition_condition() -> None:
    """queued -> failed carries the attempt checks, running -> X the writer's fencing token,
    and a claim the attempt budget."""
    def sql(target: JobStatus, **kwargs: object) -> str:
        return str(store.allowed_condition(target, **kwargs).compile(compile_kwargs={"literal_binds": True}))

    failed = sql(JobStatus.FAILED, args=store.GuardArgs(token=7, max_attempts=3))
    assert "attempts = 0" in failed and "attempts >= 3" in failed and "fencing_token = 7" in failed
    assert "'queued'" in failed and "'running'" in failed
    claim = sql(JobStatus.RUNNING, args=store.GuardArgs(max_attempts=4))
    assert "attempts < 4" in claim and "'queued'" in claim and "'running'" not in claim
    assert "false" in sql(JobStatus.SUCCEEDED).lower()  # no token: no holder may finish
    canceled = sql(JobStatus.CANCELED, only_from=[JobStatus.RUNNING], args=store.GuardArgs(token=3))
    assert "'running'" in canceled and "fencing_token = 3" in canceled and "'queued'" not in canceled


def test_a_store_function_cannot_widen_the_table() -> None:
    with pytest.raises(ValueError, match="not in TRANSITIONS"):
        store.allowed_condition(JobStatus.SUCCEEDED, only_from=[JobStatus.QUEUED])


def test_given_missing_job_expect_not_found(db_url: str) -> None:
    with pytest.raises(NotFound):
        store.get_job("0" * 32)
    with pytest.raises(NotFound):
        store.fail_job("0" * 32, PROBLEM)
    assert store.claim_job("0" * 32, task_id="t", worker="w") is None


def test_given_other_tenant_expect_not_found(db_url: str) -> None:
    job_id = make(JobStatus.QUEUED)
    with pytest.raises(NotFound):
        store.get_job(job_id, "t2")
    with pytest.raises(NotFound):
        store.request_cancel(job_id, "t2")


# --- progress --------------------------------------------------------------------------


def test_given_running_when_progress_expect_fraction_and_heartbeat(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING)
    before = store.get_job(job_id)
    stop = store.record_progress(job_id, token=before.fencing_token, step=25, total=100, loss=1.5, stage="optimize")
    assert stop is False
    job = store.get_job(job_id)
    assert (job.step, job.total, job.progress, job.loss, job.stage) == (25, 100, 0.25, 1.5, "optimize")
    assert job.updated_at >= before.updated_at and job.lease_expires_at >= before.lease_expires_at  # renewed too


def test_given_nan_loss_expect_stored_as_null(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING)
    store.record_progress(job_id, token=token_of(job_id), step=1, total=2, loss=float("nan"))
    assert store.get_job(job_id).loss is None


# --- races -----------------------------------------------------------------------------


def test_given_queued_when_workers_race_to_claim_expect_exactly_one_winner(db_url: str) -> None:
    for _ in range(3):
        job_id = make(JobStatus.QUEUED)
        results = race(8, lambda i, job_id=job_id: store.claim_job(job_id, task_id=f"task-{i}", worker=f"w{i}"))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        job = store.get_job(job_id)
        assert job.attempts == 1 and job.task_id == winners[0].task_id


def test_given_running_when_workers_race_to_finish_expect_exactly_one(db_url: str) -> None:
    job_id = make(JobStatus.RUNNING)
    ops = [FINISHERS["succeed"], FINISHERS["fail"], FINISHERS["mark_canceled"], FINISHERS["requeue"]] * 2
    results = race(len(ops), lambda i: ops[i](job_id))
    assert sum(not isinstance(r, Exception) for r in results) == 1, results
    assert all(isinstance(r, InvalidTransition) for r in results if isinstance(r, Exception))


# --- idempotency -----------------------------------------------------------------------


def test_given_same_key_and_body_expect_same_job_not_created(db_url: str) -> None:
    first, created = store.create_job("t1", SPEC, idempotency_key="k1")
    again, created_again = store.create_job("t1", dict(SPEC), idempotency_key="k1")
    assert created and not created_again and again.id == first.id


def test_given_same_key_other_tenant_expect_separate_jobs(db_url: str) -> None:
    a, _ = store.create_job("t1", SPEC, idempotency_key="k1")
    b, created = store.create_job("t2", SPEC, idempotency_key="k1")
    assert created and a.id != b.id


def test_given_same_key_other_body_expect_reused_error(db_url: str) -> None:
    store.create_job("t1", SPEC, idempotency_key="k1")
    with pytest.raises(IdempotencyKeyReused) as info:
        store.create_job("t1", {**SPEC, "size": 256}, idempotency_key="k1")
    assert info.value.status == 422


def test_given_racing_creates_with_one_key_expect_one_job(db_url: str) -> None:
    results = race(6, lambda i: store.create_job("t1", SPEC, idempotency_key="race"))
    assert not any(isinstance(r, Exception) for r in results), results
    assert len({r[0].id for r in results}) == 1 and sum(r[1] for r in results) == 1


# --- listing ---------------------------------------------------------------------------


def test_given_many_jobs_when_paging_expect_each_once_newest_first(db_url: str) -> None:
    ids = [store.create_job("t1", SPEC)[0].id for _ in range(7)]
    store.create_job("t2", SPEC)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page, cursor = store.list_jobs("t1", limit=3, cursor=cursor)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_given_filters_expect_only_matching(db_url: str) -> None:
    queued = make(JobStatus.QUEUED)
    running = make(JobStatus.RUNNING)
    assert [j.id for j in store.list_jobs("t1", status="running")[0]] == [running]
    assert [j.id for j in store.list_jobs("t1", status="queued", method="fast")[0]] == [queued]
    assert store.list_jobs("t1", method="adain")[0] == []


def test_given_garbage_cursor_expect_invalid_cursor(db_url: str) -> None:
    from shared.errors import InvalidCursor

    with pytest.raises(InvalidCursor):
        store.list_jobs("t1", cursor="not-a-cursor")


def test_given_requeued_job_when_stale_worker_fails_it_expect_invalid_transition(db_url: str) -> None:
    """queued -> failed is only for jobs that never ran (or are out of attempts); a retry
    waiting in the queue stays, whether the old holder or anyone else tries."""
    job_id = make(JobStatus.RUNNING)
    token = token_of(job_id)
    store.requeue_job(job_id, PROBLEM, token=token)
    with pytest.raises(LeaseLost):
        store.fail_job(job_id, PROBLEM, token=token)
    with pytest.raises(InvalidTransition):
        store.fail_job(job_id, PROBLEM)
    assert status_of(job_id) == "queued"
