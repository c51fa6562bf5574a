"""Which Kafka topic an event goes to, and the retry and dead-letter topics of a group.

The rule must give the same answer to the relay (which knows the whole envelope) and to a
consumer (which knows only the event names its listeners are bound to), so it is a function of
the event name: names follow ``Aggregate:Event`` (``Order:Placed``), and the part before the
colon names the aggregate type, so by default there is one topic per aggregate type. A name
without a colon is a direct message (freedom's ``NewMsg("event-sell", ...)``) and its topic is
the name itself. See docs/adr/0200-kafka-topics-offsets-and-dead-letters.md.

>>> naming = TopicNaming(prefix="shop.", overrides={"Order:Shipped": "shipping"})
>>> naming.topic_for("Order:Placed"), naming.topic_for("OrderLine:Added")
('shop.order', 'shop.order_line')
>>> naming.topic_for("Order:Shipped"), naming.topic_for("event-sell")
('shipping', 'event-sell')
>>> naming.retry_topic("store"), naming.dead_letter_topic("store")
('retry-store', 'fail-store')
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dddframe.domain.envelope import Envelope
from dddframe.domain.limits import KAFKA_TOPIC_MAX, check_name
from dddframe.errors import ConfigurationError

__all__ = ["ROUTE_CLUSTER", "ROUTE_TOPIC", "TopicNaming", "topic_problem"]

ROUTE_TOPIC = "dddframe-topic"
"""Header of a direct message naming its topic exactly (set by ``KafkaBus.publish``)."""
ROUTE_CLUSTER = "dddframe-cluster"
"""Header of a direct message naming the cluster it goes to."""

_INVALID = re.compile(r"[^a-zA-Z0-9._-]")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_BY_NAME_MAX = 10_000  # event names whose topic a TopicNaming remembers


def _slug(text: str) -> str:
    return _INVALID.sub("_", text)


def topic_problem(topic: str) -> str | None:
    """Why Kafka would refuse ``topic`` as a topic name, or None when it is valid.

    >>> topic_problem("shop.order") is None
    True
    >>> topic_problem("..")
    "'..' is not a valid Kafka topic: '.' and '..' are reserved"
    >>> topic_problem("a/b")
    "'a/b' is not a valid Kafka topic: use letters, digits, '.', '_' and '-'"
    >>> topic_problem("t" * 250)
    'the Kafka topic is longer than 249 characters (250)'
    """
    if len(topic) > KAFKA_TOPIC_MAX:
        return f"the Kafka topic is longer than {KAFKA_TOPIC_MAX} characters ({len(topic)})"
    if not topic:
        return "the Kafka topic is empty"
    if topic in (".", ".."):
        return f"{topic!r} is not a valid Kafka topic: '.' and '..' are reserved"
    if _INVALID.search(topic):
        return f"{topic!r} is not a valid Kafka topic: use letters, digits, '.', '_' and '-'"
    return None


class TopicNaming:
    """The naming rule: ``prefix`` + snake_case aggregate type, or the override for a name."""

    def __init__(
        self,
        prefix: str = "",
        overrides: Mapping[str, str] | None = None,
        *,
        retry_prefix: str = "retry-",
        fail_prefix: str = "fail-",
    ) -> None:
        for topic in (overrides or {}).values():
            if not isinstance(topic, str) or not topic or _INVALID.search(topic):
                raise ConfigurationError(
                    f"Kafka topic {topic!r} is not valid: use letters, digits, '.', '_' and '-'."
                )
            check_name(topic, "Kafka topic", KAFKA_TOPIC_MAX, where="topics", source="Kafka")
        if prefix:  # leave room for at least one character of the topic
            check_name(
                prefix, "topic prefix", KAFKA_TOPIC_MAX - 1, where="topic_prefix", source="Kafka"
            )
        if not retry_prefix or not fail_prefix or retry_prefix == fail_prefix:
            raise ConfigurationError("retry_prefix and fail_prefix must be different, non-empty")
        self.prefix = prefix
        self.overrides = dict(overrides or {})
        self.retry_prefix = retry_prefix
        self.fail_prefix = fail_prefix
        self._by_name: dict[str, str] = {}  # the rule's answers (a relay asks per record)

    def topic_for(self, name: str) -> str:
        """The topic of events (or direct messages) called ``name``."""
        topic = self._by_name.get(name)
        if topic is None:
            topic = self._rule(name)
            if len(self._by_name) >= _BY_NAME_MAX:  # names come from stored rows: bounded
                self._by_name.clear()
            self._by_name[name] = topic
        return topic

    def _rule(self, name: str) -> str:
        topic = self.overrides.get(name)
        if topic is not None:
            return topic
        aggregate, colon, _ = name.partition(":")
        if colon and aggregate:
            return _slug(self.prefix + _CAMEL.sub("_", aggregate).lower())
        return _slug(name)

    def topic_of(self, envelope: Envelope) -> str:
        """The topic of one envelope: its explicit direct-message topic, else the rule."""
        return envelope.headers.get(ROUTE_TOPIC) or self.topic_for(envelope.name)

    def retry_topic(self, group_id: str) -> str:
        return _slug(self.retry_prefix + group_id)

    def dead_letter_topic(self, group_id: str) -> str:
        return _slug(self.fail_prefix + group_id)
