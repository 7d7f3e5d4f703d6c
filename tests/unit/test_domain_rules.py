"""Domain rules that need no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from domain.access import require_admin, require_read, require_write
from domain.errors import Forbidden, InvalidInput
from domain.model import Actor, ApiScope, Role
from domain.pagination import Cursor, PageRequest
from domain.tenancy import validate_quiet_hours, validate_timezone

TENANT = uuid.uuid4()


@pytest.mark.parametrize("name", ["America/New_York", "Europe/London", "UTC", "Asia/Kolkata"])
def test_iana_timezones_are_accepted(name: str) -> None:
    assert validate_timezone(name) == name


@pytest.mark.parametrize("name", ["Mars/Base", "EST5EDT/../../etc/passwd", "", "america/new_york"])
def test_other_timezones_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as error:
        validate_timezone(name)
    assert error.value.field == ["timezone"]


@pytest.mark.parametrize(("start", "end"), [("21:00", "08:00"), ("00:00", "23:59")])
def test_quiet_hours_accept_hh_mm(start: str, end: str) -> None:
    assert validate_quiet_hours(start, end).start == start


@pytest.mark.parametrize(
    ("start", "end"), [("24:00", "08:00"), ("9:00", "10:00"), ("21:60", "08:00"), ("08:00", "08:00")]
)
def test_quiet_hours_refuse_the_rest(start: str, end: str) -> None:
    with pytest.raises(InvalidInput):
        validate_quiet_hours(start, end)


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor(datetime(2026, 11, 26, 10, 0, tzinfo=UTC), uuid.uuid4())
    assert Cursor.decode(cursor.encode()) == cursor
    with pytest.raises(InvalidInput):
        Cursor.decode("not-a-cursor")


@pytest.mark.parametrize("first", [0, -1, 101])
def test_page_size_is_bounded(first: int) -> None:
    with pytest.raises(InvalidInput):
        PageRequest.parse(first, None)


def test_roles_and_scopes() -> None:
    owner = Actor(user_id="u", tenant_id=TENANT, role=Role.OWNER_ADMIN)
    support = Actor(user_id="u", tenant_id=TENANT, role=Role.SUPPORT)
    ops = Actor(user_id="u", tenant_id=TENANT, role=Role.OPS, is_ops=True)
    read_key = Actor(
        user_id="k",
        tenant_id=TENANT,
        role=Role.STAFF,
        api_key_id=uuid.uuid4(),
        scopes=frozenset({ApiScope.READ}),
    )
    write_key = Actor(
        user_id="k",
        tenant_id=TENANT,
        role=Role.STAFF,
        api_key_id=uuid.uuid4(),
        scopes=frozenset({ApiScope.WRITE}),
    )
    assert require_admin(owner) == TENANT
    assert require_read(support) == require_read(ops) == require_read(read_key) == TENANT
    assert require_write(write_key) == TENANT
    for actor in (support, ops, read_key):
        with pytest.raises(Forbidden):
            require_write(actor)
    with pytest.raises(Forbidden):
        require_admin(write_key)
    with pytest.raises(Forbidden):
        require_read(Actor(user_id="u"))
