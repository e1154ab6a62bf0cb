"""Model stage assets: the base recommender (LightGCN), NegGen with its ablations, and the
metrics table of all of them."""

import sys
import time

import dagster as dg

from assets.partitions import dataset_of, dataset_partitions
from assets.resources import NeggenResource
from pipeline import tables
from pipeline.study import run_study
from pipeline.training import BASE_MODEL, RUN_KEY, collect_metrics, train_recommender


@dg.asset(
    name=tables.BASE_MODEL,
    partitions_def=dataset_partitions,
    group_name="model",
    kinds={"pytorch", "safetensors"},
    deps=[tables.INTERACTIONS],
    description="LightGCN (paper eq. 6-7) trained with BPR and uniform negatives to early "
    "stopping on validation Recall@20; the test split scored once at the best epoch. "
    "Weights in base_model/<run>/ (safetensors); a re-run with the same data and config "
    "reuses or resumes that run.",
)
def base_model(context: dg.AssetExecutionContext, neggen: NeggenResource) -> dg.MaterializeResult:
    dataset = dataset_of(context)
    with neggen.compute(context):
        run = train_recommender(neggen.store(dataset), tables.BASE_MODEL, BASE_MODEL,
                                neggen.config.train_config(dataset))  # fmt: skip
    context.log.info(
        f"lightgcn on {dataset}: best epoch {run.result.best_epoch} of {run.result.epochs_run}, "
        f"test recall@20 {run.result.test['mmrec']['recall@20']:.4f} (mmrec mode)"
    )
    return dg.MaterializeResult(metadata=run.metadata())


@dg.asset(
    name=tables.NEGGEN_MODEL,
    partitions_def=dataset_partitions,
    group_name="model",
    kinds={"pytorch", "safetensors", "parquet"},
    deps=[tables.BASE_MODEL, tables.TEXT_EMBEDDINGS, tables.IMAGE_EMBEDDINGS],
    description="NegGen (paper §3.3-3.4) on the trained LightGCN of each seed: the shipped `neggen`, "
    "the printed `neggen_paper` and the configured ablations (w/o NEG, w/o CF, w/o both, V / T only, "
    "direct negatives, fine-tuned base) and the λ/β/α/τ sweep, each scored at epoch 0, early-stopped on "
    "validation and tested once. "
    f"Writes `{tables.NEGGEN_METRICS}` (metric rows of every run) and `{tables.NEGGEN_HISTORY}` (per epoch, "
    "with the gradient magnitude of the negatives per modality); runs in neggen_model/<run>/.",
)
def neggen_model(context: dg.AssetExecutionContext, neggen: NeggenResource) -> dg.MaterializeResult:
    dataset = dataset_of(context)
    study = neggen.config.study_config(dataset)
    started = time.perf_counter()
    with neggen.compute(context):
        result = run_study(
            neggen.store(dataset), study, neggen.config.train_config(dataset),
            progress=sys.stderr.isatty(), log=context.log.info,
        )  # fmt: skip
    summary = result.summary()
    # One seed has no std (pivot_table drops the all-NaN column): the table is NaN, not a KeyError.
    std = summary["std"] if "std" in summary.columns.get_level_values(0) else summary["mean"] * float("nan")
    runs = result.metrics.groupby(RUN_KEY, dropna=False)
    return dg.MaterializeResult(
        metadata={
            "runs": runs.ngroups,
            "seeds": ", ".join(map(str, study.seeds)),
            "skipped_variants": dg.MetadataValue.json(result.skipped),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "test_mmrec_mean_over_seeds": dg.MetadataValue.md(summary["mean"].round(4).to_string()),
            "test_mmrec_std_over_seeds": dg.MetadataValue.md(std.round(4).to_string()),
        }
    )


@dg.asset(
    name=tables.METRICS,
    partitions_def=dataset_partitions,
    group_name="model",
    kinds={"parquet"},
    deps=[tables.BASE_MODEL, tables.NEGGEN_MODEL, tables.BASELINES],
    description="One row per (model, split, mode, metric, k, value) with run metadata "
    "(study, seed, λ/α/τ for NegGen runs, epochs, best epoch, wall time): LightGCN, every "
    "NegGen run and the multi-modal baselines. `mode` is the evaluation protocol: `mmrec` "
    "excludes training items from the ranking; `strict` also excludes validation items.",
)
def metrics(context: dg.AssetExecutionContext, neggen: NeggenResource) -> dg.MaterializeResult:
    store = neggen.store(dataset_of(context))
    table = collect_metrics(store)
    path = store.write(tables.METRICS, table)
    test = table[(table.split == "test") & (table["mode"] == "mmrec") & (table.study == "main")]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "rows": len(table),
            "models": ", ".join(sorted(table.model.unique())),
            "test_mmrec_mean_over_seeds": dg.MetadataValue.md(
                test.pivot_table(index="model", columns=["metric", "k"], values="value").round(4).to_string()
            ),
        }
    )
