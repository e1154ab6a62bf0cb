"""Runs side by side in worker processes (pipeline/workers.py), with real processes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.workers import run_all, threads_per_worker

REPO = Path(__file__).resolve().parents[1]


def test_results_come_back_with_their_index_and_the_threads_are_split():
    results = dict(run_all(math.sqrt, [(4.0,), (9.0,), (16.0,)], workers=2))
    assert results == {0: 2.0, 1: 3.0, 2: 4.0}
    assert dict(run_all(torch.get_num_threads, [(), ()], workers=2)) == {0: threads_per_worker(2), 1: threads_per_worker(2)}
    # One worker: in this process, in order.
    assert list(run_all(math.sqrt, [(1.0,), (4.0,)], workers=1)) == [(0, 1.0), (1, 2.0)]


def test_a_failing_run_raises_here():
    with pytest.raises(ValueError, match="math domain error"):
        dict(run_all(math.sqrt, [(4.0,), (-1.0,)], workers=2))


def _state(pid: int) -> str | None:
    """The process's state letter, None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc")
def test_workers_exit_when_their_parent_is_killed():
    """A killed stage (SIGKILL: no cleanup runs) leaves no orphan training behind."""
    parent = subprocess.Popen(
        [sys.executable, "-c", (
            "import multiprocessing, threading, time\n"
            "from pipeline.workers import run_all\n"
            "def show():\n"
            "    time.sleep(2)\n"
            "    print(' '.join(str(p.pid) for p in multiprocessing.active_children()), flush=True)\n"
            "threading.Thread(target=show, daemon=True).start()\n"
            "dict(run_all(time.sleep, [(120,), (120,)], workers=2))\n"
        )],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_state(pid) not in (None, "Z") for pid in workers)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_state(pid) not in (None, "Z") for pid in workers):
        time.sleep(0.2)
    assert all(_state(pid) in (None, "Z") for pid in workers)
