"""Does negative hardness matter? NegGen trained on negatives that swap 1, 2 or every attribute type.

The paper's claim (§3.2, §4.4) is that related-but-different negatives, an item with a few of its
attributes changed, are what make generated negatives useful. The `catalog` engine's
`max_attributes` sets how many attribute types it swaps per item. For each setting this script
materializes the dataset in its own home (data, generation, encoding, LightGCN, NegGen and w/o NEG
over the seeds), reads `negative_hardness` and `neggen_metrics`, and writes

    bench/results/neggen_hardness.csv   dataset, model, seed, split, mode, metric, k, value
                                        (model = "<variant>@max_attributes=<1|2|all>")
    bench/results/neggen_hardness.md    mean hardness / cohesion and R@20, N@20 per setting
    bench/results/neggen_hardness.png   R@20 (validation and test) against mean hardness

Only validation is used to *choose* anything in this project; the test columns here are reported,
not selected on. Example (about 6 minutes on 2 cores for the demo, 3 seeds):

    .venv/bin/python bench/neggen_hardness.py --dataset demo --seeds 2024 2025 2026
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
COLUMNS = ["dataset", "model", "seed", "split", "mode", "metric", "k", "value"]
SELECTION = "group:data or group:generation or group:encoding or key:base_model or key:neggen_model"


def config_for(base_config: Path, home: Path, dataset: str, limit: int | None, seeds: list[int]) -> Path:
    """The repository's config with this setting's home, generator and a small study."""
    config = yaml.safe_load(base_config.read_text())
    for entry in config.get("datasets", {}).values():  # keep relative paths valid from the new folder
        if isinstance(entry, dict) and "path" in entry and not os.path.isabs(entry["path"]):
            entry["path"] = str((base_config.parent / entry["path"]).resolve())
    config["home"] = str(home)
    datasets = config.setdefault("datasets", {})
    entry = datasets.setdefault(dataset, {"format": "demo"} if dataset == "demo" else {})
    generation = dict(entry.get("generation") or config.get("generation") or {})
    generation["generator"] = {"kind": "catalog", "max_attributes": limit}
    entry["generation"] = generation
    entry["neggen"] = {"seeds": seeds, "variants": ["neggen", "wo_neg"], "sensitivity": {}}
    path = home / "neggen.yaml"
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2024, 2025, 2026])
    parser.add_argument("--limits", nargs="+", default=["1", "2", "all"], help="max_attributes settings")
    parser.add_argument("--config", type=Path, default=ROOT / "neggen.yaml")
    parser.add_argument("--homes", type=Path, default=ROOT / "bench" / "data" / "hardness")
    args = parser.parse_args()
    neggen = Path(sys.executable).with_name("neggen")
    rows, summary = [], []
    for label in args.limits:
        limit = None if label == "all" else int(label)
        home = args.homes / f"{args.dataset}-max_attributes-{label}"
        config = config_for(args.config, home, args.dataset, limit, args.seeds)
        print(f"== max_attributes={label}: materializing in {home}", flush=True)
        subprocess.run([str(neggen), "--config", str(config), "materialize", "--dataset", args.dataset,
                        "--select", SELECTION], check=True)  # fmt: skip
        store = home / args.dataset
        hardness = pd.read_parquet(store / "negative_hardness.parquet")
        hardness = hardness[hardness.source == "generated"]
        metrics = pd.read_parquet(store / "neggen_metrics.parquet")
        metrics = metrics[(metrics.study == "main") & (metrics["mode"] == "mmrec")]
        metrics = metrics.assign(dataset=args.dataset, model=metrics.model + f"@max_attributes={label}")
        rows.append(metrics[COLUMNS])
        for model, runs in metrics.groupby("model"):
            r20 = runs[(runs.metric == "recall") & (runs.k == 20)]
            n20 = runs[(runs.metric == "ndcg") & (runs.k == 20) & (runs.split == "test")]
            summary.append({"max_attributes": label, "model": model.split("@")[0],
                            "mean_hardness": hardness.hardness.mean(), "mean_cohesion": hardness.cohesion.mean(),
                            "mean_changed_tokens": hardness.changed_tokens.mean(),
                            "valid_r20": r20[r20.split == "valid"].value.mean(),
                            "test_r20": r20[r20.split == "test"].value.mean(),
                            "test_r20_std": r20[r20.split == "test"].value.std(),
                            "test_n20": n20.value.mean(), "seeds": r20[r20.split == "test"].seed.nunique()})  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    pd.concat(rows, ignore_index=True).to_csv(RESULTS / "neggen_hardness.csv", index=False)
    table = pd.DataFrame(summary)
    text = table.round(4).to_string(index=False)
    print(text)
    (RESULTS / "neggen_hardness.md").write_text(
        f"# NegGen against negative hardness ({args.dataset}, seeds {args.seeds}, mmrec mode)\n\n```\n{text}\n```\n"
    )
    figure = Figure(figsize=(6, 4.5), dpi=100)
    axes = figure.add_subplot()
    for model, points in table.groupby("model"):
        points = points.sort_values("mean_hardness")
        axes.errorbar(points.mean_hardness, points.test_r20, yerr=points.test_r20_std.fillna(0), marker="o",
                      capsize=3, label=f"{model} (test)")
        axes.plot(points.mean_hardness, points.valid_r20, marker="x", linestyle="--", label=f"{model} (valid)")
        for point in points.itertuples():
            axes.annotate(f"swap {point.max_attributes}", (point.mean_hardness, point.test_r20), fontsize=8,
                          textcoords="offset points", xytext=(4, 4))
    axes.set_xlabel("mean hardness of the generated negatives (cosine to the original)")
    axes.set_ylabel("Recall@20 (mmrec)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(RESULTS / "neggen_hardness.png"))


if __name__ == "__main__":
    main()
