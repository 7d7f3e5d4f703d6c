"""Embedded servers leave nothing behind when stopped: no process, no temporary folder."""

from __future__ import annotations

from pathlib import Path

from brandvx.embedded import EmbeddedServers


def test_stopping_embedded_redis_removes_its_temporary_folder(tmp_path: Path) -> None:
    servers = EmbeddedServers.start(tmp_path, postgres=False)
    assert servers.redis_url is not None
    socket_file = Path(servers.redis_url.removeprefix("unix://"))
    scratch = socket_file.parent
    pid = int((scratch / "redis.pid").read_text()) if (scratch / "redis.pid").exists() else None
    assert scratch.is_dir()
    servers.stop()
    assert not scratch.exists()
    if pid is not None:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
