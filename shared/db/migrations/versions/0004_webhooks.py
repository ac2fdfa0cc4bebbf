"""Webhooks: the job's ``webhook_*`` columns and the tenants' ``webhook_secrets``.

Revision ID: 0004_webhooks
Revises: 0002_job_revision_preview
Create Date: 2026-12-01

A job may carry a ``webhook_url``; the columns beside it record the delivery of its one
final-status event (``shared.webhooks``). ``ix_jobs_webhook_pending`` holds only the
events not delivered yet, for the reconciler's sweep of lost delivery messages.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_webhooks"
down_revision = "0003_api_keys"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
PENDING = sa.text("webhook_state = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("webhook_url", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("webhook_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("webhook_last_status", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("webhook_last_error", sa.String(500), nullable=True))
        batch.add_column(sa.Column("webhook_delivered_at", TS, nullable=True))
        batch.add_column(sa.Column("webhook_next_attempt_at", TS, nullable=True))
    op.create_index("ix_jobs_webhook_pending", "jobs", ["finished_at"], sqlite_where=PENDING, postgresql_where=PENDING)
    op.create_table(
        "webhook_secrets",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_webhook_secrets")),
    )


def downgrade() -> None:
    op.drop_table("webhook_secrets")
    op.drop_index("ix_jobs_webhook_pending", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for column in (
            "webhook_next_attempt_at",
            "webhook_delivered_at",
            "webhook_last_error",
            "webhook_last_status",
            "webhook_attempts",
            "webhook_state",
            "webhook_url",
        ):
            batch.drop_column(column)
