"""The conformance suite every dddframe transport passes, shipped so that yours can too.

The scenarios are plain pytest classes with async test methods (run them with pytest-asyncio in
``asyncio_mode = "auto"``). Each takes a ``harness`` fixture: a
:class:`~dddframe.testing.contract.harness.TransportHarness` that builds running applications on
your transport. Subclass :class:`TransportContract` (all scenarios) or some of the groups
(:class:`PubSubContract`, :class:`OutboxContract`, :class:`OrderingContract`,
:class:`RetryContract`, :class:`PoisonContract`) in a ``test_*.py`` file of your project, and
provide the fixture::

    import pytest
    from dddframe.testing.contract import OutboxHarness, TransportContract

    from my_transport import MyBus


    class MyHarness(OutboxHarness):  # or TransportHarness for a broker transport
        name = "mybus"

        def bus(self, retry):
            return MyBus(retry=retry, poll_interval=0.05)


    class TestMyBus(TransportContract):
        transport_label = "mybus"
        expected_failures = {"test_poison_undecodable_header": "mybus#12: headers not checked"}

        @pytest.fixture
        def harness(self, tmp_path):
            return MyHarness(f"sqlite+aiosqlite:///{tmp_path}/contract.db")

A broker transport overrides ``inject_poison`` (put a damaged record where its consumers read)
and ``drop_connections`` (close its broker connections from outside); a harness method that
raises :class:`NotSupportedHere` skips the scenarios that need it. ``expected_failures`` run as
strict xfails: once the defect is fixed the scenario fails until its entry is removed.

``python -m dddframe.testing.contract module:Class ...`` prints the markdown table of scenarios
by transport for the given subclasses.
"""

from dddframe.testing.contract.catalog import (
    ContractSuite,
    Scenario,
    markdown_table,
    scenario,
    scenarios_of,
)
from dddframe.testing.contract.harness import (
    POISON_KINDS,
    DeadLetterView,
    NotSupportedHere,
    OutboxHarness,
    PoisonKind,
    TransportHarness,
)
from dddframe.testing.contract.ordering import OrderingContract
from dddframe.testing.contract.outbox import OutboxContract
from dddframe.testing.contract.poison import PoisonContract
from dddframe.testing.contract.pubsub import PubSubContract
from dddframe.testing.contract.retries import RetryContract

__all__ = [
    "POISON_KINDS",
    "ContractSuite",
    "DeadLetterView",
    "NotSupportedHere",
    "OrderingContract",
    "OutboxContract",
    "OutboxHarness",
    "PoisonContract",
    "PoisonKind",
    "PubSubContract",
    "RetryContract",
    "Scenario",
    "TransportContract",
    "TransportHarness",
    "markdown_table",
    "scenario",
    "scenarios_of",
]

# The fault scenarios (faults.py, history.py) join TransportContract when they land.


class TransportContract(
    PubSubContract, OutboxContract, OrderingContract, RetryContract, PoisonContract
):
    """Every scenario of the suite; subclass it and provide the ``harness`` fixture."""
