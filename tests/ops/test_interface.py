"""The operator interface is part of the EventBus protocol: a bus without it is refused, by name."""

from __future__ import annotations

import pytest

from dddframe import Application
from dddframe.bus.dead_letters import DeadLetterSelection
from dddframe.errors import ConfigurationError, InvalidArgument


def test_a_bus_without_the_operator_interface_is_refused_by_name() -> None:
    class HalfBus:
        name = "half"

        async def start(self, runtime: object) -> None: ...

    with pytest.raises(ConfigurationError, match=r"lacks .*dead_letters, status"):
        Application(modules=[], database_url="sqlite+aiosqlite://", bus=HalfBus())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": frozenset({"7"})}, "ids must be ints"),
        ({"ids": frozenset({True})}, "ids must be ints"),
        ({"subscription": ""}, "subscription must be a non-empty str"),
        ({"aggregate_id": 7}, "aggregate_id must be a non-empty str"),
        ({"state": "deadd"}, "state must be one of dead, retry, waiting"),
    ],
)
def test_the_selection_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        DeadLetterSelection(**kwargs)  # type: ignore[arg-type]


async def test_replay_and_purge_refuse_an_empty_selection(running_app: Application) -> None:
    for action in (running_app.dead_letters.replay, running_app.dead_letters.purge):
        with pytest.raises(InvalidArgument, match="Name the dead letters"):
            await action()
    with pytest.raises(InvalidArgument, match="limit must be an int >= 1"):
        await running_app.dead_letters.list(limit=0)
