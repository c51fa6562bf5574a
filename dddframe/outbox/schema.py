"""The framework schema: creating it, checking it, dropping it, and printing its DDL per dialect.

The schema is more than tables: on PostgreSQL a trigger and server functions, on every dialect
the sequencer's seed row in ``dddframe_leases`` and the schema version in ``dddframe_schema``.
:func:`schema_ddl` prints all of it (what :func:`create_schema` makes), :func:`server_ddl` the
part after the tables (what a migration tool does not generate from the metadata), and
:func:`check_schema` tells a process whether the database is ready for this dddframe.

>>> print(server_ddl("sqlite")[-1])
INSERT INTO dddframe_schema (name, version) VALUES ('dddframe', 4);
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from sqlalchemy import insert, inspect, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable

from dddframe.database import Database
from dddframe.errors import ConfigurationError, SchemaNotReady
from dddframe.outbox.sequencer import SEQUENCER_LEASE, Sequencer, installed_functions
from dddframe.outbox.tables import (
    POSTGRES_DDL,
    POSTGRES_FUNCTIONS,
    framework_metadata,
    leases_table,
    projections_table,
    schema_table,
)

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "check_schema",
    "create_schema",
    "drop_schema",
    "schema_ddl",
    "schema_version",
    "server_ddl",
]

SCHEMA_VERSION = 4
"""The version of the framework's schema this dddframe needs (raised whenever it changes):
2 added ``dddframe_schedules``, 3 ``dddframe_projections`` and
``dddframe_projection_checkpoints``, 4 ``dddframe_process_waiting`` (and the ``held_by``
column of process-manager tables)."""
SCHEMA_NAME = "dddframe"
"""The ``dddframe_schema`` row that holds it."""

_SCHEMA_LOCK = 0x646464_6672  # pg_advisory_xact_lock key of create_schema ("dddfr")
_HOW = (
    "run the dddframe migrations (`alembic upgrade head` with a revision that calls "
    "dddframe.integrations.alembic.upgrade_dddframe(), or `dddframe schema --create --app ...`), "
    "or start the process with --create-schema"
)


async def create_schema(database: Database, *metadatas: Any) -> None:
    """Create the framework tables and the given model metadata, the server functions, the seed
    rows and the schema version (idempotent; brings a schema of an older version up to date)."""
    async with database.engine.begin() as conn:
        if database.dialect == "postgresql":
            # Processes starting together take turns (no duplicate-table races), and a
            # schema from an older version gets the server functions it lacks.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        await conn.run_sync(framework_metadata.create_all)
        for md in metadatas:
            await conn.run_sync(md.create_all)
        if database.dialect == "postgresql":
            present = await installed_functions(conn)
            for name, ddl in POSTGRES_FUNCTIONS.items():
                if name not in present:
                    await conn.execute(ddl)
    async with database.engine.connect() as conn:
        await Sequencer.ensure_lease_row(conn)
        await conn.commit()
        await _record_version(conn)
        await conn.commit()


async def _record_version(conn: AsyncConnection) -> None:
    found = await conn.scalar(
        select(schema_table.c.version).where(schema_table.c.name == SCHEMA_NAME)
    )
    if found is None:
        await conn.execute(insert(schema_table).values(name=SCHEMA_NAME, version=SCHEMA_VERSION))
    elif found < SCHEMA_VERSION:
        await conn.execute(
            update(schema_table)
            .where(schema_table.c.name == SCHEMA_NAME)
            .values(version=SCHEMA_VERSION)
        )


async def schema_version(conn: AsyncConnection) -> int | None:
    """The framework schema version in the database: None without framework tables, 0 for
    tables made before versions were recorded (or from incomplete DDL)."""
    names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    if "dddframe_leases" not in names:
        return None
    if "dddframe_schema" not in names:
        return 0
    found = await conn.scalar(
        select(schema_table.c.version).where(schema_table.c.name == SCHEMA_NAME)
    )
    return int(found or 0)


async def check_schema(database: Database) -> None:
    """Raise :class:`~dddframe.errors.SchemaNotReady` unless the database holds the framework
    schema at :data:`SCHEMA_VERSION`, with its seed rows. Reads only (a role without CREATE
    privilege may call it)."""
    async with database.engine.connect() as conn:
        version = await schema_version(conn)
        seeded = version is not None and (
            await conn.scalar(
                select(leases_table.c.name).where(leases_table.c.name == SEQUENCER_LEASE)
            )
            is not None
        )
    where = database.engine.url.render_as_string(hide_password=True)
    if version is None:
        raise SchemaNotReady(f"The dddframe tables do not exist in {where}: {_HOW}.")
    if version > SCHEMA_VERSION:
        raise SchemaNotReady(
            f"The dddframe schema in {where} is at version {version}, newer than this dddframe "
            f"knows ({SCHEMA_VERSION}): upgrade dddframe in this process's environment."
        )
    if version < SCHEMA_VERSION:
        raise SchemaNotReady(
            f"The dddframe schema in {where} is at version {version}; this dddframe needs "
            f"version {SCHEMA_VERSION}: {_HOW}."
        )
    if not seeded:
        raise SchemaNotReady(
            f"dddframe_leases in {where} has no {SEQUENCER_LEASE!r} row, so no event would be "
            f"delivered: {_HOW}."
        )


async def drop_schema(database: Database, *metadatas: Any) -> None:
    """Drop the given model metadata, every generation of the projections' tables, then the
    framework tables."""
    async with database.engine.begin() as conn:
        for md in metadatas:
            await conn.run_sync(md.drop_all)
        await conn.run_sync(_drop_projection_tables)
        await conn.run_sync(framework_metadata.drop_all)


def _drop_projection_tables(conn: Any) -> None:
    """Drop the tables of every generation the projections recorded (``name``, ``name__g2``)."""
    names = set(inspect(conn).get_table_names())
    if projections_table.name not in names:
        return
    declared: set[str] = set()
    for (stored,) in conn.execute(select(projections_table.c.tables)):
        with contextlib.suppress(ValueError, TypeError):
            declared.update(str(t) for t in json.loads(stored))
    for name in sorted(names):
        base, _, generation = name.rpartition("__g")
        if name in declared or (base in declared and generation.isdigit()):
            conn.execute(text(f"DROP TABLE {conn.dialect.identifier_preparer.quote(name)}"))


def _dialect(name: str) -> Dialect:
    from sqlalchemy.dialects import mysql, postgresql, sqlite
    from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect

    dialects: dict[str, type[Dialect]] = {
        "postgresql": postgresql.dialect,
        "mysql": mysql.dialect,
        "mariadb": MariaDBDialect,  # native UUID columns, unlike MySQL's CHAR(32)
        "sqlite": sqlite.dialect,
    }
    if name not in dialects:
        raise ConfigurationError(
            f"Unknown dialect {name!r}: choose postgresql, mysql, mariadb or sqlite."
        )
    return dialects[name]()


def server_ddl(dialect: str) -> list[str]:
    """The statements that follow the framework tables, each ending in ``;``: on PostgreSQL the
    NOTIFY trigger and the sequencer's functions, then (every dialect) the sequencer's seed
    row and the schema version row. For a fresh database; :mod:`dddframe.integrations.alembic`
    applies them idempotently in a revision.

    >>> for statement in server_ddl("postgresql"):
    ...     print(" ".join(statement.split()[:5]))
    CREATE OR REPLACE FUNCTION dddframe_outbox_notify()
    CREATE TRIGGER dddframe_outbox_notify AFTER INSERT
    CREATE OR REPLACE FUNCTION dddframe_sequence(batch
    CREATE OR REPLACE FUNCTION dddframe_sequence_read(p_batch
    INSERT INTO dddframe_leases (name, value)
    INSERT INTO dddframe_schema (name, version)
    """
    d = _dialect(dialect)
    parts: list[str] = []
    if dialect == "postgresql":
        parts.extend(str(ddl.compile(dialect=d)).strip() + ";" for ddl in POSTGRES_DDL)
    for statement in (
        insert(leases_table).values(name=SEQUENCER_LEASE, value=0),
        insert(schema_table).values(name=SCHEMA_NAME, version=SCHEMA_VERSION),
    ):
        sql = statement.compile(dialect=d, compile_kwargs={"literal_binds": True})
        parts.append(str(sql).strip() + ";")
    return parts


def schema_ddl(dialect: str, *metadatas: Any) -> str:
    """Everything :func:`create_schema` makes, in a dialect's SQL: the framework tables (and
    those of ``metadatas``) with their indexes, then :func:`server_ddl`. A database built from
    this text alone delivers events.

    >>> ddl = schema_ddl("postgresql")
    >>> "CREATE TABLE dddframe_outbox" in ddl and "'dddframe.sequencer'" in ddl
    True
    """
    d = _dialect(dialect)
    parts: list[str] = []
    for md in (framework_metadata, *metadatas):
        for table in md.sorted_tables:
            parts.append(str(CreateTable(table).compile(dialect=d)).strip() + ";")
            for index in sorted(table.indexes, key=lambda i: i.name or ""):
                parts.append(str(CreateIndex(index).compile(dialect=d)).strip() + ";")
    parts.extend(server_ddl(dialect))
    return "\n\n".join(parts) + "\n"
