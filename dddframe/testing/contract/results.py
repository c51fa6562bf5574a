"""The fault scenarios' results file, and the summary of it that the guarantees page shows.

Every fault scenario ends by writing its counts (:func:`write_result`): the scenario, the
transport, how many crash points it tried and its :class:`~dddframe.testing.contract.history.
HistoryReport`. :func:`results_summary` totals them per transport:

>>> rows = [
...     {"transport": "kafka", "scenario": "relay_sigkill", "crash_points": 2, "committed": 180,
...      "deliveries": 190, "absorbed": 10, "lost": 0},
...     {"transport": "kafka", "scenario": "worker_sigkill", "crash_points": 2, "committed": 120,
...      "deliveries": 121, "absorbed": 1, "lost": 0},
... ]
>>> for line in results_summary(rows).splitlines():
...     print(line)
| transport | scenarios | crash points | committed | deliveries | absorbed | lost |
|---|---|---|---|---|---|---|
| kafka | 2 | 4 | 300 | 311 | 11 | 0 |
| **all** | 2 | 4 | 300 | 311 | 11 | 0 |
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dddframe.testing.contract.history import HistoryReport

__all__ = [
    "RESULTS_ENV",
    "read_results",
    "results_path",
    "results_summary",
    "write_result",
]

RESULTS_ENV = "DDDFRAME_CONTRACT_RESULTS"
RESULTS_VERSION = 1
_COLUMNS = (
    ("crash_points", "crash points"),
    ("committed", "committed"),
    ("deliveries", "deliveries"),
    ("absorbed", "absorbed"),
    ("lost", "lost"),
)


def results_path(cache_dir: Path | None = None) -> Path:
    """Where :func:`write_result` writes: ``$DDDFRAME_CONTRACT_RESULTS`` or the pytest cache."""
    configured = os.environ.get(RESULTS_ENV, "").strip()
    if configured:
        return Path(configured)
    base = cache_dir or Path(".pytest_cache")
    return base / "d" / "dddframe-contract" / "faults.json"


def write_result(
    path: Path,
    *,
    scenario: str,
    transport: str,
    crash_points: int,
    report: HistoryReport,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Add (or replace) the entry of ``(scenario, transport)`` in the results file at ``path``."""
    if not scenario or not transport:
        raise ValueError("write_result needs a scenario and a transport name")
    entries = [
        r
        for r in read_results(path)
        if (r.get("scenario"), r.get("transport")) != (scenario, transport)
    ]
    entries.append(
        {
            "scenario": scenario,
            "transport": transport,
            "crash_points": crash_points,
            **dict(extra or {}),
            **report.as_dict(),
        }
    )
    entries.sort(key=lambda r: (str(r.get("transport")), str(r.get("scenario"))))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp"
    ) as tmp:
        json.dump({"version": RESULTS_VERSION, "results": entries}, tmp, indent=1)
    os.replace(tmp.name, path)


def read_results(path: Path) -> list[dict[str, Any]]:
    """The entries of the results file at ``path`` (empty when it is missing or unreadable)."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(loaded, dict) or not isinstance(loaded.get("results"), list):
        return []
    return [r for r in loaded["results"] if isinstance(r, dict)]


def results_summary(entries: Iterable[Mapping[str, Any]]) -> str:
    """A markdown table of the entries' counts per transport, with a total row."""
    totals: dict[str, dict[str, int]] = {}
    for entry in entries:
        row = totals.setdefault(str(entry.get("transport", "?")), {"scenarios": 0})
        row["scenarios"] += 1
        for key, _ in _COLUMNS:
            value = entry.get(key, 0)
            row[key] = row.get(key, 0) + (value if isinstance(value, int) else 0)
    every = {"scenarios": 0, **{key: 0 for key, _ in _COLUMNS}}
    for row in totals.values():
        for key in every:
            every[key] += row.get(key, 0)
    head = "| transport | scenarios | " + " | ".join(t for _, t in _COLUMNS) + " |"
    lines = [head, "|---|---|" + "---|" * len(_COLUMNS)]
    for name, row in [*sorted(totals.items()), ("**all**", every)]:
        cells = [str(row.get(key, 0)) for key, _ in _COLUMNS]
        lines.append(f"| {name} | {row['scenarios']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
