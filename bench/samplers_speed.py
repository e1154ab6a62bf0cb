"""Seconds per LightGCN training epoch of each negative-sampling strategy against uniform's.

Demo-sized synthetic data (neggen_model.synthetic: 1,500 users, 1,000 items, 27,000 training
pairs), or with `--dataset` a materialized dataset's interactions (NEGGEN_HOME), the default
TrainConfig (embedding 64, 3 layers, batch 2048) and each strategy's defaults. Epochs of the
strategies are interleaved round by round, so a neighbour's load on a shared core slows them alike;
the median epoch of each is compared. Run it on one core with one thread:

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/samplers_speed.py
    NEGGEN_HOME=... OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/samplers_speed.py --dataset beauty --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.resources import NeggenResource  # noqa: E402
from neggen_model.config import TrainConfig  # noqa: E402
from neggen_model.data import InteractionData  # noqa: E402
from neggen_model.models import build_model  # noqa: E402
from neggen_model.samplers import SAMPLERS  # noqa: E402
from neggen_model.synthetic import clustered_interactions  # noqa: E402
from neggen_model.trainer import Trainer  # noqa: E402
from pipeline.study import stage_data  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
#: The speed targets of issue 12, as multiples of uniform's epoch.
TARGETS = {"dns": 2.0, "ahns": 2.0, "mixgcf": 3.0}
#: Each strategy at its defaults, and DNS(M, N) at Shi et al.'s example command.
SETTINGS: dict[str, dict] = {name: {"strategy": name} for name in SAMPLERS} | {
    "dns 200/2": {"strategy": "dns", "candidates": 200, "hardest": 2}
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed epochs per strategy")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dataset", help="a dataset of the home (NEGGEN_HOME) whose interactions are materialized")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.dataset:
        data = stage_data(NeggenResource().store(args.dataset))
    else:
        # per_user 22 keeps 18 training items per user (2 valid, 2 test): 27,000 training pairs.
        data = InteractionData.from_frame(clustered_interactions(n_users=1500, n_items=1000, n_clusters=10, per_user=22, seed=0))
    trainers = {}
    for label, sampler in SETTINGS.items():
        config = TrainConfig(negative_sampler=sampler)
        trainers[label] = Trainer(build_model("lightgcn", data, config), data, config, progress=False)
        trainers[label]._train_epoch()  # warm-up: first-touch allocations, lazy initialisation
    seconds: dict[str, list[float]] = {label: [] for label in trainers}
    for _ in range(args.rounds):
        for label, trainer in trainers.items():
            started = time.perf_counter()
            trainer._train_epoch()
            seconds[label].append(time.perf_counter() - started)
    uniform = statistics.median(seconds["uniform"])
    lines = [f"LightGCN on {args.dataset or 'synthetic demo-sized data'}, {data.n_users} users x {data.n_items} items, "
             f"{data.train.nnz} training pairs, {args.threads} thread(s), median of {args.rounds} epochs, "
             f"{time.strftime('%Y-%m-%d', time.gmtime())}",
             f"{'setting':<10} {'parameters':<52} {'s/epoch':>8} {'x uniform':>9} {'target':>7}"]  # fmt: skip
    for label, times in seconds.items():
        sampler = trainers[label].config.negative_sampler
        shown = ", ".join(f"{k} {v:g}" for k, v in sampler.model_dump(exclude={"strategy"}).items())
        median = statistics.median(times)
        target = f"<= {TARGETS[label]:g}" if label in TARGETS else ""
        lines.append(f"{label:<10} {shown:<52} {median:>8.3f} {median / uniform:>9.2f} {target:>7}")
    print("\n".join(lines))
    out = RESULTS / f"samplers_speed_{args.dataset or 'synthetic'}.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out.relative_to(RESULTS.parents[1])}")


if __name__ == "__main__":
    main()
