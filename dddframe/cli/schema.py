"""``dddframe schema``: print the schema's DDL, create it in an application's database, or check
that the database is at this dddframe's schema version."""

from __future__ import annotations

import asyncio

import typer

from dddframe.cli.loading import load_app, prepare_schema
from dddframe.outbox.schema import schema_ddl

app = typer.Typer(help="Framework schema: print the DDL, create it or check it.")


@app.callback(invoke_without_command=True)
def schema(
    dialect: str = typer.Option(
        "postgresql", "--dialect", help="postgresql, mysql, mariadb or sqlite"
    ),
    create: bool = typer.Option(False, "--create", help="Create the schema instead of printing"),
    check: bool = typer.Option(
        False, "--check", help="Exit 6 unless the database holds the schema at this version"
    ),
    app_spec: str | None = typer.Option(
        None,
        "--app",
        help="package.module:app: its database (--create, --check); printing adds its tables",
    ),
) -> None:
    """Print the complete DDL (tables, indexes, PostgreSQL functions and triggers, seed rows):
    a database built from it alone is ready to deliver. ``--create`` makes the same schema in
    the application's database, ``--check`` only tests it."""
    if not create and not check:
        metadata = load_app(app_spec, consume=False).metadata if app_spec else ()
        typer.echo(schema_ddl(dialect, *metadata), nl=False)
        return
    if app_spec is None:
        raise typer.BadParameter("--create and --check need --app package.module:app")
    application = load_app(app_spec, consume=False)
    asyncio.run(prepare_schema(application, create=create))  # SchemaNotReady: exit 6
    typer.echo("schema created" if create else "schema is up to date")
