"""Runs that encode or train share the cores: at most `compute.concurrent_runs` of them at once
per home (a compute slot each, released when its holder dies), and each with its share of the
cores as torch threads (pipeline/lock.py: compute_slot, pipeline/workers.py: run_cores)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from pipeline.config import ConfigError, load_config
from pipeline.workers import run_all, run_cores, share_of_cores, threads_per_worker, usable_cores
from tests.conftest import REPO, start_materialize, toy_project, wait_for_line

ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # a script runs this checkout's code

TAKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from pipeline.lock import compute_slot

    home, slots, hold = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    with compute_slot(home, slots, sys.argv[4], on_wait=lambda m: print(m, flush=True)):
        print("computing", flush=True)
        time.sleep(hold)
    """
)


def _take(home, slots: int, hold_s: float, what: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TAKER, str(home), str(slots), str(hold_s), what], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, text=True)  # fmt: skip


def _lines(process: subprocess.Popen) -> list[str]:
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return lines


def test_a_run_beyond_the_slots_waits_and_a_killed_holder_frees_its_slot(tmp_path):
    first = _take(tmp_path, 1, 600, "the first run")
    second = None
    try:
        assert first.stdout.readline().strip() == "computing"
        second = _take(tmp_path, 1, 0, "the second run")
        lines = _lines(second)
        said = wait_for_line(lines, "waiting for a compute slot", second)
        assert f"by pid {first.pid} (the first run" in said and "compute.concurrent_runs: 1" in said
        time.sleep(1.0)
        assert second.poll() is None and not any("computing" in line for line in lines)
        os.kill(first.pid, signal.SIGKILL)  # a crash: the kernel frees the slot
        assert second.wait(timeout=60) == 0
        assert any("computing" in line for line in lines)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def test_two_slots_let_two_runs_compute_at_once(tmp_path):
    runs = [_take(tmp_path, 2, 600, f"run {i}") for i in range(2)]
    try:
        assert [run.stdout.readline().strip() for run in runs] == ["computing", "computing"]
    finally:
        for run in runs:
            run.kill()
            run.wait()


def test_a_run_gets_its_share_of_the_cores_as_threads_and_its_workers_split_it():
    before = torch.get_num_threads(), usable_cores()
    with run_cores(2):
        assert torch.get_num_threads() == 2 and usable_cores() == 2
        assert threads_per_worker(2) == 1
        assert dict(run_all(torch.get_num_threads, [(), ()], workers=2)) == {0: 1, 1: 1}
        with run_cores(1):
            assert torch.get_num_threads() == 1 and threads_per_worker(2) == 1
        assert torch.get_num_threads() == 2
    assert (torch.get_num_threads(), usable_cores()) == before
    cores = min(usable_cores(), torch.get_num_threads())
    assert share_of_cores(1) == cores and share_of_cores(2) == max(1, cores // 2) and share_of_cores(cores + 1) == 1


def test_concurrent_runs_is_validated_with_its_key(tmp_path):
    config = tmp_path / "neggen.yaml"
    config.write_text("compute: {concurrent_runs: 0}\n")
    with pytest.raises(ConfigError, match="compute.concurrent_runs"):
        load_config(config)
    config.write_text("compute: {concurrent_runs: 2}\n")
    assert load_config(config).compute.concurrent_runs == 2
    config.write_text("home: home\n")
    assert load_config(config).compute.concurrent_runs == 1  # one at a time unless the config says more


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from pipeline.lock import compute_slot

    with compute_slot(Path(sys.argv[1]), 1, "the test's training"):
        print("holding", flush=True)
        time.sleep(600)
    """
)


def test_training_waits_for_a_slot_while_the_data_stage_does_not(tmp_path):
    """A materialization through Dagster: `interactions` needs no slot and is written while
    another run holds the only one; `base_model` waits for it, says so, and trains once it is free."""
    home, env = toy_project(tmp_path, "train: {epochs: 2, eval_every: 1, batch_size: 64}\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    run = None
    try:
        assert holder.stdout.readline().strip() == "holding"
        run, lines = start_materialize(tmp_path, env, "+key:base_model")
        said = wait_for_line(lines, "waiting for a compute slot", run, seconds=180)
        assert f"by pid {holder.pid} (the test's training" in said
        assert (home / "toy" / "interactions.parquet").exists()
        time.sleep(1.0)
        assert run.poll() is None and not any("base_model done" in line for line in lines)
        os.kill(holder.pid, signal.SIGKILL)
        assert run.wait(timeout=180) == 0, "".join(lines)
        assert any("base_model done" in line for line in lines)
    finally:
        for process in (holder, run):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
