"""The queued jobs of a queue in the order workers take them: ``ix_jobs_queued_order``.

Revision ID: 0007_queue_position
Revises: 0006_fanout
Create Date: 2026-12-06

``GET /v1/jobs/{id}`` of a queued job counts the queued jobs ahead of it (same queue, higher
priority, or same priority and older). Without this index that count scans every queued row of
the table's status index; with it, one range of a partial index that holds only waiting jobs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_queue_position"
down_revision = "0006_fanout"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_queued_order",
        "jobs",
        ["queue", "priority", "created_at", "id"],
        sqlite_where=sa.text("status = 'queued'"),
        postgresql_where=sa.text("status = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_queued_order", table_name="jobs")
