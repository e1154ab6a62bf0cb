"""Attribute encoding assets (paper §3.2.4, eq. 8-9): the text and image embedding stores.

`text_embeddings` embeds each labelled field of the original (e_m) and generated (e_m*)
descriptions; `image_embeddings` holds each picture's visual features. Both are cached by
content in `<home>/<dataset>/embedding_cache/` (see pipeline/encoding.py).
"""

import dagster as dg

from assets.partitions import dataset_of, dataset_partitions
from assets.resources import NeggenResource
from pipeline import tables
from pipeline.encoding import EncodingRun, build_image_embeddings, build_text_embeddings
from pipeline.study import hardness_table

_FINITE = "No vector holds NaN or inf."
_DIMS = "All vectors come from one encoder and have one dimension."


def _results(context: dg.AssetExecutionContext, asset: str, path, run: EncodingRun):
    meta = run.meta
    context.log.info(
        f"{asset}: {meta['rows']:,} rows, dim {meta['dim']}, {meta.get('cache_hits', 0):,} cache hits, "
        f"{meta['seconds']:.1f}s ({meta['encoder']})"
    )
    yield dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(path)), **meta})
    for check in run.checks:
        yield dg.AssetCheckResult(check_name=check.name, passed=check.passed, metadata=check.metadata)


@dg.asset(
    name=tables.TEXT_EMBEDDINGS,
    partitions_def=dataset_partitions,
    group_name="encoding",
    kinds={"pytorch", "parquet"},
    deps=[tables.ITEM_DESCRIPTIONS, tables.NEGATIVE_DESCRIPTIONS, tables.DIRECT_NEGATIVES],
    check_specs=[
        dg.AssetCheckSpec("original_and_generated", asset=tables.TEXT_EMBEDDINGS, blocking=True,
                          description="Every item has an original and a generated vector for each field it "
                                      "has, or the generation stage recorded it as failed."),
        dg.AssetCheckSpec("finite", asset=tables.TEXT_EMBEDDINGS, blocking=True, description=_FINITE),
        dg.AssetCheckSpec("dims", asset=tables.TEXT_EMBEDDINGS, blocking=True, description=_DIMS),
    ],  # fmt: skip
    description="§3.2.4 eq. 8-9: each field (title, brand, categories, image, description) of each item's "
    "original description and of its negatives embedded by the text encoder; one row per "
    "(item_id, field, version), version original / generated / direct.",
)
def text_embeddings(context: dg.AssetExecutionContext, neggen: NeggenResource):
    dataset = dataset_of(context)
    store = neggen.store(dataset)
    with neggen.compute(context):
        run = build_text_embeddings(store, neggen.config.encoding_config(dataset))
    yield from _results(context, tables.TEXT_EMBEDDINGS, store.table_path(tables.TEXT_EMBEDDINGS), run)


@dg.asset(
    name=tables.IMAGE_EMBEDDINGS,
    partitions_def=dataset_partitions,
    group_name="encoding",
    kinds={"pytorch", "parquet"},
    deps=[tables.ITEMS],
    check_specs=[
        dg.AssetCheckSpec("finite", asset=tables.IMAGE_EMBEDDINGS, blocking=True, description=_FINITE),
        dg.AssetCheckSpec("dims", asset=tables.IMAGE_EMBEDDINGS, blocking=True, description=_DIMS),
    ],
    description="The visual features of each item's picture (EfficientNet-Lite0 by default, or the "
    "dataset's precomputed image_feat.npy); items without a picture have no row.",
)
def image_embeddings(context: dg.AssetExecutionContext, neggen: NeggenResource):
    dataset = dataset_of(context)
    store = neggen.store(dataset)
    with neggen.compute(context):
        run = build_image_embeddings(store, neggen.config.encoding_config(dataset), neggen.dataset(dataset).path)
    yield from _results(context, tables.IMAGE_EMBEDDINGS, store.table_path(tables.IMAGE_EMBEDDINGS), run)


@dg.asset(
    name=tables.NEGATIVE_HARDNESS,
    partitions_def=dataset_partitions,
    group_name="encoding",
    kinds={"parquet"},
    deps=[tables.TEXT_EMBEDDINGS, tables.IMAGE_EMBEDDINGS],
    description="How hard each item's negative is, per negative source (generated, direct): `hardness` = "
    "cosine of the item's regenerated attribute encodings before and after (1 = unchanged), `cohesion` = "
    "cosine of the negative with its nearest other real item, `changed_tokens` = attributes changed. "
    "Items whose generation failed keep their original tokens (changed_tokens 0).",
)
def negative_hardness(context: dg.AssetExecutionContext, neggen: NeggenResource) -> dg.MaterializeResult:
    store = neggen.store(dataset_of(context))
    table = hardness_table(store)
    path = store.write(tables.NEGATIVE_HARDNESS, table)
    summary = table.groupby("source")[["hardness", "cohesion", "changed_tokens"]].mean().round(4)
    unchanged = table[table.changed_tokens == 0].groupby("source").size().reindex(summary.index, fill_value=0)
    context.log.info(f"negative hardness (means per source):\n{summary.to_string()}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "means": dg.MetadataValue.md(summary.to_string()),
            "items_without_a_changed_negative": dg.MetadataValue.json(unchanged.to_dict()),
        }
    )
