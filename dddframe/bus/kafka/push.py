"""Push mode (freedom's HTTP proxy consumption): each record is POSTed to an HTTP endpoint of
the service instead of calling the listener in the consumer process.

The body is the event's JSON payload, the headers are the envelope headers (``dddframe-*``, the
correlation id, traceparent, user headers) plus ``dddframe-attempt`` and
``dddframe-subscription``. A 2xx answer is success; any other status, a time-out or a connection
error is a failure that goes through the listener's retry policy and, in the end, the
dead-letter topic.
"""

from __future__ import annotations

import httpx

from dddframe.bus.codec import envelope_headers
from dddframe.bus.subscription import Deliver, Subscription
from dddframe.domain.envelope import Envelope
from dddframe.errors import PushFailed

__all__ = ["PushFailed", "push_deliver"]


def push_deliver(url: str, client: httpx.AsyncClient, timeout: float) -> Deliver:
    """A delivery callable that POSTs the record to ``url``.

    >>> import asyncio
    >>> deliver = push_deliver("http://127.0.0.1:1/events", httpx.AsyncClient(), 1.0)
    >>> callable(deliver)
    True
    """

    async def deliver(envelope: Envelope, attempt: int, subscription: Subscription) -> None:
        headers = envelope_headers(envelope)
        headers["dddframe-attempt"] = str(attempt)
        headers["dddframe-subscription"] = subscription.name
        headers["content-type"] = "application/json"
        response = await client.post(
            url, content=envelope.payload_json.encode(), headers=headers, timeout=timeout
        )
        if not 200 <= response.status_code < 300:
            raise PushFailed(
                f"push endpoint {url} answered {response.status_code} for {envelope.name} "
                f"{envelope.event_id}: {response.text[:200]}"
            )

    return deliver
