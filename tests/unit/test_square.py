"""SquareClient over real HTTP against FakeSquare on 127.0.0.1 (no mocks of our own code)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from domain.model import Provider
from domain.sync import (
    CalendarSource,
    ExternalAppointment,
    ExternalInventoryItem,
    IncompleteSync,
    InventorySource,
    ProviderError,
    TokenSet,
)
from integrations.http import ProviderHttp, RetryPolicy
from integrations.square import SCOPES, SquareClient, verify_webhook
from integrations.square.mapping import display_name, floor_quantity, parse_quantity
from integrations.square.webhooks import sign
from tests.fakes.square_server import FakeSquare

START = datetime(2025, 3, 1, tzinfo=UTC)
STATUS = {
    "ACCEPTED": "booked",
    "PENDING": "booked",
    "CANCELLED_BY_CUSTOMER": "cancelled",
    "CANCELLED_BY_SELLER": "cancelled",
    "DECLINED": "cancelled",
    "NO_SHOW": "no_show",
}


class Sleeps:
    """Stands in for asyncio.sleep in ProviderHttp: records the delays, waits for none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSquare]:
    with FakeSquare() as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: FakeSquare) -> None:
    fake.reset()
    fake.catalog_page_size = 100


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(fake: FakeSquare, sleeps: Sleeps) -> AsyncIterator[SquareClient]:
    http = ProviderHttp(
        "Square", base_url=fake.base_url, retry=RetryPolicy(attempts=4, base_delay=0.01), sleep=sleeps
    )
    square = SquareClient(
        client_id=fake.client_id, client_secret=fake.client_secret, base_url=fake.base_url, http=http
    )
    yield square
    await square.aclose()
    await http.aclose()


async def collect(source: CalendarSource, start: datetime, end: datetime) -> list[ExternalAppointment]:
    found: list[ExternalAppointment] = []
    async for page in source.appointments(start, end):
        found.extend(page.items)
    return found


async def stock(source: InventorySource) -> list[ExternalInventoryItem]:
    found: list[ExternalInventoryItem] = []
    async for page in source.items():
        found.extend(page.items)
    return found


def ends_at(booking: dict[str, Any]) -> datetime:
    minutes = sum(segment["duration_minutes"] for segment in booking["appointment_segments"])
    return datetime.fromisoformat(booking["start_at"]) + timedelta(minutes=minutes)


# --- bookings ---


async def test_90_days_in_31_day_windows_with_pages_each_booking_once(
    fake: FakeSquare, client: SquareClient
) -> None:
    seeded = fake.seed_bookings(250, START, days=90, customers=40)
    # On the edge of the first two windows (the walk starts a day early): both windows return it.
    edge = fake.add_booking(
        start_at=START + timedelta(days=30),
        customer_id=seeded[0]["customer_id"],
        service_variation_id=seeded[0]["appointment_segments"][0]["service_variation_id"],
    )
    by_id = {b["id"]: b for b in [*seeded, edge]}

    source = client.calendar(fake.access_token, page_size=20)
    pages = [page async for page in source.appointments(START, START + timedelta(days=90))]
    found = [a for page in pages for a in page.items]

    assert len(found) == 251
    assert {a.external_id for a in found} == set(by_id)
    windows = Counter(page.window for page in pages)
    assert len(windows) >= 3
    assert all(count >= 3 for count in windows.values())
    assert min(w[0] for w in windows if w) == START
    listing = [c for c in fake.calls if c.path == "/v2/bookings"]
    assert len(listing) == len(pages)
    for call in listing:
        low = datetime.fromisoformat(call.params["start_at_min"])
        high = datetime.fromisoformat(call.params["start_at_max"])
        assert high - low <= timedelta(days=31)
        assert call.params["limit"] == "20"
        assert call.square_version == "2024-10-17"
        assert call.authorization == f"Bearer {fake.access_token}"
    for appointment in found:
        booking = by_id[appointment.external_id]
        assert appointment.provider is Provider.SQUARE
        assert appointment.status == STATUS[booking["status"]]
        assert appointment.starts_at == datetime.fromisoformat(booking["start_at"])
        assert appointment.ends_at == ends_at(booking)
        assert appointment.title in {"Haircut", "Color", "Blowout"}
        assert appointment.customer is not None
        assert appointment.customer.external_id == booking["customer_id"]
        assert appointment.customer.name
        assert " " in appointment.customer.name
        assert appointment.customer.email
        assert appointment.customer.email.endswith("@example.com")
        assert appointment.customer.phone
        assert appointment.customer.phone.startswith("+1415555")
    assert {a.status for a in found} == {"booked", "cancelled", "no_show"}

    bulk = [c for c in fake.calls if c.path == "/v2/customers/bulk-retrieve"]
    assert 1 <= len(bulk) <= len(pages)
    since_page = 0
    for call in fake.calls:
        since_page = 0 if call.path == "/v2/bookings" else since_page + (call in bulk)
        assert since_page <= 1, "more than one customers call for a page of bookings"
    requested = [cid for call in bulk for cid in call.body["customer_ids"]]
    assert len(requested) == len(set(requested)) == 40  # each customer fetched once, in bulk
    assert all(len(call.body["customer_ids"]) <= 100 for call in bulk)
    assert fake.count("/v2/catalog/batch-retrieve") <= len(pages)


async def test_overlap_edges_of_the_range(fake: FakeSquare, client: SquareClient) -> None:
    end = START + timedelta(days=2)
    inside = fake.add_booking(start_at=START - timedelta(minutes=30), duration_minutes=60)
    fake.add_booking(start_at=START - timedelta(hours=3), duration_minutes=60)  # over before the range
    at_start = fake.add_booking(start_at=START, duration_minutes=[45, 15])
    fake.add_booking(start_at=end, duration_minutes=60)  # the range's end is exclusive
    found = await collect(client.calendar(fake.access_token), START, end)
    assert sorted(a.external_id for a in found) == sorted([inside["id"], at_start["id"]])
    by_id = {a.external_id: a for a in found}
    assert by_id[at_start["id"]].ends_at == START + timedelta(hours=1)
    assert by_id[inside["id"]].customer is None
    assert by_id[inside["id"]].title == "Square booking"


async def test_deleted_customer_keeps_its_id(fake: FakeSquare, client: SquareClient) -> None:
    customer = fake.add_customer(given_name="Gone")
    fake.add_booking(start_at=START + timedelta(hours=1), customer_id=customer["id"])
    fake.delete_customer(customer["id"])
    [appointment] = await collect(client.calendar(fake.access_token), START, START + timedelta(days=1))
    assert appointment.customer is not None
    assert appointment.customer.external_id == customer["id"]
    assert appointment.customer.name is None


async def test_10000_bookings_smoke(fake: FakeSquare, client: SquareClient, sleeps: Sleeps) -> None:
    seeded = fake.seed_bookings(10_000, START, days=365, customers=500)
    source = client.calendar(fake.access_token)
    found = await collect(source, START, START + timedelta(days=365))
    assert len(found) == 10_000
    assert {a.external_id for a in found} == {b["id"] for b in seeded}
    pages = fake.count("/v2/bookings")
    assert pages >= 100
    assert fake.count("/v2/customers/bulk-retrieve") <= pages
    assert source.next_sync_token is None
    # The cost is in calls, not seconds: about one call per 100 bookings and no retry or backoff wait.
    assert pages <= 110
    assert sleeps.delays == []


async def test_without_items_read_titles_fall_back(fake: FakeSquare, client: SquareClient) -> None:
    fake.add_token("EAAAno-items", scopes=[s for s in SCOPES if s != "ITEMS_READ"])
    [service] = fake.seed_services(1)
    fake.add_booking(start_at=START + timedelta(hours=2), service_variation_id=service)
    fake.add_booking(start_at=START + timedelta(hours=4), service_variation_id=service)
    found = await collect(client.calendar("EAAAno-items", page_size=1), START, START + timedelta(days=1))
    assert [a.title for a in found] == ["Square booking", "Square booking"]
    assert fake.count("/v2/catalog/batch-retrieve") == 1  # refused once, not asked again


async def test_repeated_cursor_is_an_incomplete_sync() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"bookings": [], "cursor": "same"})

    transport = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    http = ProviderHttp("Square", base_url="http://square.invalid", client=transport)
    square = SquareClient(client_id="id", client_secret="secret", base_url="http://square.invalid", http=http)
    with pytest.raises(IncompleteSync):
        await collect(square.calendar("token"), START, START + timedelta(days=1))
    await transport.aclose()


# --- inventory ---


async def test_inventory_1200_variations_across_pages_and_chunks(
    fake: FakeSquare, client: SquareClient
) -> None:
    fake.catalog_page_size = 550
    items = fake.seed_catalog(600, variations_per_item=2)
    fake.seed_services(2)  # appointment services are not stock

    found = await stock(client.inventory(fake.access_token))

    assert len(found) == 1200
    assert len({i.external_id for i in found}) == 1200
    expected: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        v["id"]: (item, v) for item in items for v in item["item_data"]["variations"]
    }
    assert {i.external_id for i in found} == set(expected)
    fractional = thresholds = 0
    for record in found:
        item, variation = expected[record.external_id]
        data = variation["item_variation_data"]
        counts = fake.inventory_counts(record.external_id)
        quantity = sum((Decimal(c["quantity"]) for c in counts if c["state"] == "IN_STOCK"), Decimal(0))
        fractional += quantity != quantity.to_integral_value()
        assert record.quantity == math.floor(quantity)
        assert record.sku == data["sku"]
        assert record.name == f"{item['item_data']['name']} ({data['name']})"
        assert record.price_cents == data["price_money"]["amount"]
        assert record.currency == "USD"
        overrides = data.get("location_overrides")
        if overrides:
            thresholds += 1
            assert record.low_stock_threshold == sum(o["inventory_alert_threshold"] for o in overrides)
        else:
            assert record.low_stock_threshold is None
    assert fractional
    assert thresholds

    assert fake.count("/v2/catalog/list") == 2
    batches = [c for c in fake.calls if c.path == "/v2/inventory/counts/batch-retrieve"]
    assert all(len(c.body["catalog_object_ids"]) <= 1000 for c in batches)
    assert all(c.body["states"] == ["IN_STOCK"] for c in batches)
    assert any("cursor" in c.body for c in batches)
    assert len({tuple(c.body["catalog_object_ids"]) for c in batches}) == 3  # 1000 + 100, then 100


async def test_inventory_single_variation_name_and_no_counts(fake: FakeSquare, client: SquareClient) -> None:
    fake.add_item("Argan oil", [{"sku": "ARG-1", "amount": 2400, "currency": "CAD"}])
    fake.add_item("Comb", [{"amount": 300, "counts": {"L1": "-2.5", "L2": "4"}}])
    found = {i.name: i for i in await stock(client.inventory(fake.access_token))}
    assert found["Argan oil"].quantity == 0
    assert found["Argan oil"].currency == "CAD"
    assert found["Argan oil"].sku == "ARG-1"
    assert found["Comb"].quantity == 1
    assert found["Comb"].sku == ""


# --- OAuth ---


async def test_authorize_url_shape(client: SquareClient, fake: FakeSquare) -> None:
    url = client.authorize_url(state="st ate/1", redirect_uri="https://app.brandvx.test/oauth/square")
    assert url == (
        f"{fake.base_url}/oauth2/authorize?client_id={fake.client_id}"
        "&scope=APPOINTMENTS_READ+APPOINTMENTS_ALL_READ+CUSTOMERS_READ+ITEMS_READ+INVENTORY_READ+MERCHANT_PROFILE_READ"
        "&session=false&state=st%20ate%2F1&redirect_uri=https%3A%2F%2Fapp.brandvx.test%2Foauth%2Fsquare"
    )


async def test_oauth_exchange_refresh_revoke(fake: FakeSquare, client: SquareClient) -> None:
    redirect_uri = "https://app.brandvx.test/oauth/square"
    async with httpx.AsyncClient() as browser:
        approval = await browser.get(client.authorize_url(state="xyz", redirect_uri=redirect_uri))
    assert approval.status_code == 302
    query = parse_qs(urlsplit(approval.headers["location"]).query)
    assert query["state"] == ["xyz"]
    assert fake.authorized_scopes == [SCOPES]

    tokens = await client.exchange_code(code=query["code"][0], redirect_uri=redirect_uri)
    assert tokens.access_token.startswith("EAAA")
    assert tokens.refresh_token
    assert tokens.refresh_token.startswith("EQAA")
    assert tokens.account_id == fake.merchant_id
    assert tokens.expires_at is not None
    assert timedelta(days=29) < tokens.expires_at - datetime.now(UTC) <= timedelta(days=30)
    [exchange] = [c for c in fake.calls if c.path == "/oauth2/token"]
    assert exchange.body == {
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "redirect_uri": redirect_uri,
    }
    assert exchange.authorization is None

    refreshed = await client.refresh(tokens.refresh_token)
    assert refreshed.access_token != tokens.access_token
    assert refreshed.refresh_token == tokens.refresh_token
    assert fake.calls[-1].body["grant_type"] == "refresh_token"
    assert fake.calls[-1].body["refresh_token"] == tokens.refresh_token

    await client.revoke(refreshed)
    revoke = fake.calls[-1]
    assert revoke.path == "/oauth2/revoke"
    assert revoke.authorization == f"Client {fake.client_secret}"
    assert revoke.body == {"client_id": fake.client_id, "access_token": refreshed.access_token}
    assert fake.token_state(refreshed.access_token) == "revoked"
    assert fake.token_state(tokens.access_token) == "revoked"

    with pytest.raises(ProviderError) as refused:
        await collect(client.calendar(refreshed.access_token), START, START + timedelta(days=1))
    assert refused.value.kind == "auth"
    assert "ACCESS_TOKEN_REVOKED" in refused.value.message
    with pytest.raises(ProviderError) as stale:
        await client.refresh(tokens.refresh_token)
    assert stale.value.kind == "auth"
    await client.revoke(TokenSet(access_token="EAAAnever-issued"))  # 404: nothing left to revoke


async def test_oauth_bad_code_and_bad_secret(fake: FakeSquare, client: SquareClient) -> None:
    with pytest.raises(ProviderError) as bad_code:
        await client.exchange_code(code="sq0cgp-unknown", redirect_uri="https://x.test/cb")
    assert bad_code.value.kind == "permanent"
    wrong = SquareClient(client_id=fake.client_id, client_secret="sq0csp-wrong", base_url=fake.base_url)
    try:
        with pytest.raises(ProviderError) as bad_secret:
            await wrong.exchange_code(code=fake.issue_code(), redirect_uri="https://x.test/cb")
    finally:
        await wrong.aclose()
    assert bad_secret.value.kind == "auth"
    assert "sq0csp" not in bad_secret.value.message


# --- failures ---


async def test_500_then_success_is_retried(fake: FakeSquare, client: SquareClient, sleeps: Sleeps) -> None:
    fake.seed_bookings(30, START, days=5, customers=5)
    fake.fail_next(2, status=500, path="/v2/bookings")
    fake.fail_next(1, status=503, path="/v2/customers")
    found = await collect(client.calendar(fake.access_token), START, START + timedelta(days=5))
    assert len(found) == 30
    assert all(a.customer and a.customer.name for a in found)
    assert fake.count("/v2/bookings", status=500) == 2
    assert fake.count("/v2/customers/bulk-retrieve", status=503) == 1
    assert len(sleeps.delays) == 3


async def test_429_retry_after_is_honoured(fake: FakeSquare, client: SquareClient, sleeps: Sleeps) -> None:
    fake.seed_catalog(3)
    fake.fail_next(1, status=429, retry_after=1, path="/v2/catalog/list")
    fake.fail_next(1, status=429, retry_after=2, path="/v2/inventory")
    found = await stock(client.inventory(fake.access_token))
    assert len(found) == 3
    assert sleeps.delays == [1.0, 2.0]


async def test_429_default_policy_waits_retry_after(fake: FakeSquare, sleeps: Sleeps) -> None:
    """With the default retry policy (not the fixture's fast one), Retry-After is the wait asked for."""
    fake.seed_catalog(1)
    fake.fail_next(1, status=429, retry_after=1, path="/v2/catalog/list")
    http = ProviderHttp("Square", base_url=fake.base_url, sleep=sleeps)
    square = SquareClient(
        client_id=fake.client_id, client_secret=fake.client_secret, base_url=fake.base_url, http=http
    )
    try:
        assert len(await stock(square.inventory(fake.access_token))) == 1
    finally:
        await http.aclose()
    calls = [c for c in fake.calls if c.path == "/v2/catalog/list"]
    assert [c.status for c in calls] == [429, 200]
    assert sleeps.delays == [1.0]


async def test_401_expired_token_is_auth_without_retry(fake: FakeSquare, client: SquareClient) -> None:
    fake.seed_bookings(3, START, days=1, customers=1)
    fake.fail_next(1, status=401, path="/v2/bookings")
    with pytest.raises(ProviderError) as refused:
        await collect(client.calendar(fake.access_token), START, START + timedelta(days=1))
    assert refused.value.kind == "auth"
    assert refused.value.status == 401
    assert "ACCESS_TOKEN_EXPIRED" in refused.value.message
    assert fake.access_token not in refused.value.message
    assert fake.count("/v2/bookings") == 1

    fake.expire_token(fake.access_token)
    with pytest.raises(ProviderError) as expired:
        await stock(client.inventory(fake.access_token))
    assert expired.value.kind == "auth"
    assert "ACCESS_TOKEN_EXPIRED" in expired.value.message
    with pytest.raises(ProviderError) as unknown:
        await stock(client.inventory("EAAAnot-a-token"))
    assert unknown.value.kind == "auth"
    assert "EAAAnot-a-token" not in str(unknown.value)


async def test_fake_refuses_ranges_over_31_days_and_missing_version(fake: FakeSquare) -> None:
    headers = {"Authorization": f"Bearer {fake.access_token}", "Square-Version": "2024-10-17"}
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        too_long = await http.get(
            "/v2/bookings",
            headers=headers,
            params={"start_at_min": "2025-01-01T00:00:00Z", "start_at_max": "2025-02-01T00:00:01Z"},
        )
        no_version = await http.get("/v2/bookings", headers={"Authorization": headers["Authorization"]})
    assert too_long.status_code == 400
    assert too_long.json()["errors"][0]["category"] == "INVALID_REQUEST_ERROR"
    assert no_version.status_code == 400


# --- webhooks and mapping ---


def test_webhook_signature() -> None:
    key, url = "wbhk-signature-key", "https://api.brandvx.test/webhooks/square"
    body = b'{"merchant_id":"ML1","type":"booking.updated","event_id":"e1","data":{"id":"b1"}}'
    signature = sign(signature_key=key, notification_url=url, body=body)
    assert verify_webhook(signature_key=key, notification_url=url, body=body, signature=signature)
    assert SquareClient.verify_webhook(
        signature_key=key, notification_url=url, body=body, signature=signature
    )
    assert not verify_webhook(signature_key=key, notification_url=url, body=body + b" ", signature=signature)
    assert not verify_webhook(signature_key=key, notification_url=url + "/", body=body, signature=signature)
    assert not verify_webhook(signature_key="other", notification_url=url, body=body, signature=signature)
    assert not verify_webhook(signature_key=key, notification_url=url, body=body, signature=None)
    assert not verify_webhook(signature_key=key, notification_url=url, body=body, signature="ünïcode")


def test_mapping_rules() -> None:
    assert display_name("Shampoo", "Regular") == "Shampoo"
    assert display_name("Shampoo", "Large") == "Shampoo (Large)"
    assert display_name("Shampoo", None) == "Shampoo"
    assert floor_quantity(parse_quantity("2.75")) == 2
    assert floor_quantity(parse_quantity("-0.5")) == -1
    assert parse_quantity("NaN") == 0
    assert parse_quantity(None) == 0
