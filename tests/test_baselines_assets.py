"""The baselines asset through Dagster on a small demo world: grid at the first seed, the chosen
setting over seeds, rows in `metrics`, runs reused on a re-materialization. And on a dataset without
item content (interactions only, as Baby here): IRGAN and the negative-sampling baselines run, the
content models are skipped with the reason, and their rows reach `metrics` and the report."""

from __future__ import annotations

import json

import dagster as dg

from assets.definitions import all_assets
from assets.resources import NeggenResource
from neggen_model.synthetic import clustered_interactions
from neggen_model.trainer import STATE_JSON
from pipeline.duck import read_only_stage_connection, run_read_only
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


def materialize(config_path, selection, dataset="demo"):
    return dg.materialize(
        all_assets, partition_key=dataset, selection=selection,
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


SAMPLERS = ["lightgcn_mixgcf", "lightgcn_dens", "lightgcn_dns", "lightgcn_ahns"]
# Baby as it is registered here, interactions only (no item text, no pictures: no embedding stores), but
# from a tiny .inter file (the partitions are the registered datasets), with short runs.
CONTENTLESS = """
datasets:
  baby: {{format: mmrec, path: toy, kcore: 3}}
train: {{embedding_size: 16, batch_size: 256, learning_rate: 0.01, epochs: 3, early_stop_patience: 3, seed: 1}}
neggen: {{seeds: {seeds}, workers: 1}}
baselines:
  models: [vbpr, irgan, {samplers}]
  seeds: {seeds}
  workers: 1
  params: {{irgan: {{pretrain_epochs: 2}}, lightgcn_dns: {{candidates: {candidates}, hardest: 2}}}}
"""


def contentless_project(tmp_path, candidates: int = 8, seeds: str = "[1, 2]"):
    folder = tmp_path / "toy"
    folder.mkdir(exist_ok=True)
    pairs = clustered_interactions(n_users=80, n_items=40, n_clusters=4, per_user=10, affinity=0.6, seed=3)
    (folder / "toy.inter").write_text("userID\titemID\n" + "".join(f"{u}\t{i}\n" for u, i in zip(pairs.user_id, pairs.item_id)))
    config = tmp_path / "neggen.yaml"
    config.write_text(CONTENTLESS.format(samplers=", ".join(SAMPLERS), candidates=candidates, seeds=seeds))
    return config


def runs_of(home) -> dict[str, int]:
    """Run folder -> mtime of its training state (unchanged: the run was reused, not retrained)."""
    return {p.name: (p / STATE_JSON).stat().st_mtime_ns for p in (home / "baby" / "baselines").iterdir() if p.is_dir()}


def test_sampler_baselines_and_irgan_on_baby_without_content(neggen_home, tmp_path):
    config = contentless_project(tmp_path)
    result = materialize(config, ["interactions", "base_model", "neggen_model", "baselines", "metrics", "report"], "baby")
    assert result.success
    store = DatasetStore(neggen_home, "baby")
    assert not store.table_path("text_embeddings").exists() and not store.table_path("image_embeddings").exists()
    # Without content the study trains LightGCN at every seed (the uniform anchor) and says why NegGen did not run.
    study = result.asset_materializations_for_node("neggen_model")[0].metadata
    assert set(study["skipped_variants"].value.values()) == {"the dataset has no item content (text_embeddings not materialized)"}
    assert "neggen" in study["skipped_variants"].value
    meta = result.asset_materializations_for_node("baselines")[0].metadata
    assert meta["skipped_models"].value == {"vbpr": "vbpr reads item content; the dataset has none (no text or picture features)"}
    assert meta["chosen_params"].value["lightgcn_dns"] == {"strategy": "dns", "candidates": 8, "hardest": 2}

    # Their rows are in `metrics`, as `neggen sql` reads it: every baseline at both seeds.
    con, _ = read_only_stage_connection(store)
    seeds = run_read_only(con, "SELECT model, list(DISTINCT seed ORDER BY seed) FROM metrics WHERE stage = 'baselines' "
                               "AND split = 'test' AND mode = 'mmrec' AND metric = 'ndcg' AND k = 20 GROUP BY model").fetchall()
    assert dict(seeds) == {model: [1, 2] for model in ["irgan", *SAMPLERS]}
    lightgcn = run_read_only(con, "SELECT list(DISTINCT seed ORDER BY seed) FROM metrics WHERE model = 'lightgcn' "
                                  "AND split = 'test' AND mode = 'mmrec' AND metric = 'ndcg' AND k = 20").fetchall()
    assert lightgcn == [([1, 2],)]
    # Each sampler baseline is LightGCN trained with its sampler: the run's training config says so.
    for model in SAMPLERS:
        run_dir = run_read_only(con, f"SELECT any_value(run_dir) FROM metrics WHERE model = '{model}' AND seed = 1").fetchall()[0][0]
        sampler = json.loads((store.root / run_dir / STATE_JSON).read_text())["config"]["negative_sampler"]
        assert sampler["strategy"] == model.removeprefix("lightgcn_")

    # The report lists them in Table 2 (no NegGen here, so no p-values: said so) and draws a Fig. 6 point per sampler.
    tables = store.read("report_tables")
    table2 = tables[tables.table == "table2"]
    assert list(table2.row.unique()) == ["LightGCN", "IRGAN", "MixGCF", "DENS", "DNS(M,N)", "AHNS"]
    assert list(tables[tables.table == "fig6"].model.unique()) == ["lightgcn", *SAMPLERS]
    report_md = (neggen_home / "baby" / "report" / "report.md").read_text()
    assert "ΔImprov. and p-val need NegGen" in report_md and "fig6_convergence.png" in report_md

    # A re-materialization reuses every run; a changed sampler parameter is a run of its own.
    runs, before = runs_of(neggen_home), store.read("baselines_metrics")
    assert sorted({name.split("-")[0] for name in runs}) == sorted(["bpr", "irgan", *SAMPLERS])
    assert materialize(config, ["baselines", "metrics"], "baby").success
    assert runs_of(neggen_home) == runs and store.read("baselines_metrics").equals(before)
    # (At one seed, whose std over seeds is undefined, as the asset's summary must allow.)
    changed = materialize(contentless_project(tmp_path, candidates=6, seeds="[1]"), ["baselines"], "baby")
    assert changed.success
    added = sorted(set(runs_of(neggen_home)) - set(runs))
    assert [name.split("-")[0] for name in added] == ["lightgcn_dns"]
    assert "lightgcn_dns" in changed.asset_materializations_for_node("baselines")[0].metadata["test_mmrec_std_over_seeds"].value
    assert {k: v for k, v in runs_of(neggen_home).items() if k in runs} == runs

