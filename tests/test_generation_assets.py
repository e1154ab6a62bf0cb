"""Generation assets through Dagster on the demo world (catalog + visual engines)."""

from __future__ import annotations

import dagster as dg

from assets.definitions import all_assets, defs
from assets.resources import NeggenResource
from pipeline.storage import DatasetStore

GENERATION = ["item_descriptions", "masked_descriptions", "negative_descriptions", "direct_negatives"]


def run(selection):
    return dg.materialize(
        all_assets, partition_key="demo", selection=selection,
        resources={"neggen": NeggenResource()}, instance=dg.DagsterInstance.ephemeral(),
    )


def test_generation_stage_on_demo_is_complete_valid_and_cached(neggen_home):
    first = run("group:data or group:generation")
    assert first.success
    checks = [c for c in first.get_asset_check_evaluations() if c.asset_key.to_user_string() in GENERATION]
    assert len(checks) == 8 and all(c.passed for c in checks)

    store = DatasetStore(neggen_home, "demo")
    items = store.read("items")
    tables = {name: store.read(name).set_index("item_id") for name in GENERATION}
    for name, table in tables.items():
        assert set(table.index) == set(items.item_id), name
        assert {"text", "engine", "model", "template_version", "cache_hit", "attempts"} <= set(table.columns)
    assert tables["masked_descriptions"].text.str.contains(r"\[MASK\]", regex=True).all()
    negatives = tables["negative_descriptions"].text
    assert not negatives.str.contains(r"\[MASK\]", regex=True).any()
    assert (negatives != tables["item_descriptions"].text.reindex(negatives.index)).all()
    # The picture's description is labelled as feature-derived, and merged with the metadata.
    first_item = tables["item_descriptions"].text.iloc[0]
    assert "[from image features]" in first_item and items.title.iloc[0] in first_item

    meta = first.asset_materializations_for_node("negative_descriptions")[0].metadata
    # Items whose masked description and source are both identical (same attributes and picture
    # cues) share one generation: the cache answers the repeats within the run.
    distinct = tables["masked_descriptions"].text.str.cat(tables["item_descriptions"].text, sep="\x1f").nunique()
    assert meta["cache_misses"].value == distinct and meta["cache_hits"].value == len(items) - distinct
    assert 0 < meta["hardness_token_jaccard"].value < 1

    again = run(GENERATION)
    meta = again.asset_materializations_for_node("negative_descriptions")[0].metadata
    assert meta["cache_hits"].value == len(items) and meta["cache_misses"].value == 0
    assert store.read("negative_descriptions").text.tolist() == negatives.tolist()


def test_regeneration_job_and_schedule_are_registered_and_off_by_default():
    job = defs.resolve_job_def("regenerate_negatives")
    assert job.partitions_def is not None
    keys = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert {"negative_descriptions", "text_embeddings", "neggen_model", "metrics", "report"} <= keys
    assert not keys & {"interactions", "base_model", "image_embeddings"}
    schedule = defs.resolve_schedule_def("weekly_negatives")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "regenerate_negatives"
