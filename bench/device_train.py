"""LightGCN on a GPU versus the CPU of the same machine, on the real Amazon splits.

For each dataset: seconds per training epoch and per full validation evaluation on each
device (median of the epochs after a warm-up, measured in this one run), then, on the GPU, a
full training run to early stopping with the test split scored once at the best epoch.
For a session with a GPU (the `device` tool); prints a table and writes JSON to --out.

    python bench/device_train.py --data bench/data --out results.json [--max-epochs 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.models import build_model
from neggen_model.trainer import Trainer

TIMED_EPOCHS = 4  # the first is a warm-up and is not counted


def per_epoch(data: InteractionData, device: str) -> dict:
    config = TrainConfig(device=device, epochs=TIMED_EPOCHS, early_stop_patience=TIMED_EPOCHS)
    result = Trainer(build_model("lightgcn", data, config), data, config, progress=False).fit()
    timed = result.history[1:]
    return {
        "train_s": statistics.median(r["seconds"] for r in timed),
        "eval_s": statistics.median(r["eval_seconds"] for r in timed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with <name>/<name>.inter")
    parser.add_argument("--datasets", nargs="+", default=["baby", "beauty"])
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"torch {torch.__version__}; CPU threads {torch.get_num_threads()} ({platform.machine()}); GPU {gpu}")
    report = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "gpu": gpu, "datasets": {}}
    for name in args.datasets:
        data = InteractionData.from_inter_file(args.data / name / f"{name}.inter")
        entry = {"cpu": per_epoch(data, "cpu")}
        if gpu:
            entry["cuda"] = per_epoch(data, "cuda")
            config = TrainConfig(device="cuda", epochs=args.max_epochs)
            started = time.perf_counter()
            result = Trainer(build_model("lightgcn", data, config), data, config, progress=False).fit()
            entry["full_run"] = {
                "wall_s": time.perf_counter() - started,
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "valid": result.best_valid,
                "test": result.test,
            }
        report["datasets"][name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
    print(f"\n{'dataset':<8}{'device':<6}{'s/epoch':>9}{'s/eval':>8}   cpu/gpu train, eval")
    for name, entry in report["datasets"].items():
        for device in ("cpu", "cuda"):
            if device in entry:
                e = entry[device]
                print(f"{name:<8}{device:<6}{e['train_s']:>9.3f}{e['eval_s']:>8.3f}", end="")
                if device == "cuda":
                    print(f"   {entry['cpu']['train_s'] / e['train_s']:.1f}x, {entry['cpu']['eval_s'] / e['eval_s']:.1f}x", end="")
                print()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
