"""The one place configuration is read from the environment."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every variable is documented in README.md ("Configuration")."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    env: Environment = Field(Environment.DEVELOPMENT, alias="BRANDVX_ENV")
    data_dir: Path = Field(Path(".brandvx"), alias="BRANDVX_DATA_DIR")
    redis_namespace: str = Field("", alias="BRANDVX_REDIS_NAMESPACE")

    database_url: str | None = Field(None, alias="DATABASE_URL")
    runtime_database_url: str | None = Field(None, alias="BRANDVX_RUNTIME_DATABASE_URL")
    runtime_db_role: str = Field(
        "brandvx_app", alias="BRANDVX_DB_RUNTIME_ROLE", pattern=r"^[a-z_][a-z0-9_]{0,62}$"
    )
    runtime_db_password: str | None = Field(None, alias="BRANDVX_DB_RUNTIME_PASSWORD")
    db_pool_size: int = Field(10, alias="BRANDVX_DB_POOL_SIZE", ge=1, le=200)
    redis_url: str | None = Field(None, alias="REDIS_URL")

    jwt_secret: str | None = Field(None, alias="BRANDVX_JWT_SECRET")
    jwks_url: str | None = Field(None, alias="BRANDVX_JWKS_URL")
    jwt_audience: str = Field("authenticated", alias="BRANDVX_JWT_AUDIENCE")
    jwt_issuer: str | None = Field(None, alias="BRANDVX_JWT_ISSUER")
    allow_weak_jwt: bool = Field(False, alias="BRANDVX_ALLOW_WEAK_JWT")

    encryption_keys: str | None = Field(None, alias="BRANDVX_ENCRYPTION_KEYS")
    blind_index_key: str | None = Field(None, alias="BRANDVX_BLIND_INDEX_KEY")

    max_body_bytes: int = Field(1_048_576, alias="BRANDVX_MAX_BODY_BYTES", ge=1024)
    max_query_depth: int = Field(10, alias="BRANDVX_MAX_QUERY_DEPTH", ge=2)
    max_aliases: int = Field(15, alias="BRANDVX_MAX_ALIASES", ge=1)
    max_query_tokens: int = Field(2000, alias="BRANDVX_MAX_QUERY_TOKENS", ge=100)
    anonymous_rate_limit_points: int = Field(30, alias="BRANDVX_ANONYMOUS_RATE_LIMIT_POINTS", ge=0)
    anonymous_rate_limit_restore_per_second: float = Field(
        0.5, alias="BRANDVX_ANONYMOUS_RATE_LIMIT_RESTORE_PER_SECOND", gt=0
    )
    max_tenants_per_user: int = Field(5, alias="BRANDVX_MAX_TENANTS_PER_USER", ge=1)
    max_query_fields: int = Field(2000, alias="BRANDVX_MAX_QUERY_FIELDS", ge=10)
    allowed_origins_raw: str = Field("", alias="BRANDVX_ALLOWED_ORIGINS")
    cors_max_age_seconds: int = Field(600, alias="BRANDVX_CORS_MAX_AGE_SECONDS", ge=0)
    header_timeout_seconds: float = Field(10.0, alias="BRANDVX_HEADER_TIMEOUT_SECONDS", gt=0)
    body_timeout_seconds: float = Field(30.0, alias="BRANDVX_BODY_TIMEOUT_SECONDS", gt=0)
    keep_alive_timeout_seconds: int = Field(5, alias="BRANDVX_KEEP_ALIVE_TIMEOUT_SECONDS", ge=1)
    shutdown_grace_seconds: int = Field(10, alias="BRANDVX_SHUTDOWN_GRACE_SECONDS", ge=0)
    introspection: bool = Field(True, alias="BRANDVX_INTROSPECTION")
    default_phone_region: str = Field("US", alias="BRANDVX_DEFAULT_PHONE_REGION")

    sentry_dsn: str | None = Field(None, alias="SENTRY_DSN")
    posthog_api_key: str | None = Field(None, alias="POSTHOG_API_KEY")
    posthog_host: str = Field("https://us.i.posthog.com", alias="POSTHOG_HOST")
    openai_api_key: str | None = Field(None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    ai_model: str = Field("gpt-5", alias="BRANDVX_AI_MODEL")
    ai_timeout_seconds: float = Field(120.0, alias="BRANDVX_AI_TIMEOUT_SECONDS", gt=0)
    ai_idle_timeout_seconds: float = Field(30.0, alias="BRANDVX_AI_IDLE_TIMEOUT_SECONDS", gt=0)
    ai_max_retries: int = Field(2, alias="BRANDVX_AI_MAX_RETRIES", ge=0, le=10)
    askvx_retention_days: int = Field(90, alias="BRANDVX_ASKVX_RETENTION_DAYS", ge=1)
    worker_metrics_port: int | None = Field(None, alias="BRANDVX_WORKER_METRICS_PORT")
    rate_limit_points: int = Field(5_000, alias="BRANDVX_RATE_LIMIT_POINTS", ge=0)
    rate_limit_restore_per_second: float = Field(250.0, alias="BRANDVX_RATE_LIMIT_RESTORE_PER_SECOND", gt=0)

    public_url: str = Field("http://127.0.0.1:8000", alias="BRANDVX_PUBLIC_URL")
    app_url: str = Field("http://127.0.0.1:8000/graphql", alias="BRANDVX_APP_URL")
    sync_past_days: int = Field(30, alias="BRANDVX_SYNC_PAST_DAYS", ge=0, le=3650)
    sync_future_days: int = Field(180, alias="BRANDVX_SYNC_FUTURE_DAYS", ge=1, le=3650)
    low_stock_default: int = Field(5, alias="BRANDVX_LOW_STOCK_DEFAULT", ge=0)
    sync_job_timeout_seconds: int = Field(1800, alias="BRANDVX_SYNC_JOB_TIMEOUT_SECONDS", ge=1)
    square_client_id: str | None = Field(None, alias="SQUARE_CLIENT_ID")
    square_client_secret: str | None = Field(None, alias="SQUARE_CLIENT_SECRET")
    square_base_url: str = Field("https://connect.squareup.com", alias="SQUARE_BASE_URL")
    square_webhook_signature_key: str | None = Field(None, alias="SQUARE_WEBHOOK_SIGNATURE_KEY")
    acuity_client_id: str | None = Field(None, alias="ACUITY_CLIENT_ID")
    acuity_client_secret: str | None = Field(None, alias="ACUITY_CLIENT_SECRET")
    acuity_base_url: str = Field("https://acuityscheduling.com", alias="ACUITY_BASE_URL")
    google_client_id: str | None = Field(None, alias="GOOGLE_CLIENT_ID")
    google_client_secret: str | None = Field(None, alias="GOOGLE_CLIENT_SECRET")
    google_auth_base_url: str = Field("https://accounts.google.com", alias="GOOGLE_AUTH_BASE_URL")
    google_token_base_url: str = Field("https://oauth2.googleapis.com", alias="GOOGLE_TOKEN_BASE_URL")
    google_api_base_url: str = Field("https://www.googleapis.com", alias="GOOGLE_API_BASE_URL")
    shopify_client_id: str | None = Field(None, alias="SHOPIFY_CLIENT_ID")
    shopify_client_secret: str | None = Field(None, alias="SHOPIFY_CLIENT_SECRET")
    shopify_api_version: str = Field("2024-10", alias="SHOPIFY_API_VERSION")
    shopify_base_url_overrides_raw: str = Field("", alias="SHOPIFY_BASE_URL_OVERRIDES")
    apple_caldav_url: str = Field("https://caldav.icloud.com", alias="APPLE_CALDAV_URL")
    log_level: str = Field("INFO", alias="BRANDVX_LOG_LEVEL")
    inline_worker: bool | None = Field(None, alias="BRANDVX_INLINE_WORKER")

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        if self.env is not Environment.PRODUCTION:
            return self
        problems = []
        if self.allow_weak_jwt:
            problems.append("BRANDVX_ALLOW_WEAK_JWT is for local development only")
        if not (self.jwt_secret or self.jwks_url):
            problems.append("set BRANDVX_JWT_SECRET or BRANDVX_JWKS_URL")
        if not self.encryption_keys or not self.blind_index_key:
            problems.append("set BRANDVX_ENCRYPTION_KEYS and BRANDVX_BLIND_INDEX_KEY")
        if not self.database_url or not self.redis_url:
            problems.append("set DATABASE_URL and REDIS_URL (no embedded servers in production)")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def key_prefix(self) -> str:
        """Redis namespace: ``bvx:{env}:`` unless overridden (tests use a unique one per run)."""
        return f"bvx:{self.redis_namespace or self.env.value}:"

    @property
    def allowed_origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins_raw.split(",") if o.strip()]

    @property
    def shopify_base_url_overrides(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.shopify_base_url_overrides_raw.split(",") if "=" in item)
        return {shop.strip(): url.strip() for shop, url in pairs}

    @property
    def arq_queue(self) -> str:
        return self.key_prefix + "arq:queue"
