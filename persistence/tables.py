"""Table definitions for queries. The schema itself is owned by the Alembic migrations."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    Column("plan_tier", Text, nullable=False),
    Column("subscription_status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

platform_roles = Table(
    "platform_roles",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

tenant_settings = Table(
    "tenant_settings",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("quiet_start", Text),
    Column("quiet_end", Text),
    Column("brand_profile", JSONB, nullable=False),
    Column("extra", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

onboarding_steps = Table(
    "onboarding_steps",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("step", Text, primary_key=True),
    Column("completed_at", DateTime(timezone=True), nullable=False),
    Column("context", JSONB),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("token_hash", LargeBinary, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("name_search", Text, nullable=False),
    Column("email_ciphertext", LargeBinary),
    Column("email_bidx", LargeBinary),
    Column("email_masked", Text),
    Column("phone_ciphertext", LargeBinary),
    Column("phone_bidx", LargeBinary),
    Column("phone_masked", Text),
    Column("sms_consent", Boolean, nullable=False),
    Column("email_consent", Boolean, nullable=False),
    Column("tags", ARRAY(Text), nullable=False),
    Column("source", Text, nullable=False),
    Column("last_visit_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

plans = Table(
    "plans",
    metadata,
    Column("tier", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("ai_tokens_monthly", BigInteger, nullable=False),
    Column("messages_monthly", Integer, nullable=False),
)

tenant_directory = Table(
    "tenant_directory",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

usage_limits = Table(
    "usage_limits",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("period", Date, primary_key=True),
    Column("ai_tokens_used", BigInteger, nullable=False),
    Column("ai_messages_used", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("progress", Float, nullable=False),
    Column("message", Text),
    Column("result", JSONB),
    Column("error", Text),
    Column("dedupe_key", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("cancel_requested", Boolean, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("args", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

askvx_sessions = Table(
    "askvx_sessions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("user_id", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

askvx_messages = Table(
    "askvx_messages",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("session_id", UUID(as_uuid=True), nullable=False),
    Column("role", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("model", Text),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
)

trainvx_memories = Table(
    "trainvx_memories",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

ai_memories = Table(
    "ai_memories",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("summary", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

onboarding_artifacts = Table(
    "onboarding_artifacts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("job_id", UUID(as_uuid=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

connected_accounts = Table(
    "connected_accounts",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("provider", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("account_id", Text),
    Column("access_token_ciphertext", LargeBinary),
    Column("refresh_token_ciphertext", LargeBinary),
    Column("expires_at", DateTime(timezone=True)),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("config", JSONB, nullable=False),
    Column("sync_state", JSONB, nullable=False),
    Column("last_error", Text),
    Column("connected_at", DateTime(timezone=True), nullable=False),
    Column("last_synced_at", DateTime(timezone=True)),
)

provider_accounts = Table(
    "provider_accounts",
    metadata,
    Column("provider", Text, primary_key=True),
    Column("account_id", Text, primary_key=True),
    Column("tenant", UUID(as_uuid=True), primary_key=True),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("provider", Text, primary_key=True),
    Column("event_id", Text, primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

appointments = Table(
    "appointments",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("title", Text, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False),
    Column("contact_id", UUID(as_uuid=True)),
    Column("shared_reference", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

appointment_sources = Table(
    "appointment_sources",
    metadata,
    Column("tenant_id", UUID(as_uuid=True), primary_key=True),
    Column("provider", Text, primary_key=True),
    Column("external_id", Text, primary_key=True),
    Column("appointment_id", UUID(as_uuid=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False),
    Column("cancelled_at", DateTime(timezone=True)),
)

inventory_items = Table(
    "inventory_items",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("provider", Text, nullable=False),
    Column("external_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("quantity", Integer),  # NULL: stock not tracked by the provider
    Column("low_stock_threshold", Integer, nullable=False),
    Column("price_cents", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("synced_at", DateTime(timezone=True), nullable=False),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", UUID(as_uuid=True), nullable=False),
    Column("job_id", UUID(as_uuid=True)),
    Column("provider", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("stats", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
