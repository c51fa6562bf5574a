"""``dddframe worker``: run an application's listeners (and bus background work) until stopped."""

from __future__ import annotations

import asyncio
import logging

import typer

from dddframe.cli.loading import load_app
from dddframe.cli.process import freeze_startup_heap, stop_on_signals

__all__ = ["run_worker"]


async def run_worker(
    app_spec: str,
    groups: list[str] | None,
    concurrency: int | None,
    stop: asyncio.Event | None = None,
) -> None:
    application = load_app(app_spec, consume=True, groups=groups or None)
    if concurrency is not None:
        if concurrency < 1:
            raise typer.BadParameter("--concurrency must be >= 1")
        if hasattr(application.bus, "concurrency"):
            application.bus.concurrency = concurrency
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    async with application:
        await application.create_schema()
        freeze_startup_heap()
        logging.getLogger("dddframe.worker").info(
            "worker running: bus=%s groups=%s subscriptions=%s",
            application.bus.name,
            ",".join(groups or []) or "all",
            ", ".join(s.name for s in application.subscriptions),
        )
        await stop.wait()


def worker(
    app_spec: str = typer.Option(..., "--app", help="package.module:app or a factory"),
    group: list[str] = typer.Option([], "--group", help="Only these subscription groups"),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Lanes per subscription"),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Consume events: deliver them to the bound listeners until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(run_worker(app_spec, group, concurrency))
