"""The exceptions dddframe raises.

Every message says what was wrong and what to do about it. Catch :class:`DddframeError` to catch
them all; where a builtin exception means the same thing it is a base too, so ``except
ValueError`` or ``except LookupError`` keep working:

>>> issubclass(ConfigurationError, ValueError), issubclass(NotFound, LookupError)
(True, True)
>>> issubclass(NotStarted, RuntimeError), issubclass(InvalidHeader, ValueError)
(True, True)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CommandValidationError",
    "ConcurrencyConflict",
    "ConfigurationError",
    "DatabaseUnavailable",
    "DddframeError",
    "DeadLetterNotFound",
    "DomainError",
    "EventSerializationError",
    "HalfMessageDecided",
    "HeldBack",
    "HistoryMissing",
    "InvalidArgument",
    "InvalidHeader",
    "LimitExceeded",
    "MissingBinding",
    "MissingDependency",
    "NotFound",
    "NotStarted",
    "PoisonEvent",
    "PositionExpired",
    "ProjectionNotFound",
    "PushFailed",
    "RebuildStateError",
    "RetryInterrupted",
    "ScheduleNotFound",
    "SchemaNotReady",
    "UnknownCommand",
    "UnknownEventName",
    "UsageError",
    "WorkerCrashed",
    "close_matches",
    "missing_extra",
]


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``did you mean ...?`` suffix naming the closest candidates, or an empty string."""
    found = difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)
    if not found:
        return ""
    return " Did you mean " + " or ".join(repr(f) for f in found) + "?"


class DddframeError(Exception):
    """Base class of every error raised by dddframe."""


class ConfigurationError(DddframeError, ValueError):
    """The application is wired wrongly (unknown name, duplicate registration, bad option)."""


class UnknownEventName(ConfigurationError):
    """An event name is used that no event class or ``Module.event()`` declaration defines."""


class UnknownCommand(DddframeError):
    """A command was run that no module handles."""


class CommandValidationError(DddframeError, ValueError):
    """A command's fields failed validation; nothing was written."""


class MissingBinding(ConfigurationError):
    """A handler, controller or service asks for a type that nothing in the injector provides."""


class NotFound(DddframeError, LookupError):
    """``Repository.get`` found no aggregate with that id."""


class ConcurrencyConflict(DddframeError):
    """Another unit of work changed the same aggregate first and every retry lost the race too."""


class EventSerializationError(DddframeError, ValueError):
    """An event payload or header could not be turned into JSON; nothing was written."""


class DomainError(DddframeError):
    """Base class for invariant violations raised by aggregates. Subclass it in your domain."""


class PoisonEvent(DddframeError):
    """An event that can never be delivered as it is (bad payload, unknown name).

    Buses send it to the dead-letter store at once instead of retrying it.
    """


class DeadLetterNotFound(DddframeError, LookupError):
    """No dead letter with that id exists (it may have been replayed or purged)."""


class ScheduleNotFound(DddframeError, LookupError):
    """No scheduled command with that id exists."""


class PositionExpired(DddframeError):
    """A subscription asked for an outbox position that retention already removed."""


class HistoryMissing(DddframeError):
    """A projection rebuild needs outbox positions that retention already removed; the message
    names the range. Nothing was changed: the live projection keeps serving."""


class ProjectionNotFound(ConfigurationError, LookupError):
    """No projection with that name (or class) is registered in the application."""


class RebuildStateError(DddframeError):
    """A projection rebuild cannot do what was asked in its current state: one is running (or
    was interrupted) already, there is none to resume or abandon, or it was abandoned while it
    ran. The message says which, and what to do."""


class RetryInterrupted(DddframeError):
    """A consumer stopped while a record waited for a blocking retry: the record is left
    uncommitted and its retry state stored, so the next consumer resumes it (Kafka). Raised
    and handled inside the consumer; applications do not see it."""


class InvalidArgument(DddframeError, ValueError):
    """A function was called with an argument value it cannot use (a limit below 1, a negative
    delay, an empty selection); nothing was done."""


class UsageError(DddframeError, TypeError):
    """A function was called with an argument of the wrong type, or with arguments in a
    combination it does not accept; nothing was done."""


class NotStarted(DddframeError, RuntimeError):
    """The application or its bus is used before it was started (or after it stopped)."""


class InvalidHeader(EventSerializationError):
    """A message header is not a non-empty str key with a str value, or the headers are too
    large; nothing was written."""


class LimitExceeded(DddframeError, ValueError):
    """A value given at run time (a message key, an aggregate id) is longer than the outbox
    column or the broker allows; nothing was written."""


class WorkerCrashed(DddframeError):
    """The process died while delivering this event, ``crash_limit`` times in a row."""


class PushFailed(DddframeError):
    """The push endpoint answered with a non-2xx status; the record will be retried."""


class HeldBack(DddframeError):
    """An earlier event of the same aggregate is a dead letter (``block_aggregate``)."""


class DatabaseUnavailable(DddframeError, ConnectionError):
    """The database cannot be reached or did not answer in time (refused, unreachable, timed
    out, connection lost). ``cause`` is the driver's error. Raised by ``engine.run``, by
    application start-up and by the buses; nothing was committed by the call that raised it
    unless the connection was lost during the commit itself."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class HalfMessageDecided(DddframeError):
    """A half message's preparer tried to commit or roll back after the tx_checker had already
    decided the other way (its ``prepared_until`` passed while the preparer was stalled). The
    exception says which way it was decided; the preparer must reconcile its side effect."""


class SchemaNotReady(ConfigurationError):
    """The database lacks the framework's tables, or holds them at another schema version than
    this dddframe needs: run the dddframe migrations (or ``--create-schema``)."""


class MissingDependency(ConfigurationError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it
    (``pip install 'dddframe[postgres]'``)."""


def missing_extra(exc: ModuleNotFoundError, extra: str, what: str) -> MissingDependency:
    """The error to raise when ``what`` cannot import an optional dependency of ``extra``.

    >>> str(missing_extra(ModuleNotFoundError(name="aiokafka"), "kafka", "The Kafka bus"))
    "The Kafka bus needs aiokafka, which is not installed: pip install 'dddframe[kafka]'."
    """
    return MissingDependency(
        f"{what} needs {exc.name}, which is not installed: pip install 'dddframe[{extra}]'."
    )
