"""The projection tests' application for the CLI (``--app tests.projections.cli_app:make_app``),
on the database named by ``DDDFRAME_PROJECTIONS_TEST_URL``."""

from __future__ import annotations

import os

from dddframe import Application
from dddframe.bus.inprocess import InProcessBus
from tests.projections.model import projection_module

URL_ENV = "DDDFRAME_PROJECTIONS_TEST_URL"


def make_app(consume: bool = True) -> Application:
    return Application(
        [projection_module(reference=False)],
        database_url=os.environ[URL_ENV],
        bus=InProcessBus(poll_interval=0.05),
        consume=consume,
    )
