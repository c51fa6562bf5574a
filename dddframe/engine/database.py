"""The database: one AsyncEngine with per-dialect settings, and the framework schema."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.schema import CreateIndex, CreateTable

from dddframe.errors import ConfigurationError
from dddframe.outbox.sequencer import Sequencer, installed_functions
from dddframe.outbox.tables import POSTGRES_DDL, POSTGRES_FUNCTIONS, framework_metadata

__all__ = ["Database", "schema_ddl"]

_SCHEMA_LOCK = 0x646464_6672  # pg_advisory_xact_lock key of create_schema ("dddfr")

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the single writer; busy_timeout makes writers queue, not fail.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """Owns the AsyncEngine and hands out sessions and connections.

    An in-memory SQLite URL becomes a private temporary file, because the framework needs more
    than one connection (the unit of work and the bus) and SQLite memory databases are per
    connection.
    """

    def __init__(self, url: str, *, echo: bool = False, **engine_options: Any) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigurationError(
                "database_url must be a SQLAlchemy URL such as 'sqlite+aiosqlite:///app.db' or "
                "'postgresql+asyncpg://user@host/db'."
            )
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigurationError(f"database_url {url!r} is not a valid URL: {exc}") from exc
        backend = parsed.get_backend_name()
        if backend not in _DRIVERS:
            raise ConfigurationError(
                f"Unsupported database {backend!r} in {url!r}: use SQLite, PostgreSQL or "
                "MariaDB/MySQL."
            )
        if parsed.drivername in {"sqlite", "postgresql", "mysql", "mariadb"}:
            parsed = parsed.set(drivername=_DRIVERS[backend])
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        options: dict[str, Any] = {"echo": echo, "pool_pre_ping": backend != "sqlite"}
        if backend == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                self._tempdir = tempfile.TemporaryDirectory(prefix="dddframe-")
                parsed = parsed.set(database=os.path.join(self._tempdir.name, "memory.db"))
            options["connect_args"] = {"timeout": 30}
        else:
            options["pool_size"] = 10
            options["max_overflow"] = 20
        options.update(engine_options)
        self.url = parsed
        self.engine: AsyncEngine = create_async_engine(parsed, **options)
        if backend == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB reports ``mysql`` too)."""
        name = self.engine.dialect.name
        return "mysql" if name == "mariadb" else name

    def session(self) -> AsyncSession:
        return self.sessions()

    def connect(self) -> AsyncConnection:
        return self.engine.connect()

    async def create_schema(self, *metadatas: Any) -> None:
        """Create the framework tables and the given model metadata (idempotent)."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Processes starting together take turns (no duplicate-table races), and a
                # schema from an older version gets the server functions it lacks.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK}
                )
            await conn.run_sync(framework_metadata.create_all)
            for md in metadatas:
                await conn.run_sync(md.create_all)
            if self.dialect == "postgresql":
                present = await installed_functions(conn)
                for name, ddl in POSTGRES_FUNCTIONS.items():
                    if name not in present:
                        await conn.execute(ddl)
        async with self.engine.connect() as conn:
            await Sequencer.ensure_lease_row(conn)
            await conn.commit()

    async def drop_schema(self, *metadatas: Any) -> None:
        async with self.engine.begin() as conn:
            for md in metadatas:
                await conn.run_sync(md.drop_all)
            await conn.run_sync(framework_metadata.drop_all)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None


def schema_ddl(dialect: str, *metadatas: Any) -> str:
    """The CREATE statements for the framework tables (and models) in a dialect's SQL.

    >>> "CREATE TABLE dddframe_outbox" in schema_ddl("postgresql")
    True
    """
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    dialects = {"postgresql": postgresql, "mysql": mysql, "mariadb": mysql, "sqlite": sqlite}
    if dialect not in dialects:
        raise ConfigurationError(
            f"Unknown dialect {dialect!r}: choose postgresql, mysql, mariadb or sqlite."
        )
    d = dialects[dialect].dialect()
    parts: list[str] = []
    for md in (framework_metadata, *metadatas):
        for table in md.sorted_tables:
            parts.append(str(CreateTable(table).compile(dialect=d)).strip() + ";")
            for index in sorted(table.indexes, key=lambda i: i.name or ""):
                parts.append(str(CreateIndex(index).compile(dialect=d)).strip() + ";")
    if dialect == "postgresql":  # the NOTIFY trigger and the sequencer's functions
        parts.extend(str(ddl.compile(dialect=d)).strip() + ";" for ddl in POSTGRES_DDL)
    return "\n\n".join(parts) + "\n"
