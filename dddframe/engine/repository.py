"""Repositories: load, add and remove whole aggregates inside a unit of work."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.strategy_options import _AbstractLoad

from dddframe.domain.model import Aggregate, Entity
from dddframe.errors import NotFound, UsageError

if TYPE_CHECKING:
    from dddframe.engine.unit_of_work import UnitOfWork

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)


@functools.cache
def _whole_aggregate(cls: type[Any]) -> tuple[_AbstractLoad, ...]:
    """Loader options that fetch every Entity below an aggregate (async code cannot lazy-load)."""

    def walk(owner: type[Any], seen: frozenset[type[Any]]) -> list[_AbstractLoad]:
        options: list[_AbstractLoad] = []
        for rel in owner.__mapper__.relationships:
            target = rel.mapper.class_
            if not issubclass(target, Entity) or target in seen:
                continue
            opt = selectinload(getattr(owner, rel.key))
            children = walk(target, seen | {target})
            options.append(opt.options(*children) if children else opt)
        return options

    return tuple(walk(cls, frozenset({cls})))


class Repository(Generic[A]):
    """The collection of one aggregate type, bound to the current unit of work.

    Handlers ask for it by annotation: ``async def handler(cmd: Cmd, orders: Repository[Order])``.
    ``get`` and ``find`` load the aggregate with all its entities.
    """

    def __init__(self, uow: UnitOfWork, aggregate: type[A]) -> None:
        self._uow = uow
        self.aggregate = aggregate

    async def get(self, id: Any) -> A:
        """The aggregate with this id; raises :class:`~dddframe.errors.NotFound` if missing."""
        found = await self.find(id)
        if found is None:
            raise NotFound(
                f"No {self.aggregate.__name__} with id {id!r}. Check the id, or use "
                "find() when a missing aggregate is expected."
            )
        return found

    async def find(self, id: Any) -> A | None:
        """The aggregate with this id, or None."""
        obj = await self._uow.session.get(
            self.aggregate, id, options=list(_whole_aggregate(self.aggregate))
        )
        if obj is not None:
            self._uow.track(obj)
        return obj

    async def find_by(self, **criteria: Any) -> Sequence[A]:
        """Aggregates whose columns equal the given values, e.g. ``find_by(status="new")``."""
        q = select(self.aggregate).filter_by(**criteria).options(*_whole_aggregate(self.aggregate))
        found = (await self._uow.session.scalars(q)).all()
        for obj in found:
            self._uow.track(obj)
        return found

    def add(self, aggregate: A) -> None:
        """Add a new aggregate; it is inserted, with its events, when the unit of work commits."""
        if not isinstance(aggregate, self.aggregate):
            raise UsageError(
                f"Repository[{self.aggregate.__name__}].add() got a "
                f"{type(aggregate).__name__}; use the repository of that type."
            )
        self._uow.session.add(aggregate)
        self._uow.track(aggregate)

    def remove(self, aggregate: A) -> None:
        """Delete an aggregate (its version is still checked); its recorded events are kept."""
        self._uow.track(aggregate)
        self._uow.removed.append(aggregate)
