"""AppleCalendarSource over real CalDAV against an in-process Radicale server on 127.0.0.1 (no mocks).

The server plays iCloud: an Apple-ID-like user with a plain htpasswd password, two event calendars
and a Reminders-like task list. March 2025 crosses the US DST change (9 March), so a weekly series
kept at 10:00 New York time moves from 15:00 to 14:00 UTC.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import icalendar
import pytest

from domain.model import Provider
from domain.sync import CalendarSource, ExternalAppointment, ExternalCustomer, ProviderError
from integrations.apple import AppleCalendarSource, appointment_from_vevent
from tests.fakes.caldav_server import Attendee, RadicaleServer, vevent

NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
WINDOW_START = datetime(2025, 3, 1, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(days=30)
OWNER = Attendee("ada@icloud.test", "Ada Salon")
BULK_PER_CALENDAR = 30


@dataclass(frozen=True)
class Seeded:
    server: RadicaleServer
    # external id → (start, end) in UTC for the 60 plain events
    bulk: dict[str, tuple[datetime, datetime]]


def _bulk_event(index: int) -> tuple[icalendar.Event, datetime, datetime]:
    """Event ``index`` of 60: spread over the 30 days, in three styles of writing the time."""
    day = WINDOW_START + timedelta(days=index // 2)
    uid = f"bulk-{index:02d}@icloud.test"
    summary = f"Appointment {index}"
    if index % 3 == 0:  # local time in a named zone, with DTEND
        local = datetime(day.year, day.month, day.day, 9 + index % 8, 30, tzinfo=PARIS)
        end = local + timedelta(minutes=45)
        return (
            vevent(uid=uid, summary=summary, start=local, end=end),
            local.astimezone(UTC),
            end.astimezone(UTC),
        )
    start = day.replace(hour=8 + index % 9)
    if index % 3 == 1:  # UTC with DTEND
        end = start + timedelta(hours=1)
        return vevent(uid=uid, summary=summary, start=start, end=end), start, end
    duration = timedelta(minutes=30 + index)  # UTC with DURATION
    return vevent(uid=uid, summary=summary, start=start, duration=duration), start, start + duration


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    with RadicaleServer(username=OWNER.email) as server:
        salon = server.make_calendar("salon", name="Salon")
        personal = server.make_calendar("personal", name="Personal")
        server.make_calendar("reminders", name="Reminders", components=("VTODO",))
        bulk: dict[str, tuple[datetime, datetime]] = {}
        for index in range(2 * BULK_PER_CALENDAR):
            event, start, end = _bulk_event(index)
            server.put_event(salon if index % 2 == 0 else personal, event)
            bulk[str(event["UID"])] = (start, end)

        first_color = datetime(2025, 3, 3, 10, 0, tzinfo=NEW_YORK)  # Mondays at 10:00 New York time
        series = vevent(
            uid="weekly-color@icloud.test",
            summary="Color refresh",
            start=first_color,
            duration=timedelta(minutes=90),
            rrule="FREQ=WEEKLY;COUNT=8",
        )
        second = first_color + timedelta(days=7)
        cancelled_one = vevent(
            uid="weekly-color@icloud.test",
            summary="Color refresh",
            start=second,
            duration=timedelta(minutes=90),
            recurrence_id=second,
            status="CANCELLED",
        )
        server.put_event(salon, series, cancelled_one)
        server.put_event(
            salon,
            vevent(
                uid="closed@icloud.test", summary="Closed", start=date(2025, 3, 17), end=date(2025, 3, 18)
            ),
        )
        server.put_event(
            salon,
            vevent(
                uid="cancelled@icloud.test",
                summary="Cut (called off)",
                start=datetime(2025, 3, 12, 16, 0, tzinfo=UTC),
                end=datetime(2025, 3, 12, 17, 0, tzinfo=UTC),
                status="CANCELLED",
            ),
        )
        server.put_event(
            salon,
            vevent(
                uid="consult@icloud.test",
                summary="Consultation",
                start=datetime(2025, 3, 14, 11, 0, tzinfo=UTC),
                end=datetime(2025, 3, 14, 11, 30, tzinfo=UTC),
                organizer=OWNER,
                attendees=[OWNER, Attendee("bea@example.com", "Bea Client"), Attendee("cal@example.com")],
            ),
        )
        server.put_event(
            personal,
            vevent(
                uid="invite@example.com",
                summary="Lunch with Cleo",
                start=datetime(2025, 3, 20, 12, 0, tzinfo=UTC),
                end=datetime(2025, 3, 20, 13, 0, tzinfo=UTC),
                organizer=Attendee("cleo@example.com", "Cleo Client"),
                attendees=[OWNER],
            ),
        )
        server.put_event(
            personal,
            vevent(uid="floating@icloud.test", summary="Walk-in", start=datetime(2025, 3, 10, 14, 0)),
        )
        for uid, start in (
            ("before@icloud.test", WINDOW_START - timedelta(hours=2)),  # ends exactly at the window start
            ("after@icloud.test", WINDOW_END),  # starts exactly at the window end
            ("far@icloud.test", WINDOW_END + timedelta(days=40)),
        ):
            server.put_event(
                personal, vevent(uid=uid, summary="Out", start=start, end=start + timedelta(hours=2))
            )
        yield Seeded(server=server, bulk=bulk)


def _source(seeded: Seeded, *, calendar_names: Sequence[str] | None = None) -> AppleCalendarSource:
    server = seeded.server
    return AppleCalendarSource(
        url=server.url, username=server.username, app_password=server.password, calendar_names=calendar_names
    )


@pytest.fixture(scope="module")
async def records(seeded: Seeded) -> list[ExternalAppointment]:
    """One full sync of the seeded account, shared by the tests that only read it."""
    return await _all(_source(seeded))


async def _all(source: CalendarSource) -> list[ExternalAppointment]:
    return [record async for page in source.appointments(WINDOW_START, WINDOW_END) for record in page.items]


def _by_reference(records: list[ExternalAppointment], reference: str) -> list[ExternalAppointment]:
    return sorted((r for r in records if r.shared_reference == reference), key=lambda r: r.starts_at)


async def test_sixty_events_in_two_calendars_come_back_once_with_their_times(seeded: Seeded) -> None:
    source = _source(seeded)
    pages = [page async for page in source.appointments(WINDOW_START, WINDOW_END)]

    assert len(pages) == 2  # Salon and Personal; the task-only Reminders list is no event calendar
    records = [record for page in pages for record in page.items]
    ids = [record.external_id for record in records]
    assert len(ids) == len(set(ids))
    bulk = {r.external_id: r for r in records if r.external_id.startswith("bulk-")}
    assert len(bulk) == 2 * BULK_PER_CALENDAR
    for external_id, (start, end) in seeded.bulk.items():
        record = bulk[external_id]
        assert (record.starts_at, record.ends_at) == (start, end), external_id
        assert record.starts_at.tzinfo is UTC
        assert record.provider is Provider.APPLE
        assert record.status == "booked"
        assert record.shared_reference == external_id
        assert record.title.startswith("Appointment ")
        assert record.customer is None
    # Radicale speaks RFC 6578: both calendars' sync tokens are kept for the next sync's change check.
    assert source.next_sync_token is not None
    assert len(json.loads(source.next_sync_token)["calendars"]) == 2


def test_a_weekly_series_is_expanded_into_occurrences_with_their_own_ids(
    records: list[ExternalAppointment],
) -> None:
    color = _by_reference(records, "weekly-color@icloud.test")
    # Mondays 3 to 24 March; the 31st starts after the window, the last four occurrences later still.
    starts = [datetime(2025, 3, 3, 10, tzinfo=NEW_YORK) + timedelta(weeks=n) for n in range(4)]
    assert [r.starts_at for r in color] == [s.astimezone(UTC) for s in starts]
    assert [r.starts_at.hour for r in color] == [15, 14, 14, 14]  # DST began on 9 March
    assert all(r.ends_at - r.starts_at == timedelta(minutes=90) for r in color)
    assert len({r.external_id for r in color}) == 4
    assert color[0].external_id == "weekly-color@icloud.test#20250303T150000Z"
    assert [r.status for r in color] == ["booked", "cancelled", "booked", "booked"]


def test_all_day_events_are_not_appointments(records: list[ExternalAppointment]) -> None:
    assert _by_reference(records, "closed@icloud.test") == []


def test_a_cancelled_event_is_returned_as_cancelled(records: list[ExternalAppointment]) -> None:
    [cancelled] = _by_reference(records, "cancelled@icloud.test")
    assert cancelled.status == "cancelled"
    assert cancelled.title == "Cut (called off)"
    assert cancelled.starts_at == datetime(2025, 3, 12, 16, 0, tzinfo=UTC)


def test_the_customer_is_the_first_attendee_other_than_the_organizer(
    records: list[ExternalAppointment],
) -> None:
    [consult] = _by_reference(records, "consult@icloud.test")
    assert consult.customer == ExternalCustomer(external_id=None, name="Bea Client", email="bea@example.com")
    [invite] = _by_reference(records, "invite@example.com")
    assert invite.customer == ExternalCustomer(external_id=None, name="Cleo Client", email="cleo@example.com")


def test_floating_times_are_read_as_utc_and_the_window_is_half_open(
    records: list[ExternalAppointment],
) -> None:
    [walk_in] = _by_reference(records, "floating@icloud.test")
    assert walk_in.starts_at == walk_in.ends_at == datetime(2025, 3, 10, 14, 0, tzinfo=UTC)
    references = {r.shared_reference for r in records}
    assert references.isdisjoint({"before@icloud.test", "after@icloud.test", "far@icloud.test"})


async def test_named_calendars_only(seeded: Seeded) -> None:
    pages = [
        page
        async for page in _source(seeded, calendar_names=["personal"]).appointments(WINDOW_START, WINDOW_END)
    ]

    assert len(pages) == 1
    assert {r.shared_reference for r in pages[0].items} >= {"invite@example.com", "floating@icloud.test"}
    assert "consult@icloud.test" not in {r.shared_reference for r in pages[0].items}

    with pytest.raises(ProviderError) as caught:
        await _all(_source(seeded, calendar_names=["Personal", "Reminders"]))
    assert caught.value.kind == "permanent"
    assert "'Reminders'" in caught.value.message


async def test_verify_returns_the_principal_url(seeded: Seeded) -> None:
    principal = await _source(seeded).verify()

    assert unquote(principal) == seeded.server.principal_url


async def test_a_wrong_password_is_an_auth_error_that_does_not_repeat_it(seeded: Seeded) -> None:
    wrong = "wrong-" + seeded.server.password
    source = AppleCalendarSource(url=seeded.server.url, username=seeded.server.username, app_password=wrong)

    with pytest.raises(ProviderError) as caught:
        await _all(source)
    assert caught.value.kind == "auth"
    assert caught.value.status == 401
    assert caught.value.message == "Apple refused the app-specific password"
    with pytest.raises(ProviderError) as on_verify:
        await source.verify()
    assert on_verify.value.kind == "auth"
    for text in (str(caught.value), repr(caught.value), repr(source), str(on_verify.value)):
        assert wrong not in text


async def test_a_sync_leaves_the_event_loop_free(seeded: Seeded) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker has started
    pages = _source(seeded).appointments(WINDOW_START, WINDOW_END)
    before = ticks
    await anext(pages)  # discovery and the first calendar's search: several HTTP round trips
    during_first_page = ticks - before
    async for _ in pages:
        pass
    stop.set()
    await task

    # Were the caldav calls made on the loop, the ticker could not run while the first page was fetched.
    assert during_first_page >= 3


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    status = 500
    headers_out: dict[str, str] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(self.status)
        for name, value in self.headers_out.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PROPFIND = do_REPORT = do_OPTIONS = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def status_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers every request with one status."""
    status, headers = request.param
    handler = type("Handler", (_StatusHandler,), {"status": status, "headers_out": headers})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("status_server", "kind", "retry_after"),
    [
        ((500, {}), "transient", None),
        ((503, {}), "transient", None),
        ((503, {"Retry-After": "7"}), "transient", 7.0),
        ((429, {"Retry-After": "12"}), "rate_limited", 12.0),
        ((403, {}), "permanent", None),
        ((404, {}), "permanent", None),
    ],
    indirect=["status_server"],
)
async def test_http_failures_are_classified(status_server: str, kind: str, retry_after: float | None) -> None:
    source = AppleCalendarSource(url=status_server, username="ada@icloud.test", app_password="s3cret-app-pw")

    with pytest.raises(ProviderError) as caught:
        await source.verify()
    assert caught.value.kind == kind
    assert caught.value.retry_after == retry_after
    assert "s3cret-app-pw" not in caught.value.message


async def test_an_unreachable_server_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = AppleCalendarSource(
        url=f"http://127.0.0.1:{port}/", username="ada@icloud.test", app_password="pw"
    )

    with pytest.raises(ProviderError) as caught:
        await _all(source)
    assert caught.value.kind == "transient"


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="https"):
        AppleCalendarSource(url="http://caldav.icloud.com", username="ada@icloud.test", app_password="pw")
    with pytest.raises(ValueError, match="app-specific password"):
        AppleCalendarSource(username="ada@icloud.test", app_password="")
    source = AppleCalendarSource(username="ada@icloud.test", app_password="pw")
    assert "pw" not in repr(source).replace("ada", "")


async def test_a_naive_window_is_refused() -> None:
    source = AppleCalendarSource(username="ada@icloud.test", app_password="pw")

    with pytest.raises(ValueError, match="timezone-aware"):
        await anext(source.appointments(datetime(2025, 3, 1), WINDOW_END))


def test_a_duration_in_days_keeps_the_wall_clock_across_dst() -> None:
    event = vevent(
        uid="spa-day",
        summary="Spa retreat",
        start=datetime(2025, 3, 8, 10, 0, tzinfo=NEW_YORK),
        duration=timedelta(days=1, hours=2),
    )

    record = appointment_from_vevent(event)

    assert record is not None
    # One nominal day (10:00 to 10:00 local, 23 hours that weekend) and then two exact hours.
    assert record.starts_at == datetime(2025, 3, 8, 15, 0, tzinfo=UTC)
    assert record.ends_at == datetime(2025, 3, 9, 16, 0, tzinfo=UTC)


def test_rooms_and_the_account_itself_are_never_the_customer() -> None:
    event = vevent(
        uid="room",
        summary="Team meeting",
        start=datetime(2025, 3, 8, 10, 0, tzinfo=UTC),
        end=datetime(2025, 3, 8, 11, 0, tzinfo=UTC),
        attendees=[
            Attendee("room-1@example.com", "Room 1", cutype="ROOM"),
            OWNER,
            Attendee("dana@example.com", "Dana"),
        ],
    )

    record = appointment_from_vevent(event, owner="ada@icloud.test")

    assert record is not None
    assert record.customer == ExternalCustomer(external_id=None, name="Dana", email="dana@example.com")
