"""One writer per dataset home: an exclusive lock on `<home>/<dataset>/.lock`.

Every Dagster run (and every step process of a run the UI launches) that writes a dataset
takes its lock for as long as it works on it (`NeggenResource` does, for the run's partition).
A second writer **waits**: it says once who holds the lock (pid, command, since when) and
continues as soon as the holder finishes. The lock is `flock(2)`: the kernel releases it when
its holder exits, also on a crash or kill -9, so a dead run never blocks the next one. Nested
takes in one process (a step inside a run that already holds the lock) do not wait.

Readers (`neggen sql`, the parquet files themselves) take no lock: every table is replaced
atomically, so a reader sees the old file or the new one.

Compute slots (`compute_slot`): the runs of one home that encode or train (on any dataset) take
one of `compute.concurrent_runs` slots, so that no more of them share the cores at once; a
further one waits the same way.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = ".lock"
COMPUTE_FOLDER = ".compute"

_held: dict[str, int] = {}  # lock path -> nesting depth, in this process
_guard = threading.Lock()


def _say(message: str) -> None:
    print(f"neggen: {message}", file=sys.stderr, flush=True)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} ({info.get('what', '?')}, since {info.get('since', '?')})"


@contextmanager
def _nested(key: str) -> Iterator[bool]:
    """Whether this process already holds `key` (then the block runs inside that hold)."""
    with _guard:
        nested = key in _held
        if nested:
            _held[key] += 1
    try:
        yield nested
    finally:
        if nested:
            with _guard:
                _held[key] -= 1


@contextmanager
def _holding(key: str, fd: int, what: str) -> Iterator[None]:
    """`fd` is locked: say who holds it (for a writer that waits) while the block runs."""
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what, "since": since}).encode(), 0)
    with _guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _guard:
            _held.pop(key, None)
        os.ftruncate(fd, 0)


@contextmanager
def dataset_lock(root: Path, what: str, on_wait: Callable[[str], None] = _say) -> Iterator[None]:
    """Hold the exclusive lock of the dataset folder `root` (created if needed) while the block
    runs; `what` says who holds it (shown to a writer that waits). A writer that finds it taken
    calls `on_wait` once with who holds it, then blocks until it is free."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    key = str(path.resolve())
    with _nested(key) as nested:
        if nested:
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait(
                    f"{root} is being written by {_holder(fd)}; waiting for it to finish "
                    "(one writer per dataset; the lock is freed when that process ends, also if it crashes)"
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
            with _holding(key, fd, what):
                yield
        finally:
            os.close(fd)  # releases the lock


def _free_slot(folder: Path, slots: int) -> tuple[int | None, list[str]]:
    """The locked fd of the first free slot, or None and who holds each slot."""
    holders = []
    for index in range(slots):
        fd = os.open(folder / f"slot-{index}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd, holders
        except BlockingIOError:
            holders.append(_holder(fd))
            os.close(fd)
    return None, holders


@contextmanager
def compute_slot(home: Path, slots: int, what: str, on_wait: Callable[[str], None] = _say,
                 poll_s: float = 0.5) -> Iterator[None]:  # fmt: skip
    """Hold one of the `slots` compute slots of the home folder `home` while the block runs, so
    that at most `slots` runs encode or train at once on the cores they share. A run that finds
    every slot taken calls `on_wait` once with who holds them, then takes the first slot that
    frees (it looks every `poll_s` seconds). A slot is a lock file like the dataset lock's
    (`<home>/.compute/slot-<i>`), freed by the kernel when its holder exits; nested takes in one
    process do not wait."""
    folder = Path(home) / COMPUTE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _nested(key) as nested:
        if nested:
            yield
            return
        fd, holders = _free_slot(folder, slots)
        if fd is None:
            on_wait(
                f"every compute slot of {home} is taken (compute.concurrent_runs: {slots}), by "
                f"{'; '.join(holders)}; waiting for a compute slot"
            )
        while fd is None:
            time.sleep(poll_s)
            fd, _ = _free_slot(folder, slots)
        try:
            with _holding(key, fd, what):
                yield
        finally:
            os.close(fd)  # frees the slot
