"""AskVX: plans and usage, jobs, chat sessions and messages, TrainVX and rolling memories, artifacts.

Revision ID: 0002_askvx
Revises: 0001_foundation
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import context, op

revision = "0002_askvx"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"

TENANT_TABLES = (
    "usage_limits",
    "jobs",
    "askvx_sessions",
    "askvx_messages",
    "trainvx_memories",
    "ai_memories",
    "onboarding_artifacts",
)

STATEMENTS = [
    # Platform tables: no tenant, no RLS, read-only for the runtime role.
    """
    CREATE TABLE plans (
        tier text PRIMARY KEY CONSTRAINT ck_plans_tier CHECK (tier IN ('LITE','STARTER','GROWTH','PRO')),
        name text NOT NULL,
        price_cents integer NOT NULL,
        ai_tokens_monthly bigint NOT NULL,
        messages_monthly integer NOT NULL
    )
    """,
    """
    INSERT INTO plans (tier, name, price_cents, ai_tokens_monthly, messages_monthly) VALUES
        ('LITE', 'Lite', 0, 50000, 100),
        ('STARTER', 'Starter', 4900, 500000, 1000),
        ('GROWTH', 'Growth', 9900, 2000000, 5000),
        ('PRO', 'Pro', 19900, 10000000, 25000)
    """,
    # Tenant ids only (no tenant_id column: it is no tenant's data), so that cron jobs can visit every tenant and scope each visit with RLS.
    """
    CREATE TABLE tenant_directory (
        id uuid PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "INSERT INTO tenant_directory (id, created_at) SELECT id, created_at FROM tenants",
    """
    CREATE FUNCTION tenants_to_directory() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO tenant_directory (id, created_at) VALUES (NEW.id, NEW.created_at)
        ON CONFLICT DO NOTHING;
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE TRIGGER tenants_to_directory AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_to_directory()
    """,
    """
    CREATE TABLE usage_limits (
        tenant_id uuid NOT NULL CONSTRAINT fk_usage_limits_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        period date NOT NULL,
        ai_tokens_used bigint NOT NULL DEFAULT 0,
        ai_messages_used integer NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT pk_usage_limits PRIMARY KEY (tenant_id, period)
    )
    """,
    """
    CREATE TABLE jobs (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_jobs_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        kind text NOT NULL,
        status text NOT NULL DEFAULT 'PENDING'
            CONSTRAINT ck_jobs_status CHECK (status IN ('PENDING','RUNNING','COMPLETED','FAILED','CANCELLED')),
        progress real NOT NULL DEFAULT 0 CONSTRAINT ck_jobs_progress CHECK (progress BETWEEN 0 AND 1),
        message text,
        result jsonb,
        error text,
        dedupe_key text,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
    )
    """,
    "CREATE INDEX ix_jobs_tenant_created ON jobs (tenant_id, created_at DESC, id DESC)",
    """
    CREATE UNIQUE INDEX uq_jobs_tenant_dedupe_active ON jobs (tenant_id, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('PENDING','RUNNING')
    """,
    """
    CREATE TABLE askvx_sessions (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_askvx_sessions_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        user_id text NOT NULL,
        title text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX ix_askvx_sessions_tenant_created ON askvx_sessions (tenant_id, created_at DESC, id DESC)",
    """
    CREATE TABLE askvx_messages (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_askvx_messages_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        session_id uuid NOT NULL CONSTRAINT fk_askvx_messages_session REFERENCES askvx_sessions(id) ON DELETE CASCADE,
        role text NOT NULL CONSTRAINT ck_askvx_messages_role CHECK (role IN ('USER','ASSISTANT','SYSTEM')),
        content text NOT NULL DEFAULT '',
        status text NOT NULL CONSTRAINT ck_askvx_messages_status CHECK (status IN ('STREAMING','COMPLETE','FAILED')),
        error text,
        model text,
        input_tokens integer,
        output_tokens integer,
        created_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz
    )
    """,
    "CREATE INDEX ix_askvx_messages_tenant_session ON askvx_messages (tenant_id, session_id, created_at, id)",
    "CREATE INDEX ix_askvx_messages_tenant_created ON askvx_messages (tenant_id, created_at)",
    """
    CREATE TABLE trainvx_memories (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_trainvx_memories_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        key text NOT NULL CONSTRAINT ck_trainvx_memories_key CHECK (length(key) BETWEEN 1 AND 100),
        value text NOT NULL CONSTRAINT ck_trainvx_memories_value CHECK (length(value) BETWEEN 1 AND 4000),
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT uq_trainvx_memories_tenant_key UNIQUE (tenant_id, key)
    )
    """,
    """
    CREATE TABLE ai_memories (
        tenant_id uuid PRIMARY KEY CONSTRAINT fk_ai_memories_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        summary text NOT NULL DEFAULT '',
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE onboarding_artifacts (
        id uuid PRIMARY KEY,
        tenant_id uuid NOT NULL CONSTRAINT fk_onboarding_artifacts_tenant REFERENCES tenants(id) ON DELETE CASCADE,
        kind text NOT NULL,
        content text NOT NULL,
        job_id uuid,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX ix_onboarding_artifacts_tenant_kind ON onboarding_artifacts (tenant_id, kind, created_at DESC)",
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
    op.execute(f'GRANT SELECT ON plans, tenant_directory TO "{role}"')
    # The trigger runs as the inserting (runtime) role.
    op.execute(f'GRANT INSERT ON tenant_directory TO "{role}"')


def downgrade() -> None:
    op.execute("DROP TRIGGER tenants_to_directory ON tenants")
    op.execute("DROP FUNCTION tenants_to_directory()")
    op.execute(f"DROP TABLE {', '.join(reversed(TENANT_TABLES))}, tenant_directory, plans")
