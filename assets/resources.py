"""The Dagster resource every asset uses: the validated config and the dataset stores.

While a run (or a step process of a run) uses it, it holds the lock of the run's dataset
(pipeline/lock.py): one writer per dataset home; a second one waits and says for whom. The
assets that encode or train do so inside `compute`: one of the home's compute slots, with the
run's share of the cores.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from pipeline.config import DatasetConfig, NeggenConfig, load_config
from pipeline.demo import write_demo_source
from pipeline.lock import compute_slot, dataset_lock
from pipeline.source_items import read_dataset_source
from pipeline.sources import RawSource
from pipeline.storage import DatasetStore
from pipeline.workers import run_cores, share_of_cores


def _who(run: dg.DagsterRun) -> str:
    """The run, as a waiting writer is told who holds a lock or a slot."""
    command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:4]]) if sys.argv else "python"
    return f"run {run.run_id[:8]} of {run.job_name}: {command}"


class NeggenResource(dg.ConfigurableResource):
    """Config file location; everything else is derived from the validated config."""

    config_path: str | None = None

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        """The resource, with the lock of the run's dataset held while the run (or step) works."""
        run = context.dagster_run
        dataset = run.tags.get("dagster/partition") if run is not None else None
        if dataset is None:  # not a partitioned run: no dataset to lock
            yield self
            return
        root = self.store(dataset).root

        def waiting(message: str) -> None:
            if context.log is not None:
                context.log.warning(message)  # the CLI's progress lines, the run's log in the UI
            else:
                print(f"neggen: {message}", file=sys.stderr, flush=True)

        with dataset_lock(root, _who(run), on_wait=waiting):
            yield self

    @contextmanager
    def compute(self, context: dg.AssetExecutionContext) -> Iterator[None]:
        """Around an asset's encoding or training: one of the home's `compute.concurrent_runs`
        slots (pipeline/lock.py: compute_slot; a further run waits and says for whom), and the
        run's share of the cores as torch threads, cores // concurrent_runs, which its training
        workers split (pipeline/workers.py: share_of_cores, run_cores)."""
        config = self.config
        slots = config.compute.concurrent_runs
        with compute_slot(config.home, slots, _who(context.run), on_wait=context.log.warning):
            with run_cores(share_of_cores(slots)):
                yield

    @property
    def config(self) -> NeggenConfig:
        # Read on each use (it is small): an edited file takes effect in the next run.
        return load_config(self.config_path)

    def dataset(self, name: str) -> DatasetConfig:
        return self.config.dataset(name)

    def store(self, name: str) -> DatasetStore:
        self.config.dataset(name)  # unknown names fail here, with the list of known ones
        return DatasetStore(self.config.home, name)

    def raw_source(self, name: str) -> RawSource:
        """Read a dataset's source files; the demo world is generated first (idempotently)."""
        dataset = self.dataset(name)
        store = self.store(name)
        if dataset.format == "demo":
            write_demo_source(store.source_dir, dataset.demo)
        return read_dataset_source(dataset, store)
