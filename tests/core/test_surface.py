"""The rest of the public surface: id types, controller discovery, plugin fixtures, CLI."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column
from typer.testing import CliRunner

from dddframe import Aggregate, Application, Command, Module, Repository
from dddframe.cli import app as cli
from dddframe.cli.exits import EXIT_USAGE
from dddframe.errors import ConfigurationError
from tests.core.conftest import outbox_rows
from tests.core.found_controllers import ledger
from tests.core.model import Deposit, OpenAccount, shopping_module


class Sku(Aggregate):
    """An aggregate with its own id type instead of the UUIDv7 default."""

    __tablename__ = "core_skus"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stock: Mapped[int] = mapped_column(default=0)

    def restock(self, n: int) -> None:
        self.stock += n
        self.domain_event("Core:Restocked", {"sku": self.id, "n": n})


class Restock(Command):
    sku: str
    n: int


def sku_module() -> Module:
    m = Module("skus")
    m.event("Core:Restocked")

    @m.handles(Restock)
    async def restock(cmd: Restock, skus: Repository[Sku]) -> int:
        sku = await skus.find(cmd.sku)
        if sku is None:
            sku = Sku(id=cmd.sku, stock=0)
            skus.add(sku)
        sku.restock(cmd.n)
        return sku.stock

    return m


async def test_aggregate_with_its_own_id_type(
    dddframe_app: Callable[..., AbstractAsyncContextManager[Application]],
) -> None:
    # dddframe_app comes from the dddframe pytest plugin (temporary SQLite database)
    async with dddframe_app([sku_module()]) as app:
        assert await app.engine.run(Restock(sku="ABC-1", n=2)) == 2
        assert await app.engine.run(Restock(sku="ABC-1", n=3)) == 5
        rows = await outbox_rows(app)
    assert [(r.aggregate_id, r.aggregate_version) for r in rows] == [("ABC-1", 1), ("ABC-1", 2)]


async def test_controllers_are_found_by_name_in_the_module_package(
    dddframe_app: Callable[..., AbstractAsyncContextManager[Application]],
) -> None:
    ledger.SEEN.clear()
    books = Module("books", package="tests.core.found_controllers")
    books.listen("Core:Deposited", "LedgerController.on_deposited")
    async with dddframe_app([shopping_module(), books]) as app:
        account_id = await app.engine.run(OpenAccount())
        await app.engine.run(Deposit(account_id=account_id, amount=7))
        await app.drain()
    assert ledger.SEEN == [{"amount": 7, "balance": 7}]


def test_cli_prints_the_schema_for_a_dialect() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["schema", "--dialect", "postgresql"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE dddframe_outbox" in result.output
    assert "BIGSERIAL" in result.output
    result = runner.invoke(cli, ["schema", "--dialect", "mariadb"])
    assert "LONGTEXT" in result.output
    result = runner.invoke(cli, ["schema", "--dialect", "oracle"])
    assert result.exit_code == EXIT_USAGE  # one line, no traceback
    assert (
        result.stderr
        == "dddframe: Unknown dialect 'oracle': choose postgresql, mysql, mariadb or sqlite.\n"
    )


async def test_bus_name_typos_are_explained() -> None:
    with pytest.raises(ConfigurationError, match="Did you mean 'inprocess'"):
        Application([], "sqlite+aiosqlite://", bus="inprocesss")
    with pytest.raises(ConfigurationError, match=r"not a valid URL|Unsupported database"):
        await Application([], "oracle://x").start()
