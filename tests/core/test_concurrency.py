"""Optimistic concurrency: racing commands are re-run; lock keys serialise commands."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from dddframe import ConflictRetry
from dddframe.errors import ConcurrencyConflict, UsageError
from tests.core.conftest import AppFactory, outbox_rows
from tests.core.model import Account, Deposit, OpenAccount, shopping_module


async def _final(app: object, account_id: object) -> Account:
    async with app.database.session() as s:  # type: ignore[attr-defined]
        account = await s.get(Account, account_id)
    assert account is not None
    return account


async def test_twenty_concurrent_increments_all_land(any_db: str, make_app: AppFactory) -> None:
    async with make_app(
        any_db, [shopping_module()], conflict_retry=ConflictRetry(attempts=100, max_delay=0.05)
    ) as app:
        account_id = await app.engine.run(OpenAccount())
        balances = await asyncio.gather(
            *(app.engine.run(Deposit(account_id=account_id, amount=1)) for _ in range(20))
        )
        account = await _final(app, account_id)
        rows = [r for r in await outbox_rows(app) if r.name == "Core:Deposited"]
    assert account.balance == 20
    assert sorted(balances) == list(range(1, 21))  # every command saw a distinct state
    assert account.version == 21  # created at 1, one step per event
    assert len(rows) == 20
    versions = [r.aggregate_version for r in sorted(rows, key=lambda r: r.aggregate_version)]
    assert versions == list(range(2, 22))
    by_version = {r.aggregate_version: json.loads(r.payload)["balance"] for r in rows}
    assert [by_version[v] for v in range(2, 22)] == list(range(1, 21))


async def test_conflict_is_raised_when_attempts_run_out(
    server_db: str, make_app: AppFactory
) -> None:
    async with make_app(
        server_db, [shopping_module()], conflict_retry=ConflictRetry(attempts=1)
    ) as app:
        account_id = await app.engine.run(OpenAccount())
        results = await asyncio.gather(
            *(app.engine.run(Deposit(account_id=account_id, amount=1)) for _ in range(10)),
            return_exceptions=True,
        )
        conflicts = [r for r in results if isinstance(r, ConcurrencyConflict)]
        successes = [r for r in results if isinstance(r, int)]
        account = await _final(app, account_id)
        rows = [r for r in await outbox_rows(app) if r.name == "Core:Deposited"]
    assert conflicts, "ten racing single-attempt commands must produce a conflict"
    assert "lost the race" in str(conflicts[0])
    # the losers wrote nothing: one event per successful change
    assert account.balance == len(successes) == len(rows)


async def test_lock_keys_serialise_commands(any_db: str, make_app: AppFactory) -> None:
    async with make_app(
        any_db, [shopping_module()], conflict_retry=ConflictRetry(attempts=1)
    ) as app:
        account_id = await app.engine.run(OpenAccount())
        results = await asyncio.gather(
            *(
                app.engine.run(
                    Deposit(account_id=account_id, amount=1), lock_keys=[f"account:{account_id}"]
                )
                for _ in range(10)
            )
        )
        account = await _final(app, account_id)
    # with the lock, no command ever lost a race even with a single attempt
    assert sorted(results) == list(range(1, 11))
    assert account.balance == 10


async def test_postgres_uses_advisory_locks(server_db: str, make_app: AppFactory) -> None:
    from dddframe.engine.locks import AsyncioLocker, PostgresAdvisoryLocker

    async with make_app(server_db, [shopping_module()]) as app:
        expected = PostgresAdvisoryLocker if "postgresql" in server_db else AsyncioLocker
        assert isinstance(app.engine.locker, expected)
        with pytest.raises(UsageError, match="lock_keys must be a list of str"):
            await app.engine.run(OpenAccount(), lock_keys="abc")
        async with app.database.session() as s:
            assert (await s.scalars(select(Account))).all() == []
