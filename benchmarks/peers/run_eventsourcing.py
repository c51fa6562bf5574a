"""eventsourcing (PostgreSQL persistence, psycopg 3, synchronous as the library is).

W1: an ``Application`` saving an ``Aggregate`` (its creation event), then
``repository.get`` + one decorated command method + ``save`` (one transaction each).
W2/W3 without ``--mode tracking``: an ``ApplicationSubscription`` (the recorder's
LISTEN/NOTIFY subscription) reads the application sequence; no position is stored.
W2/W3 with ``--mode tracking``: a ``ProjectionRunner`` whose view is a
``PostgresTrackingRecorder`` recording each event's ``Tracking`` (one transaction per event,
the way the library's projection docs record a view's position with its update).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from functools import singledispatchmethod
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PAYLOAD_NOTE,
    emit,
    log,
    paced_sync,
    parse,
    percentiles,
    start_writer,
)


def configure(url: str) -> dict[str, str]:
    rest = url.split("://", 1)[1]
    user, hostpart = rest.split("@", 1)
    host, dbname = hostpart.split("/", 1)
    host, port = host.split(":")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": port,
        "POSTGRES_USER": user.split(":")[0],
        "POSTGRES_PASSWORD": "",
        "POSTGRES_POOL_SIZE": "5",
    }
    os.environ.update(env)
    return env


args = parse()
ENV = configure(args.url)

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import (
    ApplicationSubscription,
    Projection,
    ProjectionRunner,
)

VERSION = f"eventsourcing {version('eventsourcing')}, psycopg {version('psycopg')}"


class Note(Aggregate):
    def __init__(self, text: str, t: float = 0.0) -> None:
        self.text = text
        self.t = t

    @event("Changed")
    def change(self, text: str, note: str = "", t: float = 0.0) -> None:
        self.text = text


class Notes(Application[Any]):
    name = "PeerNotes"


LATENCIES: list[float] = []
COUNT = [0]


class CountView(PostgresTrackingRecorder):
    def record(self, tracking: Tracking) -> None:
        self.insert_tracking(tracking)


class CountProjection(Projection[CountView]):
    name = "PeerCount"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        t = getattr(domain_event, "t", 0.0)
        if t:
            LATENCIES.append(time.time() - t)
        COUNT[0] += 1
        self.view.record(tracking)


def drop_tables() -> None:
    conninfo = f"host={ENV['POSTGRES_HOST']} port={ENV['POSTGRES_PORT']} "
    conninfo += f"dbname={ENV['POSTGRES_DBNAME']} user={ENV['POSTGRES_USER']}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        names = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND "
            "(tablename LIKE 'peernotes%' OR tablename LIKE 'peercount%')"
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')


def w1() -> None:
    drop_tables()
    app = Notes()
    for i in range(10):
        app.save(Note(f"w{i}"))
    start = time.perf_counter()
    ids = []
    for i in range(args.n):
        note = Note(f"n{i}")
        app.save(note)
        ids.append(note.id)
    for i, note_id in enumerate(ids):
        note = app.repository.get(note_id)
        note.change(f"c{i}")
        app.save(note)
    elapsed = time.perf_counter() - start
    app.close()
    emit(2 * args.n / elapsed, "commands/s", version=VERSION, settings="Application.save")


def fill(app: Notes, n: int) -> int:
    """``n`` events: aggregates of 100 events, 10 aggregates per save."""
    batch: list[Note] = []
    made = 0
    while made < n:
        note = Note("b")
        for _ in range(min(99, n - made - 1)):
            note.change("b", note=PAYLOAD_NOTE)
        made += len(note.pending_events)
        batch.append(note)
        if len(batch) == 10:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)
    return app.recorder.max_notification_id() or 0


def w2() -> None:
    drop_tables()
    app = Notes()
    last = fill(app, args.backlog)
    start = time.perf_counter()
    if args.mode == "tracking":
        with ProjectionRunner(
            application_class=Notes, projection_class=CountProjection, view_class=CountView
        ) as runner:
            runner.wait(last, timeout=900)
    else:
        seen = 0
        with ApplicationSubscription(app, gt=None) as subscription:
            for _domain_event, tracking in subscription:
                seen += 1
                if tracking.notification_id >= last:
                    break
    rate = args.backlog / (time.perf_counter() - start)
    app.close()
    how = "ProjectionRunner + PostgresTrackingRecorder" if args.mode else "ApplicationSubscription"
    emit(rate, "events/s", version=VERSION, settings=how)


def w3() -> None:
    drop_tables()
    app = Notes()  # creates the tables before the writer starts
    target = int(args.rate * args.seconds)
    if args.mode == "tracking":
        with ProjectionRunner(
            application_class=Notes, projection_class=CountProjection, view_class=CountView
        ):
            time.sleep(1.0)
            writer = start_writer(args)
            writer.wait()
            deadline = time.monotonic() + 60
            while COUNT[0] < target and time.monotonic() < deadline:
                time.sleep(0.05)
    else:
        done = threading.Event()

        def consume() -> None:
            with ApplicationSubscription(app, gt=None) as subscription:
                for domain_event, _tracking in subscription:
                    LATENCIES.append(time.time() - domain_event.t)
                    if len(LATENCIES) >= target:
                        done.set()
                        return

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        time.sleep(1.0)
        writer = start_writer(args)
        writer.wait()
        done.wait(60)
    app.close()
    emit(0.0, "ms", version=VERSION, **percentiles(LATENCIES))


def writer() -> None:
    app = Notes()
    paced_sync(args.rate, args.seconds, lambda i: app.save(Note(f"t{i}", t=time.time())))
    app.close()


if __name__ == "__main__":
    log(f"eventsourcing {args.workload} {args.mode}")
    {"w1": w1, "w2": w2, "w3": w3, "writer": writer}[args.workload]()
