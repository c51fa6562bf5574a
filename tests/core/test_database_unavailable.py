"""A database that refuses, never answers, or is stopped raises DatabaseUnavailable, naming the
cause, within the connect timeout; commands work again once the database is back."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text

from dddframe import Application, Command, Module, UnitOfWork
from dddframe.bus.database import DatabaseBus
from dddframe.errors import DatabaseUnavailable, DddframeError
from tests.core.model import OpenAccount, shopping_module
from tests.services import REQUIRED, database_url

DRIVERS = ["postgresql+asyncpg", "mysql+aiomysql"]


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP server on loopback that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("bus", ["inprocess", "database"])
async def test_a_database_that_never_answers_fails_start_up_within_the_timeout(
    silent_port: int, driver: str, bus: str
) -> None:
    url = f"{driver}://root@127.0.0.1:{silent_port}/app"
    app = Application(
        [shopping_module()],
        url,
        bus=DatabaseBus() if bus == "database" else "inprocess",
        engine_options={"connect_timeout": 0.5},
    )
    async with asyncio.timeout(30):  # a hang (the drivers' own 60 s, or forever) fails here
        with pytest.raises(DatabaseUnavailable) as caught:
            await app.start()
    message = str(caught.value)
    assert f"127.0.0.1:{silent_port}" in message
    assert "did not answer within 0.5 s" in message
    assert "connect_timeout" in message
    assert isinstance(caught.value, ConnectionError) and isinstance(caught.value, DddframeError)
    assert isinstance(caught.value.cause, TimeoutError)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_refused_port_is_database_unavailable(driver: str) -> None:
    port = free_port()
    app = Application([shopping_module()], f"{driver}://root:secret@127.0.0.1:{port}/app")
    with pytest.raises(DatabaseUnavailable) as caught:
        await app.start()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "secret" not in message
    assert "cannot be reached" in message and "running" in message
    assert caught.value.cause is not None


def test_timeouts_are_validated() -> None:
    from dddframe.database import Database
    from dddframe.errors import ConfigurationError

    for bad in (0, -1, "5", True):
        with pytest.raises(ConfigurationError, match="connect_timeout must be"):
            Database("postgresql+asyncpg://u@127.0.0.1/x", connect_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="command_timeout must be"):
        Database("postgresql+asyncpg://u@127.0.0.1/x", command_timeout=0)


# -- a private PostgreSQL cluster that the test stops and starts ---------------------------


def _pg(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=120)


@pytest.fixture
def private_cluster() -> Iterator[str]:
    if shutil.which("pg_createcluster") is None:
        message = "pg_createcluster is missing (postgresql-common), needed for a private cluster"
        if REQUIRED:
            pytest.fail(message + " and DDDFRAME_REQUIRE_SERVICES=1", pytrace=False)
        pytest.skip(message)
    name = f"dddframe_t{uuid.uuid4().hex[:8]}"
    port = free_port()
    versions = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True).stdout
    version = sorted(versions.split())[-1]
    _pg("pg_createcluster", version, name, "--port", str(port), "--", "--auth=trust")
    try:
        _pg("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start")
        yield f"{version} {name} {port}"
    finally:
        subprocess.run(
            ["pg_dropcluster", version, name, "--stop"], capture_output=True, timeout=120
        )


async def test_engine_run_against_a_stopped_cluster_then_after_its_restart(
    private_cluster: str,
) -> None:
    version, name, port = private_cluster.split()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    async with Application([shopping_module()], url, bus="inprocess") as app:
        await app.create_schema()
        assert await app.engine.run(OpenAccount()) is not None
        await asyncio.to_thread(
            _pg, "pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop", "-m", "fast"
        )
        for _ in range(2):  # the pooled connection is dead, then no new one can be made
            with pytest.raises(DatabaseUnavailable) as caught:
                await app.engine.run(OpenAccount())
            assert f"127.0.0.1:{port}" in str(caught.value)
        with pytest.raises(DddframeError):  # what the docs promise users can catch
            await app.engine.run(OpenAccount())
        await asyncio.to_thread(
            _pg, "pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"
        )
        assert await app.engine.run(OpenAccount()) is not None


class SlowQuery(Command):
    seconds: float


async def test_a_statement_over_the_command_timeout_is_database_unavailable(
    tmp_path: object,
) -> None:
    url = database_url("postgresql", tmp_path)
    m = Module("slow")

    @m.handles(SlowQuery)
    async def slow(cmd: SlowQuery, uow: UnitOfWork) -> None:
        await uow.session.execute(text("SELECT pg_sleep(:s)"), {"s": cmd.seconds})

    async with Application([m], url, engine_options={"command_timeout": 0.5}) as app:
        await app.create_schema()
        with pytest.raises(DatabaseUnavailable, match="did not answer in time") as caught:
            await app.engine.run(SlowQuery(seconds=5))
        assert isinstance(caught.value.cause, TimeoutError)
        await app.engine.run(SlowQuery(seconds=0))  # the pool recovers by itself
