"""Two clusters (two broker processes): events and direct messages routed by name, consumers
per cluster; and a broker that is down at start-up."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

from dddframe import Application, EventContext, Module
from dddframe.bus import IntervalRetry
from dddframe.bus.kafka import KafkaBus, KafkaCluster
from dddframe.testing import reset_database
from tests.kafka import broker
from tests.kafka.inspect_topics import read_all, topics
from tests.kafka.kafka_app import Bump, Seen, Watcher, tallies


class Inbox:
    got: list[tuple[str, dict[str, Any], str]] = []

    async def on_message(self, payload: dict[str, Any], ctx: EventContext) -> None:
        self.got.append((ctx.envelope.name, payload, ctx.headers.get("x-region", "")))

    async def on_direct(self, payload: dict[str, Any], ctx: EventContext) -> None:
        await self.on_message(payload, ctx)


async def test_two_clusters_routed_by_name(kafka_bootstrap: str, names: str, pg_url: str) -> None:
    eu = broker.bootstrap("eu")
    far, near = names + "Far:Away", names + "near-msg"
    seen = Seen()
    Inbox.got = []
    regions = Module("regions")
    regions.event(far)
    regions.event(near)
    regions.bind(Seen, to=seen)
    regions.controller(Watcher)
    regions.controller(Inbox)
    regions.listen("Tally:Bumped", "Watcher.on_bumped")
    regions.listen(far, "Inbox.on_message")
    regions.listen(near, "Inbox.on_direct", cluster="eu")  # options are per listener
    off = broker.idempotence()
    bus = KafkaBus(
        clusters={
            "main": KafkaCluster(bootstrap=kafka_bootstrap, enable_idempotence=off),
            "eu": KafkaCluster(bootstrap=eu, enable_idempotence=off),
        },
        routes={far: "eu"},
        topic_prefix=names,
        group_prefix=names,
        retry=IntervalRetry(interval=0.05, limit=3),
    )
    await reset_database(pg_url)
    async with Application([tallies(), regions], pg_url, bus=bus) as app:
        await app.create_schema()
        tally = await app.engine.run(Bump())
        await bus.publish(far, {"to": "eu by route"}, headers={"x-region": "eu"})
        await bus.publish(near, {"to": "eu by publish"}, cluster="eu", headers={"x-region": "eu"})
        await app.drain()
    assert seen.events == [(str(tally), 1, 1)]
    assert sorted(Inbox.got, key=lambda g: g[0]) == [
        (far, {"to": "eu by route"}, "eu"),
        (near, {"to": "eu by publish"}, "eu"),
    ]
    far_topic = bus.naming.topic_for(far)
    on_main, on_eu = await topics(kafka_bootstrap), await topics(eu)
    assert names + "tally" in on_main and names + "tally" not in on_eu
    assert far_topic in on_eu and far_topic not in on_main
    assert len(await read_all(eu, near)) == 1
    assert near not in on_main


async def test_broker_down_at_start_then_up_nothing_lost(names: str, pg_url: str) -> None:
    if broker.REAL_CLUSTER:
        return  # cannot stop a real cluster from a test; the tansu run covers this
    port = broker.free_port()
    bootstrap = f"127.0.0.1:{port}"
    seen = Seen()
    watchers = Module("watchers")
    watchers.bind(Seen, to=seen)
    watchers.controller(Watcher)
    watchers.listen("Tally:Bumped", "Watcher.on_bumped")
    bus = KafkaBus(
        clusters={"default": KafkaCluster(bootstrap=bootstrap, enable_idempotence=False)},
        topic_prefix=names,
        group_prefix=names,
    )
    await reset_database(pg_url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        async with Application([tallies(), watchers], pg_url, bus=bus) as app:
            await app.create_schema()  # the broker is not there: relay and consumer back off
            ids = [await app.engine.run(Bump(times=3)) for _ in range(3)]
            await asyncio.sleep(1.0)
            assert seen.events == []
            proc, _ = broker.start_tansu(port)
            await seen.wait_for(9)
            await app.drain()
    finally:
        if proc is not None:
            broker.stop(proc)
    assert seen.per_tally() == {str(i): [1, 2, 3] for i in ids}
