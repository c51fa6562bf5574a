"""Named leases in ``dddframe_leases``: who owns a subscription, a relay or a periodic job.

A lease has an owner and an expiry. ``acquire`` takes a free or expired lease, or renews one's
own, with a compare-and-swap on the row's ``value`` (a fencing counter), so two processes can
never both believe they took it. Owners renew well before the expiry (a heartbeat); a process
that dies simply stops renewing and another takes over after ``ttl`` seconds. A process that
stops gracefully calls :meth:`Leases.release_all`, so nothing it held waits for the expiry.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from dddframe.database import Database
from dddframe.errors import ConfigurationError
from dddframe.ids import uuid7
from dddframe.outbox.records import as_utc, utcnow
from dddframe.outbox.tables import leases_table

__all__ = ["Leases", "process_owner"]

_t = leases_table


def process_owner() -> str:
    """A lease owner name unique to this bus in this process: ``host:pid:random``, so an
    operator can tell which process holds a lease, and two buses in one process differ."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid7().hex[-8:]}"


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching names that start with ``prefix`` literally (escape ``\\``)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Leases:
    """Leases held by one ``owner`` (a worker process).

    ``held`` is the set of names this object acquired and has not released or lost since.
    """

    def __init__(self, database: Database, owner: str, ttl: float = 10.0) -> None:
        if ttl <= 0:
            raise ConfigurationError("ttl must be > 0")
        self.database = database
        self.owner = owner
        self.ttl = ttl
        self.held: set[str] = set()

    async def acquire(self, name: str) -> bool:
        """Take or renew ``name``; False while another live owner holds it."""
        # Counted as held before the attempt: if the caller is cancelled after the commit, the
        # lease is still released by release_all (releasing one we do not own is a no-op).
        self.held.add(name)
        taken = await self._acquire(name)
        if not taken:
            self.held.discard(name)
        return taken

    async def _acquire(self, name: str) -> bool:
        now = utcnow()
        expires = now + timedelta(seconds=self.ttl)
        async with self.database.connect() as conn:
            row = (
                await conn.execute(
                    select(_t.c.owner, _t.c.expires_at, _t.c.value).where(_t.c.name == name)
                )
            ).first()
            if row is None:
                try:
                    await conn.execute(
                        insert(_t).values(name=name, owner=self.owner, expires_at=expires, value=1)
                    )
                    await conn.commit()
                    return True
                except IntegrityError:
                    await conn.rollback()
                    return await self._acquire(name)
            owner, expires_at, value = row
            expires_at = as_utc(expires_at)
            if owner not in (None, self.owner) and expires_at is not None and expires_at > now:
                return False
            result = await conn.execute(
                update(_t)
                .where(_t.c.name == name, _t.c.value == value)
                .values(owner=self.owner, expires_at=expires, value=value + 1)
            )
            await conn.commit()
            return bool(result.rowcount == 1)

    async def release(self, name: str) -> None:
        """Give ``name`` up now (if we hold it), so another owner can take it at once."""
        self.held.discard(name)
        async with self.database.connect() as conn:
            await conn.execute(
                update(_t)
                .where(_t.c.name == name, _t.c.owner == self.owner)
                .values(owner=None, expires_at=None, value=_t.c.value + 1)
            )
            await conn.commit()

    async def forget(self, name: str) -> None:
        """Delete our own lease row ``name`` (for names no other owner will ever take, such as
        a worker's heartbeat): nothing is left behind once we stop."""
        self.held.discard(name)
        async with self.database.connect() as conn:
            await conn.execute(delete(_t).where(_t.c.name == name, _t.c.owner == self.owner))
            await conn.commit()

    async def release_all(self, *, forget: tuple[str, ...] = ()) -> None:
        """Release every lease we hold; rows whose name starts with one of ``forget`` are
        deleted instead (per-process names nobody else takes over)."""
        for name in sorted(self.held):
            if forget and name.startswith(forget):
                await self.forget(name)
            else:
                await self.release(name)

    async def expire(self, prefix: str, *, grace: float) -> int:
        """Delete the rows named ``prefix...`` that expired more than ``grace`` seconds ago or
        were released (per-process leases of workers that died); returns how many. Only for
        names that are never taken over: a deleted row loses its fencing counter."""
        cutoff = utcnow() - timedelta(seconds=grace)
        async with self.database.connect() as conn:
            result = await conn.execute(
                delete(_t).where(
                    _t.c.name.like(_like_prefix(prefix), escape="\\"),
                    or_(_t.c.owner.is_(None), _t.c.expires_at.is_(None), _t.c.expires_at < cutoff),
                )
            )
            await conn.commit()
        return int(result.rowcount or 0)

    async def live(self, prefix: str) -> dict[str, str]:
        """Unexpired leases whose name starts with ``prefix``: name -> owner."""
        now = utcnow()
        async with self.database.connect() as conn:
            rows = (
                await conn.execute(
                    select(_t.c.name, _t.c.owner, _t.c.expires_at).where(
                        _t.c.name.like(_like_prefix(prefix), escape="\\"),
                        _t.c.owner.is_not(None),
                    )
                )
            ).all()
        out: dict[str, str] = {}
        for name, owner, expires_at in rows:
            exp = as_utc(expires_at)
            if exp is not None and exp > now and name.startswith(prefix):
                out[name] = owner
        return out
