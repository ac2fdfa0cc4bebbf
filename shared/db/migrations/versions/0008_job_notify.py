"""PostgreSQL notifies ``stylefarm_jobs`` with the job's id when a job's status or cancel flag changes.

Revision ID: 0008_job_notify
Revises: 0007_queue_position
Create Date: 2026-12-07

An ``AFTER UPDATE`` row trigger sends ``pg_notify('stylefarm_jobs', id)`` when ``status`` or
``cancel_requested`` changed. PostgreSQL delivers it when the writing transaction commits (never
for a rolled-back write, once per job per transaction), so the API's event streams
(``api.job_wakeups``) send a status change as soon as it is committed instead of at their
next poll. Progress writes (one per running job every ``progress_interval_s``) do not notify:
a notifying commit holds PostgreSQL's notification-queue lock until it ends, so notifying
commits run one at a time; status changes, a few per job, stay far below what that allows,
progress writes at fleet scale (thousands a second) would not. Streams still poll for progress.
SQLite has no notifications: nothing to do there.
"""

from __future__ import annotations

from alembic import op

revision = "0008_job_notify"
down_revision = "0007_queue_position"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION stylefarm_notify_job() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('stylefarm_jobs', NEW.id::text);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_notify AFTER UPDATE ON jobs FOR EACH ROW
        WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.cancel_requested IS DISTINCT FROM NEW.cancel_requested)
        EXECUTE FUNCTION stylefarm_notify_job()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS jobs_notify ON jobs")
    op.execute("DROP FUNCTION IF EXISTS stylefarm_notify_job()")
