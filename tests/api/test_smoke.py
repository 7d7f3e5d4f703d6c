from __future__ import annotations

import httpx

from tests.conftest import TenantFixture, gql


async def test_viewer_in_own_tenant(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    body = await gql(
        client, "{ viewer { userId role tenant { id name } } }", token=tenant.owner.token, tenant=tenant.uuid
    )
    assert body["data"]["viewer"] == {
        "userId": tenant.owner.id,
        "role": "OWNER_ADMIN",
        "tenant": {"id": tenant.global_id, "name": "Salon"},
    }
