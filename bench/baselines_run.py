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
from pipeline.config import BaselinesConfig, NeggenConfig, load_config  # noqa: E402
from pipeline.storage import DatasetStore  # noqa: E402

RESULTS = REPO / "bench" / "results"
CSV_COLUMNS = ["dataset", "model", "seed", "split", "mode", "metric", "k", "value"]


def baselines_config(
    config: NeggenConfig,
    dataset: str,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    grid: str | None = None,
    workers: int | None = None,
    params: dict | None = None,
) -> BaselinesConfig:
    """The dataset's baselines config with the command line's choices over it (None: the config's)."""
    base = config.baselines_config(dataset).model_dump()
    if models:
        base["models"] = models
    if seeds:
        base["seeds"] = seeds
    if grid == "none":
        base["grid"] = {m: {} for m in base["models"]}
    elif grid == "model":
        base["grid"] = {}
    if workers is not None:
        base["workers"] = workers
    if params:
        base["params"] = base["params"] | params
    return BaselinesConfig.model_validate(base)


def replace_rows(path: Path, new: pd.DataFrame, key: list[str]) -> pd.DataFrame:
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
    params = json.loads(args.params) if args.params else None
    baselines = baselines_config(config, args.dataset, args.models, args.seeds, args.grid, args.workers, params)
    store = DatasetStore(config.home, args.dataset)
    started = time.perf_counter()
    result = run_baselines(store, baselines, config.train_config(args.dataset), log=print)
    print(f"done in {time.perf_counter() - started:.0f}s; chosen: {result.chosen}; skipped: {result.skipped}")

    test = result.metrics[result.metrics.split == "test"].assign(dataset=args.dataset)[CSV_COLUMNS]
    table = replace_rows(args.csv, test, ["dataset", "model"])
    grid = result.grid.assign(dataset=args.dataset)
    grid["chosen"] = [result.chosen.get(m) is not None and p == _json(result.chosen[m]) for m, p in zip(grid.model, grid.params)]
    replace_rows(args.csv.with_name(args.csv.stem + "_grid.csv"), grid, ["dataset", "model"])
    summary = table[(table.dataset == args.dataset) & (table["mode"] == "mmrec")]
    summary = summary.assign(name=summary.metric + "@" + summary.k.astype(str))
    print(summary.pivot_table(index="model", columns="name", values="value", aggfunc=["mean", "std"]).round(4).to_string())


def _json(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


if __name__ == "__main__":
    main()
