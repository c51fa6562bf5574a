"""Named leases in ``dddframe_leases``: who owns a subscription, a relay or a periodic job.

A lease has an owner and an expiry. ``acquire`` takes a free or expired lease, or renews one's
own, with a compare-and-swap on the row's ``value`` (a fencing counter), so two processes can
never both believe they took it. Owners renew well before the expiry (a heartbeat); a process
that dies simply stops renewing and another takes over after ``ttl`` seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from dddframe.database import Database
from dddframe.outbox.records import utcnow
from dddframe.outbox.tables import leases_table

__all__ = ["Leases"]

_t = leases_table


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=utcnow().tzinfo)  # SQLite/MariaDB return naive UTC


class Leases:
    """Leases held by one ``owner`` (a worker process)."""

    def __init__(self, database: Database, owner: str, ttl: float = 10.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.database = database
        self.owner = owner
        self.ttl = ttl

    async def acquire(self, name: str) -> bool:
        """Take or renew ``name``; False while another live owner holds it."""
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
                    return await self.acquire(name)
            owner, expires_at, value = row
            expires_at = _aware(expires_at)
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
        async with self.database.connect() as conn:
            await conn.execute(
                update(_t)
                .where(_t.c.name == name, _t.c.owner == self.owner)
                .values(owner=None, expires_at=None, value=_t.c.value + 1)
            )
            await conn.commit()

    async def live(self, prefix: str) -> dict[str, str]:
        """Unexpired leases whose name starts with ``prefix``: name -> owner."""
        now = utcnow()
        async with self.database.connect() as conn:
            rows = (
                await conn.execute(
                    select(_t.c.name, _t.c.owner, _t.c.expires_at).where(
                        _t.c.name.like(prefix + "%"), _t.c.owner.is_not(None)
                    )
                )
            ).all()
        out: dict[str, str] = {}
        for name, owner, expires_at in rows:
            exp = _aware(expires_at)
            if exp is not None and exp > now:
                out[name] = owner
        return out
