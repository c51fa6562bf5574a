"""Commit order scenarios: transactions that commit out of order, or roll back, lose nothing."""

from __future__ import annotations

import asyncio

import pytest

from dddframe.app import Application
from dddframe.testing.contract.catalog import ContractSuite, scenario
from dddframe.testing.contract.harness import TransportHarness
from dddframe.testing.contract.model import (
    ContractRollback,
    Hold,
    Increment,
    Probe,
    contract_modules,
    held_id,
    new_counters,
)
from dddframe.testing.contract.pubsub import FAST

__all__ = ["OrderingContract"]


def _concurrent_writers(app: Application) -> None:
    if app.database.engine.dialect.name == "sqlite":
        pytest.skip("SQLite serializes writers: transactions cannot commit out of order")


class OrderingContract(ContractSuite):
    """Readers follow commits, not insert order: a late commit is never skipped."""

    @scenario(
        "Out-of-order commits with rollbacks: every committed event delivered, no rolled-back one",
        origin="watermill-sql TestNotMissingMessages",
    )
    async def test_out_of_order_commits_with_rollbacks(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            _concurrent_writers(app)
            (cid,) = await new_counters(app)
            gates = ["a", "b", "c", "d"]
            tasks = {}
            for gate in gates:  # rows inserted in this order, each transaction left open
                tasks[gate] = asyncio.create_task(app.engine.run(Hold(gate=gate, fail=gate == "b")))
                await probe.wait_entered(gate)
            await app.engine.run(Increment(counter_id=cid))  # inserted last, commits first
            await probe.wait_for(1)
            for gate in ("c", "b", "d", "a"):  # then the held ones, out of order
                probe.gates[gate].set()
                if gate == "b":
                    with pytest.raises(ContractRollback):
                        await tasks[gate]
                else:
                    await tasks[gate]
            await probe.wait_for(4)
            await app.drain()
        delivered = {s.aggregate_id for s in probe.seen}
        assert delivered == {str(cid), *(str(held_id(g)) for g in "acd")}
        assert str(held_id("b")) not in delivered

    @scenario(
        "Concurrent writers on one aggregate: every version delivered once, in order",
        origin="Watermill TestPublishSubscribeInOrder",
    )
    async def test_concurrent_writers_on_one_aggregate(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            (cid,) = await new_counters(app)

            async def writer() -> None:
                for _ in range(4):
                    await app.engine.run(Increment(counter_id=cid))

            await asyncio.gather(writer(), writer(), writer())
            await probe.wait_for(12)
            await app.drain()
        assert probe.versions(cid) == list(range(2, 14))
        assert sorted(s.value for s in probe.seen[:12]) == list(range(1, 13))
