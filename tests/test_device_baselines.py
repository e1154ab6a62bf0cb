"""bench/device_baselines.py on a tiny home: a packed run trained off the home is the baselines stage's
run (the same test metrics to the last bit, on the CPU), landing replaces only the rows it brings, and
a pack that does not rebuild the packed graph is refused."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from neggen_model.synthetic import clustered_interactions
from pipeline.baselines import run_baselines
from pipeline.config import load_config
from pipeline.storage import DatasetStore
from pipeline.tables import TEXT_EMBEDDINGS

MODELS = ["vbpr", "irgan", "lightgcn_dns"]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A home with one dataset, `toy`: interactions and one text vector per item; a config of 2 epochs."""
    store = DatasetStore(tmp_path / "home", "toy")
    frame = clustered_interactions(n_users=120, n_items=60, n_clusters=4, per_user=10, affinity=0.6, seed=3)
    store.write("interactions", frame)
    n_items = int(frame.item_id.max()) + 1
    vectors = np.random.default_rng(0).normal(size=(n_items, 4)).astype(np.float32)
    store.write(TEXT_EMBEDDINGS, pa.table({"item_id": np.arange(n_items), "field": ["title"] * n_items,
                                           "modality": ["text"] * n_items, "version": ["original"] * n_items,
                                           "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4)}))  # fmt: skip
    config = tmp_path / "neggen.yaml"
    config.write_text(
        "home: home\ndatasets:\n  toy:\n    format: demo\n"
        "    train: {epochs: 2, embedding_size: 8, batch_size: 256}\n"
        "    baselines: {params: {irgan: {pretrain_epochs: 2}}}\n"
    )
    monkeypatch.setenv("NEGGEN_CONFIG", str(config))
    monkeypatch.delenv("NEGGEN_HOME", raising=False)
    return store


@pytest.fixture()
def device_baselines(monkeypatch):
    from tests.test_bench_imports import BENCH

    monkeypatch.syspath_prepend(str(BENCH))
    import device_baselines

    return device_baselines


def test_packed_runs_trained_off_the_home_equal_the_stage_and_land_in_the_csv(home, device_baselines, tmp_path):
    pack, runs, csv = tmp_path / "pack", tmp_path / "runs.jsonl", tmp_path / "baselines.csv"
    device_baselines.pack(argparse.Namespace(dataset="toy", models=MODELS, seeds=[11, 12], out=pack))
    device_baselines.read_pack.cache_clear()
    device_baselines.train(argparse.Namespace(pack=pack, out=runs, workers=1, device="cpu"))
    records = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [(r["model"], r["seed"]) for r in records] == [(m, s) for m in MODELS for s in (11, 12)]
    assert not [r["error"] for r in records if "error" in r]

    config = load_config()
    stage = run_baselines(home, config.baselines_config("toy").model_copy(update={"models": tuple(MODELS), "seeds": (11, 12),
                          "grid": {m: {} for m in MODELS}, "workers": 1}), config.train_config("toy"))  # fmt: skip
    for record in records:
        ours = stage.metrics[(stage.metrics.model == record["model"]) & (stage.metrics.seed == record["seed"])]
        for mode, values in record["result"]["test"].items():
            for name, value in values.items():
                metric, k = name.split("@")
                row = ours[(ours.split == "test") & (ours["mode"] == mode) & (ours.metric == metric) & (ours.k == int(k))]
                assert row.value.tolist() == [value], (record["model"], record["seed"], name)
    assert records[2]["pretrain"]["epochs_run"] == 2  # IRGAN started from its own BPR-MF run

    kept = {"dataset": "toy", "model": "vbpr", "seed": 13, "split": "test", "mode": "mmrec", "metric": "recall", "k": 20, "value": 0.5}
    pd.DataFrame([kept, kept | {"seed": 11}, kept | {"dataset": "other", "seed": 11}]).to_csv(csv, index=False)
    device_baselines.land(argparse.Namespace(runs=runs, csv=csv, record=tmp_path / "record.json"))
    table = pd.read_csv(csv)
    landed = table[(table.dataset == "toy") & (table.model == "vbpr") & (table.seed == 11)]
    assert len(landed) == len(stage.metrics[(stage.metrics.model == "vbpr") & (stage.metrics.seed == 11) & (stage.metrics.split == "test")])
    assert 0.5 not in landed.value.tolist()  # the old row of that seed is replaced ...
    assert len(table[table.value == 0.5]) == 2  # ... the other seed's and the other dataset's stay
    record = json.loads((tmp_path / "record.json").read_text())
    assert {(r["model"], r["seed"]) for r in record} == {(m, s) for m in MODELS for s in (11, 12)}
    assert all("result" not in r and r["summary"]["epochs_run"] == 2 for r in record)


def test_a_pack_that_does_not_rebuild_its_graph_is_refused(home, device_baselines, tmp_path):
    pack = tmp_path / "pack"
    device_baselines.pack(argparse.Namespace(dataset="toy", models=["lightgcn_dns"], seeds=[11], out=pack))
    frame = pd.read_parquet(pack / "interactions.parquet")
    frame.loc[frame.index[0], "split"] = "valid" if frame.split.iloc[0] == "train" else "train"
    frame.to_parquet(pack / "interactions.parquet", index=False)
    device_baselines.read_pack.cache_clear()
    with pytest.raises(ValueError, match="does not rebuild the training graph"):
        device_baselines.read_pack(pack)
