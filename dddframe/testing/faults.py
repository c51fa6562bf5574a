"""Fault injection for the in-process bus: prove listeners idempotent and flows retry-safe.

>>> from dddframe.bus.inprocess import InProcessBus
>>> faults = FaultInjector()
>>> bus = InProcessBus(faults=faults)
>>> faults.deliver_twice().fail_next(2)  # chainable
FaultInjector(twice=True, fail_next=2, crash_after_commit=False)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

from dddframe.bus.subscription import Deliver, Subscription
from dddframe.domain.envelope import Envelope

__all__ = ["FaultInjector", "InjectedFault"]


class InjectedFault(RuntimeError):
    """The failure :meth:`FaultInjector.fail_next` raises instead of calling the listener."""


class FaultInjector:
    """Pass to ``InProcessBus(faults=...)``; switch faults on while the application runs."""

    def __init__(self) -> None:
        self._twice = False
        self._fail_next = 0
        self._crash = False
        self.injected_failures = 0

    def __repr__(self) -> str:
        return (
            f"FaultInjector(twice={self._twice}, fail_next={self._fail_next}, "
            f"crash_after_commit={self._crash})"
        )

    def deliver_twice(self, enabled: bool = True) -> FaultInjector:
        """Call every listener twice per delivery, as a redelivery after a lost ack would."""
        self._twice = enabled
        return self

    def fail_next(self, n: int) -> FaultInjector:
        """Make the next ``n`` deliveries fail with :class:`InjectedFault` before the listener."""
        if n < 0:
            raise ValueError("n must be >= 0")
        self._fail_next = n
        return self

    def crash_after_commit(self) -> FaultInjector:
        """SIGKILL this process right after the next commit, before any delivery."""
        self._crash = True
        return self

    def wrap(self, deliver: Deliver) -> Deliver:
        async def faulty(envelope: Envelope, attempt: int, subscription: Subscription) -> None:
            if self._fail_next > 0:
                self._fail_next -= 1
                self.injected_failures += 1
                raise InjectedFault(f"injected failure of {envelope.name} {envelope.event_id}")
            await deliver(envelope, attempt, subscription)
            if self._twice:
                await deliver(envelope, attempt, subscription)

        return faulty

    def after_commit(self, envelopes: Sequence[Envelope]) -> None:
        if self._crash:
            os.kill(os.getpid(), signal.SIGKILL)
