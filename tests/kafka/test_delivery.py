"""The Kafka bus in one process: order per key across partitions, direct messages with headers
and correlation ids, bad input, retry topics, dead letters and replay, push mode."""

from __future__ import annotations

import json
import uuid
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from dddframe import Application, Command, EventContext, Module
from dddframe.bus import IntervalRetry
from dddframe.bus.kafka import KafkaBus, KafkaDeadLetter
from dddframe.bus.kafka.records import encode_headers, to_record
from dddframe.domain.envelope import Envelope
from dddframe.testing import reset_database
from tests.kafka.inspect_topics import counts, read_all
from tests.kafka.kafka_app import Bump, Seen, Watcher, kafka_bus, tallies


def watchers(seen: Seen, **options: Any) -> Module:
    module = Module("watchers")
    module.bind(Seen, to=seen)
    module.controller(Watcher)
    module.listen("Tally:Bumped", "Watcher.on_bumped", **options)
    return module


async def test_ten_thousand_events_of_fifty_aggregates_keep_order_per_key(
    kafka_bootstrap: str, names: str, pg_url: str
) -> None:
    seen = Seen()
    await reset_database(pg_url)
    bus = kafka_bus(kafka_bootstrap, names)
    async with Application([tallies(), watchers(seen)], pg_url, bus=bus) as app:
        await app.create_schema()
        ids = [uuid.uuid4() for _ in range(50)]
        for tally in ids:
            await app.engine.run(Bump(tally_id=tally, times=200))
        await seen.wait_for(10_000)
        await app.drain()
    per = seen.per_tally()
    assert set(per) == {str(i) for i in ids}
    for versions in per.values():
        assert versions == list(range(1, 201))
    ends = await counts(kafka_bootstrap, names + "tally")
    assert len(ends) == 4 and sum(ends.values()) == 10_000
    assert all(n > 0 for n in ends.values()), ends  # keys spread over the four partitions


class Sell(Command):
    sku: str


class Store:
    received: list[tuple[dict[str, Any], EventContext]] = []

    async def post_sell_goods(self, goods: dict[str, Any], ctx: EventContext) -> None:
        self.received.append((goods, ctx))


async def test_direct_messages_carry_headers_correlation_and_trace(
    kafka_bootstrap: str, names: str, pg_url: str
) -> None:
    topic = names + "event-sell"
    shop = Module("shop")
    shop.event(topic)

    @shop.handles(Sell)
    async def sell(cmd: Sell, app: Application) -> None:
        bus = cast(KafkaBus, app.bus)
        await bus.publish(
            topic, {"sku": cmd.sku, "amount": 10}, key=cmd.sku, headers={"x-action": "buy"}
        )

    store = Module("store")
    Store.received = []
    store.controller(Store)
    store.listen(topic, "Store.post_sell_goods")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await reset_database(pg_url)
    async with Application([shop, store], pg_url, bus=kafka_bus(kafka_bootstrap, names)) as app:
        await app.create_schema()
        await app.engine.run(
            Sell(sku="A1"), headers={"correlation_id": "corr-42", "traceparent": traceparent}
        )
        outside = await cast(KafkaBus, app.bus).publish(topic, {"sku": "B2"})
        await app.drain()
    received = sorted(Store.received, key=lambda r: str(r[0]["sku"]))  # two partitions
    assert [g["sku"] for g, _ in received] == ["A1", "B2"]
    goods, ctx = received[0]
    assert goods == {"sku": "A1", "amount": 10}
    assert ctx.headers["x-action"] == "buy"
    assert ctx.envelope.correlation_id == "corr-42"
    assert ctx.headers["traceparent"] == traceparent
    assert ctx.envelope.aggregate_id == "A1"
    later = received[1][1]
    assert later.envelope.correlation_id == outside.correlation_id is not None
    records = await read_all(kafka_bootstrap, topic)  # the literal topic, key = the given key
    assert [r.key for r in records if r.key is not None] == [b"A1"]
    headers = dict(records[0].headers) if records[0].key else dict(records[1].headers)
    assert headers["correlation_id"] == b"corr-42" and headers["x-action"] == b"buy"


async def test_bad_input_retry_topic_dead_letters_and_replay(
    kafka_bootstrap: str, names: str, pg_url: str
) -> None:
    seen = Seen()
    flaky, broken, fine = (str(uuid.uuid4()) for _ in range(3))
    seen.fail[flaky] = 2
    seen.always_fail.add(broken)
    await reset_database(pg_url)
    bus = kafka_bus(kafka_bootstrap, names, retry=IntervalRetry(interval=0.05, limit=3))
    modules = [tallies(), watchers(seen, retry_mode="topic")]
    async with Application(modules, pg_url, bus=bus) as app:
        await app.create_schema()
        topic = names + "tally"
        good = Envelope.new("Tally:Bumped", "{}", aggregate_type="Tally", aggregate_id="x")
        _, _, good_headers = to_record(good)
        nope = Envelope.new("Tally:Nope", '{"n": 1}', aggregate_type="Tally", aggregate_id="y")
        _, _, nope_headers = to_record(nope)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"\xff not json", headers=good_headers)
            await producer.send_and_wait(topic, b'{"n": 1}', headers=encode_headers({"a": "b"}))
            await producer.send_and_wait(topic, b'{"n": 1}', headers=nope_headers)
            await producer.send_and_wait(topic, b'{"n": "many"}', headers=good_headers)
        finally:
            await producer.stop()
        for tally in (flaky, broken, fine):
            await app.engine.run(Bump(tally_id=uuid.UUID(tally)))
        await seen.wait_for(2)
        await app.drain()

        letters = cast(list[KafkaDeadLetter], await app.dead_letters.list())
        reasons = sorted(d.error or "" for d in letters)
        assert len(letters) == 5, reasons
        assert any("not JSON" in r for r in reasons)
        assert any("malformed envelope header" in r for r in reasons)
        assert any("'Tally:Nope'" in r for r in reasons)
        assert any("does not validate" in r for r in reasons)
        dead = [d for d in letters if d.ordering_key == f"Tally:{broken}"]
        assert len(dead) == 1 and "listener always fails" in (dead[0].error or "")
        assert dead[0].attempts == 4 and dead[0].topic == "fail-" + names + "watchers"
        assert f"original record {topic}[" in (dead[0].traceback or "")
        # the flaky one went through the retry topic twice and succeeded on attempt 3
        assert (flaky, 1, 3) in seen.events and (fine, 1, 1) in seen.events
        retried = await read_all(kafka_bootstrap, "retry-" + names + "watchers")
        assert len(retried) == 2 + 3  # flaky twice, broken three times

        # block_aggregate: the broken tally's next event is held behind its dead letter
        await app.engine.run(Bump(tally_id=uuid.UUID(broken)))
        await app.drain()
        held = await app.dead_letters.list(aggregate_id=broken, state=None)
        assert [d.state for d in held] == ["dead", "waiting"]  # waiting, not a dead letter
        assert "held behind dead letter" in (held[1].error or "")
        assert len(await app.dead_letters.list(aggregate_id=broken)) == 1
        assert broken not in seen.per_tally()

    # A new process knows what is held: it reads the dead-letter topic when partitions arrive.
    bus = kafka_bus(kafka_bootstrap, names, retry=IntervalRetry(interval=0.05, limit=3))
    async with Application(modules, pg_url, bus=bus) as app:
        await app.create_schema()
        await app.engine.run(Bump(tally_id=uuid.UUID(broken)))
        await app.drain()
        held = await app.dead_letters.list(aggregate_id=broken, state=None)
        assert [d.state for d in held] == ["dead", "waiting", "waiting"]
        assert broken not in seen.per_tally()

        seen.always_fail.clear()
        # the one dead letter is replayed; the two waiting behind it follow it, in order
        assert await app.dead_letters.replay(aggregate_id=broken) == 1
        await seen.wait_for(5)
        await app.drain()
        assert seen.per_tally()[broken] == [1, 2, 3]  # replayed together, in order
        assert await app.dead_letters.purge(everything=True) == 4
        assert await app.dead_letters.list() == []


async def test_push_mode_posts_records_and_retries_failures(
    kafka_bootstrap: str, names: str, pg_url: str
) -> None:
    import asyncio

    import uvicorn

    from tests.kafka.broker import free_port

    calls: list[tuple[dict[str, str], bytes]] = []

    async def endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        calls.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        status = 503 if len(calls) == 1 else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(endpoint, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        seen = Seen()
        await reset_database(pg_url)
        modules = [tallies(), watchers(seen, push_url=f"http://127.0.0.1:{port}/events")]
        async with Application(modules, pg_url, bus=kafka_bus(kafka_bootstrap, names)) as app:
            await app.create_schema()
            tally = await app.engine.run(Bump(), headers={"correlation_id": "push-1"})
            await app.drain()
    finally:
        server.should_exit = True
        await serving
    assert seen.events == []  # the listener ran over HTTP, not in-process
    assert len(calls) == 2
    headers, body = calls[1]
    assert json.loads(body) == {"tally_id": str(tally), "n": 1}
    assert headers["dddframe-attempt"] == "2"
    assert headers["dddframe-name"] == "Tally:Bumped"
    assert headers["correlation_id"] == "push-1"


async def test_relay_spans_join_the_command_trace(
    kafka_bootstrap: str, names: str, pg_url: str, spans: InMemorySpanExporter
) -> None:
    seen = Seen()
    await reset_database(pg_url)
    bus = kafka_bus(kafka_bootstrap, names)
    async with Application([tallies(), watchers(seen)], pg_url, bus=bus) as app:
        await app.create_schema()
        await app.engine.run(Bump(tally_id=uuid.uuid4(), times=3))
        await seen.wait_for(3)
        await app.drain()
    finished = spans.get_finished_spans()
    (command,) = [s for s in finished if s.name == "dddframe.command Bump"]
    relays = [s for s in finished if s.name == "dddframe.relay Tally:Bumped"]
    assert len(relays) == 3 and all(s.kind == SpanKind.PRODUCER for s in relays)
    for relay in relays:  # each record handed to the producer is a child of its command
        assert relay.parent is not None and relay.parent.span_id == command.context.span_id
        attributes = dict(relay.attributes or {})
        assert attributes["messaging.destination.name"] == names + "tally"
