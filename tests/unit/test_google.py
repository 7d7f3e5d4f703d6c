"""GoogleCalendarClient against FakeGoogle over real HTTP on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from domain.model import Provider
from domain.sync import CalendarSource, ExternalAppointment, FetchedPage, OAuthClient, ProviderError
from integrations.google import CALENDAR_SCOPE, TIME_UNKNOWN, GoogleCalendarClient, GoogleCalendarSource
from integrations.http import ProviderHttp, RetryPolicy
from tests.fakes.google_server import FakeGoogle, RecordedRequest

CLIENT_ID = "1234-test.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-test-secret-value"
REDIRECT_URI = "https://app.brandvx.test/oauth/google/callback"
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGoogle]:
    with FakeGoogle(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as server:
        yield server


@pytest.fixture
async def google(fake: FakeGoogle) -> AsyncIterator[GoogleCalendarClient]:
    http = ProviderHttp(
        "Google", base_url=fake.base_url, retry=RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01)
    )
    client = GoogleCalendarClient(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        auth_base_url=fake.base_url,
        token_base_url=fake.base_url,
        api_base_url=fake.base_url,
        http=http,
    )
    yield client
    await client.aclose()
    await http.aclose()


EVENTS = "/calendar/v3/calendars/primary/events"


def calls(
    fake: FakeGoogle, path: str, method: str = "GET", *, token: str | None = None
) -> list[RecordedRequest]:
    return [
        r
        for r in fake.requests
        if r.path == path and r.method == method and (token is None or r.authorization == f"Bearer {token}")
    ]


async def collect(
    source: GoogleCalendarSource,
    *,
    sync_token: str | None = None,
    start: datetime = START,
    end: datetime = END,
) -> tuple[list[FetchedPage[ExternalAppointment]], list[ExternalAppointment]]:
    pages = [page async for page in source.appointments(start, end, sync_token=sync_token)]
    return pages, [item for page in pages for item in page.items]


def test_the_client_implements_the_ports(google: GoogleCalendarClient) -> None:
    oauth: OAuthClient = google
    source: CalendarSource = google.calendar("token")
    assert oauth is google
    assert source.next_sync_token is None


async def test_full_sync_then_incremental_sync(google: GoogleCalendarClient, fake: FakeGoogle) -> None:
    email = "full-sync@example.com"
    token = fake.add_account(email)
    ids = fake.seed_events(1_100, account=email, seed=1)
    source = google.calendar(token)

    pages, items = await collect(source)

    assert [len(page.items) for page in pages] == [250, 250, 250, 250, 100]
    assert sorted(item.external_id for item in items) == sorted(ids)
    assert [item.starts_at for item in items] == sorted(item.starts_at for item in items)
    assert source.next_sync_token
    assert not source.full_resync
    listing = calls(fake, EVENTS, token=token)
    assert len(listing) == 5
    assert listing[0].params == {
        "timeMin": "2026-01-01T00:00:00Z",
        "timeMax": "2026-04-01T00:00:00Z",
        "orderBy": "startTime",
        "singleEvents": "true",
        "showDeleted": "true",
        "maxResults": "250",
    }
    for request in listing[1:]:
        assert request.params.pop("pageToken")
        assert request.params == listing[0].params
    assert {r.authorization for r in listing} == {f"Bearer {token}"}

    sample = next(item for item in items if item.external_id == ids[0])
    raw = fake.event(ids[0], account=email)
    assert sample.provider is Provider.GOOGLE
    assert sample.title == raw["summary"]
    assert sample.starts_at == datetime.fromisoformat(raw["start"]["dateTime"])
    assert sample.starts_at.isoformat() == raw["start"]["dateTime"]  # offset kept as Google sent it
    assert sample.ends_at > sample.starts_at
    assert sample.status == "booked"
    assert sample.shared_reference == raw["iCalUID"]
    assert sample.customer is not None
    assert sample.customer.email == raw["attendees"][1]["email"]
    assert sample.customer.name == raw["attendees"][1]["displayName"]

    first_token = source.next_sync_token
    moved = datetime(2027, 6, 1, 15, tzinfo=UTC)  # out of the synced range: still reported
    fake.update_event(ids[10], account=email, summary="Renamed")
    fake.update_event(ids[20], account=email, start=moved, end=moved + timedelta(hours=1))
    fake.update_event(ids[30], account=email, summary="Renamed again")
    fake.cancel_event(ids[40], account=email)
    fake.cancel_event(ids[50], account=email)
    fake.clear_requests()

    pages, changes = await collect(source, sync_token=first_token)

    assert sorted(c.external_id for c in changes) == sorted(ids[n] for n in (10, 20, 30, 40, 50))
    by_id = {c.external_id: c for c in changes}
    assert by_id[ids[10]].title == "Renamed"
    assert by_id[ids[30]].title == "Renamed again"
    assert by_id[ids[20]].starts_at == moved
    assert all(by_id[ids[n]].status == "booked" for n in (10, 20, 30))
    for n in (40, 50):
        # Google sends only the id of a deleted event; the record says "no times".
        assert by_id[ids[n]].status == "cancelled"
        assert by_id[ids[n]].starts_at == by_id[ids[n]].ends_at == TIME_UNKNOWN
    incremental = calls(fake, EVENTS, token=token)
    assert len(incremental) == 1
    assert incremental[0].params == {
        "syncToken": first_token,
        "singleEvents": "true",
        "showDeleted": "true",
        "maxResults": "250",
    }
    assert not source.full_resync
    assert source.next_sync_token not in (None, first_token)

    _, nothing = await collect(source, sync_token=source.next_sync_token)
    assert nothing == []


async def test_expired_sync_token_falls_back_to_a_full_listing(
    google: GoogleCalendarClient, fake: FakeGoogle
) -> None:
    email = "expired-token@example.com"
    token = fake.add_account(email)
    ids = fake.seed_events(300, account=email, seed=2)
    source = google.calendar(token)
    await collect(source)
    old_token = source.next_sync_token
    assert old_token
    fake.update_event(ids[0], account=email, summary="Changed while the token expired")
    fake.expire_sync_tokens()
    fake.clear_requests()

    _, items = await collect(source, sync_token=old_token)

    assert source.full_resync
    assert sorted(i.external_id for i in items) == sorted(ids)
    assert {i.title for i in items if i.external_id == ids[0]} == {"Changed while the token expired"}
    listing = calls(fake, EVENTS, token=token)
    assert "syncToken" in listing[0].params
    assert all("syncToken" not in r.params and "timeMin" in r.params for r in listing[1:])
    new_token = source.next_sync_token
    assert new_token not in (None, old_token)

    _, nothing = await collect(source, sync_token=new_token)
    assert nothing == []
    assert not source.full_resync


async def test_all_day_and_non_appointment_events_are_skipped(
    google: GoogleCalendarClient, fake: FakeGoogle
) -> None:
    email = "all-day@example.com"
    token = fake.add_account(email)
    timed = fake.seed_events(20, account=email, seed=3)
    fake.seed_events(7, account=email, seed=4, all_day=True)
    block = datetime(2026, 2, 2, 12, tzinfo=UTC)
    fake.add_event(account=email, start=block, end=block + timedelta(hours=2), event_type="outOfOffice")

    _, items = await collect(google.calendar(token))

    assert sorted(i.external_id for i in items) == sorted(timed)


async def test_attendees_recurring_instances_and_cancelled_instances(
    google: GoogleCalendarClient, fake: FakeGoogle
) -> None:
    email = "mapping@example.com"
    token = fake.add_account(email)
    first = datetime(2026, 1, 10, 15, tzinfo=UTC)
    attendees: list[dict[str, Any]] = [
        {"email": "room-1@resource.calendar.google.com", "resource": True, "displayName": "Chair 1"},
        {"email": email, "self": True, "organizer": True},
        {"email": "Mia@Example.com", "displayName": "Mia Park"},
        {"email": "friend@example.com"},
    ]
    series = [
        fake.add_event(
            account=email,
            summary="Weekly blowout",
            start=first + timedelta(weeks=n),
            end=first + timedelta(weeks=n, hours=1),
            attendees=attendees,
            recurring_event_id="series0123",
        )
        for n in range(3)
    ]
    fake.add_event(account=email, start=first, end=first + timedelta(minutes=30))  # no attendees
    source = google.calendar(token)
    _, items = await collect(source)

    by_id = {i.external_id: i for i in items}
    instance = by_id[series[0]]
    assert instance.customer is not None
    assert (instance.customer.name, instance.customer.email) == ("Mia Park", "Mia@Example.com")
    references = [by_id[s].shared_reference for s in series]
    assert references[0] == "series0123@google.com;RECURRENCE-ID=20260110T150000Z"
    assert len(set(references)) == 3
    assert [i.customer for i in items if i.external_id not in series] == [None]

    fake.cancel_event(series[1], account=email)
    _, changes = await collect(source, sync_token=source.next_sync_token)
    assert [(c.external_id, c.status) for c in changes] == [(series[1], "cancelled")]
    # A cancelled instance keeps its original start (Google guarantees originalStartTime).
    assert changes[0].starts_at == first + timedelta(weeks=1)


async def test_oauth_exchange_refresh_and_revoke(fake: FakeGoogle) -> None:
    fake.consent_as = "owner@salon.example"
    async with GoogleCalendarClient(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        auth_base_url=fake.base_url,
        token_base_url=fake.base_url,
        api_base_url=fake.base_url,
    ) as google:
        url = google.authorize_url(state="st-123", redirect_uri=REDIRECT_URI)
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{fake.base_url}/o/oauth2/v2/auth"
        assert parse_qs(parts.query) == {
            "response_type": ["code"],
            "client_id": [CLIENT_ID],
            "redirect_uri": [REDIRECT_URI],
            "scope": [f"{CALENDAR_SCOPE} openid email"],
            "access_type": ["offline"],
            "prompt": ["consent"],
            "include_granted_scopes": ["true"],
            "state": ["st-123"],
        }
        async with httpx.AsyncClient() as browser:
            consent = await browser.get(url)
        assert consent.status_code == 302
        callback = parse_qs(urlsplit(consent.headers["location"]).query)
        assert callback["state"] == ["st-123"]
        code = callback["code"][0]

        before = datetime.now(UTC)
        tokens = await google.exchange_code(code=code, redirect_uri=REDIRECT_URI)

        assert tokens.account_id == "owner@salon.example"
        assert tokens.extra["sub"]
        assert tokens.refresh_token
        assert CALENDAR_SCOPE in tokens.scopes
        assert "openid" in tokens.scopes
        assert tokens.expires_at is not None
        assert (
            before + timedelta(seconds=3590)
            <= tokens.expires_at
            <= datetime.now(UTC) + timedelta(seconds=3600)
        )
        exchange = calls(fake, "/token", "POST")[-1]
        assert exchange.form == {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
        _, items = await collect(google.calendar(tokens.access_token))
        assert items == []

        with pytest.raises(ProviderError) as reused:
            await google.exchange_code(code=code, redirect_uri=REDIRECT_URI)
        assert reused.value.kind == "auth"

        refreshed = await google.refresh(tokens.refresh_token)
        assert refreshed.access_token != tokens.access_token
        assert refreshed.refresh_token == tokens.refresh_token  # Google does not rotate it
        assert refreshed.account_id == "owner@salon.example"
        assert calls(fake, "/token", "POST")[-1].form["grant_type"] == "refresh_token"

        await google.revoke(tokens)
        revoke = calls(fake, "/revoke", "POST")[-1]
        assert (revoke.params, revoke.form) == ({}, {"token": tokens.refresh_token})  # not in the URL
        await google.revoke(tokens)  # already revoked: nothing left to do

        with pytest.raises(ProviderError) as dead:
            await google.refresh(tokens.refresh_token)
        assert dead.value.kind == "auth"
        assert dead.value.status == 400
        assert tokens.refresh_token not in str(dead.value)
        with pytest.raises(ProviderError) as refused:
            await collect(google.calendar(refreshed.access_token))
        assert refused.value.kind == "auth"
    fake.consent_as = "owner@example.com"


async def test_revoked_refresh_token_is_an_auth_error(google: GoogleCalendarClient, fake: FakeGoogle) -> None:
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(google.authorize_url(state="s", redirect_uri=REDIRECT_URI))
    code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
    tokens = await google.exchange_code(code=code, redirect_uri=REDIRECT_URI)
    assert tokens.refresh_token
    fake.revoke_grant(tokens.refresh_token)  # the user removed BrandVX from their Google account

    with pytest.raises(ProviderError) as error:
        await google.refresh(tokens.refresh_token)

    assert error.value.kind == "auth"
    assert "reconnect" in error.value.message


async def test_wrong_client_secret_is_permanent(fake: FakeGoogle) -> None:
    async with GoogleCalendarClient(
        client_id=CLIENT_ID, client_secret="wrong", token_base_url=fake.base_url, api_base_url=fake.base_url
    ) as google:
        with pytest.raises(ProviderError) as error:
            await google.refresh("1//0anything")
    assert error.value.kind == "permanent"
    assert "wrong" not in str(error.value)


async def test_server_errors_are_retried(google: GoogleCalendarClient, fake: FakeGoogle) -> None:
    email = "retries@example.com"
    token = fake.add_account(email)
    ids = fake.seed_events(30, account=email, seed=5)
    fake.clear_requests()
    fake.fail_next(500, times=2, path=EVENTS)
    fake.fail_next(429, retry_after=0, path=EVENTS)

    _, items = await collect(google.calendar(token))

    assert sorted(i.external_id for i in items) == sorted(ids)
    assert len(calls(fake, EVENTS, token=token)) == 4

    fake.fail_next(503, path="/token")
    async with httpx.AsyncClient() as browser:
        consent = await browser.get(google.authorize_url(state="s", redirect_uri=REDIRECT_URI))
    code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
    assert (await google.exchange_code(code=code, redirect_uri=REDIRECT_URI)).access_token


async def test_errors_that_stay(google: GoogleCalendarClient, fake: FakeGoogle) -> None:
    email = "errors@example.com"
    token = fake.add_account(email)
    fake.seed_events(3, account=email, seed=6)
    source = google.calendar(token)

    fake.fail_next(500, times=4, path=EVENTS)
    with pytest.raises(ProviderError) as transient:
        await collect(source)
    assert transient.value.kind == "transient"

    fake.fail_next(403, reason="userRateLimitExceeded", path=EVENTS)
    with pytest.raises(ProviderError) as limited:
        await collect(source)
    assert limited.value.kind == "rate_limited"

    fake.clear_requests()
    fake.expire_access_token(token)
    with pytest.raises(ProviderError) as refused:
        await collect(source)
    assert refused.value.kind == "auth"
    assert len(calls(fake, EVENTS, token=token)) == 1  # not retried
    assert token not in str(refused.value)

    with pytest.raises(ProviderError) as missing:
        await collect(google.calendar(fake.add_account(email), "someone-else@example.com"))
    assert missing.value.kind == "permanent"

    with pytest.raises(ValueError, match="timezone-aware"):
        await collect(source, start=datetime(2026, 1, 1))  # naive on purpose


async def test_create_event(google: GoogleCalendarClient, fake: FakeGoogle) -> None:
    email = "create@example.com"
    token = fake.add_account(email)
    start = datetime(2026, 2, 3, 10, tzinfo=NEW_YORK)

    event_id = await google.create_event(
        token,
        calendar_id="primary",
        summary="Balayage - Mia",
        start=start,
        end=start + timedelta(minutes=90),
        attendee_email="mia@example.com",
    )

    request = calls(fake, "/calendar/v3/calendars/primary/events", "POST")[-1]
    assert request.params == {"sendUpdates": "none"}
    assert request.authorization == f"Bearer {token}"
    assert request.json == {
        "id": event_id,
        "summary": "Balayage - Mia",
        "start": {"dateTime": "2026-02-03T10:00:00-05:00"},
        "end": {"dateTime": "2026-02-03T11:30:00-05:00"},
        "attendees": [{"email": "mia@example.com"}],
    }
    _, items = await collect(google.calendar(token))
    assert len(items) == 1
    assert items[0].external_id == event_id
    assert items[0].starts_at == start
    assert items[0].customer is not None
    assert items[0].customer.email == "mia@example.com"

    bare = await google.create_event(
        token, calendar_id="primary", summary="Walk-in", start=start, end=start + timedelta(hours=1)
    )
    assert "attendees" not in calls(fake, "/calendar/v3/calendars/primary/events", "POST")[-1].json
    assert bare != event_id


async def test_create_event_retried_after_a_lost_response_creates_one_event(
    google: GoogleCalendarClient, fake: FakeGoogle
) -> None:
    email = "create-retry@example.com"
    token = fake.add_account(email)
    start = datetime(2026, 2, 4, 15, tzinfo=UTC)
    path = "/calendar/v3/calendars/primary/events"
    fake.clear_requests()
    fake.fail_next(502, after=True, path=path)

    event_id = await google.create_event(
        token,
        calendar_id="primary",
        summary="Facial",
        start=start,
        end=start + timedelta(hours=1),
        event_id="bv0001abc",
    )

    assert event_id == "bv0001abc"
    assert len(calls(fake, path, "POST")) == 2  # the lost one, and the retry answered 409 duplicate
    _, items = await collect(google.calendar(token))
    assert [i.external_id for i in items] == ["bv0001abc"]

    with pytest.raises(ValueError, match="base32hex"):
        await google.create_event(
            token,
            calendar_id="primary",
            summary="x",
            start=start,
            end=start + timedelta(hours=1),
            event_id="X_1",
        )


async def test_ten_thousand_events_sync_quickly(google: GoogleCalendarClient, fake: FakeGoogle) -> None:
    email = "big@example.com"
    token = fake.add_account(email)
    began = time.perf_counter()
    ids = fake.seed_events(10_000, account=email, seed=7, days=365, first_day=date(2026, 1, 1))
    source = google.calendar(token)

    pages, items = await collect(source, end=datetime(2027, 1, 1, tzinfo=UTC))

    assert len(pages) == 40
    assert len(items) == len({i.external_id for i in items}) == 10_000
    assert {i.external_id for i in items} == set(ids)
    assert time.perf_counter() - began < 20


async def test_fake_enforces_googles_query_rules(fake: FakeGoogle) -> None:
    email = "rules@example.com"
    token = fake.add_account(email)
    fake.seed_events(5, account=email, seed=8)
    url = f"{fake.base_url}/calendar/v3/calendars/primary/events"
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=auth) as http:
        first = await http.get(url, params={"maxResults": "2"})
        assert first.status_code == 200
        assert len(first.json()["items"]) == 2
        page_token = first.json()["nextPageToken"]
        moved = await http.get(url, params={"maxResults": "2", "pageToken": page_token, "q": "other"})
        assert moved.status_code == 400

        listed = await http.get(url, params={"maxResults": "2500"})
        sync_token = listed.json()["nextSyncToken"]
        mixed = await http.get(url, params={"syncToken": sync_token, "timeMin": "2026-01-01T00:00:00Z"})
        assert mixed.status_code == 400
        unordered = await http.get(url, params={"orderBy": "startTime"})
        assert unordered.status_code == 400

        fake.expire_sync_tokens()
        gone = await http.get(url, params={"syncToken": sync_token})
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == 410
        assert gone.json()["error"]["errors"][0]["reason"] == "fullSyncRequired"

        anonymous = await http.get(url, headers={"Authorization": "Bearer nope"})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["errors"][0]["reason"] == "authError"
