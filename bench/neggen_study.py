"""The main comparison over 5 seeds: LightGCN, the best content baseline, NegGen and NegGen as printed.

For each dataset (its data, generation and encoding stages materialized; a dataset without item
content, such as Baby here, gets LightGCN only), this trains, with the
pipeline's own code and run folders (finished runs are reused, interrupted ones resume):

* LightGCN and the NegGen variants `neggen` (the shipped default) and `neggen_paper` (eq. 19 as
  printed) at every seed (pipeline/study.py, without touching the stage's own tables);
* the multi-modal baselines (pipeline/baselines.py: grid at the first seed on validation
  Recall@20, the chosen setting at every seed); "the best baseline" is the one with the highest
  mean *validation* Recall@20, never chosen on test.

It writes bench/results/neggen_study.csv (dataset, model, seed, split, mode, metric, k, value:
the test rows, both modes) and bench/results/neggen_study.md (mean ± std over seeds and paired
t-tests of NegGen against each other model, mmrec mode), and prints the table.

    .venv/bin/python bench/neggen_study.py --datasets demo ml100k beauty
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assets.resources import NeggenResource  # noqa: E402
from pipeline.baselines import run_baselines  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.study import run_study  # noqa: E402

RESULTS = REPO / "bench" / "results"
COLUMNS = ["dataset", "model", "seed", "split", "mode", "metric", "k", "value"]
SEEDS = (2024, 2025, 2026, 2027, 2028)
SHOWN = (("recall", 20), ("ndcg", 20), ("recall", 10), ("ndcg", 10))


def study_rows(
    dataset: str, seeds: tuple[int, ...], baselines: tuple[str, ...], baseline_seeds: tuple[int, ...], config_path: str | None
) -> pd.DataFrame:
    resource = NeggenResource(config_path=config_path)
    config = load_config(config_path)
    store, train = resource.store(dataset), config.train_config(dataset)
    log = lambda line: print(f"  {dataset}: {line}", flush=True)  # noqa: E731
    if not store.table_path("text_embeddings").exists():
        log("no text_embeddings: LightGCN only (for NegGen first run  neggen materialize --dataset "
            f"{dataset} --select 'group:data or group:generation or group:encoding')")  # fmt: skip
    study = config.study_config(dataset).model_copy(
        update={"seeds": seeds, "variants": ("neggen", "neggen_paper"), "sensitivity": {}}
    )
    frames = [run_study(store, study, train, log=log, write=False).metrics]
    if baselines:
        chosen = config.baselines_config(dataset).model_copy(update={"models": baselines, "seeds": baseline_seeds or seeds})
        frames.append(run_baselines(store, chosen, train, log=log).metrics)
    table = pd.concat(frames, ignore_index=True)
    table = table[table.study == "main"].assign(dataset=dataset)
    valid = table[(table.split == "valid") & (table.metric == "recall") & (table.k == 20)]
    others = valid[~valid.model.isin(["lightgcn", "neggen", "neggen_paper"])]
    if not others.empty:
        best = others.groupby("model").value.mean().idxmax()
        log(f"best baseline on validation Recall@20: {best}")
        table = table[~table.model.isin(set(others.model) - {best})]
    return table


def summary(rows: pd.DataFrame) -> str:
    test = rows[(rows.split == "test") & (rows["mode"] == "mmrec")]
    lines = []
    for dataset, of_dataset in test.groupby("dataset", sort=False):
        lines += [f"\n## {dataset} (test, mmrec mode, seeds {', '.join(map(str, sorted(of_dataset.seed.unique())))})\n",
                  "| model | " + " | ".join(f"{m[0].upper()}@{k}" for m, k in SHOWN) + " | p (NegGen vs, R@20 / N@20) |",
                  "|---|" + "---:|" * (len(SHOWN) + 1)]  # fmt: skip
        neggen = of_dataset[of_dataset.model == "neggen"]
        for model, of_model in of_dataset.groupby("model", sort=False):
            cells = []
            for metric, k in SHOWN:
                values = of_model[(of_model.metric == metric) & (of_model.k == k)].value
                cells.append(f"{values.mean():.4f} ± {values.std(ddof=1):.4f}")
            tests = []
            for metric in ("recall", "ndcg"):
                a = neggen[(neggen.metric == metric) & (neggen.k == 20)].set_index("seed").value
                b = of_model[(of_model.metric == metric) & (of_model.k == 20)].set_index("seed").value
                paired = a.index.intersection(b.index)
                tests.append("" if model == "neggen" or len(paired) < 2 else f"{stats.ttest_rel(a[paired], b[paired]).pvalue:.2g}")
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {' / '.join(tests) if tests[0] else ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["demo", "ml100k", "beauty"])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--baselines", nargs="*", default=["vbpr", "freedom"], help="content baselines to train")
    parser.add_argument("--baseline-seeds", nargs="*", type=int, default=[],
                        help="seeds of the baselines when fewer than --seeds fit the budget (default: --seeds)")
    parser.add_argument("--config", default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = RESULTS / "neggen_study.csv"
    rows = []
    for dataset in args.datasets:
        print(f"== {dataset}", flush=True)
        rows.append(study_rows(dataset, tuple(args.seeds), tuple(args.baselines), tuple(args.baseline_seeds), args.config))
        new = pd.concat(rows, ignore_index=True)
        if out.exists():  # other datasets' rows stay
            new = pd.concat([pd.read_csv(out).query("dataset not in @args.datasets"), new], ignore_index=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        new[new.split == "test"][COLUMNS].to_csv(out, index=False)
    table = pd.read_csv(out)
    text = summary(table)
    print(text)
    (RESULTS / "neggen_study.md").write_text(
        "# NegGen main comparison (bench/neggen_study.py)\n\nMean ± sample std over seeds; p = paired t-test "
        "(scipy ttest_rel) of NegGen against the row's model over the seeds both ran.\n" + text + "\n"
    )


if __name__ == "__main__":
    main()
