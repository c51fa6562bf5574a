"""The delivery contract (DESIGN.md) that every transport passes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from dddframe.bus import IntervalRetry, LimitRetry
from tests.contract.harness import running
from tests.contract.model import CreateCounter, Increment, Probe, contract_modules

FAST = IntervalRetry(interval=0.05, limit=3)


async def _counter(app: Any) -> uuid.UUID:
    result: uuid.UUID = await app.engine.run(CreateCounter())
    return result


async def test_publish_and_deliver_with_envelope_and_headers(harness: Any) -> None:
    probe = Probe()
    async with running(harness, contract_modules(probe), FAST) as app:
        cid = await _counter(app)
        await app.engine.run(Increment(counter_id=cid, by=5), headers={"x-tenant": "acme"})
        await probe.wait_for(1)
        await app.drain()
    assert probe.seen == [(str(cid), 2, 5, 1)]
    ctx = probe.contexts[0]
    assert ctx.envelope.name == "Contract:Incremented"
    assert ctx.envelope.aggregate_type == "ContractCounter"
    assert ctx.headers["x-tenant"] == "acme"
    assert ctx.envelope.correlation_id


async def test_order_is_kept_per_aggregate(harness: Any) -> None:
    probe = Probe()
    async with running(harness, contract_modules(probe), FAST) as app:
        ids = [await _counter(app) for _ in range(5)]

        async def bump(cid: uuid.UUID) -> None:
            for _ in range(10):
                await app.engine.run(Increment(counter_id=cid, times=2))

        await asyncio.gather(*(bump(c) for c in ids))
        await probe.wait_for(100)
        await app.drain()
    per = probe.by_aggregate()
    assert set(per) == {str(c) for c in ids}
    for versions in per.values():
        assert versions == list(range(2, 22)), versions


async def test_failing_listener_is_retried_then_succeeds(harness: Any) -> None:
    probe = Probe()
    async with running(harness, contract_modules(probe), FAST) as app:
        cid = await _counter(app)
        probe.fail_times[str(cid)] = 2
        await app.engine.run(Increment(counter_id=cid))
        await probe.wait_for(1)
        await app.drain()
        assert await harness.dead_letters(app) == []
    assert probe.attempts[str(cid)] == 3
    assert probe.seen[0][3] == 3  # ctx.attempt of the successful call


async def test_exhausted_retries_dead_letter_while_others_flow(harness: Any) -> None:
    probe = Probe()
    async with running(harness, contract_modules(probe), LimitRetry(limit=2, delay=0.02)) as app:
        bad, good = await _counter(app), await _counter(app)
        probe.always_fail.add(str(bad))
        await app.engine.run(Increment(counter_id=bad))
        for _ in range(5):
            await app.engine.run(Increment(counter_id=good))
        await probe.wait_for(5)
        await app.drain()
        letters = await harness.dead_letters(app)
        assert [d.name for d in letters] == ["Contract:Incremented"]
        assert "listener always fails" in letters[0].reason
        assert probe.attempts[str(bad)] == 3  # first try + 2 retries

        # Fixed: replay delivers it.
        probe.always_fail.clear()
        await harness.replay(app, letters)
        await probe.wait_for(6)
        await app.drain()
        assert await harness.dead_letters(app) == []
    assert [v for a, v, *_ in probe.seen if a == str(good)] == [2, 3, 4, 5, 6]
    assert [v for a, v, *_ in probe.seen if a == str(bad)] == [2]


async def test_committed_events_are_delivered_after_restart(harness: Any) -> None:
    probe = Probe()
    async with running(harness, contract_modules(probe), FAST, consume=False) as app:
        cid = await _counter(app)
        await app.engine.run(Increment(counter_id=cid, times=3))
    assert probe.seen == []
    async with running(harness, contract_modules(probe), FAST, reset=False) as app:
        await probe.wait_for(3)
        await app.drain()
    assert [v for _a, v, *_ in probe.seen] == [2, 3, 4]


async def test_bad_payload_goes_to_dead_letters_with_reason(harness: Any) -> None:
    probe = Probe()
    async with running(harness, contract_modules(probe), FAST) as app:
        event_id = await harness.inject_raw(app, "Contract:Incremented", '{"value": "many"}')
        cid = await _counter(app)
        await app.engine.run(Increment(counter_id=cid))
        await probe.wait_for(1)
        await app.drain()
        letters = await harness.dead_letters(app)
    assert [d.event_id for d in letters] == [event_id]
    assert "does not validate" in letters[0].reason
    assert probe.seen[0][0] == str(cid)
