"""The domain layer: entities, aggregates, domain events and the envelope. No I/O here."""

from dddframe.domain.envelope import Envelope
from dddframe.domain.events import DomainEvent, EventRegistry, default_registry
from dddframe.domain.model import Aggregate, Entity, Model

__all__ = [
    "Aggregate",
    "DomainEvent",
    "Entity",
    "Envelope",
    "EventRegistry",
    "Model",
    "default_registry",
]
