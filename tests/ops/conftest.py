from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dddframe import Application
from dddframe.testing import reset_database
from tests.ops import ops_app


@pytest.fixture
async def ops_url(sqlite_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite database that ``--app tests.ops.ops_app:make_app`` uses."""
    await reset_database(sqlite_db)
    monkeypatch.setenv(ops_app.URL_ENV, sqlite_db)
    ops_app.Notifier.broken = True
    ops_app.Notifier.seen.clear()
    return sqlite_db


async def filled(url: str, titles: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Open tickets with these titles and deliver them (boom* become dead letters)."""
    monkeypatch.setenv(ops_app.URL_ENV, url)
    app = ops_app.make_app()
    async with app:
        await app.create_schema()
        for title in titles:
            await app.engine.run(ops_app.OpenTicket(title=title))
        await app.drain()


@pytest.fixture
async def running_app(ops_url: str) -> AsyncIterator[Application]:
    app = ops_app.make_app()
    async with app:
        await app.create_schema()
        yield app
