"""The report: tables, statistics and figures from metrics/neggen_history, and its asset."""

from __future__ import annotations

import base64
import io

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from assets.definitions import all_assets
from assets.resources import NeggenResource
from neggen_model import models as registry
from pipeline.report import BASELINE_LABELS, build_report
from pipeline.storage import DatasetStore

SEEDS = (2024, 2025, 2026)
DEFAULTS = {"score_weight": 0.4, "counterfactual_weight": 0.3, "align_weight": 1e-2, "temperature": 0.2}
# Mean test value per model and (metric, k). NegGen is best everywhere; LightGCN is second
# except at N@10, where BPR is: the comparison must pick the best other model per column.
BASE = {
    "bpr": {("recall", 10): 0.040, ("recall", 20): 0.060, ("ndcg", 10): 0.0300, ("ndcg", 20): 0.027},
    "lightgcn": {("recall", 10): 0.046, ("recall", 20): 0.070, ("ndcg", 10): 0.0240, ("ndcg", 20): 0.031},
    "neggen": {("recall", 10): 0.050, ("recall", 20): 0.076, ("ndcg", 10): 0.0330, ("ndcg", 20): 0.036},
}
# IRGAN and the negative-sampling baselines (LightGCN with that sampler), each below LightGCN (and below
# BPR at N@10) by more than the seed noise, so the best other model stays as above.
SAMPLERS = ("lightgcn_mixgcf", "lightgcn_dens", "lightgcn_dns", "lightgcn_ahns")
for index, name in enumerate(("irgan", *SAMPLERS)):
    BASE[name] = {key: mean - 0.004 - 0.001 * index for key, mean in BASE["lightgcn"].items()}
BASELINES = ("bpr", "lightgcn", "irgan", *SAMPLERS)
VARIANT_SHIFT = {"wo_neg": -0.004, "wo_cf": -0.002, "wo_both": -0.006, "visual_only": -0.003,
                 "text_only": -0.001, "direct": -0.005, "direct_wo_cf": -0.007}
SWEEP = {"score_weight": [0.0, 0.2, 0.6, 1.0], "counterfactual_weight": [0.0, 0.1, 1.0], "align_weight": [1e-4, 1e-3, 1e-1, 1.0],
         "temperature": [0.07, 0.1, 0.3, 1.0]}


def _values(rng) -> dict:
    """(model, seed, metric, k) → test value (mmrec mode): the numbers the test checks against."""
    values = {}
    models = {**BASE, **{v: {key: BASE["neggen"][key] + shift for key in BASE["neggen"]} for v, shift in VARIANT_SHIFT.items()}}
    for model, means in models.items():
        # LightGCN ran one more seed than NegGen: only matched seeds may be paired.
        for seed in SEEDS + ((2027,) if model == "lightgcn" else ()):
            for (metric, k), mean in means.items():
                values[(model, seed, metric, k)] = mean + rng.normal(0, 0.001)
    return values


def _row(model, study, seed, split, mode, metric, k, value, hyper):
    neggen_model = model not in BASELINES
    # Hard samplers converge sooner than uniform negatives, by a step of their own.
    faster = 10 + 2 * SAMPLERS.index(model) if model in SAMPLERS else 0 if model == "wo_cf" else 20
    return {"model": model, "study": study, "seed": seed, "split": split, "mode": mode, "metric": metric, "k": k,
            "value": value, "best_epoch": 40 + seed % 7 + faster, "epochs_run": 80,
            "wall_seconds": 12.5, **({n: hyper[n] for n in DEFAULTS} if neggen_model else dict.fromkeys(DEFAULTS, np.nan)),
            "run_dir": f"{model}-{seed}", "stage": "neggen" if neggen_model else "baselines",
            "dataset": "demo", "finished_at": "2026-11-28T00:00:00+00:00"}


def make_metrics(values: dict, rng) -> pd.DataFrame:
    rows = []
    for (model, seed, metric, k), value in values.items():
        rows.append(_row(model, "main", seed, "test", "mmrec", metric, k, value, DEFAULTS))
        rows.append(_row(model, "main", seed, "test", "strict", metric, k, value * 0.97, DEFAULTS))
        rows.append(_row(model, "main", seed, "valid", "mmrec", metric, k, value * 1.1, DEFAULTS))
    for name, grid in SWEEP.items():
        for point in grid:
            hyper = {**DEFAULTS, name: point}
            for metric, k in BASE["neggen"]:
                value = BASE["neggen"][(metric, k)] - 0.01 * abs(np.log10(point / DEFAULTS[name] if point else 10))
                rows.append(_row("neggen", "sensitivity", SEEDS[0], "test", "mmrec", metric, k, value, hyper))
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1, random_state=int(rng.integers(1 << 16))).reset_index(drop=True)  # order must not matter


def make_history(rng) -> pd.DataFrame:
    rows = []
    for model in ("neggen", "wo_cf"):
        for seed in SEEDS:
            for epoch in range(1, 31 + seed % 5):
                rows.append({"run_dir": f"{model}-{seed}", "model": model, "study": "main", "seed": seed,
                             **DEFAULTS, "epoch": epoch, "loss": 1 / epoch, "seconds": 1.0, "eval_seconds": 0.1,
                             **{f"valid_{m}": np.nan for m in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")},
                             "grad_negative_text": 0.5 / epoch + rng.uniform(0, 0.01),
                             "grad_negative_visual": 0.9 / epoch + rng.uniform(0, 0.01)})
    return pd.DataFrame(rows)


@pytest.fixture
def frames():
    rng = np.random.default_rng(7)
    values = _values(rng)
    return values, make_metrics(values, rng), make_history(rng)


def _cells(markdown: str, label: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}")[1].split("\n## ")[0]


def test_statistics_match_an_independent_computation(frames, tmp_path):
    values, metrics, history = frames
    report = build_report(metrics, history, tmp_path, "demo")
    table2 = report.tables[report.tables.table == "table2"].set_index(["model", "metric"])
    assert set(report.tables["mode"]) == {"mmrec"}
    for metric, k in BASE["neggen"]:
        key = f"{metric}@{k}"
        for model in ("bpr", "lightgcn", "neggen"):
            seeds = sorted(s for (m, s, me, kk) in values if (m, me, kk) == (model, metric, k))
            numbers = np.array([values[(model, s, metric, k)] for s in seeds])
            row = table2.loc[(model, key)]
            assert row["mean"] == pytest.approx(numbers.mean(), abs=1e-12)
            assert row["std"] == pytest.approx(numbers.std(ddof=1), abs=1e-12)
            assert row.n == len(seeds)
        best_other = "bpr" if key == "ndcg@10" else "lightgcn"
        neggen, other = ([values[(m, s, metric, k)] for s in SEEDS] for m in ("neggen", best_other))
        expected = stats.ttest_rel(neggen, other)
        row = table2.loc[("neggen", key)]
        assert row.compared_to == best_other and row.n_pairs == len(SEEDS)
        assert row.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        # ΔImprov. compares the means the table shows (LightGCN's over all four of its seeds).
        other_mean = table2.loc[(best_other, key)]["mean"]
        assert row.improvement == pytest.approx(np.mean(neggen) / other_mean - 1, rel=1e-9)
        assert table2.loc[("lightgcn", key)].n == 4
        # Every other row carries NegGen's gain over it and its paired p-value against it.
        for model in BASELINES:
            other = table2.loc[(model, key)]
            paired = [s for s in SEEDS if (model, s, metric, k) in values]
            expected = stats.ttest_rel([values[("neggen", s, metric, k)] for s in paired],
                                       [values[(model, s, metric, k)] for s in paired])
            assert other.compared_to == "neggen" and other.n_pairs == len(paired) == 3
            assert other.p_value == pytest.approx(expected.pvalue, rel=1e-9)
            assert other.improvement == pytest.approx(table2.loc[("neggen", key)]["mean"] / other["mean"] - 1, rel=1e-9)

    # The markdown shows the same numbers, best bold and second underlined per column.
    md = _section(report.markdown, "Table 2")
    neggen, lightgcn, bpr = _cells(md, "NegGen"), _cells(md, "LightGCN"), _cells(md, "BPR")
    assert neggen[0] == "3" and lightgcn[0] == "4"
    assert all(cell.startswith("**") for cell in neggen[1:])
    assert [c.startswith("<u>") for c in lightgcn[1:]] == [True, True, False, True]
    assert [c.startswith("<u>") for c in bpr[1:]] == [False, False, True, False]
    r20 = table2.loc[("neggen", "recall@20")]
    assert neggen[2] == f"**{r20['mean']:.4f} ± {r20['std']:.4f}**"
    p_cells = _cells(md, "p-val")
    assert p_cells[1] == f"{table2.loc[('neggen', 'recall@10')].p_value:.4f} (n=3)"
    assert "N@10: BPR" in md and "test split, `mmrec` mode" in md.lower()
    # Rows in the paper's order, with its names; below the table, NegGen against each of them.
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")][1:]
    assert rows[:8] == ["BPR", "LightGCN", "IRGAN", "MixGCF", "DENS", "DNS(M,N)", "AHNS", "NegGen"]
    dns = table2.loc[("lightgcn_dns", "ndcg@20")]
    assert _cells(md, "vs DNS(M,N)")[3] == f"{dns.improvement:+.2%} ({dns.p_value:.4f}, n=3)"
    assert [f"vs {label}" for label in ("BPR", "LightGCN", "IRGAN", "MixGCF", "DENS", "DNS(M,N)", "AHNS")] == rows[-7:]

    # Every table of the paper is present, with its variants in the paper's order.
    assert list(report.tables.drop_duplicates("table").table) == ["table2", "table4", "table5", "section2_1", "fig6"]
    assert [_cells(_section(report.markdown, "Table 4"), v)[0] for v in ("V", "T", "V&T")] == ["3"] * 3
    assert "w/o both" in _section(report.markdown, "Table 5")
    assert report.path.read_text() == report.markdown


def test_strict_mode_and_unpaired_seeds(frames, tmp_path):
    _, metrics, history = frames
    strict = build_report(metrics, history, tmp_path, "demo", mode="strict")
    assert "`strict` mode" in strict.markdown and set(strict.tables["mode"]) == {"strict"}
    expected = metrics[(metrics["mode"] == "strict") & (metrics.model == "neggen") & (metrics.study == "main")
                       & (metrics.metric == "recall") & (metrics.k == 20)].value
    row = strict.tables[(strict.tables.model == "neggen") & (strict.tables.metric == "recall@20")].iloc[0]
    assert row["mean"] == pytest.approx(expected.mean())

    # NegGen with one seed: no p-value, said so; its std is undefined, so only the mean shows.
    one_seed = metrics[(metrics.model != "neggen") | (metrics.seed == SEEDS[0])]
    report = build_report(one_seed, None, tmp_path / "one", "demo")
    md = _section(report.markdown, "Table 2")
    assert _cells(md, "p-val")[1:] == ["n/a (n=1)"] * 4
    assert " ± " not in _cells(md, "NegGen")[1]


def test_absent_variants_omit_their_table_and_figures(frames, tmp_path):
    _, metrics, history = frames
    report = build_report(metrics[~metrics.model.isin(["visual_only", "text_only"])], history, tmp_path, "demo")
    assert "## Table 4" not in report.markdown and "table4" not in set(report.tables.table)
    assert "Table 4: modality ablation omitted" in report.markdown and "## Table 5" in report.markdown

    only_lightgcn = build_report(metrics[metrics.model == "lightgcn"], None, tmp_path, "demo")
    assert set(only_lightgcn.tables.table) == {"table2"} and "| ΔImprov. |" not in only_lightgcn.markdown
    assert "ΔImprov. and p-val need NegGen and another model" in only_lightgcn.markdown
    assert only_lightgcn.figures == {}
    for name in ("Fig. 6", "Fig. 7", "Fig. 3"):
        assert f"{name} omitted" in only_lightgcn.markdown
    # Figures of the earlier report in the same folder are gone with their inputs.
    assert not list(tmp_path.glob("*.png"))


def test_figures_are_pngs_linked_from_the_report(frames, tmp_path):
    _, metrics, history = frames
    report = build_report(metrics, history, tmp_path, "demo")
    # Fig. 6: a point per source of negatives, every sampler included (IRGAN is no LightGCN: left out, said so).
    fig6 = report.tables[report.tables.table == "fig6"]
    assert list(fig6.model.unique()) == ["lightgcn", *SAMPLERS, "wo_both", "wo_cf", "direct_wo_cf"]
    test = metrics[(metrics.split == "test") & (metrics["mode"] == "mmrec") & (metrics.study == "main")
                   & (metrics.metric == "ndcg") & (metrics.k == 20)]
    for model in fig6.model.unique():
        runs = test[test.model == model]
        point = fig6[fig6.model == model].set_index("metric")
        assert point.at["convergence_epoch", "mean"] == pytest.approx(runs.best_epoch.mean())
        assert point.at["ndcg@20", "mean"] == pytest.approx(runs.value.mean())
        assert point.at["ndcg@20", "std"] == pytest.approx(runs.value.std(ddof=1)) and point.at["ndcg@20", "n"] == len(runs)
    assert "IRGAN is not shown" in report.markdown
    assert set(report.figures) == {"fig3", "fig6", "fig7"}
    for path in report.figures.values():
        assert path.parent == tmp_path and path.stat().st_size > 0
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
        assert f"]({path.name})" in report.markdown
    # A sweep setting that varies two parameters at once is not plotted, and the report says so.
    mixed = metrics[(metrics.study == "sensitivity") & (metrics.score_weight == 0.0)].assign(temperature=0.9)
    again = build_report(pd.concat([metrics, mixed]), history, tmp_path, "demo")
    assert "1 sensitivity setting(s) varying more than one parameter" in again.markdown


def test_missing_columns_are_named(frames, tmp_path):
    _, metrics, history = frames
    with pytest.raises(ValueError, match="metrics is missing required column.*study.*value"):
        build_report(metrics.drop(columns=["study", "value"]), history, tmp_path, "demo")
    with pytest.raises(ValueError, match="neggen_history is missing required column.*grad_negative_visual"):
        build_report(metrics, history.drop(columns=["grad_negative_visual"]), tmp_path, "demo")
    with pytest.raises(ValueError, match="more than one main-study test row"):
        rerun = metrics[(metrics.model == "neggen") & (metrics.study == "main") & (metrics.split == "test")].head(1)
        build_report(pd.concat([metrics, rerun.assign(mode="mmrec")]), history, tmp_path, "demo")


def test_report_asset_materializes(frames, neggen_home, tmp_path):
    _, metrics, history = frames
    store = DatasetStore(neggen_home, "demo")
    store.write("metrics", metrics)
    store.write("neggen_history", history)
    config = tmp_path / "neggen.yaml"
    config.write_text("datasets: {}\n")
    result = dg.materialize(
        all_assets, partition_key="demo", selection=["report"],
        resources={"neggen": NeggenResource(config_path=str(config))},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    meta = result.asset_materializations_for_node("report")[0].metadata
    report_md = (neggen_home / "demo" / "report" / "report.md")
    assert meta["path"].value == str(report_md) and report_md.exists()
    assert "## Table 2" in meta["report"].value and "data:image/png;base64," in meta["report"].value
    for name in ("fig3", "fig6", "fig7"):
        encoded = meta[name].value.split("base64,")[1].rstrip(")")
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
            assert image.format == "PNG"
    tables = store.read("report_tables")
    assert set(tables.table) == {"table2", "table4", "table5", "section2_1", "fig6"}
    assert {"table", "row", "metric", "mean", "std", "n", "p_value"} <= set(tables.columns)


def test_table_2_labels_name_registered_models():
    """The report's labels are keyed by the names the models are registered (and written to `metrics`) under."""
    assert set(BASELINE_LABELS) <= set(registry.MODELS) | set(registry.BASELINES)
