"""Poison on the Kafka bus, relayed from the outbox like every event: undecodable rows, payloads
that are not JSON or do not validate, unknown names. Each is dead-lettered at once with the
reason; under ``block_aggregate`` the aggregate's later records wait behind it in the
dead-letter topic, under ``continue`` they are delivered (issue 11, defects 3, 4)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dddframe import Application
from dddframe.bus.kafka.topics import ROUTE_CLUSTER, ROUTE_TOPIC
from dddframe.testing import reset_database
from tests.core.poison_rows import (
    Seen,
    _row,
    expected_calls,
    expected_dead,
    hostile_rows,
    insert_rows,
    per_aggregate,
    poison_modules,
    refused_rows,
    total,
)
from tests.kafka.kafka_app import kafka_bus


async def test_poison_reaches_the_dead_letter_topic_at_once(
    kafka_bootstrap: str, names: str, pg_url: str
) -> None:
    await reset_database(pg_url)
    Seen.reset()
    async with Application(poison_modules(), pg_url, bus=kafka_bus(kafka_bootstrap, names)) as app:
        await app.create_schema()
        rows = hostile_rows()
        rows.insert(0, _row("unknown-name", 1, "{}", name="Poison:Nope"))
        await insert_rows(app, rows)
        for sub in ("blocking", "flowing", "both"):
            await Seen.wait_for(sub, total(sub))
        await app.drain()
        letters = await app.dead_letters.list(limit=1000, state=None)
        assert all((d.state == "waiting") == ("held behind" in (d.error or "")) for d in letters)
    for sub in ("blocking", "flowing", "both"):
        assert per_aggregate(Seen.calls[sub]) == expected_calls()[sub], sub
        mine = [d for d in letters if d.subscription == f"poison.Sink.{sub}"]
        held = sorted(d.ordering_key for d in mine if "held behind" in (d.error or ""))
        poison = {d.ordering_key: d for d in mine if "held behind" not in (d.error or "")}
        want = {f"Box:{a}": reason for a, reason in expected_dead(sub).items()}
        assert {k: d.attempts for k, d in poison.items()} == dict.fromkeys(want, 1), sub
        for key, d in poison.items():
            assert want[key] in (d.error or ""), (sub, d.error)
        assert held == (sorted(want) if sub != "flowing" else []), sub
    unknown = [d for d in letters if d.subscription.endswith(".*")]
    assert len(unknown) == 1 and "'Poison:Nope'" in (unknown[0].error or "")


def _header(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def spoil(row: dict[str, Any]) -> None:
        row["headers"] = json.dumps({**json.loads(row["headers"] or "{}"), key: value})

    return spoil


def _oversized(row: dict[str, Any]) -> None:
    row["payload"] = json.dumps({"n": 1, "pad": "x" * 1_200_000})


KAFKA_REFUSED = {  # aggregate -> (how its first row is spoiled, the reason of its dead letter)
    "dot-topic": (_header(ROUTE_TOPIC, ".."), "is not a valid Kafka topic"),
    "long-topic": (_header(ROUTE_TOPIC, "t" * 300), "longer than 249"),
    "bad-chars": (_header(ROUTE_TOPIC, "a topic/with\x1b[31m"), "is not a valid Kafka topic"),
    "no-cluster": (_header(ROUTE_CLUSTER, "nowhere"), "names cluster 'nowhere'"),
    "too-big": (_oversized, "max_request_size"),
    "big-headers": (_header("x-big", "h" * 1_200_000), "max_request_size"),
}


async def test_rows_the_broker_refuses_are_dead_lettered_and_the_rest_flow(
    kafka_bootstrap: str, names: str, pg_url: str
) -> None:
    """A stored row whose topic Kafka rejects, that names a cluster the application does not
    have, or that is larger than a record may be, does not stall the relay: it reaches its
    listeners' topic as poison, each subscription dead-letters it with the reason, its
    aggregate's later events wait behind it under ``block_aggregate``, all else flows."""
    await reset_database(pg_url)
    Seen.reset()
    refused = list(KAFKA_REFUSED)
    reasons = {a: reason for a, (_, reason) in KAFKA_REFUSED.items()}
    async with Application(poison_modules(), pg_url, bus=kafka_bus(kafka_bootstrap, names)) as app:
        await app.create_schema()
        rows = refused_rows({a: spoil for a, (spoil, _) in KAFKA_REFUSED.items()})
        await insert_rows(app, [*rows, *hostile_rows()])
        for sub in ("blocking", "flowing", "both"):
            await Seen.wait_for(sub, total(sub, refused))
        await app.drain()
        letters = await app.dead_letters.list(limit=1000, state=None)
    for sub in ("blocking", "flowing", "both"):
        assert per_aggregate(Seen.calls[sub]) == expected_calls(refused)[sub], sub
        mine = [d for d in letters if d.subscription == f"poison.Sink.{sub}"]
        dead = {d.ordering_key.removeprefix("Box:"): d for d in mine if d.state == "dead"}
        waiting = sorted(d.ordering_key.removeprefix("Box:") for d in mine if d.state != "dead")
        want = expected_dead(sub, reasons)
        assert {a: d.attempts for a, d in dead.items()} == dict.fromkeys(want, 1), sub
        for aggregate, d in dead.items():
            assert want[aggregate] in (d.error or ""), (sub, d.error)
        assert waiting == (sorted(want) if sub != "flowing" else []), sub
