"""What a dataset's source holds, item by item, by content; and what changed since the data
stage last read it.

An item's digest covers what feeds generation: its text columns (title, brand, categories,
description) and the bytes of its picture. The data stage records the digests of the items it
read in `<home>/<dataset>/source_items.parquet` (`item_source`, `digest`; the run that wrote it
in the file's metadata). Comparing a source with that record says which items are new, changed,
unchanged (their generations and embeddings are reused from the caches) or removed.

`check_source` is what the `source_items_changed` sensor runs for each dataset: a cheap
fingerprint of the source files (names, sizes, modification times) and of the record first, so
that an unchanged source is not read again at every tick.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import tables
from pipeline.config import DatasetConfig, NeggenConfig
from pipeline.sources import ITEM_TEXT_COLUMNS, RawSource, read_source
from pipeline.storage import DatasetStore, file_digest

_RUN_ID = b"neggen.run_id"  # the record's metadata key: which run wrote it


def source_folder(dataset: DatasetConfig, store: DatasetStore) -> Path:
    """Where a dataset's source files are (the demo world is generated under the home)."""
    return store.source_dir if dataset.format == "demo" else dataset.path


def read_dataset_source(dataset: DatasetConfig, store: DatasetStore) -> RawSource:
    """The dataset's source as it is now; the demo world is read like Amazon 2014 raw files."""
    return read_source("amazon2014" if dataset.format == "demo" else dataset.format, source_folder(dataset, store))


def item_digests(items: pd.DataFrame) -> pd.DataFrame:
    """One row per source item: `item_source` and the sha256 of what generation reads of it."""
    digests = []
    for row in items.to_dict("records"):
        content = {c: _text(row.get(c)) for c in ITEM_TEXT_COLUMNS}
        # A picture by its bytes, never its path (moving the folder changes no item); none: its status.
        status = row.get("image_status")
        content["picture"] = file_digest(row["image_path"]) if status == "ok" else status
        digests.append(hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest())
    return pd.DataFrame({"item_source": items["item_source"].astype(str).tolist(), "digest": digests})


def _text(value) -> str | None:
    return None if value is None or value is pd.NA or (isinstance(value, float) and value != value) else str(value)


@dataclass(frozen=True)
class ItemChanges:
    """Source items by what happened to them since the record (ids as the source spells them)."""

    new: tuple[str, ...]
    changed: tuple[str, ...]
    reused: tuple[str, ...]
    removed: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        return {"new": len(self.new), "changed": len(self.changed), "reused": len(self.reused),
                "removed": len(self.removed)}  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.new or self.changed or self.removed)

    def __str__(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self.counts().items())


def compare(recorded: pd.DataFrame, current: pd.DataFrame) -> ItemChanges:
    """`current` item digests against `recorded` ones (both as item_digests() returns them)."""
    before = dict(zip(recorded["item_source"], recorded["digest"]))
    now = dict(zip(current["item_source"], current["digest"]))
    return ItemChanges(
        new=tuple(s for s in now if s not in before),
        changed=tuple(s for s in now if s in before and before[s] != now[s]),
        reused=tuple(s for s in now if before.get(s) == now[s]),
        removed=tuple(s for s in before if s not in now),
    )


@dataclass(frozen=True)
class Record:
    """The item digests the data stage last read, and the run that read them."""

    digests: pd.DataFrame
    run_id: str


def write_record(store: DatasetStore, digests: pd.DataFrame, run_id: str) -> Path:
    """Replace the record (atomically, like every table)."""
    table = pa.Table.from_pandas(digests[["item_source", "digest"]], preserve_index=False)
    return store.write(tables.SOURCE_ITEMS, table.replace_schema_metadata({_RUN_ID: run_id.encode()}))


def read_record(store: DatasetStore) -> Record | None:
    path = store.table_path(tables.SOURCE_ITEMS)
    if not path.exists():
        return None
    table = pq.read_table(path)
    return Record(table.to_pandas(), (table.schema.metadata or {}).get(_RUN_ID, b"").decode())


def record_changes(store: DatasetStore, raw: RawSource, run_id: str) -> ItemChanges:
    """Record the items of `raw` (what the data stage just read) and say what changed since
    the previous record (with none, every item is new)."""
    current = item_digests(raw.items)
    previous = read_record(store)
    changes = compare(previous.digests if previous else current.iloc[:0], current)
    write_record(store, current, run_id)
    return changes


def files_fingerprint(folder: Path) -> str:
    """A digest of every file's relative path, size and modification time under `folder`:
    cheap (no file is read), and it changes when a file is added, removed or rewritten."""
    entries = []
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(parent, name)
            stat = path.stat()
            entries.append(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def state_digest(digests: pd.DataFrame) -> str:
    """One digest for a whole set of item digests (in any order)."""
    pairs = sorted(zip(digests["item_source"], digests["digest"]))
    return hashlib.sha256("\n".join(f"{s}\0{d}" for s, d in pairs).encode()).hexdigest()


@dataclass(frozen=True)
class SourceCheck:
    """One dataset's source against its record. `fingerprint`: what to pass as `last` next time.
    `changes`: None when the source was not compared (`note` says why). `run_key`: set when
    items changed; the same for the same source state against the same record, so one change
    launches one run however often it is seen."""

    dataset: str
    fingerprint: str | None
    changes: ItemChanges | None = None
    run_key: str | None = None
    note: str = ""


def check_source(config: NeggenConfig, dataset: str, last: str | None) -> SourceCheck:
    """Whether `dataset`'s source items differ from what its data stage last read. `last`: the
    fingerprint this returned the previous time; while the files and the record keep it, the
    source is not read. Raises SourceError or OSError when the source cannot be read (e.g. while
    its files are copied in)."""
    store = DatasetStore(config.home, dataset)
    record = read_record(store)
    if record is None:
        return SourceCheck(dataset, last, note="no record of its source yet (materialize its data stage once)")
    folder = source_folder(config.dataset(dataset), store)
    fingerprint = hashlib.sha256(f"{record.run_id}\0{files_fingerprint(folder)}".encode()).hexdigest()
    if fingerprint == last:
        return SourceCheck(dataset, fingerprint, note="source files unchanged")
    current = item_digests(read_dataset_source(config.dataset(dataset), store).items)
    changes = compare(record.digests, current)
    if not changes:
        return SourceCheck(dataset, fingerprint, changes, note=f"items unchanged ({len(current)})")
    key = f"{dataset}-{record.run_id[:8]}-{state_digest(current)[:16]}"
    return SourceCheck(dataset, fingerprint, changes, key, note=str(changes))
