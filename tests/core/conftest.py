from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import func, select

from dddframe import Application, Module
from dddframe.bus.inprocess import InProcessBus
from dddframe.database import Database
from dddframe.outbox.tables import outbox_table
from dddframe.testing import reset_database

AppFactory = Callable[..., AbstractAsyncContextManager[Application]]


@pytest.fixture
def make_app() -> AppFactory:
    """``async with make_app(url, modules, **options) as app`` on a reset database."""

    @asynccontextmanager
    async def factory(
        url: str, modules: list[Module], *, reset: bool = True, **options: Any
    ) -> AsyncIterator[Application]:
        if reset:
            await reset_database(url)
        options.setdefault("bus", InProcessBus(poll_interval=0.05))
        app = Application(modules=modules, database_url=url, **options)
        async with app:
            await app.create_schema()
            yield app

    return factory


async def outbox_rows(app: Application) -> list[Any]:
    async with app.database.connect() as conn:
        return list((await conn.execute(select(outbox_table).order_by(outbox_table.c.id))).all())


async def count(db: Database, table: Any) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)
