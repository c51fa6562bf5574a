"""docs/testing.md's pytest settings, used as a project's pyproject.toml, run the page's test
sample with no warning at all (no deprecation, no unknown option)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "testing.md"


def test_the_documented_pytest_settings_give_no_warning(tmp_path: Path) -> None:
    text = PAGE.read_text(encoding="utf-8")
    settings = re.search(r"<!-- settings -->\n```toml\n(.*?)```", text, re.S)
    sample = re.search(r"<!-- sample: pytest -->\n```python\n(.*?)```", text, re.S)
    assert settings and sample, "docs/testing.md lost its settings block or its pytest sample"
    (tmp_path / "pyproject.toml").write_text(settings[1], encoding="utf-8")
    (tmp_path / "test_app.py").write_text(sample[1], encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rw", "test_app.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout and "warning" not in done.stdout.lower(), done.stdout
