"""The API's own AskVX analytics event: counts and ids only, never the question."""

from __future__ import annotations

import dataclasses
import uuid

from brandvx.settings import Settings
from tests.conftest import app_client, gql, make_tenant


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, str | int | float | bool]]] = []

    def capture(self, distinct_id: str, event: str, properties: dict[str, str | int | float | bool]) -> None:
        self.events.append((distinct_id, event, properties))


async def test_prompt_submitted_carries_no_text(migrated: Settings) -> None:
    # A namespace no worker listens on: the reply job waits, the event is what is under test.
    settings = migrated.model_copy(update={"redis_namespace": f"analytics-{uuid.uuid4().hex[:8]}"})
    async with app_client(settings) as (app, http):
        recorder = Recorder()
        runtime = app.state.runtime
        runtime.app_services = dataclasses.replace(runtime.app_services, analytics=recorder)
        tenant = await make_tenant(http)
        started = await gql(
            http,
            'mutation { startChatSession(input: {title: "Plans"}) { session { id } } }',
            token=tenant.owner.token,
            tenant=tenant.uuid,
        )
        session_id = started["data"]["startChatSession"]["session"]["id"]
        question = "Should Priya Raman get the loyalty discount on her balayage?"
        sent = await gql(
            http,
            "mutation($s: ID!, $c: String!) { sendChatMessage(input: {sessionId: $s, content: $c}) "
            "{ replyMessage { status } userErrors { code } } }",
            {"s": session_id, "c": question},
            token=tenant.owner.token,
            tenant=tenant.uuid,
        )
        assert sent["data"]["sendChatMessage"] == {"replyMessage": {"status": "STREAMING"}, "userErrors": []}
    assert recorder.events == [
        (tenant.uuid, "ask.prompt_submitted", {"characters": len(question), "via_api_key": False})
    ]
    flattened = " ".join(str(v) for _, _, props in recorder.events for v in props.values())
    assert not any(word in flattened for word in ("Priya", "Raman", "balayage", "loyalty"))
