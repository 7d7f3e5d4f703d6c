"""PostgreSQL URL handling: libpq-style URLs in, SQLAlchemy asyncpg URLs out."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


def to_asyncpg(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    query = dict(parsed.query)
    sslmode = query.pop("sslmode", None)
    if sslmode is not None:
        query["ssl"] = sslmode
    return parsed.set(drivername="postgresql+asyncpg", query=query)


def runtime_url(owner_url: str, *, role: str, password: str | None) -> URL:
    """The owner's server and database, logged in as the non-owner runtime role."""
    return to_asyncpg(owner_url).set(username=role, password=password)
