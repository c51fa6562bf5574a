"""The :class:`Projection` base class: a read model built from events, and the view its
handlers write through.

>>> from sqlalchemy import Column, Integer, MetaData, String, Table
>>> counts = Table("doc_counts", MetaData(), Column("name", String(40), primary_key=True),
...                Column("n", Integer, nullable=False))
>>> class Counts(Projection):
...     tables = (counts,)
...     async def on_counted(self, event: dict, view: ProjectionView) -> None:
...         await view.session.execute(view.table(counts).insert().values(name="x", n=1))
>>> Counts.projection_name(), [t.name for t in Counts.tables]
('Counts', ['doc_counts'])
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from dddframe.domain.envelope import Envelope
from dddframe.domain.limits import NAME_MAX
from dddframe.errors import ConfigurationError, UsageError
from dddframe.projections.generations import Generation
from dddframe.projections.rows import RowCache, select_row

__all__ = ["Projection", "ProjectionView"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


class Projection:
    """A read model: tables declared as SQLAlchemy Core ``Table`` objects, and handler methods
    ``async def on_x(self, event, view)`` bound to event names with
    ``module.projection(MyProjection, listen={"Order:Placed": "on_placed"})``.

    Class attributes:

    ``tables``
        The read-model tables (each in any ``MetaData``; not in ``Model.metadata``, which
        ``create_schema`` would create as plain tables). The framework creates one physical copy
        per generation (``name``, ``name__g2``, ...); handlers and readers reach the right copy
        through :meth:`ProjectionView.table`.
    ``name``
        The projection's name (default: the class name), as the CLI and the status show it.
    ``keep_history``
        True (default): retention keeps every outbox row, so the projection can always be
        rebuilt from the start. False: retention removes history as usual, and a rebuild
        fails at once, naming the removed range, when the history it needs is gone.

    A handler writes only through ``view.session`` (the transaction that also records the
    checkpoint) and never commits: the framework commits the writes, the inbox entry and the
    checkpoint together, so on one database each event is applied exactly once.
    """

    tables: ClassVar[Sequence[Table]] = ()
    name: ClassVar[str | None] = None
    keep_history: ClassVar[bool] = True

    @classmethod
    def projection_name(cls) -> str:
        """The name the projection is stored and operated by."""
        return cls.name or cls.__name__

    @classmethod
    def check(cls) -> None:
        """Raise :class:`~dddframe.errors.ConfigurationError` unless the class declares a
        usable name and at least one ``Table``."""
        where = f"projection {cls.__qualname__}"
        name = cls.projection_name()
        if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > NAME_MAX:
            raise ConfigurationError(
                f"{where}: name {name!r} must be an identifier-like str (letters, digits, _ or -)"
                f" of at most {NAME_MAX} characters"
            )
        tables = cls.tables
        if isinstance(tables, Table):
            raise ConfigurationError(f"{where}: tables must be a tuple of Tables: ({tables.name},)")
        if not tables or not all(isinstance(t, Table) for t in tables):
            raise ConfigurationError(
                f"{where}: declare its read-model tables as a tuple of SQLAlchemy Table objects "
                "(tables = (order_summaries,))"
            )
        names = [t.name for t in tables]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"{where}: a table is declared twice in {names}")
        for t in tables:
            if "__g" in t.name:
                raise ConfigurationError(
                    f"{where}: table name {t.name!r} must not contain '__g', which marks the "
                    "copies of later generations"
                )
        if not isinstance(cls.keep_history, bool):
            raise ConfigurationError(f"{where}: keep_history must be True or False")


class ProjectionView:
    """What a handler or a reader gets: the session and the tables of one generation.

    ``view.table(order_summaries)`` is the physical table of the generation this view reads or
    writes; ``view.session`` the session (a transaction is open in it); ``view.envelope`` the
    event being applied (None for readers); ``view.generation`` its number.

    Rows by primary key: ``await view.get(table, key)``, ``view.put(table, row)`` and
    ``view.delete(table, key)`` read and write one row of a declared table, written when the
    framework commits (see :mod:`dddframe.projections.rows`); a rebuild then writes each row
    once per batch instead of once per event. Use them or SQL through ``view.session`` for a
    table, not both: SQL does not see rows put but not yet written.
    """

    __slots__ = ("_generation", "_rows", "envelope", "session")

    def __init__(
        self,
        session: AsyncSession,
        generation: Generation,
        envelope: Envelope | None = None,
        rows: RowCache | None = None,
    ) -> None:
        self.session = session
        self._generation = generation
        self.envelope = envelope
        self._rows = rows

    @property
    def generation(self) -> int:
        return self._generation.number

    def table(self, declared: Table | str) -> Table:
        """The physical copy of a declared table (the Table object or its declared name)."""
        found = self._generation.table(declared)
        if found is None:
            name = declared if isinstance(declared, str) else getattr(declared, "name", declared)
            raise UsageError(
                f"{name!r} is not one of this projection's tables "
                f"({', '.join(self._generation.declared_names())}); declare it in "
                "Projection.tables."
            )
        return found

    async def get(self, declared: Table | str, key: object) -> dict[str, Any] | None:
        """The row of a declared table whose primary key is ``key`` (a value, or a tuple in the
        key's column order) as a new dict, or None; includes rows put in this transaction."""
        table = self.table(declared)
        if self._rows is None:
            return await select_row(self.session, table, RowCache.key(table, key))
        return await self._rows.get(self.session, table, key)

    def put(self, declared: Table | str, row: Mapping[str, Any]) -> None:
        """Insert ``row`` into a declared table, or update the columns it names where its
        primary key exists; written when the framework commits."""
        self._writable("put").put(self.table(declared), row)

    def delete(self, declared: Table | str, key: object) -> None:
        """Delete the row whose primary key is ``key``; written when the framework commits."""
        self._writable("delete").delete(self.table(declared), key)

    def _writable(self, verb: str) -> RowCache:
        if self._rows is None:
            raise UsageError(
                f"view.{verb}() writes only in a projection's handler; readers "
                "(app.projections.read) cannot write"
            )
        return self._rows
