"""The tickets of tests.ops.ops_app on the database bus (``--app
tests.ops.database_app:make_app``), for the CLI tests with hostile dead-letter texts."""

from __future__ import annotations

import os

from dddframe import Application
from dddframe.bus.database import DatabaseBus
from tests.ops.ops_app import URL_ENV, ops


def make_app(consume: bool = True) -> Application:
    return Application(
        modules=[ops],
        database_url=os.environ[URL_ENV],
        bus=DatabaseBus(run_interval=0.05),
        consume=consume,
    )
