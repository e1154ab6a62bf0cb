"""Baselines trained on a GPU machine that has neither Dagster nor the dataset's home: pack here,
train there, land here.

The device machine (README "Baselines on a GPU") takes a 64 MiB copy of the repository and has torch
but no Dagster or DuckDB; Beauty's text store alone is 81 MB. So:

    # here: the interactions and the item content pooled as the baselines stage pools them
    NEGGEN_HOME=/tmp/nh .venv/bin/python bench/device_baselines.py pack --dataset beauty \\
        --models diffmm mmgcn bm3 --seeds 2024 2025 2026 --out .device_pack
    # there (carry .device_pack and pydantic's wheels): every run on cuda, --workers at once
    python bench/device_baselines.py train --pack .device_pack --out $OUT/runs.jsonl --workers 6
    # here: the test rows into bench/results/baselines.csv, each run's record beside it
    .venv/bin/python bench/device_baselines.py land --runs runs.jsonl

Each run is the baselines stage's (pipeline/baselines.py: baseline_train_config, build_baseline, and
irgan_pretrain_config for IRGAN's BPR-MF start) at the one setting the dataset's config gives (its
params; no grid search here), trained by the same Trainer to early stopping on validation Recall@20
and tested once at its best epoch. The device checks the pack's fingerprints of the training graph
and the content before it trains. A finished run is one JSON line, written as it finishes, so a run
cut off by a time limit loses only the runs still in flight. Landing replaces the rows of each
(dataset, model, seed) it brings and prints the value it replaces. Runs trained there leave no run
folder in the home, so their rows are in the CSV (and bench/baselines_table.py), not in the home's
`metrics` table.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from safetensors.numpy import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from neggen_model.config import TrainConfig  # noqa: E402
from neggen_model.content import ItemContent  # noqa: E402
from neggen_model.data import InteractionData  # noqa: E402
from neggen_model.models import BASELINES, CONTENT_MODELS, build_model  # noqa: E402
from neggen_model.trainer import Trainer  # noqa: E402
from pipeline.baselines import (  # noqa: E402
    baseline_train_config,
    build_baseline,
    dataset_content,
    grid_points,
    irgan_pretrain_config,
    starts_from_pretraining,
)
from pipeline.config import load_config  # noqa: E402
from pipeline.storage import DatasetStore  # noqa: E402
from pipeline.study import stage_data  # noqa: E402
from pipeline.training import metric_rows, run_columns  # noqa: E402
from pipeline.workers import run_all  # noqa: E402

from baselines_run import CSV_COLUMNS, baselines_config, replace_rows  # noqa: E402  (a sibling script)

MANIFEST = "manifest.json"
INTERACTIONS = "interactions.parquet"
CONTENT = "content.safetensors"
RESULTS = REPO / "bench" / "results"


def pack(args: argparse.Namespace) -> None:
    config = load_config()
    baselines = baselines_config(config, args.dataset, args.models, args.seeds, grid="none")
    store = DatasetStore(config.home, args.dataset)
    data = stage_data(store)
    content = dataset_content(store) if set(baselines.models) & set(CONTENT_MODELS) else None
    train = config.train_config(args.dataset)
    runs = []
    for model in baselines.models:
        (params,) = grid_points(model, baselines)  # grid none: the config's params over the defaults
        for seed in baselines.seeds:
            run_config = baseline_train_config(model, params, train.model_copy(update={"seed": seed}))
            runs.append({"model": model, "params": params, "seed": seed, "train": run_config.model_dump(mode="json")})
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = {split: matrix.tocoo() for split, matrix in (("train", data.train), ("valid", data.valid), ("test", data.test))}
    frames = [pd.DataFrame({"user_id": m.row, "item_id": m.col, "split": split}) for split, m in pairs.items()]
    pd.concat(frames, ignore_index=True).to_parquet(args.out / INTERACTIONS, index=False)
    if content is not None:
        save_file(content.matrices(), str(args.out / CONTENT))
    manifest = {
        "dataset": args.dataset,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "train_fingerprint": data.train_fingerprint(),
        "content_fingerprint": None if content is None else content.fingerprint(),
        "runs": runs,
    }
    (args.out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 2**20
    print(f"packed {len(runs)} runs of {args.dataset} into {args.out} ({size:.1f} MiB)")


@functools.lru_cache(maxsize=1)
def read_pack(folder: Path) -> tuple[dict, InteractionData, ItemContent | None]:
    """The manifest, interactions and content of a pack, checked against the fingerprints taken here."""
    manifest = json.loads((folder / MANIFEST).read_text())
    data = InteractionData.from_frame(pd.read_parquet(folder / INTERACTIONS), manifest["n_users"], manifest["n_items"])
    if data.train_fingerprint() != manifest["train_fingerprint"]:
        raise ValueError(f"{folder / INTERACTIONS} does not rebuild the training graph that was packed")
    content = None
    if (folder / CONTENT).exists():
        content = ItemContent(**load_file(str(folder / CONTENT)))
        if content.fingerprint() != manifest["content_fingerprint"]:
            raise ValueError(f"{folder / CONTENT} does not hold the item content that was packed")
    return manifest, data, content


def train_one(folder: Path, index: int, device: str) -> dict:
    """One packed run trained on `device`: its record, or the error that stopped it."""
    manifest, data, content = read_pack(folder)
    run = manifest["runs"][index]
    model, params = run["model"], run["params"]
    record = {"dataset": manifest["dataset"], "model": model, "seed": run["seed"], "params": params, "device": device,
              "device_name": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU {platform.machine()}",
              "torch": torch.__version__, "threads": torch.get_num_threads()}  # fmt: skip
    try:
        config = TrainConfig.model_validate(run["train"] | {"device": device})
        pretrained = pre = None
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if starts_from_pretraining(model):  # IRGAN, from its own BPR-MF run
            pre = irgan_pretrain_config(BASELINES[model].parse_params(params), config)
        if pre is not None:  # the trainer leaves the best epoch's weights in the model it trained
            pretrained = build_model("bpr", data, pre)
            record["pretrain"] = _summary(Trainer(pretrained, data, pre, progress=False).fit())
        instance = build_baseline(model, params, config, data, content, pretrained)
        started = time.perf_counter()
        result = Trainer(instance, data, config, progress=False).fit()
        record |= {"result": asdict(result), "summary": _summary(result), "elapsed_s": time.perf_counter() - started}
        if device == "cuda":
            record["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # one failed run must not stop the others; its record says why
        record["error"] = traceback.format_exc()
    return record


def _summary(result) -> dict:
    epochs = [r for r in result.history if "seconds" in r]
    return {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "valid_recall@20": result.best_valid["recall@20"],
        "test_recall@20": result.test["mmrec"]["recall@20"],
        "wall_s": result.wall_seconds,
        "median_epoch_s": statistics.median(r["seconds"] for r in epochs) if epochs else None,
        "median_eval_s": statistics.median(r["eval_seconds"] for r in result.history if "eval_seconds" in r),
    }


def train(args: argparse.Namespace) -> None:
    manifest, _, _ = read_pack(args.pack)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"torch {torch.__version__}; device {device}; {len(manifest['runs'])} runs, {args.workers} at once", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    calls = [(args.pack, index, device) for index in range(len(manifest["runs"]))]
    started = time.perf_counter()
    with args.out.open("a") as out:
        for _, record in run_all(train_one, calls, args.workers):
            out.write(json.dumps(record) + "\n")
            out.flush()
            what = record["error"].strip().splitlines()[-1] if "error" in record else json.dumps(record["summary"])
            print(f"[{time.perf_counter() - started:6.0f}s] {record['model']} seed {record['seed']}: {what}", flush=True)


def land(args: argparse.Namespace) -> None:
    records = [json.loads(line) for line in args.runs.read_text().splitlines() if line.strip()]
    failed = [r for r in records if "error" in r]
    for r in failed:
        print(f"not landed: {r['model']} seed {r['seed']} failed: {r['error'].strip().splitlines()[-1]}")
    done = [r for r in records if "error" not in r]
    if not done:
        raise SystemExit(f"{args.runs} holds no finished run")
    rows = []
    for r in done:
        columns = run_columns(r["model"], "main", r["seed"], f"{r['device']}:{r['device_name']}")
        rows += metric_rows(columns, r["result"], "baselines", r["dataset"], "")
    new = pd.DataFrame(rows)
    new = new[new.split == "test"][CSV_COLUMNS]
    if args.csv.exists():
        old = pd.read_csv(args.csv).set_index(["dataset", "model", "seed", "mode", "metric", "k"]).value
        for r in done:
            key = (r["dataset"], r["model"], r["seed"], "mmrec", "recall", 20)
            before = f"{old[key]:.4f}" if key in old.index else "none"
            print(f"{r['dataset']} {r['model']} seed {r['seed']}: test Recall@20 {r['summary']['test_recall@20']:.4f} "
                  f"on {r['device_name']} (the CSV had {before})")  # fmt: skip
    replace_rows(args.csv, new, ["dataset", "model", "seed"])
    record_path = args.record or RESULTS / f"device_baselines_{_slug(done[0]['device_name'])}.json"
    kept = [{k: v for k, v in r.items() if k != "result"} for r in done]
    previous = json.loads(record_path.read_text()) if record_path.exists() else []
    ours = {(r["dataset"], r["model"], r["seed"]) for r in kept}
    merged = [r for r in previous if (r["dataset"], r["model"], r["seed"]) not in ours] + kept
    record_path.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"landed {len(done)} runs into {args.csv}; records in {record_path}")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("pack", help="here: a dataset's interactions, pooled content and runs into a folder")
    p.add_argument("--dataset", required=True)
    p.add_argument("--models", nargs="+", help="default: the config's baselines.models")
    p.add_argument("--seeds", nargs="+", type=int, help="default: the config's baselines.seeds")
    p.add_argument("--out", type=Path, required=True)
    t = commands.add_parser("train", help="there: every packed run, --workers at once; one JSON line per run")
    t.add_argument("--pack", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda where there is one")
    ld = commands.add_parser("land", help="here: the finished runs' test rows into the CSV")
    ld.add_argument("--runs", type=Path, required=True)
    ld.add_argument("--csv", type=Path, default=RESULTS / "baselines.csv")
    ld.add_argument("--record", type=Path, help="default: bench/results/device_baselines_<device>.json")
    args = parser.parse_args()
    {"pack": pack, "train": train, "land": land}[args.command](args)


if __name__ == "__main__":
    main()
