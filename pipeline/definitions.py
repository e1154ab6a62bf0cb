"""The Dagster Definitions: `dagster dev -m pipeline.definitions` (what `neggen ui` runs)."""

from __future__ import annotations

import os

import dagster as dg

import assets.baselines
import assets.data
import assets.encoding
import assets.generation
import assets.model
import assets.report
from pipeline.config import CONFIG_ENV
from pipeline.progress import progress_logger
from pipeline.resources import NeggenResource

ASSET_MODULES = [assets.data, assets.generation, assets.encoding, assets.model, assets.baselines, assets.report]

all_assets = dg.load_assets_from_modules(ASSET_MODULES)

materialize_job = dg.define_asset_job(
    "materialize_dataset",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole pipeline (or a selection) for one dataset partition.",
)

defs = dg.Definitions(
    assets=all_assets,
    jobs=[materialize_job, assets.generation.regenerate_negatives],
    schedules=[assets.generation.weekly_negatives],
    resources={"neggen": NeggenResource(config_path=os.environ.get(CONFIG_ENV))},
    loggers={"progress": progress_logger},
)
