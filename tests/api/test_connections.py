"""Connecting providers end to end: GraphQL connectProvider, the provider's consent page (a local
fake over real HTTP), our OAuth callback or hosted form, tokens encrypted at rest, disconnect.

One in-process app is configured for every fake (``app_client``). The browser's trip through the
provider is a separate httpx client talking to the fake; the redirect back is then sent to our app.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from brandvx.runtime import Runtime
from brandvx.settings import Settings
from domain.connect import state_key
from domain.connections import OAuthState, open_tokens, sign_state
from domain.model import Provider
from domain.sync import TokenSet
from tests.conftest import TenantFixture, User, app_client, gql, make_tenant, make_user
from tests.fakes.acuity_server import FakeAcuity
from tests.fakes.caldav_server import RadicaleServer
from tests.fakes.google_server import CALENDAR_SCOPE, FakeGoogle
from tests.fakes.shopify_server import FakeShopify, generate_shop
from tests.fakes.square_server import FakeSquare

PUBLIC_URL = "http://testserver"
APP_URL = "https://app.brandvx.test/settings/connections"
SPA_ORIGIN = "https://spa.brandvx.test"
SHOP = "glow-studio.myshopify.com"
APPLE_ID = "ada@icloud.test"

CONNECT = """
mutation($provider: Provider!, $redirectUri: String) {
  connectProvider(input: {provider: $provider, redirectUri: $redirectUri}) {
    authorizeUrl userErrors { field message code }
  }
}
"""
DISCONNECT = """
mutation($provider: Provider!) {
  disconnectProvider(input: {provider: $provider}) { provider userErrors { field message code } }
}
"""
ACCOUNTS = "{ connectedAccounts { provider status connectedAt lastError } }"
CREATE_KEY = """
mutation($scopes: [ApiScope!]!) {
  createApiKey(input: {name: "partner", scopes: $scopes}) { token userErrors { code } }
}
"""


# ---------------------------------------------------------------- fakes and the app


@dataclass(frozen=True)
class Fakes:
    square: FakeSquare
    acuity: FakeAcuity
    google: FakeGoogle
    shopify: FakeShopify
    caldav: RadicaleServer


@dataclass(frozen=True)
class Stack:
    fakes: Fakes
    settings: Settings
    runtime: Runtime
    http: httpx.AsyncClient  # our app, in process
    browser: httpx.AsyncClient  # the operator's browser at the providers (real HTTP)


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with (
        FakeSquare() as square,
        FakeAcuity() as acuity,
        FakeGoogle() as google,
        FakeShopify() as shopify,
        RadicaleServer(username=APPLE_ID) as caldav,
    ):
        shopify.add_shop(generate_shop(SHOP, variants=3, locations=1))
        yield Fakes(square=square, acuity=acuity, google=google, shopify=shopify, caldav=caldav)


@pytest.fixture(scope="module")
def conn_settings(migrated: Settings, fakes: Fakes) -> Settings:
    return migrated.model_copy(
        update={
            "public_url": PUBLIC_URL,
            "app_url": APP_URL,
            "allowed_origins_raw": SPA_ORIGIN,
            "square_client_id": fakes.square.client_id,
            "square_client_secret": fakes.square.client_secret,
            "square_base_url": fakes.square.base_url,
            # No ACUITY_CLIENT_ID: Acuity connects with an API key typed into our form.
            "acuity_base_url": fakes.acuity.base_url,
            "google_client_id": fakes.google.client_id,
            "google_client_secret": fakes.google.client_secret,
            "google_auth_base_url": fakes.google.base_url,
            "google_token_base_url": fakes.google.base_url,
            "google_api_base_url": fakes.google.base_url,
            "shopify_client_id": fakes.shopify.client_id,
            "shopify_client_secret": fakes.shopify.client_secret,
            "shopify_base_url_overrides_raw": f"{SHOP}={fakes.shopify.base_url_for(SHOP)}",
            "apple_caldav_url": fakes.caldav.url,
        }
    )


@pytest.fixture(scope="module")
async def stack(conn_settings: Settings, fakes: Fakes) -> AsyncIterator[Stack]:
    async with (
        app_client(conn_settings) as (application, http),
        httpx.AsyncClient(follow_redirects=False, timeout=15) as browser,
    ):
        yield Stack(fakes, conn_settings, application.state.runtime, http, browser)


@pytest.fixture
async def owner_conn(migrated: Settings) -> AsyncIterator[asyncpg.Connection]:
    dsn = make_url(migrated.database_url or "").set(drivername="postgresql")
    conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    yield conn
    await conn.close()


@pytest.fixture
def merchant(fakes: Fakes) -> str:
    """A merchant of this test's own: the fake mints the next tokens for it."""
    fakes.square.merchant_id = "ML" + secrets.token_hex(6).upper()
    return fakes.square.merchant_id


# ---------------------------------------------------------------- helpers


def _auth(tenant: TenantFixture, user: User | None = None) -> dict[str, Any]:
    return {"token": (user or tenant.owner).token, "tenant": tenant.uuid}


async def _connect(
    s: Stack, who: TenantFixture, provider: str, redirect_uri: str | None = None, **auth: Any
) -> dict[str, Any]:
    body = await gql(
        s.http,
        CONNECT,
        {"provider": provider, "redirectUri": redirect_uri},
        **(auth or _auth(who)),
    )
    payload: dict[str, Any] = body["data"]["connectProvider"]
    return payload


async def _start(s: Stack, tenant: TenantFixture, provider: str, redirect_uri: str | None = None) -> str:
    payload = await _connect(s, tenant, provider, redirect_uri)
    assert payload["userErrors"] == [], payload
    url: str = payload["authorizeUrl"]
    return url


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _state_of(url: str) -> str:
    return _query(url)["state"]


async def _consent(s: Stack, authorize_url: str) -> str:
    """The provider's consent page, approved at once: where it sends the browser back to."""
    answer = await s.browser.get(authorize_url)
    assert answer.status_code == 302, (answer.status_code, answer.text)
    location: str = answer.headers["location"]
    return location


async def _back(s: Stack, location: str) -> httpx.Response:
    """The browser arriving at our callback (PUBLIC_URL is the in-process app)."""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC_URL, location
    return await s.http.get(f"{parts.path}?{parts.query}" if parts.query else parts.path)


async def _accounts(s: Stack, who: TenantFixture, **auth: Any) -> list[tuple[str, str]]:
    body = await gql(s.http, ACCOUNTS, **(auth or _auth(who)))
    assert "errors" not in body, body
    return [(a["provider"], a["status"]) for a in body["data"]["connectedAccounts"]]


async def _connect_square(s: Stack, tenant: TenantFixture, redirect_uri: str | None = None) -> httpx.Response:
    location = await _consent(s, await _start(s, tenant, "SQUARE", redirect_uri))
    return await _back(s, location)


async def _tokens(s: Stack, tenant: TenantFixture, provider: Provider) -> TokenSet | None:
    tenant_id = uuid.UUID(tenant.uuid)
    async with s.runtime.db.transaction(tenant_id=tenant_id, role="SYSTEM") as uow:
        connection = await uow.connections.get(provider)
    return None if connection is None else open_tokens(s.runtime.vault.keyring, tenant_id, connection)


async def _row(conn: asyncpg.Connection, tenant: TenantFixture, provider: str) -> asyncpg.Record | None:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant.uuid)
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT account_id, access_token_ciphertext, refresh_token_ciphertext, scopes, config,"
            " connected_at FROM connected_accounts WHERE tenant_id = $1 AND provider = $2",
            uuid.UUID(tenant.uuid),
            provider,
        )
    return row


async def _directory(conn: asyncpg.Connection, provider: str, account_id: str) -> uuid.UUID | None:
    value = await conn.fetchval(
        "SELECT tenant FROM provider_accounts WHERE provider = $1 AND account_id = $2", provider, account_id
    )
    return value if isinstance(value, uuid.UUID) else None


def _landed(response: httpx.Response, target: str, **expected: str) -> None:
    assert response.status_code == 303, (response.status_code, response.text)
    location = response.headers["location"]
    base, _, query = location.partition("?")
    assert base == target, location
    assert parse_qs(query) == {k: [v] for k, v in expected.items()}, location


def _refused(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/html")
    assert fragment in response.text, response.text
    assert response.headers["cache-control"] == "no-store"


async def _post(s: Stack, path: str, data: dict[str, str]) -> httpx.Response:
    """POST a form; an exception escaping the app is a 500 in production, reported as such."""
    try:
        return await s.http.post(path, data=data)
    except Exception as exc:  # the ASGI transport re-raises what the app did not handle
        pytest.fail(f"POST {path} crashed the app (HTTP 500 in production): {exc!r}")


async def _grant(conn: asyncpg.Connection, tenant: TenantFixture, role: str) -> User:
    user = make_user()
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", tenant.uuid)
        await conn.execute(
            "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)",
            uuid.UUID(tenant.uuid),
            user.id,
            role,
        )
    return user


def _forge(key: bytes, tenant: TenantFixture, provider: Provider, *, expires_at: int) -> str:
    state = OAuthState(
        tenant_id=uuid.UUID(tenant.uuid),
        user_id=tenant.owner.id,
        provider=provider,
        redirect_uri=None,
        nonce=secrets.token_urlsafe(16),
        expires_at=expires_at,
    )
    return sign_state(key, state)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------- 1. Square round trip


async def test_square_oauth_round_trip_stores_tokens_encrypted(
    stack: Stack, owner_conn: asyncpg.Connection, merchant: str
) -> None:
    square = stack.fakes.square
    tenant = await make_tenant(stack.http, name="Square Salon")
    authorize = await _start(stack, tenant, "SQUARE")
    parts = urlsplit(authorize)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{square.base_url}/oauth2/authorize"
    query = parse_qs(parts.query)
    assert query["client_id"] == [square.client_id]
    assert "APPOINTMENTS_READ" in query["scope"][0].split()
    assert "INVENTORY_READ" in query["scope"][0].split()
    assert query["redirect_uri"] == [f"{PUBLIC_URL}/oauth/square/callback"]
    assert query["state"][0]

    location = await _consent(stack, authorize)
    assert location.startswith(f"{PUBLIC_URL}/oauth/square/callback?")
    assert _query(location)["state"] == query["state"][0]
    _landed(await _back(stack, location), APP_URL, connected="SQUARE")

    assert await _accounts(stack, tenant) == [("SQUARE", "CONNECTED")]
    tokens = await _tokens(stack, tenant, Provider.SQUARE)
    assert tokens is not None
    assert tokens.refresh_token is not None
    assert square.token_state(tokens.access_token) == "live"  # the fake's real token
    assert tokens.account_id == merchant

    row = await _row(owner_conn, tenant, "SQUARE")
    assert row is not None
    assert row["account_id"] == merchant
    for secret, sealed in (
        (tokens.access_token, row["access_token_ciphertext"]),
        (tokens.refresh_token, row["refresh_token_ciphertext"]),
    ):
        assert sealed is not None
        assert len(sealed) > len(secret)
        assert secret.encode() not in sealed
        assert secret[8:24].encode() not in sealed
        assert base64.b64encode(secret.encode())[:16] not in sealed
    assert row["access_token_ciphertext"] != row["refresh_token_ciphertext"]
    assert await _directory(owner_conn, "SQUARE", merchant) == uuid.UUID(tenant.uuid)


# ---------------------------------------------------------------- 2. state attacks


async def test_reused_state_is_refused_and_changes_nothing(
    stack: Stack, owner_conn: asyncpg.Connection, merchant: str
) -> None:
    tenant = await make_tenant(stack.http, name="Replay Salon")
    authorize = await _start(stack, tenant, "SQUARE")
    location = await _consent(stack, authorize)
    _landed(await _back(stack, location), APP_URL, connected="SQUARE")
    before = await _row(owner_conn, tenant, "SQUARE")
    assert before is not None

    # The same callback again, and the same state with a fresh, valid code.
    _refused(await _back(stack, location), "already used")
    fresh = stack.fakes.square.issue_code(redirect_uri=f"{PUBLIC_URL}/oauth/square/callback")
    replay = f"{PUBLIC_URL}/oauth/square/callback?{urlencode({'code': fresh, 'state': _state_of(authorize)})}"
    _refused(await _back(stack, replay), "already used")

    after = await _row(owner_conn, tenant, "SQUARE")
    assert after is not None
    assert dict(after) == dict(before)
    assert await _accounts(stack, tenant) == [("SQUARE", "CONNECTED")]


async def test_concurrent_callbacks_with_one_state_connect_once(
    stack: Stack, owner_conn: asyncpg.Connection, merchant: str
) -> None:
    tenant = await make_tenant(stack.http, name="Racing Salon")
    state = _state_of(await _start(stack, tenant, "SQUARE"))
    callback = f"{PUBLIC_URL}/oauth/square/callback"
    codes = [stack.fakes.square.issue_code(redirect_uri=callback) for _ in range(5)]
    answers = await asyncio.gather(
        *(_back(stack, f"{callback}?{urlencode({'code': code, 'state': state})}") for code in codes)
    )
    assert sorted(a.status_code for a in answers) == [303, 400, 400, 400, 400]
    assert all("already used" in a.text for a in answers if a.status_code == 400)
    assert await _accounts(stack, tenant) == [("SQUARE", "CONNECTED")]


async def test_forged_tampered_expired_and_misdirected_states_are_refused(
    stack: Stack, owner_conn: asyncpg.Connection, merchant: str
) -> None:
    victim = await make_tenant(stack.http, name="Victim Salon")
    attacker = await make_tenant(stack.http, name="Attacker Salon")
    key = state_key(stack.settings.blind_index_key or "")
    callback = f"{PUBLIC_URL}/oauth/square/callback"

    def with_code(state: str) -> str:
        code = stack.fakes.square.issue_code(redirect_uri=callback)
        return f"{callback}?{urlencode({'code': code, 'state': state})}"

    # Signed with another key.
    forged = _forge(secrets.token_bytes(32), victim, Provider.SQUARE, expires_at=int(time.time()) + 300)
    _refused(await _back(stack, with_code(forged)), "not issued by BrandVX")

    # A genuine state of the attacker's, its payload moved to the victim's tenant, old MAC kept.
    genuine = _state_of(await _start(stack, attacker, "SQUARE"))
    payload_text, mac = genuine.split(".", 1)
    payload = json.loads(_unb64(payload_text))
    payload["t"] = victim.uuid
    tampered = _b64(json.dumps(payload, separators=(",", ":")).encode()) + "." + mac
    _refused(await _back(stack, with_code(tampered)), "not issued by BrandVX")
    # A flipped MAC, and a state that is not a state at all.
    _refused(await _back(stack, with_code(payload_text + "." + _b64(b"\0" * 32))), "not issued by BrandVX")
    _refused(await _back(stack, with_code("not-a-state")), "malformed")
    _refused(await _back(stack, with_code("%%%.@@@")), "start connecting again")

    # Signed with the app's own key, but expired.
    expired = _forge(key, victim, Provider.SQUARE, expires_at=int(time.time()) - 1)
    _refused(await _back(stack, with_code(expired)), "expired")

    # Signed with the app's key and unexpired, but never issued (no nonce): not usable either.
    unissued = _forge(key, victim, Provider.SQUARE, expires_at=int(time.time()) + 300)
    _refused(await _back(stack, with_code(unissued)), "already used")

    # A genuine ACUITY state on the SQUARE callback...
    acuity_state = _state_of(await _start(stack, victim, "ACUITY"))
    _refused(await _back(stack, with_code(acuity_state)), "another provider")
    # ...which did not spend it.
    assert (await stack.runtime.connect.peek(acuity_state, Provider.ACUITY)).provider is Provider.ACUITY

    assert await _accounts(stack, victim) == []
    assert await _accounts(stack, attacker) == []
    assert await _row(owner_conn, victim, "SQUARE") is None
    # The attacker's own state was never spent by the tampered copy: it still completes, into theirs.
    _landed(await _back(stack, with_code(genuine)), APP_URL, connected="SQUARE")
    assert await _accounts(stack, attacker) == [("SQUARE", "CONNECTED")]
    assert await _accounts(stack, victim) == []


async def test_declined_consent_redirects_with_connect_error(stack: Stack) -> None:
    tenant = await make_tenant(stack.http, name="Declining Salon")
    state = _state_of(await _start(stack, tenant, "SQUARE"))
    query = urlencode({"error": "access_denied", "error_description": "user denied", "state": state})
    response = await _back(stack, f"{PUBLIC_URL}/oauth/square/callback?{query}")
    _landed(response, APP_URL, connectError="declined", provider="SQUARE")
    # No code at all is a decline too.
    response = await _back(stack, f"{PUBLIC_URL}/oauth/square/callback?{urlencode({'state': state})}")
    _landed(response, APP_URL, connectError="declined", provider="SQUARE")
    assert await _accounts(stack, tenant) == []


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/landing",
        f"{SPA_ORIGIN}.evil.example/landing",
        f"{SPA_ORIGIN}@evil.example/landing",
        f"{SPA_ORIGIN}:8443/landing",
        "http://spa.brandvx.test/landing",
        "//evil.example/landing",
        "javascript:alert(1)",
        "/relative/path",
    ],
)
async def test_foreign_redirect_uri_is_invalid(stack: Stack, redirect_uri: str) -> None:
    tenant = await make_tenant(stack.http, name="Redirect Salon")
    payload = await _connect(stack, tenant, "SQUARE", redirect_uri)
    assert payload["authorizeUrl"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", ["redirectUri"])]


@pytest.mark.parametrize("redirect_uri", [f"{SPA_ORIGIN}/after-connect?tab=square", SPA_ORIGIN])
async def test_allowed_redirect_uri_is_where_the_operator_lands(
    stack: Stack, merchant: str, redirect_uri: str
) -> None:
    tenant = await make_tenant(stack.http, name="Landing Salon")
    response = await _connect_square(stack, tenant, redirect_uri)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    base, _, query = location.partition("?")
    assert base == redirect_uri.partition("?")[0]
    expected = {**parse_qs(urlsplit(redirect_uri).query), "connected": ["SQUARE"]}
    assert parse_qs(query) == expected
    # The app URL's own origin is always allowed.
    payload = await _connect(stack, tenant, "SQUARE", "https://app.brandvx.test/elsewhere")
    assert payload["userErrors"] == []


# ---------------------------------------------------------------- 3. Google


async def test_google_without_calendar_scope_is_refused(stack: Stack) -> None:
    google = stack.fakes.google
    tenant = await make_tenant(stack.http, name="Google Salon")
    google.consent_scopes = ("openid", "https://www.googleapis.com/auth/userinfo.email")
    try:
        location = await _consent(stack, await _start(stack, tenant, "GOOGLE"))
    finally:
        google.consent_scopes = None
    assert CALENDAR_SCOPE not in _query(location)["scope"]
    _refused(await _back(stack, location), "did not grant access to your calendar")
    assert await _accounts(stack, tenant) == []


async def test_google_round_trip_stores_a_refresh_token(stack: Stack, owner_conn: asyncpg.Connection) -> None:
    google = stack.fakes.google
    tenant = await make_tenant(stack.http, name="Google Salon")
    authorize = await _start(stack, tenant, "GOOGLE")
    query = _query(authorize)
    assert authorize.startswith(f"{google.base_url}/o/oauth2/v2/auth?")
    assert query["client_id"] == google.client_id
    assert CALENDAR_SCOPE in query["scope"].split()
    assert query["access_type"] == "offline"
    assert query["redirect_uri"] == f"{PUBLIC_URL}/oauth/google/callback"
    _landed(await _back(stack, await _consent(stack, authorize)), APP_URL, connected="GOOGLE")

    assert await _accounts(stack, tenant) == [("GOOGLE", "CONNECTED")]
    tokens = await _tokens(stack, tenant, Provider.GOOGLE)
    assert tokens is not None
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.startswith("1//0")
    assert tokens.account_id == google.consent_as
    assert CALENDAR_SCOPE in tokens.scopes
    row = await _row(owner_conn, tenant, "GOOGLE")
    assert row is not None
    assert row["refresh_token_ciphertext"] is not None
    assert tokens.refresh_token.encode() not in row["refresh_token_ciphertext"]
    assert CALENDAR_SCOPE in row["scopes"]


# ---------------------------------------------------------------- 4. Apple form


async def test_apple_form_checks_the_password_with_the_caldav_server(
    stack: Stack, owner_conn: asyncpg.Connection
) -> None:
    caldav = stack.fakes.caldav
    tenant = await make_tenant(stack.http, name="Apple Salon")
    form_url = await _start(stack, tenant, "APPLE")
    assert form_url.startswith(f"{PUBLIC_URL}/connect/apple?state=")
    page = await _back(stack, form_url)
    assert page.status_code == 200, page.text
    assert "name='username'" in page.text
    assert "name='password' type='password'" in page.text
    assert "value=" not in page.text.replace(f"value='{_state_of(form_url)}'", "")
    assert page.headers["x-frame-options"] == "DENY"

    wrong = "wrong-" + secrets.token_hex(8)
    refused = await _post(
        stack,
        "/connect/apple",
        {"state": _state_of(form_url), "username": APPLE_ID, "password": wrong},
    )
    _refused(refused, "Apple refused the app-specific password")
    assert wrong not in refused.text
    assert caldav.password not in refused.text
    assert await _accounts(stack, tenant) == []

    # The refused link is spent: a new one is needed.
    again = await _post(
        stack,
        "/connect/apple",
        {"state": _state_of(form_url), "username": APPLE_ID, "password": caldav.password},
    )
    _refused(again, "already used")

    second = await _start(stack, tenant, "APPLE")
    done = await _post(
        stack,
        "/connect/apple",
        {"state": _state_of(second), "username": f"  {APPLE_ID} ", "password": caldav.password},
    )
    _landed(done, APP_URL, connected="APPLE")
    assert caldav.password not in done.headers["location"]

    assert await _accounts(stack, tenant) == [("APPLE", "CONNECTED")]
    row = await _row(owner_conn, tenant, "APPLE")
    assert row is not None
    assert json.loads(row["config"]) == {"username": APPLE_ID, "url": caldav.url}
    assert row["account_id"] == APPLE_ID
    assert caldav.password.encode() not in row["access_token_ciphertext"]
    tokens = await _tokens(stack, tenant, Provider.APPLE)
    assert tokens is not None
    assert tokens.access_token == caldav.password


async def test_apple_refusal_page_does_not_offer_a_spent_link(stack: Stack) -> None:
    """After Apple refuses, the link is used up (connect_flow.complete_form: "a failed check needs a
    new one (the page says so)"). The page must then say to start again, not show the same form
    with the dead state, which can only fail with "already used" when submitted again."""
    caldav = stack.fakes.caldav
    tenant = await make_tenant(stack.http, name="Apple Retry Salon")
    state = _state_of(await _start(stack, tenant, "APPLE"))
    refused = await _post(
        stack, "/connect/apple", {"state": state, "username": APPLE_ID, "password": "nope-nope"}
    )
    assert refused.status_code == 400
    if "<form" in refused.text and f"value='{state}'" in refused.text:
        # The operator fixes the password and submits the form the page offers:
        retry = await _post(
            stack, "/connect/apple", {"state": state, "username": APPLE_ID, "password": caldav.password}
        )
        assert "start connecting again" in refused.text, (
            "the refusal page offers the spent link's form again without saying to start over; "
            f"submitting it with the right password answers {retry.status_code}"
            f" ('already used' in the page: {'already used' in retry.text})"
        )


async def test_apple_form_requires_both_fields_and_a_live_state(stack: Stack) -> None:
    tenant = await make_tenant(stack.http, name="Apple Empty Salon")
    state = _state_of(await _start(stack, tenant, "APPLE"))
    empty = await _post(stack, "/connect/apple", {"state": state, "username": APPLE_ID})
    _refused(empty, "Enter your Apple ID and an app-specific password")
    # GET with a bad or missing state shows no form.
    for query in ("", "?state=garbage", f"?state={state}x"):
        page = await stack.http.get(f"/connect/apple{query}")
        assert page.status_code == 400, (query, page.text)
        assert "<form" not in page.text
    assert (await stack.http.get("/connect/square?state=x")).status_code == 404
    assert (await stack.http.get("/connect/nowhere?state=x")).status_code == 404


# ---------------------------------------------------------------- 5. Acuity API key form


async def test_acuity_without_client_id_offers_the_api_key_form(stack: Stack) -> None:
    """No ACUITY_CLIENT_ID: connectProvider(ACUITY) must send the operator to our API-key form, not
    to Acuity's OAuth consent page with an empty client_id (which Acuity refuses)."""
    tenant = await make_tenant(stack.http, name="Acuity Form Salon")
    url = await _start(stack, tenant, "ACUITY")
    if not url.startswith(PUBLIC_URL):
        consent = await stack.browser.get(url)
        pytest.fail(f"sent to {url}, not our form; Acuity answers {consent.status_code} {consent.text}")
    assert url.startswith(f"{PUBLIC_URL}/connect/acuity?state="), url


async def _acuity_form(s: Stack, tenant: TenantFixture) -> str:
    """Our Acuity form for a fresh ACUITY state. The state is taken from whatever URL
    connectProvider answered (see test_acuity_without_client_id_offers_the_api_key_form)."""
    return f"{PUBLIC_URL}/connect/acuity?{urlencode({'state': _state_of(await _start(s, tenant, 'ACUITY'))})}"


async def test_acuity_api_key_form_connects_in_basic_mode(
    stack: Stack, owner_conn: asyncpg.Connection
) -> None:
    acuity = stack.fakes.acuity
    acuity.account_id = secrets.randbelow(10**9) + 10**9
    tenant = await make_tenant(stack.http, name="Acuity Salon")
    form_url = await _acuity_form(stack, tenant)
    page = await _back(stack, form_url)
    assert page.status_code == 200
    assert "name='user_id'" in page.text
    assert "name='api_key' type='password'" in page.text

    wrong = await _post(
        stack,
        "/connect/acuity",
        {"state": _state_of(form_url), "user_id": acuity.user_id, "api_key": "not-the-key"},
    )
    assert wrong.status_code == 400
    assert "not-the-key" not in wrong.text
    assert await _accounts(stack, tenant) == []

    second = await _acuity_form(stack, tenant)
    done = await _post(
        stack,
        "/connect/acuity",
        {"state": _state_of(second), "user_id": acuity.user_id, "api_key": acuity.api_key},
    )
    _landed(done, APP_URL, connected="ACUITY")
    assert any(r.path == "/api/v1/me" and r.status == 200 for r in acuity.requests)

    assert await _accounts(stack, tenant) == [("ACUITY", "CONNECTED")]
    row = await _row(owner_conn, tenant, "ACUITY")
    assert row is not None
    assert json.loads(row["config"]) == {"mode": "basic", "user_id": acuity.user_id}
    assert row["account_id"] == str(acuity.account_id)
    assert acuity.api_key.encode() not in row["access_token_ciphertext"]
    assert await _directory(owner_conn, "ACUITY", str(acuity.account_id)) == uuid.UUID(tenant.uuid)


# ---------------------------------------------------------------- 6. Shopify


async def test_shopify_form_refuses_a_foreign_shop_domain(stack: Stack) -> None:
    tenant = await make_tenant(stack.http, name="Shopify Domain Salon")
    form_url = await _start(stack, tenant, "SHOPIFY")
    assert form_url.startswith(f"{PUBLIC_URL}/connect/shopify?state=")
    page = await _back(stack, form_url)
    assert page.status_code == 200
    assert "name='shop'" in page.text
    state = _state_of(form_url)
    for bad in ("evil.com", "glow-studio.myshopify.com.evil.com", "https://glow-studio.myshopify.com"):
        refused = await _post(stack, "/connect/shopify", {"state": state, "shop": bad})
        _refused(refused, "myshopify.com domain")
        assert "<form" in refused.text  # the link is still good: the form is offered again
    # The bad tries did not spend the link.
    to_shopify = await _post(stack, "/connect/shopify", {"state": state, "shop": SHOP})
    assert to_shopify.status_code == 303, to_shopify.text


async def _to_shopify(s: Stack, tenant: TenantFixture, shop: str = SHOP) -> tuple[str, str]:
    """The shop form posted: (state, Shopify's authorize URL)."""
    state = _state_of(await _start(s, tenant, "SHOPIFY"))
    to_shopify = await _post(s, "/connect/shopify", {"state": state, "shop": shop})
    assert to_shopify.status_code == 303, to_shopify.text
    authorize: str = to_shopify.headers["location"]
    return state, authorize


async def test_shopify_consent_redirect_reaches_our_callback_with_its_code(stack: Stack) -> None:
    """Followed literally, as a browser does. Our authorize URL's redirect_uri already carries
    `?shop=...`, and Shopify (the fake, too) appends its own query to it: the code must survive."""
    tenant = await make_tenant(stack.http, name="Shopify Literal Salon")
    _state, authorize = await _to_shopify(stack, tenant)
    location = await _consent(stack, authorize)
    callback = _query(location)
    assert callback.get("code"), f"no code in the callback query: {location}"
    _landed(await _back(stack, location), APP_URL, connected="SHOPIFY")


def _as_joined(location: str) -> str:
    """The consent redirect with its query joined by '&' where the fake appended a second '?'."""
    base, _, query = location.partition("?")
    return f"{base}?{query.replace('?', '&')}"


async def test_shopify_shop_form_then_oauth(stack: Stack, owner_conn: asyncpg.Connection) -> None:
    shopify = stack.fakes.shopify
    tenant = await make_tenant(stack.http, name="Shopify Salon")
    state, authorize = await _to_shopify(stack, tenant, f" {SHOP.upper()} ")
    assert authorize.startswith(f"{shopify.base_url_for(SHOP)}/admin/oauth/authorize?")
    assert _query(authorize)["client_id"] == shopify.client_id
    assert _query(authorize)["state"] == state
    assert urlsplit(_query(authorize)["redirect_uri"]).path == "/oauth/shopify/callback"

    # See test_shopify_consent_redirect_reaches_our_callback_with_its_code for the literal redirect.
    location = _as_joined(await _consent(stack, authorize))
    callback = _query(location)
    assert callback["shop"] == SHOP
    assert callback["hmac"]
    assert callback["code"]

    # A tampered or missing signature first: refused, and the link is not spent by it.
    parts = urlsplit(location)
    pairs = parse_qsl(parts.query)
    forged = urlencode([(k, "0" * 64 if k == "hmac" else v) for k, v in pairs])
    _refused(await _back(stack, f"{PUBLIC_URL}{parts.path}?{forged}"), "not signed correctly")
    unsigned = urlencode([(k, v) for k, v in pairs if k != "hmac"])
    _refused(await _back(stack, f"{PUBLIC_URL}{parts.path}?{unsigned}"), "not signed correctly")
    other_shop = urlencode([(k, "other.myshopify.com" if k == "shop" else v) for k, v in pairs])
    _refused(await _back(stack, f"{PUBLIC_URL}{parts.path}?{other_shop}"), "not signed correctly")

    _landed(await _back(stack, location), APP_URL, connected="SHOPIFY")
    assert await _accounts(stack, tenant) == [("SHOPIFY", "CONNECTED")]
    row = await _row(owner_conn, tenant, "SHOPIFY")
    assert row is not None
    assert json.loads(row["config"]) == {"shop": SHOP}
    tokens = await _tokens(stack, tenant, Provider.SHOPIFY)
    assert tokens is not None
    assert tokens.access_token == shopify.shop(SHOP).access_token
    assert tokens.access_token.encode() not in row["access_token_ciphertext"]


# ---------------------------------------------------------------- 7. disconnect


async def test_disconnect_square_revokes_and_forgets(
    stack: Stack, owner_conn: asyncpg.Connection, merchant: str
) -> None:
    square = stack.fakes.square
    tenant = await make_tenant(stack.http, name="Leaving Salon")
    _landed(await _connect_square(stack, tenant), APP_URL, connected="SQUARE")
    tokens = await _tokens(stack, tenant, Provider.SQUARE)
    assert tokens is not None
    revokes_before = square.count("/oauth2/revoke", method="POST", status=200)

    body = await gql(stack.http, DISCONNECT, {"provider": "SQUARE"}, **_auth(tenant))
    assert body["data"]["disconnectProvider"] == {"provider": "SQUARE", "userErrors": []}

    assert square.count("/oauth2/revoke", method="POST", status=200) == revokes_before + 1
    revoke = [c for c in square.calls if c.path == "/oauth2/revoke"][-1]
    assert revoke.body["access_token"] == tokens.access_token
    assert revoke.authorization == f"Client {square.client_secret}"
    assert square.token_state(tokens.access_token) == "revoked"

    assert await _accounts(stack, tenant) == []
    assert await _row(owner_conn, tenant, "SQUARE") is None
    assert await _directory(owner_conn, "SQUARE", merchant) is None

    again = await gql(stack.http, DISCONNECT, {"provider": "SQUARE"}, **_auth(tenant))
    payload = again["data"]["disconnectProvider"]
    assert payload["provider"] is None
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("NOT_FOUND", ["provider"])]


async def test_staff_and_api_keys_cannot_connect_or_disconnect(
    stack: Stack, owner_conn: asyncpg.Connection, merchant: str
) -> None:
    tenant = await make_tenant(stack.http, name="Roles Salon")
    _landed(await _connect_square(stack, tenant), APP_URL, connected="SQUARE")
    staff = await _grant(owner_conn, tenant, "STAFF")
    keys = {}
    for scopes in (["READ"], ["READ", "WRITE"]):
        made = await gql(stack.http, CREATE_KEY, {"scopes": scopes}, **_auth(tenant))
        assert made["data"]["createApiKey"]["userErrors"] == []
        keys["+".join(scopes)] = made["data"]["createApiKey"]["token"]

    callers = {"STAFF": _auth(tenant, staff)}
    callers.update({f"key {name}": {"token": t, "tenant": tenant.uuid} for name, t in keys.items()})
    for who, auth in callers.items():
        for provider in ("SQUARE", "APPLE", "ACUITY"):
            payload = await _connect(stack, tenant, provider, **auth)
            assert payload["authorizeUrl"] is None, who
            assert [e["code"] for e in payload["userErrors"]] == ["FORBIDDEN"], (who, payload)
        body = await gql(stack.http, DISCONNECT, {"provider": "SQUARE"}, **auth)
        payload = body["data"]["disconnectProvider"]
        assert payload["provider"] is None, who
        assert [e["code"] for e in payload["userErrors"]] == ["FORBIDDEN"], (who, payload)
        # They may still look.
        assert await _accounts(stack, tenant, **auth) == [("SQUARE", "CONNECTED")], who

    assert await _row(owner_conn, tenant, "SQUARE") is not None
    assert await _directory(owner_conn, "SQUARE", merchant) == uuid.UUID(tenant.uuid)


async def test_disconnect_forgets_tokens_even_when_the_provider_refuses_to_revoke(
    stack: Stack, owner_conn: asyncpg.Connection, merchant: str
) -> None:
    square = stack.fakes.square
    tenant = await make_tenant(stack.http, name="Stubborn Salon")
    _landed(await _connect_square(stack, tenant), APP_URL, connected="SQUARE")
    tokens = await _tokens(stack, tenant, Provider.SQUARE)
    assert tokens is not None
    square.fail_next(1, status=400, path="/oauth2/revoke")
    body = await gql(stack.http, DISCONNECT, {"provider": "SQUARE"}, **_auth(tenant))
    assert body["data"]["disconnectProvider"] == {"provider": "SQUARE", "userErrors": []}
    assert await _accounts(stack, tenant) == []
    assert await _row(owner_conn, tenant, "SQUARE") is None
    assert await _directory(owner_conn, "SQUARE", merchant) is None
    assert square.token_state(tokens.access_token) == "live"  # best effort: Square kept it


async def test_disconnect_google_revokes_the_grant(stack: Stack, owner_conn: asyncpg.Connection) -> None:
    google = stack.fakes.google
    tenant = await make_tenant(stack.http, name="Google Leaving Salon")
    authorize = await _start(stack, tenant, "GOOGLE")
    _landed(await _back(stack, await _consent(stack, authorize)), APP_URL, connected="GOOGLE")
    tokens = await _tokens(stack, tenant, Provider.GOOGLE)
    assert tokens is not None
    assert tokens.refresh_token is not None
    body = await gql(stack.http, DISCONNECT, {"provider": "GOOGLE"}, **_auth(tenant))
    assert body["data"]["disconnectProvider"] == {"provider": "GOOGLE", "userErrors": []}
    revokes = [r for r in google.requests if r.path == "/revoke"]
    assert revokes
    assert revokes[-1].form.get("token") == tokens.refresh_token
    assert tokens.refresh_token not in str(revokes[-1].params)  # not in the URL (logged)
    assert await _row(owner_conn, tenant, "GOOGLE") is None


async def test_disconnect_shopify_uninstalls_from_the_shop(
    stack: Stack, owner_conn: asyncpg.Connection
) -> None:
    shopify = stack.fakes.shopify
    tenant = await make_tenant(stack.http, name="Shopify Leaving Salon")
    _, authorize = await _to_shopify(stack, tenant)
    _landed(await _back(stack, _as_joined(await _consent(stack, authorize))), APP_URL, connected="SHOPIFY")
    token = shopify.shop(SHOP).access_token
    body = await gql(stack.http, DISCONNECT, {"provider": "SHOPIFY"}, **_auth(tenant))
    assert body["data"]["disconnectProvider"] == {"provider": "SHOPIFY", "userErrors": []}
    uninstalls = shopify.requests_to("/admin/api_permissions/current.json")
    assert [(r.method, r.token, r.status) for r in uninstalls][-1:] == [("DELETE", token, 200)]
    assert token in shopify.shop(SHOP).revoked_tokens
    assert await _row(owner_conn, tenant, "SHOPIFY") is None
    shopify.shop(SHOP).revoked_tokens.discard(token)  # the uninstall was this test's only


# ---------------------------------------------------------------- 8. across tenants


async def test_state_completes_into_its_own_tenant_only(
    stack: Stack, owner_conn: asyncpg.Connection, fakes: Fakes
) -> None:
    square = fakes.square
    a = await make_tenant(stack.http, name="Tenant A")
    b = await make_tenant(stack.http, name="Tenant B")
    square.merchant_id = "MLB" + secrets.token_hex(5).upper()
    merchant_b = square.merchant_id
    _landed(await _connect_square(stack, b), APP_URL, connected="SQUARE")
    b_before = await _row(owner_conn, b, "SQUARE")

    # A's owner starts; whoever's browser brings the state back, it lands in A.
    square.merchant_id = "MLA" + secrets.token_hex(5).upper()
    merchant_a = square.merchant_id
    location = await _consent(stack, await _start(stack, a, "SQUARE"))
    response = await stack.http.get(
        urlsplit(location).path + "?" + urlsplit(location).query,
        headers={"Authorization": f"Bearer {b.owner.token}", "X-Tenant-Id": b.uuid},
    )
    _landed(response, APP_URL, connected="SQUARE")

    row_a = await _row(owner_conn, a, "SQUARE")
    assert row_a is not None
    assert row_a["account_id"] == merchant_a
    assert dict(await _row(owner_conn, b, "SQUARE") or {}) == dict(b_before or {})
    assert await _directory(owner_conn, "SQUARE", merchant_a) == uuid.UUID(a.uuid)
    assert await _directory(owner_conn, "SQUARE", merchant_b) == uuid.UUID(b.uuid)

    # B sees only its own; B's owner cannot read A's through A's header.
    assert await _accounts(stack, b) == [("SQUARE", "CONNECTED")]
    c = await make_tenant(stack.http, name="Tenant C")
    assert await _accounts(stack, c) == []
    entered = await gql(stack.http, ACCOUNTS, token=b.owner.token, tenant=a.uuid, expect_status=403)
    assert entered["data"] is None
    assert entered["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # Disconnecting in B leaves A connected.
    body = await gql(stack.http, DISCONNECT, {"provider": "SQUARE"}, **_auth(b))
    assert body["data"]["disconnectProvider"]["userErrors"] == []
    assert await _accounts(stack, a) == [("SQUARE", "CONNECTED")]
    assert await _directory(owner_conn, "SQUARE", merchant_a) == uuid.UUID(a.uuid)
