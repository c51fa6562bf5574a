"""The operator view of an AMQP application through the one transport interface:
``bus.status()`` from queue depths, dead letters from the ``.dlq`` queues, and ``dddframe
status`` / ``dddframe dead-letters`` exit codes on RabbitMQ (issue 11, defect 11)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from dddframe import Application
from dddframe.cli import app as cli
from dddframe.cli.exits import EXIT_DEAD_LETTERS, EXIT_LAGGING
from dddframe.outbox.status import SubscriptionStatus
from dddframe.outbox.tables import outbox_table
from dddframe.testing import reset_database
from tests.amqp import ops_app
from tests.ops import ops_app as tickets
from tests.ops.page import page_view
from tests.services import AMQP_URL, reachable, require

APP = "tests.amqp.ops_app:make_app"
SUB = "ops.Notifier.on_opened"
HOSTILE = "boom [/] [red on red]x[/] [link=http://evil]y[/link] \x1b]0;pwned\x07 \x1b[2J"
runner = CliRunner()


def cli_run(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stdout


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def row(app: Application) -> SubscriptionStatus:
    (found,) = [s for s in (await app.bus.status()).subscriptions if s.name == SUB]
    return found


@pytest.fixture
async def amqp_ops(postgres_db: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
    await reset_database(postgres_db)
    exchange = f"ops-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(ops_app.EXCHANGE, exchange)
    monkeypatch.setenv(ops_app.DB_URL, postgres_db)
    tickets.Notifier.broken = True
    tickets.Notifier.seen.clear()
    yield exchange
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for sub in (SUB, ops_app.SLOW):
            queue = f"{exchange}.{sub}"
            for name in (queue, queue + ".dlq", queue + ".delay.60000"):
                await channel.queue_delete(name)
        await channel.exchange_delete(exchange)


async def test_status_dead_letters_and_exit_codes_on_amqp(amqp_ops: str) -> None:
    async with ops_app.make_app() as worker:
        await worker.create_schema()
        for title in ("a", "b"):
            await worker.engine.run(tickets.OpenTicket(title=title))
        await worker.drain()
        current = await row(worker)
        assert (current.lag_events, current.dead_letters, current.retries_pending) == (0, 0, 0)
    # Caught up: 0 under --max-lag 0 (it used to count every event as lag).
    code, out = await asyncio.to_thread(cli_run, "status", "--app", APP, "--json", "--max-lag", "0")
    assert code == 0, out

    # Three messages no consumer took (a writer relays, nobody consumes): lag 3, EXIT_LAGGING.
    async with ops_app.make_app(consume=False, relay=True) as writer:
        for title in ("c", "d", "e"):
            await writer.engine.run(tickets.OpenTicket(title=title))
        await until(lambda: _lag_is(writer, 3), "three messages in the queue")
        current = await row(writer)
        assert current.lag_seconds > 0 and current.position is None
    code, _ = await asyncio.to_thread(cli_run, "status", "--app", APP, "--max-lag", "2")
    assert code == EXIT_LAGGING
    code, _ = await asyncio.to_thread(cli_run, "status", "--app", APP, "--max-lag", "3")
    assert code == 0

    # A failing listener with a hostile error text: one dead letter, shown as data.
    async with ops_app.make_app() as worker:
        await worker.engine.run(tickets.OpenTicket(title=HOSTILE))
        await worker.drain()
        await until(lambda: _lag_is(worker, 0, dead=1), "the dead letter")
        async with worker.database.connect() as conn:
            event_id = await conn.scalar(
                select(outbox_table.c.event_id).order_by(outbox_table.c.position.desc())
            )
        await _publish_poison(amqp_ops, event_id="0190a3e0-0000-7000-8000-000000000001")
        await until(lambda: _lag_is(worker, 0, dead=2), "the poison message's dead letter")
        page, gauges = await page_view(worker, SUB)
        assert page["dead_letters"] == 2 and gauges == {
            "lag_events": 0,
            "lag_seconds": 0,
            "dead_letters": 2,
        }
        assert len(page["dead_letter_list"]) == 2
    code, out = await asyncio.to_thread(cli_run, "status", "--app", APP, "--json")
    assert code == EXIT_DEAD_LETTERS and json.loads(out)["dead_letters"] == 2
    code, out = await asyncio.to_thread(cli_run, "dead-letters", "list", "--app", APP, "--json")
    assert code == 0
    letters = json.loads(out)
    assert [d["event_id"] for d in letters] == [
        str(event_id),
        "0190a3e0-0000-7000-8000-000000000001",
    ]  # oldest first, the real ids (the poison one from its headers)
    code, out = await asyncio.to_thread(cli_run, "dead-letters", "list", "--app", APP)
    assert code == 0, out  # not a MarkupError (exit 1, "nothing found")
    assert "\x1b" not in out and "\x07" not in out
    code, out = await asyncio.to_thread(
        cli_run, "dead-letters", "show", str(letters[0]["id"]), "--app", APP
    )
    assert code == 0 and "[red on red]" in out and "\x1b" not in out

    # Replay through the interface delivers; purge removes; then exit 0.
    tickets.Notifier.broken = False
    async with ops_app.make_app() as worker:
        code, out = await asyncio.to_thread(
            cli_run, "dead-letters", "replay", str(letters[0]["id"]), "--app", APP
        )
        assert code == 0, out
        await until(lambda: _seen(HOSTILE), "the replayed ticket")
        assert await worker.dead_letters.purge([letters[1]["id"]]) == 1
        await until(lambda: _lag_is(worker, 0, dead=0), "no dead letters")
    code, out = await asyncio.to_thread(cli_run, "status", "--app", APP, "--max-lag", "0")
    assert code == 0, out


async def test_retries_pending_in_delay_queues_seen_by_an_operator(amqp_ops: str) -> None:
    async with ops_app.make_retrying_app() as worker:
        await worker.create_schema()
        await worker.engine.run(tickets.OpenTicket(title="boom-later"))

        async def waiting() -> bool:
            status = await worker.bus.status()
            rows = {s.name: s for s in status.subscriptions}
            return rows[ops_app.SLOW].retries_pending == 1 and rows[SUB].dead_letters == 1

        await until(waiting, "the retry in the delay queue and the dead letter")
    # A process that does not consume sees the retry in the delay queue of the one-minute
    # interval, and nothing as lag or dead for that subscription.
    retrying = "tests.amqp.ops_app:make_retrying_app"
    code, out = await asyncio.to_thread(cli_run, "status", "--app", retrying, "--json")
    rows = {s["name"]: s for s in json.loads(out)["subscriptions"]}
    assert code == EXIT_DEAD_LETTERS  # the NoRetry subscription's dead letter
    slow = rows[ops_app.SLOW]
    assert (slow["retries_pending"], slow["lag_events"], slow["dead_letters"]) == (1, 0, 0)


async def _lag_is(app: Application, lag: int, dead: int = 0) -> bool:
    current = await row(app)
    return current.lag_events == lag and current.dead_letters == dead


async def _seen(title: str) -> bool:
    return title in tickets.Notifier.seen


async def _publish_poison(exchange: str, *, event_id: str) -> None:
    """A message with the envelope's event id in its headers and a body that is not UTF-8."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=b"\xff\xfe not text",
                headers={"dddframe-event-id": event_id, "dddframe-name": "Ops:TicketOpened"},
            ),
            routing_key=f"{exchange}.{SUB}",
        )
