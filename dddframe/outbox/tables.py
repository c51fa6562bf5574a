"""The framework's tables, as SQLAlchemy Core metadata (``app.create_schema()`` or Alembic).

``dddframe_outbox``
    One row per recorded event or direct message, written in the business transaction.
    ``id`` is the insertion order; ``position`` is the gap-free commit order assigned afterwards by
    the single elected sequencer (see :mod:`dddframe.outbox.sequencer`). Readers read by
    ``position`` only, so a transaction that commits late is never skipped.
``dddframe_positions``
    The last position each subscription (or relay) has fully handled.
``dddframe_parked``
    Events a subscription could not deliver yet: waiting for a retry, dead letters, and later
    events of the same aggregate waiting behind them.
``dddframe_inbox``
    Event ids a consumer has applied, for idempotent listeners; expired by retention.
``dddframe_leases``
    Named leases (sequencer election, worker lanes, relays) with an owner and an expiry.
``dddframe_process_waiting``
    The events and fired timers of held process-manager instances, in arrival order, waiting
    for the failed step that holds their instance (:mod:`dddframe.processes.holds`).
``dddframe_projections`` and ``dddframe_projection_checkpoints``
    Each projection's active generation and rebuild, and how far each generation has applied
    the outbox (:mod:`dddframe.projections`).
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import event as _sa_event
from sqlalchemy.dialects import mysql

from dddframe.domain.limits import (
    AGGREGATE_ID_MAX,
    AGGREGATE_TYPE_MAX,
    EVENT_ID_MAX,
    INBOX_MESSAGE_ID_MAX,
    NAME_MAX,
    ORDERING_KEY_MAX,
    SUBSCRIPTION_MAX,
)

__all__ = [
    "OUTBOX_CHANNEL",
    "OUTBOX_STATUS_PREPARED",
    "OUTBOX_STATUS_READY",
    "PARKED_DEAD",
    "PARKED_RETRY",
    "PARKED_WAITING",
    "POSTGRES_DDL",
    "POSTGRES_FUNCTIONS",
    "framework_metadata",
    "inbox_table",
    "leases_table",
    "outbox_table",
    "parked_table",
    "positions_table",
    "process_waiting_table",
    "projection_checkpoints_table",
    "projections_table",
    "schedules_table",
    "schema_table",
]

framework_metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; BIGINT elsewhere.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
# Long text that MySQL/MariaDB would otherwise cap at 64 KiB.
_LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_Timestamp = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

OUTBOX_STATUS_READY = 0
OUTBOX_STATUS_PREPARED = 1  # half message: stored, not deliverable until committed

outbox_table = Table(
    "dddframe_outbox",
    framework_metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("position", BigInteger, nullable=True),
    Column("event_id", String(EVENT_ID_MAX), nullable=False),
    Column("name", String(NAME_MAX), nullable=False),
    Column("aggregate_type", String(AGGREGATE_TYPE_MAX), nullable=True),
    Column("aggregate_id", String(AGGREGATE_ID_MAX), nullable=True),
    Column("aggregate_version", BigInteger, nullable=True),
    Column("event_version", Integer, nullable=False, default=1),
    Column("occurred_at", _Timestamp, nullable=False),
    Column("payload", _LongText, nullable=False),
    Column("headers", Text, nullable=False),  # HEADERS_MAX_BYTES: TEXT is 64 KiB on MariaDB
    Column("status", Integer, nullable=False, default=OUTBOX_STATUS_READY),
    Column("prepared_until", _Timestamp, nullable=True),
    UniqueConstraint("event_id", name="uq_dddframe_outbox_event_id"),
    UniqueConstraint("position", name="uq_dddframe_outbox_position"),
    Index("ix_dddframe_outbox_unsequenced", "status", "position", "id"),
)

# PostgreSQL wakes the workers itself: a statement trigger NOTIFYs in the writing transaction
# (delivered at commit, never for a rollback), for inserts and half-message commits alike.
OUTBOX_CHANNEL = "dddframe_outbox"
_NOTIFY_FUNCTION = DDL(  # type: ignore[no-untyped-call]
    "CREATE OR REPLACE FUNCTION dddframe_outbox_notify() RETURNS trigger AS $$ "
    f"BEGIN PERFORM pg_notify('{OUTBOX_CHANNEL}', ''); RETURN NULL; END $$ LANGUAGE plpgsql"
)
_NOTIFY_TRIGGER = DDL(  # type: ignore[no-untyped-call]
    "CREATE TRIGGER dddframe_outbox_notify AFTER INSERT OR UPDATE OF status ON dddframe_outbox "
    "FOR EACH STATEMENT EXECUTE FUNCTION dddframe_outbox_notify()"
)
# The sequencer as one server-side call (see outbox/sequencer.py): lock the counter row, number
# the committed rows, move the counter. In a VOLATILE plpgsql function each statement takes a
# new snapshot under READ COMMITTED, so the rows are read after the lock was granted, exactly
# as the client-side path's separate statements do, in one round trip instead of five.
_SEQUENCE_FUNCTION = DDL(  # type: ignore[no-untyped-call]
    "CREATE OR REPLACE FUNCTION dddframe_sequence(batch integer) "
    "RETURNS TABLE(head bigint, assigned integer) LANGUAGE plpgsql VOLATILE AS $$ "
    "DECLARE base bigint; n integer; "
    "BEGIN "
    "SELECT l.value INTO base FROM dddframe_leases AS l "
    "WHERE l.name = 'dddframe.sequencer' FOR UPDATE; "
    "IF base IS NULL THEN "
    "RAISE EXCEPTION 'dddframe_leases has no sequencer row: run create_schema()'; END IF; "
    "UPDATE dddframe_outbox AS o SET position = base + s.rn "
    "FROM (SELECT i.id, row_number() OVER (ORDER BY i.id) AS rn FROM dddframe_outbox AS i "
    "WHERE i.position IS NULL AND i.status = 0 ORDER BY i.id LIMIT batch) AS s "
    "WHERE o.id = s.id; "
    "GET DIAGNOSTICS n = ROW_COUNT; "
    "IF n > 0 THEN UPDATE dddframe_leases AS l SET value = base + n "
    "WHERE l.name = 'dddframe.sequencer'; END IF; "
    "RETURN QUERY SELECT base + n, n; "
    "END $$"
)
# A delivery pass as one call (see Sequencer.sequence_and_read): sequence, read the batch after
# the position the caught-up subscriptions share, and mark in flight those the batch has
# events for (``subs`` maps subscription -> event names). Reading inside the sequencer's
# transaction, which holds its lock, sees every position up to the head and none past it.
_SEQUENCE_READ_FUNCTION = DDL(  # type: ignore[no-untyped-call]
    "CREATE OR REPLACE FUNCTION dddframe_sequence_read("
    "p_batch integer, p_after bigint, p_limit integer, p_subs jsonb) "
    "RETURNS TABLE(r_head bigint, r_assigned integer, r_marked text[], r_position bigint, "
    "r_event_id text, r_name text, r_aggregate_type text, r_aggregate_id text, "
    "r_aggregate_version bigint, r_event_version integer, r_occurred_at timestamptz, "
    "r_payload text, r_headers text) LANGUAGE plpgsql VOLATILE AS $$ "
    "DECLARE h bigint; n integer; m text[]; "
    "BEGIN "
    "SELECT s.head, s.assigned INTO h, n FROM dddframe_sequence(p_batch) AS s; "
    "WITH b AS (SELECT o.name FROM dddframe_outbox AS o WHERE o.position > p_after "
    "ORDER BY o.position LIMIT p_limit), "
    "u AS (UPDATE dddframe_positions AS p SET position = p_after, "
    "inflight = CASE WHEN p.position = p_after THEN p.inflight + 1 ELSE 1 END, "
    "updated_at = now() FROM jsonb_each(p_subs) AS s(sub, names) "
    "WHERE p.subscription = s.sub "
    "AND EXISTS (SELECT 1 FROM b WHERE s.names @> to_jsonb(b.name::text)) "
    "RETURNING p.subscription) "
    "SELECT array_agg(u.subscription) INTO m FROM u; "
    "RETURN QUERY SELECT h, n, m, NULL::bigint, NULL::text, NULL::text, NULL::text, "
    "NULL::text, NULL::bigint, NULL::integer, NULL::timestamptz, NULL::text, NULL::text; "
    "RETURN QUERY SELECT NULL::bigint, NULL::integer, NULL::text[], o.position, "
    "o.event_id::text, o.name::text, o.aggregate_type::text, o.aggregate_id::text, "
    "o.aggregate_version, o.event_version, o.occurred_at, o.payload, o.headers "
    "FROM dddframe_outbox AS o WHERE o.position > p_after ORDER BY o.position LIMIT p_limit; "
    "END $$"
)
POSTGRES_DDL = (_NOTIFY_FUNCTION, _NOTIFY_TRIGGER, _SEQUENCE_FUNCTION, _SEQUENCE_READ_FUNCTION)
POSTGRES_FUNCTIONS = {
    "dddframe_outbox_notify": _NOTIFY_FUNCTION,
    "dddframe_sequence": _SEQUENCE_FUNCTION,
    "dddframe_sequence_read": _SEQUENCE_READ_FUNCTION,
}
"""The functions of POSTGRES_DDL by name: create_schema adds those an older schema lacks."""
"""What create_schema adds on PostgreSQL after the tables (``dddframe schema`` prints it)."""
for _ddl in POSTGRES_DDL:
    _sa_event.listen(outbox_table, "after_create", _ddl.execute_if(dialect="postgresql"))

positions_table = Table(
    "dddframe_positions",
    framework_metadata,
    Column("subscription", String(SUBSCRIPTION_MAX), primary_key=True),
    Column("position", BigInteger, nullable=False),
    # Batches started but not finished since the last saved position: > 0 after a crash.
    Column("inflight", Integer, nullable=False, default=0),
    Column("updated_at", _Timestamp, nullable=False),
)

PARKED_RETRY = "retry"
PARKED_DEAD = "dead"
PARKED_WAITING = "waiting"

parked_table = Table(
    "dddframe_parked",
    framework_metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("subscription", String(SUBSCRIPTION_MAX), nullable=False),
    Column("event_id", String(EVENT_ID_MAX), nullable=False),
    Column("position", BigInteger, nullable=True),
    Column("ordering_key", String(ORDERING_KEY_MAX), nullable=False),
    Column("name", String(NAME_MAX), nullable=False),
    Column("envelope", _LongText, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", _Timestamp, nullable=True),
    Column("error", Text, nullable=True),
    Column("traceback", _LongText, nullable=True),
    Column("created_at", _Timestamp, nullable=False),
    Column("updated_at", _Timestamp, nullable=False),
    UniqueConstraint("subscription", "event_id", name="uq_dddframe_parked_event"),
    Index("ix_dddframe_parked_key", "subscription", "ordering_key", "id"),
    Index("ix_dddframe_parked_due", "subscription", "state", "next_attempt_at"),
)

schedules_table = Table(
    "dddframe_schedules",
    framework_metadata,
    Column("id", String(36), primary_key=True),
    Column("command", String(NAME_MAX), nullable=False),
    Column("payload", _LongText, nullable=False),
    Column("headers", Text, nullable=False),
    Column("due_at", _Timestamp, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("created_at", _Timestamp, nullable=False),
    Column("updated_at", _Timestamp, nullable=False),
    Index("ix_dddframe_schedules_due", "state", "due_at"),
)
"""Scheduled commands (:mod:`dddframe.engine.schedules`): ``pending`` until dispatched
(``done``), ``cancelled`` or ``failed``."""

process_waiting_table = Table(
    "dddframe_process_waiting",
    framework_metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("process", String(NAME_MAX), nullable=False),
    Column("instance", String(255), nullable=False),
    # An event (its id and the encoded envelope) or a fired timer (its name and token).
    Column("event_id", String(EVENT_ID_MAX), nullable=True),
    Column("envelope", _LongText, nullable=True),
    Column("timer", String(NAME_MAX), nullable=True),
    Column("token", String(36), nullable=True),
    Column("created_at", _Timestamp, nullable=False),
    Index("ix_dddframe_process_waiting_instance", "process", "instance", "id"),
)
"""What waits behind a held process-manager instance's failed step
(:mod:`dddframe.processes.holds`): released in ``id`` order."""

inbox_table = Table(
    "dddframe_inbox",
    framework_metadata,
    Column("consumer", String(SUBSCRIPTION_MAX), nullable=False),
    Column("message_id", String(INBOX_MESSAGE_ID_MAX), nullable=False),
    Column("processed_at", _Timestamp, nullable=False),
    PrimaryKeyConstraint("consumer", "message_id", name="pk_dddframe_inbox"),
    Index("ix_dddframe_inbox_processed_at", "processed_at"),
)

leases_table = Table(
    "dddframe_leases",
    framework_metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(255), nullable=True),
    Column("expires_at", _Timestamp, nullable=True),
    Column("value", BigInteger, nullable=False, default=0),
)

projections_table = Table(
    "dddframe_projections",
    framework_metadata,
    Column("name", String(NAME_MAX), primary_key=True),
    Column("active_generation", Integer, nullable=False, default=1),
    Column("rebuild_generation", Integer, nullable=True),
    Column("rebuild_state", String(16), nullable=True),
    # The position after which this projection needs the outbox kept (NULL: none needed).
    Column("keep_after", BigInteger, nullable=True),
    Column("tables", Text, nullable=False),  # JSON list of the declared table names
    Column("updated_at", _Timestamp, nullable=False),
)
"""One row per projection (:mod:`dddframe.projections`). Live applies read it under a shared
lock, a rebuild's switch updates it under an exclusive one."""

projection_checkpoints_table = Table(
    "dddframe_projection_checkpoints",
    framework_metadata,
    Column("name", String(NAME_MAX), nullable=False),
    Column("generation", Integer, nullable=False),
    # The highest outbox position applied to this generation.
    Column("position", BigInteger, nullable=False, default=0),
    # Positions at or below it were applied by a replay: live deliveries skip them.
    Column("built_through", BigInteger, nullable=False, default=0),
    # The head when a rebuild started (for progress) and the time of the last applied event.
    Column("target", BigInteger, nullable=True),
    Column("event_at", _Timestamp, nullable=True),
    Column("updated_at", _Timestamp, nullable=False),
    PrimaryKeyConstraint("name", "generation", name="pk_dddframe_projection_checkpoints"),
)
"""How far each generation of each projection has applied the outbox."""

# One row per schema owner ("dddframe"): the version of the framework's tables, functions and
# seed rows in this database. create_schema and the Alembic helpers write it last; workers
# compare it with the version their dddframe needs (see dddframe.outbox.schema).
schema_table = Table(
    "dddframe_schema",
    framework_metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)
