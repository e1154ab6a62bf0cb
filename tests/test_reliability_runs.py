"""Killed runs and the UI's processes: a run whose process was killed is marked failed when
`neggen materialize` or `neggen ui` next starts (it stayed STARTED for ever), and SIGTERM to
`neggen ui` stops every Dagster process it started (they kept serving on the port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import dagster as dg

from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
ENV.pop("NEGGEN_CONFIG", None)

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from pipeline.lock import dataset_lock

    with dataset_lock(Path(sys.argv[1]), "the test"):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def toy_project(tmp_path: Path) -> dict:
    data = tmp_path / "data" / "toy"
    data.mkdir(parents=True)
    rows = [f"{u}\t{i}" for u in range(12) for i in range(8) if (u + i) % 3]
    (data / "toy.inter").write_text("userID\titemID\n" + "\n".join(rows) + "\n")
    (tmp_path / "neggen.yaml").write_text("datasets:\n  toy: {format: mmrec, path: data/toy, kcore: 3}\n")
    return {**ENV, "NEGGEN_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster")}


def neggen(*args) -> list[str]:
    return [sys.executable, "-m", "assets.cli", *args]


def collect(stream, lines: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    thread.start()
    return thread


def wait_for(condition, what: str, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def killed_run(tmp_path: Path, env: dict) -> tuple[str, int]:
    """A `neggen materialize` killed with SIGKILL while its run is STARTED (it waits for the
    dataset's lock, held by another process meanwhile). Returns the run id and the dead pid."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "home" / "toy")], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        victim = subprocess.Popen(neggen("materialize", "--dataset", "toy", "--select", "interactions"),
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
        lines: list[str] = []
        collect(victim.stderr, lines)
        wait_for(lambda: any("waiting for it to finish" in line for line in lines) or victim.poll() is not None,
                 "the run to start")  # fmt: skip
        assert victim.poll() is None, "".join(lines)
        victim.kill()
        victim.wait()
    finally:
        holder.kill()
        holder.wait()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.STARTED  # what a killed run looked like
        return record.dagster_run.run_id, victim.pid


def status_of(env: dict, run_id: str) -> dg.DagsterRunStatus:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return instance.get_run_by_id(run_id).status


def test_a_killed_run_is_marked_failed_when_materialize_starts_again(tmp_path):
    env = toy_project(tmp_path)
    run_id, pid = killed_run(tmp_path, env)
    again = subprocess.run(neggen("materialize", "--dataset", "toy", "--select", "interactions"), cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"neggen: run {run_id} (materialize_dataset, toy): its process {pid} is gone; marked failed" in again.stderr
    assert status_of(env, run_id) == dg.DagsterRunStatus.FAILURE
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        statuses = {r.dagster_run.run_id: r.dagster_run.status for r in instance.get_run_records()}
        failure = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert sorted(statuses.values(), key=str) == [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS]
    assert f"(pid {pid}) is gone" in failure[0].dagster_event.message


# -- neggen ui -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent_of[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ui_marks_killed_runs_failed_and_sigterm_stops_all_its_processes(tmp_path):
    env = toy_project(tmp_path)
    run_id, pid = killed_run(tmp_path, env)
    port = free_port()
    ui = subprocess.Popen(neggen("ui", "--port", str(port)), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    lines: list[str] = []
    collect(ui.stderr, lines)
    started = []
    try:
        def serving() -> bool:
            assert ui.poll() is None, "".join(lines[-30:])
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                return True
            except OSError:
                return False

        wait_for(serving, "the UI to serve", 240)
        assert any(f"run {run_id} (materialize_dataset, toy): its process {pid} is gone; marked failed" in line
                   for line in lines), "".join(lines[-30:])  # fmt: skip
        assert status_of(env, run_id) == dg.DagsterRunStatus.FAILURE

        started = descendants(ui.pid)
        assert len(started) >= 3  # dagster dev, its webserver, daemon and code server
        os.kill(ui.pid, signal.SIGTERM)  # to neggen alone, as a service manager or `kill` does
        ui.wait(timeout=60)
        wait_for(lambda: not any(alive(p) for p in started), "Dagster's processes to end", 30)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing serves on the port any more
    finally:
        for process in [ui.pid, *started]:
            try:
                os.kill(process, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ui.wait(timeout=30)
