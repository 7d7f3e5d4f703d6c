"""Against `brandvx serve` in its own process: real HTTP, real WebSocket (graphql-transport-ws)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import LiveServer, make_tenant, make_user

pytestmark = pytest.mark.slow


async def _ws_init(server: LiveServer, payload: dict[str, Any]) -> Any:
    ws = await websockets.connect(
        server.ws_url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    return ws


async def test_http_graphql_over_a_real_socket(live_server: LiveServer) -> None:
    user = make_user()
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        mutation = 'mutation { createTenant(input: {name: "Live"}) { tenant { name } userErrors { code } } }'
        created = await http.post(
            "/graphql", json={"query": mutation}, headers={"Authorization": f"Bearer {user.token}"}
        )
        assert created.status_code == 200
        assert created.json()["data"]["createTenant"] == {"tenant": {"name": "Live"}, "userErrors": []}
        refused = await http.post("/graphql", json={"query": "{ viewer { userId } }"})
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_websocket_authenticates_from_connection_init(
    live_server: LiveServer, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(client, name="Socket Salon")
    ws = await _ws_init(
        live_server, {"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": tenant.uuid}
    )
    try:
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": "{ viewer { userId role tenant { name } } }"},
                }
            )
        )
        raw = await ws.recv()
        # A text frame: browser graphql-ws clients cannot parse binary ones.
        assert isinstance(raw, str)
        message = json.loads(raw)
        assert message["type"] == "next"
        assert message["payload"]["data"]["viewer"] == {
            "userId": tenant.owner.id,
            "role": "OWNER_ADMIN",
            "tenant": {"name": "Socket Salon"},
        }
        assert json.loads(await ws.recv()) == {"id": "1", "type": "complete"}
    finally:
        await ws.close()


@pytest.mark.parametrize(
    "payload", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "bvx_" + "x" * 40}]
)
async def test_websocket_rejects_bad_credentials(live_server: LiveServer, payload: dict[str, str]) -> None:
    # graphql-transport-ws: a rejected connection_init closes with 4403 Forbidden, before any ack.
    ws = await _ws_init(live_server, payload)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_websocket_rejects_non_member_tenant(
    live_server: LiveServer, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(client)
    stranger = make_user()
    ws = await _ws_init(
        live_server, {"Authorization": f"Bearer {stranger.token}", "X-Tenant-Id": tenant.uuid}
    )
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_legacy_ws_protocol_is_not_served(live_server: LiveServer) -> None:
    ws = await websockets.connect(live_server.ws_url, subprotocols=[websockets.Subprotocol("graphql-ws")])
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4406


async def test_health_reports_a_working_worker(live_server: LiveServer) -> None:
    # The served process runs an inline worker (--worker); its heartbeat cron proves jobs execute.
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        for _ in range(50):
            body = (await http.get("/health")).json()
            if body["checks"]["worker"] == "ok":
                break
            import asyncio

            await asyncio.sleep(0.2)
        assert body["checks"]["worker"] == "ok"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"] == "ok"
