"""Child process for the process-manager crash test: a step commits (its instance, inbox entry
and the command it sent), then the process SIGKILLs itself before running that command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from dddframe import Application
from dddframe.bus.inprocess import InProcessBus
from dddframe.processes.steps import ProcessRuntime
from tests.processes.model import Place, fulfilment_module


async def _killed(self: ProcessRuntime, rows: list[dict[str, Any]]) -> None:
    print(f"committed {len(rows)}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


async def main(url: str) -> None:
    ProcessRuntime.run_now = _killed  # type: ignore[method-assign]
    bus = InProcessBus(poll_interval=0.05)
    async with Application([fulfilment_module()], database_url=url, bus=bus) as app:
        await app.create_schema()
        # The schedule dispatcher would run the command too: keep it from looking.
        assert app._dispatch_task is not None
        app._dispatch_task.cancel()
        await app.engine.run(Place(order_id="crash-1"))
        await app.drain()
        await asyncio.sleep(30)
    raise SystemExit("unreachable: the process should have been killed after the step")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
