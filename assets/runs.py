"""Runs whose process is gone: a run killed (kill -9, a crash, a closed terminal) cannot
report its own end, so Dagster shows it as started for ever. `neggen materialize` and
`neggen ui` look for such runs when they start and mark them failed.

A run's process is the one that executes it: its pid is in the run's first engine event
("Executing steps in process (pid: N)" for `neggen materialize`, "Started process for run
(pid: N)" for a run the UI launched). The run is dead when no process has that pid any more,
or when the process that has it started after the run did (the pid was reused). Runs whose
pid is unknown are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType  # not re-exported by `dagster`; stable since 1.0

UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that executes the run, from its first engine event that has one."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=50).records
    for record in records:
        data = record.event_log_entry.dagster_event.event_specific_data
        pid = (getattr(data, "metadata", None) or {}).get("pid")
        if pid is not None:
            try:
                return int(getattr(pid, "value", pid))
            except (TypeError, ValueError):
                continue
    return None


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch; Linux /proc), None if unknown."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))  # fmt: skip
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def process_alive(pid: int, since: float | None = None) -> bool:
    """Whether `pid` is a live process that was already running at `since` (epoch seconds)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    started = _process_start(pid) if since is not None else None
    # Another process that got the pid later is not the run's (2 s slack: /proc rounds to ticks).
    return started is None or since is None or started <= since + 2.0


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark the unfinished runs whose process is gone as failed; one line per run marked."""
    said = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        pid = run_pid(instance, run.run_id)
        since = record.start_time or record.create_timestamp.timestamp()
        if pid is None or pid == os.getpid() or process_alive(pid, since):
            continue
        message = (
            f"Marked failed by neggen: the run's process (pid {pid}) is gone (killed or crashed) "
            f"while the run was {run.status.value}."
        )
        instance.report_run_failed(run, message=message)
        said.append(f"run {run.run_id} ({run.job_name}, {run.tags.get('dagster/partition', '-')}): "
                    f"its process {pid} is gone; marked failed")  # fmt: skip
    return said
