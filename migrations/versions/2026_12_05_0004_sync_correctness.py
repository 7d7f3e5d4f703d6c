"""Sync correctness: appointment sources cancelled at the provider, untracked stock.

Revision ID: 0004_sync_correctness
Revises: 0007_resilience
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0004_sync_correctness"
down_revision = "0007_resilience"
branch_labels = None
depends_on = None

STATEMENTS = [
    # A source the provider no longer returns in a completely read window is kept, marked CANCELLED
    # with the time of the change (KPIs and audit count it); it becomes ACTIVE again if it comes back.
    "ALTER TABLE appointment_sources ADD COLUMN status text NOT NULL DEFAULT 'ACTIVE' "
    "CONSTRAINT ck_appointment_sources_status CHECK (status IN ('ACTIVE','CANCELLED'))",
    "ALTER TABLE appointment_sources ADD COLUMN cancelled_at timestamptz",
    # NULL: the provider does not track this item's stock (Shopify's available: null).
    "ALTER TABLE inventory_items ALTER COLUMN quantity DROP NOT NULL",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("UPDATE inventory_items SET quantity = 0 WHERE quantity IS NULL")
    op.execute("ALTER TABLE inventory_items ALTER COLUMN quantity SET NOT NULL")
    op.execute("ALTER TABLE appointment_sources DROP COLUMN cancelled_at, DROP COLUMN status")
