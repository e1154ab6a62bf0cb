"""Speed and memory of the recommender core; writes bench/results/cf_perf.md.

Measures, on the real Amazon splits:
- seconds per LightGCN training epoch and per full validation evaluation on Baby;
- the same with the optimisations undone, as before/after ratios: the adjacency as a COO tensor
  (as MMRec builds it) or as CSR with torch's own backward, instead of CSR with the symmetric
  backward; propagation per evaluation batch of users instead of once per evaluation;
- an operator profile of one training epoch;
- peak resident memory of training and of evaluation on Beauty, each in a fresh process; the
  peak is the kernel's VmHWM, reset just before the phase (Linux /proc/self/clear_refs), because
  ru_maxrss would also count the imports and data loading (and is inherited across exec).

One run, on a machine whose 2 cores may be shared: read ratios rather than absolute seconds.

    .venv/bin/python bench/cf_perf.py
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neggen_model.config import TrainConfig  # noqa: E402
from neggen_model.data import InteractionData  # noqa: E402
from neggen_model.evaluate import evaluate, rank_metrics  # noqa: E402
from neggen_model.models import LightGCN, build_model  # noqa: E402
from neggen_model.trainer import Trainer  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data" / "amazon2014"
OUT = ROOT / "bench" / "results" / "cf_perf.md"


class NativeBackwardLightGCN(LightGCN):
    """The "before" of the symmetric-backward optimisation: torch differentiates the CSR product itself."""

    def propagate(self, user_ego, item_ego):
        layer = torch.cat([user_ego, item_ego], dim=0)
        total = layer
        for _ in range(self.n_layers):
            layer = torch.sparse.mm(self.norm_adj, layer)
            total = total + layer
        final = total / (self.n_layers + 1)
        return final[: self.n_users], final[self.n_users :]


class CooLightGCN(NativeBackwardLightGCN):
    """The adjacency in COO layout with torch's backward, as MMRec's LightGCN holds it."""

    def __init__(self, data, config):
        super().__init__(data, config)
        self.norm_adj = self.norm_adj.to_sparse_coo().coalesce()


def load(dataset: str) -> InteractionData:
    return InteractionData.from_inter_file(DATA_DIR / dataset / f"{dataset}.inter")


def epoch_seconds(model, data, config, epochs: int) -> list[float]:
    trainer = Trainer(model, data, config, progress=False)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        trainer._train_epoch()
        times.append(time.perf_counter() - started)
    return times


def eval_seconds(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def speed(repeats: int) -> dict:
    data = load("baby")
    config = TrainConfig()
    fast = build_model("lightgcn", data, config)
    native, coo = NativeBackwardLightGCN(data, config), CooLightGCN(data, config)
    # One warm-up epoch each (allocator, thread pool), then the timed ones.
    for model in (fast, native, coo):
        epoch_seconds(model, data, config, 1)
    train_after = epoch_seconds(fast, data, config, repeats)
    train_native = epoch_seconds(native, data, config, repeats)
    train_coo = epoch_seconds(coo, data, config, repeats)

    def frozen(batch_size: int) -> None:
        evaluate(fast, data, "valid", batch_size=batch_size)

    def per_batch(batch_size: int) -> None:
        with torch.no_grad():
            rank_metrics(fast.full_sort_predict, data.valid, data.train, config.topk, batch_size)

    frozen(config.eval_batch_size)
    evals = {
        (how.__name__, size): eval_seconds(lambda: how(size), repeats)
        for size in (config.eval_batch_size, 4096)
        for how in (frozen, per_batch)
    }

    trainer = Trainer(fast, data, config, progress=False)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer._train_epoch()
    profile = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    return {
        "train_after": train_after,
        "train_native": train_native,
        "train_coo": train_coo,
        "evals": evals,
        "profile": profile,
        "eval_users": int((data.valid.getnnz(axis=1) > 0).sum()),
    }


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def peak_memory(phase: str, eval_batch_size: int) -> dict:
    """Run in a child process: resident memory before one phase on Beauty and its peak during it."""
    data = load("beauty")
    config = TrainConfig()
    model = build_model("lightgcn", data, config)
    trainer = Trainer(model, data, config, progress=False)
    baseline = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    started = time.perf_counter()
    if phase == "train":
        trainer._train_epoch()
    else:
        evaluate(model, data, "test", mode="strict", batch_size=eval_batch_size)
    seconds = time.perf_counter() - started
    what = "one training epoch" if phase == "train" else f"full test ranking, strict, eval batch {eval_batch_size}"
    return {"what": what, "baseline_mib": baseline, "peak_mib": _status_mib("VmHWM"), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--memory-child", choices=["train", "eval"], help=argparse.SUPPRESS)
    parser.add_argument("--eval-batch", type=int, default=TrainConfig().eval_batch_size, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(peak_memory(args.memory_child, args.eval_batch)))
        return

    s = speed(args.repeats)
    child = [sys.executable, __file__, "--threads", str(args.threads), "--memory-child"]
    phases = [["train"], ["eval"], ["eval", "--eval-batch", "4096"]]
    memory = [json.loads(subprocess.run(child + p, check=True, capture_output=True, text=True).stdout) for p in phases]
    med = {k: median(v) for k, v in s.items() if isinstance(v, list)}
    ev = {key: median(v) for key, v in s["evals"].items()}
    size = TrainConfig().eval_batch_size
    n_batches = lambda b: -(-s["eval_users"] // b)  # noqa: E731
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    text = f"""# Recommender core: speed and memory

Generated by `bench/cf_perf.py` on {datetime.date.today().isoformat()}; machine: 2 cores CPU, torch
{torch.__version__} ({torch.get_num_threads()} threads). One run; the cores may be shared with other
work, so the ratios (both sides measured back to back in one process) say more than the seconds.
LightGCN with the default TrainConfig (dim 64, 3 layers, batch 2048, eval batch {TrainConfig().eval_batch_size}).
"Before / after" divides by the row above it that is marked as the current code (no ratio).

## LightGCN on Baby (19,445 users, 7,050 items, 118,551 training pairs)

| what | median seconds | runs | before / after |
|---|---|---|---|
| training epoch: CSR adjacency, symmetric backward (58 steps, full propagation per step) | {med['train_after']:.2f} | {fmt(s['train_after'])} | |
| training epoch: CSR, torch's own backward (before) | {med['train_native']:.2f} | {fmt(s['train_native'])} | {med['train_native'] / med['train_after']:.2f}x |
| training epoch: COO adjacency as in MMRec (before) | {med['train_coo']:.2f} | {fmt(s['train_coo'])} | {med['train_coo'] / med['train_after']:.2f}x |
| validation evaluation, eval batch {size}: propagation once (frozen) | {ev[('frozen', size)]:.2f} | {fmt(s['evals'][('frozen', size)])} | |
| same, propagation per user batch, {n_batches(size)} times (before) | {ev[('per_batch', size)]:.2f} | {fmt(s['evals'][('per_batch', size)])} | {ev[('per_batch', size)] / ev[('frozen', size)]:.2f}x |
| validation evaluation, eval batch 4096 (MMRec's; before): propagation once | {ev[('frozen', 4096)]:.2f} | {fmt(s['evals'][('frozen', 4096)])} | {ev[('frozen', 4096)] / ev[('frozen', size)]:.2f}x |
| same, propagation per user batch, {n_batches(4096)} times | {ev[('per_batch', 4096)]:.2f} | {fmt(s['evals'][('per_batch', 4096)])} | {ev[('per_batch', 4096)] / ev[('frozen', size)]:.2f}x |

Where the time goes (profile below): `aten::addmm` is the CSR propagation, 3 products forward
and 3 backward per step (each shows twice, nested); `index_put`/`fill_`/`copy_` are the backward
of the batch gathers, the concatenation of user and item tables and Adam. What was removed:
the transpose in the CSR backward (symmetric adjacency), the COO layout, and a propagation per
evaluation batch. Nothing in training or evaluation loops over users in Python, and no dense
users x items matrix exists: evaluation scores eval_batch_size x n_items at a time. Tried and
dropped: one joint gather over users+items instead of three (no gain beyond noise).

### Profile of one training epoch (torch.profiler, self CPU time)

```
{s['profile']}
```

## Peak memory on Beauty (22,363 users, 12,101 items), LightGCN, fresh process per phase

| phase | RSS before (MiB) | peak RSS during (MiB) | peak - before (MiB) | seconds |
|---|---|---|---|---|
""" + "\n".join(
        f"| {m['what']} | {m['baseline_mib']:.0f} "
        f"| {m['peak_mib']:.0f} | {m['peak_mib'] - m['baseline_mib']:.0f} | {m['seconds']:.2f} |"
        for m in memory
    ) + "\n"
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
