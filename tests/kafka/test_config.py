"""Configuration of the Kafka bus (no broker needed): bus="kafka" from the environment, safe
producer defaults, the naming rule, routing checks, and records that are not ours."""

from __future__ import annotations

import pytest

from dddframe.bus import resolve_bus
from dddframe.bus.kafka import KafkaBus, KafkaCluster, TopicNaming
from dddframe.bus.kafka.records import encode_headers, from_record, to_record
from dddframe.domain.envelope import Envelope
from dddframe.errors import ConfigurationError, PoisonEvent


def test_bus_kafka_without_bootstrap_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDDFRAME_KAFKA_BOOTSTRAP", raising=False)
    with pytest.raises(ConfigurationError, match="DDDFRAME_KAFKA_BOOTSTRAP"):
        resolve_bus("kafka")


def test_bus_kafka_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDDFRAME_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.delenv("DDDFRAME_KAFKA_IDEMPOTENCE", raising=False)
    bus = resolve_bus("kafka")
    assert isinstance(bus, KafkaBus)
    cluster = bus.clusters["default"]
    assert cluster.bootstrap == "k1:9092,k2:9092"
    assert cluster.enable_idempotence is True
    monkeypatch.setenv("DDDFRAME_KAFKA_IDEMPOTENCE", "0")
    off = resolve_bus("kafka")
    assert isinstance(off, KafkaBus) and not off.clusters["default"].enable_idempotence


def test_producer_defaults_are_safe() -> None:
    options = KafkaCluster(bootstrap="k:9092").producer_options()
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True
    assert options["request_timeout_ms"] == 30_000
    assert (
        KafkaCluster(bootstrap="k", enable_idempotence=False).producer_options()[
            "enable_idempotence"
        ]
        is False
    )
    with pytest.raises(ConfigurationError, match="acks='all'"):
        KafkaCluster(bootstrap="k", acks=1)
    consumer = KafkaCluster(bootstrap="k").consumer_options()
    assert consumer["enable_auto_commit"] is False  # offsets only for processed records


def test_routes_and_retry_options_are_checked() -> None:
    cluster = KafkaCluster(bootstrap="k")
    with pytest.raises(ConfigurationError, match="cluster 'eu'"):
        KafkaBus(clusters={"main": cluster}, routes={"Order:Placed": "eu"})
    with pytest.raises(ConfigurationError, match="retry_mode"):
        KafkaBus(clusters={"main": cluster}, retry_mode="later")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry_count"):
        KafkaBus(clusters={"main": cluster}, retry_count=-1)
    with pytest.raises(ConfigurationError, match="not valid"):
        TopicNaming(overrides={"Order:Placed": "orders:all"})


def test_naming_rule_and_routing() -> None:
    bus = KafkaBus(
        clusters={"main": KafkaCluster(bootstrap="a"), "eu": KafkaCluster(bootstrap="b")},
        routes={"Goods:Shopping": "eu"},
        topic_prefix="shop.",
        topics={"Order:Shipped": "shipping"},
    )
    naming = bus.naming
    assert naming.topic_for("Order:Placed") == "shop.order"
    assert naming.topic_for("OrderLine:Added") == "shop.order_line"
    assert naming.topic_for("Order:Shipped") == "shipping"
    assert naming.topic_for("event-sell") == "event-sell"  # freedom's literal topics
    placed = Envelope.new("Order:Placed", "{}", aggregate_type="Order", aggregate_id="1")
    shopping = Envelope.new("Goods:Shopping", "{}", aggregate_type="Goods", aggregate_id="1")
    direct = Envelope.new("event-sell", "{}", headers={"dddframe-cluster": "eu"})
    assert [bus.cluster_of(e) for e in (placed, shopping, direct)] == ["main", "eu", "eu"]


def test_record_round_trip_and_poison() -> None:
    env = Envelope.new(
        "Order:Placed",
        '{"total": "9.50"}',
        aggregate_type="Order",
        aggregate_id="42",
        aggregate_version=3,
        headers={"correlation_id": "c", "traceparent": "00-a-b-01", "x-action": "buy"},
    )
    key, value, headers = to_record(env)
    assert key == b"42"  # one aggregate -> one partition, in order
    back = from_record(headers, value)
    assert back.event_id == env.event_id and back.headers == env.headers
    assert back.aggregate_version == 3 and back.occurred_at == env.occurred_at
    # text that is not JSON is poison for the listener that decodes it, as on every transport
    assert from_record(headers, b"{oops").payload_json == "{oops"
    with pytest.raises(PoisonEvent, match="not JSON"):
        from_record(headers, b"\xff{oops")
    with pytest.raises(PoisonEvent, match="tombstone"):
        from_record(headers, None)
    with pytest.raises(PoisonEvent, match="envelope header"):
        from_record(encode_headers({"x": "y"}), b"{}")
    with pytest.raises(PoisonEvent, match="UTF-8"):
        from_record([("dddframe-name", b"\xff")], b"{}")
