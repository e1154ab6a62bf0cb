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


def _side_table_asset(name: str, build, check: str, description: str):
    """`items` and `users`: one row per kept id, built from the source and `interactions`."""

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="data",
        kinds={"parquet"},
        deps=["interactions"],
        check_specs=_specs(name, check),
        description=description,
    )
    def _asset(context: dg.AssetExecutionContext, neggen: NeggenResource):
        dataset_name = dataset_of(context)
        store = neggen.store(dataset_name)
        frame = build(neggen.raw_source(dataset_name), store.read("interactions"))
        path = store.write(name, frame)
        text = ("title", "brand", "categories", "description")
        filled = {f"with_{c}": int(frame[c].notna().sum()) for c in text if c in frame}
        images = frame["image_status"].value_counts().to_dict() if "image_status" in frame else {}
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "rows": len(frame),
                **filled,
                **{f"images_{status}": int(n) for status, n in images.items()},
            }
        )
        yield _check(store, name, check, (name,))

    return _asset


items = _side_table_asset(
    "items", build_items, "item_map_violations",
    "One row per item: ids, title, brand, categories, description, image path and status "
    "('ok', 'missing' when the file is absent, 'none' when the source has no images).",
)
users = _side_table_asset(
    "users", build_users, "user_map_violations",
    "One row per user: ids and interaction counts per split.",
)
