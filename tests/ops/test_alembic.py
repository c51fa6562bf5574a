"""An Alembic-managed project end to end, as docs/operations.md shows it: autogenerate creates
the application's and the framework's tables, a revision calls upgrade_dddframe(), and
``alembic upgrade head`` leaves a database that workers accept and that delivers events."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text, update

from dddframe.database import Database
from dddframe.errors import SchemaNotReady
from dddframe.outbox.schema import check_schema
from dddframe.outbox.tables import schema_table
from dddframe.testing import reset_database
from tests.ops import schema_app
from tests.services import database_url

ROOT = Path(__file__).resolve().parents[2]

ENV_PY = """
import os

from dddframe import Model
from dddframe.integrations.alembic import framework_metadata
import tests.ops.schema_app  # the application's models

config.set_main_option("sqlalchemy.url", os.environ["DDDFRAME_SCHEMA_TEST_URL"])
target_metadata = [Model.metadata, framework_metadata]


def include_object(obj, name, type_, reflected, compare_to):
    # The test database holds other tests' tables too: leave those alone.
    return not (type_ == "table" and reflected and compare_to is None)
"""


def alembic(project: Path, url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=project, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), schema_app.URL_ENV: url},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


async def forget_migrations(url: str) -> None:
    """Drop Alembic's bookkeeping table (reset_database drops only dddframe's and models')."""
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        await db.dispose()


def new_project(tmp_path: Path, url: str) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    alembic(project, url, "init", "--template", "async", "migrations")
    env_py = project / "migrations" / "env.py"
    source = env_py.read_text().replace("target_metadata = None", ENV_PY)
    source = source.replace(
        "target_metadata=target_metadata",
        "target_metadata=target_metadata, include_object=include_object",
    )
    env_py.write_text(source)
    return project


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
async def test_alembic_upgrade_head_builds_a_schema_that_delivers(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = database_url(dialect, tmp_path)
    await reset_database(url)
    await forget_migrations(url)
    project = new_project(tmp_path, url)
    alembic(project, url, "revision", "--autogenerate", "-m", "tables")
    (tables,) = (project / "migrations" / "versions").glob("*_tables.py")
    generated = tables.read_text()
    assert "op.create_table('dddframe_outbox'" in generated
    assert "op.create_table('schema_test_notes'" in generated
    alembic(project, url, "revision", "-m", "dddframe schema")
    (server,) = (project / "migrations" / "versions").glob("*_dddframe_schema.py")
    body, count = re.subn(
        r'def upgrade\(\) -> None:\n(    """.*?"""\n)?    pass',
        "def upgrade() -> None:\n"
        "    from dddframe.integrations.alembic import upgrade_dddframe\n\n"
        "    upgrade_dddframe()",
        server.read_text(),
    )
    assert count == 1, server.read_text()
    server.write_text(body)
    alembic(project, url, "upgrade", "head")
    alembic(project, url, "check")  # the models and the database agree: nothing to generate

    monkeypatch.setenv(schema_app.URL_ENV, url)
    schema_app.Recorder.seen.clear()
    app = schema_app.make_app()
    async with app:  # no create_schema(): Alembic made everything
        await check_schema(app.database)
        if dialect == "postgresql":
            async with app.database.connect() as conn:
                functions = set(
                    (
                        await conn.execute(
                            text("SELECT proname FROM pg_proc WHERE proname LIKE 'dddframe_%'")
                        )
                    ).scalars()
                )
                trigger = await conn.scalar(
                    text("SELECT tgname FROM pg_trigger WHERE tgname = 'dddframe_outbox_notify'")
                )
            assert functions == {
                "dddframe_outbox_notify",
                "dddframe_sequence",
                "dddframe_sequence_read",
            }
            assert trigger == "dddframe_outbox_notify"
        await app.engine.run(schema_app.TakeNote(text="migrated"))
        await app.drain(timeout=60)
        assert schema_app.Recorder.seen == ["migrated"]

        # A dddframe that needs a newer schema than the database has refuses to start workers.
        async with app.database.engine.begin() as conn:
            await conn.execute(update(schema_table).values(version=0))
        with pytest.raises(SchemaNotReady, match="run the dddframe migrations"):
            await check_schema(app.database)
    alembic(project, url, "revision", "-m", "dddframe again")
    (again,) = (project / "migrations" / "versions").glob("*_dddframe_again.py")
    again.write_text(
        re.sub(
            r'def upgrade\(\) -> None:\n(    """.*?"""\n)?    pass',
            "def upgrade() -> None:\n"
            "    from dddframe.integrations.alembic import upgrade_dddframe\n\n"
            "    upgrade_dddframe()",
            again.read_text(),
        )
    )
    alembic(project, url, "upgrade", "head")  # idempotent on a complete schema
    app = schema_app.make_app()
    async with app:
        await check_schema(app.database)
    await forget_migrations(url)
