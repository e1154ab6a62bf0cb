"""Train multi-modal baselines on a materialized dataset home over seeds; write their test rows.

    NEGGEN_HOME=/tmp/home .venv/bin/python bench/baselines_run.py --dataset demo --models vbpr freedom

Each model's small grid (its own, or `--grid none` for the defaults) is searched at the first seed
on validation Recall@20 only; the chosen setting runs at every seed and is tested once at its best
validation epoch (pipeline/baselines.py, the same code as the `baselines` asset; runs are reused
from `<home>/<dataset>/baselines/`). The test rows go to bench/results/baselines.csv (columns
dataset, model, seed, split, mode, metric, k, value): rows of the same (dataset, model) are
replaced, others kept, so later baselines append. The grid and the choice go to
bench/results/baselines_grid.csv. Needs the dataset's data and encoding stages materialized.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.baselines import run_baselines  # noqa: E402
from pipeline.config import BaselinesConfig, load_config  # noqa: E402
from pipeline.storage import DatasetStore  # noqa: E402

RESULTS = REPO / "bench" / "results"
CSV_COLUMNS = ["dataset", "model", "seed", "split", "mode", "metric", "k", "value"]


def _replace_rows(path: Path, new: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    if path.exists():
        old = pd.read_csv(path)
        done = set(map(tuple, new[key].drop_duplicates().to_numpy()))
        old = old[[tuple(row) not in done for row in old[key].to_numpy()]]
        new = pd.concat([old, new], ignore_index=True)
    new.to_csv(path, index=False)
    return new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--models", nargs="+", help="default: the config's baselines.models")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the config's baselines.seeds")
    parser.add_argument("--grid", choices=["model", "none"], default=None,
                        help="none: no search (defaults); model: each model's own grid (default: the config's)")  # fmt: skip
    parser.add_argument("--params", default=None, help='JSON {model: {param: value}} fixed for every run')
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None,
                        help="runs trained at once, one process each (default: the config's baselines.workers)")  # fmt: skip
    parser.add_argument("--csv", type=Path, default=RESULTS / "baselines.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config()
    base = config.baselines_config(args.dataset).model_dump()
    if args.models:
        base["models"] = args.models
    if args.seeds:
        base["seeds"] = args.seeds
    if args.grid == "none":
        base["grid"] = {m: {} for m in base["models"]}
    elif args.grid == "model":
        base["grid"] = {}
    if args.workers is not None:
        base["workers"] = args.workers
    if args.params:
        base["params"] = base["params"] | json.loads(args.params)
    baselines = BaselinesConfig.model_validate(base)
    store = DatasetStore(config.home, args.dataset)
    started = time.perf_counter()
    result = run_baselines(store, baselines, config.train_config(args.dataset), log=print)
    print(f"done in {time.perf_counter() - started:.0f}s; chosen: {result.chosen}; skipped: {result.skipped}")

    test = result.metrics[result.metrics.split == "test"].assign(dataset=args.dataset)[CSV_COLUMNS]
    table = _replace_rows(args.csv, test, ["dataset", "model"])
    grid = result.grid.assign(dataset=args.dataset)
    grid["chosen"] = [result.chosen.get(m) is not None and p == _json(result.chosen[m]) for m, p in zip(grid.model, grid.params)]
    _replace_rows(args.csv.with_name(args.csv.stem + "_grid.csv"), grid, ["dataset", "model"])
    summary = table[(table.dataset == args.dataset) & (table["mode"] == "mmrec")]
    summary = summary.assign(name=summary.metric + "@" + summary.k.astype(str))
    print(summary.pivot_table(index="model", columns="name", values="value", aggfunc=["mean", "std"]).round(4).to_string())


def _json(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


if __name__ == "__main__":
    main()
