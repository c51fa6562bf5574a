"""The engine: runs a command in a unit of work, retrying optimistic-concurrency conflicts."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import injector as _injector
import pydantic_core
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from dddframe.context import current_headers
from dddframe.database import Database
from dddframe.domain.envelope import CAUSATION_ID, CORRELATION_ID, TRACEPARENT, Envelope
from dddframe.domain.events import DomainEvent
from dddframe.domain.limits import MESSAGE_KEY_TYPE, check_headers, check_key, check_name
from dddframe.engine.command import Command
from dddframe.engine.handlers import CommandHandler
from dddframe.engine.locks import AsyncioLocker, Locker, PostgresAdvisoryLocker
from dddframe.engine.unit_of_work import Claim, UnitOfWork, current_unit_of_work
from dddframe.errors import (
    CommandValidationError,
    ConcurrencyConflict,
    EventSerializationError,
    UnknownCommand,
    UsageError,
    close_matches,
)
from dddframe.ids import uuid7
from dddframe.observability.tracing import command_span, outbox_written
from dddframe.outbox.tables import inbox_table

__all__ = ["ConflictRetry", "Engine"]

log = logging.getLogger("dddframe.engine")
R = TypeVar("R")

# Errors that mean "another transaction got there first": re-run the whole command.
_SQLITE_BUSY = ("database is locked", "database is busy")
_MYSQL_RETRYABLE = (1213, 1205)  # deadlock, lock wait timeout
_PG_RETRYABLE = ("40001", "40P01")  # serialization failure, deadlock
_RECONNECTS = 2  # fresh connections a command may take after finding its connection dead


def _is_dead_connection(exc: BaseException) -> bool:
    """A statement (not the COMMIT) failed because the pooled connection was dead: nothing of
    the transaction can have committed, and SQLAlchemy dropped that connection (and the pool's
    older ones), so the command may run again on a fresh one. A failed COMMIT (no statement)
    is never re-run: it may have committed."""
    return (
        isinstance(exc, DBAPIError)
        and exc.connection_invalidated
        and exc.statement is not None
        and exc.statement.strip().upper() != "COMMIT"
    )


def _is_conflict(exc: BaseException) -> bool:
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
        orig = exc.orig
        msg = str(orig).lower()
        if any(s in msg for s in _SQLITE_BUSY):
            return True
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if code in _PG_RETRYABLE:
            return True
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRYABLE:
            return True
    return False


@dataclass(frozen=True, slots=True)
class ConflictRetry:
    """How often and how fast a command that lost a version race is re-run."""

    attempts: int = 10
    base_delay: float = 0.005
    max_delay: float = 0.5

    def delay(self, attempt: int) -> float:
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return random.uniform(0, cap)  # full jitter spreads the contenders apart


try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
    _propagate = _trace = None  # type: ignore[assignment]


def _traceparent() -> str | None:
    """The W3C traceparent of the current span; None when no span is recording (the common
    case without a tracing SDK, answered without building a carrier)."""
    if _trace is None or not _trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


class Engine:
    """Runs commands. Get it from ``app.engine``.

    ``await engine.run(PlaceOrder(order_id=...))`` finds the handler, opens a unit of work, calls
    the handler with its parameters filled from their annotations, then writes the aggregates,
    their version checks and one outbox row per recorded event in one transaction.
    """

    def __init__(
        self,
        database: Database,
        handlers: Mapping[type[Command], CommandHandler],
        container: _injector.Injector,
        *,
        notify: Callable[[Sequence[Envelope]], None] = lambda envelopes: None,
        locker: Locker | None = None,
        conflict_retry: ConflictRetry = ConflictRetry(),
    ) -> None:
        self.database = database
        self._handlers = dict(handlers)
        self._container = container
        self._notify = notify
        if locker is None:
            locker = PostgresAdvisoryLocker() if database.dialect == "postgresql" else None
        self.locker: Locker = locker or AsyncioLocker()
        self.conflict_retry = conflict_retry

    @property
    def commands(self) -> list[type[Command]]:
        return list(self._handlers)

    async def run(
        self,
        command: Command | type[Command],
        data: Any = None,
        *,
        lock_keys: Iterable[str] = (),
        headers: Mapping[str, str] | None = None,
        inbox: tuple[str, str] | None = None,
        claim: Claim | None = None,
    ) -> Any:
        """Run one command in one unit of work and return what its handler returned.

        ``engine.run(PlaceOrder, {"order_id": ...})`` validates raw data first.
        ``lock_keys`` serialise commands sharing a key. ``inbox=(consumer, message_id)`` records
        the message as applied in the same transaction; if it was applied already the command is
        skipped and None returned. ``claim`` is asked first, in the command's transaction,
        whether the command may take effect (a scheduled command claims its row); when it says
        no the command is skipped and None returned.
        """
        if isinstance(command, type) and issubclass(command, Command):
            command = command.parse(data)
        elif data is not None:
            raise UsageError("Pass data only together with a command class")
        if not isinstance(command, Command):
            raise CommandValidationError(
                f"engine.run() takes a dddframe.Command instance, got {type(command).__name__}."
            )
        handler = self._handlers.get(type(command))
        if handler is None:
            known = [c.__name__ for c in self._handlers]
            raise UnknownCommand(
                f"No module handles {type(command).__name__}: register a handler with "
                f"@module.handles({type(command).__name__})."
                + close_matches(type(command).__name__, known)
            )
        if isinstance(lock_keys, str):
            raise UsageError(f"lock_keys must be a list of str, not the str {lock_keys!r}")
        headers = check_headers(headers, "engine.run(headers=...)")
        name = type(command).__name__
        bound = handler

        async def work(uow: UnitOfWork) -> Any:
            result = bound.fn(**self._arguments(bound, command, uow))
            if inspect.isawaitable(result):
                result = await result
            return result

        with command_span(name):
            # Headers inside the span: the events written carry it as their traceparent.
            msg_headers = self.message_headers(headers)
            return await self._run(work, name, msg_headers, list(lock_keys), inbox, claim)

    async def transact(
        self,
        work: Callable[[UnitOfWork], Awaitable[R]],
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        lock_keys: Iterable[str] = (),
        inbox: tuple[str, str] | None = None,
        claim: Claim | None = None,
    ) -> R | None:
        """Run ``await work(uow)`` in one unit of work, as :meth:`run` runs a handler: the
        same transaction, outbox, inbox, conflict re-runs and reconnects. ``name`` labels its
        span and errors. For framework parts that are not commands (a process manager's step);
        returns None when the inbox or the claim says it took effect already."""
        checked = check_headers(headers, f"{name}(headers=...)")
        with command_span(name):
            msg_headers = self.message_headers(checked)
            result: R | None = await self._run(
                work, name, msg_headers, list(lock_keys), inbox, claim
            )
            return result

    async def _run(
        self,
        work: Callable[[UnitOfWork], Awaitable[Any]],
        name: str,
        msg_headers: dict[str, str],
        keys: list[str],
        inbox: tuple[str, str] | None,
        claim: Claim | None,
    ) -> Any:
        policy = self.conflict_retry
        reconnects = 0
        attempt = 0
        while attempt < policy.attempts:
            attempt += 1
            try:
                result, envelopes = await self._attempt(work, msg_headers, keys, inbox, claim)
            except _AlreadyApplied:
                return None
            except Exception as exc:
                if _is_dead_connection(exc) and reconnects < _RECONNECTS:
                    # A connection that died in the pool (a database restart, a proxy's idle
                    # timeout): run again on a fresh one instead of pinging before every
                    # command.
                    reconnects += 1
                    attempt -= 1
                    log.info(
                        "%s: the pooled connection was dead; running again on a fresh one", name
                    )
                    continue
                if not _is_conflict(exc):
                    lost = self.database.unavailable(exc)
                    if lost is not None and lost is not exc:
                        raise lost from exc  # one error for "cannot reach the database"
                    raise
                if attempt == policy.attempts:
                    raise ConcurrencyConflict(
                        f"{name} lost the race for the same aggregate "
                        f"{policy.attempts} times. Retry later, pass lock_keys to serialise "
                        "such commands, or raise ConflictRetry.attempts."
                    ) from exc
                log.debug("version conflict on %s, attempt %d", name, attempt)
                await asyncio.sleep(policy.delay(attempt))
                continue
            if envelopes:
                outbox_written(envelopes)
                self._notify(envelopes)
            return result
        raise AssertionError("unreachable")

    def message_headers(self, explicit: Mapping[str, str] | None = None) -> dict[str, str]:
        """correlation_id (inherited or new), causation_id, traceparent, then ``explicit``."""
        outer = current_headers.get() or {}
        out: dict[str, str] = {}
        correlation = outer.get(CORRELATION_ID)
        out[CORRELATION_ID] = correlation or str(uuid7())
        if CAUSATION_ID in outer:
            out[CAUSATION_ID] = outer[CAUSATION_ID]
        tp = _traceparent() or outer.get(TRACEPARENT)
        if tp:
            out[TRACEPARENT] = tp
        if explicit:
            out.update(explicit)
        return out

    async def _attempt(
        self,
        work: Callable[[UnitOfWork], Awaitable[Any]],
        headers: dict[str, str],
        keys: list[str],
        inbox: tuple[str, str] | None,
        claim: Claim | None,
    ) -> tuple[Any, list[Envelope]]:
        session = self.database.session()
        uow = UnitOfWork(session, headers)
        token = current_unit_of_work.set(uow)
        htoken = current_headers.set(headers)
        try:
            async with self.locker.hold(keys, session):
                if claim is not None and not await claim.claim(session):
                    raise _AlreadyApplied()
                result = await work(uow)
                if inbox is not None:
                    uow.record_inbox(*inbox)
                try:
                    envelopes = await uow.commit()
                except IntegrityError:
                    # Asked on this session after the rollback: a second connection while
                    # this one still holds SQLite's write lock would wait for the pool.
                    if inbox is not None:
                        await session.rollback()
                        if await _inbox_seen(session, inbox):
                            raise _AlreadyApplied() from None
                    raise
        except BaseException as exc:
            try:
                await session.rollback()
            finally:
                # As ``async with session`` closes it: to completion, even when cancelled.
                await session.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        finally:
            current_headers.reset(htoken)
            current_unit_of_work.reset(token)
        if session.in_transaction():  # pragma: no cover - the commit ended the transaction
            await session.__aexit__(None, None, None)
        else:
            # Committed: the connection went back to the pool with the commit, so closing is
            # bookkeeping only (detach the objects), done here rather than in a task of its own.
            session.sync_session.close()
        return result, envelopes

    def _arguments(
        self, handler: CommandHandler, command: Command, uow: UnitOfWork
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for p in handler.params:
            if p.kind == "command":
                kwargs[p.name] = command
            elif p.kind == "repository":
                kwargs[p.name] = uow.repository(p.type)
            elif p.kind == "uow":
                kwargs[p.name] = uow
            else:
                kwargs[p.name] = self._container.get(p.type)
        return kwargs

    def message(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        where: str = "publish",
    ) -> Envelope:
        """Build the envelope of a direct message (no aggregate) with the current headers.

        ``name`` is a message name with a dict ``payload``, or a typed DomainEvent. ``key``
        keeps messages with the same key in order. ``where`` names the entry point in errors.
        """
        if isinstance(name, DomainEvent):
            if payload is not None:
                raise UsageError(f"{where}(): pass either a DomainEvent or a name with a payload")
            topic, version, body = name.event_name(), name.event_version(), name.model_dump_json()
        else:
            topic, version = check_name(name, "message name", where=f"{where}()"), 1
            if payload is not None and not isinstance(payload, Mapping):
                raise UsageError(
                    f"{where}(): the payload of {topic!r} must be a dict, not "
                    f"{type(payload).__name__}; or publish a DomainEvent."
                )
            try:
                body = pydantic_core.to_json(dict(payload or {})).decode()
            except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
                raise EventSerializationError(
                    f"The payload of message {topic!r} cannot be serialised to JSON ({exc})."
                ) from exc
        return Envelope.new(
            topic,
            body,
            aggregate_type=None if key is None else MESSAGE_KEY_TYPE,
            aggregate_id=check_key(key, f"{where}({topic!r}, key=...)"),
            event_version=version,
            headers=self.message_headers(check_headers(headers, f"{where}(headers=...)")),
        )

    async def publish(
        self,
        name: str | DomainEvent,
        payload: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Envelope:
        """Write a direct message (no aggregate) to the outbox and return its envelope.

        ``name`` is a message name with a dict ``payload``, or a typed DomainEvent; ``key``
        keeps messages with the same key in order; ``headers`` travel with it (str to str).
        Inside a unit of work it joins that transaction; outside it commits on its own.
        """
        envelope = self.message(name, payload, key=key, headers=headers)
        uow = current_unit_of_work.get()
        if uow is not None:
            uow.add_message(envelope)
            return envelope
        try:
            async with self.database.session() as session:
                tx = UnitOfWork(session, {})
                tx.add_message(envelope)
                await tx.commit()
        except Exception as exc:
            lost = self.database.unavailable(exc)
            if lost is None or lost is exc:
                raise
            raise lost from exc
        self._notify([envelope])
        return envelope


class _AlreadyApplied(Exception):
    """The inbox shows this message was applied before: skip the command."""


async def _inbox_seen(session: AsyncSession, inbox: tuple[str, str]) -> bool:
    found = await session.scalar(
        select(inbox_table.c.message_id).where(
            inbox_table.c.consumer == inbox[0], inbox_table.c.message_id == inbox[1]
        )
    )
    return found is not None
