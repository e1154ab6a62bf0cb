"""The `source_items_changed` sensor on a copy of the demo source (real Dagster, the CPU engines):
items added to the source reach the engines and nothing else does; an edited title regenerates
that item alone; an unchanged source launches nothing; the sensor is off by default."""

from __future__ import annotations

import ast
import gzip
import io
import json
import shutil

import dagster as dg
import numpy as np

from assets.definitions import all_assets, defs, source_items_changed
from assets.resources import NeggenResource
from pipeline.demo import CATEGORIES, COLOURS, MATERIALS, PATTERNS, SHAPES, DemoConfig, draw_item, write_demo_source
from pipeline.generation import CACHE_FOLDER
from pipeline.llm.cache import GenerationCache
from pipeline.storage import DatasetStore
from pipeline.tables import SOURCE_ITEMS as RECORD_TABLE

GENERATION = ["item_descriptions", "masked_descriptions", "negative_descriptions", "direct_negatives"]
CONFIG = """
datasets:
  demo: {{format: amazon2014, path: {source}}}
train: {{epochs: 2, early_stop_patience: 2, n_layers: 1, seed: 1}}
encoding: {{image_batch_size: 16}}
neggen: {{seeds: [1], variants: [neggen], sensitivity: {{}}, workers: 1}}
baselines: {{models: []}}
"""
META, REVIEWS = "meta_Demo.json.gz", "reviews_Demo_5.json.gz"


def read_lines(path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def write_lines(path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def add_items(source, n: int) -> list[str]:
    """Append `n` new items to an Amazon-2014 source: a meta line, a picture and 6 reviews by
    existing reviewers each (so they pass the 5-core). Every new item has a title and a
    picture of its own, so no generation of another item answers for it."""
    reviewers = sorted({json.loads(line)["reviewerID"] for line in read_lines(source / REVIEWS)})
    meta, reviews, asins = read_lines(source / META), read_lines(source / REVIEWS), []
    for k in range(n):
        asin = f"B0NEW{k:05d}"
        material, category = MATERIALS[k % len(MATERIALS)], CATEGORIES[(k + k // len(CATEGORIES)) % len(CATEGORIES)]
        meta.append(repr({
            "asin": asin, "title": f"Arkwell {material.title()} {category.title()}", "brand": "Arkwell",
            "price": 20.0 + k, "categories": [["Demo", category.title()]],
            "description": f"A {material} {category} from Arkwell.",
        }))  # fmt: skip
        picture = draw_item(list(COLOURS)[k % len(COLOURS)], PATTERNS[k % len(PATTERNS)], SHAPES[k % len(SHAPES)],
                            64, np.full(4, 0.1 * k))  # fmt: skip
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        (source / "images" / f"{asin}.png").write_bytes(buffer.getvalue())
        for j in range(6):
            reviews.append(json.dumps({
                "reviewerID": reviewers[(6 * k + j) % len(reviewers)], "asin": asin, "overall": 4.0,
                "unixReviewTime": 1_400_000_000 + 100 * k + j, "summary": "Nice", "reviewText": "Does the job.",
            }))  # fmt: skip
        asins.append(asin)
    write_lines(source / META, meta)
    write_lines(source / REVIEWS, reviews)
    return asins


def retitle(source, asin: str, title: str) -> None:
    lines = []
    for line in read_lines(source / META):
        entry = ast.literal_eval(line)
        lines.append(repr({**entry, "title": title}) if entry["asin"] == asin else line)
    write_lines(source / META, lines)


def demo_copy(tmp_path):
    """A copy of a small demo source, registered as the `demo` dataset in Amazon 2014 format."""
    world = write_demo_source(tmp_path / "demo", DemoConfig(n_users=40, n_items=20))
    source = shutil.copytree(world, tmp_path / "copy")
    config = tmp_path / "neggen.yaml"
    config.write_text(CONFIG.format(source=source))
    return source, NeggenResource(config_path=str(config))


def tick(resource, cursor):
    """One evaluation of the sensor, as the daemon runs it."""
    with dg.build_sensor_context(cursor=cursor, resources={"neggen": resource}) as context:
        return source_items_changed(context)


def launch(request, resource, instance):
    """The run the sensor requested, executed as the daemon would launch it."""
    job = defs.resolve_job_def(source_items_changed.job_name)
    return job.execute_in_process(partition_key=request.partition_key, tags=request.tags, instance=instance,
                                  resources={"neggen": resource})  # fmt: skip


def answers_stored(store) -> int:
    with GenerationCache(store.folder(CACHE_FOLDER)) as cache:
        return len(cache)


def sent_to_engine(result, store, asset) -> tuple[int, set[str]]:
    """Requests the engine answered in `result`'s run of `asset`, and the items (source ids)
    whose output was generated in that run rather than found in the cache."""
    meta = result.asset_materializations_for_node(asset)[0].metadata
    table = store.read(asset).merge(store.read("items", columns=["item_id", "item_source"]), on="item_id")
    return meta["generated"].value, set(table.loc[~table.cache_hit, "item_source"])


def test_sensor_sends_exactly_the_new_and_changed_items_to_the_engines(neggen_home, tmp_path):
    source, resource = demo_copy(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    store = DatasetStore(neggen_home, "demo")

    never = tick(resource, None)
    assert not never.run_requests and "demo: no record of its source yet" in never.skip_reason.skip_message
    assert launch(dg.RunRequest(partition_key="demo"), resource, instance).success  # the first materialization
    recorded = store.read(RECORD_TABLE)
    assert len(recorded) == 20 and recorded.digest.str.len().eq(64).all()

    # Nothing changed: nothing launched, and the next tick does not even read the source.
    quiet = tick(resource, None)
    assert not quiet.run_requests and "demo: items unchanged (20)" in quiet.skip_reason.skip_message
    assert "demo: source files unchanged" in tick(resource, quiet.cursor).skip_reason.skip_message

    added = add_items(source, 10)
    seen = tick(resource, quiet.cursor)
    [request] = seen.run_requests
    assert request.partition_key == "demo"
    assert request.tags == {"neggen/items_new": "10", "neggen/items_changed": "0", "neggen/items_reused": "20",
                            "neggen/items_removed": "0"}  # fmt: skip
    # Seen again before the run wrote its record: the same run key, so the daemon launches it once.
    assert tick(resource, quiet.cursor).run_requests[0].run_key == request.run_key

    stored_before = answers_stored(store)
    base_runs = set((neggen_home / "demo" / "base_model").iterdir())
    result = launch(request, resource, instance)
    assert result.success
    assert instance.get_run_by_id(result.run_id).tags["neggen/items_new"] == "10"
    items = result.asset_materializations_for_node("items")[0].metadata
    assert {k: items[f"source_items_{k}"].value for k in ("new", "changed", "reused", "removed")} == \
        {"new": 10, "changed": 0, "reused": 20, "removed": 0}  # fmt: skip
    for asset in GENERATION:
        assert sent_to_engine(result, store, asset) == (10, set(added)), asset
        meta = result.asset_materializations_for_node(asset)[0].metadata
        assert meta["cache_hits"].value == 20 and meta["cache_misses"].value == 10
    assert answers_stored(store) - stored_before == 4 * 10  # what the engines answered, as the cache stored it
    pictures = result.asset_materializations_for_node("image_embeddings")[0].metadata
    assert pictures["images_encoded"].value == 10 and pictures["cache_hits"].value == 20
    # New interactions: LightGCN is retrained (a new run folder), NegGen and the report follow.
    assert len(set((neggen_home / "demo" / "base_model").iterdir()) - base_runs) == 1
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"interactions", "text_embeddings", "base_model", "neggen_model", "metrics", "report"} <= done
    after = tick(resource, seen.cursor)  # the run's record holds the new items: nothing more to do
    assert not after.run_requests and "demo: items unchanged (30)" in after.skip_reason.skip_message

    # An edited title and a redrawn picture: two items changed. The retitled item's picture is
    # the same, so its picture's description comes from the cache and only its texts are
    # generated again; the redrawn one is described again, and its texts follow.
    retitled, redrawn = added[3], recorded.item_source[5]
    retitle(source, retitled, "Arkwell Travel Edition")
    draw_item("teal", "dotted", "star", 64, np.full(4, 0.5)).save(source / "images" / f"{redrawn}.png")
    [request] = tick(resource, after.cursor).run_requests
    assert (request.tags["neggen/items_new"], request.tags["neggen/items_changed"]) == ("0", "2")
    result = launch(request, resource, instance)
    assert result.success
    assert sent_to_engine(result, store, "item_descriptions") == (1, {redrawn})
    for asset in GENERATION[1:]:
        assert sent_to_engine(result, store, asset) == (2, {retitled, redrawn}), asset
    assert "Arkwell Travel Edition" in store.read("item_descriptions").text.str.cat()


def test_a_source_being_rewritten_is_looked_at_again_at_the_next_tick(neggen_home, tmp_path):
    """A source that cannot be read (here: a truncated file, as while it is copied) launches
    nothing and keeps the cursor's old value, so the next tick reads it again."""
    source, resource = demo_copy(tmp_path)
    assert dg.materialize(all_assets, partition_key="demo", selection="group:data", resources={"neggen": resource},
                          instance=dg.DagsterInstance.ephemeral()).success  # fmt: skip
    quiet = tick(resource, None)
    data = (source / REVIEWS).read_bytes()
    (source / REVIEWS).write_bytes(data[: len(data) // 2])
    broken = tick(resource, quiet.cursor)
    assert not broken.run_requests and "demo: source not readable" in broken.skip_reason.skip_message
    assert broken.cursor == quiet.cursor
    (source / REVIEWS).write_bytes(data)
    assert "demo: items unchanged (20)" in tick(resource, broken.cursor).skip_reason.skip_message


def test_the_sensor_is_off_by_default_and_launches_the_whole_pipeline():
    sensor = defs.resolve_sensor_def("source_items_changed")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == "materialize_dataset"
