"""Poison on the AMQP bus (RabbitMQ), relayed from the outbox like every event: undecodable
rows, payloads that are not JSON or do not validate, names a pattern-bound subscription is not
bound to. Each is dead-lettered at once with the reason; under ``block_aggregate`` the
aggregate's later messages wait behind it, under ``continue`` they are delivered (issue 11,
defects 3, 4)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from dddframe import Application
from dddframe.bus.amqp import AmqpBus
from dddframe.testing import reset_database
from tests.core.poison_rows import (
    OPENED,
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
from tests.services import AMQP_URL, reachable, require


async def _check(
    postgres_db: str,
    rows: list[dict[str, Any]],
    lone: tuple[str, str],
    refused: Mapping[str, str] | None = None,
    **bus_options: Any,
) -> None:
    """Insert ``rows`` and check every subscription's calls and dead letters; ``lone``: the
    aggregate of one bad row only ``both`` (bound to ``#``) gets, and its reason; ``refused``:
    aggregate -> reason of the :func:`refused_rows` among the rows."""
    require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
    await reset_database(postgres_db)
    Seen.reset()
    exchange = f"t-{uuid.uuid4().hex[:8]}"
    bus = AmqpBus(
        AMQP_URL, exchange=exchange, queue_prefix=exchange + ".", poll_interval=0.05, **bus_options
    )
    refused = refused or {}
    # `both` takes every name on the exchange, so it also gets one it is not bound to.
    async with Application(poison_modules(routing_keys=["#"]), postgres_db, bus=bus) as app:
        await app.create_schema()
        await insert_rows(app, rows)
        for sub in ("blocking", "flowing", "both"):
            await Seen.wait_for(sub, total(sub, refused))
        await app.drain()
        for sub in ("blocking", "flowing", "both"):
            assert per_aggregate(Seen.calls[sub]) == expected_calls(refused)[sub], sub
            name = f"poison.Sink.{sub}"
            dead = await app.dead_letters.list(subscription=name)
            want = expected_dead(sub, refused)
            if sub == "both":
                want[lone[0]] = lone[1]
            got = {d.ordering_key.removeprefix("Box:"): d.attempts for d in dead}
            assert got == dict.fromkeys(want, 1), sub
            for d in dead:
                assert want[d.ordering_key.removeprefix("Box:")] in (d.error or ""), d.error
            waiting = await app.dead_letters.list(subscription=name, state="waiting")
            held = sorted(w.ordering_key.removeprefix("Box:") for w in waiting)
            later = sorted(a for a in want if a != lone[0])
            assert held == (later if sub != "flowing" else []), sub
        await app.dead_letters.purge(everything=True)


async def test_poison_reaches_the_dead_letter_queue_at_once(postgres_db: str) -> None:
    rows = [_row("unknown-name", 1, "{}", name="Poison:Nope"), *hostile_rows()]
    await _check(postgres_db, rows, ("unknown-name", "is bound to"))


def _long_header_name(row: dict[str, Any]) -> None:
    row["headers"] = json.dumps({"k" * 300: "v", "x-kept": "yes"})


def _big_headers(row: dict[str, Any]) -> None:
    row["headers"] = json.dumps({"x-big": "h" * 150_000})  # over RabbitMQ's 128 KiB frame


def _oversized(row: dict[str, Any]) -> None:
    row["payload"] = json.dumps({"n": 1, "pad": "x" * 300_000})


AMQP_REFUSED = {  # aggregate -> (how its first row is spoiled, the reason of its dead letter)
    "long-header": (_long_header_name, "longer than an AMQP header name may be"),
    "too-big": (_oversized, "max_message_size"),
    "big-headers": (_big_headers, "more than an AMQP frame carries"),
}
LONG_NAME = OPENED + "." + "é" * 200  # 200 characters fit the column, 400 bytes no routing key


async def test_rows_the_broker_refuses_are_dead_lettered_and_the_rest_flow(
    postgres_db: str,
) -> None:
    """A stored row with a header name or a size AMQP cannot carry does not stop the relay:
    every queue bound to its name dead-letters it with the reason, its aggregate's later
    messages wait behind it under ``block_aggregate``. A name longer than a routing key goes
    straight to the queues whose bindings match it (here ``both``'s ``#``)."""
    rows = refused_rows({a: spoil for a, (spoil, _) in AMQP_REFUSED.items()})
    rows = [_row("long-name", 1, "{}", name=LONG_NAME), *rows, *hostile_rows()]
    reasons = {a: reason for a, (_, reason) in AMQP_REFUSED.items()}
    await _check(postgres_db, rows, ("long-name", "routing key"), reasons, max_message_size=200_000)
