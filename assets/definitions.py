"""The Dagster Definitions: `dagster dev -m assets.definitions` (what `neggen ui` runs)."""

from __future__ import annotations

import json
import os

import dagster as dg

import assets.baselines
import assets.data
import assets.encoding
import assets.generation
import assets.model
import assets.report
from assets.partitions import dataset_partitions
from assets.progress import progress_logger
from assets.resources import NeggenResource
from pipeline.config import CONFIG_ENV
from pipeline.source_items import check_source
from pipeline.sources import SourceError

ASSET_MODULES = [assets.data, assets.generation, assets.encoding, assets.model, assets.baselines, assets.report]

all_assets = dg.load_assets_from_modules(ASSET_MODULES)

materialize_job = dg.define_asset_job(
    "materialize_dataset",
    selection=dg.AssetSelection.all(),
    description="Materialize the whole pipeline (or a selection) for one dataset partition.",
)

# A tick costs a directory walk per dataset (milliseconds) and reads a source only when its
# files changed (under half a second for Beauty); once a minute is soon enough for runs that
# take minutes.
WATCH_INTERVAL_S = 60


@dg.sensor(
    job=materialize_job,
    minimum_interval_seconds=WATCH_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Off by default. Every minute, compares each materialized dataset's source items (text and "
    "picture, by content) with those its data stage last read; when items are new, changed or removed, "
    "launches materialize_dataset for that dataset: the caches regenerate and re-encode only those items, "
    "then the models retrain. The run's tags say how many items were new, changed, reused and removed.",
)
def source_items_changed(context: dg.SensorEvaluationContext, neggen: NeggenResource) -> dg.SensorResult:
    last = json.loads(context.cursor) if context.cursor else {}
    config = neggen.config
    requests, notes = [], []
    for dataset in dataset_partitions.get_partition_keys():
        if dataset not in config.datasets:  # registered when the code was loaded, not in the config now
            continue
        try:
            check = check_source(config, dataset, last.get(dataset))
        except (SourceError, OSError) as err:  # e.g. files being copied in: the cursor keeps its old value
            context.log.warning(f"{dataset}: source not readable now, trying again at the next tick: {err}")
            notes.append(f"{dataset}: source not readable")
            continue
        last[dataset] = check.fingerprint
        if check.run_key is None:
            notes.append(f"{dataset}: {check.note}")
            continue
        context.log.info(f"{dataset}: source items {check.note}; requesting run {check.run_key}")
        requests.append(dg.RunRequest(
            run_key=check.run_key, partition_key=dataset,
            tags={f"neggen/items_{what}": str(n) for what, n in check.changes.counts().items()},
        ))  # fmt: skip
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps(last, sort_keys=True),
        skip_reason=None if requests else "; ".join(notes) or "no dataset registered",
    )  # fmt: skip


defs = dg.Definitions(
    assets=all_assets,
    jobs=[materialize_job, assets.generation.regenerate_negatives],
    schedules=[assets.generation.weekly_negatives],
    sensors=[source_items_changed],
    resources={"neggen": NeggenResource(config_path=os.environ.get(CONFIG_ENV))},
    loggers={"progress": progress_logger},
)
