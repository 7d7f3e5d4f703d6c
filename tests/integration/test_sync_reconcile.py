"""Deleted at the provider: a full-window calendar sync cancels what a completely read window no longer
returns (sources CANCELLED with the time, appointments kept and cancelled), and a window read only in
part cancels nothing. Apple against a real Radicale CalDAV server; Acuity and Square against their fakes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from arq.worker import Retry

from brandvx.settings import Settings
from domain.model import JobStatus, Provider
from domain.sync import TokenSet
from jobs.context import WorkerRuntime
from tests.fakes.acuity_server import FakeAcuity
from tests.fakes.caldav_server import NoSyncCollection, RadicaleServer, vevent
from tests.fakes.square_server import FakeSquare
from tests.integration.test_sync_jobs import (  # noqa: F401 - fixtures
    HTTP_ATTEMPTS,
    acuity,
    add_square_bookings,
    connect,
    connect_acuity,
    connect_square,
    connection_of,
    fakes,
    new_tenant,
    own_runtime,
    rows,
    rt,
    run_job,
    scalar,
    square,
    stats_of,
    sync_settings,
)


@pytest.fixture
def radicale() -> Iterator[RadicaleServer]:
    """A server of its own per test: a sync reads every calendar of the account."""
    with RadicaleServer(username="owner@icloud.test") as server:
        yield server


def _day(days: int, hour: int = 10) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)


async def statuses(rt: WorkerRuntime, tid: uuid.UUID, provider: Provider) -> dict[str, tuple[str, str, bool]]:
    """external id -> (source status, appointment status, source cancelled_at set)."""
    found = await rows(
        rt,
        tid,
        "SELECT s.external_id, s.status, a.status, s.cancelled_at IS NOT NULL FROM appointment_sources s "
        f"JOIN appointments a ON a.id = s.appointment_id WHERE s.provider = '{provider.value}'",
    )
    return {r[0]: (r[1], r[2], r[3]) for r in found}


async def _connect_apple(rt: WorkerRuntime, tid: uuid.UUID, radicale: RadicaleServer, url: str) -> None:
    await connect(
        rt,
        tid,
        Provider.APPLE,
        TokenSet(access_token=radicale.password, account_id=radicale.username),
        {"username": radicale.username, "url": url},
    )


async def test_apple_deleted_event_series_and_later_exdate_are_cancelled_and_kept(
    rt: WorkerRuntime, radicale: RadicaleServer, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    calendar = radicale.make_calendar(f"work-{uuid.uuid4().hex[:6]}", name="Work")
    single = radicale.put_event(
        calendar, vevent(uid="single-1", summary="Cut", start=_day(2), end=_day(2, 11))
    )
    radicale.put_event(calendar, vevent(uid="stays-1", summary="Colour", start=_day(3), end=_day(3, 11)))
    series = radicale.put_event(
        calendar,
        vevent(
            uid="series-1", summary="Weekly", start=_day(1, 14), end=_day(1, 15), rrule="FREQ=WEEKLY;COUNT=6"
        ),
    )
    monthly_start = _day(4, 9)
    radicale.put_event(
        calendar,
        vevent(
            uid="series-2",
            summary="Blow-dry",
            start=monthly_start,
            end=monthly_start + timedelta(hours=1),
            rrule="FREQ=WEEKLY;COUNT=4",
        ),
    )
    await _connect_apple(rt, tid, radicale, radicale.url)
    outcome, job = await run_job(rt, tid, [Provider.APPLE])
    assert (outcome, job.status, job.error) == ("complete", JobStatus.COMPLETED, None)
    assert stats_of(job, Provider.APPLE)["created"] == 1 + 1 + 6 + 4
    assert (stats_of(job, Provider.APPLE)["removed"], stats_of(job, Provider.APPLE)["cancelled"]) == (0, 0)

    # At the provider: one event deleted, one whole series deleted, and a later EXDATE on the other.
    radicale.delete(single)
    radicale.delete(series)
    excluded = monthly_start + timedelta(weeks=1)
    radicale.replace_event(
        calendar,
        vevent(
            uid="series-2",
            summary="Blow-dry",
            start=monthly_start,
            end=monthly_start + timedelta(hours=1),
            rrule="FREQ=WEEKLY;COUNT=4",
            exdates=[excluded],
        ),
    )
    outcome, again = await run_job(rt, tid, [Provider.APPLE])
    assert (outcome, again.status) == ("complete", JobStatus.COMPLETED)
    stats = stats_of(again, Provider.APPLE)
    assert (stats["removed"], stats["cancelled"]) == (1 + 6 + 1, 1 + 6 + 1)

    gone = {"single-1", f"series-2#{excluded.astimezone(UTC):%Y%m%dT%H%M%SZ}"}
    state = await statuses(rt, tid, Provider.APPLE)
    assert len(state) == 12  # nothing deleted: the appointments and their sources are kept
    cancelled = {key for key, value in state.items() if value == ("CANCELLED", "cancelled", True)}
    assert cancelled == gone | {key for key in state if key.startswith("series-1#")}
    assert all(value == ("ACTIVE", "booked", False) for key, value in state.items() if key not in cancelled)
    assert await scalar(rt, tid, "SELECT count(*) FROM appointments") == 12

    # A third sync finds nothing new to cancel; the counts are of changes, not of the state.
    outcome, third = await run_job(rt, tid, [Provider.APPLE])
    assert (stats_of(third, Provider.APPLE)["removed"], stats_of(third, Provider.APPLE)["cancelled"]) == (
        0,
        0,
    )


async def test_acuity_window_that_fails_half_way_cancels_nothing_then_the_full_read_does(
    rt: WorkerRuntime, sync_settings: Settings, acuity: FakeAcuity, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    early = acuity.add(starts_at=_day(2).replace(tzinfo=None), email="early@example.com")
    acuity.add(starts_at=_day(3).replace(tzinfo=None), email="kept@example.com")
    late = acuity.add(starts_at=_day(40).replace(tzinfo=None), email="late@example.com")
    await connect_acuity(rt, tid, acuity)
    outcome, job = await run_job(rt, tid, [Provider.ACUITY])
    assert outcome == "complete"
    assert stats_of(job, Provider.ACUITY)["created"] == 3

    acuity.remove(early)
    acuity.remove(late)
    # Two windows are read, then the third fails through every HTTP retry: the job is deferred.
    reads = len(acuity.list_requests())
    acuity.fail_list_after(2, HTTP_ATTEMPTS)
    async with own_runtime(sync_settings) as runtime:
        with pytest.raises(Retry):
            await run_job(runtime, tid, [Provider.ACUITY])
    assert [r.status for r in acuity.list_requests()[reads:]] == [200, 200] + [500] * HTTP_ATTEMPTS
    state = await statuses(rt, tid, Provider.ACUITY)
    assert all(value == ("ACTIVE", "booked", False) for value in state.values()), state

    outcome, done = await run_job(rt, tid, [Provider.ACUITY])
    assert (outcome, done.status) == ("complete", JobStatus.COMPLETED)
    assert (stats_of(done, Provider.ACUITY)["removed"], stats_of(done, Provider.ACUITY)["cancelled"]) == (
        2,
        2,
    )
    state = await statuses(rt, tid, Provider.ACUITY)
    assert {key for key, value in state.items() if value[0] == "CANCELLED"} == {str(early), str(late)}


async def test_square_deleted_booking_is_cancelled_and_a_merged_appointment_waits_for_all_sources(
    rt: WorkerRuntime, square: FakeSquare, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    first, second = add_square_bookings(square, [_day(2), _day(5)])
    await connect_square(rt, tid)
    outcome, _ = await run_job(rt, tid, [Provider.SQUARE])
    assert outcome == "complete"
    # The second booking is also known through another provider: it has a second, active source.
    appointment = (
        await rows(rt, tid, f"SELECT appointment_id FROM appointment_sources WHERE external_id = '{second}'")
    )[0][0]
    await _add_source(rt, tid, appointment, Provider.GOOGLE, "google-twin")

    square.remove_booking(first)
    square.remove_booking(second)
    outcome, job = await run_job(rt, tid, [Provider.SQUARE])
    assert (outcome, job.status) == ("complete", JobStatus.COMPLETED)
    assert (stats_of(job, Provider.SQUARE)["removed"], stats_of(job, Provider.SQUARE)["cancelled"]) == (2, 1)
    state = await statuses(rt, tid, Provider.SQUARE)
    assert state[first] == ("CANCELLED", "cancelled", True)
    assert state[second] == ("CANCELLED", "booked", True)  # its Google source is still active

    # Back at the provider (restored): the source is active and the appointment booked again.
    square.add_booking(start_at=_day(2), booking_id=first)
    outcome, restored = await run_job(rt, tid, [Provider.SQUARE])
    assert outcome == "complete"
    assert stats_of(restored, Provider.SQUARE)["updated"] == 1
    assert (await statuses(rt, tid, Provider.SQUARE))[first] == ("ACTIVE", "booked", False)


async def _add_source(
    rt: WorkerRuntime, tid: uuid.UUID, appointment: Any, provider: Provider, external: str
) -> None:
    from sqlalchemy import text

    from jobs.syncs import SYSTEM_ROLE

    async with rt.db.transaction(tenant_id=tid, role=SYSTEM_ROLE) as uow:
        await uow.connection.execute(
            text(
                "INSERT INTO appointment_sources (tenant_id, appointment_id, provider, external_id, seen_at) "
                "VALUES (:t, :a, :p, :e, now())"
            ),
            {"t": tid, "a": appointment, "p": provider.value, "e": external},
        )


async def test_apple_sync_collection_skips_an_unchanged_account_and_reconciles_after_a_change(
    rt: WorkerRuntime, radicale: RadicaleServer, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    calendar = radicale.make_calendar(f"sc-{uuid.uuid4().hex[:6]}", name="Synced")
    doomed = radicale.put_event(
        calendar, vevent(uid="sc-gone", summary="Cut", start=_day(2), end=_day(2, 11))
    )
    radicale.put_event(calendar, vevent(uid="sc-kept", summary="Trim", start=_day(3), end=_day(3, 11)))
    await _connect_apple(rt, tid, radicale, radicale.url)

    outcome, first = await run_job(rt, tid, [Provider.APPLE])
    assert outcome == "complete"
    assert stats_of(first, Provider.APPLE)["created"] == 2
    token = (await connection_of(rt, tid, Provider.APPLE)).sync_state.get("syncToken")
    assert token is not None
    assert calendar in token  # the calendar's RFC 6578 token is kept

    outcome, quiet = await run_job(rt, tid, [Provider.APPLE])
    stats = stats_of(quiet, Provider.APPLE)
    assert (stats["incremental"], stats["pages"], stats["fetched"], stats["removed"]) == (True, 0, 0, 0)

    radicale.delete(doomed)
    outcome, changed = await run_job(rt, tid, [Provider.APPLE])
    stats = stats_of(changed, Provider.APPLE)
    assert (stats["incremental"], stats["fetched"], stats["removed"], stats["cancelled"]) == (False, 1, 1, 1)
    assert (await statuses(rt, tid, Provider.APPLE))["sc-gone"] == ("CANCELLED", "cancelled", True)


async def test_apple_without_sync_collection_reads_the_window_and_reconciles_every_time(
    rt: WorkerRuntime, radicale: RadicaleServer, client: httpx.AsyncClient
) -> None:
    _, tid = await new_tenant(client)
    calendar = radicale.make_calendar(f"ns-{uuid.uuid4().hex[:6]}", name="Plain")
    doomed = radicale.put_event(
        calendar, vevent(uid="ns-gone", summary="Cut", start=_day(2), end=_day(2, 11))
    )
    with NoSyncCollection(radicale) as proxy:
        await _connect_apple(rt, tid, radicale, proxy.url)
        outcome, first = await run_job(rt, tid, [Provider.APPLE])
        assert outcome == "complete", first.error
        assert proxy.refused >= 1
        assert "syncToken" not in (await connection_of(rt, tid, Provider.APPLE)).sync_state

        radicale.delete(doomed)
        outcome, again = await run_job(rt, tid, [Provider.APPLE])
    stats = stats_of(again, Provider.APPLE)
    assert (stats["incremental"], stats["removed"], stats["cancelled"]) == (False, 1, 1)
    assert (await statuses(rt, tid, Provider.APPLE))["ns-gone"] == ("CANCELLED", "cancelled", True)
