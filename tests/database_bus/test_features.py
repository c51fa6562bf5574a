"""Database bus features: poison and replay, retention, half messages, direct messages,
cross-process wake-up."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update

from dddframe import Application, DomainEvent, Envelope, EventContext, LimitRetry, Module, inject
from dddframe.bus.database import DatabaseBus
from dddframe.errors import PositionExpired
from dddframe.outbox.reader import PositionStore
from dddframe.outbox.tables import inbox_table, outbox_table, positions_table
from dddframe.testing import reset_database
from tests.contract.model import CreateCounter, Increment, Probe, contract_modules

ROOT = Path(__file__).resolve().parents[2]


class Charged(DomainEvent):
    __event_name__ = "BusTest:PaymentCharged"
    payment: str
    amount: int


class Provider:
    """Stands for the external payment provider the tx checker asks."""

    charged: set[str] = set()
    received: list[str] = []


class PaymentController:
    @inject
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def on_charged(self, event: Charged) -> None:
        Provider.received.append(event.payment)

    async def was_charged(self, event: Charged) -> bool:
        return event.payment in Provider.charged

    async def on_notice(self, event: Envelope, ctx: EventContext) -> None:
        Provider.received.append(event.payload()["text"])


def features_modules() -> list[Module]:
    m = Module("payments")
    m.event("Payments:Notice")
    m.controller(PaymentController)
    m.listen("BusTest:PaymentCharged", "PaymentController.on_charged")
    m.listen("Payments:Notice", "PaymentController.on_notice")
    m.tx_checker("BusTest:PaymentCharged", "PaymentController.was_charged")
    return [m]


@pytest.fixture
def fresh(any_db: str) -> str:
    Provider.charged, Provider.received = set(), []
    return any_db


async def test_poison_parks_one_aggregate_while_100_others_flow_then_replay(fresh: str) -> None:
    await reset_database(fresh)
    probe = Probe()
    bus = DatabaseBus(run_interval=0.05, retry=LimitRetry(limit=1, delay=0.01))
    async with Application(contract_modules(probe), fresh, bus=bus) as app:
        await app.create_schema()
        bad = await app.engine.run(CreateCounter())
        probe.always_fail.add(str(bad))
        await app.engine.run(Increment(counter_id=bad, times=3))  # v2 fails, v3 v4 wait
        others = [await app.engine.run(CreateCounter()) for _ in range(10)]
        for cid in others:
            await app.engine.run(Increment(counter_id=cid, times=10))
        await probe.wait_for(100)
        await app.drain()
        dead = await app.dead_letters.list()
        waiting = await app.dead_letters.list(state="waiting")
        assert [d.envelope.aggregate_version for d in dead] == [2]
        assert [w.envelope.aggregate_version for w in waiting] == [3, 4]
        assert len(probe.seen) == 100 and str(bad) not in {a for a, *_ in probe.seen}

        probe.always_fail.clear()  # the fix is deployed
        assert await app.dead_letters.replay(aggregate_id=str(bad)) == 1
        await probe.wait_for(103)
        await app.drain()
        assert await app.dead_letters.list(state=None) == []
    assert [v for a, v, *_ in probe.seen if a == str(bad)] == [2, 3, 4]


async def test_retention_keeps_what_a_lagging_subscription_needs(fresh: str) -> None:
    await reset_database(fresh)
    bus = DatabaseBus(run_interval=0.05, retention=timedelta(0))
    async with Application(features_modules(), fresh, bus=bus) as app:
        await app.create_schema()
        for i in range(10):
            await app.publish("Payments:Notice", {"text": f"n{i}"}, key="notices")
        await app.drain()
        async with app.database.connect() as conn:
            # a relay that has only sent the first 4 events also holds retention back
            await PositionStore().load(conn, "relay.test", start=4)
            await conn.commit()
        removed, _ = await bus.purge()
        async with app.database.connect() as conn:
            left = await conn.scalar(select(func.min(outbox_table.c.position)))
            await conn.execute(
                update(positions_table)
                .where(positions_table.c.subscription == "relay.test")
                .values(position=10)
            )
            await conn.commit()
        assert removed == 4 and left == 5
        removed, _ = await bus.purge()
        assert removed == 6
        async with app.database.connect() as conn:
            with pytest.raises(PositionExpired, match="retention already removed"):
                await PositionStore().load(conn, "late.subscriber", start=2)
        assert Provider.received == [f"n{i}" for i in range(10)]


async def test_half_message_commit_and_rollback(fresh: str) -> None:
    await reset_database(fresh)
    bus = DatabaseBus(run_interval=0.05)
    async with Application(features_modules(), fresh, bus=bus) as app:
        await app.create_schema()
        async with bus.prepare([Charged(payment="p1", amount=10)]) as tx:
            await app.drain()
            assert Provider.received == []  # prepared is not deliverable
        assert tx.state == "committed"
        async with bus.prepare([Charged(payment="p2", amount=10)]) as tx:
            await tx.rollback()  # the provider declined
        with pytest.raises(RuntimeError):
            async with bus.prepare([Charged(payment="p3", amount=10)]):
                raise RuntimeError("provider timed out")
        await app.drain()
        async with app.database.connect() as conn:
            rows = await conn.scalar(select(func.count()).select_from(outbox_table))
    assert Provider.received == ["p1"]
    assert rows == 1


@pytest.mark.parametrize("charged", [True, False])
async def test_half_message_crash_then_checker_decides(fresh: str, charged: bool) -> None:
    await reset_database(fresh)
    payment = f"pay-{uuid.uuid4().hex[:8]}"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.database_bus.half_child",
        fresh,
        payment,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()
    if charged:
        Provider.charged.add(payment)
    bus = DatabaseBus(run_interval=0.05, tx_check_timeout=0.2)
    async with Application(features_modules(), fresh, bus=bus) as app:
        await app.create_schema()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with app.database.connect() as conn:
                prepared = await conn.scalar(
                    select(func.count()).select_from(outbox_table).where(outbox_table.c.status == 1)
                )
            if prepared == 0:
                break
            await asyncio.sleep(0.05)
        await app.drain()
    assert prepared == 0
    assert Provider.received == ([payment] if charged else [])


async def test_direct_messages_join_the_unit_of_work(fresh: str) -> None:
    await reset_database(fresh)
    bus = DatabaseBus(run_interval=0.05)
    async with Application(features_modules(), fresh, bus=bus) as app:
        await app.create_schema()
        await bus.publish("Payments:Notice", {"text": "outside"})
        await app.drain()
    assert Provider.received == ["outside"]


async def test_notify_wakes_a_worker_in_another_process(postgres_db: str) -> None:
    server_db = postgres_db  # LISTEN/NOTIFY is PostgreSQL's; elsewhere workers wake by polling
    Provider.received = []
    await reset_database(server_db)
    # The consumer polls only every 30 s: prompt delivery can only come from NOTIFY.
    consumer = Application(features_modules(), server_db, bus=DatabaseBus(run_interval=30))
    writer = Application(features_modules(), server_db, bus=DatabaseBus(), consume=False)
    async with consumer, writer:
        await consumer.create_schema()
        await writer.create_schema()
        await asyncio.sleep(0.5)  # the LISTEN connection is up
        started = time.monotonic()
        await writer.publish("Payments:Notice", {"text": "ping"})
        async with asyncio.timeout(10):
            while Provider.received != ["ping"]:
                await asyncio.sleep(0.01)
    assert time.monotonic() - started < 10


async def test_inbox_entries_expire_by_retention(sqlite_db: str) -> None:
    await reset_database(sqlite_db)
    bus = DatabaseBus(run_interval=0.05, retention=None, inbox_retention=timedelta(hours=1))
    async with Application(features_modules(), sqlite_db, bus=bus) as app:
        await app.create_schema()
        now = datetime.now(UTC)
        async with app.database.connect() as conn:
            await conn.execute(
                insert(inbox_table),
                [
                    {
                        "consumer": "c",
                        "message_id": "old",
                        "processed_at": now - timedelta(hours=2),
                    },
                    {"consumer": "c", "message_id": "new", "processed_at": now},
                ],
            )
            await conn.commit()
        assert await bus.purge() == (0, 1)
        async with app.database.connect() as conn:
            left = (await conn.execute(select(inbox_table.c.message_id))).scalars().all()
    assert left == ["new"]
