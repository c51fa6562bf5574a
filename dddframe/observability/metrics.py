"""Prometheus metrics (prometheus-client, the ``prometheus`` extra; no-ops without it).

Counters ``dddframe_events_delivered_total``, ``dddframe_events_failed_total`` and
``dddframe_events_dead_lettered_total`` (label ``subscription``) count deliveries in this
process; gauges ``dddframe_subscription_lag_events``, ``dddframe_subscription_lag_seconds`` and
``dddframe_subscription_dead_letters`` are set from the transport's status (:func:`update_lag`
with ``await app.bus.status()``, right on every transport; the status page does it on every
scrape of ``/dddframe/metrics``). Expose them with
``prometheus_client.start_http_server(9100)`` in a worker, or mount the status page in an API
process.

>>> record_delivered("shop.Mailer.on_placed")
>>> from prometheus_client import REGISTRY
>>> REGISTRY.get_sample_value(
...     "dddframe_events_delivered_total", {"subscription": "shop.Mailer.on_placed"}) >= 1
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dddframe.outbox.status import SystemStatus

__all__ = [
    "Metrics",
    "metrics",
    "record_dead_lettered",
    "record_delivered",
    "record_failed",
    "update_lag",
]

try:
    import prometheus_client
except ImportError:  # pragma: no cover - the `prometheus` extra
    prometheus_client = None  # type: ignore[assignment]


class Metrics:
    """The dddframe metrics in one registry (the default registry unless given one)."""

    def __init__(self, registry: Any = None) -> None:
        if prometheus_client is None:
            raise ImportError(
                "dddframe metrics need prometheus-client: pip install 'dddframe[prometheus]'"
            )
        reg = registry if registry is not None else prometheus_client.REGISTRY
        self.registry = reg
        label = ["subscription"]
        self.delivered = prometheus_client.Counter(
            "dddframe_events_delivered",
            "Events delivered to a listener",
            label,
            registry=reg,
        )
        self.failed = prometheus_client.Counter(
            "dddframe_events_failed", "Deliveries that raised", label, registry=reg
        )
        self.dead_lettered = prometheus_client.Counter(
            "dddframe_events_dead_lettered",
            "Events moved to the dead-letter store",
            label,
            registry=reg,
        )
        self.lag_events = prometheus_client.Gauge(
            "dddframe_subscription_lag_events",
            "Sequenced events a subscription has not reached yet",
            label,
            registry=reg,
        )
        self.lag_seconds = prometheus_client.Gauge(
            "dddframe_subscription_lag_seconds",
            "Age of the oldest event a subscription has not reached yet",
            label,
            registry=reg,
        )
        self.dead_letters = prometheus_client.Gauge(
            "dddframe_subscription_dead_letters",
            "Dead letters stored for a subscription",
            label,
            registry=reg,
        )


_default: Metrics | None = None


def metrics() -> Metrics | None:
    """The process-wide metrics on the default registry (None without prometheus-client)."""
    global _default
    if _default is None and prometheus_client is not None:
        _default = Metrics()
    return _default


_children: dict[tuple[str, str], Any] = {}


def _count(kind: str, subscription: str) -> None:
    # Labelled children are cached: .labels() costs a lock and a dict walk per call.
    child = _children.get((kind, subscription))
    if child is None:
        m = metrics()
        if m is None:
            return
        child = getattr(m, kind).labels(subscription)
        _children[(kind, subscription)] = child
    child.inc()


def record_delivered(subscription: str) -> None:
    _count("delivered", subscription)


def record_failed(subscription: str) -> None:
    _count("failed", subscription)


def record_dead_lettered(subscription: str) -> None:
    _count("dead_lettered", subscription)


def update_lag(status: SystemStatus) -> None:
    """Set the lag and dead-letter gauges from a status (``await app.bus.status()``)."""
    m = metrics()
    if m is None:
        return
    for s in status.subscriptions:
        m.lag_events.labels(s.name).set(s.lag_events)
        m.lag_seconds.labels(s.name).set(s.lag_seconds)
        m.dead_letters.labels(s.name).set(s.dead_letters)
    for r in status.relays:
        m.lag_events.labels(r.name).set(r.lag_events)
