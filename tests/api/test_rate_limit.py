"""Per-tenant rate limit by query cost: a leaky bucket in Redis, reported in extensions.cost."""

from __future__ import annotations

from typing import Any

import httpx
from graphql import parse

from brandvx.settings import Settings
from schema import build_schema
from schema.cost import operation_cost
from tests.conftest import TenantFixture, app_client, make_tenant

CONTACTS = "query($n: Int) { contacts(first: $n) { edges { node { displayName } } } }"
ADD = (
    "mutation($name: String!) { createContact(input: {displayName: $name}) "
    "{ contact { id } userErrors { code } } }"
)


def cost_of(query: str, variables: dict[str, Any] | None = None) -> int:
    return operation_cost(build_schema()._schema, parse(query), None, variables)


def test_cost_counts_objects_and_pages_not_scalars() -> None:
    assert cost_of("{ viewer { userId role } }") == 1
    assert cost_of("{ viewer { userId tenant { name } } }") == 2
    # A connection: 2 + first x (edge 1 + node 1); `first` from a variable, or 20 by default.
    assert cost_of(CONTACTS, {"n": 50}) == 2 + 50 * 2
    assert cost_of(CONTACTS) == 2 + 20 * 2
    assert cost_of("{ viewer { ...v } } fragment v on Viewer { tenant { name } }") == 2
    # A mutation starts at 10: + payload 1 + contact 1 + userErrors (a list: 10 items of 1).
    assert cost_of(ADD) == 10 + 1 + 1 + 10
    assert cost_of("{ __typename }") == 0


async def post(
    http: httpx.AsyncClient, tenant: TenantFixture, query: str, **variables: Any
) -> dict[str, Any]:
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": tenant.uuid},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def available(body: dict[str, Any]) -> int:
    return int(body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"])


async def test_a_tenant_over_its_budget_is_refused_and_nothing_runs(migrated: Settings) -> None:
    # 150 points, refilled at 0.01 a second: nothing measurable comes back during the test.
    settings = migrated.model_copy(update={"rate_limit_points": 150, "rate_limit_restore_per_second": 0.01})
    async with app_client(settings) as (_app, http):
        busy, quiet = await make_tenant(http, name="Busy"), await make_tenant(http, name="Quiet")

        first = await post(http, busy, CONTACTS, n=50)
        assert "errors" not in first
        assert first["extensions"]["cost"] == {
            "requestedQueryCost": 102,
            "throttleStatus": {"maximumAvailable": 150, "currentlyAvailable": 48, "restoreRate": 0.01},
        }
        for name in ("Kept 1", "Kept 2"):  # 22 points each: 26, then 4 left
            assert (await post(http, busy, ADD, name=name))["data"]["createContact"]["userErrors"] == []

        refused = await post(http, busy, ADD, name="Never stored")
        assert refused["data"] is None
        [error] = refused["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["retryAfterSeconds"] >= (22 - 4) / 0.01 * 0.99
        assert available(refused) == 4

        # Nothing of the refused mutation was stored (read with 4 points: 2 + 1 x 2).
        stored = await post(http, busy, CONTACTS, n=1)
        assert "errors" not in stored
        async with app_client(migrated) as (_other, unlimited):
            names = await post(unlimited, busy, "{ contacts(first: 10) { edges { node { displayName } } } }")
        assert sorted(e["node"]["displayName"] for e in names["data"]["contacts"]["edges"]) == [
            "Kept 1",
            "Kept 2",
        ]

        # Another tenant's budget is its own.
        other = await post(http, quiet, CONTACTS, n=50)
        assert "errors" not in other
        assert available(other) == 48


async def test_one_request_over_the_whole_budget_is_too_complex(migrated: Settings) -> None:
    settings = migrated.model_copy(update={"rate_limit_points": 50, "rate_limit_restore_per_second": 10})
    async with app_client(settings) as (_app, http):
        tenant = await make_tenant(http, name="Greedy")
        body = await post(http, tenant, CONTACTS, n=100)
        assert body["data"] is None
        assert body["errors"][0]["extensions"] == {
            "code": "QUERY_TOO_COMPLEX",
            "cost": 202,
            "maximumCost": 50,
        }
