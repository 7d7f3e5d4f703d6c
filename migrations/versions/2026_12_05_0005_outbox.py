"""The transactional outbox and its dead letters (platform tables: function names and ids only).

Revision ID: 0005_outbox
Revises: 0004_sync_correctness
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import context, op

revision = "0005_outbox"
down_revision = "0004_sync_correctness"
branch_labels = None
depends_on = None

# Not tenant tables: the relay reads every tenant's rows and the runtime role cannot (and must not)
# bypass row-level security. The rows carry an ARQ function name and ids, never PII; see
# persistence/outbox.py.
STATEMENTS = [
    """
    CREATE TABLE outbox (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue text NOT NULL,
        kind text NOT NULL,
        payload jsonb NOT NULL,
        idempotency_key text NOT NULL CONSTRAINT uq_outbox_idempotency_key UNIQUE,
        attempts integer NOT NULL DEFAULT 0,
        available_at timestamptz NOT NULL DEFAULT now(),
        last_error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        relayed_at timestamptz
    )
    """,
    "CREATE INDEX ix_outbox_due ON outbox (queue, available_at, id) WHERE relayed_at IS NULL",
    "CREATE INDEX ix_outbox_relayed ON outbox (relayed_at) WHERE relayed_at IS NOT NULL",
    """
    CREATE TABLE dead_letters (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        outbox_id bigint NOT NULL,
        kind text NOT NULL,
        payload jsonb NOT NULL,
        idempotency_key text NOT NULL,
        attempts integer NOT NULL,
        reason text NOT NULL,
        created_at timestamptz NOT NULL,
        failed_at timestamptz NOT NULL DEFAULT now()
    )
    """,
]


def upgrade() -> None:
    role: str = context.config.attributes.get("runtime_role", "brandvx_app")
    for statement in STATEMENTS:
        op.execute(statement)
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON outbox, dead_letters TO "{role}"')


def downgrade() -> None:
    op.execute("DROP TABLE dead_letters, outbox")
