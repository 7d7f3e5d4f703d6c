"""Apply and inspect Alembic migrations, as the database owner."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from persistence.urls import to_asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(*, runtime_role: str = "brandvx_app", runtime_password: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["runtime_role"] = runtime_role
    config.attributes["runtime_password"] = runtime_password
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(owner_url: str, *, runtime_role: str, runtime_password: str | None) -> None:
    config = alembic_config(runtime_role=runtime_role, runtime_password=runtime_password)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    engine = create_async_engine(to_asyncpg(owner_url), hide_parameters=True)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()
