"""The database handle: one AsyncEngine with per-dialect settings (ground layer: it imports
nothing of dddframe but the errors; the framework schema lives in :mod:`dddframe.outbox.schema`)."""

from __future__ import annotations

import asyncio
import importlib
import os
import tempfile
from collections.abc import Awaitable, Callable
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

from dddframe.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    MissingDependency,
    missing_extra,
)

__all__ = ["Database", "unavailable"]

_EXTRAS = {"asyncpg": "postgres", "aiomysql": "mysql", "pymysql": "mysql"}
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}


# The asyncio driver's connect function, wrapped by Database to time out and to say clearly
# that the server is unreachable.
_CONNECT = {
    "asyncpg": ("asyncpg", "connect"),
    "aiomysql": ("aiomysql", "connect"),
    "asyncmy": ("asyncmy", "connect"),
}

# Driver errors (by class name, the drivers are optional) that mean the connection to the
# server is gone or could not be made, rather than that the statement was wrong.
_LOST = {
    "CannotConnectNowError",  # asyncpg: the server is starting up or shutting down
    "ConnectionDoesNotExistError",  # asyncpg: the connection was closed mid-operation
    "ConnectionFailureError",
    "InterfaceError",  # asyncpg/aiomysql on a closed connection
    "InternalClientError",  # asyncpg: protocol state broken by a lost connection
    "AdminShutdownError",  # PostgreSQL terminated the connection (restart, shutdown)
    "CrashShutdownError",
}
_MYSQL_LOST = {2002, 2003, 2006, 2013, 2055}  # can't connect, gone away, lost during query


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


_DRIVER_MODULES = ("sqlalchemy", "asyncpg", "aiomysql", "pymysql", "asyncmy", "aiosqlite")


def _from_driver(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in (or passed through) the database driver or SQLAlchemy,
    rather than in application code such as a command handler's own network call."""
    if type(exc).__module__.startswith(_DRIVER_MODULES):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES):
            return True
        tb = tb.tb_next
    return False


def unavailable(
    exc: BaseException, url: str = "the database", *, driver: bool = False
) -> DatabaseUnavailable | None:
    """The :class:`~dddframe.errors.DatabaseUnavailable` that ``exc`` stands for, or None when
    ``exc`` is not about reaching the database (a constraint violation, a bad statement, an
    error of the application's own code). ``driver=True``: ``exc`` surely came from the driver.

    >>> refused = ConnectionRefusedError(111, "Connection refused")
    >>> unavailable(refused, "pg://db", driver=True).args[0][:49]
    'The database pg://db cannot be reached: Connectio'
    >>> unavailable(refused) is None  # raised by application code, not by the driver
    True
    """
    if isinstance(exc, DatabaseUnavailable):
        return exc
    from_driver = driver or _from_driver(exc)
    for link in _chain(exc):
        name = type(link).__name__
        code = link.args[0] if link.args and isinstance(link.args[0], int) else None
        ours = type(link).__module__.startswith(_DRIVER_MODULES)
        lost = ours and (name in _LOST or code in _MYSQL_LOST)
        if lost or (isinstance(link, (OSError, TimeoutError)) and (from_driver or ours)):
            detail = f"{type(link).__name__}: {link}" if str(link) else type(link).__name__
            if isinstance(link, TimeoutError):
                detail = f"{detail} (it did not answer in time)"
            return DatabaseUnavailable(
                f"The database {url} cannot be reached: {detail}. Check that the server is "
                "running and reachable from here (host, port, firewall); the call can be "
                "retried once it is. Timeouts: Database(connect_timeout=, command_timeout=).",
                cause=link,
            )
    return None


def _missing_driver(exc: ModuleNotFoundError, drivername: str) -> MissingDependency | None:
    """The error for a database driver that is not installed, naming the extra that brings it
    (None when the missing module is not a driver of ours)."""
    extra = _EXTRAS.get((exc.name or "").partition(".")[0])
    if extra is None:
        return None
    return missing_extra(exc, extra, f"database_url {drivername}://")


def _timed_connect(driver: str, url: str, timeout: float) -> Callable[..., Awaitable[Any]]:
    module, attr = _CONNECT[driver]
    connect = getattr(importlib.import_module(module), attr)

    async def timed(*args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await connect(*args, **kwargs)
        except TimeoutError as exc:
            raise DatabaseUnavailable(
                f"The database {url} did not answer within {timeout:g} s while connecting "
                "(connect_timeout). Check that the server is up and not overloaded, and that "
                "host and port point to the database server; raise "
                "Database(connect_timeout=...) for a slow network.",
                cause=exc,
            ) from exc
        except Exception as exc:
            found = unavailable(exc, url, driver=True)
            if found is None:
                raise
            raise found from exc

    return timed


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

    ``connect_timeout`` (seconds, default 10) bounds opening a connection, handshake included;
    ``command_timeout`` (seconds, default 60, None for no limit) bounds each statement on
    PostgreSQL. A server that refuses, cannot be reached or does not answer in time raises
    :class:`~dddframe.errors.DatabaseUnavailable` naming the cause. Pooled connections are not
    pinged before use: a command whose connection died in the pool (a database restart) runs
    again on a fresh one, before anything of it committed; pass ``pool_pre_ping=True`` to ping
    anyway (other code that uses :meth:`session` directly then never sees a dead connection
    either). From an Application:
    ``Application(..., engine_options={"connect_timeout": 5, "command_timeout": 30})``.
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 60.0,
        **engine_options: Any,
    ) -> None:
        for label, value in (
            ("connect_timeout", connect_timeout),
            ("command_timeout", command_timeout),
        ):
            if value is None and label == "command_timeout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(
                    f"{label} must be a number of seconds > 0, not {value!r}"
                    + (" (or None for no limit)." if label == "command_timeout" else ".")
                )
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
        # No pre-ping (a round trip per checkout): a command whose pooled connection turns out
        # dead is run again on a fresh one by the engine, and the loops retry their pass.
        options: dict[str, Any] = {"echo": echo}
        if backend == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                self._tempdir = tempfile.TemporaryDirectory(prefix="dddframe-")
                parsed = parsed.set(database=os.path.join(self._tempdir.name, "memory.db"))
            options["connect_args"] = {"timeout": 30}
        else:
            options["pool_size"] = 10
            options["max_overflow"] = 20
            shown = parsed.render_as_string(hide_password=True)
            connect_args: dict[str, Any] = {}
            driver = parsed.get_driver_name()
            if driver in _CONNECT:
                try:
                    creator = _timed_connect(driver, shown, connect_timeout)
                except ModuleNotFoundError as exc:
                    missing = _missing_driver(exc, parsed.drivername)
                    if missing is None:
                        raise
                    raise missing from exc
                connect_args["async_creator_fn"] = creator
            if driver == "asyncpg" and command_timeout is not None:
                connect_args["command_timeout"] = command_timeout
            options["connect_args"] = connect_args
        user_args = engine_options.pop("connect_args", None)
        if user_args:
            options["connect_args"] = {**options.get("connect_args", {}), **user_args}
        options.update(engine_options)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.url = parsed
        try:
            self.engine: AsyncEngine = create_async_engine(parsed, **options)
        except ModuleNotFoundError as exc:
            missing = _missing_driver(exc, parsed.drivername)
            if missing is None:
                raise
            raise missing from exc
        if backend == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def dialect(self) -> str:
        """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB reports ``mysql`` too)."""
        name = self.engine.dialect.name
        return "mysql" if name == "mariadb" else name

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable | None:
        """``exc`` as :class:`~dddframe.errors.DatabaseUnavailable` naming this database, or
        None when it is not about reaching the database (see :func:`unavailable`)."""
        return unavailable(exc, self.url.render_as_string(hide_password=True))

    def session(self) -> AsyncSession:
        return self.sessions()

    def connect(self) -> AsyncConnection:
        return self.engine.connect()

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
