"""Which subscriptions a database-bus worker takes: a fair share per group, and nothing orphaned.

Every worker holds a heartbeat lease for each subscription group it serves
(``dddframe.member:<group>|<owner>``). For a group whose subscriptions it knows ``n`` and that
``k`` live workers serve, a worker takes at most ``ceil(n / k)`` of them and releases the extra
ones, so ``k`` workers have room for all ``n`` and the load spreads as workers join and leave. A
worker of another group does not count: with one worker per group each takes all of its group.

Workers of one group may still disagree on its subscriptions (a rolling deploy that adds a
listener). A subscription this worker could deliver that stayed unowned for longer than
``lease_ttl`` is taken even above the share, and kept (*rescued*): nothing is left undelivered
because the shares did not add up. See docs/adr/0101-ownership-per-group.md.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dddframe.outbox.leases import Leases

__all__ = ["MEMBER", "SUB", "WORKER", "Ownership", "Plan", "fair_shares", "member_lease"]

SUB = "dddframe.sub:"
WORKER = "dddframe.worker:"
MEMBER = "dddframe.member:"


def member_lease(group: str, owner: str) -> str:
    """The heartbeat lease saying ``owner`` serves ``group``."""
    return f"{MEMBER}{group}|{owner}"


def fair_shares(
    groups: Mapping[str, str], members: Mapping[str, str], owner: str
) -> dict[str, int]:
    """``ceil(subscriptions of the group / live workers of the group)`` for each group.

    ``groups`` maps each subscription this worker serves to its group; ``members`` is the live
    member leases (name -> owner). This worker always counts itself.

    >>> subs = {"a.X": "a", "a.Y": "a", "b.Z": "b"}
    >>> fair_shares(subs, {member_lease("a", "w1"): "w1", member_lease("b", "w2"): "w2"}, "w1")
    {'a': 2, 'b': 1}
    >>> fair_shares(subs, {member_lease("a", "w1"): "w1", member_lease("a", "w2"): "w2"}, "w1")
    {'a': 1, 'b': 1}
    """
    per_group = Counter(groups.values())
    shares: dict[str, int] = {}
    for group, count in per_group.items():
        workers = {o for name, o in members.items() if name == member_lease(group, o)}
        workers.add(owner)
        shares[group] = math.ceil(count / len(workers))
    return shares


@dataclass
class Plan:
    """What to change this heartbeat: subscriptions to give up and to try to take."""

    release: list[str] = field(default_factory=list)
    take: list[str] = field(default_factory=list)


class Ownership:
    """The heartbeat's decisions for one worker; the leases themselves are in ``leases``."""

    def __init__(self, leases: Leases, lease_ttl: float) -> None:
        self.leases = leases
        self.lease_ttl = lease_ttl
        self._free_since: dict[str, float] = {}
        self._rescued: set[str] = set()

    async def announce(self, groups: Iterable[str]) -> None:
        """Renew this worker's heartbeat and group memberships."""
        await self.leases.acquire(WORKER + self.leases.owner)
        for group in sorted(set(groups)):
            await self.leases.acquire(member_lease(group, self.leases.owner))

    async def plan(self, groups: Mapping[str, str], held: Iterable[str]) -> Plan:
        """Decide from the live leases; ``groups`` maps our subscriptions to their groups and
        ``held`` is what we deliver now (its leases renewed just before)."""
        owner = self.leases.owner
        shares = fair_shares(groups, await self.leases.live(MEMBER), owner)
        owners = await self.leases.live(SUB)
        held = [n for n in held if n in groups]
        self._rescued &= set(held)
        plan = Plan()
        count: Counter[str] = Counter()
        for name in held:
            group = groups[name]
            if name not in self._rescued and count[group] >= shares[group]:
                plan.release.append(name)  # more than our share: a less busy worker takes it
            else:
                count[group] += 1
        now = time.monotonic()
        for name, group in groups.items():
            if name in held or SUB + name in owners:
                self._free_since.pop(name, None)
                continue
            free_since = self._free_since.setdefault(name, now)
            if count[group] < shares[group]:
                plan.take.append(name)
                count[group] += 1
            elif now - free_since >= self.lease_ttl:
                plan.take.append(name)  # nobody took it within a lease: the shares disagree
                self._rescued.add(name)
        return plan

    def dropped(self, name: str) -> None:
        self._rescued.discard(name)
