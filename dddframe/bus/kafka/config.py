"""A named Kafka cluster and the client settings dddframe uses with it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import UnknownError

from dddframe.errors import ConfigurationError

__all__ = ["BOOTSTRAP_ENV", "IDEMPOTENCE_ENV", "KafkaCluster", "clusters_from_env"]

BOOTSTRAP_ENV = "DDDFRAME_KAFKA_BOOTSTRAP"
IDEMPOTENCE_ENV = "DDDFRAME_KAFKA_IDEMPOTENCE"


@dataclass(frozen=True)
class KafkaCluster:
    """Where a cluster is and how dddframe produces to it and consumes from it.

    Safe defaults: ``acks="all"``, ``enable_idempotence=True`` (switch it off only for brokers
    that lack it, such as the tansu test broker), a ``send_timeout`` deadline per record and at
    most ``max_in_flight`` unacknowledged records per relay. ``max_request_size`` is the largest
    record the relay produces (keep it at most the topics' ``max.message.bytes``); a larger event
    is sent as poison without its payload, so it is dead-lettered instead of stopping the relay.
    ``batch_bytes`` is the largest record batch the relay builds per partition (aiokafka's
    ``max_batch_size``, at most ``max_request_size``): aiokafka sends one batch per partition
    in each produce request and one request per broker at a time, so with its 16 KiB default
    the relay waited for a round trip every few dozen records per partition.
    ``partitions`` is used for the topics dddframe creates; ``session_timeout`` is how soon a
    dead consumer's partitions move; ``client_options`` go to every aiokafka client (security,
    SASL...).

    >>> KafkaCluster(bootstrap="127.0.0.1:9092").producer_options()["acks"]
        'all'
    """

    bootstrap: str
    enable_idempotence: bool = True
    acks: str | int = "all"
    send_timeout: float = 30.0
    max_in_flight: int = 10_000
    linger_ms: int = 2
    compression_type: str | None = None
    partitions: int = 4
    replication_factor: int = 1
    session_timeout: float = 10.0
    fetch_max_wait_ms: int = 20
    max_request_size: int = 1_048_576
    batch_bytes: int = 262_144
    client_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bootstrap:
            raise ConfigurationError("KafkaCluster needs bootstrap='host:port[,host:port]'")
        if self.acks not in ("all", -1, 0, 1):
            raise ConfigurationError(f"acks must be 'all', 1 or 0, not {self.acks!r}")
        if self.enable_idempotence and self.acks not in ("all", -1):
            raise ConfigurationError("enable_idempotence=True needs acks='all'")
        if self.send_timeout <= 0 or self.max_in_flight < 1 or self.partitions < 1:
            raise ConfigurationError("send_timeout > 0, max_in_flight >= 1, partitions >= 1")
        if self.max_request_size < 1024:
            raise ConfigurationError(
                f"max_request_size must be at least 1024 bytes, not {self.max_request_size!r}"
            )
        if self.batch_bytes < 1024:
            raise ConfigurationError(
                f"batch_bytes must be at least 1024 bytes, not {self.batch_bytes!r}"
            )

    def explain(self, exc: BaseException) -> str | None:
        """What to change when ``exc`` comes from this configuration, else None.

        A broker without idempotent producers (no InitProducerId, e.g. tansu) fails every
        send of an idempotent producer with ``[Error -1] UnknownError``, which says nothing.

        >>> print(KafkaCluster(bootstrap="b:9092").explain(UnknownError()))
        the broker at b:9092 answered [Error -1] UnknownError to an idempotent producer: brokers \
without idempotent producers do; set KafkaCluster(enable_idempotence=False) \
(DDDFRAME_KAFKA_IDEMPOTENCE=0 with bus="kafka")
        """
        if self.enable_idempotence and isinstance(exc, UnknownError):
            return (
                f"the broker at {self.bootstrap} answered {exc} to an idempotent producer: "
                "brokers without idempotent producers do; set "
                "KafkaCluster(enable_idempotence=False) "
                f'({IDEMPOTENCE_ENV}=0 with bus="kafka")'
            )
        return None

    def producer_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "acks": self.acks,
            "enable_idempotence": self.enable_idempotence,
            "request_timeout_ms": int(self.send_timeout * 1000),
            "linger_ms": self.linger_ms,
            "compression_type": self.compression_type,
            "max_request_size": self.max_request_size,
            **self.client_options,
        }

    def relay_producer_options(self) -> dict[str, Any]:
        """:meth:`producer_options` with the relay's batch size (``client_options`` win).

        >>> KafkaCluster(bootstrap="b:9092", batch_bytes=2048).relay_producer_options()[
        ...     "max_batch_size"]
        2048
        """
        size = min(self.batch_bytes, self.max_request_size)
        return {"max_batch_size": size, **self.producer_options()}

    def consumer_options(self) -> dict[str, Any]:
        session_ms = int(self.session_timeout * 1000)
        return {
            "bootstrap_servers": self.bootstrap,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            # A broker that answers a fetch only at its deadline (tansu) adds up to this much
            # latency; Kafka answers as soon as a record arrives.
            "fetch_max_wait_ms": self.fetch_max_wait_ms,
            "session_timeout_ms": session_ms,
            "heartbeat_interval_ms": max(100, session_ms // 5),
            "metadata_max_age_ms": 30_000,
            **self.client_options,
        }


def clusters_from_env() -> dict[str, KafkaCluster]:
    """``{"default": KafkaCluster(...)}`` from DDDFRAME_KAFKA_BOOTSTRAP (for ``bus="kafka"``)."""
    bootstrap = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not bootstrap:
        raise ConfigurationError(
            f'bus="kafka" needs the brokers: set {BOOTSTRAP_ENV}=host:9092 (comma-separated '
            "for several), or pass bus=KafkaBus(clusters={'default': "
            "KafkaCluster(bootstrap='host:9092')})."
        )
    idempotence = os.environ.get(IDEMPOTENCE_ENV, "1").strip().lower() not in ("0", "false", "no")
    return {"default": KafkaCluster(bootstrap=bootstrap, enable_idempotence=idempotence)}
