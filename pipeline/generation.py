"""Glue between the dataset stores and `pipeline.llm`: run one generation asset's stage.

Every item ends a stage either generated (`<asset>.parquet`) or recorded as failed
(`<asset>_failures.parquet`, with the reason). An item that failed in an earlier stage has no
input here: it is recorded as failed in this stage too, with the reason it failed upstream
(`upstream: description: engine error: HTTP 500 ...`) and `failed_at` naming that stage. So each
stage covers every item, and a stage whose input is empty finishes with every item failed.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from pipeline.config.generation import EngineConfig, GenerationConfig
from pipeline.llm.cache import GenerationCache
from pipeline.llm.engines import build_engine
from pipeline.llm.engines.base import Engine
from pipeline.llm.run import FAILURE_COLUMNS, StageRun, generate_stage, join_texts
from pipeline.llm.stages import STAGE_OF_TABLE, STAGES, GenerationStage
from pipeline.storage import DatasetStore
from pipeline.tables import ITEMS, failures_table

CACHE_FOLDER = "generation_cache"
UPSTREAM_PREFIX = "upstream: "

# Column types of the written tables, so that an empty table keeps them (and joins later).
OUTPUT_SCHEMA = pa.schema([
    ("item_id", pa.int64()), ("text", pa.string()), ("engine", pa.string()), ("model", pa.string()),
    ("template_version", pa.int64()), ("cache_hit", pa.bool_()), ("attempts", pa.int64()),
])  # fmt: skip
FAILURE_SCHEMA = pa.schema([
    ("item_id", pa.int64()), ("stage", pa.string()), ("reason", pa.string()), ("last_output", pa.string()),
    ("attempts", pa.int64()), ("failed_at", pa.string()),
])  # fmt: skip


def input_tables(stage: GenerationStage) -> dict[str, str]:
    """The earlier tables `stage` reads, keyed by join_texts() argument (the earlier stage's name)."""
    return {earlier: STAGES[earlier].table for earlier in stage.reads}


def upstream_failures(
    store: DatasetStore, asset: str, items: pd.DataFrame, earlier: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """FAILURE_COLUMNS rows for the items that lack an input of `asset` (`earlier`: the earlier
    outputs it reads, as join_texts() arguments) because an earlier stage did not generate them:
    that stage's reason, prefixed `upstream: <stage>: ` (kept as it is when it already names an
    upstream stage)."""
    stage = STAGE_OF_TABLE[asset]
    tables = input_tables(stage)
    have = {arg: set(frame["item_id"]) for arg, frame in earlier.items()}
    lacking = {item_id: [arg for arg in tables if item_id not in have[arg]] for item_id in items["item_id"]}
    lacking = {item_id: args for item_id, args in lacking.items() if args}
    if not lacking:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    recorded: dict[str, dict] = {}  # per earlier table: item_id -> its failure row
    for arg, table in tables.items():
        path = store.table_path(failures_table(table))
        recorded[arg] = {row["item_id"]: row for row in store.read(failures_table(table)).to_dict("records")} \
            if path.exists() else {}  # fmt: skip
    rows = []
    for item_id, args in lacking.items():
        row = next((recorded[arg][item_id] for arg in args if item_id in recorded[arg]), None)
        if row is None:  # not recorded (a table from before failures were recorded downstream)
            failed_at, reason = args[0], f"{UPSTREAM_PREFIX}{args[0]}: {tables[args[0]]} has no output for this item"
        else:
            failed_at = row.get("failed_at") or row["stage"]
            reason = str(row["reason"])
            if not reason.startswith(UPSTREAM_PREFIX):
                reason = f"{UPSTREAM_PREFIX}{failed_at}: {reason}"
        rows.append({"item_id": item_id, "stage": stage.name, "reason": reason, "last_output": None, "attempts": 0,
                     "failed_at": failed_at})  # fmt: skip
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


class _NothingToGenerate(Engine):
    """Stands in for the configured engine when no item reaches the stage (every item failed
    upstream): nothing is loaded or contacted."""

    def __init__(self, config: EngineConfig):
        super().__init__(getattr(config, "model", None) or config.kind)
        self.kind = config.kind

    def generate(self, requests):
        raise AssertionError("no request reaches an engine when no item reaches the stage")


def _generate(store: DatasetStore, asset: str, config: GenerationConfig, items: pd.DataFrame,
              inputs: pd.DataFrame) -> StageRun:  # fmt: skip
    """`asset`'s stage over `inputs` through the dataset's generation cache; the engine is built
    on the whole catalogue `items` (the catalog engine's vocabulary), whichever items are generated."""
    stage = STAGE_OF_TABLE[asset]
    engine_config = getattr(config, stage.engine)
    # Closing the engine frees what it holds (a GPU model, HTTP connections) as soon as the stage ends.
    engine = build_engine(engine_config, catalogue=items) if len(inputs) else _NothingToGenerate(engine_config)
    with engine, GenerationCache(store.folder(CACHE_FOLDER)) as cache:
        return generate_stage(
            inputs, stage.name, engine, cache,
            sampling=config.sampling, batch_size=config.batch_size, max_attempts=config.max_attempts,
            keep_source_description=config.keep_source_description, progress=sys.stderr.isatty(),
            prompt_mode=config.generator_prompt_mode if stage.engine == "generator" else "free_text",
        )


def run_generation_stage(store: DatasetStore, asset: str, config: GenerationConfig) -> StageRun:
    """Generate `asset` for every item (cache first), write it and its failures table; items
    that failed upstream are recorded as failures here too (see the module docstring)."""
    items = store.read(ITEMS)
    earlier = {arg: store.read(table) for arg, table in input_tables(STAGE_OF_TABLE[asset]).items()}
    upstream = upstream_failures(store, asset, items, earlier)
    run = _generate(store, asset, config, items, join_texts(items, **earlier))
    failures = pd.concat([f for f in (upstream, run.failures) if len(f)], ignore_index=True) \
        if len(upstream) or len(run.failures) else run.failures  # fmt: skip
    failures = failures.sort_values("item_id", kind="stable", ignore_index=True)
    where = Counter(failures["failed_at"])
    meta = {
        **run.meta,
        "items": len(items),
        "failed": len(failures),
        "failed_here": len(run.failures),
        "failed_upstream": len(upstream),
        "failed_at": ", ".join(f"{name}: {n}" for name, n in sorted(where.items())) or "none",
    }
    store.write(asset, _typed(run.outputs, OUTPUT_SCHEMA))
    store.write(failures_table(asset), _typed(failures, FAILURE_SCHEMA))
    return StageRun(run.outputs, failures, meta)


def _typed(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """`frame` as Arrow with `schema`'s types for its columns (others, e.g. image_text, as strings)."""
    fields = [schema.field(c) if c in schema.names else pa.field(c, pa.string()) for c in frame.columns]
    return pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the items whose item_id % count == index."""

    index: int
    count: int

    def __post_init__(self):
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < N and N >= 1, e.g. 0/2 and 1/2")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`i/N`, e.g. `0/4`."""
        index, slash, count = text.partition("/")
        if not (slash and index.strip().isdecimal() and count.strip().isdecimal()):
            raise ValueError(f"shard {text!r}: write i/N with whole numbers 0 <= i < N, e.g. 0/2 and 1/2")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def generate_shard(store: DatasetStore, config: GenerationConfig, shard: Shard = Shard(0, 1)) -> dict[str, dict]:
    """Run every generation stage for `shard`'s items into the dataset's generation cache,
    writing no table: a later materialization of the generation assets finds the shard's
    generations cached. Shards compose (the cache is keyed by request content, and SQLite
    lets several processes write it), so N processes, one per shard, generate the whole
    dataset in parallel. Returns each asset's run metadata."""
    items = store.read(ITEMS)
    mine = items[items["item_id"] % shard.count == shard.index]
    outputs: dict[str, pd.DataFrame] = {}
    meta: dict[str, dict] = {}
    for asset, stage in STAGE_OF_TABLE.items():  # in order: each stage's inputs are generated before it
        earlier = {arg: outputs[table] for arg, table in input_tables(stage).items()}
        run = _generate(store, asset, config, items, join_texts(mine, **earlier))
        outputs[asset], meta[asset] = run.outputs, run.meta
    return meta
