"""The README's baseline tables, recomputed from the results files: every model's test metrics over
seeds (mean ± std), its Recall@20 change against LightGCN, and paired t-tests against LightGCN and
against NegGen over the seeds both ran.

    .venv/bin/python bench/baselines_table.py --dataset ml100k [--mode mmrec]

Reads bench/results/baselines.csv (the baselines, written by bench/baselines_run.py) and
bench/results/neggen_study.csv (LightGCN, NegGen and what else the study trained, written by
bench/neggen_study.py); prints a
Markdown table and writes it to bench/results/baselines_table_<dataset>.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from scipy import stats

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
METRICS = [("recall", 10), ("recall", 20), ("ndcg", 10), ("ndcg", 20)]


def load(dataset: str, mode: str) -> pd.DataFrame:
    # The study trained LightGCN, NegGen and some baselines at more seeds (the same runs where
    # both have a seed): every (model, seed) once.
    rows = pd.concat([pd.read_csv(RESULTS / "neggen_study.csv"), pd.read_csv(RESULTS / "baselines.csv")])
    rows = rows.drop_duplicates(["dataset", "model", "seed", "split", "mode", "metric", "k"])
    return rows[(rows.dataset == dataset) & (rows["mode"] == mode) & (rows.split == "test")]


def paired_p(rows: pd.DataFrame, model: str, other: str, metric: str, k: int) -> tuple[float, int]:
    """Paired t-test of model against other on one metric over the seeds both ran."""
    wide = rows[(rows.metric == metric) & (rows.k == k) & rows.model.isin([model, other])]
    wide = wide.pivot_table(index="seed", columns="model", values="value")
    if other not in wide:  # no NegGen on a dataset without content
        return float("nan"), 0
    wide = wide.dropna()
    if model == other or len(wide) < 2:
        return float("nan"), len(wide)
    return float(stats.ttest_rel(wide[model], wide[other]).pvalue), len(wide)


def _p(p: float) -> str:
    return "n/a (equal at every seed)" if p != p else f"{p:.2g}"  # ttest_rel of zero differences is nan


def table(rows: pd.DataFrame) -> str:
    lines = [
        "| model | seeds | R@10 | R@20 | N@10 | N@20 | R@20 vs LightGCN | p R@20 / N@20 vs LightGCN | p R@20 vs NegGen |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    recall20 = rows[(rows.metric == "recall") & (rows.k == 20)].groupby("model").value
    base = recall20.mean().get("lightgcn")
    for model in recall20.mean().sort_values(ascending=False).index:
        cells = []
        for metric, k in METRICS:
            values = rows[(rows.model == model) & (rows.metric == metric) & (rows.k == k)].value
            cells.append(f"{values.mean():.4f}" + (f" ± {values.std():.4f}" if len(values) > 1 else ""))
        change = "" if base is None or model == "lightgcn" else f"{recall20.mean()[model] / base - 1:+.1%}"
        p_r, n = paired_p(rows, model, "lightgcn", "recall", 20)
        p_n, _ = paired_p(rows, model, "lightgcn", "ndcg", 20)
        p_neggen, n_neggen = paired_p(rows, model, "neggen", "recall", 20)
        versus = "" if model == "lightgcn" or n < 2 else f"{_p(p_r)} / {_p(p_n)} (n={n})"
        lines.append(
            f"| {model} | {recall20.count()[model]} | " + " | ".join(cells)
            + f" | {change} | {versus} | {'' if model == 'neggen' or n_neggen < 2 else _p(p_neggen)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--mode", default="mmrec", choices=["mmrec", "strict"])
    args = parser.parse_args()
    rows = load(args.dataset, args.mode)
    if rows.empty:
        raise SystemExit(f"no {args.mode} test rows for dataset {args.dataset!r} in {RESULTS}")
    text = f"{args.dataset}, test, {args.mode} mode (rows sorted by mean Recall@20)\n\n{table(rows)}\n"
    print(text)
    (RESULTS / f"baselines_table_{args.dataset}.md").write_text(text)


if __name__ == "__main__":
    main()
