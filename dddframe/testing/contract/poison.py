"""Poison scenarios: a record that can never be delivered as it is goes to the dead letters at
once, with the reason and its real event id, and never stops the other aggregates.

The harness puts the damaged record where the subscriptions read (see
:meth:`~dddframe.testing.contract.harness.TransportHarness.inject_poison`). On a transport that
selects records by event name, a record with an unknown name reaches no subscription: there it
must simply never be delivered.
"""

from __future__ import annotations

import uuid

from dddframe.bus.retry import LimitRetry
from dddframe.domain.envelope import Envelope
from dddframe.observability.metrics import metrics
from dddframe.testing.contract.catalog import ContractSuite, scenario
from dddframe.testing.contract.harness import NotSupportedHere, PoisonKind, TransportHarness
from dddframe.testing.contract.model import (
    INCREMENTED,
    Increment,
    Incremented,
    Probe,
    contract_modules,
    new_counters,
)
from dddframe.testing.contract.pubsub import skip_unsupported

__all__ = ["PoisonContract"]


async def _poison_scenario(harness: TransportHarness, kind: PoisonKind) -> None:
    probe = Probe()
    poisoned = uuid.uuid4()
    envelope = Envelope.new(
        INCREMENTED,
        Incremented(counter_id=poisoned, value=1, by=1).model_dump_json(),
        aggregate_type="ContractCounter",
        aggregate_id=str(poisoned),
        aggregate_version=1,
        headers={"x-tenant": "acme"},
    )
    reaches = not (kind == "unknown_name" and harness.selects_by_name)
    counted = _dead_lettered_total()
    # Retries would take 5 x 5 s: a poison record retried like a failure makes the scenario fail.
    async with harness.running(contract_modules(probe), LimitRetry(limit=5, delay=5.0)) as app:
        try:
            await harness.inject_poison(app, kind, envelope)
        except NotSupportedHere as exc:
            skip_unsupported(exc)
        (good,) = await new_counters(app)
        await app.engine.run(Increment(counter_id=good, times=2))
        await probe.wait_for(2, timeout=10)
        letters = await harness.wait_for_dead_letters(app, 1, timeout=10) if reaches else []
        await app.drain()
        after = await harness.dead_letters(app)
    assert probe.versions(good) == [2, 3]
    assert probe.attempts[str(poisoned)] == 0, "a poison record must never reach the listener"
    assert str(poisoned) not in {s.aggregate_id for s in probe.seen}
    if not reaches:
        assert after == []
        return
    (letter,) = letters
    assert after == letters
    assert letter.reason
    if counted is not None:  # prometheus-client is installed: the dead letter was counted
        assert _dead_lettered_total() == counted + 1, "dddframe_events_dead_lettered_total"
    if kind != "no_envelope":
        assert letter.event_id == str(envelope.event_id), letter
        assert letter.aggregate_id == str(poisoned)


def _dead_lettered_total() -> float | None:
    """``dddframe_events_dead_lettered_total`` over every subscription (None without
    prometheus-client)."""
    m = metrics()
    if m is None:
        return None
    return sum(
        sample.value
        for family in m.dead_lettered.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


class PoisonContract(ContractSuite):
    """Each kind of undeliverable record, on every transport."""

    @scenario("Poison: the payload is not JSON", origin="dddframe poison rule")
    async def test_poison_not_json(self, harness: TransportHarness) -> None:
        await _poison_scenario(harness, "not_json")

    @scenario("Poison: the record is not a dddframe envelope", origin="dddframe poison rule")
    async def test_poison_no_envelope(self, harness: TransportHarness) -> None:
        await _poison_scenario(harness, "no_envelope")

    @scenario("Poison: an event name nobody declares", origin="dddframe poison rule")
    async def test_poison_unknown_name(self, harness: TransportHarness) -> None:
        await _poison_scenario(harness, "unknown_name")

    @scenario("Poison: the payload does not validate as the event", origin="dddframe poison rule")
    async def test_poison_validation_failure(self, harness: TransportHarness) -> None:
        await _poison_scenario(harness, "validation_failure")

    @scenario("Poison: a header that cannot be decoded", origin="dddframe poison rule")
    async def test_poison_undecodable_header(self, harness: TransportHarness) -> None:
        await _poison_scenario(harness, "undecodable_header")
