"""The Kafka bus (aiokafka): outbox relay to Kafka, consumer groups bound by name, retry and
dead-letter topics, several named clusters. See docs/guarantees/kafka.md.

>>> bus = KafkaBus(clusters={"default": KafkaCluster(bootstrap="127.0.0.1:9092")})
>>> bus.clusters["default"].enable_idempotence
True
"""

from dddframe.errors import missing_extra

try:
    from dddframe.bus.kafka.bus import KafkaBus
    from dddframe.bus.kafka.config import KafkaCluster
    from dddframe.bus.kafka.dead_letters import KafkaDeadLetter, KafkaDeadLetters
    from dddframe.bus.kafka.push import PushFailed
    from dddframe.bus.kafka.topics import TopicNaming
except ModuleNotFoundError as _exc:
    if (_exc.name or "").startswith("dddframe"):
        raise  # a bug of ours, not a missing extra
    raise missing_extra(_exc, "kafka", "The Kafka bus") from _exc


__all__ = [
    "KafkaBus",
    "KafkaCluster",
    "KafkaDeadLetter",
    "KafkaDeadLetters",
    "PushFailed",
    "TopicNaming",
]
