"""``dddframe schema``: print the framework's DDL, or create the tables of an application."""

from __future__ import annotations

import asyncio

import typer

from dddframe.cli.loading import load_app
from dddframe.outbox.schema import create_schema, schema_ddl

app = typer.Typer(help="Framework tables: print the DDL or create them.")


@app.callback(invoke_without_command=True)
def schema(
    dialect: str = typer.Option(
        "postgresql", "--dialect", help="postgresql, mysql, mariadb or sqlite"
    ),
    create: bool = typer.Option(False, "--create", help="Create the tables instead of printing"),
    app_spec: str | None = typer.Option(None, "--app", help="package.module:app (with --create)"),
) -> None:
    """Print ``CREATE TABLE`` statements for the framework tables (pipe them into Alembic or
    psql), or ``--create`` them, with the application's own tables, in its database."""
    if not create:
        typer.echo(schema_ddl(dialect))
        return
    if app_spec is None:
        raise typer.BadParameter("--create needs --app package.module:app")

    async def run() -> None:
        application = load_app(app_spec, consume=False)
        async with application:
            await create_schema(application.database, *application.metadata)
        typer.echo("schema created")

    asyncio.run(run())
