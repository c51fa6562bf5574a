"""Every transport implements the one EventBus interface with the same signatures (issue 11):
one publish signature, one drain, one status."""

from __future__ import annotations

import inspect

import pytest

from dddframe.bus.amqp import AmqpBus
from dddframe.bus.database import DatabaseBus
from dddframe.bus.inprocess import InProcessBus
from dddframe.bus.kafka import KafkaBus
from dddframe.bus.protocol import EventBus

TRANSPORTS = [InProcessBus, DatabaseBus, KafkaBus, AmqpBus]
METHODS = ["start", "stop", "notify", "publish", "drain", "status"]


def _params(function: object) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(function).parameters.values() if p.name != "self"]  # type: ignore[arg-type]


@pytest.mark.parametrize("bus", TRANSPORTS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("method", METHODS)
def test_each_transport_has_the_protocol_signature(bus: type, method: str) -> None:
    expected = _params(getattr(EventBus, method))
    actual = _params(getattr(bus, method))
    shared = [(p.name, p.kind, p.default) for p in actual[: len(expected)]]
    assert shared == [(p.name, p.kind, p.default) for p in expected], (bus, method)
    for extra in actual[len(expected) :]:  # a transport's own options: keyword-only, defaulted
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY, (bus, method, extra)
        assert extra.default is not inspect.Parameter.empty, (bus, method, extra)
    assert inspect.iscoroutinefunction(getattr(bus, method)) == inspect.iscoroutinefunction(
        getattr(EventBus, method)
    )
