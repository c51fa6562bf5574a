from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from dddframe import Application, Module
from dddframe.bus.inprocess import InProcessBus
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
