"""The application the Kafka tests run, in the test process and as ``dddframe worker`` /
``dddframe relay`` subprocesses (configured through KAFKA_TEST_* environment variables)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import (
    Aggregate,
    Application,
    Command,
    DomainEvent,
    EventContext,
    IntervalRetry,
    Model,
    Module,
    Repository,
    inject,
)
from dddframe.bus.kafka import KafkaBus, KafkaCluster
from dddframe.bus.retry import RetryPolicy
from dddframe.database import Database


class Bumped(DomainEvent):
    __event_name__ = "Tally:Bumped"
    tally_id: str
    n: int


class Tally(Aggregate):
    __tablename__ = "kafka_tallies"
    n: Mapped[int] = mapped_column(default=0)

    def bump(self, times: int = 1) -> None:
        for _ in range(times):
            self.n += 1
            self.domain_event(Bumped(tally_id=str(self.id), n=self.n))


class Bump(Command):
    tally_id: uuid.UUID | None = None
    times: int = 1


class KafkaEffect(Model):
    __tablename__ = "kafka_effects"
    __table_args__ = (UniqueConstraint("subscription", "event_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    subscription: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(36))
    tally_id: Mapped[str] = mapped_column(String(64))
    n: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int] = mapped_column(Integer)


@dataclass
class Seen:
    """What in-process listeners saw (tests bind one per app)."""

    events: list[tuple[str, int, int]] = field(default_factory=list)  # tally, n, attempt
    contexts: list[EventContext] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # tally id -> failures left
    always_fail: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def per_tally(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(list)
        for tally, n, _ in self.events:
            out[tally].append(n)
        return out

    async def wait_for(self, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()


class Watcher:
    @inject
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def on_bumped(self, event: Bumped, ctx: EventContext) -> None:
        if event.tally_id in self.seen.always_fail:
            raise RuntimeError(f"listener always fails for {event.tally_id}")
        if self.seen.fail.get(event.tally_id, 0) > 0:
            self.seen.fail[event.tally_id] -= 1
            raise RuntimeError(f"planned failure for {event.tally_id}")
        self.seen.events.append((event.tally_id, event.n, ctx.attempt))
        self.seen.contexts.append(ctx)
        self.seen.changed.set()


class Recorder:
    """Writes one row per event with the inbox, so a redelivery has no second effect."""

    @inject
    def __init__(self, database: Database) -> None:
        self.database = database

    async def on_bumped(self, event: Bumped, ctx: EventContext) -> None:
        await asyncio.sleep(float(os.environ.get("KAFKA_TEST_DELAY", "0")))
        async with self.database.session() as s:
            if await ctx.inbox.claim(s):
                s.add(
                    KafkaEffect(
                        subscription=ctx.subscription,
                        event_id=ctx.event_id,
                        tally_id=event.tally_id,
                        n=event.n,
                        pid=os.getpid(),
                    )
                )
                await s.commit()


def tallies() -> Module:
    module = Module("tallies")

    @module.handles(Bump)
    async def bump(cmd: Bump, repo: Repository[Tally]) -> uuid.UUID:
        tally = await repo.find(cmd.tally_id) if cmd.tally_id else None
        if tally is None:
            tally = Tally(id=cmd.tally_id, n=0) if cmd.tally_id else Tally(n=0)
            repo.add(tally)
        tally.bump(cmd.times)
        return tally.id

    return module


def kafka_bus(
    bootstrap: str, prefix: str, *, retry: RetryPolicy | None = None, **options: object
) -> KafkaBus:
    from tests.kafka.broker import idempotence

    session = float(os.environ.get("KAFKA_TEST_SESSION_TIMEOUT", "5"))
    cluster = KafkaCluster(
        bootstrap=bootstrap, enable_idempotence=idempotence(), session_timeout=session
    )
    return KafkaBus(
        clusters={"default": cluster},
        topic_prefix=prefix,
        group_prefix=prefix,
        retry=retry or IntervalRetry(interval=0.05, limit=3),
        lease_ttl=float(os.environ.get("KAFKA_TEST_LEASE_TTL", "2")),
        **options,  # type: ignore[arg-type]
    )


def make_app(consume: bool = True, groups: list[str] | None = None) -> Application:
    """The subprocess application: tallies + the ``recorders`` group writing KafkaEffect rows."""
    recorders = Module("recorders")
    recorders.controller(Recorder)
    recorders.listen("Tally:Bumped", "Recorder.on_bumped")
    bus = kafka_bus(
        os.environ["KAFKA_TEST_BOOTSTRAP"],
        os.environ["KAFKA_TEST_PREFIX"],
        relay=os.environ.get("KAFKA_TEST_RELAY", "1") == "1",
        relay_batch=int(os.environ.get("KAFKA_TEST_RELAY_BATCH", "2000")),
        relay_save_interval=float(os.environ.get("KAFKA_TEST_SAVE_INTERVAL", "0.1")),
    )
    return Application(
        [tallies(), recorders],
        os.environ["KAFKA_TEST_DB_URL"],
        bus=bus,
        consume=consume,
        groups=groups,
    )
