"""pytest plugin (installed with dddframe): fixtures for testing applications.

- ``dddframe_database_url``: a fresh temporary SQLite URL, or the URL in
  ``--dddframe-database-url`` / ``DDDFRAME_TEST_DATABASE_URL``.
- ``dddframe_app``: a factory; ``async with dddframe_app(modules) as app:`` gives a started
  application on that database with a fresh schema, stopped afterwards.

Use ``await app.drain()`` to wait for listeners, and :class:`~dddframe.testing.FaultInjector`
to make deliveries fail, repeat, or crash the process.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from dddframe.app import Application, Module
from dddframe.database import Database
from dddframe.domain.model import Model
from dddframe.outbox.schema import drop_schema

__all__ = ["dddframe_app", "dddframe_database_url", "reset_database"]


async def reset_database(url: str) -> None:
    """Drop every framework and model table, so a test starts from an empty database."""
    db = Database(url)
    try:
        await drop_schema(db, Model.metadata)
    finally:
        await db.dispose()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dddframe-database-url",
        default=None,
        help="Database URL for the dddframe_app fixture (default: a temporary SQLite file)",
    )


@pytest.fixture
def dddframe_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = request.config.getoption("--dddframe-database-url") or os.environ.get(
        "DDDFRAME_TEST_DATABASE_URL"
    )
    return str(url) if url else f"sqlite+aiosqlite:///{tmp_path}/dddframe-test.db"


@pytest.fixture
def dddframe_app(
    dddframe_database_url: str,
) -> Callable[..., AbstractAsyncContextManager[Application]]:
    @asynccontextmanager
    async def factory(
        modules: Sequence[Module], *, fresh: bool = True, **options: Any
    ) -> AsyncIterator[Application]:
        url = options.pop("database_url", dddframe_database_url)
        if fresh:
            await reset_database(url)
        app = Application(modules=modules, database_url=url, **options)
        await app.start()
        try:
            await app.create_schema()
            yield app
        finally:
            await app.stop()

    return factory
