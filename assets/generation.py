"""Negative generation assets (paper §3.2.1–3.2.3 and the §2.1 Direct Generation prompt).

item_descriptions → masked_descriptions → negative_descriptions, and item_descriptions →
direct_negatives. Each writes `<asset>.parquet` (one row per item: item_id, text, engine,
model, template_version, cache_hit, attempts) and `<asset>_failures.parquet` (items whose
outputs stayed invalid after the retries, with the reason, and items that failed in an earlier
stage, with that stage's reason: `upstream: <stage>: ...`). Generations are cached by content
in `<home>/<dataset>/generation_cache/`, so a re-run regenerates only what changed and a
crash loses nothing already generated.
"""

import dagster as dg
import numpy as np
import pandas as pd

from assets.partitions import dataset_of, dataset_partitions
from assets.resources import NeggenResource
from pipeline.generation import input_tables, run_generation_stage
from pipeline.llm.stages import STAGES, GenerationStage
from pipeline.tables import ITEMS


def _generation_asset(stage: GenerationStage):
    """The asset of one generation stage (pipeline/llm/stages.py): it writes the stage's table,
    after the tables the stage reads (the items' for the first)."""
    name = stage.table

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="generation",
        kinds={"parquet"},
        deps=list(input_tables(stage).values()) or [ITEMS],
        check_specs=[
            dg.AssetCheckSpec("coverage", asset=name, blocking=True,
                              description="Every item has an output or a recorded failure."),
            dg.AssetCheckSpec("validity", asset=name, blocking=True,
                              description="Every output passes its stage's validation."),
        ],
        description=stage.summary,
    )
    def _asset(context: dg.AssetExecutionContext, neggen: NeggenResource):
        dataset = dataset_of(context)
        store = neggen.store(dataset)
        run = run_generation_stage(store, name, neggen.config.generation_config(dataset))
        meta = run.meta
        context.log.info(
            f"{name}: {meta['ok']} of {meta['items']} items generated, {meta['failed']} failed "
            f"({meta['failed_here']} here, {meta['failed_upstream']} upstream; failed at: {meta['failed_at']})"
        )
        if len(run.failures):
            reasons = run.failures["reason"].str.slice(0, 160).value_counts().head(3)
            for reason, n in reasons.items():
                context.log.warning(f"{name}: {n} item(s): {reason}")
        similarity = meta.get("similarity") or {}
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(store.table_path(name))),
                **{k: v for k, v in meta.items() if isinstance(v, int | float | str)},
                **({"hardness_token_jaccard": round(similarity["mean"], 4)} if similarity else {}),
            }
        )
        items = store.read(ITEMS, columns=["item_id"])
        covered = set(run.outputs.item_id) | set(run.failures.item_id)
        missing = sorted(set(items.item_id) - covered)
        yield dg.AssetCheckResult(
            check_name="coverage", passed=not missing,
            metadata={"items": len(items), "outputs": len(run.outputs), "failures": len(run.failures),
                      "failures_here": meta["failed_here"], "failures_upstream": meta["failed_upstream"],
                      "missing": len(missing), "sample_missing": str(missing[:10])},
        )
        invalid = _invalid_outputs(store, stage, run.outputs)
        yield dg.AssetCheckResult(
            check_name="validity", passed=invalid.empty,
            metadata={"invalid": len(invalid), "sample": invalid.head(5).to_string(index=False) if len(invalid) else "none"},
        )

    return _asset


def _invalid_outputs(store, stage: GenerationStage, outputs: pd.DataFrame) -> pd.DataFrame:
    """The outputs that fail their stage's check, judged against the earlier texts it read."""
    frame = outputs[["item_id", "text"]]
    for earlier, table in input_tables(stage).items():
        frame = frame.merge(
            store.read(table, columns=["item_id", "text"]).rename(columns={"text": earlier}), on="item_id"
        )
    verdicts = [
        stage.check(row.text, getattr(row, "description", ""), getattr(row, "masked", ""))
        for row in frame.itertuples(index=False)
    ]
    reasons = pd.Series([v.reason for v in verdicts], index=frame.index, dtype=object)
    invalid = np.array([not v.ok for v in verdicts], dtype=bool)  # also right for no outputs at all
    return frame.assign(reason=reasons).loc[invalid, ["item_id", "reason"]]


generation_assets = [_generation_asset(stage) for stage in STAGES.values()]

regenerate_negatives = dg.define_asset_job(
    "regenerate_negatives",
    # Everything downstream follows: encodings, NegGen runs, metrics, report. Unchanged negatives
    # hit the caches and reuse the finished runs, so only what changed is recomputed.
    selection=dg.AssetSelection.groups("generation").downstream(),
    description="Regenerate descriptions and negatives for one dataset, then re-encode them and "
    "retrain NegGen on them (cached: only what changed runs).",
)


@dg.schedule(
    job=regenerate_negatives,
    cron_schedule="0 3 * * 1",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Weekly (Monday 03:00) regeneration of negatives for every dataset; off by default.",
)
def weekly_negatives(context: dg.ScheduleEvaluationContext):
    for dataset in dataset_partitions.get_partition_keys():
        yield dg.RunRequest(run_key=f"{dataset}-{context.scheduled_execution_time:%Y%m%d}", partition_key=dataset)
