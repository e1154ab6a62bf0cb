"""Where each stage's files live, and parquet IO (written atomically: neggen_model/atomic.py).

Layout under the home folder (`$NEGGEN_HOME`, default `./neggen_home`):

    <home>/<dataset>/<stage>.parquet     one table per asset, open it in DuckDB
    <home>/<dataset>/<stage>/            folders for non-table outputs (checkpoints)
    <home>/sources/<dataset>/            generated raw sources (the demo world)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from neggen_model.atomic import atomic_path


class StageMissing(FileNotFoundError):
    """A stage's output is read before it was materialized."""


class DatasetStore:
    def __init__(self, home: Path, dataset: str):
        self.home = Path(home)
        self.dataset = dataset
        self.root = self.home / dataset

    def table_path(self, stage: str) -> Path:
        return self.root / f"{stage}.parquet"

    def folder(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def source_dir(self) -> Path:
        return self.home / "sources" / self.dataset

    def write(self, stage: str, table: pd.DataFrame | pa.Table) -> Path:
        """Write a stage's table; readers never see a half-written file."""
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        path = self.table_path(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return path

    def read(self, stage: str, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.table_path(stage)
        if not path.exists():
            raise StageMissing(
                f"{path} does not exist: materialize `{stage}` for dataset "
                f"`{self.dataset}` first (neggen materialize --dataset {self.dataset})"
            )
        return pq.read_table(path, columns=columns).to_pandas()

    def existing_tables(self) -> dict[str, Path]:
        if not self.root.exists():
            return {}
        return {p.stem: p for p in sorted(self.root.glob("*.parquet"))}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
