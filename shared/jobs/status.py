"""Job status and its allowed transitions: no SQL, so the API and clients can import it.

Job life cycle (each arrow is named after the ``shared.jobs.store`` function that writes it;
a name in brackets is the arrow's guard, a condition beyond the source status: ``GUARDS``)::

                    requeue_job [fenced]
               +-------------------------+
               |                         |
               v                      +-------------------------+   succeed_job [fenced]   +-----------+
          +--------+    claim_job     |                         | -----------------------> | succeeded |
          | queued | ---------------> |         running         |                          +-----------+
          +--------+  [within_budget] |                         |   mark_canceled [fenced] +-----------+
             |  |                     |                         | -----------------------> | canceled  | <---------+
             |  |                     |                         |                          |           | <------+  |
             |  |                     |                         |                          |           | <---+  |  |
             |  |                     |                         |                          +-----------+     |  |  |
             |  |                     |                         |   fail_job [fenced]      +-----------+     |  |  |
             |  |                     |                         | -----------------------> |  failed   |     |  |  |
             |  |                     +-------------------------+                          +-----------+     |  |  |
             |  |                        |                 ^                                ^     ^          |  |  |
             |  |                        |                 |   fail_job [never_ran_or_spent]|     |          |  |  |
             |  +------------------------------------------|--------------------------------+     |          |  |  |
             |     request_cancel        |                 |                                      |          |  |  |
             +-----------------------------------------------------------------------------------------------------+
                                         |                 |                                      |          |  |
                      split_job [fenced] |                 | claim_job [within_budget]            |          |  |
                                         v                 |                                      |          |  |
                                    +---------+      +------------+                               |          |  |
                                    | waiting | ---> | assembling | --------------------------------------------+
                                    +---------+      +------------+  request_cancel               |          |
                                      |  |  settle_parent [children_succeeded]                    |          |
                                      |  |                                                        |          |
                                      |  +--------------------------------------------------------+          |
                                      |     settle_parent [child_failed]                                     |
                                      +----------------------------------------------------------------------+
                                        request_cancel

    succeeded, failed, canceled are final: nothing leaves them.
    A claim takes a new fencing token and a lease; every later write of the holder carries
    that token ([fenced]) and is refused (``LeaseLost``) once the job was requeued or
    claimed again. The sweeper requeues (or, past the attempt budget, fails) a running job
    whose lease expired, with the token it read. There is no running -> running: a message
    delivered again finds its job running under a live lease and is dropped.
    queued -> failed: only a job that never ran, or one whose attempt budget is spent.
    request_cancel on a running job only sets ``cancel_requested``; the worker sees it
    via ``record_progress`` / ``is_cancel_requested`` and calls ``mark_canceled``.

    Fan-out (``shared.jobs.fanout``): a job whose method splits (``Method.fanout``) is claimed
    like any job; when its splitter answers with pieces, the holder inserts one child job per
    piece (``parent_id``, ``piece``) and moves the parent running -> waiting in the same
    transaction (``split_job``), releasing its lease: a waiting parent holds no worker. Each
    child is an ordinary job (queue, claim, lease, retries). ``settle_parent`` decides the
    parent once its children are final: all succeeded -> assembling (exactly once: the
    conditional UPDATE finds the parent waiting only once, whoever calls it, however many
    children finish together), one failed or canceled -> failed, naming the piece. An
    assembling parent is claimed again (its attempts start from 0: the assembly has its own
    budget) and its holder runs the assembler; a requeued assembly goes back to queued, and
    a queued parent whose children all succeeded is assembled when claimed. request_cancel
    on a parent also cancels its queued children and asks its running ones to stop.

The drawing is the table: ``tests/db/test_db_state_machine.py`` reads its arrows and checks
they equal ``TRANSITIONS``, and its bracketed labels equal ``GUARDS``. Drawing rules: a
status is a ``+---+`` box with its name inside; an arrow runs along ``-`` and ``|``, turns
only at ``+`` and ends in ``>``, ``<``, ``v`` or ``^`` touching its target box (horizontal
lines may keep one blank from a box).

The one writer of status is ``shared.jobs.store``: every write there is a conditional
UPDATE whose allowed source states come from ``TRANSITIONS`` and whose guards come from
``GUARDS``.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    #: A parent job whose pieces (child jobs) are being rendered; it holds no worker.
    WAITING = "waiting"
    #: Every piece succeeded; the parent waits for a worker to put them together.
    ASSEMBLING = "assembling"


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

#: Allowed transitions, source -> targets.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED, JobStatus.WAITING}
    ),
    JobStatus.WAITING: frozenset({JobStatus.ASSEMBLING, JobStatus.FAILED, JobStatus.CANCELED}),
    JobStatus.ASSEMBLING: frozenset({JobStatus.RUNNING, JobStatus.CANCELED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


class Guard(StrEnum):
    """A named condition a transition needs besides its source status (the store turns
    each into one SQL condition)."""

    #: ``attempts < max_attempts``: a claim never starts a run beyond the one attempt budget
    #: (``Settings.max_attempts``); attempts are counted here, at claim time.
    WITHIN_BUDGET = "within_budget"
    #: ``fencing_token == <the writer's token>``: only the holder of the current claim (or
    #: the sweeper, with the token of the lease it found expired) may move a running job.
    FENCED = "fenced"
    #: ``attempts == 0 or attempts >= max_attempts``: a queued job may be given up on only
    #: if it never ran, or if it may not run again.
    NEVER_RAN_OR_SPENT = "never_ran_or_spent"
    #: Every child job of the parent succeeded (and it has at least one).
    CHILDREN_SUCCEEDED = "children_succeeded"
    #: A child job of the parent failed or was canceled.
    CHILD_FAILED = "child_failed"


#: The guarded transitions; every other transition in ``TRANSITIONS`` needs only its source status.
GUARDS: dict[tuple[JobStatus, JobStatus], Guard] = {
    (JobStatus.QUEUED, JobStatus.RUNNING): Guard.WITHIN_BUDGET,
    (JobStatus.QUEUED, JobStatus.FAILED): Guard.NEVER_RAN_OR_SPENT,
    (JobStatus.ASSEMBLING, JobStatus.RUNNING): Guard.WITHIN_BUDGET,
    (JobStatus.WAITING, JobStatus.ASSEMBLING): Guard.CHILDREN_SUCCEEDED,
    (JobStatus.WAITING, JobStatus.FAILED): Guard.CHILD_FAILED,
    **{(JobStatus.RUNNING, target): Guard.FENCED for target in TRANSITIONS[JobStatus.RUNNING]},
}

for (_source, _target), _guard in GUARDS.items():  # a guard on a forbidden transition is a typo
    if _target not in TRANSITIONS[_source]:
        raise ValueError(f"guard {_guard} is on {_source} -> {_target}, which TRANSITIONS does not allow")


def can_transition(source: str, target: str) -> bool:
    """Whether the state machine allows ``source -> target``."""
    return JobStatus(target) in TRANSITIONS[JobStatus(source)]


def sources_of(target: JobStatus) -> tuple[JobStatus, ...]:
    """The statuses ``target`` may be reached from, in ``JobStatus`` order."""
    return tuple(s for s in JobStatus if target in TRANSITIONS[s])
