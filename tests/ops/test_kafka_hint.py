"""A Kafka broker without idempotent producers (the tansu test broker is one): the relay says
what to set instead of looping on a bare "[Error -1] UnknownError"."""

from __future__ import annotations

import logging
import uuid

import pytest

from dddframe import Application
from dddframe.bus.kafka import KafkaBus, KafkaCluster
from tests.kafka import broker
from tests.ops import schema_app


async def test_the_relay_names_the_setting_for_a_broker_without_idempotence(
    sqlite_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    if broker.idempotence():
        pytest.skip("this broker supports idempotent producers")
    bootstrap = broker.bootstrap()
    prefix = f"idem{uuid.uuid4().hex[:8]}."
    cluster = KafkaCluster(bootstrap=bootstrap)  # enable_idempotence=True, the default
    bus = KafkaBus(clusters={"default": cluster}, topic_prefix=prefix, group_prefix=prefix)
    app = Application(modules=[schema_app.notes], database_url=sqlite_db, bus=bus)
    caplog.set_level(logging.WARNING, logger="dddframe")
    async with app:
        await app.create_schema()
        await app.engine.run(schema_app.TakeNote(text="stuck"))
        with pytest.raises(TimeoutError):
            await app.drain(timeout=5)
    relay_lines = [r.getMessage() for r in caplog.records if r.name == "dddframe.outbox.relay"]
    assert relay_lines, "the relay logged nothing"
    assert all("enable_idempotence=False" in line for line in relay_lines), relay_lines
    assert f"the broker at {bootstrap}" in relay_lines[0]
