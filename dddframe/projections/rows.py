"""Write-behind rows for projection handlers: ``await view.get(table, key)``,
``view.put(table, row)`` and ``view.delete(table, key)``.

A handler that keeps one row per key (a summary per order, a count per cart) can read and write
that row through its view instead of with SQL. The rows are kept here and written when the
framework commits the handler's transaction, before the checkpoint and in the same transaction,
as one multi-row upsert (and one delete) per table. A live delivery commits one event, so
nothing changes for it; a rebuild commits a batch of events, so a row that many events touch is
written once per batch, and a rebuild into empty tables never reads a row it has not written.

>>> from sqlalchemy import Column, Integer, MetaData, String, Table
>>> sizes = Table("doc_sizes", MetaData(), Column("cart", String(10), primary_key=True),
...               Column("size", Integer, nullable=False, default=0))
>>> rows = RowCache("sqlite", known_empty=True)
>>> rows.put(sizes, {"cart": "c1", "size": 2})
>>> rows.key_of(sizes, {"cart": "c1", "size": 2})
('c1',)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, and_, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from dddframe.errors import UsageError

__all__ = ["RowCache", "select_row"]

INSERT, REPLACE, UPSERT, DELETE = "insert", "replace", "upsert", "delete"
Key = tuple[Any, ...]
Row = dict[str, Any]


class RowCache:
    """The rows a projection's handlers read and wrote in one transaction (or, in a rebuild,
    in every batch of the run: the rebuild is the only writer of the generation it builds).

    ``known_empty``: the tables were created empty for this run, so a key never put is absent
    without asking the database. ``lock``: rows read from the database are locked until the
    commit (``SELECT ... FOR UPDATE``), and a row read as absent is written with a plain
    INSERT, so concurrent live deliveries that change one row (a grand total) serialise, or
    conflict and are retried, instead of losing an update. ``limit``: after a flush with more
    rows than this kept, the kept rows are forgotten (they are in the database) and later reads
    ask the database again.
    """

    __slots__ = ("_complete", "_dialect", "_known", "_lock", "_pending", "_tables", "limit")

    def __init__(
        self, dialect: str, *, known_empty: bool = False, lock: bool = False, limit: int = 100_000
    ) -> None:
        self._dialect = dialect
        self._complete = known_empty
        self._lock = lock
        self.limit = limit
        self._tables: dict[str, Table] = {}
        # Rows as the transaction sees them (None: known absent), by table and primary key.
        self._known: dict[str, dict[Key, Row | None]] = {}
        # Writes not flushed yet, by table and key: (INSERT | REPLACE | UPSERT, columns) or
        # (DELETE, None).
        self._pending: dict[str, dict[Key, tuple[str, Row | None]]] = {}

    # -- what handlers call (through ProjectionView) ---------------------------------------

    async def get(self, session: AsyncSession, table: Table, key: object) -> Row | None:
        """The row of ``table`` whose primary key is ``key`` (a value, or a tuple for a
        composite key, in the key's column order), as a new dict; None if there is none."""
        k = self.key(table, key)
        known = self._known.get(table.name, {})
        if k in known:
            row = known[k]
            return dict(row) if row is not None else None
        if self._complete:
            return None
        if k in self._pending.get(table.name, {}):
            await self.flush(session)  # a partial write: let the database merge it first
        found = await select_row(session, table, k, lock=self._lock)
        self._remember(table, k, found)
        return dict(found) if found is not None else None

    def put(self, table: Table, row: Mapping[str, Any]) -> None:
        """Insert the row, or update the columns it names if its primary key exists."""
        if not isinstance(row, Mapping):
            raise UsageError(
                f"view.put({table.name}, ...) takes the row as a mapping of column names to "
                f"values, not {type(row).__name__}"
            )
        unknown = [name for name in row if name not in table.c]
        if unknown:
            raise UsageError(
                f"{table.name} has no column {unknown[0]!r}; its columns are "
                f"{', '.join(table.c.keys())}"
            )
        k = self.key_of(table, row)
        self._tables.setdefault(table.name, table)
        values = dict(row)
        known = self._known.get(table.name, {})
        pending = self._pending.setdefault(table.name, {})
        kind, previous = pending.get(k, (UPSERT, None))
        if (k in known and known[k] is None) or (k not in known and self._complete):
            # Known absent: a new row, every column written. A row deleted in this
            # transaction but still in the database is replaced (deleted, then inserted).
            full = _with_defaults(table, values)
            self._remember(table, k, full)
            pending[k] = (REPLACE if kind in (DELETE, REPLACE) else INSERT, full)
            return
        before = known.get(k)
        if before is not None:  # known present: write the whole row, merged
            merged = {**before, **values}
            self._remember(table, k, merged)
            pending[k] = (kind, merged)
            return
        # Not read: the columns given, merged at flush time with what the database holds.
        pending[k] = (kind, {**previous, **values} if previous is not None else values)

    def delete(self, table: Table, key: object) -> None:
        """Delete the row whose primary key is ``key`` (nothing happens if there is none)."""
        k = self.key(table, key)
        self._remember(table, k, None)
        self._pending.setdefault(table.name, {})[k] = (DELETE, None)

    # -- what the framework calls -----------------------------------------------------------

    async def flush(self, session: AsyncSession) -> None:
        """Write the pending rows in ``session``'s transaction: per table one DELETE, one
        multi-row INSERT and one upsert per set of columns written (rows put without being
        read and naming only some columns: their keys looked up at once, then an UPDATE of
        those columns or an INSERT)."""
        for name, rows in self._pending.items():
            table = self._tables[name]
            every = set(table.c.keys())
            gone = [k for k, (kind, _) in rows.items() if kind in (DELETE, REPLACE)]
            if gone:
                await session.execute(_delete_by_key(table), [_key_params(table, k) for k in gone])
            inserts = [
                r for kind, r in rows.values() if r is not None and kind in (INSERT, REPLACE)
            ]
            upserts: list[Row] = []
            partial: dict[Key, Row] = {}
            for k, (kind, row) in rows.items():
                if kind == UPSERT and row is not None:
                    if every <= set(row):
                        upserts.append(row)
                    else:
                        partial[k] = row
            updates: list[Row] = []
            if partial:
                present = await _present_keys(session, table, list(partial), lock=self._lock)
                keys = {c.name for c in table.primary_key.columns}
                for k, row in partial.items():
                    if k in present:
                        if set(row) - keys:  # a row that names its key alone exists: done
                            updates.append(row)
                    else:
                        inserts.append(_with_defaults(table, row))
            for _, group in _by_columns(inserts):
                await session.execute(insert(table), group)
            for columns, group in _by_columns(upserts):
                await session.execute(self._upsert(table, columns), group)
            for columns, group in _by_columns(updates):
                await session.execute(
                    _update_by_key(table, columns),
                    [
                        {**_key_params(table, self.key_of(table, r)), **_values(table, r)}
                        for r in group
                    ],
                )
        self._pending.clear()
        if sum(len(rows) for rows in self._known.values()) > self.limit:
            self._known.clear()
            self._complete = False

    def key_of(self, table: Table, row: Mapping[str, Any]) -> Key:
        """The primary key of ``row`` (every primary-key column must be in it)."""
        columns = _primary_key(table)
        missing = [c for c in columns if c not in row]
        if missing:
            raise UsageError(
                f"view.put({table.name}, ...) needs the primary key column(s) "
                f"{', '.join(missing)} in the row"
            )
        return tuple(row[c] for c in columns)

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def key(table: Table, key: object) -> Key:
        """``key`` as a tuple in the order of ``table``'s primary-key columns, checked."""
        columns = _primary_key(table)
        k = key if isinstance(key, tuple) else (key,)
        if len(k) != len(columns):
            raise UsageError(
                f"{table.name}'s primary key is ({', '.join(columns)}): give "
                + ("one value" if len(columns) == 1 else f"a tuple of {len(columns)} values")
                + f", not {key!r}"
            )
        return k

    def _remember(self, table: Table, key: Key, row: Row | None) -> None:
        self._tables.setdefault(table.name, table)
        self._known.setdefault(table.name, {})[key] = row

    def _upsert(self, table: Table, columns: tuple[str, ...]) -> Insert:
        keys = [c.name for c in table.primary_key.columns]
        updated = [c for c in columns if c not in keys]
        if self._dialect == "mysql":
            my = mysql.insert(table)
            # Every column is the key: an existing row needs nothing (a no-op assignment).
            chosen = updated or keys[:1]
            return my.on_duplicate_key_update({c: my.inserted[c] for c in chosen})
        if self._dialect == "postgresql":
            pg = postgresql.insert(table)
            if not updated:
                return pg.on_conflict_do_nothing(index_elements=keys)
            return pg.on_conflict_do_update(
                index_elements=keys, set_={c: pg.excluded[c] for c in updated}
            )
        lite = sqlite.insert(table)
        if not updated:
            return lite.on_conflict_do_nothing(index_elements=keys)
        return lite.on_conflict_do_update(
            index_elements=keys, set_={c: lite.excluded[c] for c in updated}
        )


def _primary_key(table: Table) -> list[str]:
    columns = [c.name for c in table.primary_key.columns]
    if not columns:
        raise UsageError(
            f"view.get/put/delete need a primary key on {table.name}; declare one or write "
            "through view.session"
        )
    return columns


def _with_defaults(table: Table, values: Row) -> Row:
    """A new row's columns: the given values, a column's scalar default, else None (server
    defaults and callables are the database's and SQLAlchemy's to apply: left out)."""
    full = dict(values)
    for column in table.columns:
        if column.name in full or column.server_default is not None:
            continue
        default = column.default
        if default is None:
            full[column.name] = None
        elif getattr(default, "is_scalar", False):
            full[column.name] = default.arg  # type: ignore[attr-defined]
    return full


def _by_columns(rows: list[Row]) -> list[tuple[tuple[str, ...], list[Row]]]:
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return list(groups.items())


def _by_key(table: Table) -> Any:
    """``WHERE`` each primary-key column equals its ``k_<name>`` parameter."""
    return and_(*(c == bindparam(f"k_{c.name}") for c in table.primary_key.columns))


def _update_by_key(table: Table, columns: tuple[str, ...]) -> Any:
    keys = {c.name for c in table.primary_key.columns}
    return (
        update(table)
        .where(_by_key(table))
        .values({c: bindparam(f"v_{c}") for c in columns if c not in keys})
    )


def _values(table: Table, row: Row) -> dict[str, Any]:
    keys = {c.name for c in table.primary_key.columns}
    return {f"v_{c}": v for c, v in row.items() if c not in keys}


async def _present_keys(
    session: AsyncSession, table: Table, keys: list[Key], *, lock: bool
) -> set[Key]:
    """Which of ``keys`` have a row (locked with ``lock``), in one query."""
    pk = list(table.primary_key.columns)
    if len(pk) == 1:
        query = select(pk[0]).where(pk[0].in_([k[0] for k in keys]))
    else:
        query = select(*pk).where(tuple_(*pk).in_(keys))
    if lock:
        query = query.with_for_update()
    return {tuple(r) for r in (await session.execute(query)).all()}


def _delete_by_key(table: Table) -> Any:
    return delete(table).where(_by_key(table))


def _key_params(table: Table, key: Key) -> dict[str, Any]:
    return {f"k_{c.name}": v for c, v in zip(table.primary_key.columns, key, strict=True)}


async def select_row(
    session: AsyncSession, table: Table, key: Key, *, lock: bool = False
) -> Row | None:
    """The row of ``table`` with primary key ``key`` (a tuple), read in ``session`` (and locked
    until its commit with ``lock``, where the database has row locks)."""
    where = [c == v for c, v in zip(table.primary_key.columns, key, strict=True)]
    query = select(table).where(*where)
    if lock:
        query = query.with_for_update()
    found = (await session.execute(query)).mappings().first()
    return dict(found) if found is not None else None
