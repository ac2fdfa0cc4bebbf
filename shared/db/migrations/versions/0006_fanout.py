"""Fan-out (parent and child jobs): ``jobs.piece`` and ``ix_jobs_parent_id``.

Revision ID: 0006_fanout
Revises: 0005_leases
Create Date: 2025-01-03

``jobs.parent_id`` exists since 0001; a child job now also says which piece of its parent
it renders (``piece``: index, total, label, data), and the children of a parent are found
by an index. The new statuses (``waiting``, ``assembling``) fit the existing column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_fanout"
down_revision = "0005_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("piece", sa.JSON(), nullable=True))
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_parent_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("piece")
