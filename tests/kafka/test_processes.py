"""Relay and consumer processes: a SIGKILLed relay resends from its last acknowledged position;
a consumer SIGKILLed mid-batch in a group of two hands its partitions over and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dddframe import Application
from dddframe.outbox.reader import OutboxReader
from dddframe.outbox.sequencer import Sequencer
from dddframe.outbox.tables import positions_table
from dddframe.testing import reset_database
from tests.cli import dead_letters
from tests.kafka.inspect_topics import read_all
from tests.kafka.kafka_app import Bump, KafkaEffect, make_app

ROOT = Path(__file__).resolve().parents[2]
RELAY = "relay.kafka.default"


@pytest.fixture
def app_env(
    kafka_bootstrap: str, names: str, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    env = {
        "KAFKA_TEST_BOOTSTRAP": kafka_bootstrap,
        "KAFKA_TEST_PREFIX": names,
        "KAFKA_TEST_DB_URL": pg_url,
        "KAFKA_TEST_LEASE_TTL": "1",
        "KAFKA_TEST_SESSION_TIMEOUT": "3",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@asynccontextmanager
async def writer(url: str, *, relay: bool) -> AsyncIterator[Application]:
    os.environ["KAFKA_TEST_RELAY"] = "1" if relay else "0"
    await reset_database(url)
    app = make_app(consume=False)
    async with app:
        await app.create_schema()
        yield app


async def spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dddframe.cli",
        *args,
        "--app",
        "tests.kafka.kafka_app:make_app",
        "--log-level",
        "WARNING",
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)


async def relay_position(app: Application) -> int:
    async with app.database.connect() as conn:
        found = await conn.scalar(
            select(positions_table.c.position).where(positions_table.c.subscription == RELAY)
        )
    return int(found or 0)


async def head(app: Application) -> int:
    async with app.database.connect() as conn:
        await Sequencer().sequence(conn)
        return await OutboxReader().head(conn)


async def test_sigkilled_relay_resends_every_event_in_order_per_key(
    app_env: dict[str, str], names: str, pg_url: str, kafka_bootstrap: str
) -> None:
    tallies = [uuid.uuid4() for _ in range(40)]
    async with writer(pg_url, relay=False) as app:
        for tally in tallies:
            await app.engine.run(Bump(tally_id=tally, times=100))
        total = await head(app)
        assert total == 4000
        slow = {"KAFKA_TEST_RELAY_BATCH": "2", "KAFKA_TEST_SAVE_INTERVAL": "0"}
        first = await spawn("relay", env=slow)
        try:
            async with asyncio.timeout(60):
                while await relay_position(app) < 300:
                    await asyncio.sleep(0.01)
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        killed_at = await relay_position(app)
        assert 300 <= killed_at < total, "the relay must be killed mid-stream"
        second = await spawn("relay", env={"KAFKA_TEST_RELAY_BATCH": "500"})
        try:
            async with asyncio.timeout(60):
                while await relay_position(app) < total:
                    await asyncio.sleep(0.05)
        finally:
            await stop(second)
    records = await read_all(kafka_bootstrap, names + "tally")
    assert len(records) >= total
    per_key: dict[bytes, list[int]] = defaultdict(list)
    event_ids = set()
    for r in records:
        headers = dict(r.headers)
        event_ids.add(headers["dddframe-event-id"])
        version = int(headers["dddframe-aggregate-version"])
        if version not in per_key[r.key]:  # a resent record repeats what came before it
            per_key[r.key].append(version)
    assert len(event_ids) == total
    assert set(per_key) == {str(t).encode() for t in tallies}
    for versions in per_key.values():
        assert versions == list(range(1, 101))


async def _wait_for_members(env: dict[str, str], group_id: str, members: int) -> None:
    """Until ``group_id`` is a stable consumer group of ``members`` members."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_TEST_BOOTSTRAP"])
    await admin.start()
    try:
        async with asyncio.timeout(60):
            while True:
                with contextlib.suppress(Exception):  # not known to the coordinator yet
                    (response,) = await admin.describe_consumer_groups([group_id])
                    (group,) = response.groups
                    state, joined = group[2], group[5]
                    if state == "Stable" and len(joined) == members:
                        return
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def test_consumer_killed_mid_batch_hands_partitions_over_nothing_lost(
    app_env: dict[str, str], pg_url: str
) -> None:
    worker_env = {"KAFKA_TEST_RELAY": "0", "KAFKA_TEST_DELAY": "0.02"}
    workers = [await spawn("worker", "--group", "recorders", env=worker_env) for _ in range(2)]
    try:
        async with writer(pg_url, relay=True) as app:
            # Both members share the partitions before anything is written: a member that
            # joins late would find the other one done already (the relay is fast).
            await _wait_for_members(app_env, app_env["KAFKA_TEST_PREFIX"] + "recorders", 2)
            tallies = [uuid.uuid4() for _ in range(20)]
            for tally in tallies:
                await app.engine.run(Bump(tally_id=tally, times=50))

            async def effects() -> list[KafkaEffect]:
                async with app.database.session() as s:
                    rows = await s.scalars(select(KafkaEffect).order_by(KafkaEffect.id))
                    return list(rows.all())

            async with asyncio.timeout(60):  # both members are consuming
                while len({e.pid for e in await effects()}) < 2:
                    await asyncio.sleep(0.05)
            victim, survivor = workers
            victim.send_signal(signal.SIGKILL)  # mid-batch: its listener sleeps per record
            await victim.wait()
            at_kill = len(await effects())
            async with asyncio.timeout(90):
                while len(await effects()) < 1000:
                    await asyncio.sleep(0.1)
            found = await effects()
            async with app.database.session() as s:
                distinct = await s.scalar(select(func.count(func.distinct(KafkaEffect.event_id))))
    finally:
        for proc in workers:
            if proc.returncode is None:
                await stop(proc)
    assert len(found) == 1000 and distinct == 1000
    assert {e.pid for e in found} == {victim.pid, survivor.pid}
    per: dict[str, list[int]] = defaultdict(list)
    for e in found:
        per[e.tally_id].append(e.n)
    for versions in per.values():
        assert versions == list(range(1, 51))
    victims_keys = {e.tally_id for e in found if e.pid == victim.pid}
    after = {e.tally_id for e in found[at_kill:] if e.pid == survivor.pid}
    assert victims_keys & after, "the survivor took over the victim's partitions"


async def test_dead_letters_cli_lists_and_purges_the_dead_letter_topic(
    app_env: dict[str, str], names: str, pg_url: str, kafka_bootstrap: str
) -> None:
    from aiokafka import AIOKafkaProducer

    spec = "tests.kafka.kafka_app:make_app"
    await reset_database(pg_url)
    os.environ["KAFKA_TEST_RELAY"] = "1"
    async with make_app(consume=True) as app:
        await app.create_schema()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(names + "tally", b"garbage", key=b"k")
        finally:
            await producer.stop()
        await app.engine.run(Bump())
        await app.drain()

    code, out = await dead_letters(spec, "kafka", "list", "--json")
    assert code == 0, out
    (letter,) = json.loads(out)
    assert letter["subscription"] == names + "recorders.*"
    assert "not JSON" in letter["error"]
    code, out = await dead_letters(spec, "kafka", "show", str(letter["id"]), "--json")
    assert code == 0 and "dead-letter record fail-" in out
    code, out = await dead_letters(spec, "kafka", "purge", "--all", "--yes")
    assert code == 0 and "1" in out
    code, out = await dead_letters(spec, "kafka", "list", "--json")
    assert json.loads(out or "[]") == []
