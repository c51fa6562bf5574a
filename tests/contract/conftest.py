"""The transports the contract suite runs against. Each transport adds its harness here."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from dddframe import Application
from dddframe.bus import EventBus, RetryPolicy
from dddframe.bus.inprocess import InProcessBus
from dddframe.domain.envelope import Envelope
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.tables import outbox_table
from tests.contract.harness import DeadLetterView
from tests.services import database_url


class OutboxHarnessBase:
    """Shared by transports whose dead letters live in the database store."""

    name = "base"

    def __init__(self, url: str) -> None:
        self.database_url = url

    async def dead_letters(self, app: Application) -> list[DeadLetterView]:
        return [
            DeadLetterView(d.event_id, d.name, d.error or "", d.id)
            for d in await app.dead_letters.list()
        ]

    async def replay(self, app: Application, letters: Sequence[DeadLetterView]) -> None:
        await app.dead_letters.replay([d.ref for d in letters])

    async def inject_raw(self, app: Application, name: str, payload_json: str) -> str:
        env = Envelope.new(
            name,
            payload_json,
            aggregate_type="ContractCounter",
            aggregate_id="raw-" + name,
            aggregate_version=1,
        )
        async with app.database.engine.begin() as conn:
            await conn.execute(insert(outbox_table), [envelope_to_row(env)])
        app.bus.notify([env])
        return str(env.event_id)


class InProcessHarness(OutboxHarnessBase):
    name = "inprocess"

    def bus(self, retry: RetryPolicy) -> EventBus:
        return InProcessBus(retry=retry, poll_interval=0.05, concurrency=4)


HARNESSES: dict[str, Any] = {
    "inprocess-sqlite": (InProcessHarness, "sqlite"),
    "inprocess-postgresql": (InProcessHarness, "postgresql"),
    "inprocess-mariadb": (InProcessHarness, "mariadb"),
}
# Each transport registers its harnesses in tests/contract/harnesses/<transport>.py as a
# module-level HARNESSES dict of id -> (factory(url, request), database kind).
for _info in pkgutil.iter_modules([str(Path(__file__).parent / "harnesses")]):
    HARNESSES.update(importlib.import_module(f"tests.contract.harnesses.{_info.name}").HARNESSES)


@pytest.fixture(params=list(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: object) -> Any:
    factory, db = HARNESSES[request.param]
    if factory is InProcessHarness:
        return factory(database_url(db, tmp_path))
    return factory(database_url(db, tmp_path), request)


def raw_payload(data: dict[str, Any]) -> str:
    return json.dumps(data)
