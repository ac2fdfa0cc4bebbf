"""Jobs: ``revision`` (event sequence) and ``preview_version``.

Revision ID: 0002_job_revision_preview
Revises: 0001_initial
Create Date: 2026-11-30

``revision`` is bumped by every write of a job row (``shared.jobs.store``) and is the id of
the job's server-sent events; ``preview_version`` counts the preview images a worker
uploaded for an ``optimize`` / ``masked`` job.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_job_revision_preview"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch.add_column(sa.Column("preview_version", sa.Integer(), nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("preview_version")
        batch.drop_column("revision")
