"""Child process: prepare a half message, then die (SIGKILL) before committing it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from dddframe import Application
from dddframe.bus.database import DatabaseBus
from tests.database_bus.test_features import Charged, features_modules


async def main(url: str) -> None:
    # The preparer stamps the deadline: after 0.2 s a checker may decide for it.
    bus = DatabaseBus(run_interval=60, tx_check_timeout=0.2)
    app = Application(features_modules(), url, bus=bus, consume=False)
    async with app:
        await app.create_schema()
        async with bus.prepare([Charged(payment=sys.argv[2], amount=5)], key=sys.argv[2]):
            print("prepared", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # the charge happened; the commit never does


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
