"""AcuityClient over real HTTP against FakeAcuity on 127.0.0.1 (no mocks).

The fake caps every list at ``max`` without saying so, as Acuity does; these tests pin that the
client never takes a full page as the whole story.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from domain.model import Provider
from domain.sync import (
    CalendarSource,
    ExternalAppointment,
    FetchedPage,
    IncompleteSync,
    OAuthClient,
    ProviderError,
)
from integrations.acuity import (
    OVERLAP_LOOKBACK,
    AcuityBasic,
    AcuityBearer,
    AcuityCalendar,
    AcuityClient,
    AcuityWebhookError,
    parse_webhook,
    sign_webhook,
    to_external_appointment,
    verify_webhook,
)
from integrations.http import ProviderHttp, RetryPolicy
from tests.fakes.acuity_server import FakeAcuity

NEW_YORK = ZoneInfo("America/New_York")
# March 2025 in New York crosses the DST change (9 March), so local bounds are not a fixed offset.
FIRST_DAY = date(2025, 3, 1)
RANGE_START = datetime(2025, 3, 1, tzinfo=NEW_YORK).astimezone(UTC)
REDIRECT = "https://app.brandvx.test/oauth/acuity/callback"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAcuity]:
    with FakeAcuity() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeAcuity) -> FakeAcuity:
    server.reset()
    return server


class Sleeps:
    """ProviderHttp's sleep: records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def http(fake: FakeAcuity, sleeps: Sleeps) -> AsyncIterator[ProviderHttp]:
    layer = ProviderHttp(
        "Acuity", base_url=fake.base_url, retry=RetryPolicy(attempts=3, base_delay=0.01), sleep=sleeps
    )
    yield layer
    await layer.aclose()


def make_client(fake: FakeAcuity, http: ProviderHttp, **options: object) -> AcuityClient:
    return AcuityClient(
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        base_url=fake.base_url,
        http=http,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
async def client(fake: FakeAcuity, http: ProviderHttp) -> AsyncIterator[AcuityClient]:
    acuity = make_client(fake, http, max_per_request=100)
    yield acuity
    await acuity.aclose()


def basic(fake: FakeAcuity, client: AcuityClient) -> AcuityCalendar:
    return client.calendar_basic(fake.user_id, fake.api_key)


async def collect(
    source: CalendarSource, start: datetime, end: datetime
) -> list[FetchedPage[ExternalAppointment]]:
    return [page async for page in source.appointments(start, end)]


def ids_of(pages: list[FetchedPage[ExternalAppointment]]) -> list[str]:
    return [item.external_id for page in pages for item in page.items]


# --- the page ceiling ---


async def test_the_fake_caps_silently_like_acuity(fake: FakeAcuity) -> None:
    fake.seed(500, FIRST_DAY, 10)
    async with httpx.AsyncClient(base_url=fake.base_url, auth=(fake.user_id, fake.api_key)) as raw:
        response = await raw.get(
            "/api/v1/appointments",
            params={"minDate": "2025-03-01", "maxDate": "2025-03-31", "showall": "true"},
        )
    assert response.status_code == 200
    assert len(response.json()) == 100  # the default max: 400 appointments are missing, and nothing says so
    assert not {"link", "x-total-count"} & set(response.headers)


async def test_every_appointment_exactly_once_through_a_busy_day(
    fake: FakeAcuity, client: AcuityClient
) -> None:
    seeded = fake.seed(2_000, FIRST_DAY, 60, busy={20: 350})
    source = basic(fake, client)
    end = RANGE_START + timedelta(days=60)

    pages = await collect(source, RANGE_START, end)

    ids = ids_of(pages)
    assert len(ids) == 2_000
    assert set(ids) == {str(appointment_id) for appointment_id in seeded}
    # Windows: more than one, some split below a day (the busy day), contiguous over the walk.
    assert len(pages) > 1
    assert source.splits >= 1
    windows = [page.window for page in pages]
    assert all(window is not None for window in windows)
    spans = [window for window in windows if window is not None]
    assert spans[0][0] == RANGE_START - OVERLAP_LOOKBACK
    assert spans[-1][1] == end
    assert all(left[1] == right[0] for left, right in itertools.pairwise(spans))
    assert min(high - low for low, high in spans) < timedelta(days=1)
    for page, (low, high) in zip(pages, spans, strict=True):
        assert len(page.items) < 100
        assert all(low <= item.starts_at <= high for item in page.items)
    # Every request asked for the real query shape; no full answer was ever accepted as a page.
    requests = fake.list_requests()
    assert {r.params["direction"] for r in requests} == {"ASC"}
    assert {r.params["showall"] for r in requests} == {"true"}
    assert {r.params["max"] for r in requests} == {"100"}
    assert sum(1 for r in requests if r.returned == 100) == source.splits
    assert source.requests == len(requests) == len(pages) + source.splits


async def test_a_burst_no_window_can_split_raises_incomplete_sync(
    fake: FakeAcuity, http: ProviderHttp
) -> None:
    fake.seed(50, FIRST_DAY, 10)
    fake.burst(500, datetime(2025, 3, 4, 10, 0))
    client = make_client(fake, http, max_per_request=100, min_window=timedelta(days=1))
    source = basic(fake, client)

    with pytest.raises(IncompleteSync, match="ceiling") as raised:
        await collect(source, RANGE_START, RANGE_START + timedelta(days=10))

    assert "cannot be split" in str(raised.value)
    assert fake.user_id not in str(raised.value)


async def test_a_burst_at_one_minute_also_fails_at_the_default_smallest_window(
    fake: FakeAcuity, client: AcuityClient
) -> None:
    fake.burst(150, datetime(2025, 3, 4, 10, 0))
    with pytest.raises(IncompleteSync):
        await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=7))


async def test_an_account_that_ignores_time_of_day_fails_loudly_instead_of_losing_a_busy_day(
    http: ProviderHttp,
) -> None:
    with FakeAcuity(bounds="date") as dates_only:
        dates_only.seed(300, FIRST_DAY, 5, busy={2: 250})
        layer = ProviderHttp("Acuity", base_url=dates_only.base_url, retry=RetryPolicy(attempts=1))
        client = make_client(dates_only, layer, max_per_request=100)
        try:
            with pytest.raises(IncompleteSync):
                await collect(
                    client.calendar_basic(dates_only.user_id, dates_only.api_key),
                    RANGE_START,
                    RANGE_START + timedelta(days=5),
                )
        finally:
            await layer.aclose()


async def test_ten_thousand_appointments_at_the_default_page_size(
    fake: FakeAcuity, http: ProviderHttp, sleeps: Sleeps
) -> None:
    seeded = fake.seed(10_000, FIRST_DAY, 90, busy={10: 1_500})
    client = make_client(fake, http)  # max_per_request=1000

    pages = await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=90))

    ids = ids_of(pages)
    assert len(ids) == len(set(ids)) == len(seeded) == 10_000
    # The cost is in calls, not seconds: 13 week-long windows, a few halvings around the busy day,
    # and no retry or backoff wait.
    assert 13 < len(fake.list_requests()) <= 25
    assert sleeps.delays == []


# --- boundaries and overlap ---


async def test_appointment_on_a_shared_window_bound_is_yielded_once(
    fake: FakeAcuity, client: AcuityClient
) -> None:
    # The first 7-day chunk ends exactly here; inclusive bounds return it in both neighbours.
    boundary = RANGE_START - OVERLAP_LOOKBACK + timedelta(days=7)
    on_bound = fake.add(starts_at=boundary)
    fake.seed(20, FIRST_DAY, 14)

    pages = await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=14))

    assert ids_of(pages).count(str(on_bound)) == 1
    raw_hits = [r for r in fake.list_requests() if r.returned]
    assert len(raw_hits) >= 2


async def test_overlap_includes_an_appointment_already_running_at_start(
    fake: FakeAcuity, client: AcuityClient
) -> None:
    running = fake.add(starts_at=RANGE_START - timedelta(minutes=30), duration_minutes=90)
    ended = fake.add(starts_at=RANGE_START - timedelta(hours=2), duration_minutes=120)
    at_end = fake.add(starts_at=RANGE_START + timedelta(days=1))
    inside = fake.add(starts_at=RANGE_START + timedelta(hours=5))

    ids = set(ids_of(await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=1))))

    assert ids == {str(running), str(inside)}
    assert str(ended) not in ids
    assert str(at_end) not in ids


async def test_naive_range_is_refused(fake: FakeAcuity, client: AcuityClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await collect(basic(fake, client), datetime(2025, 3, 1), datetime(2025, 3, 2))


# --- mapping ---


async def test_statuses_times_title_and_customer(fake: FakeAcuity, client: AcuityClient) -> None:
    local = datetime(2025, 3, 10, 14, 30, tzinfo=NEW_YORK)
    booked = fake.add(starts_at=local, duration_minutes=45, type_name="Blowout", first_name="Cleo")
    canceled = fake.add(starts_at=local + timedelta(hours=1), canceled=True)
    no_show = fake.add(starts_at=local + timedelta(hours=2), no_show=True)

    pages = await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=14))
    by_id = {item.external_id: item for page in pages for item in page.items}

    first = by_id[str(booked)]
    assert first.provider is Provider.ACUITY
    assert first.status == "booked"
    assert first.title == "Blowout"
    assert first.starts_at == local
    assert first.starts_at.utcoffset() == timedelta(hours=-4)
    assert first.ends_at - first.starts_at == timedelta(minutes=45)
    assert first.customer is not None
    assert first.customer.external_id is None
    assert (first.customer.name, first.customer.email, first.customer.phone) == (
        "Cleo Moss",
        "ana.moss@example.com",
        "+15555550100",
    )
    assert first.shared_reference is None
    assert by_id[str(canceled)].status == "cancelled"  # showall=true: cancellations sync too
    assert by_id[str(no_show)].status == "no_show"


def test_mapping_end_time_without_duration_and_past_midnight() -> None:
    raw = {
        "id": 7,
        "datetime": "2025-03-05T23:30:00-0500",
        "date": "March 5, 2025",
        "endTime": "12:15am",
        "type": "  ",
        "canceled": False,
    }
    appointment = to_external_appointment(raw)
    assert appointment.ends_at == datetime(2025, 3, 6, 0, 15, tzinfo=appointment.starts_at.tzinfo)
    assert appointment.title == "Appointment"
    assert appointment.customer is None
    assert to_external_appointment({**raw, "noShow": True}).status == "no_show"
    assert to_external_appointment({**raw, "noShow": True, "canceled": True}).status == "cancelled"
    assert to_external_appointment({**raw, "duration": "90"}).ends_at == appointment.starts_at + timedelta(
        minutes=90
    )
    with pytest.raises(ProviderError, match="start time") as raised:
        to_external_appointment({"id": 8, "datetime": "soon"})
    assert raised.value.kind == "permanent"


# --- credentials and errors ---


async def test_basic_and_bearer_both_work(fake: FakeAcuity, client: AcuityClient) -> None:
    appointment_id = fake.add(starts_at=RANGE_START + timedelta(hours=10))
    token = fake.issue_token()

    for source in (basic(fake, client), client.calendar_oauth(token)):
        assert ids_of(await collect(source, RANGE_START, RANGE_START + timedelta(days=1))) == [
            str(appointment_id)
        ]
        assert source.next_sync_token is None

    answered = {r.path for r in fake.requests if r.status == 200}
    assert "/api/v1/me" in answered


@pytest.mark.parametrize("which", ["basic", "bearer"])
async def test_wrong_credentials_are_an_auth_error(
    fake: FakeAcuity, client: AcuityClient, which: str
) -> None:
    source = (
        client.calendar_basic(fake.user_id, "not-the-key")
        if which == "basic"
        else client.calendar_oauth("not-a-token")
    )
    with pytest.raises(ProviderError) as raised:
        await collect(source, RANGE_START, RANGE_START + timedelta(days=1))
    assert raised.value.kind == "auth"
    assert raised.value.status == 401
    assert "not-the-key" not in str(raised.value)


async def test_server_errors_are_retried(fake: FakeAcuity, client: AcuityClient, sleeps: Sleeps) -> None:
    fake.seed(30, FIRST_DAY, 3)
    fake.fail_next(2, status=500)

    pages = await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=3))

    assert len(ids_of(pages)) == 30
    assert len(sleeps.delays) == 2
    assert [r.status for r in fake.requests[:3]] == [500, 500, 200]


async def test_rate_limit_waits_for_retry_after(
    fake: FakeAcuity, client: AcuityClient, sleeps: Sleeps
) -> None:
    fake.add(starts_at=RANGE_START + timedelta(hours=10))
    fake.fail_next(1, status=429, retry_after=7)

    pages = await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=1))

    assert len(ids_of(pages)) == 1
    assert sleeps.delays == [7.0]


async def test_errors_that_outlast_the_retries_surface_classified(
    fake: FakeAcuity, client: AcuityClient
) -> None:
    fake.fail_next(3, status=503)
    with pytest.raises(ProviderError) as raised:
        await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=1))
    assert raised.value.kind == "transient"

    fake.fail_next(1, status=401)
    with pytest.raises(ProviderError) as refused:
        await client.appointment(AcuityBasic(fake.user_id, fake.api_key), 1)
    assert refused.value.kind == "auth"


# --- webhooks ---


async def test_webhook_signature_parse_and_fetch(fake: FakeAcuity, client: AcuityClient) -> None:
    appointment_id = fake.add(starts_at=RANGE_START + timedelta(hours=10), canceled=True)
    body = f"action=appointment.canceled&id={appointment_id}&calendarID=5001&appointmentTypeID=101".encode()
    signature = sign_webhook(api_key=fake.api_key, body=body)

    assert verify_webhook(api_key=fake.api_key, body=body, signature=signature)
    assert not verify_webhook(api_key=fake.api_key, body=body + b"&x=1", signature=signature)
    assert not verify_webhook(api_key="another-key", body=body, signature=signature)
    assert not verify_webhook(api_key=fake.api_key, body=body, signature=None)
    assert not verify_webhook(api_key=fake.api_key, body=body, signature="not base64!")
    assert not verify_webhook(api_key=fake.api_key, body=body, signature=signature[:-4])

    action, webhook_id = parse_webhook(body)
    assert (action, webhook_id) == ("canceled", str(appointment_id))
    assert parse_webhook(b"action=changed&id=12&calendarID=1&appointmentTypeID=2") == ("changed", "12")

    fetched = await client.appointment(AcuityBasic(fake.user_id, fake.api_key), webhook_id)
    assert (fetched.external_id, fetched.status) == (str(appointment_id), "cancelled")

    with pytest.raises(ProviderError) as missing:
        await client.appointment(AcuityBasic(fake.user_id, fake.api_key), 999)
    assert (missing.value.kind, missing.value.status) == ("permanent", 404)


@pytest.mark.parametrize(
    "body", [b"", b"action=scheduled", b"id=12", b"action=scheduled&id=../me", b"action=&id=1", b"\xff\xfe"]
)
def test_webhook_bodies_that_are_not_notifications(body: bytes) -> None:
    with pytest.raises(AcuityWebhookError):
        parse_webhook(body)


# --- OAuth ---


async def test_oauth_authorize_and_exchange(fake: FakeAcuity, client: AcuityClient) -> None:
    oauth: OAuthClient = client  # mypy checks the port is implemented
    url = oauth.authorize_url(state="st-123", redirect_uri=REDIRECT)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{fake.base_url}/oauth2/authorize"
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query == {
        "response_type": "code",
        "scope": "api-v1",
        "client_id": fake.client_id,
        "redirect_uri": REDIRECT,
        "state": "st-123",
    }
    async with httpx.AsyncClient() as browser:
        redirect = await browser.get(url)
    assert redirect.status_code == 302
    callback = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert callback["state"] == ["st-123"]

    tokens = await client.exchange_code(code=callback["code"][0], redirect_uri=REDIRECT)

    assert tokens.access_token
    assert tokens.refresh_token is None
    assert tokens.expires_at is None
    assert tokens.scopes == ("api-v1",)
    assert tokens.account_id == str(fake.account_id)
    assert tokens.extra == {"timezone": "America/New_York"}
    token_request = next(r for r in fake.requests if r.path == "/oauth2/token")
    assert token_request.method == "POST"
    assert token_request.form == {
        "grant_type": "authorization_code",
        "code": callback["code"][0],
        "redirect_uri": REDIRECT,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }
    me = await client.me(AcuityBearer(tokens.access_token))
    assert me["id"] == fake.account_id

    # Codes are single-use; a refused exchange is permanent, not retried.
    with pytest.raises(ProviderError) as reused:
        await client.exchange_code(code=callback["code"][0], redirect_uri=REDIRECT)
    assert reused.value.kind == "permanent"
    with pytest.raises(ProviderError, match="reconnect") as refresh:
        await client.refresh("anything")
    assert refresh.value.kind == "permanent"
    await client.revoke(tokens)  # a documented no-op: Acuity has no revocation endpoint


async def test_client_owns_the_http_layer_it_builds(fake: FakeAcuity) -> None:
    client = AcuityClient(client_id="c", client_secret="s", base_url=fake.base_url + "/")
    try:
        assert client.authorize_url(state="s", redirect_uri=REDIRECT).startswith(fake.base_url + "/oauth2/")
        me = await client.me(AcuityBasic(fake.user_id, fake.api_key))
        assert me["timezone"] == "America/New_York"
    finally:
        await client.aclose()


async def test_range_ending_in_the_repeated_autumn_hour_still_reaches_its_end(
    fake: FakeAcuity, client: AcuityClient
) -> None:
    # 2 November 2025, 01:00-02:00 happens twice in New York; end falls in the second 01:xx (EST).
    end = datetime(2025, 11, 2, 6, 45, tzinfo=UTC)  # 01:45 EST
    late = fake.add(starts_at=datetime(2025, 11, 2, 6, 15, tzinfo=UTC))  # 01:15 EST, inside the range
    after = fake.add(starts_at=datetime(2025, 11, 2, 7, 0, tzinfo=UTC))  # 02:00 EST, after it

    pages = await collect(basic(fake, client), end - timedelta(days=2), end)

    assert ids_of(pages) == [str(late)]
    assert str(after) not in ids_of(pages)


async def test_unknown_account_timezone_walks_in_utc_with_padding(
    fake: FakeAcuity, client: AcuityClient
) -> None:
    first = fake.add(starts_at=datetime(2025, 3, 1, 0, 30))  # local midnight-ish: 05:30 UTC
    last = fake.add(starts_at=datetime(2025, 3, 1, 23, 30))  # 04:30 UTC the next day
    fake.timezone = "Mars/Olympus_Mons"  # what /me reports; the data keeps its real zone
    try:
        pages = await collect(basic(fake, client), RANGE_START, RANGE_START + timedelta(days=1))
    finally:
        fake.timezone = "America/New_York"

    assert ids_of(pages) == [str(first), str(last)]
    spans = [page.window for page in pages if page.window is not None]
    assert spans[0][0] == RANGE_START - OVERLAP_LOOKBACK - timedelta(hours=14)
    assert spans[-1][1] == RANGE_START + timedelta(days=1, hours=14)
