"""Observability: structured logging with event and correlation ids, OpenTelemetry spans and
Prometheus metrics. Each part is optional and costs nothing when its library is absent.

- :mod:`dddframe.observability.logging`: :class:`DeliveryContextFilter` and
  :func:`configure_logging` (every line carries ``event_id`` and ``correlation_id``).
- :mod:`dddframe.observability.tracing`: spans for command -> outbox -> relay -> listener, linked
  through the W3C ``traceparent`` header of the envelope (opentelemetry-api only).
- :mod:`dddframe.observability.metrics`: delivered/failed/dead-lettered counters and lag gauges
  (prometheus-client, the ``prometheus`` extra).

Layering: ``tracing`` imports only :mod:`dddframe.domain`, so the engine can use it;
``logging``, ``metrics`` and ``delivery`` import the domain and ``dddframe.context`` and
are used by the buses. This package imports no submodule itself, so no cycle can form.
"""
