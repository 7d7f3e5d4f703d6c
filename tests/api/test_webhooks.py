"""Signed provider webhooks: Square (HMAC over the configured notification URL + body) and Acuity
(HMAC over the body with the account's API key), each ending in one calendar_sync job.

The app's public URL is not the URL requests arrive at (http://testserver), as behind a proxy.
Tenants are connected the way operators connect them: Square through OAuth on FakeSquare, Acuity
through our API-key form checked against FakeAcuity.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from brandvx.runtime import Runtime
from brandvx.settings import Settings
from tests.conftest import TenantFixture, app_client, gql, make_tenant
from tests.fakes.acuity_server import FakeAcuity
from tests.fakes.square_server import FakeSquare

PUBLIC_URL = "https://hooks.brandvx.test"
NOTIFICATION_URL = f"{PUBLIC_URL}/webhooks/square"
PROXIED_URL = "http://testserver/webhooks/square"  # what the app sees behind the proxy
SIGNATURE_KEY = "sq-webhook-key-" + secrets.token_hex(8)
MAX_WEBHOOK_BYTES = 256 * 1024

CONNECT = """
mutation($provider: Provider!) {
  connectProvider(input: {provider: $provider}) { authorizeUrl userErrors { field message code } }
}
"""
JOBS = "{ jobs(first: 50) { edges { node { id kind status } } } }"


@dataclass(frozen=True)
class Stack:
    square: FakeSquare
    acuity: FakeAcuity
    settings: Settings
    runtime: Runtime
    http: httpx.AsyncClient
    browser: httpx.AsyncClient


@pytest.fixture(scope="module")
def square() -> Iterator[FakeSquare]:
    with FakeSquare() as fake:
        yield fake


@pytest.fixture(scope="module")
def acuity() -> Iterator[FakeAcuity]:
    with FakeAcuity() as fake:
        yield fake


@pytest.fixture(scope="module")
async def stack(migrated: Settings, square: FakeSquare, acuity: FakeAcuity) -> AsyncIterator[Stack]:
    settings = migrated.model_copy(
        update={
            "public_url": PUBLIC_URL,
            "square_client_id": square.client_id,
            "square_client_secret": square.client_secret,
            "square_base_url": square.base_url,
            "square_webhook_signature_key": SIGNATURE_KEY,
            "acuity_base_url": acuity.base_url,
        }
    )
    async with (
        app_client(settings) as (application, http),
        httpx.AsyncClient(follow_redirects=False, timeout=15) as browser,
    ):
        yield Stack(square, acuity, settings, application.state.runtime, http, browser)


# ---------------------------------------------------------------- connecting


def _state(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["state"]


async def _authorize_url(s: Stack, tenant: TenantFixture, provider: str) -> str:
    body = await gql(s.http, CONNECT, {"provider": provider}, token=tenant.owner.token, tenant=tenant.uuid)
    payload = body["data"]["connectProvider"]
    assert payload["userErrors"] == [], payload
    url: str = payload["authorizeUrl"]
    return url


@dataclass(frozen=True)
class SquareTenant:
    tenant: TenantFixture
    merchant: str


@dataclass(frozen=True)
class AcuityTenant:
    tenant: TenantFixture
    account: str
    api_key: str


@pytest.fixture
async def square_tenant(stack: Stack) -> SquareTenant:
    tenant = await make_tenant(stack.http, name="Square Hooks Salon")
    stack.square.merchant_id = "ML" + secrets.token_hex(6).upper()
    consent = await stack.browser.get(await _authorize_url(stack, tenant, "SQUARE"))
    assert consent.status_code == 302, consent.text
    back = urlsplit(consent.headers["location"])
    assert f"{back.scheme}://{back.netloc}" == PUBLIC_URL  # the proxy hands it to the app
    landed = await stack.http.get(f"{back.path}?{back.query}")
    assert landed.status_code == 303, landed.text
    assert "connected=SQUARE" in landed.headers["location"]
    return SquareTenant(tenant, stack.square.merchant_id)


@pytest.fixture
async def acuity_tenant(stack: Stack) -> AcuityTenant:
    tenant = await make_tenant(stack.http, name="Acuity Hooks Salon")
    stack.acuity.account_id = secrets.randbelow(10**9) + 10**9
    # The state from whatever URL connectProvider answers (see test_connections.py for the form URL).
    state = _state(await _authorize_url(stack, tenant, "ACUITY"))
    done = await stack.http.post(
        "/connect/acuity",
        data={"state": state, "user_id": stack.acuity.user_id, "api_key": stack.acuity.api_key},
    )
    assert done.status_code == 303, done.text
    assert "connected=ACUITY" in done.headers["location"]
    return AcuityTenant(tenant, str(stack.acuity.account_id), stack.acuity.api_key)


async def _jobs(s: Stack, tenant: TenantFixture) -> list[dict[str, Any]]:
    body = await gql(s.http, JOBS, token=tenant.owner.token, tenant=tenant.uuid)
    assert "errors" not in body, body
    return [e["node"] for e in body["data"]["jobs"]["edges"]]


def _raw_id(global_id: str) -> str:
    decoded = base64.urlsafe_b64decode(global_id + "=" * (-len(global_id) % 4)).decode()
    kind, _, ident = decoded.partition(":")
    assert kind == "Job"
    return ident


async def _assert_one_sync_job(s: Stack, tenant: TenantFixture, job_id: str) -> None:
    jobs = await _jobs(s, tenant)
    assert [(_raw_id(j["id"]), j["kind"]) for j in jobs] == [(job_id, "calendar_sync")], jobs
    assert jobs[0]["status"] in ("PENDING", "RUNNING")
    # Handed to the queue as well (no worker runs here, so it waits there).
    queued = await s.runtime.redis.zscore(s.settings.arq_queue, f"sync:{job_id}")
    assert queued is not None


# ---------------------------------------------------------------- Square


def _square_sign(body: bytes, url: str = NOTIFICATION_URL, key: str = SIGNATURE_KEY) -> str:
    return base64.b64encode(hmac.new(key.encode(), url.encode() + body, hashlib.sha256).digest()).decode()


def _square_event(
    merchant: str,
    *,
    kind: str = "booking.created",
    created_at: str | None = None,
    event_id: str | None = None,
) -> bytes:
    event = {
        "merchant_id": merchant,
        "type": kind,
        "event_id": event_id or str(uuid.uuid4()),
        "created_at": created_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "data": {
            "type": "booking",
            "id": "BK" + secrets.token_hex(6),
            "object": {"booking": {"id": "BK1", "version": 0, "status": "ACCEPTED"}},
        },
    }
    return json.dumps(event, separators=(",", ":")).encode()


async def _post_square(s: Stack, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-square-hmacsha256-signature"] = signature
    try:
        return await s.http.post("/webhooks/square", content=body, headers=headers)
    except Exception as exc:  # the ASGI transport re-raises what the app did not handle
        pytest.fail(f"the Square webhook crashed the app (HTTP 500 in production): {exc!r}")


async def test_square_signed_booking_event_starts_one_sync(stack: Stack, square_tenant: SquareTenant) -> None:
    body = _square_event(square_tenant.merchant)
    accepted = await _post_square(stack, body, _square_sign(body))
    assert accepted.status_code == 200, accepted.text
    answer = accepted.json()
    assert answer["status"] == "accepted"
    (global_job_id,) = answer["jobIds"]
    job_id = _raw_id(global_job_id)  # a global ID, like every ID the API shows
    await _assert_one_sync_job(stack, square_tenant.tenant, job_id)

    # Square retries the very same delivery: refused as a duplicate, no second job.
    again = await _post_square(stack, body, _square_sign(body))
    assert again.status_code == 409, again.text
    assert again.json()["status"] == "duplicate"
    await _assert_one_sync_job(stack, square_tenant.tenant, job_id)

    # Another event while that sync waits joins it.
    other = _square_event(square_tenant.merchant, kind="customer.updated")
    joined = await _post_square(stack, other, _square_sign(other))
    assert joined.status_code == 200, joined.text
    assert joined.json() == {"status": "accepted", "jobIds": [global_job_id]}
    await _assert_one_sync_job(stack, square_tenant.tenant, job_id)


async def test_square_event_id_with_nul_is_a_json_client_error(
    stack: Stack, square_tenant: SquareTenant
) -> None:
    for fields in ({"event_id": "ev\x00il"}, {"merchant_id": "m\x00"}):
        event = json.loads(_square_event(square_tenant.merchant))
        event.update(fields)
        body = json.dumps(event).encode()
        response = await _post_square(stack, body, _square_sign(body))
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json"
        assert "error" in response.json()
    assert await _jobs(stack, square_tenant.tenant) == []


async def test_square_signature_must_be_ours_over_the_configured_url(
    stack: Stack, square_tenant: SquareTenant
) -> None:
    body = _square_event(square_tenant.merchant)
    forged = {
        "missing": None,
        "empty": "",
        "garbage": "not-base64!",
        "other key": _square_sign(body, key="someone-elses-key"),
        "proxied URL": _square_sign(body, url=PROXIED_URL),
        "other body": _square_sign(body + b" "),
        "hex digest": hmac.new(
            SIGNATURE_KEY.encode(), NOTIFICATION_URL.encode() + body, "sha256"
        ).hexdigest(),
    }
    for name, signature in forged.items():
        refused = await _post_square(stack, body, signature)
        assert refused.status_code == 401, (name, refused.text)
    assert await _jobs(stack, square_tenant.tenant) == []
    # None of those spent the event id: the genuine delivery still goes through.
    accepted = await _post_square(stack, body, _square_sign(body))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"


@pytest.mark.parametrize("age", [timedelta(minutes=10), timedelta(minutes=-10), timedelta(days=400)])
async def test_square_stale_event_is_refused(
    stack: Stack, square_tenant: SquareTenant, age: timedelta
) -> None:
    created = (datetime.now(UTC) - age).isoformat().replace("+00:00", "Z")
    body = _square_event(square_tenant.merchant, created_at=created)
    refused = await _post_square(stack, body, _square_sign(body))
    assert refused.status_code == 400, refused.text
    assert "stale" in refused.json()["error"]
    assert await _jobs(stack, square_tenant.tenant) == []


async def test_square_created_at_without_zone_is_a_bad_request(
    stack: Stack, square_tenant: SquareTenant
) -> None:
    """A signed event whose created_at has no offset must be refused (400), not crash the handler
    (provider_routes.square_webhook compares it with an aware datetime)."""
    body = _square_event(square_tenant.merchant, created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    answer = await _post_square(stack, body, _square_sign(body))
    assert answer.status_code == 400, answer.text


async def test_square_body_over_256_kib_is_refused(stack: Stack, square_tenant: SquareTenant) -> None:
    event = json.loads(_square_event(square_tenant.merchant))
    event["data"]["padding"] = "x" * MAX_WEBHOOK_BYTES
    body = json.dumps(event).encode()
    assert len(body) > MAX_WEBHOOK_BYTES
    declared = await _post_square(stack, body, _square_sign(body))
    assert declared.status_code == 413, declared.text

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    streamed = await stack.http.post(
        "/webhooks/square",
        content=chunks(),
        headers={"x-square-hmacsha256-signature": _square_sign(body), "content-type": "application/json"},
    )
    assert streamed.status_code == 413, streamed.text
    lying = await stack.http.post(
        "/webhooks/square",
        content=body[:100],
        headers={"content-length": "not-a-number", "x-square-hmacsha256-signature": _square_sign(body[:100])},
    )
    assert lying.status_code in (400, 413), lying.text
    assert await _jobs(stack, square_tenant.tenant) == []


async def test_square_unknown_merchant_is_ignored(stack: Stack, square_tenant: SquareTenant) -> None:
    body = _square_event("ML-NOBODY-" + secrets.token_hex(4))
    answer = await _post_square(stack, body, _square_sign(body))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ignored", "reason": "unknown merchant"}
    assert await _jobs(stack, square_tenant.tenant) == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"a string"',
        b'{"merchant_id": "M", "type": "booking.created"}',
        b'{"merchant_id": "M", "event_id": "e", "created_at": "yesterday"}',
        b'{"merchant_id": "M", "event_id": "e", "created_at": 12}',
    ],
)
async def test_square_signed_but_malformed_body_is_a_bad_request(stack: Stack, body: bytes) -> None:
    answer = await _post_square(stack, body, _square_sign(body))
    assert answer.status_code == 400, answer.text


async def test_square_event_other_than_bookings_starts_no_sync(
    stack: Stack, square_tenant: SquareTenant
) -> None:
    body = _square_event(square_tenant.merchant, kind="payment.created")
    answer = await _post_square(stack, body, _square_sign(body))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ignored", "reason": "not a booking or customer event"}
    assert await _jobs(stack, square_tenant.tenant) == []


async def test_square_webhook_after_disconnect_is_ignored(stack: Stack, square_tenant: SquareTenant) -> None:
    tenant = square_tenant.tenant
    body = await gql(
        stack.http,
        "mutation { disconnectProvider(input: {provider: SQUARE}) { provider userErrors { code } } }",
        token=tenant.owner.token,
        tenant=tenant.uuid,
    )
    assert body["data"]["disconnectProvider"] == {"provider": "SQUARE", "userErrors": []}
    event = _square_event(square_tenant.merchant)
    answer = await _post_square(stack, event, _square_sign(event))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ignored"
    assert await _jobs(stack, tenant) == []


# ---------------------------------------------------------------- Acuity


def _acuity_body(action: str = "scheduled", appointment: int | None = None) -> bytes:
    return urlencode(
        {
            "action": action,
            "id": appointment or 1_000_000 + secrets.randbelow(10**6),
            "calendarID": 5001,
            "appointmentTypeID": 101,
        }
    ).encode()


def _acuity_sign(body: bytes, key: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


async def _post_acuity(s: Stack, account: str, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Acuity-Signature"] = signature
    try:
        return await s.http.post(
            f"/webhooks/acuity?{urlencode({'account': account})}", content=body, headers=headers
        )
    except Exception as exc:  # the ASGI transport re-raises what the app did not handle
        pytest.fail(f"the Acuity webhook crashed the app (HTTP 500 in production): {exc!r}")


async def test_acuity_signed_webhook_starts_one_sync(stack: Stack, acuity_tenant: AcuityTenant) -> None:
    body = _acuity_body()
    accepted = await _post_acuity(
        stack, acuity_tenant.account, body, _acuity_sign(body, acuity_tenant.api_key)
    )
    assert accepted.status_code == 200, accepted.text
    answer = accepted.json()
    assert answer["status"] == "accepted"
    job_id = _raw_id(answer["jobIds"][0])
    assert len(answer["jobIds"]) == 1
    await _assert_one_sync_job(stack, acuity_tenant.tenant, job_id)

    again = await _post_acuity(stack, acuity_tenant.account, body, _acuity_sign(body, acuity_tenant.api_key))
    assert again.status_code == 409, again.text
    assert again.json()["status"] == "duplicate"
    await _assert_one_sync_job(stack, acuity_tenant.tenant, job_id)

    # The API-registered spelling of the same action on the same appointment is the same event.
    appointment = dict(parse_qsl(body.decode()))["id"]
    prefixed = _acuity_body("appointment.scheduled", int(appointment))
    same = await _post_acuity(
        stack, acuity_tenant.account, prefixed, _acuity_sign(prefixed, acuity_tenant.api_key)
    )
    assert same.status_code == 409, same.text


UNVERIFIED = {"status": "accepted", "verified": False}


async def test_acuity_unverifiable_webhooks_are_rate_limited_nudges(
    stack: Stack, acuity_tenant: AcuityTenant
) -> None:
    """A signature none of the connection's keys verifies is still only a nudge: at most one sync per
    connection a minute, which re-reads Acuity through the authenticated API (nothing from the body)."""
    body = _acuity_body()
    forged = {
        "missing": None,
        "other key": _acuity_sign(body, "not-the-api-key"),
        "other body": _acuity_sign(body + b"&x=1", acuity_tenant.api_key),
        "not base64": "%%%",
        "hex": hmac.new(acuity_tenant.api_key.encode(), body, hashlib.sha256).hexdigest(),
    }
    for name, signature in forged.items():
        answer = await _post_acuity(stack, acuity_tenant.account, body, signature)
        assert (answer.status_code, answer.json()) == (202, UNVERIFIED), (name, answer.text)
    # Five unverifiable nudges, one sync: the rest fell inside the connection's one-a-minute slot.
    jobs = await _jobs(stack, acuity_tenant.tenant)
    assert [job["kind"] for job in jobs] == ["calendar_sync"]
    # The nudges did not take the dedupe slot of the genuine delivery, which joins the queued sync.
    accepted = await _post_acuity(
        stack, acuity_tenant.account, body, _acuity_sign(body, acuity_tenant.api_key)
    )
    assert accepted.status_code == 200, accepted.text
    assert [j["id"] for j in await _jobs(stack, acuity_tenant.tenant)] == [j["id"] for j in jobs]


async def test_acuity_unknown_account_looks_like_an_unverifiable_nudge(
    stack: Stack, acuity_tenant: AcuityTenant
) -> None:
    # The same answer as an unverifiable nudge: a caller learns nothing about which accounts exist.
    body = _acuity_body()
    signature = _acuity_sign(body, acuity_tenant.api_key)
    for account in ("999", "", acuity_tenant.account + "0"):
        answer = await _post_acuity(stack, account, body, signature)
        assert (answer.status_code, answer.json()) == (202, UNVERIFIED), (account, answer.text)
    missing = await stack.http.post(
        "/webhooks/acuity", content=body, headers={"X-Acuity-Signature": signature}
    )
    assert (missing.status_code, missing.json()) == (202, UNVERIFIED)
    assert await _jobs(stack, acuity_tenant.tenant) == []


@pytest.mark.parametrize(
    "body",
    [
        b"hello",
        b"",
        b"action=scheduled",
        b"id=123",
        b"action=scheduled&id=abc",
        b"action=&id=123",
        b"action=scheduled&id=1&action=canceled&id=2",
        b"\xff\xfe",
    ],
)
async def test_acuity_signed_but_malformed_body_is_a_bad_request(
    stack: Stack, acuity_tenant: AcuityTenant, body: bytes
) -> None:
    answer = await _post_acuity(stack, acuity_tenant.account, body, _acuity_sign(body, acuity_tenant.api_key))
    assert answer.status_code == 400, answer.text
    assert await _jobs(stack, acuity_tenant.tenant) == []


async def test_acuity_webhook_of_one_tenant_never_lands_in_another(
    stack: Stack, acuity_tenant: AcuityTenant, square_tenant: SquareTenant
) -> None:
    body = _acuity_body()
    accepted = await _post_acuity(
        stack, acuity_tenant.account, body, _acuity_sign(body, acuity_tenant.api_key)
    )
    assert accepted.status_code == 200, accepted.text
    assert await _jobs(stack, square_tenant.tenant) == []
    assert len(await _jobs(stack, acuity_tenant.tenant)) == 1


async def test_acuity_account_shared_by_two_tenants_keeps_routing_after_one_leaves(
    stack: Stack, acuity_tenant: AcuityTenant
) -> None:
    """Two tenants connect the same Acuity account (a second workspace of the same salon); the
    second one disconnects. The first is still connected, so its webhooks must still arrive."""
    second = await make_tenant(stack.http, name="Acuity Second Workspace")
    state = _state(await _authorize_url(stack, second, "ACUITY"))
    done = await stack.http.post(
        "/connect/acuity",
        data={"state": state, "user_id": stack.acuity.user_id, "api_key": acuity_tenant.api_key},
    )
    assert done.status_code == 303, done.text
    left = await gql(
        stack.http,
        "mutation { disconnectProvider(input: {provider: ACUITY}) { provider userErrors { code } } }",
        token=second.owner.token,
        tenant=second.uuid,
    )
    assert left["data"]["disconnectProvider"] == {"provider": "ACUITY", "userErrors": []}

    body = _acuity_body()
    answer = await _post_acuity(stack, acuity_tenant.account, body, _acuity_sign(body, acuity_tenant.api_key))
    assert answer.status_code == 200, (
        f"{answer.status_code} {answer.text}: the first tenant is still connected to this account"
    )
    assert len(await _jobs(stack, acuity_tenant.tenant)) == 1
