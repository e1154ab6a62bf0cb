"""The baselines asset through Dagster on a small demo world: grid at the first seed, the chosen
setting over seeds, rows in `metrics`, runs reused on a re-materialization."""

from __future__ import annotations

import dagster as dg

from pipeline.definitions import all_assets
from pipeline.resources import NeggenResource
from pipeline.storage import DatasetStore

CONFIG = """
datasets:
  demo: {format: demo, demo: {n_users: 150, n_items: 60, mean_interactions: 10}}
train: {epochs: 5, early_stop_patience: 3, seed: 1}
encoding: {image_batch_size: 16}
baselines:
  models: [vbpr, freedom]
  seeds: [1, 2]
  grid: {vbpr: {}, freedom: {dropout: [0.8, 0.9]}}
"""
STAGES = ["interactions", "items", "users", "item_descriptions", "masked_descriptions", "negative_descriptions",
          "direct_negatives", "text_embeddings", "image_embeddings", "baselines", "metrics"]  # fmt: skip


def materialize(config_path, selection):
    return dg.materialize(
        all_assets, partition_key="demo", selection=selection,
        resources={"neggen": NeggenResource(config_path=str(config_path))},
        instance=dg.DagsterInstance.ephemeral(),
    )  # fmt: skip


def test_baselines_asset_on_demo(neggen_home, tmp_path):
    config = tmp_path / "neggen.yaml"
    config.write_text(CONFIG)
    result = materialize(config, STAGES + ["base_model"])
    assert result.success
    store = DatasetStore(neggen_home, "demo")

    metrics = store.read("metrics")
    test = metrics[(metrics.split == "test") & (metrics["mode"] == "mmrec") & (metrics.study == "main")]
    runs = test.groupby("model").seed.unique().map(sorted).to_dict()
    assert runs == {"lightgcn": [1], "vbpr": [1, 2], "freedom": [1, 2]}
    assert set(metrics[metrics.model == "freedom"].stage) == {"baselines"}
    grid = store.read("baselines_grid")
    assert sorted(grid.model) == ["freedom", "freedom", "vbpr"] and set(grid.seed) == {1}
    meta = result.asset_materializations_for_node("baselines")[0].metadata
    assert set(meta["chosen_params"].value) == {"vbpr", "freedom"}
    assert meta["chosen_params"].value["freedom"]["dropout"] in (0.8, 0.9)

    folders = sorted(p.name for p in (neggen_home / "demo" / "baselines").iterdir())
    assert len(folders) == 5  # vbpr at 2 seeds; freedom: 2 grid points at seed 1, the chosen one at seed 2
    before = store.read("baselines_metrics")
    again = materialize(config, ["baselines", "metrics"])
    assert again.success
    # Every run is reused (same keys, same stored results), none retrained.
    assert sorted(p.name for p in (neggen_home / "demo" / "baselines").iterdir()) == folders
    assert store.read("baselines_metrics").equals(before)
