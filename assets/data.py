"""Data stage assets: interactions (k-core, remapped, split), items, users.

Each asset checks its invariants on the table it built, then writes
`<home>/<dataset>/<asset>.parquet` only if every check passed: a failed check stops the step,
leaves the stage's earlier file (if any) as it was, and blocks the stages downstream.
"""


import dagster as dg
import pandas as pd
import pyarrow as pa

from assets.partitions import dataset_partitions, dataset_of
from assets.resources import NeggenResource
from pipeline import tables
from pipeline.datastage import build_interactions, build_items, build_users
from pipeline.duck import connect, create_stage_view, named_query
from pipeline.source_items import record_changes
from pipeline.storage import DatasetStore


def _check(
    store: DatasetStore, asset: str, check: str, stages: tuple[str, ...], **params
) -> dg.AssetCheckResult:
    """Run the `-- name: <check>` query of sql/checks.sql over written stages."""
    con = connect()
    for stage in stages:
        create_stage_view(con, stage, store.table_path(stage))
    return _evaluate(con, asset, check, **params)


def _check_tables(tables: dict[str, pd.DataFrame], asset: str, check: str, **params) -> dg.AssetCheckResult:
    """The same over tables not written yet, each seen by the query under its stage's name."""
    con = connect()
    for stage, frame in tables.items():
        con.register(stage, pa.Table.from_pandas(frame, preserve_index=False))
    return _evaluate(con, asset, check, **params)


def _evaluate(con, asset: str, check: str, **params) -> dg.AssetCheckResult:
    """A check passes when its query returns no row."""
    rows = con.sql(named_query("checks.sql", check, **params)).df()
    con.close()
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=check,
        passed=rows.empty,
        metadata={"violations": len(rows), "sample": rows.head(10).to_string(index=False) if len(rows) else "none"},
    )


class BlockingCheckFailed(Exception):
    """A blocking check rejected a table before it was written."""


def _validated(asset: str, path, checks: list[dg.AssetCheckResult]):
    """Yield the checks; when one fails, stop the step: the table is not written (a stage's
    file on disk has always passed its checks), and nothing downstream runs."""
    yield from checks
    failed = [c for c in checks if not c.passed]
    if failed:
        detail = "; ".join(f"{c.check_name}: {getattr(c.metadata['violations'], 'value', c.metadata['violations'])} violation(s)" for c in failed)
        raise BlockingCheckFailed(
            f"{asset}: blocking check failed ({detail}); {path} was not written "
            "(details: the check's metadata in neggen ui)"
        )


def _specs(asset: str, *checks: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True) for name in checks]


@dg.asset(
    partitions_def=dataset_partitions,
    group_name="data",
    kinds={"duckdb", "parquet"},
    name=tables.INTERACTIONS,
    check_specs=_specs(tables.INTERACTIONS, "kcore_violations", "duplicate_pairs", "users_without_train"),
    description="User–item interactions: duplicates collapsed, k-core to a fixpoint, "
    "contiguous ids (source ids kept), split train/valid/test.",
)
def interactions(context: dg.AssetExecutionContext, neggen: NeggenResource):
    dataset_name = dataset_of(context)
    dataset = neggen.dataset(dataset_name)
    store = neggen.store(dataset_name)
    raw = neggen.raw_source(dataset_name)
    table = build_interactions(raw, dataset.kcore, dataset.split_seed, dataset.use_given_split)
    frame = table.interactions
    checked = {tables.INTERACTIONS: frame}
    yield from _validated(tables.INTERACTIONS, store.table_path(tables.INTERACTIONS), [
        _check_tables(checked, tables.INTERACTIONS, "kcore_violations", k=dataset.kcore),
        _check_tables(checked, tables.INTERACTIONS, "duplicate_pairs"),
        _check_tables(checked, tables.INTERACTIONS, "users_without_train"),
    ])  # fmt: skip
    path = store.write(tables.INTERACTIONS, frame)
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


def _side_table_asset(name: str, build, check: str, description: str, record_source: bool = False):
    """`items` and `users`: one row per kept id, built from the source and `interactions`.
    `record_source`: also record the source's item digests (what the `source_items_changed`
    sensor compares a source with) and say in the metadata what changed since the last record."""

    @dg.asset(
        name=name,
        partitions_def=dataset_partitions,
        group_name="data",
        kinds={"parquet"},
        deps=[tables.INTERACTIONS],
        check_specs=_specs(name, check),
        description=description,
    )
    def _asset(context: dg.AssetExecutionContext, neggen: NeggenResource):
        dataset_name = dataset_of(context)
        store = neggen.store(dataset_name)
        raw = neggen.raw_source(dataset_name)
        frame = build(raw, store.read(tables.INTERACTIONS))
        yield from _validated(name, store.table_path(name), [_check_tables({name: frame}, name, check)])
        path = store.write(name, frame)
        source = {}
        if record_source:
            changes = record_changes(store, raw, context.run.run_id)
            context.log.info(f"{dataset_name}: source items since the last record: {changes}")
            source = {f"source_items_{what}": n for what, n in changes.counts().items()}
        text = ("title", "brand", "categories", "description")
        filled = {f"with_{c}": int(frame[c].notna().sum()) for c in text if c in frame}
        images = frame["image_status"].value_counts().to_dict() if "image_status" in frame else {}
        yield dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "rows": len(frame),
                **filled,
                **{f"images_{status}": int(n) for status, n in images.items()},
                **source,
            }
        )

    return _asset


items = _side_table_asset(
    tables.ITEMS, build_items, "item_map_violations",
    "One row per item: ids, title, brand, categories, description, image path and status "
    "('ok', 'missing' when the file is absent, 'corrupt' when it does not decode as a picture, "
    "'none' when the source has no images). Also records the source's item digests in source_items.parquet.",
    record_source=True,
)
users = _side_table_asset(
    tables.USERS, build_users, "user_map_violations",
    "One row per user: ids and interaction counts per split.",
)
