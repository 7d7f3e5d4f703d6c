"""CORS for an SPA on another origin, driven by BRANDVX_ALLOWED_ORIGINS (issue 10, item 11)."""

from __future__ import annotations

import pytest

from brandvx.settings import Settings
from tests.conftest import app_client, make_user

SPA = "https://app.brandvx.test"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-tenant-id, apollo-require-preflight",
}


@pytest.fixture
def cors_settings(migrated: Settings) -> Settings:
    return migrated.model_copy(update={"allowed_origins_raw": f"{SPA}, https://admin.brandvx.test"})


async def test_preflight_from_an_allowed_origin_is_answered(cors_settings: Settings) -> None:
    async with app_client(cors_settings) as (_, http):
        response = await http.options("/graphql", headers={"Origin": SPA, **PREFLIGHT})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == SPA
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].lower().split(",")}
    assert {
        "authorization",
        "content-type",
        "x-tenant-id",
        "apollo-require-preflight",
        "x-brandvx-csrf",
    } <= allowed
    assert "POST" in response.headers["access-control-allow-methods"]
    assert int(response.headers["access-control-max-age"]) > 0


async def test_a_request_from_an_allowed_origin_can_be_read(cors_settings: Settings) -> None:
    user = make_user()
    async with app_client(cors_settings) as (_, http):
        response = await http.post(
            "/graphql",
            json={"query": "{ viewer { userId } }"},
            headers={"Origin": SPA, "Authorization": f"Bearer {user.token}"},
        )
    assert response.status_code == 200
    assert response.json()["data"]["viewer"]["userId"] == user.id
    assert response.headers["access-control-allow-origin"] == SPA
    assert response.headers["access-control-allow-credentials"] == "true"


async def test_other_origins_get_no_allow_origin(cors_settings: Settings) -> None:
    evil = "https://evil.example"
    async with app_client(cors_settings) as (_, http):
        preflight = await http.options("/graphql", headers={"Origin": evil, **PREFLIGHT})
        simple = await http.post(
            "/graphql",
            json={"query": "{ viewer { userId } }"},
            headers={"Origin": evil, "Authorization": f"Bearer {make_user().token}"},
        )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_no_origins_configured_allows_none(migrated: Settings) -> None:
    async with app_client(migrated) as (_, http):
        preflight = await http.options("/graphql", headers={"Origin": SPA, **PREFLIGHT})
    assert "access-control-allow-origin" not in preflight.headers
