"""The Dagster resource every asset uses: the validated config and the dataset stores."""

from __future__ import annotations

import dagster as dg

from pipeline.config import DatasetConfig, NeggenConfig, load_config
from pipeline.demo import write_demo_source
from pipeline.sources import RawSource, read_amazon2014, read_source
from pipeline.storage import DatasetStore


class NeggenResource(dg.ConfigurableResource):
    """Config file location; everything else is derived from the validated config."""

    config_path: str | None = None

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
        if dataset.format == "demo":
            folder = write_demo_source(self.store(name).source_dir, dataset.demo)
            return read_amazon2014(folder)
        return read_source(dataset.format, dataset.path)
