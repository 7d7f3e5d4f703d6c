"""Heartbeats of running work, and what a job was enqueued with, so lost work can be found and
enqueued again from PostgreSQL (the record) when a worker dies or Redis loses its data.

Revision ID: 0007_resilience
Revises: 0003_syncs
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0007_resilience"
down_revision = "0003_syncs"
branch_labels = None
depends_on = None

STATEMENTS = [
    # Written by the worker every few seconds while it runs the job or streams the reply.
    "ALTER TABLE jobs ADD COLUMN heartbeat_at timestamptz",
    # The job function's arguments beyond (tenant, job id), e.g. a strategy's goals.
    "ALTER TABLE jobs ADD COLUMN args jsonb NOT NULL DEFAULT '{}'::jsonb",
    "ALTER TABLE askvx_messages ADD COLUMN heartbeat_at timestamptz",
    # The reconciler's scans: only unfinished rows, tenant first like every tenant index.
    "CREATE INDEX ix_jobs_tenant_active ON jobs (tenant_id, status) WHERE status IN ('PENDING','RUNNING')",
    "CREATE INDEX ix_askvx_messages_tenant_streaming ON askvx_messages (tenant_id) WHERE status = 'STREAMING'",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP INDEX ix_askvx_messages_tenant_streaming")
    op.execute("DROP INDEX ix_jobs_tenant_active")
    op.execute("ALTER TABLE askvx_messages DROP COLUMN heartbeat_at")
    op.execute("ALTER TABLE jobs DROP COLUMN heartbeat_at, DROP COLUMN args")
