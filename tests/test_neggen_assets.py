"""The whole pipeline through Dagster on a small demo world: data → generation → encoding →
LightGCN → NegGen (variants over seeds, a sweep point) → metrics → report."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.definitions import all_assets
from assets.resources import NeggenResource
from pipeline.config import ConfigError, load_config
from pipeline.storage import DatasetStore

CONFIG = """
datasets:
  demo: {format: demo, demo: {n_users: 150, n_items: 60, mean_interactions: 10}}
train: {epochs: 6, early_stop_patience: 3, n_layers: 2, seed: 1}
encoding: {image_batch_size: 16}
neggen:
  seeds: [1, 2]
  variants: [neggen, neggen_paper, wo_neg, wo_cf, visual_only, direct]
  sensitivity: {score_weight: [0.0]}
baselines: {models: []}  # tests/test_baselines_assets.py materializes them
"""


def materialize(config_path, selection=None):
    return dg.materialize(
        all_assets, partition_key="demo", selection=selection,
        resources={"neggen": NeggenResource(config_path=str(config_path))},
        instance=dg.DagsterInstance.ephemeral(),
    )  # fmt: skip


def test_neggen_study_on_demo(neggen_home, tmp_path):
    config = tmp_path / "neggen.yaml"
    config.write_text(CONFIG)
    result = materialize(config)
    assert result.success
    store = DatasetStore(neggen_home, "demo")

    metrics = store.read("metrics")
    main = metrics[(metrics.study == "main") & (metrics.split == "test") & (metrics["mode"] == "mmrec")]
    runs = main.groupby("model").seed.unique().map(sorted).to_dict()
    assert runs == {m: [1, 2] for m in ("lightgcn", "neggen", "neggen_paper", "wo_neg", "wo_cf", "visual_only")}
    sweep = metrics[metrics.study == "sensitivity"]
    assert set(sweep.score_weight) == {0.0} and set(sweep.seed) == {1}
    assert (metrics.value.between(0, 1)).all()
    neggen_rows = metrics[metrics.model == "neggen"]
    assert set(neggen_rows.counterfactual_weight) == {3.0} and set(neggen_rows.align_weight) == {0.0}
    paper_rows = metrics[metrics.model == "neggen_paper"]
    assert set(paper_rows.score_weight) == {0.4} and set(paper_rows.align_weight) == {0.01}

    history = store.read("neggen_history")
    full = history[(history.model == "neggen") & (history.study == "main")]
    assert (full.groupby("seed").epoch.min() == 0).all()  # every NegGen run is scored before training
    # The linear encoder starts at 0: gradients reach the negatives from its second step on.
    trained = full[full.epoch > 1]
    assert (trained.grad_negative_text > 0).all() and (trained.grad_negative_visual > 0).all()
    assert history[history.model == "lightgcn"].grad_negative_text.isna().all()

    hardness = store.read("negative_hardness")
    generated = hardness[hardness.source == "generated"]
    n_items = len(store.read("items"))
    assert sorted(generated.item_id) == list(range(n_items))
    assert generated.hardness.between(-1, 1).all() and (generated.changed_tokens > 0).all()
    assert (generated.cohesion <= 1 + 1e-6).all()

    report = (neggen_home / "demo" / "report" / "report.md").read_text()
    assert "NegGen" in report and "LightGCN" in report
    meta = result.asset_materializations_for_node("neggen_model")[0].metadata
    assert meta["runs"].value == 2 * 6 + 1
    # The catalogue engine's direct negatives are its generated ones: that run is not repeated.
    assert "equal the generated" in meta["skipped_variants"].value["direct"]

    # A second materialization reuses every finished run: same folders, same numbers.
    folders = sorted(p.name for p in (neggen_home / "demo" / "neggen_model").iterdir())
    again = materialize(config, selection=["neggen_model", "metrics"])
    assert again.success
    assert sorted(p.name for p in (neggen_home / "demo" / "neggen_model").iterdir()) == folders
    assert store.read("metrics").sort_values(list(metrics.columns[:10])).value.tolist() == \
        metrics.sort_values(list(metrics.columns[:10])).value.tolist()  # fmt: skip


def test_study_config_merges_per_dataset_and_names_bad_keys(tmp_path):
    config = tmp_path / "neggen.yaml"
    config.write_text(
        "neggen: {seeds: [1, 2, 3], model: {score_weight: 0.6}}\n"
        "datasets:\n  demo: {format: demo, neggen: {model: {temperature: 0.1}, variants: [neggen]}}\n"
    )
    study = load_config(config).study_config("demo")
    assert study.seeds == (1, 2, 3) and study.variants == ("neggen",)
    assert study.model.score_weight == 0.6 and study.model.temperature == 0.1
    # A dataset's sweep replaces the global one; {} means no sweep.
    config.write_text("neggen: {sensitivity: {score_weight: [0.5]}}\n"
                      "datasets:\n  demo: {format: demo, neggen: {sensitivity: {}}}\n"
                      "  other: {format: demo, neggen: {sensitivity: {counterfactual_weight: [0.0]}}}\n")
    assert load_config(config).study_config("demo").sensitivity == {}
    assert load_config(config).study_config("other").sensitivity == {"counterfactual_weight": (0.0,)}
    config.write_text("datasets:\n  demo: {format: demo, neggen: {variants: [w/o NEG]}}\n")
    with pytest.raises(ConfigError, match="datasets.demo.neggen.variants"):
        load_config(config).study_config("demo")
    config.write_text("datasets:\n  demo: {format: demo, neggen: {model: {temprature: 0.1}}}\n")
    with pytest.raises(ConfigError, match="datasets.demo.neggen.model.temprature"):
        load_config(config).study_config("demo")
