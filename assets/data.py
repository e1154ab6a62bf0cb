"""Data stage assets: interactions (k-core, remapped, split), items, users.

Each asset writes `<home>/<dataset>/<asset>.parquet` and checks its invariants as it
materializes; the checks block downstream stages, which would be wrong otherwise.
"""


import dagster as dg

from assets.partitions import dataset_partitions, dataset_of
from pipeline.datastage import build_interactions, build_items, build_users
from pipeline.duck import connect, create_stage_view, named_query
from pipeline.resources import NeggenResource
from pipeline.storage import DatasetStore


def _check(
    store: DatasetStore, asset: str, check: str, stages: tuple[str, ...], **params
) -> dg.AssetCheckResult:
    """Run the `-- name: <check>` query of sql/checks.sql; it passes when it returns no row."""
    con = connect()
    for stage in stages:
        create_stage_view(con, stage, store.table_path(stage))
    rows = con.sql(named_query("checks.sql", check, **params)).df()
    con.close()
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=check,
        passed=rows.empty,
        metadata={"violations": len(rows), "sample": rows.head(10).to_string(index=False) if len(rows) else "none"},
    )


def _specs(asset: str, *checks: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True) for name in checks]


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="data",
    kinds={"duckdb", "parquet"},
    check_specs=_specs("interactions", "kcore_violations", "duplicate_pairs", "users_without_train"),
    description="User–item interactions: duplicates collapsed, k-core to a fixpoint, "
    "contiguous ids (source ids kept), split train/valid/test.",
)
def interactions(context: dg.AssetExecutionContext, neggen: NeggenResource):
    dataset_name = dataset_of(context)
    dataset = neggen.dataset(dataset_name)
    store = neggen.store(dataset_name)
    raw = neggen.raw_source(dataset_name)
    table = build_interactions(raw, dataset.kcore, dataset.split_seed, dataset.use_given_split)
    path = store.write("interactions", table.interactions)
    frame = table.interactions
    removed = len(raw.interactions) - table.duplicates_collapsed - len(frame)
    rounds = "\n".join(
        f"| {r.round} | {r.interactions:,} | {r.users:,} | {r.items:,} |" for r in table.kcore_rounds
    )
    split_counts = frame["split"].value_counts()
    context.log.info(
        f"{dataset_name}: {frame.user_id.nunique():,} users, {frame.item_id.nunique():,} items, "
        f"{len(frame):,} interactions ({removed:,} removed by {dataset.kcore}-core)"
    )
    yield dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "source_files": ", ".join(raw.files),
            "rows_read": len(raw.interactions),
            "duplicates_collapsed": table.duplicates_collapsed,
            "removed_by_kcore": removed,
            "kcore_k": dataset.kcore,
            "kcore_rounds": dg.MetadataValue.md(
                "| round | interactions | users | items |\n|---|---|---|---|\n" + rounds
            ),
            "users": int(frame.user_id.nunique()),
            "items": int(frame.item_id.nunique()),
            "interactions": len(frame),
            **{f"n_{name}": int(split_counts.get(name, 0)) for name in ("train", "valid", "test")},
            "split_source": table.split_source,
        }
    )
    yield _check(store, "interactions", "kcore_violations", ("interactions",), k=dataset.kcore)
    yield _check(store, "interactions", "duplicate_pairs", ("interactions",))
    yield _check(store, "interactions", "users_without_train", ("interactions",))


def _side_table(context, neggen: NeggenResource, name: str, build) -> dg.MaterializeResult:
    dataset_name = dataset_of(context)
    store = neggen.store(dataset_name)
    frame = build(neggen.raw_source(dataset_name), store.read("interactions"))
    path = store.write(name, frame)
    filled = {f"with_{c}": int(frame[c].notna().sum()) for c in ("title", "brand", "categories", "description") if c in frame}
    images = frame["image_status"].value_counts().to_dict() if "image_status" in frame else {}
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "rows": len(frame),
            **filled,
            **{f"images_{status}": int(n) for status, n in images.items()},
        }
    )


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="data",
    kinds={"parquet"},
    deps=["interactions"],
    check_specs=_specs("items", "item_map_violations"),
    description="One row per item: ids, title, brand, categories, description, image path "
    "and status ('ok', 'missing' when the file is absent, 'none' when the source has no images).",
)
def items(context: dg.AssetExecutionContext, neggen: NeggenResource):
    yield _side_table(context, neggen, "items", build_items)
    yield _check(neggen.store(dataset_of(context)), "items", "item_map_violations", ("items",))


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="data",
    kinds={"parquet"},
    deps=["interactions"],
    check_specs=_specs("users", "user_map_violations"),
    description="One row per user: ids and interaction counts per split.",
)
def users(context: dg.AssetExecutionContext, neggen: NeggenResource):
    yield _side_table(context, neggen, "users", build_users)
    yield _check(neggen.store(dataset_of(context)), "users", "user_map_violations", ("users",))
