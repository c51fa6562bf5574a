"""Scaling of the database bus on PostgreSQL, with the naive loop beside each point.

``python -m benchmarks.scaling [--quick] [--sizes 100000,1000000] [--json out.json]`` measures
(``--series workers --backlog 100000 --workers 1,2 --no-naive`` runs only some points);
``--plot out.json`` draws the PNG charts (matplotlib, the ``bench`` extra) into docs/images/.
Every point runs on a fresh schema; the backlog is written with one ``INSERT ... SELECT
generate_series`` and numbered by the sequencer before the clock starts. Workers are separate
processes (``python -m benchmarks.scaling --worker K``) started on the filled table; the clock
runs from the moment the first worker had started (``Application`` started: leases taken,
bus running; what was delivered during start-up is not counted) until every subscription's
stored position reaches the head; the start-up time is recorded beside it. Series:

1. subscriptions: 1, 10 and 50 subscriptions (one group, one worker) on a 20,000-event
   backlog; delivered = deliveries (events x subscriptions) per second. Naive: one process
   running one naive loop per subscription (asyncio tasks, a connection each).
2. outbox size: one subscription draining 100k and 1M-row backlogs. Naive: one loop.
   history: one subscription delivering the last 100,000 events of an outbox of 100k, 1M and
   10M rows (positions stored at the start of those 100,000; the rows numbered in the
   INSERT, so no sequencing of the history is waited for): reads must not slow with history.
   Naive: one loop reading after the same id.
3. workers: 8 subscriptions of one group on a 20,000-event backlog, 1, 2 and 4 worker
   processes (the bus splits a group's subscriptions among its live workers). Naive: the same
   number of processes, the 8 loops split among them.
4. memory: resident set (VmRSS) of the worker with 50 subscriptions after it drained its
   backlog, and of the naive process with 50 loops.

Not a module with ``main()``, so ``make bench`` does not run it (it takes minutes): ``make
bench-scaling`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
URL = os.environ.get(
    "BENCH_SCALING_URL",
    os.environ.get("DDDFRAME_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
)
NOTE = "x" * 120
DELIVERED = [0]  # in a worker: listener calls so far
FILL = """
INSERT INTO dddframe_outbox (event_id, name, aggregate_type, aggregate_id, aggregate_version,
    event_version, occurred_at, payload, headers, status)
SELECT gen_random_uuid()::text, 'Bench:Backlog', 'Bench', (g % 1000)::text, g / 1000 + 1, 1,
    now(), '{"i": ' || g || ', "note": "' || CAST(:note AS text) || '"}',
    '{"correlation_id":"c"}', 0
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) g
"""
# The history series numbers its rows in the INSERT (position = g + 1) and sets the sequencer's
# head: what it measures is reading and delivering after a long history, not bulk numbering.
FILL_NUMBERED = FILL.replace("headers, status)", "headers, status, position)").replace(
    '\'{"correlation_id":"c"}\', 0', '\'{"correlation_id":"c"}\', 0, g + 1'
)


def module(subscriptions: int):  # type: ignore[no-untyped-def]
    """A module with ``subscriptions`` listeners of Bench:Backlog in the group ``scale``."""
    from dddframe import Envelope, Module

    async def on_event(self, event: Envelope) -> None:  # type: ignore[no-untyped-def]
        DELIVERED[0] += 1

    on_event.__annotations__ = {"event": Envelope, "return": None}  # resolved at start-up
    methods = {f"on_{i}": on_event for i in range(subscriptions)}
    controller = type("ScaleController", (), methods)
    m = Module("scale")
    m.event("Bench:Backlog")
    m.controller(controller)
    for i in range(subscriptions):
        m.listen("Bench:Backlog", f"ScaleController.on_{i}", group="scale")
    return m


def bus():  # type: ignore[no-untyped-def]
    from dddframe.bus.database import DatabaseBus

    return DatabaseBus(concurrency=8, limit_per_run=1000, run_interval=5.0)


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def fill(events: int, *, numbered: bool = False) -> int:
    """A fresh schema holding ``events`` sequenced events; returns the head position.

    ``numbered``: the rows get their positions in the INSERT and the sequencer's head is set
    to the last, instead of the sequencer numbering them (the history series)."""
    from sqlalchemy import func, select, text, update

    from dddframe import Application
    from dddframe.outbox.sequencer import SEQUENCER_LEASE, Sequencer
    from dddframe.outbox.tables import leases_table, outbox_table
    from dddframe.testing import reset_database

    await reset_database(URL)
    async with Application([module(1)], URL, bus=bus(), consume=False) as app:
        await app.create_schema()
        async with app.database.connect() as conn:
            for lo in range(0, events, 500_000):
                hi = min(lo + 500_000, events) - 1
                sql = FILL_NUMBERED if numbered else FILL
                await conn.execute(text(sql), {"note": NOTE, "lo": lo, "hi": hi})
                await conn.commit()
            if numbered:
                await conn.execute(
                    update(leases_table)
                    .where(leases_table.c.name == SEQUENCER_LEASE)
                    .values(value=events)
                )
                await conn.commit()
            else:
                await Sequencer().sequence(conn)
            head = (await conn.execute(select(func.max(outbox_table.c.position)))).scalar_one()
    await vacuum()  # as autovacuum would after a bulk load; outside any transaction
    return int(head)


async def start_subscriptions_at(position: int, subscriptions: int) -> None:
    """Store every ``scale`` subscription's position at ``position`` (the history before it
    counts as delivered)."""
    import asyncpg

    conn = await asyncpg.connect(URL.replace("+asyncpg", ""))
    try:
        await conn.execute("DELETE FROM dddframe_positions WHERE subscription LIKE 'scale.%'")
        await conn.executemany(
            "INSERT INTO dddframe_positions (subscription, position, inflight, updated_at) "
            "VALUES ($1, $2, 0, now())",
            [(f"scale.ScaleController.on_{i}", position) for i in range(subscriptions)],
        )
    finally:
        await conn.close()


async def vacuum() -> None:
    import asyncpg

    conn = await asyncpg.connect(URL.replace("+asyncpg", ""))
    await conn.execute("VACUUM ANALYZE dddframe_outbox")
    await conn.close()


async def positions_at(head: int, subscriptions: int) -> bool:
    import asyncpg

    conn = await asyncpg.connect(URL.replace("+asyncpg", ""))
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM dddframe_positions WHERE subscription LIKE 'scale.%' "
            "AND position >= $1",
            head,
        )
    finally:
        await conn.close()
    return int(n) >= subscriptions


def spawn(args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "benchmarks.scaling", *args]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def ready_line(proc: subprocess.Popen[str], word: str) -> list[float]:
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith(word + " "):
        raise RuntimeError(f"worker did not start: {line!r}")
    return [float(x) for x in line.split()[1:]]


def ready_time(proc: subprocess.Popen[str]) -> float:
    return ready_line(proc, "ready")[0]


async def dddframe_point(
    events: int, subscriptions: int, workers: int, *, history: int = 0
) -> dict[str, float]:
    """Deliver a backlog of ``events`` (after ``history`` delivered events, when given: the
    table was filled by ``fill(..., numbered=True)`` and the positions are set here)."""
    if history:
        head = history + events
        await start_subscriptions_at(history, subscriptions)
    else:
        head = await fill(events)
    procs = [spawn(["--worker", str(subscriptions)]) for _ in range(workers)]
    ready = [(await asyncio.to_thread(ready_line, p, "ready"))[0] for p in procs]
    started = [await asyncio.to_thread(ready_line, p, "started") for p in procs]
    # The clock runs from the moment the first worker had started (leases taken, bus running);
    # what the workers delivered while starting is left out of the count.
    start = min(t for t, _ in started)
    before = sum(n for _, n in started)
    while not await positions_at(head, subscriptions):  # noqa: ASYNC110 (another process)
        await asyncio.sleep(0.05)
    elapsed = time.time() - start
    startup = max(t for t, _ in started) - min(ready)
    rss = max(rss_kib(p.pid) for p in procs)
    for p in procs:
        p.terminate()
    for p in procs:
        await asyncio.to_thread(p.wait)
    delivered = (events * subscriptions - before) / elapsed
    return {"delivered": delivered, "seconds": elapsed, "rss_kib": rss, "startup": startup}


async def naive_point(
    events: int, subscriptions: int, workers: int, *, history: int = 0
) -> dict[str, float]:
    if not history:
        await fill(events)
    shares = [len(range(i, subscriptions, workers)) for i in range(workers)]
    procs = [spawn(["--naive", str(k), str(events), str(history)]) for k in shares if k]
    start = min([await asyncio.to_thread(ready_time, p) for p in procs])
    outs = [await asyncio.to_thread(p.communicate) for p in procs]
    ends = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    elapsed = max(e["end"] for e in ends) - start
    rss = max(e["rss_kib"] for e in ends)
    return {"delivered": events * subscriptions / elapsed, "seconds": elapsed, "rss_kib": rss}


async def run_worker(subscriptions: int) -> None:
    from dddframe import Application
    from dddframe.cli.process import freeze_startup_heap

    pool = int(os.environ.get("BENCH_SCALING_POOL", "0"))  # diagnostic: a larger pool
    options = {"pool_size": pool, "max_overflow": pool} if pool else None
    app = Application([module(subscriptions)], URL, bus=bus(), engine_options=options)
    print(f"ready {time.time()}", flush=True)
    async with app:
        freeze_startup_heap()
        print(f"started {time.time()} {DELIVERED[0]}", flush=True)
        await asyncio.Event().wait()  # until terminated


async def run_naive(loops: int, events: int, after: int = 0) -> None:
    """``loops`` naive loops of benchmarks/database_bus.py, each with an offset row, reading
    the ``events`` rows after id ``after``."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
    from sqlalchemy.ext.asyncio import create_async_engine

    from dddframe.outbox.tables import outbox_table

    offsets = Table(
        f"bench_naive_offsets_{os.getpid()}",
        MetaData(),
        Column("name", String(32), primary_key=True),
        Column("last_id", Integer),
    )
    engine = create_async_engine(URL, pool_size=loops + 1)
    me = os.getpid()
    async with engine.begin() as conn:
        await conn.run_sync(offsets.metadata.create_all, checkfirst=True)
        await conn.execute(
            insert(offsets), [{"name": f"{me}-{i}", "last_id": 0} for i in range(loops)]
        )
    print(f"ready {time.time()}", flush=True)

    async def loop(i: int) -> None:
        last, seen = after, 0
        async with engine.connect() as conn:
            while seen < events:
                rows = (
                    await conn.execute(
                        select(outbox_table.c.id, outbox_table.c.payload, outbox_table.c.headers)
                        .where(outbox_table.c.id > last)
                        .order_by(outbox_table.c.id)
                        .limit(1000)
                    )
                ).all()
                for row in rows:
                    json.loads(row.payload)
                    json.loads(row.headers)
                last = rows[-1].id
                seen += len(rows)
                await conn.execute(
                    update(offsets).where(offsets.c.name == f"{me}-{i}").values(last_id=last)
                )
                await conn.commit()

    await asyncio.gather(*(loop(i) for i in range(loops)))
    end = time.time()
    print(json.dumps({"end": end, "rss_kib": rss_kib()}), flush=True)
    await engine.dispose()


async def measure(opts: argparse.Namespace) -> dict:
    results: dict = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "nproc": os.cpu_count(),
        "load_before": "%.2f %.2f %.2f" % os.getloadavg(),  # noqa: UP031
        "backlog": opts.backlog,
        "series": {"subscriptions": [], "outbox_size": [], "history": [], "workers": []},
    }

    async def point(
        series: str, x: int, events: int, subs: int, workers: int, history: int = 0
    ) -> None:
        if opts.series and series not in opts.series:
            return
        if history:
            await fill(history + events, numbered=True)  # one fill, read by both sides
        # dddframe and the naive loop alternate which goes first, point by point
        first_naive = len(results["series"][series]) % 2 == 1
        pair = {}
        for kind in ("naive", "dddframe") if first_naive else ("dddframe", "naive"):
            if kind == "naive" and opts.no_naive:
                pair[kind] = {"delivered": 0.0, "seconds": 0.0, "rss_kib": 0}
                continue
            f = naive_point if kind == "naive" else dddframe_point
            pair[kind] = await f(events, subs, workers, history=history)
        row = {"x": x, "events": events, "subscriptions": subs, "workers": workers, **pair}
        row["load"] = "%.2f" % os.getloadavg()[0]  # noqa: UP031
        results["series"][series].append(row)
        d, n = pair["dddframe"], pair["naive"]
        print(
            f"{series} x={x}: dddframe {d['delivered']:,.0f}/s ({d['seconds']:.1f}s, "
            f"{d['rss_kib'] / 1024:.0f} MiB, start-up {d['startup']:.1f}s), "
            f"naive {n['delivered']:,.0f}/s "
            f"({n['seconds']:.1f}s, {n['rss_kib'] / 1024:.0f} MiB), load {row['load']}",
            flush=True,
        )

    for subs in opts.subscriptions:
        await point("subscriptions", subs, opts.backlog, subs, 1)
    for size in opts.sizes:
        await point("outbox_size", size, size, 1, 1)
    for size in [h for h in opts.history if h]:
        # the last 100,000 events after a history of `size` delivered ones
        await point("history", size, 100_000 if not opts.quick else 5_000, 1, 1, history=size)
    for workers in opts.workers:
        await point("workers", workers, opts.backlog, 8, workers)
    results["load_after"] = "%.2f %.2f %.2f" % os.getloadavg()  # noqa: UP031
    return results


def plot(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    made = []
    stamp = f"{results['date']}, {results['nproc']} cores, load {results['load_before']}"
    charts = {
        "subscriptions": ("subscriptions (one worker)", "delivered events/s (all subscriptions)"),
        "outbox_size": ("events in the outbox backlog", "delivered events/s"),
        "history": ("rows in the outbox before the last 100,000", "delivered events/s"),
        "workers": ("worker processes, one group, 8 subscriptions", "delivered events/s"),
    }
    for series, (xlabel, ylabel) in charts.items():
        rows = results["series"].get(series) or []
        if not rows:
            continue
        xs = [r["x"] for r in rows]
        fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
        ax.plot(xs, [r["dddframe"]["delivered"] for r in rows], "o-", label="dddframe bus")
        ax.plot(xs, [r["naive"]["delivered"] for r in rows], "s--", label="naive loop")
        if series in ("outbox_size", "history"):
            ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:,}" for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"database bus: {series.replace('_', ' ')}\n{stamp}", fontsize=9)
        fig.tight_layout()
        path = out / f"scaling-{series.replace('_', '-')}.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    rows = [r for r in results["series"].get("subscriptions", []) if r["x"] == 50]
    if rows:
        fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=100)
        values = [rows[0]["dddframe"]["rss_kib"] / 1024, rows[0]["naive"]["rss_kib"] / 1024]
        bars = ax.bar(["dddframe worker", "naive process"], values, color=["C0", "C1"])
        ax.bar_label(bars, fmt="%.0f MiB")
        ax.set_ylabel("resident memory (MiB)")
        ax.set_title(f"50 subscriptions, after the backlog\n{stamp}", fontsize=9)
        fig.tight_layout()
        path = out / "scaling-memory.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    return made


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling")
    p.add_argument("--quick", action="store_true", help="smoke run with small sizes")
    p.add_argument("--sizes", type=ints, default=None, help="outbox sizes, comma-separated")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--plot", default="", help="only draw the charts from this results file")
    p.add_argument("--series", default="", help="only these series (comma-separated names)")
    p.add_argument("--backlog", type=int, default=0, help="events of the backlog (20,000)")
    p.add_argument("--workers", type=ints, default=None, help="worker counts (1,2,4)")
    p.add_argument("--subscriptions", type=ints, default=None, help="subscriptions (1,10,50)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument(
        "--history", type=ints, default=None, help="history sizes before the backlog (0: skip)"
    )
    p.add_argument("--naive", type=int, nargs=3, default=None, help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.worker:
        asyncio.run(run_worker(opts.worker))
        return
    if opts.naive:
        asyncio.run(run_naive(*opts.naive))
        return
    if opts.plot:
        for path in plot(json.loads(Path(opts.plot).read_text()), IMAGES):
            print(f"wrote {path.relative_to(ROOT)}")
        return
    opts.series = {s for s in opts.series.split(",") if s}
    opts.backlog = opts.backlog or (2_000 if opts.quick else 20_000)
    opts.subscriptions = opts.subscriptions or [1, 10, 50]
    opts.sizes = opts.sizes or ([5_000, 20_000] if opts.quick else [100_000, 1_000_000])
    opts.workers = opts.workers or [1, 2, 4]
    if opts.history is None:
        opts.history = [10_000, 100_000] if opts.quick else [100_000, 1_000_000, 10_000_000]
    results = asyncio.run(measure(opts))
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=1))
    if opts.series:
        return  # a partial run: the charts keep the full run's figures
    try:
        made = plot(results, IMAGES)
    except ImportError:
        print("matplotlib is missing: pip install -e '.[bench]', then --plot the --json file")
        return
    for path in made:
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
