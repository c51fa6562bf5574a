"""Typed listener options: what ``module.listen(...)`` passes to a transport, checked at start-up.

The options every transport understands (``retry``, ``timeout``, ``dead_letter``, ``group``,
``start``) are keyword parameters of ``Module.listen()``. What only one transport understands is
declared by that transport as a frozen dataclass in ``dddframe.bus.<transport>.options`` and
named by the bus's ``listener_options`` attribute. ``listen(..., retry_mode="topic")`` or
``listen(..., options=KafkaListenerOptions(retry_mode="topic"))``; when the application starts,
the keywords are parsed into the chosen bus's type, so a misspelt or foreign option is a
:class:`~dddframe.errors.ConfigurationError` with close-match suggestions:

>>> ListenerOptions.parse({"retyr": 3}, where="listen('A:B', 'C.m')", also=["retry"])
Traceback (most recent call last):
...
dddframe.errors.ConfigurationError: listen('A:B', 'C.m'): unknown option 'retyr'; ...
Did you mean 'retry'?
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from dddframe.errors import ConfigurationError, close_matches

__all__ = ["ListenerOptions", "invalid_option", "listener_options_of"]


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    """Base class of a transport's listener options; it takes none itself.

    A field left at None means "the bus's setting". Subclasses check their values in
    ``__post_init__`` (raise :func:`invalid_option`).
    """

    transport: ClassVar[str] = "this"

    @classmethod
    def names(cls) -> list[str]:
        """The option names this transport takes."""
        return [f.name for f in fields(cls)]

    @classmethod
    def parse(cls, values: Mapping[str, object], *, where: str, also: Iterable[str] = ()) -> Self:
        """Build the options from ``listen()`` keywords; ``also`` are more names to suggest."""
        known = cls.names()
        for key in values:
            if key not in known:
                takes = (
                    "takes " + ", ".join(repr(k) for k in known)
                    if known
                    else "takes no transport options"
                )
                raise ConfigurationError(
                    f"{where}: unknown option {key!r}; {cls.transport} bus {takes}."
                    + close_matches(key, [*known, *also])
                )
        try:
            return cls(**values)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None

    def given(self) -> dict[str, object]:
        """The options that were set (not None), as the transport reads them."""
        found = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in found.items() if v is not None}


def invalid_option(name: str, value: object, expected: str) -> ConfigurationError:
    """The error for an option with a wrong type or value."""
    return ConfigurationError(f"option {name}={value!r} is not valid: {expected}.")


def listener_options_of(bus: Any) -> type[ListenerOptions]:
    """The listener options type a bus declares (``listener_options``), else the empty base."""
    declared = getattr(bus, "listener_options", None)
    if isinstance(declared, type) and issubclass(declared, ListenerOptions):
        return declared
    return ListenerOptions
