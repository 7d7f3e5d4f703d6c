"""A real Radicale CalDAV server, run in-process for tests that talk CalDAV over HTTP.

Radicale's own threaded server (``radicale.server.serve``) runs in a background thread on
127.0.0.1 and a free port, with htpasswd authentication (one plain-text user) and filesystem
storage in a temporary directory that ``stop()`` removes. Calendars are made with MKCALENDAR and
filled with PUT, the way any CalDAV client writes them; ``vevent`` builds the iCalendar text.

No pytest here, so a benchmark can use it as well::

    with RadicaleServer() as server:
        work = server.make_calendar("work", name="Work")
        server.put_event(work, vevent(uid="a1", summary="Cut", start=..., end=...))
        ...  # point a CalDAV client at server.url with server.username / server.password
"""

from __future__ import annotations

import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

import httpx
import icalendar
from radicale import config as radicale_config
from radicale import server as radicale_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.serving import ServedFake

__all__ = ["Attendee", "NoSyncCollection", "RadicaleServer", "vcalendar", "vevent"]


@dataclass(frozen=True)
class Attendee:
    email: str
    name: str | None = None
    role: str = "REQ-PARTICIPANT"
    cutype: str | None = None  # INDIVIDUAL when absent; ROOM, RESOURCE, GROUP


def vevent(
    *,
    uid: str,
    summary: str,
    start: datetime | date,
    end: datetime | date | None = None,
    duration: timedelta | None = None,
    rrule: str | None = None,
    recurrence_id: datetime | None = None,
    status: str | None = None,
    organizer: Attendee | None = None,
    attendees: Sequence[Attendee] = (),
    exdates: Sequence[datetime] = (),
) -> icalendar.Event:
    """One VEVENT. A naive ``start`` is a floating time; a ``date`` makes an all-day event.

    ``rrule`` is the RRULE value as written in iCalendar (``FREQ=WEEKLY;COUNT=4``); an override of
    one occurrence is a second VEVENT with the same UID and ``recurrence_id``, PUT with its series.
    """
    event = icalendar.Event()
    event.add("uid", uid)
    event.add(
        "dtstamp",
        datetime(2025, 1, 1, 12, 0, tzinfo=icalendar.timezone.tzp.localize_utc(datetime(2025, 1, 1)).tzinfo),
    )
    event.add("summary", summary)
    event.add("dtstart", start)
    if end is not None:
        event.add("dtend", end)
    if duration is not None:
        event.add("duration", duration)
    if rrule is not None:
        event.add("rrule", icalendar.vRecur.from_ical(rrule))
    if recurrence_id is not None:
        event.add("recurrence-id", recurrence_id)
    for exdate in exdates:
        event.add("exdate", exdate)
    if status is not None:
        event.add("status", status)
    if organizer is not None:
        event.add("organizer", _address(organizer, role=None))
    for attendee in attendees:
        address = _address(attendee, role=attendee.role)
        if attendee.cutype is not None:
            address.params["CUTYPE"] = attendee.cutype
        event.add("attendee", address)
    return event


def vcalendar(*events: icalendar.Event) -> str:
    """A VCALENDAR holding ``events`` (one UID: a series and its overrides), with its VTIMEZONEs."""
    cal = icalendar.Calendar()
    cal.add("prodid", "-//BrandVX tests//Radicale fake//EN")
    cal.add("version", "2.0")
    for event in events:
        cal.add_component(event)
    cal.add_missing_timezones()
    data: bytes = cal.to_ical()
    return data.decode()


def _address(who: Attendee, *, role: str | None) -> icalendar.vCalAddress:
    address = icalendar.vCalAddress(f"mailto:{who.email}")
    if who.name is not None:
        address.params["CN"] = who.name
    if role is not None:
        address.params["ROLE"] = role
    return address


class RadicaleServer:
    """Radicale on 127.0.0.1 with one user, its collections under ``/<username>/``."""

    def __init__(self, *, username: str = "ada@icloud.test", password: str | None = None) -> None:
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.port = 0
        self._root: Path | None = None
        self._thread: threading.Thread | None = None
        self._shutdown: socket.socket | None = None
        self._failure: BaseException | None = None
        self._http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def principal_url(self) -> str:
        return f"{self.url}{self.username}/"

    def start(self) -> RadicaleServer:
        if self._thread is not None:
            raise RuntimeError("the Radicale server is already running")
        self._root = Path(tempfile.mkdtemp(prefix="brandvx-radicale-"))
        users = self._root / "users"
        users.write_text(f"{self.username}:{self.password}\n")
        # Radicale binds the port itself, so a free one is picked first; another process taking it
        # in between is retried with a new one.
        for _ in range(5):
            self.port = _free_port()
            self._serve(self._configuration(users))
            if self._wait_ready():
                break
            self._join()
        else:
            self.stop()
            raise RuntimeError(f"the Radicale server did not start: {self._failure!r}")
        self._http = httpx.Client(auth=(self.username, self.password), timeout=10.0)
        # Radicale creates a user's principal collection on the first request the user makes.
        self._request("PROPFIND", self.principal_url, headers={"Depth": "0"})
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self._join()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> RadicaleServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def make_calendar(self, slug: str, *, name: str, components: Sequence[str] = ("VEVENT",)) -> str:
        """MKCALENDAR ``/<username>/<slug>/`` with a display name; returns the calendar's URL."""
        url = f"{self.principal_url}{slug}/"
        comps = "".join(f'<C:comp name="{escape(c)}"/>' for c in components)
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            f"<D:set><D:prop><D:displayname>{escape(name)}</D:displayname>"
            f"<C:supported-calendar-component-set>{comps}</C:supported-calendar-component-set>"
            "</D:prop></D:set></C:mkcalendar>"
        )
        self._request("MKCALENDAR", url, content=body, headers={"Content-Type": "application/xml"})
        return url

    def put_event(self, calendar_url: str, *events: icalendar.Event) -> str:
        """PUT one calendar object (a VEVENT, or a series with its overrides); returns its URL."""
        uid = str(events[0]["UID"])
        url = f"{calendar_url}{uid}.ics"
        self._request(
            "PUT",
            url,
            content=vcalendar(*events),
            headers={"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
        )
        return url

    def replace_event(self, calendar_url: str, *events: icalendar.Event) -> str:
        """PUT over an existing calendar object (an edit: a new EXDATE, a moved time)."""
        uid = str(events[0]["UID"])
        url = f"{calendar_url}{uid}.ics"
        self._request(
            "PUT", url, content=vcalendar(*events), headers={"Content-Type": "text/calendar; charset=utf-8"}
        )
        return url

    def delete(self, url: str) -> None:
        """DELETE a calendar object (an event, or a whole series with its overrides) or a calendar."""
        self._request("DELETE", url)

    def _request(
        self, method: str, url: str, *, content: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        if self._http is None:
            raise RuntimeError("the Radicale server is not running")
        response = self._http.request(method, url, content=content, headers=headers)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {url} -> HTTP {response.status_code}: {response.text[:500]}")
        return response

    def _configuration(self, users: Path) -> radicale_config.Configuration:
        assert self._root is not None
        configuration = radicale_config.load()
        configuration.update(
            {
                "server": {"hosts": f"127.0.0.1:{self.port}", "delay_on_error": "0"},
                "auth": {
                    "type": "htpasswd",
                    "htpasswd_filename": str(users),
                    "htpasswd_encryption": "plain",
                    "delay": "0",
                },
                "storage": {"filesystem_folder": str(self._root / "collections")},
                "rights": {"type": "owner_only"},
                "web": {"type": "none"},
                "logging": {"level": "warning", "mask_passwords": "True"},
            },
            "brandvx tests",
        )
        # A throwaway directory needs no fsync; it is an internal option, hence `privileged`.
        configuration.update({"storage": {"_filesystem_fsync": "False"}}, "brandvx tests", privileged=True)
        return configuration

    def _serve(self, configuration: radicale_config.Configuration) -> None:
        self._failure = None
        ours, theirs = socket.socketpair()
        self._shutdown = ours

        def run() -> None:
            try:
                radicale_server.serve(configuration, theirs)
            except BaseException as exc:  # reported by start(); a thread has no one else to tell
                self._failure = exc
                theirs.close()

        self._thread = threading.Thread(target=run, name=f"radicale-{self.port}", daemon=True)
        self._thread.start()

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def _join(self) -> None:
        # Closing our end of the socket pair is Radicale's signal to finish its requests and return.
        if self._shutdown is not None:
            self._shutdown.close()
            self._shutdown = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


_DAV_METHODS = ["GET", "PUT", "DELETE", "OPTIONS", "PROPFIND", "PROPPATCH", "REPORT", "MKCALENDAR", "HEAD"]
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-encoding"})


class NoSyncCollection(ServedFake):
    """A CalDAV server without RFC 6578: Radicale behind a proxy that answers a ``sync-collection``
    REPORT with 501 Not Implemented (as servers without the report do) and passes the rest through.

    ``reports`` counts the refused sync-collection requests.
    """

    thread_name = "caldav-no-sync-collection"

    def __init__(self, upstream: RadicaleServer, *, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self._upstream = upstream.url.rstrip("/")
        self.refused = 0
        self.app = Starlette(routes=[Route("/{path:path}", self._forward, methods=_DAV_METHODS)])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}/"

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        if request.method == "REPORT" and b"sync-collection" in body:
            self.refused += 1
            return Response("sync-collection is not supported", status_code=501)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with httpx.AsyncClient(timeout=10.0) as client:
            answer = await client.request(
                request.method,
                f"{self._upstream}{request.url.path}",
                params=request.query_params,
                content=body,
                headers=headers,
            )
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
        return Response(answer.content, status_code=answer.status_code, headers=kept)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
