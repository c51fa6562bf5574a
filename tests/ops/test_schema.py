"""The schema as operators meet it: a database built from ``dddframe schema`` output alone
delivers events, and workers check the schema instead of creating it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import delete, update

from dddframe.cli.exits import EXIT_SCHEMA, EXIT_USAGE
from dddframe.database import Database
from dddframe.errors import SchemaNotReady
from dddframe.outbox.schema import SCHEMA_VERSION, check_schema, schema_version
from dddframe.outbox.tables import leases_table, schema_table
from dddframe.testing import reset_database
from tests.ops import schema_app

ROOT = Path(__file__).resolve().parents[2]
SPEC = "tests.ops.schema_app:make_app"


def printed_ddl(dialect: str, url: str) -> str:
    """What ``dddframe schema --dialect D --app ...`` prints (framework and app tables)."""
    done = subprocess.run(
        [sys.executable, "-m", "dddframe.cli", "schema", "--dialect", dialect, "--app",
         "tests.ops.schema_app:make_app"],
        cwd=ROOT, env={**_env(), schema_app.URL_ENV: url}, capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip
    return done.stdout


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}  # tracebacks unwrapped, messages on one line


def load_with_client(url: str, ddl: str) -> None:
    """Feed the DDL to the database's own command-line client, as an operator would."""
    parts = urlsplit(url.replace("+asyncpg", "").replace("+aiomysql", "").replace("+aiosqlite", ""))
    if parts.scheme == "sqlite":
        command = ["sqlite3", "-bail", parts.path[1:]]
    elif parts.scheme == "postgresql":
        command = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", parts.hostname or "127.0.0.1",
                   "-p", str(parts.port or 5432), "-U", parts.username or "postgres",
                   "-d", parts.path[1:]]  # fmt: skip
    else:
        command = ["mysql", "-h", parts.hostname or "127.0.0.1", "-P", str(parts.port or 3306),
                   "-u", parts.username or "root", parts.path[1:]]  # fmt: skip
    subprocess.run(command, input=ddl, text=True, check=True, timeout=120, capture_output=True)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mariadb"])
async def test_a_database_built_from_the_printed_ddl_alone_delivers(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.services import database_url

    url = database_url(dialect, tmp_path)
    await reset_database(url)
    load_with_client(url, printed_ddl(dialect, url))
    monkeypatch.setenv(schema_app.URL_ENV, url)
    schema_app.Recorder.seen.clear()
    app = schema_app.make_app()
    async with app:  # no create_schema(): the tables came from the printed text
        await check_schema(app.database)
        for i in range(3):
            await app.engine.run(schema_app.TakeNote(text=f"note {i}"))
        await app.drain(timeout=60)
    assert schema_app.Recorder.seen == ["note 0", "note 1", "note 2"]


async def test_check_schema_says_what_is_missing_or_behind(sqlite_db: str) -> None:
    db = Database(sqlite_db)
    try:
        with pytest.raises(SchemaNotReady, match=r"do not exist.*dddframe migrations"):
            await check_schema(db)
        from dddframe.outbox.schema import create_schema

        await create_schema(db)
        await check_schema(db)
        async with db.engine.begin() as conn:
            assert await schema_version(conn) == SCHEMA_VERSION
            await conn.execute(update(schema_table).values(version=SCHEMA_VERSION - 1))
        with pytest.raises(SchemaNotReady, match=f"version {SCHEMA_VERSION - 1}.*migrations"):
            await check_schema(db)
        await create_schema(db)  # brings an older schema up to date
        await check_schema(db)
        async with db.engine.begin() as conn:
            await conn.execute(delete(leases_table))
        with pytest.raises(SchemaNotReady, match=r"no 'dddframe\.sequencer' row"):
            await check_schema(db)
    finally:
        await db.dispose()


def run_cli(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dddframe.cli", *args],
        cwd=ROOT, env={**_env(), schema_app.URL_ENV: url}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


async def test_worker_checks_the_schema_and_creates_it_only_when_asked(sqlite_db: str) -> None:
    await reset_database(sqlite_db)
    spec = "tests.ops.schema_app:make_app"
    done = run_cli("worker", "--app", spec, url=sqlite_db)
    assert done.returncode == EXIT_SCHEMA, done.stderr
    assert "--create-schema" in done.stderr and "Traceback" not in done.stderr
    db = Database(sqlite_db)
    try:
        async with db.engine.connect() as conn:
            assert await schema_version(conn) is None  # the worker created nothing
    finally:
        await db.dispose()
    worker = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "dddframe.cli", "worker", "--app", spec, "--create-schema"),
        cwd=ROOT, env={**_env(), schema_app.URL_ENV: sqlite_db},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        db = Database(sqlite_db)
        try:
            async with asyncio.timeout(60):
                while True:
                    try:
                        await check_schema(db)
                        break
                    except SchemaNotReady:
                        await asyncio.sleep(0.2)
        finally:
            await db.dispose()
    finally:
        worker.terminate()
        async with asyncio.timeout(30):
            raw, _ = await worker.communicate()
    assert "worker running: bus=database" in raw.decode()
    assert run_cli("schema", "--check", "--app", spec, url=sqlite_db).returncode == 0


def test_worker_refuses_an_application_on_the_in_process_bus(
    sqlite_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shop with its default settings (in-process bus), as docs/example_shop.md once ran it.
    monkeypatch.setenv("DDDFRAME_SHOP_DATABASE_URL", sqlite_db)
    monkeypatch.setenv("DDDFRAME_SHOP_SETTINGS_FILE", str(tmp_path / "none.env"))
    monkeypatch.delenv("DDDFRAME_SHOP_BUS", raising=False)
    done = run_cli("worker", "--app", "example_shop.app:app", url=sqlite_db)
    assert done.returncode == EXIT_USAGE and len(done.stderr.splitlines()) == 1, done.stderr
    assert "in-process bus" in done.stderr and "bus='database'" in done.stderr


async def test_a_role_without_create_privilege_runs_a_worker(
    postgres_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production: migrations ran as the owner; the worker's role may only read and write."""
    from sqlalchemy import func, select, text

    from dddframe.outbox.tables import outbox_table, positions_table

    await reset_database(postgres_db)
    role = f"dddframe_worker_{uuid.uuid4().hex[:8]}"
    admin = Database(postgres_db)
    database = admin.engine.url.database
    try:
        from dddframe.outbox.schema import create_schema

        await create_schema(admin, schema_app.Note.metadata)
        async with admin.engine.begin() as conn:
            await conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            await conn.execute(
                text(
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
                )
            )
            await conn.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"))
            assert not await conn.scalar(
                text(f"SELECT has_schema_privilege('{role}', 'public', 'CREATE')")
            )
            assert not await conn.scalar(
                text(f"SELECT has_database_privilege('{role}', '{database}', 'CREATE')")
            )
        worker_url = admin.engine.url.set(username=role, password=None)
        worker_spec = worker_url.render_as_string(hide_password=False)
        monkeypatch.setenv(schema_app.URL_ENV, postgres_db)
        writer = schema_app.make_app(consume=False)
        worker = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "dddframe.cli", "worker", "--app", SPEC),
            cwd=ROOT, env={**_env(), schema_app.URL_ENV: worker_spec},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            async with writer:
                for i in range(3):
                    await writer.engine.run(schema_app.TakeNote(text=f"restricted {i}"))
                async with asyncio.timeout(60):
                    while True:
                        async with writer.database.connect() as conn:
                            head = await conn.scalar(select(func.max(outbox_table.c.position)))
                            done = await conn.scalar(select(func.min(positions_table.c.position)))
                        if head == 3 and done == 3:
                            break
                        assert worker.returncode is None
                        await asyncio.sleep(0.2)
        finally:
            worker.terminate()
            async with asyncio.timeout(30):
                raw, _ = await worker.communicate()
        assert "worker running" in raw.decode(), raw.decode()
        assert "permission denied" not in raw.decode(), raw.decode()
    finally:
        async with admin.engine.begin() as conn:
            await conn.execute(text(f"DROP OWNED BY {role}"))
            await conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        await admin.dispose()


def test_relay_checks_the_schema_instead_of_creating_it(sqlite_db: str) -> None:
    env = {
        **_env(),
        "KAFKA_TEST_BOOTSTRAP": "127.0.0.1:9",  # never reached: the check comes first
        "KAFKA_TEST_PREFIX": "schema-check.",
        "KAFKA_TEST_DB_URL": sqlite_db,
    }
    done = subprocess.run(
        [sys.executable, "-m", "dddframe.cli", "relay", "--app", "tests.kafka.kafka_app:make_app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == EXIT_SCHEMA, done.stderr
    assert done.stderr.startswith("dddframe: ") and "dddframe migrations" in done.stderr
