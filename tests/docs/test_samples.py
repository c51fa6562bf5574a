"""Every ```python sample in docs/ runs, page by page, in a temporary directory on SQLite.

A page's samples run in order as one script (later samples may use names defined earlier), in a
fresh process so event names and tables of different pages never meet. A sample preceded by
``<!-- sample: skip -->`` is not run (it needs a broker, or shows a fragment); one preceded by
``<!-- sample: pytest -->`` is written to a test file and run with pytest instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_FENCE = re.compile(
    r"(?:<!--\s*sample:\s*(?P<mark>skip|pytest)\s*-->\s*\n)?^```python[^\n]*\n(?P<code>.*?)^```",
    re.S | re.M,
)


def samples(page: Path) -> tuple[list[str], list[str]]:
    """(script samples, pytest samples) of a page, in order."""
    scripts: list[str] = []
    tests: list[str] = []
    for m in _FENCE.finditer(page.read_text(encoding="utf-8")):
        if m["mark"] == "skip":
            continue
        (tests if m["mark"] == "pytest" else scripts).append(m["code"])
    return scripts, tests


PAGES = sorted(p for p in DOCS.rglob("*.md") if any(samples(p)))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=180, env=env
    )


def test_samples_are_found() -> None:
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"getting-started.md", "concepts.md", "testing.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_samples_run(page: Path, tmp_path: Path) -> None:
    scripts, tests = samples(page)
    if scripts:
        script = tmp_path / "sample.py"
        script.write_text("\n\n".join(scripts), encoding="utf-8")
        result = _run([str(script)], tmp_path)
        assert result.returncode == 0, f"{page.name}:\n{result.stdout}\n{result.stderr}"
    for i, code in enumerate(tests):
        test_file = tmp_path / f"test_sample_{i}.py"
        test_file.write_text(code, encoding="utf-8")
        result = _run(
            [
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "asyncio_mode=auto",
                str(test_file),
            ],
            tmp_path,
        )
        assert result.returncode == 0, f"{page.name}:\n{result.stdout}\n{result.stderr}"
