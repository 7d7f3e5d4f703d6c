"""The `brandvx` command, run as a user would (subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from brandvx.settings import Settings
from integrations.auth_jwt import JwtVerifier
from tests.conftest import JWT_SECRET, ROOT, TenantFixture, gql

pytestmark = pytest.mark.slow


def brandvx(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("BRANDVX_", "DATABASE_URL", "REDIS_URL"))
    }
    return subprocess.run(
        [sys.executable, "-m", "brandvx", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_token_refuses_without_a_secret(tmp_path: Path) -> None:
    result = brandvx("token", "--user", "u1", env={"BRANDVX_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "no signing secret" in result.stderr
    assert result.stdout == ""


def test_token_refuses_in_production(tmp_path: Path) -> None:
    env = {
        "BRANDVX_ENV": "production",
        "BRANDVX_JWT_SECRET": JWT_SECRET,
        "DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "BRANDVX_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
        "BRANDVX_BLIND_INDEX_KEY": "B" * 44,
    }
    result = brandvx("token", "--user", "u1", env=env)
    assert result.returncode == 2
    assert "refusing" in result.stderr


async def test_token_is_a_valid_jwt(tmp_path: Path) -> None:
    result = brandvx(
        "token", "--user", "user-42", "--email", "a@b.test", env={"BRANDVX_JWT_SECRET": JWT_SECRET}
    )
    assert result.returncode == 0, result.stderr
    verified = await JwtVerifier(hs256_secret=JWT_SECRET, jwks_url=None).verify(result.stdout.strip())
    assert (verified.user_id, verified.email) == ("user-42", "a@b.test")


async def test_token_with_role_grants_membership(
    migrated: Settings, client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    env = {
        "BRANDVX_JWT_SECRET": JWT_SECRET,
        "DATABASE_URL": migrated.database_url or "",
        "REDIS_URL": migrated.redis_url or "",
        "BRANDVX_ENCRYPTION_KEYS": migrated.encryption_keys or "",
        "BRANDVX_BLIND_INDEX_KEY": migrated.blind_index_key or "",
    }
    result = brandvx("token", "--tenant", tenant.uuid, "--user", "staff-1", "--role", "STAFF", env=env)
    assert result.returncode == 0, result.stderr
    body = await gql(client, "{ viewer { userId role } }", token=result.stdout.strip(), tenant=tenant.uuid)
    assert body["data"]["viewer"] == {"userId": "staff-1", "role": "STAFF"}


def test_migrate_is_idempotent(migrated: Settings, tmp_path: Path) -> None:
    env = {"DATABASE_URL": migrated.database_url or "", "BRANDVX_DATA_DIR": str(tmp_path)}
    result = brandvx("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "migrations applied" in result.stdout
    assert not (tmp_path / "dev-secrets.json").exists()  # migrating needs no application secrets


def test_worker_needs_servers(tmp_path: Path) -> None:
    result = brandvx("worker", env={"BRANDVX_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr


@pytest.mark.parametrize("tenant", ["00000000-0000-4000-8000-000000000000", "not-a-tenant"])
def test_token_for_an_unknown_tenant_is_a_one_line_error(migrated: Settings, tenant: str) -> None:
    env = {
        "BRANDVX_ENV": "test",
        "BRANDVX_JWT_SECRET": JWT_SECRET,
        "DATABASE_URL": migrated.database_url or "",
    }
    result = brandvx("token", "--tenant", tenant, "--role", "STAFF", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("unknown tenant:")
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_dead_letters_lists_what_finally_failed(migrated: Settings) -> None:
    key = f"cli-test:{uuid.uuid4()}"

    async def insert() -> None:
        conn = await asyncpg.connect(migrated.database_url)
        try:
            await conn.execute(
                "INSERT INTO dead_letters (outbox_id, kind, payload, idempotency_key, attempts, reason, "
                "created_at) VALUES (0, 'sync_calendar', $1::jsonb, $2, 8, "
                "'enqueue failed: ConnectionError', now() - interval '5 minutes')",
                json.dumps({"args": ["tenant", "job"]}),
                key,
            )
        finally:
            await conn.close()

    asyncio.run(insert())
    result = brandvx("dead-letters", "--limit", "1000", env={"DATABASE_URL": migrated.database_url or ""})
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    [mine] = [row for row in rows if row["key"] == key]
    assert (mine["kind"], mine["attempts"], mine["reason"], mine["args"]) == (
        "sync_calendar",
        8,
        "enqueue failed: ConnectionError",
        ["tenant", "job"],
    )
    assert "dead letters; outbox:" in result.stderr
