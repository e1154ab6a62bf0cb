"""Independent training runs side by side, each in its own process with its own torch threads.

The runs of a stage (seeds, variants, grid points) share nothing but their inputs. On a few CPU
cores, one run per core with one thread each finishes a stage sooner than runs one after another
with every core's threads inside each (small sparse and dense products scale poorly across
threads; README "NegGen model stage: speed"). Two processes with two threads each would
oversubscribe the cores, which is many times slower, so each worker gets cores // workers threads,
where cores are the run's share when several runs compute at once (run_cores; pipeline/lock.py:
compute_slot).

Workers are spawned (not forked: the parent may hold threads, open DuckDB handles and a lock),
and a worker whose parent dies exits at once, so a killed stage leaves no orphan training; its
runs resume from their checkpoints on the next materialization.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

Result = TypeVar("Result")


_run_cores: int | None = None  # while a run holds a compute slot: its share of the cores (run_cores)


def usable_cores() -> int:
    """CPU cores this process may use: its run's share while it has one (run_cores), else the
    cores it may run on (its affinity, not the machine's count)."""
    if _run_cores is not None:
        return _run_cores
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def share_of_cores(runs: int) -> int:
    """The cores each of `runs` runs computing at once gets: the usable cores (no more than torch's
    threads, which OMP_NUM_THREADS sets and which count physical cores) split between them."""
    return max(1, min(usable_cores(), torch.get_num_threads()) // runs)


@contextmanager
def run_cores(cores: int) -> Iterator[None]:
    """Within the block this process's run uses `cores` cores: as many torch threads here, and
    its workers split them (threads_per_worker). Both are restored after."""
    global _run_cores
    before = _run_cores, torch.get_num_threads()
    _run_cores = cores
    torch.set_num_threads(cores)
    try:
        yield
    finally:
        _run_cores = before[0]
        torch.set_num_threads(before[1])


def threads_per_worker(workers: int) -> int:
    return max(1, usable_cores() // workers)


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(1.0)


def _start_worker(parent: int, threads: int) -> None:
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def run_all(
    function: Callable[..., Result], calls: Sequence[tuple[Any, ...]], workers: int
) -> Iterator[tuple[int, Result]]:
    """(index, function(*calls[index])) for every call, in the order they finish.

    workers == 1 (or a single call) runs them here, in order, with this process's threads. A call
    that raises stops the others that have not started and re-raises here. `function` must be a
    module-level function (it is sent to the workers by name)."""
    workers = min(workers, len(calls))
    if workers <= 1:
        for index, args in enumerate(calls):
            yield index, function(*args)
        return
    context = multiprocessing.get_context("spawn")
    threads = threads_per_worker(workers)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(os.getpid(), threads)) as pool:  # fmt: skip
        pending: dict[Future, int] = {pool.submit(function, *args): index for index, args in enumerate(calls)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    yield index, future.result()
        finally:
            for future in pending:
                future.cancel()
