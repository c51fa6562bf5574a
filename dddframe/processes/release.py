"""Running what waits behind held process-manager instances, and the operator's view of them.

See :mod:`dddframe.processes.holds` for what holds an instance and how the hold is handed on;
:class:`Releases` runs a :class:`~dddframe.processes.timers.ProcessRelease` (one waiting entry
in the release's own unit of work), lists held instances and gives up on what holds one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from dddframe.bus.listener import decode_event
from dddframe.domain.envelope import CAUSATION_ID, CORRELATION_ID
from dddframe.engine.unit_of_work import UnitOfWork
from dddframe.errors import UsageError
from dddframe.outbox.records import utcnow
from dddframe.processes.context import ProcessContext, StepScope
from dddframe.processes.holds import (
    WAITING,
    HeldInstance,
    Waiting,
    count_waiting,
    drop_waiting,
    hand_on,
    next_waiting,
)
from dddframe.processes.timers import ProcessRelease

if TYPE_CHECKING:
    from dddframe.processes.manager import ProcessManager
    from dddframe.processes.steps import ProcessRuntime

__all__ = ["Releases"]

log = logging.getLogger("dddframe.processes")


class Releases:
    """The held instances of one process manager (``runtime.releases``)."""

    def __init__(self, runtime: ProcessRuntime) -> None:
        self.runtime = runtime

    async def release(self, command: ProcessRelease, uow: UnitOfWork) -> None:
        """Run the first entry waiting behind the held instance ``command.key`` (inside the
        release's own claimed unit of work), then hand the hold on."""
        rt = self.runtime
        key = command.key
        instance = await uow.session.get(rt.cls, key)
        held_by = None if instance is None else instance.held_by
        if instance is None or held_by is None or not held_by.startswith(WAITING):
            log.info("%s %r: nothing to release (held by %s)", rt.name, key, held_by)
            return
        uow.track(instance)
        flag_modified(instance, "completed")
        entries = await next_waiting(uow.session, rt.name, key)
        if not entries:
            instance.held_by = None
            return
        entry = entries[0]
        if held_by != entry.ref:
            log.warning("%s %r: held by %s, releasing %s", rt.name, key, held_by, entry.ref)
        drop_waiting(uow, rt.name, key, entry.id)
        scope: StepScope | None = None
        if instance.completed:
            log.info("%s %r is completed; its waiting %s is ignored", rt.name, key, entry.ref)
        elif entry.timer is not None:
            if rt.timer_stands(instance, key, entry.timer, entry.token or ""):
                scope = await rt.fire_step(instance, entry.timer, entry.token or "", uow)
        else:
            scope = await self._run_waiting(instance, entry, uow)
        scope = scope or StepScope(rt, uow, instance, dict(uow.headers))
        await hand_on(
            uow, rt.name, instance, after=entry.id, release=lambda: rt.schedule_release(scope)
        )
        if scope.due_now:
            uow.after_commit(rt.wake)

    async def _run_waiting(
        self, instance: ProcessManager, entry: Waiting, uow: UnitOfWork
    ) -> StepScope:
        rt = self.runtime
        envelope = entry.envelope()
        step = rt.steps.get(envelope.name)
        if step is None:
            raise UsageError(
                f"{rt.name} has no step for the waiting {envelope.name[:200]!r} any more; "
                f"`dddframe processes release {rt.name} KEY` skips it."
            )
        event = decode_event(envelope, step.event_type, rt.registry)
        event_id = str(envelope.event_id)
        headers = {CORRELATION_ID: envelope.correlation_id or event_id, CAUSATION_ID: event_id}
        scope = StepScope(rt, uow, instance, headers)
        ctx = ProcessContext(rt.name, str(instance.id), envelope, 1, headers, scope)
        await rt.call_step(step, instance, event, ctx, scope)
        return scope

    async def held(self, *, limit: int = 100) -> list[HeldInstance]:
        """This process's held instances (at most ``limit``), longest waiting first."""
        rt = self.runtime
        cls = rt.cls
        async with rt.engine.database.session() as session:
            rows = (
                await session.execute(
                    select(cls.id, cls.held_by).where(cls.held_by.is_not(None)).limit(limit)
                )
            ).all()
            counts = await count_waiting(session, rt.name, [str(r[0]) for r in rows])
        found = [
            HeldInstance(rt.name, str(k), str(h), *counts.get(str(k), (0, None))) for k, h in rows
        ]
        found.sort(key=lambda h: (h.since is None, h.since or utcnow(), h.key))
        return found

    async def skip_head(self, key: str) -> str | None:
        """Give up on what holds the instance ``key`` (an event whose dead letter was purged,
        or a waiting entry that cannot run) and release what waits behind it; returns what
        was skipped, or None when the instance is not held."""
        rt = self.runtime
        skipped: list[str] = []

        async def work(uow: UnitOfWork) -> None:
            skipped.clear()
            instance = await uow.session.get(rt.cls, key)
            if instance is None or instance.held_by is None:
                return
            held_by = instance.held_by
            skipped.append(held_by)
            uow.track(instance)
            flag_modified(instance, "completed")
            after = 0
            if held_by.startswith(WAITING):
                entries = await next_waiting(uow.session, rt.name, key)
                if entries:
                    after = entries[0].id
                    drop_waiting(uow, rt.name, key, after)
            scope = StepScope(rt, uow, instance, {})
            scopes.append(scope)
            await hand_on(
                uow, rt.name, instance, after=after, release=lambda: rt.schedule_release(scope)
            )

        scopes: list[StepScope] = []
        await rt.engine.transact(work, name=f"{rt.name}.release")
        if scopes:
            await rt.run_now(scopes[-1].due_now)
        if skipped:
            log.warning("%s %r: skipped %s, which held it", rt.name, key, skipped[0])
        return skipped[0] if skipped else None
