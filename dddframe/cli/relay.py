"""``dddframe relay --app ...``: run only the outbox relay of the application's bus.

The relay moves committed outbox events to the broker (Kafka, AMQP) and delivers nothing
itself. Several may run; a lease keeps one active per outbox and cluster, the others stand by.
"""

from __future__ import annotations

import asyncio
import logging

import typer

from dddframe.cli.loading import load_app, prepare_schema
from dddframe.cli.process import freeze_startup_heap, stop_on_signals
from dddframe.errors import ConfigurationError

__all__ = ["relay", "run_relay"]


async def run_relay(
    app_spec: str, stop: asyncio.Event | None = None, *, create_schema: bool = False
) -> None:
    """Start the application without consumers and with its bus's relay on, until ``stop``.

    The schema is checked, not created, unless ``create_schema``."""
    application = load_app(app_spec, consume=False)
    if not hasattr(application.bus, "relay_enabled"):
        raise ConfigurationError(
            f"--app {app_spec} uses the {application.bus.name!r} bus, which has no relay: only "
            "the broker buses (bus='kafka', bus='amqp') move outbox events to a broker. Run "
            "`dddframe worker` to deliver this application's events."
        )
    setattr(application.bus, "relay_enabled", True)  # noqa: B010 - checked above
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    await prepare_schema(application, create=create_schema)
    async with application:
        freeze_startup_heap()
        logging.getLogger("dddframe.relay").info("relay running: bus=%s", application.bus.name)
        await stop.wait()


def relay(
    app_spec: str = typer.Option(..., "--app", help="package.module:app or a factory"),
    log_level: str = typer.Option("INFO", "--log-level"),
    create_schema: bool = typer.Option(
        False,
        "--create-schema",
        help="Create missing tables first (needs CREATE privilege); by default only check them",
    ),
) -> None:
    """Relay committed outbox events to the broker until SIGINT/SIGTERM.

    The schema must exist at this dddframe's version (run your migrations, or pass
    --create-schema)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    asyncio.run(run_relay(app_spec, create_schema=create_schema))
