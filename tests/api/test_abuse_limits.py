"""Bounded abuse: tenants per user, a floor of 1 point per request, subscriptions paid when they
start, and a per-address bucket for requests without valid credentials."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import httpx

from brandvx.runtime import Runtime
from brandvx.settings import Settings
from domain.model import Actor, Role
from persistence.ratelimit import RedisCostBudget
from resolvers.context import Context
from schema import build_schema
from tests.conftest import CREATE_TENANT, TenantFixture, app_client, gql, make_tenant, make_user


async def test_one_user_creates_only_a_few_tenants(migrated: Settings) -> None:
    settings = migrated.model_copy(update={"max_tenants_per_user": 2})
    async with app_client(settings) as (app, http):
        user = make_user()
        for name in ("One", "Two"):
            await make_tenant(http, name=name, owner=user)
        body = await gql(http, CREATE_TENANT, {"name": "Three", "tz": None}, token=user.token)
        payload = body["data"]["createTenant"]
        assert payload["tenant"] is None
        assert [e["code"] for e in payload["userErrors"]] == ["LIMIT_EXCEEDED"]
        runtime: Runtime = app.state.runtime
        async with runtime.db.transaction(user_id=user.id) as uow:
            assert len(await uow.tenants.ids_for_user(user.id)) == 2
        # Someone else is not affected.
        await make_tenant(http, name="Other's")


async def test_every_request_costs_at_least_one_point(migrated: Settings) -> None:
    settings = migrated.model_copy(update={"rate_limit_points": 150, "rate_limit_restore_per_second": 0.01})
    async with app_client(settings) as (_app, http):
        tenant = await make_tenant(http)
        headers = {"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": tenant.uuid}
        seen = []
        for query in ("{ __typename }", "{ viewer { userId } }", "{ __typename }"):
            response = await http.post("/graphql", json={"query": query}, headers=headers)
            cost = response.json()["extensions"]["cost"]
            seen.append((cost["requestedQueryCost"], cost["throttleStatus"]["currentlyAvailable"]))
        assert seen == [(1, 149), (1, 148), (1, 147)]


async def test_a_subscription_pays_when_it_starts(runtime: Runtime, tenant: TenantFixture) -> None:
    budget = RedisCostBudget(
        runtime.redis, f"{runtime.settings.key_prefix}sub-{uuid.uuid4().hex}:", maximum=25, restore_rate=0.01
    )
    services = dataclasses.replace(runtime.app_services, budget=budget)
    actor = Actor(user_id=tenant.owner.id, tenant_id=uuid.UUID(tenant.uuid), role=Role.OWNER_ADMIN)
    schema = build_schema()
    query = 'subscription { jobProgress(jobId: "nope") { done } }'

    async def first_result() -> Any:
        stream = await schema.subscribe(query, context_value=Context(services=services, actor=actor))
        assert not isinstance(stream, dict)
        async for result in stream:  # type: ignore[union-attr]
            await stream.aclose()  # type: ignore[union-attr]
            return result
        return None

    codes = []
    for _ in range(3):  # 10 + 1 points each: two fit in 25, the third does not
        result = await first_result()
        codes.append([(e.extensions or {}).get("code") for e in result.errors or ()])
    assert codes[2] == ["RATE_LIMITED"], codes
    assert "RATE_LIMITED" not in codes[0] + codes[1], codes


async def test_requests_without_credentials_are_limited_per_address(migrated: Settings) -> None:
    settings = migrated.model_copy(
        update={"anonymous_rate_limit_points": 3, "anonymous_rate_limit_restore_per_second": 0.01}
    )
    async with app_client(settings) as (_app, shared):
        tenant = await make_tenant(shared)
        # An address of this test's own: other tests' requests spent from 127.0.0.1's bucket.
        own = (f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7", 1234)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_app, client=own), base_url="http://testserver"
        )
        query = {"query": "{ viewer { userId } }"}
        statuses = []
        for headers in ({}, {"Authorization": "Bearer nope"}, {}, {"Authorization": "Bearer nope"}, {}):
            statuses.append((await http.post("/graphql", json=query, headers=headers)).status_code)
        assert statuses == [401, 401, 401, 429, 429]
        refused = await http.post("/graphql", json=query)
        assert int(refused.headers["retry-after"]) >= 1
        (error,) = refused.json()["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        # Valid credentials from the same address are not affected.
        ok = await http.post(
            "/graphql",
            json=query,
            headers={"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": tenant.uuid},
        )
        assert ok.status_code == 200
        assert ok.json()["data"] == {"viewer": {"userId": tenant.owner.id}}
        await http.aclose()
        # Another address has its own bucket.
        other = httpx.ASGITransport(app=_app, client=(f"203.0.{uuid.uuid4().int % 250}.9", 1234))
        async with httpx.AsyncClient(transport=other, base_url="http://testserver") as elsewhere:
            assert (await elsewhere.post("/graphql", json=query)).status_code == 401
