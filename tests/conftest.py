"""Shared fixtures: an isolated NEGGEN_HOME per test, the real data folder, and a toy project
for tests that run the `neggen` command in another process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def neggen_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("NEGGEN_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def shared_dataset(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (see ../shared/data/README.md)")
    return path


def toy_project(folder: Path, extra_config: str = "") -> tuple[Path, dict[str, str]]:
    """A 12-user x 8-item MMRec dataset `toy` and a neggen.yaml registering it (plus extra_config)
    in folder; returns the home and the environment a `neggen` subprocess runs this checkout with."""
    data = folder / "data" / "toy"
    data.mkdir(parents=True)
    rows = [f"{u}\t{i}" for u in range(12) for i in range(8) if (u + i) % 3]
    (data / "toy.inter").write_text("userID\titemID\n" + "\n".join(rows) + "\n")
    (folder / "neggen.yaml").write_text("datasets:\n  toy: {format: mmrec, path: data/toy, kcore: 3}\n" + extra_config)
    home = folder / "home"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NEGGEN_HOME": str(home), "DAGSTER_HOME": str(folder / "dagster")}
    env.pop("NEGGEN_CONFIG", None)
    return home, env


def start_materialize(folder: Path, env: dict[str, str], select: str) -> tuple[subprocess.Popen, list[str]]:
    """`neggen materialize --dataset toy --select select` in another process; its stderr lines
    are collected into the returned list as they come."""
    process = subprocess.Popen(
        [sys.executable, "-m", "assets.cli", "materialize", "--dataset", "toy", "--select", select],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()
    return process, lines


def wait_for_line(lines: list[str], text: str, process: subprocess.Popen, seconds: float = 60) -> str:
    """The first of lines that holds text, once it comes; fails if process ends or seconds pass first."""
    deadline = time.monotonic() + seconds
    while not any(text in line for line in lines):
        assert process.poll() is None or any(text in line for line in lines), "".join(lines)
        assert time.monotonic() < deadline, f"never said {text!r}: " + "".join(lines)
        time.sleep(0.05)
    return next(line for line in lines if text in line)
