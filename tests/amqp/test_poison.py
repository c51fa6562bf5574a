"""Poison on the AMQP bus (RabbitMQ), relayed from the outbox like every event: undecodable
rows, payloads that are not JSON or do not validate, names a pattern-bound subscription is not
bound to. Each is dead-lettered at once with the reason; under ``block_aggregate`` the
aggregate's later messages wait behind it, under ``continue`` they are delivered (issue 11,
defects 3, 4)."""

from __future__ import annotations

import uuid

from dddframe import Application
from dddframe.bus.amqp import AmqpBus
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
    total,
)
from tests.services import AMQP_URL, reachable, require


async def test_poison_reaches_the_dead_letter_queue_at_once(postgres_db: str) -> None:
    require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
    await reset_database(postgres_db)
    Seen.reset()
    exchange = f"t-{uuid.uuid4().hex[:8]}"
    bus = AmqpBus(AMQP_URL, exchange=exchange, queue_prefix=exchange + ".", poll_interval=0.05)
    # `both` takes every name on the exchange, so it also gets one it is not bound to.
    modules = poison_modules(routing_keys=["#"])
    async with Application(modules, postgres_db, bus=bus) as app:
        await app.create_schema()
        rows = hostile_rows()
        rows.insert(0, _row("unknown-name", 1, "{}", name="Poison:Nope"))
        await insert_rows(app, rows)
        for sub in ("blocking", "flowing", "both"):
            await Seen.wait_for(sub, total(sub))
        await app.drain()
        for sub in ("blocking", "flowing", "both"):
            assert per_aggregate(Seen.calls[sub]) == expected_calls()[sub], sub
            name = f"poison.Sink.{sub}"
            dead = await app.dead_letters.list(subscription=name)
            want = expected_dead(sub)
            if sub == "both":
                want["unknown-name"] = "is bound to"
            got = {d.ordering_key.removeprefix("Box:"): d.attempts for d in dead}
            assert got == dict.fromkeys(want, 1), sub
            for d in dead:
                assert want[d.ordering_key.removeprefix("Box:")] in (d.error or ""), d.error
            waiting = await app.dead_letters.list(subscription=name, state="waiting")
            held = sorted(w.ordering_key.removeprefix("Box:") for w in waiting)
            later = sorted(a for a in want if a != "unknown-name")
            assert held == (later if sub != "flowing" else []), sub
        await app.dead_letters.purge(everything=True)
