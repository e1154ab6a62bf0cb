"""Glue between the dataset stores and `pipeline.llm`: run one generation asset's stage."""

from __future__ import annotations

import sys

from pipeline.llm.cache import GenerationCache
from pipeline.llm.config import GenerationConfig
from pipeline.llm.engines import build_engine
from pipeline.llm.run import StageRun, generate_stage, join_texts
from pipeline.storage import DatasetStore

STAGE_OF_ASSET = {
    "item_descriptions": "description",
    "masked_descriptions": "masked",
    "negative_descriptions": "negative",
    "direct_negatives": "direct",
}
# Earlier outputs each stage reads, as join_texts() arguments.
INPUTS_OF_ASSET = {
    "item_descriptions": {},
    "masked_descriptions": {"description": "item_descriptions"},
    "negative_descriptions": {"description": "item_descriptions", "masked": "masked_descriptions"},
    "direct_negatives": {"description": "item_descriptions"},
}
CACHE_FOLDER = "generation_cache"


def run_generation_stage(store: DatasetStore, asset: str, config: GenerationConfig) -> StageRun:
    """Generate `asset` for every item (cache first), write it and its failures table."""
    stage = STAGE_OF_ASSET[asset]
    items = store.read("items")
    earlier = {arg: store.read(table) for arg, table in INPUTS_OF_ASSET[asset].items()}
    engine_config = config.describer if stage == "description" else config.generator
    # Closing the engine frees what it holds (a GPU model, HTTP connections) as soon as the stage ends.
    with build_engine(engine_config, catalogue=items) as engine, GenerationCache(store.folder(CACHE_FOLDER)) as cache:
        run = generate_stage(
            join_texts(items, **earlier), stage, engine, cache,
            sampling=config.sampling, batch_size=config.batch_size, max_attempts=config.max_attempts,
            keep_source_description=config.keep_source_description, progress=sys.stderr.isatty(),
        )
    store.write(asset, run.outputs)
    store.write(f"{asset}_failures", run.failures)
    return run
