"""Publish/subscribe scenarios every transport passes (after Watermill's universal Pub/Sub tests).

Delivery is at least once: a scenario counts distinct event ids and checks order per aggregate
by first delivery, so a transport may redeliver after a restart or a dropped connection.
"""

from __future__ import annotations

import asyncio

import pytest

from dddframe.bus.retry import IntervalRetry
from dddframe.testing.contract.catalog import ContractSuite, scenario
from dddframe.testing.contract.harness import NotSupportedHere, TransportHarness
from dddframe.testing.contract.model import (
    INCREMENTED,
    NOTED,
    Increment,
    Note,
    Probe,
    contract_modules,
    new_counters,
)

__all__ = ["FAST", "PubSubContract", "skip_unsupported"]

FAST = IntervalRetry(interval=0.05, limit=5)


def skip_unsupported(exc: NotSupportedHere) -> None:
    pytest.skip(str(exc))


class PubSubContract(ContractSuite):
    """Events reach their subscriptions: all of them, in order per aggregate, with context."""

    @scenario("Publish and subscribe", origin="Watermill TestPublishSubscribe")
    async def test_publish_subscribe(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            ids = await new_counters(app, 3)
            for cid in ids:
                await app.engine.run(Increment(counter_id=cid, times=3))
            await probe.wait_for(9)
            await app.drain()
        assert {s.aggregate_id for s in probe.seen} == {str(c) for c in ids}
        for cid in ids:
            assert probe.versions(cid) == [2, 3, 4]
        for ctx in probe.contexts:
            assert ctx.envelope.name == INCREMENTED
            assert ctx.envelope.aggregate_type == "ContractCounter"
        assert len({s.event_id for s in probe.seen}) == 9

    @scenario(
        "Several subscriptions of one event, concurrently",
        origin="Watermill TestConcurrentSubscribe",
    )
    async def test_concurrent_subscribe(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe, auditor=True), FAST) as app:
            ids = await new_counters(app, 4)
            await asyncio.gather(*(app.engine.run(Increment(counter_id=c, times=2)) for c in ids))
            await probe.wait_for(8)
            await probe.wait_for(8, listener="auditor")
            await app.drain()
        for cid in ids:
            assert probe.versions(cid) == [2, 3]
            assert probe.versions(cid, "auditor") == [2, 3]

    @scenario(
        "Two event names to two listeners", origin="Watermill TestConcurrentSubscribeMultipleTopics"
    )
    async def test_concurrent_subscribe_multiple_topics(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe, notes=True), FAST) as app:
            ids = await new_counters(app, 3)
            await asyncio.gather(
                *(app.engine.run(Increment(counter_id=c)) for c in ids),
                *(app.engine.run(Note(counter_id=c, text=f"note {c}")) for c in ids),
            )
            await probe.wait_for(3)
            await probe.wait_for(3, listener="notes")
            await app.drain()
        assert all(c.envelope.name in (INCREMENTED, NOTED) for c in probe.contexts)
        assert {c.envelope.name for c in probe.contexts if c.envelope.name == NOTED} == {NOTED}
        assert sorted(s.aggregate_id for s in probe.of("notes")) == sorted(str(c) for c in ids)
        assert sorted(s.aggregate_id for s in probe.of()) == sorted(str(c) for c in ids)

    @scenario("A failed delivery is sent again", origin="Watermill TestResendOnError")
    async def test_resend_on_error(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            flaky, steady = await new_counters(app, 2)
            probe.fail_times[str(flaky)] = 2
            await app.engine.run(Increment(counter_id=flaky, times=2))
            await app.engine.run(Increment(counter_id=steady, times=2))
            await probe.wait_for(4)
            await app.drain()
            assert await harness.dead_letters(app) == []
        assert probe.versions(flaky) == [2, 3]
        assert probe.versions(steady) == [2, 3]
        first = next(s for s in probe.seen if s.aggregate_id == str(flaky))
        assert first.attempt == 3  # two failures, then the attempt that succeeded

    @scenario(
        "An unacknowledged delivery (listener timed out) is redelivered, before later events",
        origin="Watermill TestNoAck",
    )
    async def test_redelivery_when_not_acknowledged(self, harness: TransportHarness) -> None:
        probe = Probe()
        modules = contract_modules(probe, timeout=0.5)
        async with harness.running(modules, FAST) as app:
            stuck, other = await new_counters(app, 2)
            probe.hang_once.add(str(stuck))
            await app.engine.run(Increment(counter_id=stuck, times=2))
            await app.engine.run(Increment(counter_id=other))
            await probe.wait_for(3)
            await app.drain()
        assert probe.versions(stuck) == [2, 3]
        assert probe.versions(other) == [2]
        assert probe.attempts[str(stuck)] >= 3  # the hung call, its redelivery, the next event
        first = next(s for s in probe.seen if s.aggregate_id == str(stuck))
        assert first.attempt >= 2

    @scenario(
        "A new subscriber continues where a closed one stopped",
        origin="Watermill TestContinueAfterSubscribeClose",
    )
    async def test_continue_after_subscriber_close(self, harness: TransportHarness) -> None:
        probe = Probe()
        probe.call_delay = 0.01
        async with harness.running(contract_modules(probe), FAST) as app:
            ids = await new_counters(app, 4)
            for cid in ids:
                await app.engine.run(Increment(counter_id=cid, times=5))
            await probe.wait_for(3)
        async with harness.running(contract_modules(probe), FAST, fresh=False) as app:
            await probe.wait_for(20)
            await app.drain()
        for cid in ids:
            assert probe.versions(cid) == [2, 3, 4, 5, 6]

    @scenario(
        "Closing while deliveries are in flight loses nothing",
        origin="Watermill TestConcurrentClose",
    )
    async def test_close_with_deliveries_in_flight(self, harness: TransportHarness) -> None:
        probe = Probe()
        probe.call_delay = 0.3
        async with harness.running(contract_modules(probe), FAST) as app:
            ids = await new_counters(app, 3)
            await asyncio.gather(*(app.engine.run(Increment(counter_id=c, times=3)) for c in ids))
            await probe.wait_until(lambda: sum(probe.attempts[str(c)] for c in ids) >= 2)
        probe.call_delay = 0
        async with harness.running(contract_modules(probe), FAST, fresh=False) as app:
            await probe.wait_for(9)
            await app.drain()
        for cid in ids:
            assert probe.versions(cid) == [2, 3, 4]

    @scenario(
        "Delivery resumes after a run of listener errors",
        origin="Watermill TestContinueAfterErrors",
    )
    async def test_continue_after_errors(self, harness: TransportHarness) -> None:
        probe = Probe()
        probe.fail_everything = True
        retry = IntervalRetry(interval=0.05, limit=None)
        async with harness.running(contract_modules(probe), retry) as app:
            ids = await new_counters(app, 3)
            for cid in ids:
                await app.engine.run(Increment(counter_id=cid, times=2))
            await probe.wait_until(lambda: sum(probe.attempts[str(c)] for c in ids) >= 6)
            probe.fail_everything = False
            await probe.wait_for(6)
            await app.drain()
            assert await harness.dead_letters(app) == []
        for cid in ids:
            assert probe.versions(cid) == [2, 3]

    @scenario("Order is kept per aggregate", origin="Watermill TestPublishSubscribeInOrder")
    async def test_in_order_per_aggregate(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            ids = await new_counters(app, 4)

            async def bump(cid: object) -> None:
                for _ in range(5):
                    await app.engine.run(Increment(counter_id=cid, times=2))

            await asyncio.gather(*(bump(c) for c in ids))
            await probe.wait_for(40)
            await app.drain()
        for cid in ids:
            assert probe.versions(cid) == list(range(2, 12))
            assert [s.version for s in probe.of() if s.aggregate_id == str(cid)][:10] == list(
                range(2, 12)
            )

    @scenario(
        "Events of a stopped publisher are delivered by a later consumer",
        origin="Watermill TestPublisherClose",
    )
    async def test_publisher_close(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST, consume=False) as app:
            (cid,) = await new_counters(app)
            await app.engine.run(Increment(counter_id=cid, times=3))
        assert probe.seen == []
        async with harness.running(contract_modules(probe), FAST, fresh=False) as app:
            await probe.wait_for(3)
            await app.drain()
        assert probe.versions(cid) == [2, 3, 4]

    @scenario("Headers and context survive the trip", origin="Watermill TestMessageCtx")
    async def test_headers_and_context_survive(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            (cid,) = await new_counters(app)
            headers = {"x-tenant": "acme", "x-note": "façade ☃ <b>&amp;</b>"}
            await app.engine.run(Increment(counter_id=cid, by=5), headers=headers)
            await probe.wait_for(1)
            await app.drain()
        (ctx,) = probe.contexts[:1]
        assert ctx.headers["x-tenant"] == "acme"
        assert ctx.headers["x-note"] == "façade ☃ <b>&amp;</b>"
        assert ctx.envelope.correlation_id
        assert ctx.envelope.aggregate_id == str(cid)
        assert ctx.envelope.aggregate_version == 2
        assert ctx.attempt == 1
        assert probe.seen[0].value == 5

    @scenario(
        "A new subscription receives the events committed before it existed",
        origin="Watermill TestNewSubscriberReceivesOldMessages",
    )
    async def test_new_subscriber_receives_old_messages(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            (cid,) = await new_counters(app)
            await app.engine.run(Increment(counter_id=cid, times=3))
            await probe.wait_for(3)
            await app.drain()
        modules = contract_modules(probe, auditor=True)
        async with harness.running(modules, FAST, fresh=False) as app:
            await probe.wait_for(3, listener="auditor", timeout=10)
            await app.drain()
        assert probe.versions(cid, "auditor") == [2, 3, 4]

    @scenario(
        "A new subscription with start='latest' receives only later events",
        origin="Watermill TestNewSubscriberReceivesOldMessages (start positions)",
    )
    async def test_new_subscriber_from_latest(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            (cid,) = await new_counters(app)
            await app.engine.run(Increment(counter_id=cid, times=2))
            await probe.wait_for(2)
            await app.drain()
        modules = contract_modules(probe, auditor=True, auditor_start="latest")
        async with harness.running(modules, FAST, fresh=False) as app:
            await app.drain()
            await app.engine.run(Increment(counter_id=cid))
            await probe.wait_for(1, listener="auditor")
            await probe.wait_for(3)
            await app.drain()
        assert probe.versions(cid, "auditor") == [4]
        assert probe.versions(cid) == [2, 3, 4]

    @scenario(
        "Subscription groups are independent: each gets every event, one's failures do not hold "
        "the other",
        origin="Watermill TestConsumerGroups",
    )
    async def test_consumer_groups(self, harness: TransportHarness) -> None:
        probe = Probe()
        # Long enough to hold the auditor while the rest flows, finite so a transport that
        # blocks other aggregates behind it fails in seconds, not at the suite's timeout.
        retry = IntervalRetry(0.05, limit=200)
        modules = contract_modules(probe, auditor=True, auditor_retry=retry)
        async with harness.running(modules, FAST) as app:
            bad, good = await new_counters(app, 2)
            # The auditor group fails for `bad` until told otherwise; `increments` must not wait.
            probe.fail_for.add(("auditor", str(bad)))
            await app.engine.run(Increment(counter_id=bad))
            await app.engine.run(Increment(counter_id=good, times=3))
            await probe.wait_for(4, timeout=10)
            await probe.wait_for(3, listener="auditor", timeout=10)
            assert probe.versions(good, "auditor") == [2, 3, 4]
            probe.fail_for.clear()
            await probe.wait_for(4, listener="auditor")
            await app.drain()
        assert probe.versions(bad) == [2]
        assert probe.versions(bad, "auditor") == [2]

    @scenario(
        "Two consumers of one subscription share it: every event delivered, order kept",
        origin="Watermill TestConsumerGroups",
    )
    async def test_two_consumers_share_a_subscription(self, harness: TransportHarness) -> None:
        if not harness.shares_work:
            pytest.skip(f"{harness.name} runs one consuming process per database")
        probe = Probe()
        async with (
            harness.running(contract_modules(probe), FAST) as first,
            harness.running(contract_modules(probe), FAST, fresh=False),
        ):
            ids = await new_counters(first, 4)
            await asyncio.gather(*(first.engine.run(Increment(counter_id=c, times=4)) for c in ids))
            await probe.wait_for(16)
        for cid in ids:
            assert probe.versions(cid) == [2, 3, 4, 5]

    @scenario(
        "Delivery resumes after the broker (or database server) connection drops",
        origin="Watermill TestReconnect",
    )
    async def test_reconnect_after_connection_drop(self, harness: TransportHarness) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), FAST) as app:
            (cid,) = await new_counters(app)
            await app.engine.run(Increment(counter_id=cid, times=2))
            await probe.wait_for(2)
            try:
                await harness.drop_connections(app)
            except NotSupportedHere as exc:
                skip_unsupported(exc)
            await app.engine.run(Increment(counter_id=cid, times=2))
            await probe.wait_for(4)
            await app.drain()
        assert probe.versions(cid) == [2, 3, 4, 5]
