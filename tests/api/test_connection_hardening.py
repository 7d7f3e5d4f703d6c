"""Connections that outlive their credentials, oversized and slow clients, logs without secrets —
against `brandvx serve` in processes of its own (issue 10: items 1, 2, 7, 8, 9, 13)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from brandvx.settings import Settings
from integrations.auth_jwt import mint_token
from tests.conftest import JWT_SECRET, LiveServer, TenantFixture, free_port, make_tenant, make_user
from tests.processes import brandvx_env, frame, log_tail, spawn_brandvx, stop_process, wait_until_ready

pytestmark = pytest.mark.slow

SQUARE_KEY = "square-signature-key-" + "k" * 20
CREATE_KEY = """
mutation($name: String!) {
  createApiKey(input: {name: $name, scopes: [READ]}) { apiKey { id } token userErrors { code } }
}
"""
REVOKE_KEY = (
    "mutation($id: ID!) { revokeApiKey(input: {apiKeyId: $id}) { revokedApiKeyId userErrors { code } } }"
)
CREATE_CONTACT = """
mutation($input: CreateContactInput!) { createContact(input: $input) { contact { id } userErrors { code } } }
"""


@dataclass(frozen=True)
class Served:
    base_url: str
    ws_url: str
    log: Path


@pytest.fixture(scope="module")
def second_server(migrated: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Another `brandvx serve` on the live server's database and Redis namespace: everything it
    logs (at DEBUG) goes to ``log``; short header and body timeouts."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("second-server")
    env = brandvx_env(
        migrated,
        namespace=migrated.redis_namespace,
        data_dir=folder / "data",
        extra={
            "BRANDVX_LOG_LEVEL": "DEBUG",
            "BRANDVX_HEADER_TIMEOUT_SECONDS": "2",
            "BRANDVX_BODY_TIMEOUT_SECONDS": "2",
            "SQUARE_WEBHOOK_SIGNATURE_KEY": SQUARE_KEY,
            "BRANDVX_PUBLIC_URL": base,
        },
    )
    log = folder / "serve.log"
    process = spawn_brandvx("serve", "--port", str(port), "--no-worker", "--no-migrate", env=env, log=log)
    try:
        wait_until_ready(process, base, log)
        yield Served(base_url=base, ws_url=f"ws://127.0.0.1:{port}/graphql", log=log)
    finally:
        stop_process(process)


async def _post(base_url: str, query: str, variables: dict[str, Any], headers: dict[str, str]) -> Any:
    async with httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _owner(tenant: TenantFixture) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": tenant.uuid}


async def _api_key(base_url: str, tenant: TenantFixture) -> tuple[str, str]:
    created = (await _post(base_url, CREATE_KEY, {"name": "partner"}, _owner(tenant)))["createApiKey"]
    assert created["userErrors"] == []
    return created["apiKey"]["id"], created["token"]


async def _open(url: str, payload: dict[str, str]) -> websockets.ClientConnection:
    ws = await websockets.connect(
        url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")], open_timeout=5, close_timeout=2
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    return ws


async def _acked(url: str, token: str, tenant_id: str | None = None) -> websockets.ClientConnection:
    payload = {"Authorization": f"Bearer {token}"} | ({"X-Tenant-Id": tenant_id} if tenant_id else {})
    ws = await _open(url, payload)
    assert await frame(ws, 10) == {"type": "connection_ack"}
    return ws


async def _closed(ws: websockets.ClientConnection, seconds: float) -> tuple[int, str]:
    """The close code and reason the server sent, waiting at most ``seconds``."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(_drain(ws), seconds)
    assert closed.value.rcvd is not None, "the server did not send a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def _drain(ws: websockets.ClientConnection) -> None:
    while True:
        await ws.recv()


async def _still_open(ws: websockets.ClientConnection) -> None:
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


# ---------------------------------------------------------------- credentials on open sockets


async def test_revoking_a_key_closes_its_sockets_in_every_process(
    live_server: LiveServer, second_server: Served, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(client, name="Revoked Salon")
    key_id, secret = await _api_key(second_server.base_url, tenant)
    _, other_secret = await _api_key(second_server.base_url, tenant)
    doomed = await _acked(live_server.ws_url, secret, tenant.uuid)
    kept = await _acked(live_server.ws_url, other_secret, tenant.uuid)
    try:
        # Revoked through the other process: the news travels through Redis.
        revoked = await _post(second_server.base_url, REVOKE_KEY, {"id": key_id}, _owner(tenant))
        assert revoked["revokeApiKey"]["userErrors"] == []
        assert await _closed(doomed, 5) == (4403, "key revoked")
        await _still_open(kept)
    finally:
        await doomed.close()
        await kept.close()


async def test_a_socket_ends_when_its_token_expires(
    live_server: LiveServer, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(client)
    short = mint_token(JWT_SECRET, user_id=tenant.owner.id, email=tenant.owner.email, ttl_seconds=2)
    ws = await _acked(live_server.ws_url, short, tenant.uuid)
    try:
        assert await _closed(ws, 10) == (4403, "token expired")
    finally:
        await ws.close()


async def test_a_fresh_token_in_a_ping_keeps_the_socket_open(
    live_server: LiveServer, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(client)
    short = mint_token(JWT_SECRET, user_id=tenant.owner.id, ttl_seconds=2)
    ws = await _acked(live_server.ws_url, short, tenant.uuid)
    try:
        fresh = mint_token(JWT_SECRET, user_id=tenant.owner.id, ttl_seconds=3600)
        await ws.send(json.dumps({"type": "ping", "payload": {"Authorization": f"Bearer {fresh}"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
        with pytest.raises(TimeoutError):  # past the first token's expiry: nothing arrives
            await asyncio.wait_for(ws.recv(), 4)
        await _still_open(ws)
        # A token that does not authenticate for this tenant ends the socket.
        other = make_user().token
        await ws.send(json.dumps({"type": "ping", "payload": {"Authorization": f"Bearer {other}"}}))
        assert await _closed(ws, 5) == (4403, "unknown tenant")
    finally:
        await ws.close()


async def test_refused_connection_init_says_why(live_server: LiveServer, client: httpx.AsyncClient) -> None:
    tenant = await make_tenant(client)
    key_id, revoked_secret = await _api_key(live_server.base_url, tenant)
    await _post(live_server.base_url, REVOKE_KEY, {"id": key_id}, _owner(tenant))
    expired = mint_token(JWT_SECRET, user_id=tenant.owner.id, ttl_seconds=-600)
    cases = [
        ({}, "invalid token"),
        ({"Authorization": "Bearer not-a-token"}, "invalid token"),
        ({"Authorization": "Bearer bvx_" + "x" * 40}, "invalid token"),
        ({"Authorization": f"Bearer {expired}"}, "token expired"),
        ({"Authorization": f"Bearer {revoked_secret}"}, "key revoked"),
        ({"Authorization": f"Bearer {make_user().token}", "X-Tenant-Id": tenant.uuid}, "unknown tenant"),
        ({"Authorization": f"Bearer {tenant.owner.token}", "X-Tenant-Id": "nope"}, "unknown tenant"),
    ]
    for payload, reason in cases:
        ws = await _open(live_server.ws_url, payload)
        try:
            assert await _closed(ws, 5) == (4403, reason), payload
        finally:
            await ws.close()


async def test_a_websocket_message_over_the_body_limit_closes_the_socket(
    live_server: LiveServer, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(client)
    ws = await _acked(live_server.ws_url, tenant.owner.token, tenant.uuid)
    try:
        query = "{ viewer { userId } }" + " " * (8 * 1024 * 1024)
        with contextlib.suppress(websockets.ConnectionClosed):  # closed while it was still sending
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        code, _ = await _closed(ws, 10)
        assert code == 1009
    finally:
        await ws.close()


# ---------------------------------------------------------------- slow clients


async def _trickle(base_url: str, request: bytes, *, every: float) -> bytes:
    """Sends ``request`` one byte every ``every`` seconds until the server hangs up; what it answered."""
    port = int(base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.read())  # everything up to the server's EOF
    try:
        async with asyncio.timeout(20):
            for byte in request:
                if answer.done():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.wait({answer}, timeout=every)  # wakes early when the server hangs up
            return await answer
    finally:
        answer.cancel()
        writer.close()


async def test_a_request_head_sent_byte_by_byte_is_timed_out(second_server: Served) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\nAccept: */*\r\n\r\n"
    answer = await _trickle(second_server.base_url, head, every=0.5)
    assert answer.startswith(b"HTTP/1.1 408"), answer


async def test_a_body_sent_byte_by_byte_is_timed_out(second_server: Served) -> None:
    body = b'{"query": "{ __typename }"}' + b" " * 40
    head = (
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    port = int(second_server.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = asyncio.create_task(reader.read(4096))
    try:
        async with asyncio.timeout(20):
            for byte in body:
                if answer.done():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.wait({answer}, timeout=0.5)
            received = await answer
    finally:
        answer.cancel()
        writer.close()
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b"did not arrive within 2 s" in received


# ---------------------------------------------------------------- logs


async def test_logs_hold_no_contact_details_tokens_or_codes(
    second_server: Served, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(client, name="Logged Salon")
    marker = secrets.token_hex(4)
    email, phone, e164 = f"pii.{marker}@example.com", "(415) 555-0142", "+14155550142"
    oauth_code, oauth_state = f"code-{secrets.token_hex(8)}", f"state-{secrets.token_hex(8)}"
    base = second_server.base_url
    headers = _owner(tenant)
    created = await _post(
        base, CREATE_CONTACT, {"input": {"displayName": "Pat", "email": email, "phone": phone}}, headers
    )
    assert created["createContact"]["userErrors"] == []
    # A duplicate (a conflict) and a bad phone go through the error paths too.
    await _post(base, CREATE_CONTACT, {"input": {"displayName": "Pat", "email": email}}, headers)
    await _post(base, CREATE_CONTACT, {"input": {"displayName": "Bad", "phone": f"x{marker}"}}, headers)
    _, key_secret = await _api_key(base, tenant)
    async with httpx.AsyncClient(base_url=base) as http:
        used = await http.post(
            "/graphql",
            json={"query": "{ contacts(first: 5) { edges { node { id } } } }"},
            headers={"Authorization": f"Bearer {key_secret}"},
        )
        assert used.status_code == 200
        await http.get(f"/graphql?query={{viewer{{userId}}}}&token={tenant.owner.token}")
        await http.get(f"/oauth/square/callback?code={oauth_code}&state={oauth_state}")
        event = {
            "merchant_id": f"M{marker}",
            "type": "booking.created",
            "event_id": str(uuid.uuid4()),
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": {"type": "booking", "id": "BK1", "object": {"customer": {"email_address": email}}},
        }
        body = json.dumps(event).encode()
        signature = base64.b64encode(
            hmac.new(SQUARE_KEY.encode(), f"{base}/webhooks/square".encode() + body, hashlib.sha256).digest()
        ).decode()
        hooked = await http.post(
            "/webhooks/square",
            content=body,
            headers={"content-type": "application/json", "x-square-hmacsha256-signature": signature},
        )
        assert hooked.status_code < 500
    text = second_server.log.read_text(errors="replace")
    assert "/oauth/square/callback" in text, "the access log was not captured"
    secrets_seen = {
        "email": email,
        "phone": phone,
        "E.164 phone": e164,
        "phone digits": "4155550142",
        "owner token": tenant.owner.token,
        "API key": key_secret,
        "OAuth code": oauth_code,
        "OAuth state": oauth_state,
        "webhook signature": signature,
        "JWT secret": JWT_SECRET,
    }
    leaked = {name for name, value in secrets_seen.items() if value in text}
    assert not leaked, f"{leaked} in the log: {log_tail(second_server.log)}"
