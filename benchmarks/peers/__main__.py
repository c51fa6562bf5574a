"""``python -m benchmarks.peers [--quick] [--rounds N] [--only a,b]``: dddframe beside its peers.

Each peer runs in a virtualenv of its own made here under ``.bench-venvs/`` (their
dependencies conflict with each other and with dddframe's); dddframe and the floors run in
this interpreter. Every (round, workload, system) is one subprocess of ``run_<system>.py``
printing JSON; rounds alternate the order of the systems so the machine's drift hits all of
them. A peer that cannot be installed or fails is reported with the reason and left out; the
others go on. Workloads (see docs/performance.md, "Peers"):

- W1 write path: N commands creating an aggregate with one event, then N loading it, changing
  it and recording one event, one commit each (commands/s).
- W2 delivery: a backlog drained by one consumer keeping durable positions (events/s).
- W3 latency: a writer process committing 200 events/s for 10 s; commit-to-listener p50/p99.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENVS = ROOT / ".bench-venvs"
URL = os.environ.get("BENCH_PEERS_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/h3")
WORKLOADS = ("w1", "w2", "w3")


@dataclass
class System:
    key: str
    label: str
    runner: str
    venv: str | None = None  # None: this interpreter (the project's virtualenv)
    pip: list[str] = field(default_factory=list)
    mode: str = ""
    workloads: tuple[str, ...] = WORKLOADS
    backlog_cap: int | None = None  # W2 backlog for peers too slow to drain 100k per round
    python: str = ""
    error: str = ""


SYSTEMS = [
    System("dddframe", "dddframe (database bus)", "run_dddframe.py"),
    System(
        "eventsourcing",
        "eventsourcing, no tracking",
        "run_eventsourcing.py",
        "eventsourcing",
        ["eventsourcing[postgres]==9.5.6"],
    ),
    System(
        "eventsourcing-tracking",
        "eventsourcing + tracking",
        "run_eventsourcing.py",
        "eventsourcing",
        ["eventsourcing[postgres]==9.5.6"],
        mode="tracking",
        workloads=("w2", "w3"),
        backlog_cap=10_000,
    ),
    System(
        "faststream-outbox",
        "faststream-outbox",
        "run_faststream_outbox.py",
        "faststream-outbox",
        ["faststream-outbox[asyncpg]==0.19.0"],
    ),
    System("pgqueuer", "pgqueuer", "run_pgqueuer.py", "pgqueuer", ["pgqueuer==1.6.0", "asyncpg"]),
    System(
        "python-cqrs",
        "python-cqrs",
        "run_cqrs.py",
        "python-cqrs",
        ["python-cqrs[sqlalchemy,pydantic]==5.3.0", "asyncpg"],
        backlog_cap=10_000,
    ),
    System("floor", "floor: hand-written SQLAlchemy / naive loop", "run_floor.py"),
]


def prepare(system: System) -> None:
    """Find or make the system's virtualenv; on failure set ``system.error``."""
    if system.venv is None:
        system.python = sys.executable
        return
    where = VENVS / system.venv
    python = where / "bin" / "python"
    stamp = where / ".bench-stamp"
    wanted = "\n".join(system.pip)
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        print(f"  making {where} ({' '.join(system.pip)})", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(where)], check=True)
            done = subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *system.pip,
                ],
                capture_output=True,
                text=True,
                timeout=900,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            system.error = f"virtualenv not made: {exc}"
            return
        if done.returncode != 0:
            lines = [x for x in (done.stderr + done.stdout).splitlines() if "WARNING" not in x]
            system.error = "pip install failed: " + " | ".join(lines[-3:])
            return
        stamp.write_text(wanted)
    system.python = str(python)


def run(system: System, workload: str, opts: argparse.Namespace) -> dict | None:
    backlog = min(opts.backlog, system.backlog_cap or opts.backlog)
    cmd = [system.python, str(HERE / system.runner), workload, "--url", URL, "--n", str(opts.n)]
    cmd += ["--backlog", str(backlog), "--rate", str(opts.rate), "--seconds", str(opts.seconds)]
    cmd += ["--mode", system.mode]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if system.venv is None:
        env["PYTHONPATH"] = str(ROOT)
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=opts.timeout, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        print(f"    {system.key} {workload}: timed out after {opts.timeout:.0f}s", flush=True)
        return {"error": f"timed out after {opts.timeout:.0f}s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        print(f"    {system.key} {workload}: failed: {tail}", flush=True)
        return {"error": tail or f"exit {done.returncode}"}
    result = json.loads(lines[-1])
    result["backlog"] = backlog
    return result


def fmt(value: float, unit: str) -> str:
    return f"{value:,.0f}" if unit != "ms" else f"{value:.1f}"


def spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else "-"


def report(results: dict, systems: list[System], opts: argparse.Namespace, meta: dict) -> str:
    out = [
        f"# peers, {meta['date']}; {meta['nproc']} cores, {meta['cpu']}; Python {meta['python']}",
        f"load average before {meta['load_before']}, after {meta['load_after']}; "
        f"{opts.rounds} rounds, systems alternating; medians, min-max over rounds",
        "",
    ]
    base = results.get("dddframe", {})

    def values(key: str, w: str, field_: str) -> list[float]:
        rs = [r for r in results.get(key, {}).get(w, []) if "error" not in r]
        return [r["detail"][field_] if field_ != "value" else r["value"] for r in rs]

    titles = {
        "w1": f"W1 write path: {opts.n} creates + {opts.n} load-change-save, commands/s",
        "w2": f"W2 delivery: backlog of {opts.backlog:,} events (or as noted), events/s",
    }
    for w in ("w1", "w2"):
        out += [f"## {titles[w]}", "", "| system | median | min-max | ratio to dddframe |"]
        out += ["|---|---|---|---|"]
        ref = values("dddframe", w, "value")
        for s in systems:
            if w not in s.workloads:
                continue
            v = values(s.key, w, "value")
            if not v:
                errs = [r.get("error") for r in results.get(s.key, {}).get(w, [])]
                why = s.error or (errs[0] if errs else "not run")
                out.append(f"| {s.label} | not measured: {why} | | |")
                continue
            m = statistics.median(v)
            ratio = f"{m / statistics.median(ref):.2f}" if ref else "-"
            note = ""
            backlogs = {r.get("backlog") for r in results[s.key][w] if "backlog" in r}
            if w == "w2" and backlogs and backlogs != {opts.backlog}:
                note = f" ({min(backlogs):,} events)"
            out.append(f"| {s.label}{note} | {m:,.0f} | {spread(v)} | {ratio} |")
        out.append("")
    out += [
        f"## W3 latency: {opts.rate} events/s for {opts.seconds:.0f} s, commit to listener",
        "",
        "| system | p50 ms | p99 ms (min-max) | p50 / dddframe | p99 / dddframe |",
        "|---|---|---|---|---|",
    ]
    r50, r99 = values("dddframe", "w3", "p50_ms"), values("dddframe", "w3", "p99_ms")
    for s in systems:
        p50, p99 = values(s.key, "w3", "p50_ms"), values(s.key, "w3", "p99_ms")
        if not p50:
            errs = [r.get("error") for r in results.get(s.key, {}).get("w3", [])]
            why = s.error or (errs[0] if errs else "not run")
            out.append(f"| {s.label} | not measured: {why} | | | |")
            continue
        m50, m99 = statistics.median(p50), statistics.median(p99)
        rng = f"{min(p99):.1f}-{max(p99):.1f}" if len(p99) > 1 else "-"
        q50 = f"{m50 / statistics.median(r50):.2f}" if r50 else "-"
        q99 = f"{m99 / statistics.median(r99):.2f}" if r99 else "-"
        out.append(f"| {s.label} | {m50:.1f} | {m99:.1f} ({rng}) | {q50} | {q99} |")
    out += ["", "## versions and settings", ""]
    for s in systems:
        seen = [r for w in WORKLOADS for r in results.get(s.key, {}).get(w, []) if "detail" in r]
        if s.error:
            out.append(f"- {s.label}: NOT RUN — {s.error}")
        elif seen:
            settings = sorted({r["detail"].get("settings", "") for r in seen} - {""})
            out.append(f"- {s.label}: {seen[0]['detail']['version']}; {'; '.join(settings)}")
    _ = base
    return "\n".join(out)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_before": "%.2f %.2f %.2f" % os.getloadavg(),  # noqa: UP031
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, small sizes")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--only", default="", help="comma-separated system keys (dddframe always)")
    p.add_argument("--json", default="", help="also write the raw results here")
    p.add_argument("--timeout", type=float, default=900.0)
    opts = p.parse_args()
    opts.rounds = opts.rounds or (1 if opts.quick else 3)
    opts.n = 50 if opts.quick else 200
    opts.backlog = 5_000 if opts.quick else 100_000
    opts.rate = 200
    opts.seconds = 3.0 if opts.quick else 10.0
    wanted = set(filter(None, opts.only.split(","))) | {"dddframe"}
    systems = [s for s in SYSTEMS if not opts.only or s.key in wanted]
    meta = machine()
    print(f"# preparing {len(systems)} systems", flush=True)
    for s in systems:
        prepare(s)
        if s.error:
            print(f"  {s.key}: {s.error}", flush=True)
    results: dict = {s.key: {w: [] for w in WORKLOADS} for s in systems}
    started = time.monotonic()
    for rnd in range(opts.rounds):
        for w in WORKLOADS:
            order = [s for s in systems if w in s.workloads and not s.error]
            shift = rnd % len(order)
            order = order[shift:] + order[:shift]
            if rnd % 2:
                order.reverse()
            for s in order:
                r = run(s, w, opts)
                if r is not None:
                    results[s.key][w].append(r)
                    if "error" not in r:
                        shown = r["value"] if w != "w3" else r["detail"]["p99_ms"]
                        what = r["unit"] if w != "w3" else "ms p99"
                        print(f"  round {rnd + 1} {w} {s.key}: {shown:,.1f} {what}", flush=True)
    meta["load_after"] = "%.2f %.2f %.2f" % os.getloadavg()  # noqa: UP031
    meta["minutes"] = round((time.monotonic() - started) / 60, 1)
    text = report(results, systems, opts, meta)
    print()
    print(text)
    print(f"\n(run took {meta['minutes']} min)")
    if opts.json:
        Path(opts.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
