"""A projection's status: where its active generation is, how far behind the outbox head (in
events of its bound names and in seconds), and its rebuild if one is running or interrupted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select, type_coerce

from dddframe.database import Database
from dddframe.outbox.reader import OutboxReader
from dddframe.outbox.records import TolerantTimestamp, as_utc, utcnow
from dddframe.outbox.tables import outbox_table as outbox
from dddframe.projections.store import ProjectionStore

if TYPE_CHECKING:
    from dddframe.projections.registry import RegisteredProjection

__all__ = ["ProjectionStatus", "RebuildStatus", "read_status"]


@dataclass(frozen=True, slots=True)
class RebuildStatus:
    """A rebuild that has not switched: its generation, replayed position and the head it
    started at."""

    generation: int
    state: str
    position: int
    target: int | None


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """``position``: the highest outbox position the active generation applied; ``lag_events``:
    events of its names after it; ``lag_seconds``: how old the oldest of those is (0 when
    none wait); ``head``: the outbox head."""

    name: str
    generation: int
    position: int
    head: int
    lag_events: int
    lag_seconds: float
    last_event_at: datetime | None
    rebuild: RebuildStatus | None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "generation": self.generation,
            "position": self.position,
            "head": self.head,
            "lag_events": self.lag_events,
            "lag_seconds": round(self.lag_seconds, 3),
            "last_event_at": self.last_event_at.isoformat() if self.last_event_at else None,
            "rebuild": None
            if self.rebuild is None
            else {
                "generation": self.rebuild.generation,
                "state": self.rebuild.state,
                "position": self.rebuild.position,
                "target": self.rebuild.target,
            },
        }


async def read_status(database: Database, projection: RegisteredProjection) -> ProjectionStatus:
    """The status of one projection, read in one transaction."""
    store = ProjectionStore(database.dialect)
    names = list(projection.event_names)
    async with database.session() as session, session.begin():
        state = await store.state(session, projection.name)
        live = await store.checkpoint(session, projection.name, state.active_generation)
        position = live.position if live is not None else 0
        conn = await session.connection()
        head = await OutboxReader().head(conn)
        waiting = outbox.c.position > position, outbox.c.name.in_(names)
        lag_events = int(await conn.scalar(select(func.count()).where(*waiting)) or 0)
        oldest = await conn.scalar(
            select(type_coerce(func.min(outbox.c.occurred_at), TolerantTimestamp())).where(*waiting)
        )
        rebuild = None
        if state.rebuild_generation is not None and state.rebuild_state is not None:
            cp = await store.checkpoint(session, projection.name, state.rebuild_generation)
            rebuild = RebuildStatus(
                generation=int(state.rebuild_generation),
                state=state.rebuild_state,
                position=cp.position if cp is not None else 0,
                target=cp.target if cp is not None else None,
            )
    lag_seconds = 0.0
    if lag_events and isinstance(oldest, datetime):
        lag_seconds = max((utcnow() - as_utc(oldest)).total_seconds(), 0.0)
    return ProjectionStatus(
        name=projection.name,
        generation=state.active_generation,
        position=position,
        head=head,
        lag_events=lag_events,
        lag_seconds=lag_seconds,
        last_event_at=live.event_at if live is not None else None,
        rebuild=rebuild,
    )
