"""dddframe: aggregates that record domain events, a unit-of-work engine with a transactional
outbox, and pluggable event buses that deliver at least once, in order per aggregate.
"""

from injector import inject

from dddframe import errors
from dddframe.app import Application, Module
from dddframe.bus import (
    CustomRetry,
    DeadLetter,
    EventBus,
    EventContext,
    ExponentialRetry,
    IntervalRetry,
    LimitRetry,
    NoRetry,
    RetryPolicy,
)
from dddframe.domain import Aggregate, DomainEvent, Entity, Envelope, Model
from dddframe.engine import Command, ConflictRetry, Engine, Repository, UnitOfWork
from dddframe.processes import ProcessContext, ProcessManager
from dddframe.projections import Projection, ProjectionView

__all__ = [
    "Aggregate",
    "Application",
    "Command",
    "ConflictRetry",
    "CustomRetry",
    "DeadLetter",
    "DomainEvent",
    "Engine",
    "Entity",
    "Envelope",
    "EventBus",
    "EventContext",
    "ExponentialRetry",
    "IntervalRetry",
    "LimitRetry",
    "Model",
    "Module",
    "NoRetry",
    "ProcessContext",
    "ProcessManager",
    "Projection",
    "ProjectionView",
    "Repository",
    "RetryPolicy",
    "UnitOfWork",
    "errors",
    "inject",
]

__version__ = "0.1.0"
