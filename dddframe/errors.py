"""The exceptions dddframe raises.

Every message says what was wrong and what to do about it. Catch :class:`DddframeError` to catch
them all.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CommandValidationError",
    "ConcurrencyConflict",
    "ConfigurationError",
    "DddframeError",
    "DeadLetterNotFound",
    "DomainError",
    "EventSerializationError",
    "HeldBack",
    "MissingBinding",
    "NotFound",
    "PoisonEvent",
    "PositionExpired",
    "UnknownCommand",
    "UnknownEventName",
    "WorkerCrashed",
    "close_matches",
]


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``did you mean ...?`` suffix naming the closest candidates, or an empty string."""
    found = difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)
    if not found:
        return ""
    return " Did you mean " + " or ".join(repr(f) for f in found) + "?"


class DddframeError(Exception):
    """Base class of every error raised by dddframe."""


class ConfigurationError(DddframeError):
    """The application is wired wrongly (unknown name, duplicate registration, bad option)."""


class UnknownEventName(ConfigurationError):
    """An event name is used that no event class or ``Module.event()`` declaration defines."""


class UnknownCommand(DddframeError):
    """A command was run that no module handles."""


class CommandValidationError(DddframeError):
    """A command's fields failed validation; nothing was written."""


class MissingBinding(ConfigurationError):
    """A handler, controller or service asks for a type that nothing in the injector provides."""


class NotFound(DddframeError):
    """``Repository.get`` found no aggregate with that id."""


class ConcurrencyConflict(DddframeError):
    """Another unit of work changed the same aggregate first and every retry lost the race too."""


class EventSerializationError(DddframeError):
    """An event payload or header could not be turned into JSON; nothing was written."""


class DomainError(DddframeError):
    """Base class for invariant violations raised by aggregates. Subclass it in your domain."""


class PoisonEvent(DddframeError):
    """An event that can never be delivered as it is (bad payload, unknown name).

    Buses send it to the dead-letter store at once instead of retrying it.
    """


class DeadLetterNotFound(DddframeError):
    """No dead letter with that id exists (it may have been replayed or purged)."""


class PositionExpired(DddframeError):
    """A subscription asked for an outbox position that retention already removed."""


class WorkerCrashed(DddframeError):
    """The process died while delivering this event, ``crash_limit`` times in a row.

    The event is dead-lettered instead of being run again; fix the listener, then replay it.
    """


class HeldBack(DddframeError):
    """An earlier event of the same aggregate is a dead letter (``block_aggregate``), so this one
    waits behind it; replay the aggregate's dead letters together to deliver them in order."""
