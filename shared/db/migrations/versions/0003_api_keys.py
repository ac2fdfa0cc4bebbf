"""Tenants: hashed API keys, per-tenant limits, each job's estimated cost.

Revision ID: 0003_api_keys
Revises: 0001_initial
Create Date: 2025-01-03

Written by hand to mirror ``shared/db/orm.py`` (``ApiKey``, ``TenantLimits``,
``Job.estimated_cost``); ``tests/db/test_db_migrations.py`` diffs the migrated schema
against the ORM on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_api_keys"
down_revision = "0002_job_revision_preview"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])

    op.create_table(
        "tenant_limits",
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("max_queued_jobs", sa.Integer(), nullable=True),
        sa.Column("max_jobs_in_flight", sa.Integer(), nullable=True),
        sa.Column("max_cost_in_flight", sa.Float(), nullable=True),
        sa.Column("max_job_cost", sa.Float(), nullable=True),
        sa.Column("max_upload_bytes_per_day", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant", name=op.f("pk_tenant_limits")),
    )

    # Jobs queued before this revision count as costing nothing in flight.
    op.add_column("jobs", sa.Column("estimated_cost", sa.Float(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("estimated_cost")
    op.drop_table("tenant_limits")
    op.drop_index("ix_api_keys_tenant", table_name="api_keys")
    op.drop_table("api_keys")
