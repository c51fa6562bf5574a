"""Alembic integration: the framework's schema in your own migrations.

In ``env.py``, give autogenerate the framework's tables next to yours, so it creates them in a
revision and never proposes to drop them::

    from dddframe import Model
    from dddframe.integrations.alembic import framework_metadata

    target_metadata = [Model.metadata, framework_metadata]

Autogenerate sees tables only. The rest of the framework schema (PostgreSQL's NOTIFY trigger and
sequencer functions, the sequencer's seed row, the schema version that workers check) comes from
one call in a revision, after the tables::

    from dddframe.integrations.alembic import upgrade_dddframe

    def upgrade() -> None:
        ...  # the generated op.create_table(...) calls
        upgrade_dddframe()

:func:`upgrade_dddframe` is idempotent and brings a schema of any older dddframe version to the
one this dddframe needs (it creates framework tables that are still missing, too). When a new
dddframe version raises :data:`~dddframe.outbox.schema.SCHEMA_VERSION`, workers refuse to start
("run the dddframe migrations"); add a revision that calls :func:`upgrade_dddframe` again. It
works in offline mode (``alembic upgrade head --sql``) as well, where it creates no tables
unless ``tables=True``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, insert, inspect, literal, select
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from dddframe.errors import missing_extra
from dddframe.outbox.schema import SCHEMA_NAME, SCHEMA_VERSION
from dddframe.outbox.sequencer import SEQUENCER_LEASE
from dddframe.outbox.tables import (
    POSTGRES_FUNCTIONS,
    framework_metadata,
    leases_table,
    schema_table,
)

try:
    from alembic import context as _context
    from alembic import op as _op
except ModuleNotFoundError as _exc:  # pragma: no cover - exercised in tests/packaging
    raise missing_extra(_exc, "alembic", "dddframe.integrations.alembic") from _exc

__all__ = ["SCHEMA_VERSION", "downgrade_dddframe", "framework_metadata", "upgrade_dddframe"]

_TRIGGER = (
    "CREATE TRIGGER dddframe_outbox_notify AFTER INSERT OR UPDATE OF status ON dddframe_outbox "
    "FOR EACH STATEMENT EXECUTE FUNCTION dddframe_outbox_notify()"
)


def _operations(operations: Any) -> Any:
    return _op if operations is None else operations


def upgrade_dddframe(operations: Any = None, *, tables: bool | None = None) -> None:
    """Bring the framework schema to :data:`SCHEMA_VERSION` inside an Alembic revision.

    Creates the framework tables that are missing (online; offline only with ``tables=True``),
    then, on PostgreSQL, (re)creates the NOTIFY trigger and the sequencer functions, adds the
    sequencer's seed row unless present and records the schema version. ``operations`` is
    Alembic's ``op`` (the default) or an ``Operations`` object.
    """
    op = _operations(operations)
    offline = _context.is_offline_mode()
    dialect = op.get_context().dialect.name
    if tables is None:
        tables = not offline
    if tables:
        present = set() if offline else set(inspect(op.get_bind()).get_table_names())
        for table in framework_metadata.sorted_tables:
            if table.name in present:
                continue
            op.execute(CreateTable(table))
            for index in sorted(table.indexes, key=lambda i: i.name or ""):
                op.execute(CreateIndex(index))
    if dialect == "postgresql":
        for ddl in POSTGRES_FUNCTIONS.values():  # CREATE OR REPLACE: safe to repeat
            op.execute(ddl)
        op.execute("DROP TRIGGER IF EXISTS dddframe_outbox_notify ON dddframe_outbox")
        op.execute(_TRIGGER)
    seeded = exists().where(leases_table.c.name == SEQUENCER_LEASE)
    op.execute(
        insert(leases_table).from_select(
            ["name", "value"], select(literal(SEQUENCER_LEASE), literal(0)).where(~seeded)
        )
    )
    op.execute(delete(schema_table).where(schema_table.c.name == SCHEMA_NAME))
    op.execute(insert(schema_table).values(name=SCHEMA_NAME, version=SCHEMA_VERSION))


def downgrade_dddframe(operations: Any = None) -> None:
    """Drop the framework schema (tables, and on PostgreSQL its functions): the inverse of a
    revision that created it. Every undelivered event and dead letter goes with it."""
    op = _operations(operations)
    for table in reversed(framework_metadata.sorted_tables):
        op.execute(DropTable(table, if_exists=True))
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS dddframe_sequence_read(integer, bigint, integer, jsonb)"
        )
        op.execute("DROP FUNCTION IF EXISTS dddframe_sequence(integer)")
        op.execute("DROP FUNCTION IF EXISTS dddframe_outbox_notify()")
