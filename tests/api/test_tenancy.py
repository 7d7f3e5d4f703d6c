"""Tenants, settings and onboarding through the API."""

from __future__ import annotations

import base64
from typing import Any
from uuid import UUID

import httpx
import pytest

from brandvx.runtime import Runtime
from domain.model import Role
from tests.conftest import TenantFixture, User, gql, make_user

CREATE_TENANT = """
mutation($name: String!, $tz: String) {
  createTenant(input: {name: $name, timezone: $tz}) {
    tenant { id name timezone planTier subscriptionStatus }
    userErrors { field message code }
  }
}
"""

SETTINGS_FIELDS = "timezone quietHours { start end } brandProfile { businessName tone services } extra"
SETTINGS = "{ settings { " + SETTINGS_FIELDS + " } }"
UPDATE_SETTINGS = (
    "mutation($input: UpdateSettingsInput!) { updateSettings(input: $input) { settings { "
    + SETTINGS_FIELDS
    + " } userErrors { field message code } } }"
)

ONBOARDING_FIELDS = "steps { key completed completedAt } completedCount complete"
ONBOARDING = "{ onboarding { " + ONBOARDING_FIELDS + " } }"
COMPLETE_STEP = (
    "mutation($step: OnboardingStepKey!, $context: JSON) { completeOnboardingStep(input: "
    "{step: $step, context: $context}) { onboarding { "
    + ONBOARDING_FIELDS
    + " } userErrors { field message code } } }"
)

STEPS = ["BUSINESS_BASICS", "CONNECTIONS", "TRAIN_VX", "CADENCES", "GO_LIVE"]


def _global_id(tenant_uuid: str) -> str:
    return base64.urlsafe_b64encode(f"Tenant:{tenant_uuid}".encode()).decode().rstrip("=")


async def _tenant_ids(runtime: Runtime, *, user: User) -> list[str]:
    async with runtime.db.transaction(user_id=user.id) as uow:
        return [str(i) for i in await uow.tenants.ids_for_user(user.id)]


async def _create(client: httpx.AsyncClient, *, user: User, name: str, tz: str | None) -> dict[str, Any]:
    body = await gql(client, CREATE_TENANT, {"name": name, "tz": tz}, token=user.token)
    payload: dict[str, Any] = body["data"]["createTenant"]
    return payload


async def _settings(client: httpx.AsyncClient, *, tenant: TenantFixture) -> dict[str, Any]:
    body = await gql(client, SETTINGS, token=tenant.owner.token, tenant=tenant.uuid)
    settings: dict[str, Any] = body["data"]["settings"]
    return settings


async def _update(client: httpx.AsyncClient, *, tenant: TenantFixture, **fields: Any) -> dict[str, Any]:
    body = await gql(client, UPDATE_SETTINGS, {"input": fields}, token=tenant.owner.token, tenant=tenant.uuid)
    payload: dict[str, Any] = body["data"]["updateSettings"]
    return payload


async def _complete(client: httpx.AsyncClient, *, tenant: TenantFixture, step: str) -> dict[str, Any]:
    body = await gql(client, COMPLETE_STEP, {"step": step}, token=tenant.owner.token, tenant=tenant.uuid)
    payload: dict[str, Any] = body["data"]["completeOnboardingStep"]
    assert payload["userErrors"] == []
    return payload["onboarding"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- createTenant


async def test_creator_becomes_owner_admin(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user = make_user()
    payload = await _create(client, user=user, name="  Glow   Studio ", tz="Europe/Paris")
    assert payload["userErrors"] == []
    tenant = payload["tenant"]
    assert {k: v for k, v in tenant.items() if k != "id"} == {
        "name": "Glow Studio",
        "timezone": "Europe/Paris",
        "planTier": "LITE",
        "subscriptionStatus": "trialing",
    }
    body = await gql(
        client,
        "{ viewer { userId role tenant { id name timezone } } }",
        token=user.token,
        tenant=tenant["id"],
    )
    assert body["data"]["viewer"] == {
        "userId": user.id,
        "role": "OWNER_ADMIN",
        "tenant": {"id": tenant["id"], "name": "Glow Studio", "timezone": "Europe/Paris"},
    }
    (tenant_uuid,) = await _tenant_ids(runtime, user=user)
    assert tenant["id"] == _global_id(tenant_uuid)
    async with runtime.db.transaction(user_id=user.id) as uow:
        assert await uow.tenants.access_of(UUID(tenant_uuid), user.id) == (Role.OWNER_ADMIN, False)


async def test_timezone_defaults_to_utc(client: httpx.AsyncClient) -> None:
    user = make_user()
    payload = await _create(client, user=user, name="No Zone", tz=None)
    assert payload["userErrors"] == []
    assert payload["tenant"]["timezone"] == "UTC"
    body = await gql(client, "{ settings { timezone } }", token=user.token, tenant=payload["tenant"]["id"])
    assert body["data"]["settings"] == {"timezone": "UTC"}


@pytest.mark.parametrize("tz", ["Mars/Base", "../../etc/passwd", "america/chicago", " "])
async def test_invalid_timezone_creates_nothing(client: httpx.AsyncClient, runtime: Runtime, tz: str) -> None:
    user = make_user()
    payload = await _create(client, user=user, name="Nowhere", tz=tz)
    assert payload["tenant"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", ["timezone"])]
    assert await _tenant_ids(runtime, user=user) == []
    body = await gql(client, "{ viewer { role tenant { id } onboardingComplete } }", token=user.token)
    assert body["data"]["viewer"] == {"role": None, "tenant": None, "onboardingComplete": False}


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
async def test_invalid_name_creates_nothing(client: httpx.AsyncClient, runtime: Runtime, name: str) -> None:
    user = make_user()
    payload = await _create(client, user=user, name=name, tz="UTC")
    assert payload["tenant"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", ["name"])]
    assert await _tenant_ids(runtime, user=user) == []


async def test_a_user_may_own_several_tenants(client: httpx.AsyncClient, runtime: Runtime) -> None:
    user = make_user()
    first = await _create(client, user=user, name="One", tz=None)
    second = await _create(client, user=user, name="Two", tz=None)
    ids = await _tenant_ids(runtime, user=user)
    assert len(ids) == 2
    assert first["tenant"]["id"] != second["tenant"]["id"]


# ---------------------------------------------------------------- settings


async def test_new_tenant_settings_defaults(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    assert await _settings(client, tenant=tenant) == {
        "timezone": "America/Chicago",
        "quietHours": None,
        "brandProfile": {"businessName": None, "tone": None, "services": []},
        "extra": {},
    }


async def test_update_timezone_is_reflected_on_tenant(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    payload = await _update(client, tenant=tenant, timezone="Asia/Tokyo")
    assert payload["userErrors"] == []
    assert payload["settings"]["timezone"] == "Asia/Tokyo"
    assert (await _settings(client, tenant=tenant))["timezone"] == "Asia/Tokyo"
    body = await gql(
        client, "{ viewer { tenant { timezone } } }", token=tenant.owner.token, tenant=tenant.uuid
    )
    assert body["data"]["viewer"]["tenant"] == {"timezone": "Asia/Tokyo"}

    bad = await _update(client, tenant=tenant, timezone="Mars/Base")
    assert bad["settings"] is None
    assert [(e["code"], e["field"]) for e in bad["userErrors"]] == [("INVALID", ["timezone"])]
    body = await gql(
        client, "{ viewer { tenant { timezone } } }", token=tenant.owner.token, tenant=tenant.uuid
    )
    assert body["data"]["viewer"]["tenant"] == {"timezone": "Asia/Tokyo"}


async def test_quiet_hours_across_midnight(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    payload = await _update(client, tenant=tenant, quietHours={"start": "21:00", "end": "08:00"})
    assert payload["userErrors"] == []
    assert payload["settings"]["quietHours"] == {"start": "21:00", "end": "08:00"}
    assert (await _settings(client, tenant=tenant))["quietHours"] == {"start": "21:00", "end": "08:00"}


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("25:00", "08:00", ["quietHours", "start"]),
        ("21:00", "9:00", ["quietHours", "end"]),
        ("21:60", "08:00", ["quietHours", "start"]),
        ("24:00", "08:00", ["quietHours", "start"]),
        ("21:00", "08:00:00", ["quietHours", "end"]),
        ("22:00", "22:00", ["quietHours"]),
    ],
)
async def test_invalid_quiet_hours_change_nothing(
    client: httpx.AsyncClient, tenant: TenantFixture, start: str, end: str, field: list[str]
) -> None:
    ok = await _update(client, tenant=tenant, quietHours={"start": "20:30", "end": "07:15"})
    assert ok["userErrors"] == []
    before = await _settings(client, tenant=tenant)

    # A valid timezone in the same input must not be saved either: the update is all or nothing.
    payload = await _update(
        client, tenant=tenant, timezone="Europe/Berlin", quietHours={"start": start, "end": end}
    )
    assert payload["settings"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", field)]
    assert await _settings(client, tenant=tenant) == before
    assert before["quietHours"] == {"start": "20:30", "end": "07:15"}
    assert before["timezone"] == "America/Chicago"


async def test_quiet_hours_with_trailing_newline_is_invalid(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    # "HH:MM" only: a regex anchored with `$` also accepts "21:00\n" (it matches before a final newline).
    payload = await _update(client, tenant=tenant, quietHours={"start": "21:00\n", "end": "08:00"})
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", ["quietHours", "start"])]
    assert (await _settings(client, tenant=tenant))["quietHours"] is None


async def test_brand_profile_partial_updates_merge(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    first = await _update(client, tenant=tenant, brandProfile={"businessName": "Glow", "tone": "warm"})
    assert first["userErrors"] == []
    second = await _update(client, tenant=tenant, brandProfile={"services": ["Cuts", " Color ", " "]})
    assert second["userErrors"] == []
    assert second["settings"]["brandProfile"] == {
        "businessName": "Glow",
        "tone": "warm",
        "services": ["Cuts", "Color"],
    }
    third = await _update(client, tenant=tenant, brandProfile={"tone": "playful"})
    assert third["userErrors"] == []
    assert (await _settings(client, tenant=tenant))["brandProfile"] == {
        "businessName": "Glow",
        "tone": "playful",
        "services": ["Cuts", "Color"],
    }
    # Other parts of the settings are untouched by a brand update, and vice versa.
    await _update(client, tenant=tenant, quietHours={"start": "21:00", "end": "08:00"})
    settings = await _settings(client, tenant=tenant)
    assert settings["brandProfile"]["tone"] == "playful"
    assert settings["quietHours"] == {"start": "21:00", "end": "08:00"}


async def test_brand_profile_too_long_is_invalid(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    payload = await _update(client, tenant=tenant, brandProfile={"businessName": "x" * 201})
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
        ("INVALID", ["brandProfile", "businessName"])
    ]
    assert (await _settings(client, tenant=tenant))["brandProfile"]["businessName"] is None


async def test_extra_json_round_trips(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    extra = {"a": 1, "b": [1, "two", None, 3.5], "c": {"d": True, "e": {"f": "ü"}}, "empty": {}}
    payload = await _update(client, tenant=tenant, extra=extra)
    assert payload["userErrors"] == []
    assert payload["settings"]["extra"] == extra
    assert (await _settings(client, tenant=tenant))["extra"] == extra


async def test_extra_must_be_an_object(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    await _update(client, tenant=tenant, extra={"kept": True})
    payload = await _update(client, tenant=tenant, extra=[1, 2])
    assert payload["settings"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", ["extra"])]
    assert (await _settings(client, tenant=tenant))["extra"] == {"kept": True}


async def test_staff_cannot_update_settings(
    client: httpx.AsyncClient, tenant: TenantFixture, runtime: Runtime
) -> None:
    staff = make_user()
    async with runtime.db.transaction(tenant_id=UUID(tenant.uuid)) as uow:
        await uow.tenants.grant(UUID(tenant.uuid), staff.id, Role.STAFF)
    body = await gql(
        client, UPDATE_SETTINGS, {"input": {"timezone": "UTC"}}, token=staff.token, tenant=tenant.uuid
    )
    payload = body["data"]["updateSettings"]
    assert [e["code"] for e in payload["userErrors"]] == ["FORBIDDEN"]
    assert (await _settings(client, tenant=tenant))["timezone"] == "America/Chicago"


# ---------------------------------------------------------------- onboarding


async def test_onboarding_has_five_steps_in_contract_order(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    body = await gql(client, ONBOARDING, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["onboarding"] == {
        "steps": [{"key": k, "completed": False, "completedAt": None} for k in STEPS],
        "completedCount": 0,
        "complete": False,
    }


async def test_complete_step_is_idempotent(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    first = await _complete(client, tenant=tenant, step="TRAIN_VX")
    assert first["completedCount"] == 1
    assert first["complete"] is False
    done = {s["key"]: s for s in first["steps"]}
    assert done["TRAIN_VX"]["completed"] is True
    completed_at = done["TRAIN_VX"]["completedAt"]
    assert completed_at is not None
    assert [s["completed"] for s in first["steps"]] == [False, False, True, False, False]

    again = await _complete(client, tenant=tenant, step="TRAIN_VX")
    assert again == first
    body = await gql(client, ONBOARDING, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["onboarding"] == first
    assert {s["key"]: s["completedAt"] for s in body["data"]["onboarding"]["steps"]}[
        "TRAIN_VX"
    ] == completed_at


async def test_completing_all_steps_completes_onboarding(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    viewer = "{ viewer { onboardingComplete } }"
    for count, step in enumerate(reversed(STEPS), start=1):
        body = await gql(client, viewer, token=tenant.owner.token, tenant=tenant.uuid)
        assert body["data"]["viewer"] == {"onboardingComplete": False}
        onboarding = await _complete(client, tenant=tenant, step=step)
        assert onboarding["completedCount"] == count
    assert onboarding["complete"] is True
    assert [s["key"] for s in onboarding["steps"]] == STEPS
    assert all(s["completed"] and s["completedAt"] for s in onboarding["steps"])
    body = await gql(client, viewer, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["viewer"] == {"onboardingComplete": True}


async def test_onboarding_is_per_tenant(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    await _complete(client, tenant=tenant, step="GO_LIVE")
    other_user = make_user()
    other = await _create(client, user=other_user, name="Elsewhere", tz=None)
    body = await gql(client, ONBOARDING, token=other_user.token, tenant=other["tenant"]["id"])
    assert body["data"]["onboarding"]["completedCount"] == 0


async def test_onboarding_context_must_be_an_object(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    body = await gql(
        client,
        COMPLETE_STEP,
        {"step": "CADENCES", "context": "text"},
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    payload = body["data"]["completeOnboardingStep"]
    assert payload["onboarding"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", ["context"])]
    body = await gql(client, ONBOARDING, token=tenant.owner.token, tenant=tenant.uuid)
    assert body["data"]["onboarding"]["completedCount"] == 0
