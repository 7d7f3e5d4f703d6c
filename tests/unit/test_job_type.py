"""The Job type as clients see it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from domain.connections import NotConnected
from domain.jobs import choose_providers
from domain.model import Job, JobStatus, Provider
from schema.jobs import Job as JobType


def test_progress_has_no_float4_noise() -> None:
    now = datetime.now(UTC)
    stored = Job(
        id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        kind="calendar_sync",
        status=JobStatus.RUNNING,
        progress=0.05000000074505806,  # what PostgreSQL's real gives back for 0.05
        message="Reading",
        result=None,
        error=None,
        created_at=now,
        updated_at=now,
    )
    assert JobType.from_domain(stored).progress == 0.05


def test_sync_without_a_provider_says_which_kind_in_english() -> None:
    for kind, message in (
        ("calendar", "Connect a calendar provider first"),
        ("inventory", "Connect an inventory provider first"),
    ):
        with pytest.raises(NotConnected) as refused:
            choose_providers(kind, None, supported=[Provider.SQUARE], connected=[])
        assert refused.value.message == message
