"""Model stage assets: the base recommender (LightGCN) and the metrics table."""

import dagster as dg

from assets.partitions import dataset_of, dataset_partitions
from pipeline.resources import NeggenResource
from pipeline.training import METRICS_STAGE, collect_metrics, train_recommender


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="model",
    kinds={"pytorch", "safetensors"},
    deps=["interactions"],
    description="LightGCN (paper eq. 6-7) trained with BPR and uniform negatives to early "
    "stopping on validation Recall@20; the test split scored once at the best epoch. "
    "Weights in base_model/<run>/ (safetensors); a re-run with the same data and config "
    "reuses or resumes that run.",
)
def base_model(context: dg.AssetExecutionContext, neggen: NeggenResource) -> dg.MaterializeResult:
    dataset = dataset_of(context)
    run = train_recommender(neggen.store(dataset), "base_model", "lightgcn", neggen.config.train_config(dataset))
    context.log.info(
        f"lightgcn on {dataset}: best epoch {run.result.best_epoch} of {run.result.epochs_run}, "
        f"test recall@20 {run.result.test['mmrec']['recall@20']:.4f} (mmrec mode)"
    )
    return dg.MaterializeResult(metadata=run.metadata())


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="model",
    kinds={"parquet"},
    deps=["base_model"],
    description="One row per (model, split, mode, metric, k, value) with run metadata "
    "(seed, epochs, best epoch, wall time). `mode` is the evaluation protocol: `mmrec` "
    "excludes training items from the ranking; `strict` also excludes validation items.",
)
def metrics(context: dg.AssetExecutionContext, neggen: NeggenResource) -> dg.MaterializeResult:
    store = neggen.store(dataset_of(context))
    table = collect_metrics(store)
    path = store.write(METRICS_STAGE, table)
    test = table[(table.split == "test") & (table["mode"] == "mmrec")]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "rows": len(table),
            "models": ", ".join(sorted(table.model.unique())),
            "test_mmrec": dg.MetadataValue.md(
                test.pivot_table(index="model", columns=["metric", "k"], values="value").round(4).to_string()
            ),
        }
    )
