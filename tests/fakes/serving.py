"""What the uvicorn-based fakes share: serving their ASGI app from a background thread.

A fake subclasses ``ServedFake``, calls ``super().__init__(host=host)``, sets ``self.app`` and names
its server thread with ``thread_name``. It then has ``start()`` (returns the fake, and does nothing
when already running), ``stop()`` and ``with fake: ...``; while it runs ``self._port`` is the free
port it was given on ``host``.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import ClassVar, Self

import uvicorn
from starlette.types import ASGIApp

__all__ = ["ServedFake"]

START_SECONDS = 10


class ServedFake:
    thread_name: ClassVar[str]  # the server thread's name, e.g. "fake-square"
    app: ASGIApp

    def __init__(self, *, host: str) -> None:
        self.host = host
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self) -> Self:
        if self._thread is not None:
            return self
        # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (it checks the proto);
        # with proto 0, Nagle plus delayed ACKs hold small SSE frames back by ~40 ms.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(128)
        self._socket = sock
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            loop="asyncio",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=self.thread_name, daemon=True
        )
        thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stops the server and closes its socket; ``_port`` keeps the last port (``base_url`` works)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
