"""The stored state of projections: ``dddframe_projections`` (active generation, rebuild) and
``dddframe_projection_checkpoints`` (how far each generation applied the outbox).

Locking: a live apply reads the projection's row under a shared lock (``FOR SHARE`` on
PostgreSQL, ``LOCK IN SHARE MODE`` on MariaDB/MySQL), so applies run side by side; the
switch of a rebuild takes it exclusively (``FOR UPDATE``). SQLite has one writer: both take the
database's write lock first, with a no-op update of the row, so what they read next is current.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dddframe.domain.envelope import Envelope
from dddframe.errors import SchemaNotReady
from dddframe.outbox.records import as_utc, utcnow
from dddframe.outbox.tables import projection_checkpoints_table as checkpoints
from dddframe.outbox.tables import projections_table as projections

__all__ = ["Checkpoint", "ProjectionState", "ProjectionStore"]

RUNNING = "running"
"""``rebuild_state`` of a rebuild that has not switched (running, or interrupted)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    generation: int
    position: int
    built_through: int
    target: int | None
    event_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProjectionState:
    """One projection's row: the generation readers and live applies use, and the rebuild."""

    name: str
    active_generation: int
    rebuild_generation: int | None
    rebuild_state: str | None
    updated_at: datetime


class ProjectionStore:
    """Reads and writes the two tables; every method runs in the caller's transaction."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    async def ensure(
        self, conn: AsyncConnection, name: str, tables: list[str], keep_history: bool
    ) -> bool:
        """Create the projection's row and generation 1's checkpoint if missing; keep the
        declared tables and the history it needs up to date. True if the row was new."""
        keep_after = 0 if keep_history else None
        found = await conn.scalar(select(projections.c.name).where(projections.c.name == name))
        now = utcnow()
        if found is None:
            await conn.execute(
                insert(projections).values(
                    name=name,
                    active_generation=1,
                    keep_after=keep_after,
                    tables=json.dumps(tables),
                    updated_at=now,
                )
            )
            await conn.execute(
                insert(checkpoints).values(name=name, generation=1, position=0, updated_at=now)
            )
            return True
        await conn.execute(
            update(projections)
            .where(projections.c.name == name)
            .values(keep_after=keep_after, tables=json.dumps(tables))
        )
        return False

    async def state(self, conn: AsyncConnection | AsyncSession, name: str) -> ProjectionState:
        row = (await conn.execute(select(projections).where(projections.c.name == name))).one()
        return _state(row)

    async def lock(self, session: AsyncSession, name: str, *, exclusive: bool) -> ProjectionState:
        """Read the projection's row under a shared or an exclusive lock (see the module)."""
        q = select(projections).where(projections.c.name == name)
        if self.dialect == "sqlite":
            await session.execute(
                update(projections).where(projections.c.name == name).values(name=name)
            )
        else:
            q = q.with_for_update(read=not exclusive)
        row = (await session.execute(q)).one_or_none()
        if row is None:
            raise SchemaNotReady(
                f"Projection {name!r} has no row in dddframe_projections: run "
                "`dddframe schema --create` (or app.create_schema()) after deploying it."
            )
        return _state(row)

    async def checkpoint(
        self, conn: AsyncConnection | AsyncSession, name: str, generation: int
    ) -> Checkpoint | None:
        row = (
            await conn.execute(
                select(checkpoints).where(
                    checkpoints.c.name == name, checkpoints.c.generation == generation
                )
            )
        ).one_or_none()
        if row is None:
            return None
        return Checkpoint(
            generation=int(row.generation),
            position=int(row.position),
            built_through=int(row.built_through),
            target=None if row.target is None else int(row.target),
            event_at=as_utc(row.event_at) if row.event_at is not None else None,
        )

    async def advance(
        self,
        session: AsyncSession,
        name: str,
        generation: int,
        envelope: Envelope,
        *,
        position: int | None = None,
    ) -> None:
        """Record that ``envelope`` was applied to ``generation`` (its position only raises the
        checkpoint: applies of different aggregates may finish out of position order).
        ``position`` is the outbox position of an envelope delivered without one (Kafka, AMQP),
        looked up by the caller; None and no position of its own leave the checkpoint."""
        position = (envelope.position if position is None else position) or 0
        behind = checkpoints.c.position < position
        # MariaDB/MySQL assign left to right, reading columns already set: event_at first.
        await session.execute(
            update(checkpoints)
            .where(checkpoints.c.name == name, checkpoints.c.generation == generation)
            .ordered_values(
                (
                    checkpoints.c.event_at,
                    case((behind, envelope.occurred_at), else_=checkpoints.c.event_at),
                ),
                (checkpoints.c.position, case((behind, position), else_=checkpoints.c.position)),
                (checkpoints.c.updated_at, utcnow()),
            )
        )

    async def replayed(
        self,
        session: AsyncSession,
        name: str,
        generation: int,
        *,
        after: int,
        upto: int,
        event_at: datetime | None,
        built: bool = False,
    ) -> bool:
        """Move a rebuilding generation's checkpoint from ``after`` to ``upto``; False when
        it is not at ``after`` (another rebuild runs, or this one was abandoned)."""
        values: dict[str, object] = {"position": upto, "updated_at": utcnow()}
        if event_at is not None:
            values["event_at"] = event_at
        if built:
            values["built_through"] = upto
        conn = await session.connection()
        result = await conn.execute(
            update(checkpoints)
            .where(
                checkpoints.c.name == name,
                checkpoints.c.generation == generation,
                checkpoints.c.position == after,
            )
            .values(**values)
        )
        return bool(result.rowcount or 0)

    async def begin_rebuild(
        self, session: AsyncSession, name: str, generation: int, *, start: int, target: int
    ) -> None:
        await session.execute(
            delete(checkpoints).where(
                checkpoints.c.name == name, checkpoints.c.generation == generation
            )
        )
        await session.execute(
            insert(checkpoints).values(
                name=name,
                generation=generation,
                position=start,
                built_through=start,
                target=target,
                updated_at=utcnow(),
            )
        )
        await self._set(session, name, rebuild_generation=generation, rebuild_state=RUNNING)

    async def end_rebuild(self, session: AsyncSession, name: str, generation: int) -> None:
        """Forget a rebuild's generation (abandoned, or the old one after a switch)."""
        await session.execute(
            delete(checkpoints).where(
                checkpoints.c.name == name, checkpoints.c.generation == generation
            )
        )

    async def switch(self, session: AsyncSession, name: str, generation: int) -> None:
        await self._set(
            session, name, active_generation=generation, rebuild_generation=None, rebuild_state=None
        )

    async def clear_rebuild(self, session: AsyncSession, name: str) -> None:
        await self._set(session, name, rebuild_generation=None, rebuild_state=None)

    async def _set(self, session: AsyncSession, name: str, **values: object) -> None:
        await session.execute(
            update(projections)
            .where(projections.c.name == name)
            .values(**values, updated_at=utcnow())
        )


def _state(row: object) -> ProjectionState:
    return ProjectionState(
        name=str(row.name),  # type: ignore[attr-defined]
        active_generation=int(row.active_generation),  # type: ignore[attr-defined]
        rebuild_generation=row.rebuild_generation,  # type: ignore[attr-defined]
        rebuild_state=row.rebuild_state,  # type: ignore[attr-defined]
        updated_at=as_utc(row.updated_at),  # type: ignore[attr-defined]
    )
