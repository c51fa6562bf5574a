"""Half messages when the tx_checker and a slow or stalled preparer meet (SQLite, PostgreSQL,
MariaDB): a live preparer keeps its rows; a stalled one learns that the checker decided."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import func, select

from dddframe import Application, Envelope
from dddframe.bus.database import DatabaseBus
from dddframe.bus.database.half import HalfMessages
from dddframe.database import Database
from dddframe.errors import HalfMessageDecided
from dddframe.outbox.tables import outbox_table
from dddframe.testing import reset_database
from tests.database_bus.test_features import Charged, Provider, features_modules

TIMEOUT = 0.3


def make_app(url: str, *, consume: bool = True) -> Application:
    return Application(
        features_modules(),
        url,
        bus=DatabaseBus(run_interval=0.05, tx_check_timeout=TIMEOUT),
        consume=consume,
    )


@pytest.fixture
async def app(any_db: str) -> Application:
    Provider.charged, Provider.received = set(), []
    await reset_database(any_db)
    return make_app(any_db)


@pytest.fixture
async def writer(any_db: str) -> Application:
    """A pure writer for the stalled-preparer tests: its stall must not also stall a background
    pass of its own that holds a write transaction open (SQLite has one writer per file, and the
    checker elsewhere would wait for that lock instead of deciding)."""
    Provider.charged, Provider.received = set(), []
    await reset_database(any_db)
    return make_app(any_db, consume=False)


async def drain_elsewhere(url: str) -> None:
    async with make_app(url) as consumer:
        await consumer.drain()


def checker_elsewhere(url: str, engine: object, answer: bool) -> threading.Thread:
    """Another process's tx_checker, in a thread with its own event loop and connections: it
    judges the stale row while this test's event loop is blocked (a stalled preparer)."""

    async def judge(_env: Envelope) -> bool:
        return answer

    async def run() -> None:
        db = Database(url)
        try:
            half = HalfMessages(db, engine, TIMEOUT, lambda envelopes: None)  # type: ignore[arg-type]
            async with asyncio.timeout(30):
                while not await half.check_stale({"BusTest:PaymentCharged": judge}):
                    await asyncio.sleep(0.05)
        finally:
            await db.dispose()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    return thread


async def outbox_count(app: Application) -> int:
    async with app.database.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(outbox_table)) or 0)


async def test_a_slow_but_live_preparer_keeps_its_half_message(app: Application) -> None:
    async with app:
        await app.create_schema()
        bus = app.bus
        assert isinstance(bus, DatabaseBus)
        async with bus.prepare([Charged(payment="p1", amount=10)]):
            # Five timeouts pass; the checker (which would answer "not charged") runs every
            # 0.15 s in this process, but the live preparer renews its rows.
            await asyncio.sleep(5 * TIMEOUT)
        await app.drain()
        assert Provider.received == ["p1"]


async def test_a_stalled_preparer_whose_rows_were_rolled_back_learns_it(
    writer: Application, any_db: str
) -> None:
    async with writer:
        await writer.create_schema()
        bus = writer.bus
        assert isinstance(bus, DatabaseBus)
        with pytest.raises(HalfMessageDecided, match="rolled back by its tx_checker"):
            async with bus.prepare([Charged(payment="p2", amount=10)]):
                # The process stalls (blocking code: join) and nothing here renews the rows
                # while another process's checker waits until they are stale and decides.
                checker_elsewhere(any_db, writer.engine, answer=False).join(timeout=30)
        await drain_elsewhere(any_db)
        assert Provider.received == []
        assert await outbox_count(writer) == 0


async def test_a_stalled_preparer_rolling_back_after_the_checker_committed_learns_it(
    writer: Application, any_db: str
) -> None:
    async with writer:
        await writer.create_schema()
        bus = writer.bus
        assert isinstance(bus, DatabaseBus)
        async with bus.prepare([Charged(payment="p3", amount=10)]) as tx:
            checker_elsewhere(any_db, writer.engine, answer=True).join(timeout=30)
            with pytest.raises(HalfMessageDecided, match="committed by its tx_checker"):
                await tx.rollback()
    await drain_elsewhere(any_db)
    assert Provider.received == ["p3"]  # delivered, as the checker decided
