"""`brandvx serve` and `brandvx worker` as real processes, and graphql-transport-ws sockets to them.

Shared by the end-to-end tests that run the API and the worker in processes of their own
(test_askvx_stream.py, test_sync_worker.py). No fixtures here: the tests build their stacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import redis
import websockets
from websockets.asyncio.client import ClientConnection

from brandvx.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 60

# ---------------------------------------------------------------- processes


def brandvx_env(
    settings: Settings, *, namespace: str, data_dir: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    """The environment of a `brandvx` process on the servers and keys of ``settings``, with a Redis
    namespace of its own, ``extra`` on top, and never an inline worker."""
    env = {
        **os.environ,
        "BRANDVX_ENV": "test",
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "BRANDVX_REDIS_NAMESPACE": namespace,
        "BRANDVX_JWT_SECRET": settings.jwt_secret or "",
        "BRANDVX_ENCRYPTION_KEYS": settings.encryption_keys or "",
        "BRANDVX_BLIND_INDEX_KEY": settings.blind_index_key or "",
        "BRANDVX_DATA_DIR": str(data_dir),
        **extra,
    }
    env.pop("BRANDVX_INLINE_WORKER", None)
    return env


def spawn_brandvx(*args: str, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m brandvx <args>` from the repository root, its stdout and stderr written to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "brandvx", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited 10 s later."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def wait_until_ready(
    process: subprocess.Popen[bytes], base_url: str, log: Path, *, seconds: float = STARTUP_SECONDS
) -> None:
    """Returns once `brandvx serve` answers 200 on /ready; raises if it exits or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"brandvx serve exited: {log_tail(log)}")
        with suppress(httpx.HTTPError):
            if httpx.get(base_url + "/ready", timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"brandvx serve not ready: {log_tail(log)}")
        time.sleep(0.1)


def wait_for_heartbeat(
    process: subprocess.Popen[bytes],
    store: redis.Redis,
    namespace: str,
    log: Path,
    *,
    seconds: float = STARTUP_SECONDS,
) -> None:
    """Returns once the heartbeat in ``namespace`` is this `brandvx worker` process's (host:pid);
    raises if it exits or takes too long."""
    key = f"bvx:{namespace}:worker:heartbeat"
    mine = f"{socket.gethostname()}:{process.pid} ".encode()
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"brandvx worker exited: {log_tail(log)}")
        beat = store.get(key)
        if isinstance(beat, bytes) and beat.startswith(mine):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"brandvx worker did not start: {log_tail(log)}")
        time.sleep(0.05)


# ---------------------------------------------------------------- graphql-transport-ws


@asynccontextmanager
async def graphql_ws(
    url: str, *, token: str, tenant_id: str, seconds: float = 10
) -> AsyncIterator[ClientConnection]:
    """A socket on which `connection_init` with these credentials got its `connection_ack`."""
    async with websockets.connect(
        url,
        subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
        open_timeout=5,
        close_timeout=2,
    ) as ws:
        init = {"Authorization": f"Bearer {token}", "X-Tenant-Id": tenant_id}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert await frame(ws, seconds) == {"type": "connection_ack"}
        yield ws


async def frame(ws: ClientConnection, seconds: float = 10) -> dict[str, Any]:
    """The next message that is not a ping (a ping is answered), waiting at most ``seconds`` for each."""
    while True:
        received: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), seconds))
        if received.get("type") != "ping":
            return received
        await ws.send(json.dumps({"type": "pong"}))


async def start_subscription(ws: ClientConnection, op: str, query: str, variables: dict[str, Any]) -> None:
    await ws.send(
        json.dumps({"id": op, "type": "subscribe", "payload": {"query": query, "variables": variables}})
    )


async def next_payloads(
    ws: ClientConnection, op: str, field: str, *, seconds: float, frame_seconds: float = 10
) -> list[dict[str, Any]]:
    """``data[field]`` of each `next` of subscription ``op`` until its `complete`, within ``seconds``;
    any other message, or a `next` with errors, fails the test."""
    payloads: list[dict[str, Any]] = []
    async with asyncio.timeout(seconds):
        while True:
            received = await frame(ws, frame_seconds)
            assert received.get("id") == op, received
            if received["type"] == "complete":
                return payloads
            assert received["type"] == "next", received
            assert "errors" not in received["payload"], received
            payloads.append(received["payload"]["data"][field])
