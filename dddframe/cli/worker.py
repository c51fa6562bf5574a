"""``dddframe worker``: run an application's listeners (and bus background work) until stopped."""

from __future__ import annotations

import asyncio
import logging

import typer

from dddframe.bus.inprocess import InProcessBus
from dddframe.cli.loading import load_app, prepare_schema
from dddframe.cli.process import freeze_startup_heap, stop_on_signals
from dddframe.errors import ConfigurationError

__all__ = ["run_worker"]


async def run_worker(
    app_spec: str,
    groups: list[str] | None,
    concurrency: int | None,
    stop: asyncio.Event | None = None,
    *,
    create_schema: bool = False,
) -> None:
    """Run the listeners of the application ``app_spec`` until ``stop`` is set (or a signal).

    The schema is checked, not created, unless ``create_schema``; an application on the
    in-process bus is refused (its events never leave the process that records them).
    """
    application = load_app(app_spec, consume=True, groups=groups or None)
    if isinstance(application.bus, InProcessBus):
        raise ConfigurationError(
            f"--app {app_spec} uses the in-process bus: its events are delivered inside the "
            "process that records them, so a separate worker would only compete with it for "
            "the database. Give the application a bus that workers share (bus='database', "
            "'kafka' or 'amqp'), or run no worker."
        )
    if concurrency is not None:
        if concurrency < 1:
            raise typer.BadParameter("--concurrency must be >= 1")
        if hasattr(application.bus, "concurrency"):
            application.bus.concurrency = concurrency
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    await prepare_schema(application, create=create_schema)
    async with application:
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
    create_schema: bool = typer.Option(
        False,
        "--create-schema",
        help="Create missing tables first (needs CREATE privilege); by default only check them",
    ),
) -> None:
    """Consume events: deliver them to the bound listeners until SIGINT/SIGTERM.

    The schema must exist at this dddframe's version (run your migrations, or pass
    --create-schema); an application on the in-process bus is refused."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(run_worker(app_spec, group, concurrency, create_schema=create_schema))
