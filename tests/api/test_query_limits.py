"""Complexity limits are linear in the document: fragments that fan out are measured once each,
refused as QUERY_TOO_COMPLEX before any other rule walks them; cost uses the coerced variables."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from graphql import parse

from schema import build_schema
from schema.cost import operation_cost
from schema.query_limits import measure
from tests.conftest import TenantFixture, gql


def fan_out(levels: int) -> str:
    """A fragment spreading the next one twice, `levels` deep: 2**levels leaves once expanded."""
    fragments = "".join(
        f"fragment F{i} on Query {{ viewer {{ userId }} ...F{i + 1} ...F{i + 1} }} " for i in range(levels)
    )
    return "{ ...F0 } " + fragments + f"fragment F{levels} on Query {{ viewer {{ userId }} }}"


def nested_fan_out(levels: int) -> str:
    """The same fan-out nested in objects, for the depth and alias counts."""
    fragments = "".join(
        f"fragment G{i} on Viewer {{ a{i}: userId ...G{i + 1} ...G{i + 1} }} " for i in range(levels)
    )
    return "{ viewer { ...G0 } } " + fragments + f"fragment G{levels} on Viewer {{ userId }}"


def test_measuring_is_linear_in_the_document() -> None:
    visited = {levels: measure(parse(fan_out(levels))).visited for levels in (6, 12, 18)}
    # Each fragment's four selections are looked at once: 4 per level, whatever the expansion.
    assert visited[18] - visited[12] == visited[12] - visited[6] == 6 * 4
    shape = measure(parse(fan_out(18))).operations[None]
    assert shape.fields == 2 * (2**19 - 1)  # the exact expanded size: a viewer and a userId per node

    aliased = measure(parse(nested_fan_out(18))).operations[None]
    assert aliased.aliases == 2**18 - 1
    assert aliased.depth == 1


def test_cost_is_counted_once_per_fragment() -> None:
    schema = build_schema()._schema
    document = parse(fan_out(18))
    # 2**19 - 1 viewers of 1 point each, counted without walking them one by one.
    assert operation_cost(schema, document) == 2**19 - 1


async def test_hostile_fan_out_is_refused_while_a_normal_request_is_answered(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    async def hostile() -> dict[str, Any]:
        return await gql(client, fan_out(18), token=tenant.owner.token, tenant=tenant.uuid)

    async def normal() -> dict[str, Any]:
        return await gql(client, "{ viewer { userId } }", token=tenant.owner.token, tenant=tenant.uuid)

    refused, answered = await asyncio.gather(hostile(), normal())
    assert refused["data"] is None
    (error,) = refused["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", error
    assert "fields" in error["message"]
    assert answered == {"data": {"viewer": {"userId": tenant.owner.id}}}

    aliased = await gql(client, nested_fan_out(18), token=tenant.owner.token, tenant=tenant.uuid)
    (error,) = aliased["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX", error


def test_cost_uses_variable_defaults_and_coerced_values() -> None:
    schema = build_schema()._schema
    contacts = "{ contacts(first: $n) { edges { node { displayName } } } }"
    assert operation_cost(schema, parse("query($n: Int = 100) " + contacts)) == 2 + 100 * 2
    assert operation_cost(schema, parse("query($n: Int = 100) " + contacts), None, {"n": 5}) == 2 + 5 * 2
    # Null means the resolver's default page (20); a value that does not coerce is not known: 100.
    assert operation_cost(schema, parse("query($n: Int = 100) " + contacts), None, {"n": None}) == 2 + 20 * 2
    assert operation_cost(schema, parse("query($n: Int) " + contacts), None, {"n": "many"}) == 2 + 100 * 2
