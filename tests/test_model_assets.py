"""base_model and metrics through Dagster on the demo world (short training)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from assets.definitions import all_assets
from assets.resources import NeggenResource
from pipeline.storage import DatasetStore


CF_STAGE = ["interactions", "items", "users", "base_model", "metrics"]


def materialize(config_path, selection=CF_STAGE):
    return dg.materialize(
        all_assets, partition_key="demo", selection=selection,
        resources={"neggen": NeggenResource(config_path=str(config_path))},
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_base_model_and_metrics_on_demo(neggen_home, tmp_path):
    config = tmp_path / "neggen.yaml"
    config.write_text("train: {epochs: 4, n_layers: 2, eval_batch_size: 512}\n")
    result = materialize(config)
    assert result.success
    store = DatasetStore(neggen_home, "demo")
    metrics = store.read("metrics")
    assert set(metrics.columns) >= {"model", "split", "mode", "metric", "k", "value", "seed", "epochs_run", "best_epoch", "wall_seconds"}
    test = metrics[metrics.split == "test"]
    assert set(zip(test["mode"], test.metric, test.k)) == {
        (m, metric, k) for m in ("mmrec", "strict") for metric in ("recall", "ndcg") for k in (10, 20)
    }
    assert (metrics.epochs_run == 4).all() and metrics.best_epoch.between(1, 4).all()
    assert metrics.value.between(0, 1).all() and (metrics.model == "lightgcn").all()
    history = store.read("base_model_history")
    assert list(history.epoch) == [1, 2, 3, 4] and history["valid_recall@20"].notna().all()
    # The metrics table agrees with what the run recorded as metadata.
    meta = result.asset_materializations_for_node("base_model")[0].metadata
    row = test[(test["mode"] == "mmrec") & (test.metric == "recall") & (test.k == 20)].value.item()
    assert abs(meta["test_mmrec_recall@20"].value - row) < 1e-5

    # Same data and config: the finished run is reused, not retrained.
    again = materialize(config, selection=["base_model"])
    meta_again = again.asset_materializations_for_node("base_model")[0].metadata
    assert meta_again["run_dir"].value == meta["run_dir"].value
    assert meta_again["wall_seconds"].value == meta["wall_seconds"].value

    # Another config: a new run folder.
    config.write_text("train: {epochs: 2, n_layers: 2, eval_batch_size: 512}\n")
    third = materialize(config, selection=["base_model", "metrics"])
    assert third.asset_materializations_for_node("base_model")[0].metadata["run_dir"].value != meta["run_dir"].value
    assert (store.read("metrics").epochs_run == 2).all()
    assert pd.Series(sorted(p.name for p in (neggen_home / "demo" / "base_model").iterdir())).str.startswith("lightgcn-").sum() == 2
