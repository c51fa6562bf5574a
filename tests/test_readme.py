"""The README's sample runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_sample_runs(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    sample = re.search(r"```python\n(.*?)```", text, re.S)
    assert sample is not None
    script = tmp_path / "sample.py"
    assert 'if __name__ == "__main__":\n    asyncio.run(main())' in sample.group(1)
    script.write_text(sample.group(1))  # runs main() itself, as a reader's copy would
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "reserve stock for" in result.stdout
    assert "(attempt 1)" in result.stdout
