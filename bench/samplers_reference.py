"""Our LightGCN negative samplers beside their authors' code, on the same data, in one run.

    taskset -c 0 .venv/bin/python bench/samplers_reference.py --home $NEGGEN_HOME --dataset ml100k \\
        --epochs 26 --seeds 2024 --mixgcf /tmp/MixGCF --ahns /tmp/AHNS --dens /tmp/DENS/DENS

The references are not part of this project: pass a checkout of each (the folder holding main.py).
MixGCF (huangtinglin/MixGCF, `--mixgcf`) for MixGCF; the AHNS authors' code (Riwei-HEU/AHNS,
`--ahns`), whose main.py has `--ns rns,dns,dns_mn,dens,mix,cns,ahns`, for AHNS, for DNS(M,N) (its
`dns_mn`, M = `--n_negs`, N = `--topk`) and for uniform sampling (its `rns`); the DENS authors' code
(Riwei-HEU/DENS, `--dens`, the folder DENS/ of that repository) for DENS (the AHNS code's `dens`
has no warm-up). The three share one code base (MixGCF's main.py, data loader and evaluator), so
one worker runs each of them: `python main.py ...` in this process, unmodified, on our split
written as they read it (`train.txt` / `test.txt`, lines "user item item ...", see
`export_mixgcf_family`). Their code has no validation split: it trains `--epoch` epochs and scores
test.txt after every fifth (epochs 1, 6, 11, ...), so test.txt holds our *validation* pairs and
their best number is the best validation Recall@20, the quantity in our column (both rank all
items with only the training items masked; recall = hits in the top 20 / the user's held-out
items, averaged over the users that have some). Their early stopping (10 evaluations without a
better recall, i.e. 50 epochs) cannot end a run of at most 51 epochs (26 in the README's runs); ours runs exactly as many
(patience = epochs), validating every epoch, and the driver also prints our best over their
evaluated epochs.

Patched in the reference's own process only (bench/baselines_reference.py does the same for
MMRec and DiffMM): np.asfarray (removed in numpy 2), a stub of prettytable (not installed here;
the stub prints each table row as `name=value` pairs for this script to read), the seed (their
main.py seeds random, numpy and torch with a literal, 2022 or 2020: those calls get `--seeds`),
and DENS's parse_args(args=[]) (written for a notebook) reads the command line as the others do.
Their `--cuda` is `type=bool`, so `--cuda ''` is how their own flags say CPU.

Both sides: embedding 64, Adam 1e-3, batch 2048, Xavier init, LightGCN with our n_layers
(their --context_hops) and mean pooling of the layers (--pool mean), L2 weight our reg_weight =
their --l2 (both 0.5 x the batch's squared ego norms / batch size), one negative per positive
(--K 1), the strategy's parameters from our typed config (defaults: our table of strategies).
Each side in its own process with one thread (run the script under `taskset -c 0`). Printed: best
validation Recall@20 and its epoch, median seconds per training epoch and per evaluation, peak
RSS, then per strategy the seconds per epoch against uniform sampling on the same side and ours
against the reference. Rows: bench/results/baselines_reference.csv (`side` = ours or the
reference's name; `model` = lightgcn for uniform, else lightgcn_<strategy>).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.baselines_reference import describe, reference_result, run_worker, save_rows, train_ours, write_stubs  # noqa: E402

# Our strategy -> (the reference that runs it, its --ns).
REFERENCE_NS = {
    "uniform": ("ahns", "rns"),
    "dns": ("ahns", "dns_mn"),
    "mixgcf": ("mixgcf", "mixgcf"),
    "dens": ("dens", "dens"),
    "ahns": ("ahns", "ahns"),
}
# Each reference reads "user item item ..." lines (no item-id remapping, test set = validation set)
# only for these dataset folder names.
REFERENCE_FOLDER = {"mixgcf": "yelp2018", "ahns": "ml", "dens": "baby"}
# Our sampler params -> the references' flags.
REFERENCE_FLAG = {"candidates": "n_negs", "hardest": "topk", "alpha": "alpha", "beta": "beta", "p": "p",
                  "gate_weight": "gamma", "warmup_epochs": "warmup"}  # fmt: skip


def model_name(strategy: str) -> str:
    return "lightgcn" if strategy == "uniform" else f"lightgcn_{strategy}"


def sampler_config(strategy: str, params: dict):
    from pydantic import TypeAdapter

    from neggen_model.config import NegativeSamplerConfig

    return TypeAdapter(NegativeSamplerConfig).validate_python({"strategy": strategy} | params)


def export_mixgcf_family(train, held_out, folder: Path) -> None:
    """train.txt and test.txt as MixGCF's loader reads them: per user, "user item item ..." (the
    user's items, ascending); train.txt lists every user with training items, test.txt every user
    with held-out items (`held_out`: our validation matrix, see the docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    for file, matrix in (("train.txt", train.tocsr()), ("test.txt", held_out.tocsr())):
        lines = []
        for user in range(matrix.shape[0]):
            items = sorted(matrix.indices[matrix.indptr[user] : matrix.indptr[user + 1]].tolist())
            if items:
                lines.append(" ".join(map(str, [user, *items])))
        (folder / file).write_text("\n".join(lines) + "\n")


def load_data(args):
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    return load_interaction_data(DatasetStore(args.home, args.dataset))


def worker_ours(args) -> dict:
    import torch

    torch.set_num_threads(1)
    from neggen_model.config import TrainConfig

    config = TrainConfig(seed=args.seed, epochs=args.epochs, early_stop_patience=args.epochs,
                         negative_sampler=sampler_config(args.strategy, json.loads(args.params)))  # fmt: skip
    log = Path(args.workdir) / f"ours_{args.dataset}-{model_name(args.strategy)}-{args.seed}.json"
    return train_ours("lightgcn", load_data(args), config, log)


def worker_reference(args) -> dict:
    """The reference's main.py, unmodified, run as `python main.py --ns ...` in this process on CPU."""
    import argparse as argparse_module
    import random
    import runpy

    import numpy as np
    import torch

    from neggen_model.config import TrainConfig

    reference, ns = REFERENCE_NS[args.strategy]
    checkout = Path(getattr(args, reference)).resolve()
    folder = REFERENCE_FOLDER[reference]
    run_dir = Path(args.workdir) / f"{reference}_{args.dataset}"
    data = load_data(args)
    export_mixgcf_family(data.train, data.valid, run_dir / "data" / folder)
    train = TrainConfig()
    flags = {"dataset": folder, "data_path": "data/", "gnn": "lightgcn", "epoch": args.epochs, "batch_size": train.batch_size,
             "dim": train.embedding_size, "lr": train.learning_rate, "l2": train.reg_weight, "context_hops": train.n_layers,
             "pool": "mean", "K": 1, "ns": ns, "n_negs": 1, "Ks": "[20]", "cuda": ""}  # fmt: skip
    params = sampler_config(args.strategy, json.loads(args.params)).model_dump(exclude={"strategy"})
    flags |= {REFERENCE_FLAG[key]: value for key, value in params.items()}
    sys.argv = ["main.py"] + [item for key, value in flags.items() for item in (f"--{key}", str(value))]

    os.chdir(run_dir)
    stubs = write_stubs(Path(args.workdir))
    (stubs / "prettytable.py").write_text(
        "class PrettyTable:\n    def __init__(self):\n        self.field_names, self.rows = [], []\n"
        "    def add_row(self, row):\n        self.rows.append(row)\n"
        "    def __str__(self):\n"
        "        return '\\n'.join('TABLE ' + ' | '.join(f'{n}={v}' for n, v in zip(self.field_names, r)) for r in self.rows)\n"
    )
    sys.path[:0] = [str(stubs), str(checkout)]
    torch.set_num_threads(1)
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)
    for module, name in ((random, "seed"), (np.random, "seed"), (torch, "manual_seed")):
        setattr(module, name, lambda _literal, seed_with=getattr(module, name): seed_with(args.seed))
    parse_args = argparse_module.ArgumentParser.parse_args
    argparse_module.ArgumentParser.parse_args = lambda self, args=None, namespace=None: parse_args(
        self, None if args == [] else args, namespace
    )
    log = Path(args.workdir) / f"{reference}_{args.dataset}-{model_name(args.strategy)}-{args.seed}.log"
    started = time.perf_counter()
    with open(log, "w") as handle, redirect_stdout(handle):
        runpy.run_path(str(checkout / "main.py"), run_name="__main__")
    wall = time.perf_counter() - started
    text = log.read_text()
    train_seconds = [float(s) for s in re.findall(r"using time ([\d.]+)s, training loss at epoch", text)]
    recalls, evals, evaluated = [], [], []
    for row in re.findall(r"^TABLE (.*)$", text, flags=re.M):
        fields = dict(field.split("=", 1) for field in row.split(" | "))
        evaluated.append(int(fields["Epoch"]) + 1)
        train_seconds.append(float(fields["training time(s)"]))
        evals.append(float(fields["tesing time(s)"]))
        recalls.append(float(fields["recall"].strip("[]").split()[0]))
    return reference_result(recalls, train_seconds, evals, wall, evaluated)


def best_at(log: Path, epochs: set[int]) -> tuple[float, int]:
    """Our best validation Recall@20 over the given epochs (those a reference evaluates), and its epoch."""
    history = [h for h in json.loads(log.read_text()) if h["epoch"] in epochs]
    best = max(history, key=lambda h: h["valid_recall@20"])
    return best["valid_recall@20"], best["epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="NEGGEN_HOME with the dataset's interactions")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--strategies", nargs="+", default=list(REFERENCE_NS), choices=list(REFERENCE_NS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2024])
    parser.add_argument("--seed", type=int, default=2024, help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=26, help="exactly this many epochs on both sides (1 + a multiple of 5)")
    parser.add_argument("--params", default="{}", help="JSON params of the strategies (default: ours, the authors')")
    parser.add_argument("--mixgcf", type=Path, default=Path("/tmp/MixGCF"), help="MixGCF checkout (holds main.py)")
    parser.add_argument("--ahns", type=Path, default=Path("/tmp/AHNS"), help="the AHNS authors' checkout (holds main.py)")
    parser.add_argument("--dens", type=Path, default=Path("/tmp/DENS/DENS"), help="the DENS authors' DENS/ folder (holds main.py)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/samplers_reference"))
    parser.add_argument("--csv", type=Path, default=REPO / "bench" / "results" / "baselines_reference.csv")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if (args.epochs - 1) % 5:
        parser.error("--epochs must be 1 + a multiple of 5: the references validate every fifth epoch from the first")
    if args.worker:
        result = {"ours": worker_ours, "reference": worker_reference}[args.worker](args)
        print("RESULT " + json.dumps(result))
        return
    import pandas as pd

    args.workdir.mkdir(parents=True, exist_ok=True)
    their_epochs = set(range(1, args.epochs + 1, 5))
    rows = []
    for strategy in args.strategies:
        params = sampler_config(strategy, json.loads(args.params).get(strategy, {})).model_dump(exclude={"strategy"})
        for seed in args.seeds:
            for worker in ("ours", "reference"):
                side = "ours" if worker == "ours" else REFERENCE_NS[strategy][0]
                command = [sys.executable, __file__, "--worker", worker, "--strategy", strategy, "--home", args.home,
                           "--dataset", args.dataset, "--seed", str(seed), "--epochs", str(args.epochs),
                           "--params", json.dumps(params), "--mixgcf", str(args.mixgcf), "--ahns", str(args.ahns),
                           "--dens", str(args.dens), "--workdir", str(args.workdir)]  # fmt: skip
                result = run_worker(command, f"{side} {strategy} seed {seed}")
                rows.append({"dataset": args.dataset, "model": model_name(strategy), "seed": seed, "side": side,
                             "params": json.dumps(params, sort_keys=True), "max_epochs": args.epochs, **result})  # fmt: skip
                note = ""
                if worker == "ours":
                    recall, epoch = best_at(args.workdir / f"ours_{args.dataset}-{model_name(strategy)}-{seed}.json", their_epochs)
                    note = f" (at the reference's evaluated epochs: {recall:.4f} at epoch {epoch})"
                print(f"{strategy} seed {seed} {side:6s}: {describe(result)}{note}", flush=True)
                save_rows(args.csv, rows)  # after every run: a long series killed midway keeps what it measured
    table = pd.DataFrame(rows)
    table["side"] = table["side"].where(table["side"] == "ours", "reference")
    summary = table.pivot_table(index="model", columns="side", values=["best_valid_recall@20", "train_seconds", "eval_seconds", "peak_mib"], aggfunc="mean")
    seconds = summary["train_seconds"]
    if "lightgcn" in seconds.index:  # uniform sampling ran: each side's epoch against its own uniform epoch
        for side in seconds.columns:
            summary[("x uniform", side)] = seconds[side] / seconds.loc["lightgcn", side]
    summary[("train_seconds", "ours/reference")] = seconds["ours"] / seconds["reference"]
    summary[("eval_seconds", "ours/reference")] = summary[("eval_seconds", "ours")] / summary[("eval_seconds", "reference")]
    print(summary.sort_index(axis=1).round(4).to_string())


if __name__ == "__main__":
    main()
