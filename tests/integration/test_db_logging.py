"""Database errors carry no statement parameters (issue 10, item 7): they hold contact details."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from brandvx.runtime import Runtime


async def test_a_failed_statement_does_not_show_its_parameters(standalone_runtime: Runtime) -> None:
    secret = "jane.private@example.com"
    with pytest.raises(DBAPIError) as failed:
        async with standalone_runtime.db.engine.connect() as conn:
            await conn.execute(text("SELECT CAST(:value AS text), 1 / 0"), {"value": secret})
    assert "division by zero" in str(failed.value)
    assert secret not in str(failed.value)
    assert "hidden due to hide_parameters" in str(failed.value)
