"""Retry and dead-letter scenarios: every policy gives up when it says, on every transport.

The number of attempts a policy allows is read from the policy itself: attempt ``n`` fails and
``policy.next_delay(n)`` is None, so ``n`` attempts were made. One aggregate fails forever (it
must be dead-lettered after exactly that many attempts), one fails one attempt less (it must be
delivered on the last allowed attempt), and one never fails (it must flow meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dddframe.bus.retry import (
    CustomRetry,
    ExponentialRetry,
    IntervalRetry,
    LimitRetry,
    NoRetry,
    RetryPolicy,
    as_retry_policy,
)
from dddframe.testing.contract.catalog import ContractSuite, scenario
from dddframe.testing.contract.harness import TransportHarness
from dddframe.testing.contract.model import (
    INCREMENTED,
    Increment,
    Probe,
    contract_modules,
    new_counters,
)

__all__ = ["RetryContract", "allowed_attempts"]


def allowed_attempts(policy: RetryPolicy) -> int:
    """How many attempts ``policy`` makes before giving up (it must give up within 50)."""
    for attempt in range(1, 51):
        if policy.next_delay(attempt) is None:
            return attempt
    raise ValueError(f"{policy!r} does not give up within 50 attempts")


async def _policy_scenario(
    harness: TransportHarness, policy: RetryPolicy | Callable[[int], float | None]
) -> None:
    attempts = allowed_attempts(as_retry_policy(policy))
    probe = Probe()
    async with harness.running(contract_modules(probe, retry=policy), NoRetry()) as app:
        dead, last_chance, fine = await new_counters(app, 3)
        probe.always_fail.add(str(dead))
        probe.fail_times[str(last_chance)] = attempts - 1
        for cid in (dead, last_chance, fine):
            await app.engine.run(Increment(counter_id=cid))
        await probe.wait_for(2)
        (letter,) = await harness.wait_for_dead_letters(app, 1)
        await app.drain()
        assert await harness.dead_letters(app) == [letter]
    assert letter.aggregate_id == str(dead)
    assert "listener always fails" in letter.reason
    assert probe.attempts[str(dead)] == attempts
    assert probe.attempts[str(last_chance)] == attempts
    assert [s.attempt for s in probe.seen if s.aggregate_id == str(last_chance)] == [attempts]
    assert probe.versions(fine) == [2]


class RetryContract(ContractSuite):
    """Retry policies, per-listener overrides, retry state across restarts, dead letters."""

    @scenario("LimitRetry gives up after limit retries", origin="dddframe retry policies")
    async def test_limit_retry(self, harness: TransportHarness) -> None:
        await _policy_scenario(harness, LimitRetry(limit=2, delay=0.02))

    @scenario("IntervalRetry gives up after limit retries", origin="dddframe retry policies")
    async def test_interval_retry(self, harness: TransportHarness) -> None:
        await _policy_scenario(harness, IntervalRetry(interval=0.02, limit=2))

    @scenario("CustomRetry uses each delay once, then gives up", origin="dddframe retry policies")
    async def test_custom_retry(self, harness: TransportHarness) -> None:
        await _policy_scenario(harness, CustomRetry([0.01, 0.05, 0.02]))

    @scenario(
        "ExponentialRetry (with jitter) gives up at its limit", origin="dddframe retry policies"
    )
    async def test_exponential_retry(self, harness: TransportHarness) -> None:
        await _policy_scenario(harness, ExponentialRetry(base=0.01, max_delay=0.05, limit=3))

    @scenario("A plain callable is a retry policy", origin="dddframe retry policies")
    async def test_callable_retry(self, harness: TransportHarness) -> None:
        await _policy_scenario(harness, lambda attempt: 0.02 if attempt < 3 else None)

    @scenario(
        "A listener's retry overrides the bus default; other listeners keep the default",
        origin="dddframe retry policies",
    )
    async def test_per_listener_override(self, harness: TransportHarness) -> None:
        probe = Probe()
        modules = contract_modules(probe, retry=LimitRetry(limit=2, delay=0.02), auditor=True)
        async with harness.running(modules, NoRetry()) as app:
            (cid,) = await new_counters(app)
            probe.always_fail.add(str(cid))
            await app.engine.run(Increment(counter_id=cid))
            letters = await harness.wait_for_dead_letters(app, 2)
            await app.drain()
        assert len(letters) == 2
        assert probe.attempts[f"increments:{cid}"] == 3
        assert probe.attempts[f"auditor:{cid}"] == 1

    @scenario(
        "Retry state survives a restart: attempts are not counted again from one",
        origin="dddframe retry policies",
    )
    async def test_retry_state_survives_restart(self, harness: TransportHarness) -> None:
        probe = Probe()
        policy = CustomRetry([0.05, 3.0, 0.05])  # the stop falls in the 3 s before attempt 3
        async with harness.running(contract_modules(probe, retry=policy), NoRetry()) as app:
            (cid,) = await new_counters(app)
            probe.always_fail.add(str(cid))
            await app.engine.run(Increment(counter_id=cid))
            await probe.wait_until(lambda: probe.attempts[str(cid)] >= 2)
            # Let the second failure be recorded (the next attempt is 3 s away; a loaded
            # machine once took longer than 0.2 s to store it).
            await asyncio.sleep(0.8)
        assert probe.attempts[str(cid)] == 2
        modules = contract_modules(probe, retry=policy)
        async with harness.running(modules, NoRetry(), fresh=False) as app:
            (letter,) = await harness.wait_for_dead_letters(app, 1)
            await app.drain()
        assert letter.aggregate_id == str(cid)
        assert probe.attempts[str(cid)] == 4  # 1 try + 3 retries in all, across both processes

    @scenario(
        "Retries exhausted: a dead letter with the reason, other aggregates flow",
        origin="dddframe dead letters",
    )
    async def test_exhausted_retries_dead_letter_while_others_flow(
        self, harness: TransportHarness
    ) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), LimitRetry(limit=2, delay=0.02)) as app:
            bad, good = await new_counters(app, 2)
            probe.always_fail.add(str(bad))
            await app.engine.run(Increment(counter_id=bad))
            for _ in range(5):
                await app.engine.run(Increment(counter_id=good))
            await probe.wait_for(5)
            (letter,) = await harness.wait_for_dead_letters(app, 1)
            await app.drain()
        assert letter.name == INCREMENTED
        assert letter.aggregate_id == str(bad)
        assert "listener always fails" in letter.reason
        assert probe.attempts[str(bad)] == 3
        assert probe.versions(good) == [2, 3, 4, 5, 6]

    @scenario(
        "Dead letter blocks its aggregate; replay releases the waiting events in order",
        origin="dddframe dead letters (block_aggregate)",
    )
    async def test_dead_letter_then_replay_releases_waiting_in_order(
        self, harness: TransportHarness
    ) -> None:
        probe = Probe()
        async with harness.running(contract_modules(probe), LimitRetry(limit=1, delay=0.02)) as app:
            bad, good = await new_counters(app, 2)
            probe.always_fail.add(str(bad))
            await app.engine.run(Increment(counter_id=bad, times=3))
            await app.engine.run(Increment(counter_id=good, times=2))
            await probe.wait_for(2)
            letters = await harness.wait_for_dead_letters(app, 1)
            await app.drain()
            assert probe.versions(bad) == []
            assert [d.aggregate_id for d in letters] == [str(bad)]
            probe.always_fail.clear()
            await harness.replay(app, letters)
            await probe.wait_for(5)
            await app.drain()
            assert await harness.dead_letters(app) == []
        assert probe.versions(bad) == [2, 3, 4]
        assert probe.versions(good) == [2, 3]

    @scenario(
        "dead_letter='continue': the aggregate's later events proceed past a dead letter",
        origin="dddframe dead letters (continue)",
    )
    async def test_dead_letter_continue(self, harness: TransportHarness) -> None:
        probe = Probe()
        modules = contract_modules(probe, dead_letter="continue")
        async with harness.running(modules, LimitRetry(limit=1, delay=0.02)) as app:
            (cid,) = await new_counters(app)
            probe.fail_versions.add((str(cid), 2))
            await app.engine.run(Increment(counter_id=cid, times=3))
            await probe.wait_for(2)
            (letter,) = await harness.wait_for_dead_letters(app, 1)
            await app.drain()
        assert probe.versions(cid) == [3, 4]
        assert letter.aggregate_id == str(cid)
        assert "version 2" in letter.reason

    @scenario(
        "A listener that exceeds its timeout fails like one that raised",
        origin="Watermill TestNoAck",
    )
    async def test_listener_timeout_is_a_failure(self, harness: TransportHarness) -> None:
        probe = Probe()
        modules = contract_modules(probe, timeout=0.2)
        async with harness.running(modules, LimitRetry(limit=1, delay=0.02)) as app:
            hung, fine = await new_counters(app, 2)
            probe.always_hang.add(str(hung))
            await app.engine.run(Increment(counter_id=hung))
            await app.engine.run(Increment(counter_id=fine))
            await probe.wait_for(1)
            (letter,) = await harness.wait_for_dead_letters(app, 1)
            await app.drain()
        assert letter.aggregate_id == str(hung)
        assert "timeout" in letter.reason.lower() or "timed out" in letter.reason.lower()
        assert probe.attempts[str(hung)] == 2
        assert probe.versions(fine) == [2]
