"""Transactional outbox scenarios: what is delivered is exactly what committed."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from dddframe.domain.envelope import Envelope
from dddframe.outbox.records import envelope_to_row
from dddframe.outbox.tables import outbox_table
from dddframe.testing.contract.catalog import ContractSuite, scenario
from dddframe.testing.contract.harness import TransportHarness, outbox_rows
from dddframe.testing.contract.model import (
    INCREMENTED,
    ContractRollback,
    Hold,
    Increment,
    IncrementAndFail,
    Incremented,
    Probe,
    contract_modules,
    held_id,
    new_counters,
)
from dddframe.testing.contract.pubsub import FAST

__all__ = ["OutboxContract"]


class OutboxContract(ContractSuite):
    """Nothing is published before its transaction commits, nothing that rolled back ever is."""

    @scenario("Nothing is delivered before the transaction commits", origin="NServiceBus outbox")
    async def test_nothing_delivered_before_commit(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            held = asyncio.create_task(app.engine.run(Hold(gate="g")))
            await probe.wait_entered("g")
            await asyncio.sleep(0.3)  # a window for a wrong early delivery, not a timing check
            assert probe.seen == []
            probe.gates["g"].set()
            await held
            await probe.wait_for(1)
            await app.drain()
        assert [s.aggregate_id for s in probe.seen] == [str(held_id("g"))]

    @scenario(
        "Nothing is stored or delivered when the transaction rolls back",
        origin="NServiceBus / MassTransit outbox",
    )
    async def test_nothing_stored_on_rollback(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            (cid,) = await new_counters(app)
            with pytest.raises(ContractRollback):
                await app.engine.run(IncrementAndFail(counter_id=cid, times=3))
            assert await outbox_rows(app, aggregate_id=cid) == 0
            await app.engine.run(Increment(counter_id=cid))
            await probe.wait_for(1)
            await app.drain()
            assert await outbox_rows(app, aggregate_id=cid) == 1
        assert probe.versions(cid) == [2]
        assert [s.value for s in probe.seen] == [1]

    @scenario(
        "Several events of one unit of work are all delivered, in order, with one correlation",
        origin="MassTransit outbox",
    )
    async def test_several_events_in_one_unit_of_work(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            (cid,) = await new_counters(app)
            await app.engine.run(Increment(counter_id=cid, times=4))
            await probe.wait_for(4)
            await app.drain()
        assert probe.versions(cid) == [2, 3, 4, 5]
        assert [s.value for s in probe.seen[:4]] == [1, 2, 3, 4]
        assert len({c.envelope.correlation_id for c in probe.contexts}) == 1
        assert len({s.event_id for s in probe.seen}) == 4

    @scenario("A duplicate event id is rejected by the outbox", origin="NServiceBus outbox")
    async def test_duplicate_event_id_rejected(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            (cid,) = await new_counters(app)
            event = Incremented(counter_id=cid, value=7, by=7)
            env = Envelope.new(
                INCREMENTED,
                event.model_dump_json(),
                aggregate_type="ContractCounter",
                aggregate_id=str(cid),
                aggregate_version=2,
            )
            async with app.database.engine.begin() as conn:
                await conn.execute(insert(outbox_table), [envelope_to_row(env)])
            app.bus.notify([env])
            with pytest.raises(IntegrityError):
                async with app.database.engine.begin() as conn:
                    await conn.execute(insert(outbox_table), [envelope_to_row(env)])
            await probe.wait_for(1)
            await app.drain()
            assert await outbox_rows(app, aggregate_id=cid) == 1
        assert {s.event_id for s in probe.seen} == {str(env.event_id)}
        assert probe.seen[0].value == 7
