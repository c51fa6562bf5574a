"""The Kafka bus's listener options.

>>> KafkaListenerOptions(retry_mode="topic", retry_count=3).given()
{'retry_mode': 'topic', 'retry_count': 3}
>>> KafkaListenerOptions(retry_mode="later")
Traceback (most recent call last):
...
dddframe.errors.ConfigurationError: option retry_mode='later' is not valid: 'blocking' or 'topic'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from dddframe.bus.options import ListenerOptions, invalid_option

__all__ = ["KafkaListenerOptions"]


@dataclass(frozen=True, slots=True)
class KafkaListenerOptions(ListenerOptions):
    """``listen(..., retry_mode=, retry_count=, cluster=, push_url=)``; None: the bus's setting.

    ``retry_mode``: ``"blocking"`` (retry in place, the partition waits) or ``"topic"``
    (non-blocking retry topic). ``retry_count``: attempts before the dead-letter topic (0:
    dead-letter at the first failure). ``cluster``: the cluster this listener consumes from
    (checked against the bus's clusters at start). ``push_url``: POST every record there
    instead of calling the listener.
    """

    transport: ClassVar[str] = "the Kafka"

    retry_mode: Literal["blocking", "topic"] | None = None
    retry_count: int | None = None
    cluster: str | None = None
    push_url: str | None = None

    def __post_init__(self) -> None:
        if self.retry_mode not in (None, "blocking", "topic"):
            raise invalid_option("retry_mode", self.retry_mode, "'blocking' or 'topic'")
        count = self.retry_count
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise invalid_option("retry_count", count, "an int >= 0 (0: no retries)")
        if self.cluster is not None and (not isinstance(self.cluster, str) or not self.cluster):
            raise invalid_option("cluster", self.cluster, "the name of one of the bus's clusters")
        url = self.push_url
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise invalid_option("push_url", url, "an http:// or https:// URL")
