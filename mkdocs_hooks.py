"""mkdocs hook: list every decision record in docs/adr/ under "Decision records" in the nav,
so a new ADR shows up without editing mkdocs.yml (engineers add them concurrently)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SECTION = "Decision records"


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def on_config(config: Any) -> Any:
    adr_dir = Path(config["docs_dir"]) / "adr"
    records = [{_title(p): f"adr/{p.name}"} for p in sorted(adr_dir.glob("*.md")) if p.is_file()]
    for item in config["nav"] or []:
        if isinstance(item, dict) and SECTION in item:
            item[SECTION] = records
    return config
