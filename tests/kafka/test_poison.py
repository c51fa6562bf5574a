"""Poison on the Kafka bus, relayed from the outbox like every event: undecodable rows, payloads
that are not JSON or do not validate, unknown names. Each is dead-lettered at once with the
reason; under ``block_aggregate`` the aggregate's later records wait behind it in the
dead-letter topic, under ``continue`` they are delivered (issue 11, defects 3, 4)."""

from __future__ import annotations

from dddframe import Application
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
