"""Where the NegGen stage's time goes, and what it takes now, on one dataset.

Measured in one run on this machine:

1. One training epoch and one validation pass of the shipped `neggen` (frozen base, linear encoder
   at the input) with the precomputed LightGCN([0; X]) rows in float32 and in bfloat16 (the
   dataset's `precision` or not), against a full propagation of the content every batch (the path
   before; same loss and gradients, tests/test_neggen_model.py), one thread each.
2. The whole stage as configured for the dataset (its variants, seeds and sweep), in a scratch
   copy of the dataset home that holds its inputs and trained LightGCN runs but no NegGen run, so
   every NegGen run trains from scratch: planned runs, distinct runs, and wall time with the
   configured `workers`.

    .venv/bin/python bench/neggen_stage_speed.py --dataset beauty [--keep-runs]

It prints and writes bench/results/neggen_stage_speed_<dataset>.md. With --keep-runs the NegGen runs
trained here are copied into the dataset's home (where none of the same key is), so the stage and
bench/neggen_study.py reuse them instead of training them again.

The dataset's `base_model` runs for the study's seeds must exist (materialize `neggen_model` once,
or the study bench); missing ones are trained here and counted in the wall time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import Report  # noqa: E402
from assets.resources import NeggenResource  # noqa: E402
from neggen_model.checkpoint import load_model  # noqa: E402
from neggen_model.evaluate import evaluate  # noqa: E402
from neggen_model.models.neggen import NegGen  # noqa: E402
from neggen_model.trainer import Trainer  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.storage import DatasetStore  # noqa: E402
from pipeline.study import neggen_train_config, planned_runs, stage_inputs, run_study  # noqa: E402
from pipeline.tables import BASE_MODEL as BASE_STAGE  # noqa: E402
from pipeline.tables import IMAGE_EMBEDDINGS as IMAGE_STAGE  # noqa: E402
from pipeline.tables import NEGGEN_MODEL as STAGE  # noqa: E402
from pipeline.tables import TEXT_EMBEDDINGS as TEXT_STAGE  # noqa: E402
from pipeline.training import BASE_MODEL, train_run  # noqa: E402
from pipeline.workers import usable_cores  # noqa: E402


PATHS = {  # name: (precision, precomputed rows)
    "precomputed rows, bfloat16": ("bfloat16", True),
    "precomputed rows, float32": ("float32", True),
    "propagation per batch, float32": ("float32", False),
}


def epoch_seconds(store: DatasetStore, train, study) -> dict[str, tuple[float, float]]:
    """{path: (one training epoch, one validation pass)} in seconds."""
    data, features, _ = stage_inputs(store)
    base = train_run(store, BASE_STAGE, BASE_MODEL, train.model_copy(update={"seed": study.seeds[0]}), data, False)
    seconds = {}
    for name, (precision, precomputed) in PATHS.items():
        base_model, _ = load_model(base.run_dir, data)
        config = study.model.model_copy(update={"precision": precision})
        model = NegGen(base_model, features, config, study.seeds[0])
        model.precomputed = precomputed  # False: the general path, a propagation per batch
        trainer = Trainer(model, data, neggen_train_config(base.config, config), progress=False)
        started = time.perf_counter()
        trainer._train_epoch()
        trained = time.perf_counter()
        evaluate(model, data, "valid", topk=base.config.topk, batch_size=base.config.eval_batch_size)
        seconds[name] = (trained - started, time.perf_counter() - trained)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--config", default=None)
    parser.add_argument("--workers", type=int, default=None, help="override the config's study workers")
    parser.add_argument("--keep-runs", action="store_true", help="copy the runs trained here into the dataset's home")
    args = parser.parse_args()
    report = Report()
    say = report.say
    resource, config = NeggenResource(config_path=args.config), load_config(args.config)
    store, train, study = resource.store(args.dataset), config.train_config(args.dataset), config.study_config(args.dataset)
    if args.workers is not None:
        study = study.model_copy(update={"workers": args.workers})

    torch.set_num_threads(1)
    seconds = epoch_seconds(store, train, study)
    slowest = max(epoch for epoch, _ in seconds.values())
    say(f"# The NegGen stage's time on {args.dataset} ({time.strftime('%Y-%m-%d')}, {usable_cores()} cores)\n")
    say(f"{args.dataset}: one neggen training epoch + one validation pass, 1 thread "
          f"(the stage runs precision {study.model.precision}):")  # fmt: skip
    for name, (epoch, validation) in seconds.items():
        say(f"  {name:32s} epoch {epoch:5.1f} s ({slowest / epoch:.1f}x)   validation {validation:.1f} s")

    _, features, _ = stage_inputs(store)
    planned, skipped = planned_runs(study, features)
    with tempfile.TemporaryDirectory(prefix="neggen-stage-") as scratch:
        copy = DatasetStore(Path(scratch), args.dataset)
        copy.root.mkdir(parents=True)
        for table in ("interactions", TEXT_STAGE, IMAGE_STAGE):
            if store.table_path(table).exists():
                shutil.copy2(store.table_path(table), copy.table_path(table))
        shutil.copytree(store.folder(BASE_STAGE), copy.folder(BASE_STAGE), dirs_exist_ok=True)
        torch.set_num_threads(usable_cores())
        started = time.perf_counter()
        result = run_study(copy, study, train, log=lambda line: say(f"  {line}"), write=False)
        wall = time.perf_counter() - started
        trained = sorted(copy.folder(STAGE).iterdir())
        if args.keep_runs:
            for run_dir in trained:
                if not list(store.folder(STAGE).glob(f"*-{run_dir.name.rsplit('-', 1)[1]}")):
                    shutil.copytree(run_dir, store.folder(STAGE) / run_dir.name)
        distinct = len(trained)
    say(f"{args.dataset}: the NegGen stage ({len(study.seeds)} seeds, variants {', '.join(study.variants)}, "
          f"sweep {dict(study.sensitivity)}; skipped {sorted(skipped)}): {len(planned)} NegGen runs planned, "
          f"{distinct} distinct trained from scratch, {study.workers} workers on {usable_cores()} cores: "
          f"{wall / 60:.1f} min wall ({len(result.metrics)} metric rows)")  # fmt: skip
    report.write(REPO / "bench" / "results" / f"neggen_stage_speed_{args.dataset}.md")


if __name__ == "__main__":
    main()
