"""Provider connections, appointments with their sources, inventory, sync runs, webhook events.

Revision ID: 0003_syncs
Revises: 0002_askvx
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import context, op

revision = "0003_syncs"
down_revision = "0002_askvx"
branch_labels = None
depends_on = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
PROVIDERS = "('SQUARE','ACUITY','GOOGLE','APPLE','SHOPIFY','HUBSPOT')"

TENANT_TABLES = ("connected_accounts", "appointments", "appointment_sources", "inventory_items", "sync_runs")

STATEMENTS = [
    f"""
    CREATE TABLE connected_accounts (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_connected_accounts_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        provider text NOT NULL CONSTRAINT ck_connected_accounts_provider CHECK (provider IN {PROVIDERS}),
        status text NOT NULL CONSTRAINT ck_connected_accounts_status CHECK (status IN ('CONNECTED','EXPIRED','ERROR')),
        account_id text,
        access_token_ciphertext bytea,
        refresh_token_ciphertext bytea,
        expires_at timestamptz,
        scopes text[] NOT NULL DEFAULT '{{}}',
        config jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        sync_state jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        last_error text,
        connected_at timestamptz NOT NULL DEFAULT now(),
        last_synced_at timestamptz,
        CONSTRAINT uq_connected_accounts_tenant_provider UNIQUE (tenant_id, provider)
    )
    """,
    # Platform directory for inbound webhooks, which name a provider account, not a tenant.
    f"""
    CREATE TABLE provider_accounts (
        provider text NOT NULL CONSTRAINT ck_provider_accounts_provider CHECK (provider IN {PROVIDERS}),
        account_id text NOT NULL,
        tenant uuid NOT NULL,
        CONSTRAINT pk_provider_accounts PRIMARY KEY (provider, account_id, tenant)
    )
    """,
    f"""
    CREATE TABLE webhook_events (
        provider text NOT NULL CONSTRAINT ck_webhook_events_provider CHECK (provider IN {PROVIDERS}),
        event_id text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_webhook_events PRIMARY KEY (provider, event_id)
    )
    """,
    """
    CREATE TABLE appointments (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_appointments_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        title text NOT NULL,
        starts_at timestamptz NOT NULL,
        ends_at timestamptz NOT NULL,
        status text NOT NULL,
        contact_id uuid CONSTRAINT fk_appointments_contact REFERENCES contacts(id) ON DELETE SET NULL,
        shared_reference text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT ck_appointments_time CHECK (ends_at >= starts_at)
    )
    """,
    "CREATE INDEX ix_appointments_tenant_starts ON appointments (tenant_id, starts_at, id)",
    "CREATE INDEX ix_appointments_tenant_contact ON appointments (tenant_id, contact_id, starts_at)",
    "CREATE INDEX ix_appointments_tenant_reference ON appointments (tenant_id, shared_reference) WHERE shared_reference IS NOT NULL",
    f"""
    CREATE TABLE appointment_sources (
        tenant_id uuid NOT NULL CONSTRAINT fk_appointment_sources_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        appointment_id uuid NOT NULL CONSTRAINT fk_appointment_sources_appointment REFERENCES appointments(id) ON DELETE CASCADE,
        provider text NOT NULL CONSTRAINT ck_appointment_sources_provider CHECK (provider IN {PROVIDERS}),
        external_id text NOT NULL,
        seen_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_appointment_sources PRIMARY KEY (tenant_id, provider, external_id)
    )
    """,
    "CREATE INDEX ix_appointment_sources_tenant_appointment ON appointment_sources (tenant_id, appointment_id)",
    f"""
    CREATE TABLE inventory_items (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_inventory_items_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        provider text NOT NULL CONSTRAINT ck_inventory_items_provider CHECK (provider IN {PROVIDERS}),
        external_id text NOT NULL,
        sku text NOT NULL,
        name text NOT NULL,
        quantity integer NOT NULL,
        low_stock_threshold integer NOT NULL DEFAULT 5,
        price_cents bigint NOT NULL,
        currency text NOT NULL DEFAULT 'USD',
        synced_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT uq_inventory_items_tenant_provider_external UNIQUE (tenant_id, provider, external_id)
    )
    """,
    "CREATE INDEX ix_inventory_items_tenant_name ON inventory_items (tenant_id, name, id)",
    """
    CREATE TABLE sync_runs (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_sync_runs_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        job_id uuid,
        provider text NOT NULL,
        kind text NOT NULL,
        stats jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX ix_sync_runs_tenant_created ON sync_runs (tenant_id, created_at DESC)",
    # Syncs insert thousands of rows at once: refresh planner statistics sooner than the default 10 %.
    "ALTER TABLE appointments SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000)",
    "ALTER TABLE appointment_sources SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000)",
    "ALTER TABLE inventory_items SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000)",
    "ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false",
    "ALTER TABLE jobs ADD COLUMN attempts integer NOT NULL DEFAULT 0",
]


def upgrade() -> None:
    role: str = context.config.attributes.get("runtime_role", "brandvx_app")
    for statement in STATEMENTS:
        op.execute(statement)
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {CURRENT_TENANT}) WITH CHECK (tenant_id = {CURRENT_TENANT})"
        )
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON {", ".join(TENANT_TABLES)} TO "{role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON provider_accounts TO "{role}"')
    op.execute(f'GRANT SELECT, INSERT, DELETE ON webhook_events TO "{role}"')


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN cancel_requested, DROP COLUMN attempts")
    op.execute(f"DROP TABLE {', '.join(reversed(TENANT_TABLES))}, webhook_events, provider_accounts")
