"""Foundation: tenants, memberships, settings, onboarding, API keys, contacts; RLS; runtime role.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import context, op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

# Every tenant table gets the same policy shape. An unset or empty app.tenant_id becomes NULL, so the
# comparison is never true: a transaction that forgot its tenant sees and writes nothing.
CURRENT_TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
CURRENT_USER_ID = "(SELECT NULLIF(current_setting('app.user_id', true), ''))"
CURRENT_KEY_HASH = "(SELECT decode(NULLIF(current_setting('app.api_key_hash', true), ''), 'hex'))"

TENANT_TABLES = ("memberships", "tenant_settings", "onboarding_steps", "api_keys", "contacts")


def _execute_all(script: str) -> None:
    """asyncpg prepares every statement, so a script runs one statement at a time.

    Statements end with ";" at the end of a line; a DO block keeps its inner semicolons mid-line
    or closes with "$$" on its own line before the terminating ";".
    """
    statement: list[str] = []
    in_block = False
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith("DO $$"):
            in_block = True
        elif in_block and stripped == "$$":
            in_block = False
        statement.append(line)
        if stripped.endswith(";") and not in_block:
            sql = "\n".join(statement).strip().rstrip(";")
            if sql and not sql.startswith("--"):
                op.execute(sql)
            statement = []
    if "\n".join(statement).strip():
        op.execute("\n".join(statement))


def _enable_rls(table: str, column: str = "tenant_id") -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING ({column} = {CURRENT_TENANT}) WITH CHECK ({column} = {CURRENT_TENANT})"
    )


def upgrade() -> None:
    attributes = context.config.attributes
    role: str = attributes.get("runtime_role", "brandvx_app")
    password: str | None = attributes.get("runtime_password")

    # platform_roles is a platform table: no tenant, no RLS; the runtime role may only read it.
    _execute_all(
        """
        CREATE TABLE tenants (
            id uuid PRIMARY KEY,
            name text NOT NULL CONSTRAINT ck_tenants_name CHECK (length(name) BETWEEN 1 AND 200),
            timezone text NOT NULL DEFAULT 'UTC',
            plan_tier text NOT NULL DEFAULT 'LITE'
                CONSTRAINT ck_tenants_plan_tier CHECK (plan_tier IN ('LITE','STARTER','GROWTH','PRO')),
            subscription_status text NOT NULL DEFAULT 'trialing',
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE memberships (
            tenant_id uuid NOT NULL CONSTRAINT fk_memberships_tenant REFERENCES tenants(id) ON DELETE CASCADE,
            user_id text NOT NULL,
            role text NOT NULL
                CONSTRAINT ck_memberships_role CHECK (role IN ('OWNER_ADMIN','STAFF','SUPPORT')),
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_memberships PRIMARY KEY (tenant_id, user_id)
        );
        CREATE INDEX ix_memberships_user ON memberships (user_id);

        CREATE TABLE platform_roles (
            user_id text PRIMARY KEY,
            role text NOT NULL CONSTRAINT ck_platform_roles_role CHECK (role IN ('OPS')),
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE tenant_settings (
            tenant_id uuid PRIMARY KEY CONSTRAINT fk_tenant_settings_tenant REFERENCES tenants(id) ON DELETE CASCADE,
            quiet_start text,
            quiet_end text,
            brand_profile jsonb NOT NULL DEFAULT '{}'::jsonb,
            extra jsonb NOT NULL DEFAULT '{}'::jsonb,
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE onboarding_steps (
            tenant_id uuid NOT NULL CONSTRAINT fk_onboarding_steps_tenant REFERENCES tenants(id) ON DELETE CASCADE,
            step text NOT NULL CONSTRAINT ck_onboarding_steps_step
                CHECK (step IN ('BUSINESS_BASICS','CONNECTIONS','TRAIN_VX','CADENCES','GO_LIVE')),
            completed_at timestamptz NOT NULL DEFAULT now(),
            context jsonb,
            CONSTRAINT pk_onboarding_steps PRIMARY KEY (tenant_id, step)
        );

        CREATE TABLE api_keys (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL CONSTRAINT fk_api_keys_tenant REFERENCES tenants(id) ON DELETE CASCADE,
            name text NOT NULL,
            prefix text NOT NULL,
            token_hash bytea NOT NULL CONSTRAINT uq_api_keys_token_hash UNIQUE,
            scopes text[] NOT NULL,
            created_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            revoked_at timestamptz
        );
        CREATE INDEX ix_api_keys_tenant_created ON api_keys (tenant_id, created_at DESC, id DESC);

        CREATE TABLE contacts (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL CONSTRAINT fk_contacts_tenant REFERENCES tenants(id) ON DELETE CASCADE,
            display_name text NOT NULL,
            name_search text NOT NULL,
            email_ciphertext bytea,
            email_bidx bytea,
            email_masked text,
            phone_ciphertext bytea,
            phone_bidx bytea,
            phone_masked text,
            sms_consent boolean NOT NULL DEFAULT false,
            email_consent boolean NOT NULL DEFAULT false,
            tags text[] NOT NULL DEFAULT '{}',
            source text NOT NULL DEFAULT 'manual',
            last_visit_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_contacts_tenant_email UNIQUE (tenant_id, email_bidx),
            CONSTRAINT uq_contacts_tenant_phone UNIQUE (tenant_id, phone_bidx)
        );
        CREATE INDEX ix_contacts_tenant_created ON contacts (tenant_id, created_at DESC, id DESC);
        CREATE INDEX ix_contacts_tenant_name ON contacts (tenant_id, name_search text_pattern_ops);
        """
    )

    op.execute("ALTER TABLE tenants ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE tenants FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON tenants USING (id = {CURRENT_TENANT}) WITH CHECK (id = {CURRENT_TENANT})"
    )
    # A signed-in user may list the tenants they belong to (viewer, tenant switcher).
    op.execute(
        "CREATE POLICY member_read ON tenants FOR SELECT USING (id IN "
        f"(SELECT m.tenant_id FROM memberships m WHERE m.user_id = {CURRENT_USER_ID}))"
    )
    for table in TENANT_TABLES:
        _enable_rls(table)
    op.execute(f"CREATE POLICY own_memberships ON memberships FOR SELECT USING (user_id = {CURRENT_USER_ID})")
    # Authenticating an API key: whoever knows the key (and so its hash) may read that one row and
    # stamp last_used_at, before any tenant is known. Nothing else is visible through this policy.
    op.execute(
        f"CREATE POLICY key_by_hash_read ON api_keys FOR SELECT USING (token_hash = {CURRENT_KEY_HASH})"
    )
    op.execute(
        "CREATE POLICY key_by_hash_touch ON api_keys FOR UPDATE "
        f"USING (token_hash = {CURRENT_KEY_HASH}) WITH CHECK (token_hash = {CURRENT_KEY_HASH})"
    )

    # Permissive UPDATE policies are OR-ed, WITH CHECK included: without this trigger the key-hash
    # policy would let its holder re-scope, un-revoke or move the key. Outside the key's own tenant
    # scope, only last_used_at may change.
    op.execute(
        f"""
        CREATE FUNCTION api_keys_guard_touch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.tenant_id IS DISTINCT FROM {CURRENT_TENANT}
               AND (NEW.id, NEW.tenant_id, NEW.name, NEW.prefix, NEW.token_hash, NEW.scopes,
                    NEW.created_by, NEW.created_at, NEW.revoked_at)
                   IS DISTINCT FROM
                   (OLD.id, OLD.tenant_id, OLD.name, OLD.prefix, OLD.token_hash, OLD.scopes,
                    OLD.created_by, OLD.created_at, OLD.revoked_at)
            THEN
                RAISE EXCEPTION 'only last_used_at may change outside the key''s tenant'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER api_keys_guard_touch BEFORE UPDATE ON api_keys "
        "FOR EACH ROW EXECUTE FUNCTION api_keys_guard_touch()"
    )

    _execute_all(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE "{role}" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
            END IF;
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO "{role}"', current_database());
        END
        $$
        ;
        GRANT USAGE ON SCHEMA public TO "{role}";
        GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, {", ".join(TENANT_TABLES)} TO "{role}";
        GRANT SELECT ON platform_roles, alembic_version TO "{role}";
        """
    )
    if password:
        op.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password.replace(chr(39), chr(39) * 2)}'")


def downgrade() -> None:
    role: str = context.config.attributes.get("runtime_role", "brandvx_app")
    op.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"')
    op.execute(
        "DROP TABLE contacts, api_keys, onboarding_steps, tenant_settings, platform_roles, memberships, tenants"
    )
    op.execute("DROP FUNCTION api_keys_guard_touch()")
