"""The baselines of the paper's Table 2 (IRGAN, LightGCN with DNS(M,N) / MixGCF / DENS / AHNS, VBPR,
FREEDOM, ...): per dataset, each configured baseline's grid searched at the first seed on validation
Recall@20, the chosen setting trained at every seed and tested once (pipeline/baselines.py). Its rows
join the `metrics` table."""

import sys
import time

import dagster as dg

from assets.partitions import dataset_of, dataset_partitions
from assets.resources import NeggenResource
from pipeline import tables
from pipeline.baselines import run_baselines


@dg.asset(
    name=tables.BASELINES,
    partitions_def=dataset_partitions,
    group_name="model",
    kinds={"pytorch", "safetensors", "parquet"},
    deps=[tables.INTERACTIONS, tables.TEXT_EMBEDDINGS, tables.IMAGE_EMBEDDINGS],
    description="The Table 2 baselines configured under `baselines:` (default VBPR and FREEDOM): the "
    "multi-modal ones on the item content of the embedding stores (text: mean of the item's field vectors; "
    "visual: picture features; skipped, with the reason, on a dataset without content), IRGAN, and LightGCN "
    "trained with a hard negative sampler (lightgcn_dns, lightgcn_mixgcf, lightgcn_dens, lightgcn_ahns; "
    "params: the sampler's), which read no content. Each baseline's small grid searched at the first seed "
    "on validation Recall@20 only, the "
    "chosen setting trained at every seed to early stopping and tested once. Writes "
    f"`{tables.BASELINES_METRICS}` (metric rows, joined into `metrics`) and `{tables.BASELINES_GRID}` (every grid run); "
    "runs in baselines/<model>-<key>/, reused or resumed by key.",
)
def baselines(context: dg.AssetExecutionContext, neggen: NeggenResource) -> dg.MaterializeResult:
    dataset = dataset_of(context)
    config = neggen.config.baselines_config(dataset)
    started = time.perf_counter()
    with neggen.compute(context):
        result = run_baselines(
            neggen.store(dataset), config, neggen.config.train_config(dataset),
            progress=sys.stderr.isatty(), log=context.log.info,
        )  # fmt: skip
    metadata = {
        "models": ", ".join(config.models),
        "seeds": ", ".join(map(str, config.seeds)),
        "chosen_params": dg.MetadataValue.json(result.chosen),
        "skipped_models": dg.MetadataValue.json(result.skipped),
        "grid_runs": len(result.grid),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if len(result.metrics):
        test = result.metrics[(result.metrics.split == "test") & (result.metrics["mode"] == "mmrec")]
        test = test.assign(name=test.metric + "@" + test.k.astype(str))
        # dropna=False: with one seed every std is NaN, and pivot_table would drop the whole "std" block.
        summary = test.pivot_table(index="model", columns="name", values="value", aggfunc=["mean", "std"], dropna=False)
        metadata["test_mmrec_mean_over_seeds"] = dg.MetadataValue.md(summary["mean"].round(4).to_string())
        metadata["test_mmrec_std_over_seeds"] = dg.MetadataValue.md(summary["std"].round(4).to_string())
    return dg.MaterializeResult(metadata=metadata)
