"""The operator view of a Kafka application through the one transport interface: ``bus.status()``
from committed vs end offsets, dead letters from the dead-letter topic, and ``dddframe status``
/ ``dddframe dead-letters`` exit codes on the test broker (issue 11, defect 11)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import select
from typer.testing import CliRunner

from dddframe import Application
from dddframe.bus.kafka.records import to_record
from dddframe.cli import app as cli
from dddframe.cli.exits import EXIT_DEAD_LETTERS, EXIT_LAGGING
from dddframe.domain.envelope import Envelope
from dddframe.outbox.status import SubscriptionStatus
from dddframe.outbox.tables import outbox_table
from dddframe.testing import reset_database
from tests.kafka import ops_app
from tests.kafka.kafka_app import Bump, kafka_bus, tallies
from tests.ops.page import page_view

APP = "tests.kafka.ops_app:make_app"
runner = CliRunner()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def cli_run(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stdout


async def status_of(app: Application) -> SubscriptionStatus:
    (row,) = [s for s in (await app.bus.status()).subscriptions if s.name == ops_app.SUB]
    return row


@pytest.fixture
async def kafka_ops(
    kafka_bootstrap: str, names: str, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    await reset_database(pg_url)
    monkeypatch.setenv(ops_app.BOOTSTRAP, kafka_bootstrap)
    monkeypatch.setenv(ops_app.PREFIX, names)
    monkeypatch.setenv(ops_app.DB_URL, pg_url)
    ops_app.Failing.ids.clear()
    ops_app.Failing.seen.clear()
    ops_app.Failing.error = "mail server down"
    return pg_url


async def test_status_lag_dead_letters_and_exit_codes_on_kafka(
    kafka_ops: str, kafka_bootstrap: str, names: str
) -> None:
    fine, broken = uuid.uuid4(), uuid.uuid4()
    async with ops_app.make_app() as worker:
        await worker.create_schema()
        await worker.engine.run(Bump(tally_id=fine, times=2))
        await worker.drain()
        await until(lambda: _caught_up(worker), "the group to commit its offsets")
    # Caught up, no dead letters: 0 even under --max-lag 0 (it used to invent a lag of every
    # event and exit 3).
    async with ops_app.make_app(consume=False) as operator:
        row = await status_of(operator)
        assert (row.lag_events, row.lag_seconds, row.dead_letters) == (0, 0.0, 0)
        assert row.position == 2  # committed offsets of the topic, summed
    code, out = await asyncio.to_thread(cli_run, "status", "--app", APP, "--json", "--max-lag", "0")
    assert code == 0, out
    (sub,) = json.loads(out)["subscriptions"]
    assert sub["name"] == ops_app.SUB and sub["lag_events"] == 0

    # Three events the consumers have not seen (no worker runs; a writer relays them): lag 3.
    writer_bus = kafka_bus(kafka_bootstrap, names, relay=True)
    writer = Application(
        [tallies(), ops_app.make_app().modules[1]], kafka_ops, bus=writer_bus, consume=False
    )
    async with writer:
        await writer.engine.run(Bump(tally_id=fine, times=3))
        await writer.drain()  # the relay sent them
        row = await status_of(writer)
        assert row.lag_events == 3 and row.lag_seconds > 0 and row.dead_letters == 0
        page, gauges = await page_view(writer, ops_app.SUB)  # the page and Prometheus agree
        (shown,) = [s for s in page["subscriptions"] if s["name"] == ops_app.SUB]
        assert shown["lag_events"] == 3 and gauges["lag_events"] == 3
    code, _ = await asyncio.to_thread(cli_run, "status", "--app", APP, "--max-lag", "2")
    assert code == EXIT_LAGGING
    code, _ = await asyncio.to_thread(cli_run, "status", "--app", APP, "--max-lag", "3")
    assert code == 0

    # A worker catches up, and a failing listener leaves one dead letter.
    ops_app.Failing.ids.add(str(broken))
    async with ops_app.make_app() as worker:
        await worker.engine.run(Bump(tally_id=broken))
        await worker.drain()
        await until(lambda: _caught_up(worker, dead=1), "the dead letter and the commit")
        page, gauges = await page_view(worker, ops_app.SUB)
        assert page["dead_letters"] == 1 and len(page["dead_letter_list"]) == 1
        assert gauges["dead_letters"] == 1 and gauges["lag_events"] == 0
        async with worker.database.connect() as conn:
            broken_id = await conn.scalar(
                select(outbox_table.c.event_id).where(outbox_table.c.aggregate_id == str(broken))
            )
    code, out = await asyncio.to_thread(cli_run, "status", "--app", APP, "--json")
    assert code == EXIT_DEAD_LETTERS, out
    assert json.loads(out)["dead_letters"] == 1
    code, out = await asyncio.to_thread(cli_run, "dead-letters", "list", "--app", APP, "--json")
    assert code == 0
    (letter,) = json.loads(out)
    assert letter["event_id"] == str(broken_id) and letter["subscription"] == ops_app.SUB

    # Replay through the interface delivers it; then nothing is dead and the exit is 0.
    ops_app.Failing.ids.clear()
    async with ops_app.make_app() as worker:
        code, out = await asyncio.to_thread(
            cli_run, "dead-letters", "replay", "--app", APP, "--all"
        )
        assert code == 0, out
        await until(
            lambda: asyncio.sleep(0, (str(broken), 1) in ops_app.Failing.seen),
            "the replayed event to be delivered",
        )
        await worker.drain()
        await until(lambda: _caught_up(worker), "the retry topic to be committed")
    code, _ = await asyncio.to_thread(cli_run, "status", "--app", APP, "--max-lag", "0")
    assert code == 0


async def _caught_up(app: Application, dead: int = 0) -> bool:
    row = await status_of(app)
    return row.lag_events == 0 and row.dead_letters == dead and row.retries_pending == 0


async def test_dead_letters_of_undecodable_records_keep_their_real_ids_oldest_first(
    kafka_ops: str, kafka_bootstrap: str, names: str
) -> None:
    hostile = "[/] [red on red]x[/] [link=http://evil]y[/link] \x1b]0;pwned\x07 \x1b[2J"
    async with ops_app.make_app() as worker:
        await worker.create_schema()
        await worker.engine.run(Bump(tally_id=uuid.uuid4()))
        await worker.drain()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            # Keys on descending partitions, dead-lettered one after the other: oldest first
            # is not partition order.
            partitions = sorted(await producer.partitions_for(names + "tally"))
            keys = _keys_on_descending_partitions(partitions, 3)
            real = [
                Envelope.new("Tally:Bumped", "{}", aggregate_type="Tally", aggregate_id=k)
                for k in keys
            ]
            for n, env in enumerate(real, start=1):
                # envelope headers with the real id, a body that is not JSON
                key, _, headers = to_record(env)
                await producer.send_and_wait(
                    names + "tally", b"\xff" + hostile.encode(), key=key, headers=headers
                )
                await until(lambda n=n: _caught_up_poison(worker, n), f"dead letter {n}")
        finally:
            await producer.stop()
        letters = await worker.dead_letters.list()
        assert [d.event_id for d in letters] == [str(e.event_id) for e in real]
        assert [d.created_at for d in letters] == sorted(d.created_at for d in letters)

        # The CLI shows the hostile texts as data, exit 0 ("found"), not a MarkupError (1).
        code, out = await asyncio.to_thread(cli_run, "dead-letters", "list", "--app", APP)
        assert code == 0, out
        assert "\x1b" not in out
        code, out = await asyncio.to_thread(
            cli_run, "dead-letters", "show", str(letters[0].id), "--app", APP
        )
        assert code == 0 and "\x1b" not in out and "[red on red]" in out
        assert str(real[0].event_id) in out

        code, out = await asyncio.to_thread(cli_run, "status", "--app", APP, "--json")
        rows = {s["name"]: s for s in json.loads(out)["subscriptions"]}
        assert (
            code == EXIT_DEAD_LETTERS and rows[names + "alerts.*"]["dead_letters"] == 3
        )  # by group id
        assert await worker.dead_letters.purge(everything=True) == 3
        assert await worker.dead_letters.list() == []
        assert (await worker.bus.status()).dead_letters == 0


async def test_retry_topic_records_are_retries_pending(kafka_ops: str) -> None:
    broken = uuid.uuid4()
    ops_app.Failing.ids.add(str(broken))
    async with ops_app.make_app(retrying=True) as worker:
        await worker.create_schema()
        await worker.engine.run(Bump(tally_id=broken))
        # An operator process (not consuming) sees the record waiting in the retry topic.
        async with ops_app.make_app(consume=False, retrying=True) as operator:

            async def retry_pending() -> bool:
                (row,) = (await operator.bus.status()).subscriptions
                return row.retries_pending == 1 and row.lag_events == 0

            await until(retry_pending, "the record in the retry topic", ops_app.SLOW_RETRY)
            ops_app.Failing.ids.clear()  # the retry, when due, succeeds

            async def delivered() -> bool:
                (row,) = (await operator.bus.status()).subscriptions
                return row.retries_pending == 0 and (str(broken), 1) in ops_app.Failing.seen

            await until(delivered, "the retried record to be delivered and committed")


def _keys_on_descending_partitions(partitions: list[int], n: int) -> list[str]:
    chosen: dict[int, str] = {}
    for i in range(1000):
        key = f"agg-{i}"
        chosen.setdefault(DefaultPartitioner()(key.encode(), partitions, partitions), key)
    assert len(chosen) >= n, "the topic needs more partitions"
    return [chosen[p] for p in sorted(chosen, reverse=True)[:n]]


async def _caught_up_poison(app: Application, dead: int) -> bool:
    status = await app.bus.status()
    return status.dead_letters == dead
