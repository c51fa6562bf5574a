"""Process managers on SQLite, PostgreSQL and MariaDB: a step's state, inbox entry, sent
commands and timers commit together; duplicated and concurrent events make one transition
each and send nothing twice; timers fire once, never when cancelled or completed; names are
checked at start-up."""

from __future__ import annotations

import abc
import asyncio
import logging
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from dddframe import Application, Envelope, Module, ProcessManager
from dddframe.bus.inprocess import InProcessBus
from dddframe.bus.subscription import Subscription
from dddframe.errors import ConfigurationError, MissingBinding, UsageError
from dddframe.outbox.tables import schedules_table
from dddframe.testing import reset_database
from tests.processes.model import (
    FAILING_TIMEOUTS,
    Charge,
    Fulfilment,
    Place,
    PmOrder,
    PmPlaced,
    Tick,
    fulfilment_module,
)
from tests.processes.reading import (
    has_effect,
    read_effects,
    read_instance,
    read_outbox,
    wait_until,
)


async def _app(url: str, **options: Any) -> Application:
    await reset_database(url)
    options.setdefault("bus", InProcessBus(poll_interval=0.05))
    app = Application([fulfilment_module()], url, **options)
    await app.start()
    await app.create_schema()
    return app


def _subscription(app: Application) -> Subscription:
    return next(s for s in app.subscriptions if s.name == "fulfilment.Fulfilment")


async def test_a_process_runs_from_its_first_event_to_completion(any_db: str) -> None:
    app = await _app(any_db)
    try:
        order = await app.engine.run(Place(order_id="o-1"))
        await app.drain()
        await wait_until(lambda: has_effect(app, ("reserve", "o-1")))
        pm = await read_instance(app, "o-1")
        assert pm is not None and pm.state == "awaiting_payment" and not pm.completed
        (timer,) = pm.pending_timers.values()
        assert (await app.schedules.get(timer)).state == "pending"

        await app.engine.run(Charge(aggregate_id=order))
        await app.drain()
        await wait_until(lambda: has_effect(app, ("ship", "o-1")))
        pm = await read_instance(app, "o-1")
        assert pm is not None and pm.state == "shipped" and pm.completed
        assert pm.pending_timers == {}
        assert (await app.schedules.get(timer)).state == "cancelled"
        assert await read_effects(app) == Counter({("reserve", "o-1"): 1, ("ship", "o-1"): 1})
        # Each event's correlation id travels to the commands its step sent.
        (placed,), (charged,) = (
            await read_outbox(app, "Pm:Placed"),
            await read_outbox(app, "Pm:Charged"),
        )
        sent = {s.command.rsplit(".", 1)[1]: s for s in await app.schedules.list(states=["done"])}
        assert len(sent) == 1  # two Records: one key
        headers = [s.headers for s in await app.schedules.list(states=["done"])]
        assert len(headers) == 2
        for event in (placed, charged):
            assert event.correlation_id
            assert sum(event.correlation_id in h and str(event.event_id) in h for h in headers) == 1
    finally:
        await app.stop()


async def test_events_for_a_completed_or_unknown_instance_are_ignored_with_a_log_line(
    sqlite_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = await _app(sqlite_db, consume=False)
    try:
        order = await app.engine.run(Place(order_id="o-2"))
        sub = _subscription(app)
        (placed,) = await read_outbox(app, "Pm:Placed")
        await sub.deliver(placed, 1, sub)
        await app.engine.run(Charge(aggregate_id=order))
        (charged,) = await read_outbox(app, "Pm:Charged")
        await sub.deliver(charged, 1, sub)
        await app.engine.run(Tick(aggregate_id=order, n=1))
        (ticked,) = await read_outbox(app, "Pm:Ticked")
        with caplog.at_level(logging.INFO, logger="dddframe.processes"):
            await sub.deliver(ticked, 1, sub)  # completed: ignored
        assert "is completed; Pm:Ticked ignored" in caplog.text
        # An event that does not start a process, for an instance that does not exist.
        other = await app.engine.run(Place(order_id="o-3"))
        await app.engine.run(Charge(aggregate_id=other))
        charged_other = (await read_outbox(app, "Pm:Charged"))[-1]
        with caplog.at_level(logging.INFO, logger="dddframe.processes"):
            await sub.deliver(charged_other, 1, sub)
        assert "'o-3' does not exist" in caplog.text
        assert await read_instance(app, "o-3") is None
        pm = await read_instance(app, "o-2")
        assert pm is not None and pm.ticks == 0
    finally:
        await app.stop()


async def test_duplicated_and_concurrent_events_make_one_transition_each(any_db: str) -> None:
    """Ten events for one instance, each delivered twice, all at once: ten transitions and
    ten commands, none lost and none sent twice (the version serialises the steps, the inbox
    absorbs the duplicates, the schedule claim absorbs commands run twice)."""
    app = await _app(any_db, consume=False)
    try:
        order = await app.engine.run(Place(order_id="o-4"))
        for n in range(10):
            await app.engine.run(Tick(aggregate_id=order, n=n))
        sub = _subscription(app)
        (placed,) = await read_outbox(app, "Pm:Placed")
        await sub.deliver(placed, 1, sub)
        ticks = await read_outbox(app, "Pm:Ticked")
        deliveries = [sub.deliver(e, 1, sub) for e in ticks for _ in range(2)]
        await asyncio.gather(*deliveries)
        pm = await read_instance(app, "o-4")
        assert pm is not None and pm.ticks == 10
        effects = await read_effects(app)
        assert effects == Counter(
            {("reserve", "o-4"): 1, **{(f"tick-{n}", "o-4"): 1 for n in range(10)}}
        )
        # Redelivering everything again changes nothing.
        await asyncio.gather(*(sub.deliver(e, 2, sub) for e in [placed, *ticks]))
        assert await read_effects(app) == effects
        assert (await read_instance(app, "o-4")).ticks == 10  # type: ignore[union-attr]
    finally:
        await app.stop()


async def test_two_starting_events_at_once_create_one_instance(server_db: str) -> None:
    app = await _app(server_db, consume=False)
    try:
        await app.engine.run(Place(order_id="o-5"))
        await app.engine.run(Place(order_id="o-5"))  # a second order placed with the same id
        sub = _subscription(app)
        first, second = await read_outbox(app, "Pm:Placed")
        await asyncio.gather(sub.deliver(first, 1, sub), sub.deliver(second, 1, sub))
        assert (await read_effects(app))[("reserve", "o-5")] == 2  # each event's step ran once
        async with app.database.session() as s:
            assert len((await s.execute(select(Fulfilment))).all()) == 1
    finally:
        await app.stop()


async def test_a_timer_fires_its_step_once(any_db: str) -> None:
    app = await _app(any_db)
    try:
        await app.engine.run(Place(order_id="o-6", payment_seconds=0.3))
        await app.drain()
        await wait_until(lambda: has_effect(app, ("cancel", "o-6")))
        pm = await read_instance(app, "o-6")
        assert pm is not None and pm.state == "cancelled" and pm.completed
        await asyncio.sleep(0.3)
        assert (await read_effects(app))[("cancel", "o-6")] == 1
    finally:
        await app.stop()


async def test_a_cancelled_timer_and_a_completed_process_never_fire(any_db: str) -> None:
    app = await _app(any_db, consume=False)
    try:
        order = await app.engine.run(Place(order_id="o-7", payment_seconds=0.2))
        sub = _subscription(app)
        (placed,) = await read_outbox(app, "Pm:Placed")
        await sub.deliver(placed, 1, sub)
        pm = await read_instance(app, "o-7")
        assert pm is not None
        (token,) = pm.pending_timers.values()
        await app.engine.run(Charge(aggregate_id=order))
        (charged,) = await read_outbox(app, "Pm:Charged")
        await sub.deliver(charged, 1, sub)  # cancels the timer, completes the process
        # A timer row that escaped cancellation (made pending again by hand) still does not
        # fire for the completed instance.
        async with app.database.connect() as conn:
            await conn.execute(
                schedules_table.update()
                .where(schedules_table.c.id == token)
                .values(state="pending")
            )
            await conn.commit()
        await asyncio.sleep(0.3)
        from dddframe.engine.schedules import ScheduleDispatcher, ScheduleRunner

        runner = ScheduleRunner(app.schedules, app.engine)
        await ScheduleDispatcher(runner, owner="t").run_once()
        assert ("cancel", "o-7") not in await read_effects(app)
        pm = await read_instance(app, "o-7")
        assert pm is not None and pm.state == "shipped"
    finally:
        await app.stop()


@pytest.mark.parametrize("how", ["cancelled", "set again"])
async def test_a_replaced_timer_whose_old_row_still_fires_does_nothing(
    any_db: str, how: str
) -> None:
    """A timer cancelled by a step (the process goes on), or set again (moved), whose old
    schedule row is run anyway (a cancel that lost the race with the dispatcher's read): the
    token it carries is no longer the instance's, so its step does not run."""
    app = await _app(any_db, consume=False)
    try:
        order = await app.engine.run(Place(order_id="o-8", payment_seconds=0.1))
        sub = _subscription(app)
        (placed,) = await read_outbox(app, "Pm:Placed")
        await sub.deliver(placed, 1, sub)
        (token,) = (await read_instance(app, "o-8")).pending_timers.values()  # type: ignore[union-attr]
        if how == "cancelled":
            await app.engine.run(Tick(aggregate_id=order, n=-1))
            (event,) = await read_outbox(app, "Pm:Ticked")
        else:
            await app.engine.run(Place(order_id="o-8", payment_seconds=3600))
            event = (await read_outbox(app, "Pm:Placed"))[-1]
        await sub.deliver(event, 1, sub)
        assert (await app.schedules.get(token)).state == "cancelled"
        async with app.database.connect() as conn:
            await conn.execute(
                schedules_table.update()
                .where(schedules_table.c.id == token)
                .values(state="pending")
            )
            await conn.commit()
        await asyncio.sleep(0.2)
        from dddframe.engine.schedules import ScheduleDispatcher, ScheduleRunner

        await ScheduleDispatcher(ScheduleRunner(app.schedules, app.engine), owner="t").run_once()
        pm = await read_instance(app, "o-8")
        assert pm is not None and pm.state == "awaiting_payment" and not pm.completed
        assert ("cancel", "o-8") not in await read_effects(app)
        assert len(pm.pending_timers) == (0 if how == "cancelled" else 1)
    finally:
        await app.stop()


async def test_a_failing_step_is_dead_lettered_and_other_instances_go_on(any_db: str) -> None:
    """The process's subscription has a listener's retry policy and dead letters: a step that
    keeps failing ends as a dead letter (holding its instance), other instances go on."""
    from dddframe import NoRetry

    await reset_database(any_db)
    app = Application(
        [fulfilment_module(retry=NoRetry())], any_db, bus=InProcessBus(poll_interval=0.05)
    )
    async with app:
        await app.create_schema()
        bad = await app.engine.run(Place(order_id="bad"))
        good = await app.engine.run(Place(order_id="good"))
        await app.engine.run(Tick(aggregate_id=bad, n=666))
        await app.engine.run(Tick(aggregate_id=good, n=1))
        await app.drain()
        (letter,) = await app.dead_letters.list()
        assert letter.subscription == "fulfilment.Fulfilment"
        assert "this step fails (tick 666)" in (letter.error or "")
        assert (await read_instance(app, "good")).ticks == 1  # type: ignore[union-attr]
        assert (await read_instance(app, "bad")).ticks == 0  # type: ignore[union-attr]
        assert ("tick-1", "good") in await read_effects(app)


async def test_a_failing_timer_step_follows_the_process_retry_policy_then_is_retried(
    any_db: str,
) -> None:
    """A timer's step that keeps failing is retried by the process's policy (here once, at
    once: not the schedules' 10 attempts over minutes), then marked failed while other
    instances' timers fire; `retry_schedule` runs it again and it takes effect once."""
    from dddframe import LimitRetry
    from dddframe.engine.schedules import FAILED, command_name
    from dddframe.processes.timers import ProcessTimeout

    await reset_database(any_db)
    app = Application(
        [fulfilment_module(retry=LimitRetry(limit=1, delay=0))],
        any_db,
        bus=InProcessBus(poll_interval=0.05),
    )
    FAILING_TIMEOUTS.add("late-bad")

    async def failed_timers() -> list[Any]:
        async with app.database.connect() as conn:
            return list(
                await conn.execute(
                    select(schedules_table.c.id, schedules_table.c.attempts).where(
                        schedules_table.c.command == command_name(ProcessTimeout),
                        schedules_table.c.state == FAILED,
                    )
                )
            )

    try:
        async with app:
            await app.create_schema()
            await app.engine.run(Place(order_id="late-bad", payment_seconds=0.2))
            await app.engine.run(Place(order_id="late-good", payment_seconds=0.2))
            await wait_until(lambda: has_effect(app, ("cancel", "late-good")))
            await wait_until(failed_timers)
            ((timer_id, attempts),) = await failed_timers()
            assert attempts == 2  # the first run and the one retry LimitRetry(limit=1) allows
            bad = await read_instance(app, "late-bad")
            assert bad is not None and bad.state == "awaiting_payment" and not bad.completed
            FAILING_TIMEOUTS.discard("late-bad")
            assert await app.retry_schedule(timer_id) is True
            await wait_until(lambda: has_effect(app, ("cancel", "late-bad")))
            assert await app.retry_schedule(timer_id) is False  # it ran: nothing to retry
            assert (await read_effects(app))[("cancel", "late-bad")] == 1
    finally:
        FAILING_TIMEOUTS.discard("late-bad")


async def test_timers_and_sends_only_inside_a_step(sqlite_db: str) -> None:
    pm = Fulfilment(id="x")
    with pytest.raises(UsageError, match="inside a step"):
        pm.timeout("payment", after=__import__("datetime").timedelta(seconds=1))
    with pytest.raises(UsageError, match="inside a step"):
        pm.complete()


def _bad_module(**kw: Any) -> Module:
    m = fulfilment_module()
    m.processes.clear()
    base: dict[str, Any] = {
        "correlate_by": "order_id",
        "starts_with": "Pm:Placed",
        "listen": {"Pm:Placed": "on_placed"},
    }
    base.update(kw)
    m.process(Fulfilment, **base)
    return m


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"listen": {"Pm:Plcaed": "on_placed"}, "starts_with": "Pm:Plcaed"}, "Pm:Placed"),
        ({"listen": {"Pm:Placed": "on_place"}}, "on_placed"),
        ({"timeouts": ["paymnet"]}, "on_payment_timeout"),
    ],
)
async def test_start_up_names_what_is_misspelt(
    sqlite_db: str, options: dict[str, Any], message: str
) -> None:
    app = Application([_bad_module(**options)], sqlite_db)
    with pytest.raises(ConfigurationError, match=f"Did you mean.*{message}"):
        await app.start()


class Notifier(abc.ABC):
    @abc.abstractmethod
    def notify(self) -> None: ...


class NeedsNotifier(ProcessManager):
    __tablename__ = "pm_needs_notifier"

    def on_placed(self, event: PmPlaced, notifier: Notifier) -> None:
        notifier.notify()

    def on_untyped(self, event: PmPlaced, extra) -> None:  # type: ignore[no-untyped-def]
        pass


@pytest.mark.parametrize(
    ("step", "error", "message"),
    [
        ("on_placed", MissingBinding, r"NeedsNotifier's step on_placed needs Notifier"),
        ("on_untyped", ConfigurationError, r"services annotated with their type.*'extra'"),
    ],
)
async def test_a_step_service_nothing_provides_fails_at_start_up(
    sqlite_db: str, step: str, error: type[Exception], message: str
) -> None:
    m = Module("needs")
    m.event("Pm:Placed")
    m.process(
        NeedsNotifier, correlate_by="order_id", starts_with="Pm:Placed", listen={"Pm:Placed": step}
    )
    with pytest.raises(error, match=message):
        await Application([m], sqlite_db).start()


def test_process_arguments_are_checked_where_they_are_given() -> None:
    m = Module("checks")
    with pytest.raises(ConfigurationError, match="not in listen="):
        m.process(
            Fulfilment,
            correlate_by="order_id",
            starts_with="Pm:Charged",
            listen={"Pm:Placed": "on_placed"},
        )
    with pytest.raises(ConfigurationError, match="ProcessManager subclass"):
        m.process(PmOrder, correlate_by="x", starts_with="A:B", listen={"A:B": "x"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no field for 'Pm:Charged'"):
        m.process(
            Fulfilment,
            correlate_by={"Pm:Placed": "order_id"},
            starts_with="Pm:Placed",
            listen={"Pm:Placed": "on_placed", "Pm:Charged": "on_charged"},
        )
    with pytest.raises(UsageError, match="ProcessManager provides"):

        class Bad(ProcessManager):
            __tablename__ = "pm_bad"

            def complete(self) -> None: ...


async def test_an_event_without_its_correlation_key_is_poison(sqlite_db: str) -> None:
    from dddframe.errors import PoisonEvent

    app = await _app(sqlite_db, consume=False)
    try:
        sub = _subscription(app)
        bad = Envelope.new("Pm:Placed", '{"order_id": ""}', headers={})
        with pytest.raises(PoisonEvent, match="no usable correlation key"):
            await sub.deliver(bad, 1, sub)
        huge = Envelope.new("Pm:Placed", '{"order_id": "' + "x" * 300 + '"}', headers={})
        with pytest.raises(PoisonEvent, match="at most 255"):
            await sub.deliver(huge, 1, sub)
    finally:
        await app.stop()


_ = uuid
