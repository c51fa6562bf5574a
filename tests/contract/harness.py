"""What a transport provides to run the contract suite (faststream's tests/brokers/base idea).

Each transport adds a :class:`Harness` to ``tests/contract/conftest.py``; every test in
``tests/contract/test_contract.py`` then runs against it unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from dddframe import Application, Module
from dddframe.bus import EventBus, RetryPolicy
from dddframe.testing import reset_database


@dataclass(frozen=True)
class DeadLetterView:
    """A dead letter as the contract suite sees it, whatever the transport stores."""

    event_id: str
    name: str
    reason: str
    ref: Any  # what replay() needs


class Harness(Protocol):
    name: str
    database_url: str

    def bus(self, retry: RetryPolicy) -> EventBus:
        """A fresh bus instance configured for the test (fast polling, the given retry)."""

    async def dead_letters(self, app: Application) -> list[DeadLetterView]: ...

    async def replay(self, app: Application, letters: Sequence[DeadLetterView]) -> None: ...

    async def inject_raw(self, app: Application, name: str, payload_json: str) -> str:
        """Put a record with this name and raw payload where the consumer reads; its event id."""


@asynccontextmanager
async def running(
    harness: Harness,
    modules: Sequence[Module],
    retry: RetryPolicy,
    *,
    reset: bool = True,
    consume: bool = True,
) -> AsyncIterator[Application]:
    if reset:
        await reset_database(harness.database_url)
    app = Application(
        modules=modules, database_url=harness.database_url, bus=harness.bus(retry), consume=consume
    )
    await app.start()
    try:
        await app.create_schema()
        yield app
    finally:
        await app.stop()
