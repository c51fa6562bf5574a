"""Rebuilding the held aggregates when partitions are assigned does not lose a hold made (or
bring back one lifted) while the dead-letter topic was being scanned: records of the
partitions still assigned go on being handled during the scan."""

from __future__ import annotations

from dddframe.bus.kafka.handling import RecordHandler
from dddframe.bus.kafka.topics import TopicNaming
from dddframe.bus.retry import NoRetry
from dddframe.bus.subscription import Subscription
from dddframe.domain.envelope import Envelope
from dddframe.domain.events import EventRegistry


async def _nothing(envelope: Envelope, attempt: int, subscription: Subscription) -> None:
    return None


async def _send(*args: object, **kwargs: object) -> None:
    return None


def _handler() -> tuple[RecordHandler, Subscription]:
    sub = Subscription(
        name="g.Listener.on_x",
        group="g",
        listener="Listener.on_x",
        event_names=frozenset({"A:X"}),
        deliver=_nothing,
        retry=NoRetry(),
        dead_letter="block_aggregate",
    )
    return RecordHandler("g", [sub], EventRegistry(), TopicNaming(), _send), sub  # type: ignore[arg-type]


def _env(aggregate: str) -> Envelope:
    return Envelope.new("A:X", "{}", aggregate_type="A", aggregate_id=aggregate)


def test_a_hold_made_during_the_scan_survives_the_rebuild() -> None:
    handler, sub = _handler()
    old, lifted, new = _env("old"), _env("lifted"), _env("new")
    handler._hold(sub, old)
    handler._hold(sub, lifted)
    handler.begin_load()
    handler._hold(sub, new)  # dead-lettered while the scan ran; the scan did not see it
    handler._release(sub, lifted)  # replayed while the scan ran; the scan still saw it
    handler.load_held(
        [(sub.name, old.ordering_key, str(old.event_id)), (sub.name, "A:lifted", "x")]
    )
    assert handler.held == {
        sub.name: {old.ordering_key: str(old.event_id), new.ordering_key: str(new.event_id)}
    }
    handler.load_held([])  # a rebuild with no scan in progress takes the scan as it is
    assert handler.held == {}


def test_a_failed_scan_keeps_the_holds() -> None:
    handler, sub = _handler()
    env = _env("a")
    handler._hold(sub, env)
    handler.begin_load()
    handler.end_load()
    handler._hold(sub, _env("b"))
    handler.load_held([(sub.name, env.ordering_key, str(env.event_id))])
    assert handler.held == {sub.name: {env.ordering_key: str(env.event_id)}}
