"""A corrupt picture is recorded per item at the data stage (`image_status` `corrupt`, found by
decoding every picture) and then left out: no picture description, no visual features, and
the stages that use pictures finish. It failed `image_embeddings` as a whole before."""

from __future__ import annotations

import io

import dagster as dg
from PIL import Image

from assets.definitions import all_assets
from assets.resources import NeggenResource
from pipeline.datastage import picture_is_readable
from pipeline.demo import DemoConfig, write_demo_source
from pipeline.storage import DatasetStore


def test_corrupt_pictures_are_recorded_and_skipped(neggen_home, tmp_path):
    config = tmp_path / "neggen.yaml"
    config.write_text("datasets:\n  demo: {format: demo, demo: {n_users: 40, n_items: 20}}\n")
    store = DatasetStore(neggen_home, "demo")
    folder = write_demo_source(store.source_dir, DemoConfig(n_users=40, n_items=20))
    pictures = sorted((folder / "images").glob("*.png"))
    garbage, truncated = pictures[1], pictures[2]
    garbage.write_bytes(b"this is not a picture at all")
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
    truncated.write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    assert not picture_is_readable(garbage) and not picture_is_readable(truncated)
    assert picture_is_readable(pictures[0])

    result = dg.materialize(
        all_assets, partition_key="demo", resources={"neggen": NeggenResource(config_path=str(config))},
        selection="group:data or key:image_embeddings or key:item_descriptions",
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )  # fmt: skip
    errors = [e.event_specific_data.error.to_string() for e in result.all_events if e.is_step_failure]
    assert result.success, "\n".join(errors)

    items = store.read("items").set_index("original_id")
    corrupt = {garbage.stem, truncated.stem}
    assert set(items.index[items.image_status == "corrupt"]) == corrupt
    meta = result.asset_materializations_for_node("items")[0].metadata
    assert meta["images_corrupt"].value == 2
    bad_ids = set(items.loc[sorted(corrupt), "item_id"])
    embedded = set(store.read("image_embeddings").item_id)
    assert embedded == set(items.item_id[items.image_status == "ok"]) and not embedded & bad_ids
    meta = result.asset_materializations_for_node("image_embeddings")[0].metadata
    assert meta["items_with_corrupt_image"].value == 2
    descriptions = store.read("item_descriptions").set_index("item_id")
    assert set(descriptions.index) == set(items.item_id)  # every item is described ...
    assert (descriptions.loc[sorted(bad_ids), "engine"] == "none").all()  # ... these from their text only
    assert not descriptions.loc[sorted(bad_ids), "text"].str.contains("Image:").any()
