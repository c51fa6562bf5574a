"""The wheel as users install it: in a fresh virtualenv per extra, the core and each extra alone
import, start an application on their transport and deliver an event (tests/packaging/probe.py).

The wheel is built once and every dependency comes from one wheelhouse (``pip wheel``), so each
virtualenv installs offline. Marked ``packaging``; ``make test`` runs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import AMQP_URL, MYSQL_URL, POSTGRES_URL, reachable, require

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("probe.py")
EXTRAS = ["core", "postgres", "mysql", "kafka", "amqp", "fastapi"]

pytestmark = pytest.mark.packaging


def pip(*args: str, timeout: float = 600) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The dddframe wheel and a directory with it and every dependency of every extra."""
    dist = tmp_path_factory.mktemp("dist")
    house = tmp_path_factory.mktemp("wheelhouse")
    source = tmp_path_factory.mktemp("src") / "dddframe"
    # Build from a copy of what the wheel is made of (no .venv, caches or build/ leftovers).
    shutil.copytree(
        ROOT / "dddframe", source / "dddframe", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "example_shop", source / "example_shop")  # must stay out of the wheel
    pip("wheel", "--no-deps", "--wheel-dir", str(dist), str(source))
    (wheel,) = dist.glob("dddframe-*.whl")
    extras = ",".join(e for e in EXTRAS if e != "core")
    pip("wheel", "--wheel-dir", str(house), f"{wheel}[{extras}]")
    return wheel, house


def target(kind: str, tmp_path: Path) -> list[str]:
    sqlite = f"sqlite+aiosqlite:///{tmp_path}/probe.db"
    if kind == "postgres":
        require("PostgreSQL", reachable(POSTGRES_URL, 5432), POSTGRES_URL)
        return [POSTGRES_URL]
    if kind == "mysql":
        require("MariaDB", reachable(MYSQL_URL, 3306), MYSQL_URL)
        return [MYSQL_URL]
    if kind == "kafka":
        from tests.kafka import broker

        return [sqlite, broker.bootstrap()]
    if kind == "amqp":
        require("RabbitMQ", reachable(AMQP_URL, 5672), AMQP_URL)
        return [sqlite, AMQP_URL]
    return [sqlite]


@pytest.mark.parametrize("kind", EXTRAS)
def test_each_extra_works_alone_in_a_fresh_virtualenv(
    kind: str, wheelhouse: tuple[Path, Path], tmp_path: Path
) -> None:
    _wheel, house = wheelhouse
    args = target(kind, tmp_path)
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    requirement = "dddframe" if kind == "core" else f"dddframe[{kind}]"
    pip("--python", str(python), "install", "--no-index", "--find-links", str(house), requirement)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert not (Path(site) / "example_shop").exists(), "the wheel ships the example shop"
    work = tmp_path / "work"  # run away from the checkout, so only the installed copy imports
    work.mkdir()
    shutil.copy(PROBE, work / "probe.py")
    done = subprocess.run(
        [str(python), "probe.py", kind, *args], cwd=work, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert f"probe {kind}: ok" in done.stdout
    cli = subprocess.run(
        [str(env_dir / "bin" / "dddframe"), "schema", "--dialect", "sqlite"],
        cwd=work, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0 and "dddframe_schema" in cli.stdout, cli.stderr
