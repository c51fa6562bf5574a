"""The framework schema: creating it, dropping it, and printing its DDL per dialect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.schema import CreateIndex, CreateTable

from dddframe.database import Database
from dddframe.errors import ConfigurationError
from dddframe.outbox.sequencer import Sequencer, installed_functions
from dddframe.outbox.tables import POSTGRES_DDL, POSTGRES_FUNCTIONS, framework_metadata

__all__ = ["create_schema", "drop_schema", "schema_ddl"]

_SCHEMA_LOCK = 0x646464_6672  # pg_advisory_xact_lock key of create_schema ("dddfr")


async def create_schema(database: Database, *metadatas: Any) -> None:
    """Create the framework tables and the given model metadata (idempotent)."""
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


async def drop_schema(database: Database, *metadatas: Any) -> None:
    """Drop the given model metadata, then the framework tables."""
    async with database.engine.begin() as conn:
        for md in metadatas:
            await conn.run_sync(md.drop_all)
        await conn.run_sync(framework_metadata.drop_all)


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
