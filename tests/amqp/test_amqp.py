"""The AMQP bus on real RabbitMQ: confirm before mark, routing patterns, order with four
consumers, and the dead-letter CLI. (Connections closed by the server are the shipped
``ConnectionDrop`` fault scenario, tests/contract/test_faults_amqp.py.)"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select

from dddframe import Application, Envelope, Module
from dddframe.bus.amqp import AmqpBus
from dddframe.bus.amqp.relay import RELAY_POSITION
from dddframe.outbox.tables import positions_table
from dddframe.testing import reset_database
from tests.cli import dead_letters
from tests.contract.model import CreateCounter, Increment, Probe, contract_modules
from tests.services import AMQP_URL, reachable, require

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def amqp() -> str:
    require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
    return AMQP_URL


def _bus(exchange: str, url: str = AMQP_URL, **options: object) -> AmqpBus:
    # Exchange and queues private to the test: other suites may share the broker.
    return AmqpBus(
        url,
        exchange=exchange,
        queue_prefix=exchange + ".",
        poll_interval=0.05,
        **options,  # type: ignore[arg-type]
    )


async def test_relay_killed_before_confirms_resends(amqp: str, postgres_db: str) -> None:
    await reset_database(postgres_db)
    exchange = f"t-{uuid.uuid4().hex[:8]}"
    probe = Probe()
    # The consumer side declares the queue and empties it, then stops.
    async with Application(
        contract_modules(probe), postgres_db, bus=_bus(exchange, relay=False, purge_on_startup=True)
    ) as app:
        await app.create_schema()
        counter = await app.engine.run(CreateCounter())
        await app.engine.run(Increment(counter_id=counter, times=3))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.amqp.relay_child",
        postgres_db,
        amqp,
        exchange,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == -signal.SIGKILL, err.decode()
    async with Application(contract_modules(probe), postgres_db, bus=_bus(exchange)) as app:
        async with app.database.connect() as conn:
            saved = await conn.scalar(
                select(positions_table.c.position).where(
                    positions_table.c.subscription == RELAY_POSITION
                )
            )
        assert not saved  # nothing counted as sent without its confirm
        await app.create_schema()
        await probe.wait_for(3)
        await app.drain()
    versions = [v for _a, v, *_ in probe.seen]
    assert sorted(set(versions)) == [2, 3, 4]  # every event, at least once
    assert versions[:3] == [2, 3, 4] or len(versions) > 3  # in order (duplicates allowed)


class PatternController:
    seen: list[str] = []

    async def on_any(self, event: Envelope) -> None:
        PatternController.seen.append(event.name)


async def test_routing_key_patterns(amqp: str, postgres_db: str) -> None:
    await reset_database(postgres_db)
    PatternController.seen = []
    m = Module("patterns")
    m.event("shop.notice.created", "shop.notice.closed", "shop.audit.logged")
    m.controller(PatternController)
    m.listen("shop.notice.created", "PatternController.on_any", routing_keys=["shop.notice.*"])
    m.listen("shop.notice.closed", "PatternController.on_any", routing_keys=["shop.notice.*"])
    m.listen("shop.audit.logged", "PatternController.on_any", group="audit")
    exchange = f"t-{uuid.uuid4().hex[:8]}"
    async with Application([m], postgres_db, bus=_bus(exchange, purge_on_startup=True)) as app:
        await app.create_schema()
        for name in ("shop.notice.created", "shop.audit.logged", "shop.notice.closed"):
            await app.publish(name, {}, key="k")
        async with asyncio.timeout(20):
            while len(PatternController.seen) < 3:
                await asyncio.sleep(0.05)
        await app.drain()
    assert sorted(PatternController.seen) == sorted(
        ["shop.notice.created", "shop.notice.closed", "shop.audit.logged"]
    )


async def test_order_per_aggregate_with_four_consumers(amqp: str, postgres_db: str) -> None:
    await reset_database(postgres_db)
    exchange = f"t-{uuid.uuid4().hex[:8]}"
    probe = Probe()
    apps = [
        Application(
            contract_modules(probe),
            postgres_db,
            bus=_bus(exchange, relay=i == 0, purge_on_startup=i == 0),
        )
        for i in range(4)
    ]
    for app in apps:
        await app.start()
        await app.create_schema()
    try:
        ids = [await apps[0].engine.run(CreateCounter()) for _ in range(8)]
        await asyncio.gather(*(apps[0].engine.run(Increment(counter_id=i, times=15)) for i in ids))
        await probe.wait_for(8 * 15)
        for app in apps:
            await app.drain()
    finally:
        for app in apps:
            await app.stop()
    for versions in probe.by_aggregate().values():
        assert versions == list(range(2, 17))


def test_bus_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from dddframe.errors import ConfigurationError

    monkeypatch.delenv("DDDFRAME_AMQP_URL", raising=False)
    with pytest.raises(ConfigurationError, match="DDDFRAME_AMQP_URL"):
        Application([], "sqlite+aiosqlite://", bus="amqp")
    with pytest.raises(ConfigurationError, match="must start with amqp://"):
        AmqpBus("http://x")
    assert aio_pika  # the client is installed with the dev extra


async def test_relay_spans_join_the_command_trace(
    amqp: str, postgres_db: str, spans: InMemorySpanExporter
) -> None:
    await reset_database(postgres_db)
    probe = Probe()
    exchange = f"t-{uuid.uuid4().hex[:8]}"
    bus = _bus(exchange, purge_on_startup=True)
    async with Application(contract_modules(probe), postgres_db, bus=bus) as app:
        await app.create_schema()
        counter = await app.engine.run(CreateCounter())
        await app.engine.run(Increment(counter_id=counter, times=2))
        await probe.wait_for(2)
        await app.drain()
    finished = spans.get_finished_spans()
    (command,) = [s for s in finished if s.name == "dddframe.command Increment"]
    relays = [s for s in finished if s.name.startswith("dddframe.relay ")]
    assert len(relays) == 2 and all(s.kind == SpanKind.PRODUCER for s in relays)
    for relay in relays:  # each publish is a child of the command that recorded the event
        assert relay.parent is not None and relay.parent.span_id == command.context.span_id
        assert relay.attributes is not None and relay.attributes["dddframe.relay"] == "relay.amqp"


async def test_dead_letters_cli_lists_and_replays_the_dead_letter_queue(
    amqp: str, postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.amqp import cli_app

    await reset_database(postgres_db)
    monkeypatch.setenv("AMQP_CLI_DB_URL", postgres_db)
    monkeypatch.setenv("AMQP_CLI_EXCHANGE", f"t-{uuid.uuid4().hex[:8]}")
    probe = cli_app.PROBE
    probe.seen.clear()
    async with cli_app.make_app() as app:
        await app.create_schema()
        await app.bus.dead_letters.purge(everything=True)  # type: ignore[attr-defined]
        counter = await app.engine.run(CreateCounter())
        probe.always_fail.add(str(counter))
        await app.engine.run(Increment(counter_id=counter))
        async with asyncio.timeout(20):
            while not await app.dead_letters.count():
                await asyncio.sleep(0.1)

    spec = "tests.amqp.cli_app:make_app"
    code, out = await dead_letters(spec, "amqp", "list", "--json")
    assert code == 0, out
    (letter,) = json.loads(out)
    assert letter["aggregate"].endswith(str(counter)) and letter["aggregate_version"] == 2
    assert "listener always fails" in letter["error"]
    code, out = await dead_letters(spec, "amqp", "show", str(letter["id"]))
    assert code == 0 and "RuntimeError: listener always fails" in out

    probe.always_fail.clear()  # the fix is deployed
    code, out = await dead_letters(spec, "amqp", "replay", "--all", "--json")
    assert (code, json.loads(out)) == (0, {"replayed": 1}), out
    async with cli_app.make_app() as app:
        await app.create_schema()
        async with asyncio.timeout(20):
            while (str(counter), 2) not in {(a, v) for a, v, *_ in probe.seen}:
                await asyncio.sleep(0.1)
    code, out = await dead_letters(spec, "amqp", "list", "--json")
    assert code == 0 and json.loads(out) == []  # an empty list is an answer
