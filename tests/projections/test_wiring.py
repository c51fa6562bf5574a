"""Projections are checked at start-up like listeners: misspelt event names and handler methods
get "did you mean" suggestions, bad declarations say what to write instead."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table

from dddframe import Application, DomainEvent, Module, Projection, ProjectionView
from dddframe.errors import ConfigurationError, ProjectionNotFound, UsageError
from tests.projections.conftest import AppFactory
from tests.projections.model import LINE, LISTEN, PLACED, OrderTotals, projection_module


class Shipped(DomainEvent):
    __event_name__ = "Proj:Shipped"
    order_id: str


other = Table("proj_other", MetaData(), Column("id", Integer, primary_key=True))


class Other(Projection):
    tables = (other,)

    async def on_placed(self, event: dict[str, Any], view: ProjectionView) -> None:
        pass

    def not_async(self, event: dict[str, Any], view: ProjectionView) -> None:
        pass

    async def no_view(self, event: dict[str, Any]) -> None:
        pass

    async def wrong_class(self, event: Shipped, view: ProjectionView) -> None:
        pass


def _module(listen: dict[str, str], projection: type[Projection] = Other) -> Module:
    m = Module("wiring")
    m.event(PLACED, LINE)
    m.projection(projection, listen=listen)
    return m


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        (
            {"Proj:Placd": "on_placed"},
            r"no event is named 'Proj:Placd'.*Did you mean 'Proj:Placed'",
        ),
        ({PLACED: "on_placd"}, r"Other has no method 'on_placd'. Did you mean 'on_placed'"),
        ({PLACED: "not_async"}, r"Other.not_async must be async def"),
        ({PLACED: "no_view"}, r"must take \(self, event, view\), not \(self, event\)"),
        ({PLACED: "wrong_class"}, r"annotated Shipped .* not the class of 'Proj:Placed'"),
    ],
)
async def test_start_up_explains_a_wrong_binding(
    sqlite_db: str, listen: dict[str, str], message: str
) -> None:
    app = Application([_module(listen)], database_url=sqlite_db)
    with pytest.raises(ConfigurationError, match=message):
        await app.start()


def test_module_projection_checks_its_arguments() -> None:
    m = Module("wiring")
    with pytest.raises(ConfigurationError, match=r"must be a dddframe\.Projection subclass"):
        m.projection(object, listen=LISTEN)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="listen must map event names"):
        m.projection(Other, listen={})
    with pytest.raises(ConfigurationError, match="must be a method name"):
        m.projection(Other, listen={PLACED: Other.on_placed})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="dead_letter must be"):
        m.projection(Other, listen=LISTEN, dead_letter="drop")  # type: ignore[arg-type]

    class NoTables(Projection):
        pass

    with pytest.raises(ConfigurationError, match="tuple of SQLAlchemy Table objects"):
        m.projection(NoTables, listen=LISTEN)

    class OneTable(Projection):
        tables = other  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match=r"a tuple of Tables: \(proj_other,\)"):
        m.projection(OneTable, listen=LISTEN)


async def test_two_projections_with_one_name_or_one_table_are_refused(sqlite_db: str) -> None:
    twice = projection_module(reference=False)
    twice.projection(OrderTotals, listen=LISTEN)
    with pytest.raises(ConfigurationError, match="Two projections are named 'OrderTotals'"):
        await Application([twice], database_url=sqlite_db).start()

    class Thief(OrderTotals):
        name = "Thief"

    shared = projection_module(reference=False)
    shared.projection(Thief, listen=LISTEN)
    with pytest.raises(ConfigurationError, match="Table 'proj_orders' is declared by"):
        await Application([shared], database_url=sqlite_db).start()


async def test_unknown_projection_names_get_suggestions(
    sqlite_db: str, make_app: AppFactory
) -> None:
    async with make_app(sqlite_db, [projection_module(reference=False)]) as app:
        with pytest.raises(ProjectionNotFound, match="Did you mean 'OrderTotals'"):
            await app.projections.rebuild("OrderTotal")
        with pytest.raises(ProjectionNotFound, match="not a projection"):
            app.projections.get(42)  # type: ignore[arg-type]
        async with app.projections.read(OrderTotals) as view:
            with pytest.raises(UsageError, match="'proj_other' is not one of this projection"):
                view.table(other)
