"""Listener options are typed per transport and checked against the chosen bus at start-up."""

from __future__ import annotations

from typing import Any

import pytest

from dddframe import Application, Module
from dddframe.bus.amqp import AmqpBus
from dddframe.bus.amqp.options import AmqpListenerOptions
from dddframe.bus.database import DatabaseBus
from dddframe.bus.database.options import DatabaseListenerOptions
from dddframe.bus.inprocess import InProcessBus
from dddframe.bus.inprocess.options import InProcessListenerOptions
from dddframe.bus.kafka import KafkaBus, KafkaCluster
from dddframe.bus.kafka.options import KafkaListenerOptions
from dddframe.bus.options import ListenerOptions
from dddframe.bus.retry import NoRetry
from dddframe.errors import ConfigurationError
from tests.core.test_validation import NoteWatcher, Seen


def watching(**listen: Any) -> Module:
    m = Module("opts")
    m.bind(Seen, to=Seen())
    m.controller(NoteWatcher)
    m.listen("Valid:Noted", "NoteWatcher.on_noted", **listen)
    return m


def kafka() -> KafkaBus:
    # Never contacted: options are checked before the bus starts (no schema, so no start).
    return KafkaBus({"main": KafkaCluster(bootstrap="127.0.0.1:1")})


def amqp() -> AmqpBus:
    return AmqpBus("amqp://guest:guest@127.0.0.1:1/")


BUSES = {
    "inprocess": InProcessBus,
    "database": DatabaseBus,
    "kafka": kafka,
    "amqp": amqp,
}


async def _start(sqlite_db: str, bus: Any, **listen: Any) -> Application:
    app = Application([watching(**listen)], sqlite_db, bus=bus)
    await app.start()
    return app


@pytest.mark.parametrize("transport", BUSES)
async def test_a_misspelt_option_is_refused_at_start_with_a_suggestion(
    sqlite_db: str, transport: str
) -> None:
    app = Application([watching(retyr=NoRetry())], sqlite_db, bus=BUSES[transport]())
    with pytest.raises(ConfigurationError) as caught:
        await app.start()
    message = str(caught.value)
    assert "module 'opts': listen('Valid:Noted', 'NoteWatcher.on_noted')" in message
    assert "unknown option 'retyr'" in message
    assert "Did you mean 'retry'" in message  # the closest first


async def test_a_foreign_transport_option_names_what_the_bus_takes(sqlite_db: str) -> None:
    with pytest.raises(ConfigurationError, match="the in-process bus takes no transport options"):
        await _start(sqlite_db, InProcessBus(), retry_mode="topic")
    with pytest.raises(ConfigurationError, match="'retry_mode'; the AMQP bus takes 'routing_keys'"):
        await _start(sqlite_db, amqp(), retry_mode="topic")
    with pytest.raises(ConfigurationError, match="Did you mean 'retry_count' or"):
        await _start(sqlite_db, kafka(), retry_cout=2)


@pytest.mark.parametrize(
    ("bus", "listen", "message"),
    [
        (kafka, {"retry_mode": "later"}, "retry_mode='later' is not valid: 'blocking' or 'topic'"),
        (kafka, {"retry_count": "3"}, "retry_count='3' is not valid: an int >= 0"),
        (kafka, {"retry_count": -1}, "retry_count=-1 is not valid"),
        (kafka, {"retry_count": True}, "retry_count=True is not valid"),
        (kafka, {"push_url": "ftp://x"}, "push_url='ftp://x' is not valid: an http"),
        (kafka, {"cluster": 3}, "cluster=3 is not valid"),
        (amqp, {"routing_keys": "shop.#"}, "routing_keys='shop.#' is not valid"),
        (amqp, {"routing_keys": [1]}, "routing_keys=[1] is not valid"),
        (amqp, {"routing_keys": ["k" * 256]}, "256 bytes in UTF-8"),
    ],
)
async def test_a_wrong_value_is_refused_at_start(
    sqlite_db: str, bus: Any, listen: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await _start(sqlite_db, bus(), **listen)
    assert "listen('Valid:Noted', 'NoteWatcher.on_noted')" in str(caught.value)
    assert message in str(caught.value)


async def test_valid_options_reach_the_subscription_keywords_or_typed(sqlite_db: str) -> None:
    app = await _start(sqlite_db, kafka(), retry_mode="topic", retry_count=2)
    assert app.subscriptions[0].options == {"retry_mode": "topic", "retry_count": 2}
    await app.stop()
    typed = KafkaListenerOptions(retry_mode="topic", push_url="http://127.0.0.1:9/e")
    app = await _start(sqlite_db, kafka(), options=typed)
    assert app.subscriptions[0].options == {"retry_mode": "topic", "push_url": typed.push_url}
    await app.stop()
    app = await _start(sqlite_db, amqp(), routing_keys=["shop.notice.*"])
    assert app.subscriptions[0].options == {"routing_keys": ("shop.notice.*",)}
    await app.stop()
    app = await _start(sqlite_db, InProcessBus())
    assert app.subscriptions[0].options == {}
    await app.stop()


async def test_typed_options_must_fit_the_bus(sqlite_db: str) -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"options=AmqpListenerOptions\(\.\.\.\) does not fit the 'kafka' bus, which takes "
        "KafkaListenerOptions",
    ):
        await _start(sqlite_db, kafka(), options=AmqpListenerOptions(routing_keys=["#"]))


def test_listen_checks_what_it_can_without_the_bus() -> None:
    m = Module("opts")
    with pytest.raises(ConfigurationError, match="options must be a transport's ListenerOptions"):
        m.listen("Valid:Noted", "A.b", options={"retry_mode": "topic"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="either as keywords or as options"):
        m.listen("Valid:Noted", "A.b", options=KafkaListenerOptions(), retry_count=1)
    with pytest.raises(ConfigurationError, match="start must be 'earliest', 'latest' or"):
        m.listen("Valid:Noted", "A.b", start="first")
    with pytest.raises(ConfigurationError, match="start must be"):
        m.listen("Valid:Noted", "A.b", start=-1)
    with pytest.raises(ConfigurationError, match="timeout must be a positive number"):
        m.listen("Valid:Noted", "A.b", timeout="5")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="group 'a b' must be"):
        m.listen("Valid:Noted", "A.b", group="a b")
    with pytest.raises(ConfigurationError, match="retry policy must have next_delay"):
        m.listen("Valid:Noted", "A.b", retry=3)  # type: ignore[arg-type]
    assert m.listeners == []


def test_every_transport_declares_its_options_type() -> None:
    assert InProcessBus.listener_options is InProcessListenerOptions
    assert DatabaseBus.listener_options is DatabaseListenerOptions
    assert KafkaBus.listener_options is KafkaListenerOptions
    assert AmqpBus.listener_options is AmqpListenerOptions
    for cls in (InProcessBus, DatabaseBus, KafkaBus, AmqpBus):
        assert issubclass(cls.listener_options, ListenerOptions)
    assert KafkaListenerOptions.names() == ["retry_mode", "retry_count", "cluster", "push_url"]


async def test_a_bus_without_declared_options_takes_none(sqlite_db: str) -> None:
    class Plain(InProcessBus):
        listener_options = None  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match="unknown option 'colour'"):
        await _start(sqlite_db, Plain(), colour="red")
