"""Job status and its allowed transitions: no SQL, so the API and clients can import it.

Job life cycle (each arrow is named after the ``shared.jobs.store`` function that writes it;
a name in brackets is the arrow's guard, a condition beyond the source status: ``GUARDS``)::

                                          claim_job [same_task]
                                          +-----------+
                requeue_job               |           |
           +-------------------------+    |           |
           |                         |    |           v
           v                      +-------------------------+   succeed_job     +-----------+
      +--------+    claim_job     |                         | ----------------> | succeeded |
      | queued | ---------------> |         running         |                   +-----------+
      +--------+                  |                         |   mark_canceled   +-----------+
         |  |                     |                         | ----------------> | canceled  | <---+
         |  |                     |                         |                   +-----------+     |
         |  |                     |                         |   fail_job        +-----------+     |
         |  |                     |                         | ----------------> |  failed   |     |
         |  |                     +-------------------------+                   +-----------+     |
         |  |  fail_job [never_ran]                                                   ^           |
         |  +-------------------------------------------------------------------------+           |
         |     request_cancel                                                                     |
         +----------------------------------------------------------------------------------------+

    succeeded, failed, canceled are final: nothing leaves them.
    running -> running: a take-over by the same Celery task id (its message was delivered
    again after the worker died). queued -> failed: only a job that never ran.
    request_cancel on a running job only sets ``cancel_requested``; the worker sees it
    via ``record_progress`` / ``is_cancel_requested`` and calls ``mark_canceled``.

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


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})

#: Allowed transitions, source -> targets (running -> running is the task take-over).
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


class Guard(StrEnum):
    """A named condition a transition needs besides its source status (the store turns
    each into one SQL condition)."""

    #: ``attempts == 0``: a queued job may be given up on only if it never ran; a job
    #: requeued for a retry cannot be failed by a stale worker that lost it.
    NEVER_RAN = "never_ran"
    #: The job is held by the claiming Celery task id: its message came back after the
    #: worker running it died, and the same task takes it over.
    SAME_TASK = "same_task"


#: The guarded transitions; every other transition in ``TRANSITIONS`` needs only its source status.
GUARDS: dict[tuple[JobStatus, JobStatus], Guard] = {
    (JobStatus.QUEUED, JobStatus.FAILED): Guard.NEVER_RAN,
    (JobStatus.RUNNING, JobStatus.RUNNING): Guard.SAME_TASK,
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
