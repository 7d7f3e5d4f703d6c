from __future__ import annotations

import pytest

from brandvx.settings import Settings

PRODUCTION = {
    "BRANDVX_ENV": "production",
    "DATABASE_URL": "postgresql://owner@db/brandvx",
    "REDIS_URL": "redis://redis:6379/0",
    "BRANDVX_JWKS_URL": "https://auth.example/jwks.json",
    "BRANDVX_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
    "BRANDVX_BLIND_INDEX_KEY": "B" * 44,
}


def test_production_with_real_settings_starts() -> None:
    assert Settings(**PRODUCTION).env.value == "production"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"BRANDVX_ALLOW_WEAK_JWT": True}, "BRANDVX_ALLOW_WEAK_JWT"),
        ({"BRANDVX_JWKS_URL": None}, "BRANDVX_JWT_SECRET or BRANDVX_JWKS_URL"),
        ({"BRANDVX_ENCRYPTION_KEYS": None}, "BRANDVX_ENCRYPTION_KEYS"),
        ({"REDIS_URL": None}, "no embedded servers in production"),
    ],
)
def test_production_refuses_unsafe_settings(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**{**PRODUCTION, **override})


def test_weak_jwt_is_allowed_in_development() -> None:
    assert Settings(BRANDVX_ENV="development", BRANDVX_ALLOW_WEAK_JWT=True).allow_weak_jwt


def test_runtime_role_name_is_an_identifier() -> None:
    with pytest.raises(ValueError, match="BRANDVX_DB_RUNTIME_ROLE"):
        Settings(BRANDVX_DB_RUNTIME_ROLE='x"; DROP TABLE tenants; --')


def test_allowed_origins_are_comma_separated() -> None:
    settings = Settings(BRANDVX_ALLOWED_ORIGINS="https://app.brandvx.io, https://admin.brandvx.io")
    assert settings.allowed_origins == ["https://app.brandvx.io", "https://admin.brandvx.io"]


def test_redis_keys_are_namespaced_by_environment() -> None:
    assert (
        Settings(
            BRANDVX_ENV="production", **{k: v for k, v in PRODUCTION.items() if k != "BRANDVX_ENV"}
        ).key_prefix
        == "bvx:production:"
    )
    assert Settings(BRANDVX_REDIS_NAMESPACE="ci-1").arq_queue == "bvx:ci-1:arq:queue"
