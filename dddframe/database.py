"""The database handle: one AsyncEngine with per-dialect settings (ground layer: it imports
nothing of dddframe but the errors; the framework schema lives in :mod:`dddframe.outbox.schema`)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from dddframe.errors import ConfigurationError, missing_extra

__all__ = ["Database"]

_EXTRAS = {"asyncpg": "postgres", "aiomysql": "mysql", "pymysql": "mysql"}
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
        try:
            self.engine: AsyncEngine = create_async_engine(parsed, **options)
        except ModuleNotFoundError as exc:
            extra = _EXTRAS.get((exc.name or "").partition(".")[0])
            if extra is None:
                raise
            raise missing_extra(exc, extra, f"database_url {parsed.drivername}://") from exc
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

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
