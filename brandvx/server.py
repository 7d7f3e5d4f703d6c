"""How `brandvx serve` runs uvicorn: slow clients timed out, a clean stop on SIGTERM/SIGINT.

* uvicorn times out idle keep-alive connections but not a request whose head trickles in (or a
  connection that sends nothing): the HTTP protocols here close a connection whose request head is
  not complete within ``BRANDVX_HEADER_TIMEOUT_SECONDS`` of its first byte (or of the connection),
  answering 408. Bodies have their own limit in the app (``BRANDVX_BODY_TIMEOUT_SECONDS``).
* On SIGTERM or SIGINT the server stops accepting, closes WebSockets with 1001, gives in-flight
  requests ``BRANDVX_SHUTDOWN_GRACE_SECONDS``, runs the app's shutdown and returns — uvicorn would
  re-raise the signal afterwards, killing the process before the embedded servers are stopped.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any, Final

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import HANDLED_SIGNALS
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from brandvx.ws_sessions import OpenSockets

log = logging.getLogger("brandvx.server")

_TIMEOUT_RESPONSE: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 16\r\nconnection: close\r\n\r\nRequest Timeout\n"
)


class ServerConfig(uvicorn.Config):
    """uvicorn's Config plus the header timeout (picklable: `--workers` sends it to children)."""

    def __init__(self, app: Any, *, header_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(app, http=header_timeout_protocol(), **kwargs)
        self.header_timeout_seconds = header_timeout_seconds


class _HeaderTimer:
    """Closes the connection with a 408 when the current request head is late."""

    _header_timer: asyncio.TimerHandle | None = None
    transport: asyncio.Transport
    config: uvicorn.Config
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            seconds = float(getattr(self.config, "header_timeout_seconds", 10.0))
            self._header_timer = self.loop.call_later(seconds, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_header_timer()  # a pipelined request behind a response still being sent
            return
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


class H11HeaderTimeoutProtocol(_HeaderTimer, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_header_timer()  # bytes of a request head, not all of it yet
        else:
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    HttpToolsProtocol = None  # type: ignore[assignment,misc]
else:

    class HttpToolsHeaderTimeoutProtocol(_HeaderTimer, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)


def header_timeout_protocol() -> type[asyncio.Protocol]:
    if HttpToolsProtocol is None:  # pragma: no cover
        return H11HeaderTimeoutProtocol
    return HttpToolsHeaderTimeoutProtocol


def _open_sockets(app: Any) -> OpenSockets | None:
    """The app's WebSocket registry, under whatever middleware uvicorn wrapped it in."""
    for _ in range(10):
        sockets = getattr(getattr(app, "state", None), "sockets", None)
        if isinstance(sockets, OpenSockets):
            return sockets
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


class GracefulServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version re-raises the signal once it has shut down; with the default
        # SIGTERM handler that kills the process before `brandvx serve` stops its embedded servers.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting first
        open_sockets = _open_sockets(self.config.loaded_app)
        if open_sockets is not None:
            # Before uvicorn's own shutdown, which would close them with 1012.
            await open_sockets.close_all()
        await super().shutdown(sockets)


class _GracefulProcess(Process):
    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GracefulServer(config=self.config)
        return self._server


class _GracefulMultiprocess(Multiprocess):
    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = _GracefulProcess(self.config, self.sockets)
            process.start()
            self.processes.append(process)


def run(config: ServerConfig) -> None:
    """Serve until SIGTERM/SIGINT; returns normally after a graceful stop."""
    if config.workers > 1:
        sock = config.bind_socket()
        _GracefulMultiprocess(config, sockets=[sock]).run()
        return
    server = GracefulServer(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
