"""Leases with fencing: ``jobs.fencing_token``, ``jobs.lease_expires_at`` and ``ix_jobs_status``.

Revision ID: 0005_leases
Revises: 0004_webhooks
Create Date: 2025-01-02

Jobs that are running when this runs get a lease that has already expired (at their last
heartbeat, ``updated_at``): the sweeper requeues them on its first pass unless a worker of
this version holds them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_leases"
down_revision = "0004_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("fencing_token", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.execute("UPDATE jobs SET lease_expires_at = updated_at WHERE status = 'running'")


def downgrade() -> None:
    op.drop_index("ix_jobs_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("fencing_token")
