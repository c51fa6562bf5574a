"""OpenTelemetry spans for command -> outbox -> relay -> listener (opentelemetry-api only).

The engine runs each command in a ``dddframe.command <Name>`` span; the envelopes it writes carry
that span in their ``traceparent`` header; a relay publishing them opens a PRODUCER span and a
listener delivery a CONSUMER span whose parent is the traceparent of the envelope, so a trace
shows the command, each reaction and the commands those ran, across processes and brokers.
Without an SDK configured every span is a no-op. Install and configure the SDK yourself:

>>> from dddframe.domain.envelope import Envelope
>>> env = Envelope.new("Order:Placed", "{}", headers={"correlation_id": "c-1"})
>>> with delivery_span(env, "shop.Mailer.on_placed", attempt=1):
...     pass
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dddframe.domain.envelope import Envelope

__all__ = [
    "command_span",
    "delivery_span",
    "outbox_written",
    "relay_span",
    "tracing_enabled",
]

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind
except ImportError:  # pragma: no cover - opentelemetry-api is the `otel` extra
    trace = None  # type: ignore[assignment]

_TRACER_NAME = "dddframe"
_NO_SDK: tuple[type, ...] = (
    (trace.ProxyTracerProvider, trace.NoOpTracerProvider) if trace is not None else ()
)


_sdk_installed = False
# Whether a provider may come from the environment (OTEL_PYTHON_TRACER_PROVIDER), read once:
# get_tracer_provider() looks it up in os.environ on every call until a provider is set, which
# costs more than the rest of this check on the delivery path.
_provider_from_env: bool | None = None


def tracing_enabled() -> bool:
    """Whether an SDK tracer provider is installed. Without one every span is a no-op, and
    building it (attributes, context extraction) would cost more than a delivery itself."""
    global _sdk_installed, _provider_from_env
    if _sdk_installed:
        return True  # a global provider, once set, cannot be replaced
    if trace is None:
        return False
    if _provider_from_env is None:
        _provider_from_env = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
    if not _provider_from_env and getattr(trace, "_TRACER_PROVIDER", False) is None:
        return False  # nothing set in code, nothing to load from the environment
    if isinstance(trace.get_tracer_provider(), _NO_SDK):
        return False
    _sdk_installed = True
    return True


_enabled = tracing_enabled


def _envelope_attributes(env: Envelope) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": "dddframe",
        "messaging.message.id": str(env.event_id),
        "messaging.destination.name": env.name,
        "dddframe.event.name": env.name,
    }
    if env.correlation_id:
        attrs["dddframe.correlation_id"] = env.correlation_id
    if env.aggregate_id is not None:
        attrs["dddframe.aggregate"] = f"{env.aggregate_type}:{env.aggregate_id}"
    if env.position is not None:
        attrs["dddframe.position"] = env.position
    return attrs


@functools.cache
def _tracer() -> Any:
    # A proxy tracer: it follows the provider the application sets later, so caching is safe.
    return trace.get_tracer(_TRACER_NAME)


@contextmanager
def _span(
    name: str, kind: Any, attributes: Mapping[str, Any], carrier: Mapping[str, str] | None
) -> Iterator[Any]:
    if trace is None or not _enabled():
        yield None
        return
    parent = propagate.extract(carrier) if carrier else None
    with _tracer().start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=dict(attributes),
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        yield span


@contextmanager
def command_span(command_name: str) -> Iterator[Any]:
    """The span of one ``engine.run``; envelopes written inside carry it as traceparent."""
    if trace is None or not _enabled():
        yield None
        return
    kind = SpanKind.INTERNAL
    with _span(
        f"dddframe.command {command_name}", kind, {"dddframe.command": command_name}, None
    ) as span:
        yield span


def outbox_written(envelopes: list[Envelope]) -> None:
    """Record on the current span which events went to the outbox in its transaction."""
    if trace is None or not envelopes:
        return
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("dddframe.outbox.events", len(envelopes))
    for env in envelopes:
        span.add_event("dddframe.outbox.write", _envelope_attributes(env))


@contextmanager
def relay_span(envelope: Envelope, relay: str, destination: str | None = None) -> Iterator[Any]:
    """A PRODUCER span for a relay sending ``envelope`` to a broker, child of the command.

    Relays (Kafka, AMQP) wrap each send so the trace shows outbox -> broker:
    ``with relay_span(env, "relay.kafka", topic): await producer.send(...)``.
    """
    if trace is None or not _enabled():
        yield None
        return
    attrs = _envelope_attributes(envelope)
    attrs["dddframe.relay"] = relay
    if destination:
        attrs["messaging.destination.name"] = destination
    kind = SpanKind.PRODUCER
    with _span(f"dddframe.relay {envelope.name}", kind, attrs, envelope.headers) as span:
        yield span


@contextmanager
def delivery_span(envelope: Envelope, subscription: str, *, attempt: int) -> Iterator[Any]:
    """A CONSUMER span for one delivery, child of the span in the envelope's traceparent.

    A failure is recorded on the span (exception event, status ERROR) and re-raised.
    """
    if trace is None or not _enabled():
        yield None
        return
    attrs = _envelope_attributes(envelope)
    attrs["dddframe.subscription"] = subscription
    attrs["dddframe.attempt"] = attempt
    kind = SpanKind.CONSUMER
    with _span(f"dddframe.deliver {envelope.name}", kind, attrs, envelope.headers) as span:
        yield span
