"""Physical tables per generation: generation 1 uses the declared names, generation ``n`` the
declared names with ``__g<n>`` (indexes and constraints renamed alike, so PostgreSQL's
schema-wide index names never collide).

>>> from sqlalchemy import Column, Integer, MetaData, Table
>>> t = Table("sums", MetaData(), Column("id", Integer, primary_key=True))
>>> [g.table(t).name for g in (Generation.of([t], 1), Generation.of([t], 3))]
['sums', 'sums__g3']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Constraint, Index, MetaData, Table
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Generation", "physical_name"]


def physical_name(name: str, generation: int) -> str:
    """The physical name of a declared table or index in ``generation``."""
    return name if generation == 1 else f"{name}__g{generation}"


@dataclass(frozen=True, slots=True)
class Generation:
    """The physical tables of one generation of one projection, by declared name."""

    number: int
    metadata: MetaData
    tables: dict[str, Table]
    declared: dict[str, Table]

    @classmethod
    def of(cls, declared: Sequence[Table], number: int) -> Generation:
        originals = {t.name: t for t in declared}
        if number == 1:
            return cls(1, MetaData(), dict(originals), originals)
        metadata = MetaData()
        copies: dict[str, Table] = {}
        for t in declared:
            copy = t.to_metadata(metadata, name=physical_name(t.name, number))
            items: list[Index | Constraint] = [*copy.indexes, *copy.constraints]
            for item in items:
                if isinstance(item.name, str):
                    item.name = physical_name(item.name, number)
            copies[t.name] = copy
        return cls(number, metadata, copies, originals)

    def table(self, declared: Table | str) -> Table | None:
        """The physical copy of a declared table (the Table itself or its name), or None."""
        if isinstance(declared, Table):
            if self.declared.get(declared.name) is not declared:
                return None
            return self.tables[declared.name]
        return self.tables.get(declared) if isinstance(declared, str) else None

    def declared_names(self) -> list[str]:
        return list(self.tables)

    async def create(self, conn: AsyncConnection) -> None:
        """Create the tables that do not exist yet."""
        await conn.run_sync(lambda c: _metadata_of(self).create_all(c, checkfirst=True))

    async def drop(self, conn: AsyncConnection) -> None:
        """Drop the tables that exist (never generation 1's declared tables by mistake: the
        caller decides which generation goes)."""
        await conn.run_sync(lambda c: _metadata_of(self).drop_all(c, checkfirst=True))


def _metadata_of(generation: Generation) -> MetaData:
    if generation.number != 1:
        return generation.metadata
    # Generation 1's tables live in the user's MetaData, which may hold other tables too.
    only = MetaData()
    for t in generation.tables.values():
        t.to_metadata(only)
    return only
