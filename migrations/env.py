"""Alembic environment. Always driven by ``persistence.migrate`` with a live connection."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

config = context.config


def run(connection: Connection) -> None:
    # Several replicas may start at once: one migrates, the others wait and find nothing to do.
    connection.execute(text("SELECT pg_advisory_xact_lock(7462291)"))
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `brandvx migrate`, which passes a connection")
run(connection)
