"""``python -m benchmarks [name ...]``: run every benchmark module (or the named ones)."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    wanted = set(sys.argv[1:])
    here = Path(__file__).parent
    print(
        f"# dddframe benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda i: i.name):
        if info.name.startswith("_") or (wanted and info.name not in wanted):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if not hasattr(module, "main"):
            continue
        print(f"\n## {info.name}", flush=True)
        asyncio.run(module.main())


if __name__ == "__main__":
    main()
