"""Blue/green rebuild of a projection from the outbox history.

1. **Start**: check that no rebuild of the projection is running and that the outbox still
   holds every position after the start (else :class:`~dddframe.errors.HistoryMissing` naming
   the removed range, and nothing changes); create generation ``active + 1``'s tables (after
   dropping a leftover of that generation and the one retired by the previous switch) and
   record the rebuild in ``dddframe_projections``.
2. **Replay**: in batches, each one transaction that applies the events of the bound names to
   the new generation and moves its checkpoint (guarded: a checkpoint moved or deleted by
   someone else stops this rebuild). The live generation keeps serving and applying.
3. **Switch**: once less than a batch is left, one transaction takes the projection's row
   exclusively (live applies wait), replays the rest up to the head, records that the new
   generation was built through that position and makes it active. Live deliveries after it
   apply to the new generation and skip positions it was built through; the old one stops
   changing and is dropped by the next rebuild.

An interrupted rebuild (a crash, Ctrl-C, a failing handler) keeps its checkpoint:
:meth:`Rebuilder.resume` continues, :meth:`Rebuilder.abandon` drops its tables. Neither
touches the live generation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from dddframe.database import Database
from dddframe.domain.events import EventRegistry
from dddframe.errors import HistoryMissing, InvalidArgument, RebuildStateError
from dddframe.outbox.reader import OutboxReader
from dddframe.projections.history import missing_range
from dddframe.projections.live import apply_envelope
from dddframe.projections.rows import RowCache
from dddframe.projections.store import RUNNING, ProjectionState, ProjectionStore

if TYPE_CHECKING:
    from dddframe.projections.registry import RegisteredProjection

__all__ = ["Progress", "RebuildProgress", "RebuildResult", "Rebuilder"]

log = logging.getLogger("dddframe.projections")


@dataclass(frozen=True, slots=True)
class RebuildProgress:
    """How far a rebuild is: positions ``start .. position`` replayed of ``start .. head``."""

    name: str
    generation: int
    start: int
    position: int
    head: int
    applied: int

    @property
    def remaining(self) -> int:
        return max(self.head - self.position, 0)


Progress = Callable[[RebuildProgress], None]
"""Called after every committed batch (and once after the switch)."""


@dataclass(frozen=True, slots=True)
class RebuildResult:
    """A finished rebuild: the generation now active, the one it replaced, the position it was
    built through and how many events this run replayed."""

    name: str
    generation: int
    previous: int
    built_through: int
    applied: int


class Rebuilder:
    """Rebuilds one projection (see the module)."""

    def __init__(
        self, projection: RegisteredProjection, *, database: Database, registry: EventRegistry
    ) -> None:
        self.projection = projection
        self.database = database
        self.registry = registry
        self.store = ProjectionStore(database.dialect)
        self.reader = OutboxReader()

    @property
    def name(self) -> str:
        return self.projection.name

    async def rebuild(
        self,
        *,
        from_position: int | None = None,
        batch_size: int = 500,
        progress: Progress | None = None,
    ) -> RebuildResult:
        """Start a rebuild (from position 0, or after ``from_position``) and run it through the
        switch."""
        _check_batch(batch_size)
        start = 0 if from_position is None else from_position
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise InvalidArgument(
                f"from_position must be an outbox position (an int >= 0), not {from_position!r}"
            )
        async with self.database.session() as session:
            state = await self.store.state(session, self.name)
        self._check_idle(state)
        generation = state.active_generation + 1
        async with self.database.engine.begin() as conn:
            retired = state.active_generation - 1
            if retired >= 1:
                await self.projection.generation(retired).drop(conn)
            await self.projection.generation(generation).drop(conn)
        async with self.database.engine.begin() as conn:
            await self.projection.generation(generation).create(conn)
        async with self.database.session() as session, session.begin():
            locked = await self.store.lock(session, self.name, exclusive=True)
            self._check_idle(locked)
            if locked.active_generation != state.active_generation:
                raise RebuildStateError(
                    f"Projection {self.name!r} switched generation while this rebuild started: "
                    "run it again."
                )
            conn = await session.connection()
            head = await self.reader.head(conn)
            if start > head:
                raise InvalidArgument(
                    f"--from {start} is past the outbox head ({head}): give a position <= {head}"
                )
            gap = await missing_range(conn, start, head)
            if gap is not None:
                raise HistoryMissing(
                    f"Cannot rebuild projection {self.name!r} from position {start}: the outbox "
                    f"no longer holds positions {gap[0]}..{gap[1]} (removed by retention). "
                    "Nothing was changed; the live projection keeps serving. Rebuild from a "
                    f"position at or after {gap[1]} (--from {gap[1]}) if the events before it "
                    "do not matter to it, and set keep_history = True on the projection so "
                    "retention keeps what it needs."
                )
            await self.store.begin_rebuild(session, self.name, generation, start=start, target=head)
        log.info("%s: rebuilding into generation %d from position %d", self.name, generation, start)
        return await self._run(generation, batch_size, progress, fresh=True)

    async def resume(
        self, *, batch_size: int = 500, progress: Progress | None = None
    ) -> RebuildResult:
        """Continue the interrupted rebuild from its checkpoint, then switch."""
        _check_batch(batch_size)
        async with self.database.session() as session:
            state = await self.store.state(session, self.name)
        generation = self._running(state, "resume")
        async with self.database.engine.begin() as conn:
            await self.projection.generation(generation).create(conn)
        return await self._run(generation, batch_size, progress, fresh=False)

    async def abandon(self) -> int:
        """Forget the interrupted rebuild and drop its tables; returns its generation."""
        async with self.database.session() as session, session.begin():
            state = await self.store.lock(session, self.name, exclusive=True)
            generation = self._running(state, "abandon")
            await self.store.end_rebuild(session, self.name, generation)
            await self.store.clear_rebuild(session, self.name)
        async with self.database.engine.begin() as conn:
            await self.projection.generation(generation).drop(conn)
        log.info("%s: abandoned the rebuild of generation %d", self.name, generation)
        return generation

    # -- the replay and the switch -------------------------------------------------------

    async def _run(
        self, generation: int, batch_size: int, progress: Progress | None, *, fresh: bool
    ) -> RebuildResult:
        # The rebuild is the only writer of the generation it builds, so rows put through
        # views stay valid from batch to batch; tables created for this run start empty.
        rows = RowCache(self.database.dialect, known_empty=fresh)
        applied = 0
        start: int | None = None
        while True:
            async with self.database.session() as session, session.begin():
                state = await self.store.state(session, self.name)
                self._check_current(state, generation)
                checkpoint = await self.store.checkpoint(session, self.name, generation)
                if checkpoint is None:
                    raise self._abandoned(generation)
                if start is None:
                    start = checkpoint.position
                conn = await session.connection()
                head = await self.reader.head(conn)
                if head - checkpoint.position <= batch_size:
                    break
                upto, count = await self._replay(
                    session, generation, checkpoint.position, batch_size, rows=rows
                )
            applied += count
            if progress is not None:
                progress(RebuildProgress(self.name, generation, start, upto, head, applied))
        switched, count = await self._switch(generation, batch_size, rows)
        applied += count
        if progress is not None:
            progress(RebuildProgress(self.name, generation, start, switched, switched, applied))
        previous = state.active_generation
        log.info("%s: generation %d is active (built through %d)", self.name, generation, switched)
        return RebuildResult(self.name, generation, previous, switched, applied)

    async def _replay(
        self,
        session: AsyncSession,
        generation: int,
        after: int,
        batch_size: int,
        head: int | None = None,
        *,
        rows: RowCache,
        built: bool = True,
    ) -> tuple[int, int]:
        """Apply one batch after ``after`` to ``generation`` and move its checkpoint."""
        conn = await session.connection()
        envelopes, upto = await self.reader.read(
            conn,
            after=after,
            limit=batch_size,
            names=self.projection.event_names,
            head=head,
        )
        # A failure here ends the rebuild's run, and ``rows`` with it: no cache outlives a
        # transaction that rolled back.
        for envelope in envelopes:
            await apply_envelope(
                session, self.projection, generation, envelope, self.registry, rows
            )
        await rows.flush(session)
        event_at = envelopes[-1].occurred_at if envelopes else None
        moved = await self.store.replayed(
            session, self.name, generation, after=after, upto=upto, event_at=event_at, built=built
        )
        if not moved:
            raise RebuildStateError(
                f"The checkpoint of projection {self.name!r} generation {generation} moved "
                "under this rebuild: another rebuild of it runs, or it was abandoned. Nothing of "
                "this batch was kept."
            )
        return upto, len(envelopes)

    async def _switch(self, generation: int, batch_size: int, rows: RowCache) -> tuple[int, int]:
        """Catch up to the head and make ``generation`` active, in one transaction."""
        applied = 0
        async with self.database.session() as session, session.begin():
            state = await self.store.lock(session, self.name, exclusive=True)
            self._check_current(state, generation)
            checkpoint = await self.store.checkpoint(session, self.name, generation)
            if checkpoint is None:
                raise self._abandoned(generation)
            head = await self.reader.head(await session.connection())
            position = checkpoint.position
            while True:
                upto, count = await self._replay(
                    session, generation, position, batch_size, head, rows=rows
                )
                applied += count
                if upto == position or upto >= head:
                    position = upto
                    break
                position = upto
            await self.store.switch(session, self.name, generation)
            await self.store.end_rebuild(session, self.name, state.active_generation)
        return position, applied

    # -- state checks --------------------------------------------------------------------

    def _check_idle(self, state: ProjectionState) -> None:
        if state.rebuild_state == RUNNING:
            raise RebuildStateError(
                f"A rebuild of projection {self.name!r} into generation "
                f"{state.rebuild_generation} is running or was interrupted: resume it "
                f"(`dddframe projections rebuild {self.name} --resume`) or abandon it "
                "(`--abandon`) first."
            )

    def _running(self, state: ProjectionState, action: str) -> int:
        if state.rebuild_state != RUNNING or state.rebuild_generation is None:
            raise RebuildStateError(
                f"Projection {self.name!r} has no interrupted rebuild to {action}; start one "
                f"with `dddframe projections rebuild {self.name}`."
            )
        return int(state.rebuild_generation)

    def _check_current(self, state: ProjectionState, generation: int) -> None:
        if state.rebuild_state != RUNNING or state.rebuild_generation != generation:
            raise self._abandoned(generation)

    def _abandoned(self, generation: int) -> RebuildStateError:
        return RebuildStateError(
            f"The rebuild of projection {self.name!r} into generation {generation} was "
            "abandoned (or finished) while this one ran; nothing more was written."
        )


def _check_batch(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgument(f"batch_size must be an int >= 1, not {batch_size!r}")
