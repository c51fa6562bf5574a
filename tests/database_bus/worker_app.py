"""The application the worker-process tests run with ``dddframe worker``."""

from __future__ import annotations

import asyncio
import os
import uuid

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import (
    Aggregate,
    Application,
    Command,
    Envelope,
    EventContext,
    LimitRetry,
    Model,
    Module,
    Repository,
    inject,
)
from dddframe.bus.database import DatabaseBus
from dddframe.database import Database


class WorkerEffect(Model):
    __tablename__ = "worker_effects"
    __table_args__ = (UniqueConstraint("subscription", "event_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    subscription: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(36))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int] = mapped_column(Integer)


class Ticker(Aggregate):
    __tablename__ = "worker_tickers"
    ticks: Mapped[int] = mapped_column(default=0)

    def tick(self) -> None:
        self.ticks += 1
        self.domain_event("Worker:Ticked", {"ticks": self.ticks})


class Tick(Command):
    ticker_id: uuid.UUID | None = None
    times: int = 1


class Recorder:
    @inject
    def __init__(self, database: Database) -> None:
        self.database = database

    async def _record(self, event: Envelope, ctx: EventContext) -> None:
        await asyncio.sleep(float(os.environ.get("WORKER_TEST_DELAY", "0.005")))
        if os.environ.get("WORKER_TEST_CRASH") == event.aggregate_id:
            os._exit(17)  # the listener takes the whole worker down
        assert event.aggregate_id is not None and event.aggregate_version is not None
        async with self.database.session() as s:
            if await ctx.inbox.claim(s):  # a redelivered event has no second effect
                s.add(
                    WorkerEffect(
                        subscription=ctx.subscription,
                        event_id=str(event.event_id),
                        aggregate_id=event.aggregate_id,
                        version=event.aggregate_version,
                        pid=os.getpid(),
                    )
                )
                await s.commit()

    async def first(self, event: Envelope, ctx: EventContext) -> None:
        await self._record(event, ctx)

    async def second(self, event: Envelope, ctx: EventContext) -> None:
        await self._record(event, ctx)

    async def third(self, event: Envelope, ctx: EventContext) -> None:
        await self._record(event, ctx)


def modules() -> list[Module]:
    tickers = Module("tickers")
    tickers.event("Worker:Ticked")

    @tickers.handles(Tick)
    async def tick(cmd: Tick, repo: Repository[Ticker]) -> uuid.UUID:
        ticker = await repo.find(cmd.ticker_id) if cmd.ticker_id else None
        if ticker is None:
            ticker = Ticker(ticks=0)
            repo.add(ticker)
        for _ in range(cmd.times):
            ticker.tick()
        return ticker.id

    watchers = Module("g")
    watchers.controller(Recorder)
    watchers.listen("Worker:Ticked", "Recorder.first")
    watchers.listen("Worker:Ticked", "Recorder.second")
    if os.environ.get("WORKER_TEST_SECOND_GROUP"):  # group "h": three more subscriptions
        for method in ("first", "second", "third"):
            watchers.listen("Worker:Ticked", f"Recorder.{method}", group="h")
    return [tickers, watchers]


def make_app(consume: bool = True, groups: list[str] | None = None) -> Application:
    bus = DatabaseBus(
        run_interval=0.1,
        lease_ttl=float(os.environ.get("WORKER_TEST_LEASE_TTL", "1.5")),
        limit_per_run=50,
        concurrency=4,
        crash_limit=2,
        retry=LimitRetry(limit=1, delay=0.05),
    )
    return Application(
        modules(), os.environ["WORKER_TEST_DB_URL"], bus=bus, consume=consume, groups=groups
    )
