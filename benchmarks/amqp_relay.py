"""AMQP relay vs raw aio-pika, and commit-to-listener latency, on the local RabbitMQ.

1. 50,000 events in a PostgreSQL outbox; the relay publishes them with publisher confirms in
   batches of 1,000 and stores its position after each confirmed batch.
2. Baseline in the same run: raw aio-pika publishing the same 50,000 messages (same body and
   headers, persistent) with confirms, 1,000 in flight at a time.
   ``BENCH_AMQP_ROUNDS`` (default 3) rounds alternate which side goes first (the outbox is
   numbered before; each relay round starts again from position 0). Prints the medians and
   ``ratio: X`` (median of the rounds' relay / raw, with their range; target >= 0.9).
3. A writer process commits 500 events/s; a consumer in this process records listener time minus
   ``occurred_at``. Prints ``p50`` and ``p99`` (target p99 <= 100 ms).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

import aio_pika
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import create_async_engine

from dddframe import Application, Envelope, Module
from dddframe.bus.amqp import AmqpBus
from dddframe.bus.amqp.messages import to_message
from dddframe.bus.amqp.relay import RELAY_POSITION
from dddframe.outbox.reader import OutboxReader, PositionStore
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import outbox_table, positions_table
from dddframe.testing import reset_database

URL = os.environ.get("DDDFRAME_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("DDDFRAME_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
N = int(os.environ.get("BENCH_AMQP_EVENTS", "50000"))
ROUNDS = int(os.environ.get("BENCH_AMQP_ROUNDS", "3"))
RATE, SECONDS = 500, 10.0

latencies: list[float] = []
target = 0
done = asyncio.Event()


class Timed:
    async def on_timed(self, event: Envelope) -> None:
        latencies.append(time.time() - event.occurred_at.timestamp())
        if len(latencies) >= target:
            done.set()


def bench_module() -> Module:
    m = Module("amqpbench")
    m.event("AmqpBench:Timed", "AmqpBench:Bulk")
    m.controller(Timed)
    m.listen("AmqpBench:Timed", "Timed.on_timed")
    return m


def envelopes(n: int) -> list[Envelope]:
    return [
        Envelope.new(
            "AmqpBench:Bulk",
            json.dumps({"i": i, "note": "x" * 120}),
            aggregate_type="Bench",
            aggregate_id=str(i % 1000),
            aggregate_version=i // 1000 + 1,
            headers={"correlation_id": "c"},
        )
        for i in range(n)
    ]


async def raw_rate(exchange_name: str, envs: list[Envelope]) -> float:
    connection = await aio_pika.connect_robust(AMQP)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        start = time.perf_counter()
        for i in range(0, len(envs), 1000):
            await asyncio.gather(
                *(exchange.publish(to_message(e), routing_key=e.name) for e in envs[i : i + 1000])
            )
        return len(envs) / (time.perf_counter() - start)
    finally:
        await connection.close()


WRITER = """
import asyncio, sys, time
from dddframe import Application
from dddframe.bus.amqp import AmqpBus
from benchmarks.amqp_relay import bench_module
async def main(url, amqp, exchange):
    bus = AmqpBus(amqp, exchange=exchange, relay=False)
    async with Application([bench_module()], url, bus=bus, consume=False) as app:
        start = time.perf_counter()
        for i in range(5000):
            await app.publish("AmqpBench:Timed", {"i": i}, key=str(i % 50))
            delay = start + (i + 1) / 500 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
asyncio.run(main(*sys.argv[1:4]))
"""


async def main() -> None:
    global target
    await reset_database(URL)
    exchange = f"bench-{uuid.uuid4().hex[:6]}"
    envs = envelopes(N)
    app = Application(
        [bench_module()], URL, bus=AmqpBus(AMQP, exchange=exchange, relay=False), consume=False
    )
    async with app:
        await app.create_schema()
        async with app.database.connect() as conn:
            for i in range(0, N, 10_000):
                await conn.execute(
                    insert_rows(), [envelope_to_row(e) for e in envs[i : i + 10_000]]
                )
            await conn.commit()
            while await Sequencer().sequence(conn):  # numbered before any side runs
                pass
            await conn.commit()
    raws: list[float] = []
    relays: list[float] = []
    for r in range(ROUNDS):  # alternating which goes first: the machine's load drifts
        for side in ("raw", "relay") if r % 2 == 0 else ("relay", "raw"):
            if side == "raw":
                raws.append(await raw_rate(exchange, envs))
            else:
                relays.append(await relay_rate(exchange))
    ratios = sorted(a / b for a, b in zip(relays, raws, strict=True))
    raw, relay = statistics.median(raws), statistics.median(relays)

    latencies.clear()
    target = int(RATE * SECONDS)
    consumer = Application(
        [bench_module()],
        URL,
        bus=AmqpBus(AMQP, exchange=exchange, poll_interval=0.5, purge_on_startup=True),
    )
    async with consumer:
        await consumer.create_schema()
        await asyncio.sleep(0.5)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, URL, AMQP, exchange, cwd=os.getcwd()
        )
        await proc.wait()
        await asyncio.wait_for(done.wait(), timeout=120)
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000
    print(f"relay: {relay:,.0f} events/s ({N} outbox events, confirms, batches of 1000)")
    print(f"raw aio-pika: {raw:,.0f} messages/s (same messages, confirms, 1000 in flight)")
    print(f"ratio: {statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})")
    print(f"latency at {RATE} events/s ({len(lat)} events): p50: {p50:.1f} ms, p99: {p99:.1f} ms")


async def relay_rate(exchange: str) -> float:
    """Relay the whole outbox once, from position 0."""
    engine = create_async_engine(URL)
    async with engine.begin() as conn:  # the relay starts from the beginning
        await conn.execute(
            update(positions_table)
            .where(positions_table.c.subscription == RELAY_POSITION)
            .values(position=0)
        )
    await engine.dispose()
    bus = AmqpBus(AMQP, exchange=exchange, relay_batch=1000, poll_interval=0.01)
    relay_app = Application([bench_module()], URL, bus=bus, consume=False)
    async with relay_app:
        start = time.perf_counter()
        async with relay_app.database.connect() as conn:
            head = await OutboxReader().head(conn)  # the outbox does not grow meanwhile
            await conn.commit()
        # The relay's own stored position, read without a query: polling the database every
        # 10 ms from the relay's event loop took CPU from the relay the raw side never paid.
        while True:
            if bus.relay is not None and bus.relay.position >= head:
                break
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        async with relay_app.database.connect() as conn:  # it is the stored position
            assert await PositionStore().load(conn, RELAY_POSITION, start="earliest") >= head
            await conn.commit()
        return N / elapsed


def insert_rows() -> Any:
    return insert(outbox_table)
