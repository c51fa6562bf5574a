"""Pooled connections are not pinged before use: a command whose connection was closed by the
server (a restart, a proxy's idle timeout, an operator's kill) runs again on a fresh one, once
in effect, instead of failing. Real servers close the connections here (pg_terminate_backend,
MariaDB's KILL)."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from dddframe import Application, Command, Module, Repository, UnitOfWork
from dddframe.outbox.tables import outbox_table
from tests.core.model import Account, OpenAccount, shopping_module


def _backend_id(dialect: str) -> str:
    return "SELECT pg_backend_pid()" if dialect == "postgresql" else "SELECT CONNECTION_ID()"


async def _kill(url: str, dialect: str, ids: set[int]) -> None:
    """Close these server connections from another connection, as the server would."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            for backend in sorted(ids):
                if dialect == "postgresql":
                    await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend})
                else:
                    await conn.execute(text(f"KILL {int(backend)}"))
            await conn.commit()
    finally:
        await engine.dispose()


class WhoAmI(Command):
    pass


class DepositAndDie(Command):
    """Deposit, after the server closed this command's connection (on its first run only)."""

    account_id: uuid.UUID
    amount: int


def _module(url: str, runs: list[int], pool: set[int]) -> Module:
    m = Module("deadconn")

    @m.handles(WhoAmI)
    async def who_am_i(cmd: WhoAmI, uow: UnitOfWork) -> int:
        dialect = uow.session.bind.dialect.name
        backend = int((await uow.session.execute(text(_backend_id(dialect)))).scalar_one())
        pool.add(backend)
        await asyncio.sleep(0.05)  # keep it checked out so concurrent commands use others
        return backend

    @m.handles(DepositAndDie)
    async def deposit_and_die(
        cmd: DepositAndDie, accounts: Repository[Account], uow: UnitOfWork
    ) -> None:
        account = await accounts.get(cmd.account_id)  # a statement on the connection
        runs.append(1)
        if len(runs) == 1:
            dialect = uow.session.bind.dialect.name
            mine = (await uow.session.execute(text(_backend_id(dialect)))).scalar_one()
            await _kill(url, "mysql" if dialect == "mariadb" else dialect, {int(mine)})
        account.deposit(cmd.amount)  # flushed at commit, on the dead connection

    return m


async def test_connections_closed_in_the_pool_are_replaced_without_an_error(
    server_db: str,
) -> None:
    runs: list[int] = []
    pool: set[int] = set()
    async with Application([shopping_module(), _module(server_db, runs, pool)], server_db) as app:
        await app.drop_schema()
        await app.create_schema()
        await asyncio.gather(*(app.engine.run(WhoAmI()) for _ in range(5)))
        assert len(pool) >= 2, pool  # several pooled connections, all about to be closed
        closed = set(pool)
        await _kill(server_db, app.database.dialect, closed)
        opened = await asyncio.gather(*(app.engine.run(OpenAccount()) for _ in range(8)))
        async with app.database.session() as s:
            ids = set((await s.execute(select(Account.id))).scalars())
            events = await s.scalar(select(func.count()).select_from(outbox_table))
        assert ids == set(opened) and len(ids) == 8
        assert events == 0  # OpenAccount records no event: nothing else was written
        fresh = set(await asyncio.gather(*(app.engine.run(WhoAmI()) for _ in range(5))))
        assert not fresh & closed, "the closed connections must not be used again"


async def test_a_connection_closed_during_a_command_runs_it_again_once(server_db: str) -> None:
    runs: list[int] = []
    async with Application([shopping_module(), _module(server_db, runs, set())], server_db) as app:
        await app.drop_schema()
        await app.create_schema()
        account_id = await app.engine.run(OpenAccount())
        await app.engine.run(DepositAndDie(account_id=account_id, amount=7))
        async with app.database.session() as s:
            account = await s.get(Account, account_id)
            events = (
                await s.execute(select(outbox_table.c.name, outbox_table.c.aggregate_version))
            ).all()
    assert len(runs) == 2  # the first run lost its connection before its commit
    assert account is not None and account.balance == 7 and account.version == 2
    assert events == [("Core:Deposited", 2)]
