"""Our LightGCN negative samplers beside their authors' code, on the same data, in one run.

    taskset -c 0 .venv/bin/python bench/samplers_reference.py --home $NEGGEN_HOME --dataset ml100k \\
        --epochs 26 --seeds 2024 --mixgcf /tmp/MixGCF --ahns /tmp/AHNS --dens /tmp/DENS/DENS \\
        --shi /tmp/WWW_2023_code

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

DNS(M,N) also runs in Shi et al.'s own code (swt-user/WWW_2023_code, `--shi`, the folder holding
main_more.py; strategies `dns_shi` on LightGCN and `dns_shi_mf` on MF, rows `lightgcn_dns_shi` and
`bpr_dns_shi_mf`): `python main_more.py --loss_type 1 --sampler 0 --sample_num M --lambda_w N` with
`--model 4` (their LightGCN) or `--model 0` (their MF; ours: BPR-MF, `bpr`). Their sampler draws the
M candidates uniformly from all items, the user's training items included (ours: from the items the
user did not train on); their loss is BPR of the positive against the N highest-scored candidates,
summed over the N and the batch (ours: averaged; under Adam a constant factor of the whole loss
changes nothing but the effect of its epsilon). Their RecData reads `datasets/<data>data.mat`, one
user x item matrix `data` it splits at random, 80/20 per user: `export_shi` writes `data` (our
training and validation pairs) and that split itself (`train`; `test`, our validation pairs), and
RecData.split_matrix returns the file's split instead of drawing one. They score the test split
after every tenth epoch from the first and at the end (epochs 1, 11, 21, 26 of 26), Recall@20 as ours
(training items masked, hits / held-out items, averaged over the users that have some). Settings:
embedding 64 (`--dims`), Adam lr 1e-3 held constant (their StepLR with `--gamma 1`), batch 2048 (both
train the last partial batch), `--lgn_n_layer` our n_layers, `--seed` with `--fix_seed`, `--device
cpu`, and no L2 on either side: their only L2 is Adam's `--weight_decay` on every row at every step,
which no reg_weight (the batch's rows) equals, so `--weight_decay 0` and our reg_weight 0
(TRAIN_OVERRIDES). Init is theirs: Xavier normal for their LightGCN, N(0, 0.1) for their MF (ours:
Xavier uniform). Their LightGCN is not LightGCN: dataloader.build_sparse_graph indexes the 2 x nnz
array of (row, col) as if it were nnz x 2, so the normalised graph holds 4 entries (user 0 with items
0 and 1), every other node propagates to zero, and its mean over layers 0..L is MF on the ego
embeddings / (L + 1); hence the MF comparison too. Patched in their process only: np.int and
np.float (removed in numpy 1.24), numpy.lib.function_base (private in numpy 2; model.py imports
`select` from it and never calls it), torch.Tensor.to sends "cuda" to the CPU (their LightGCN puts
its graph and item ids on "cuda" whatever `--device` says), RecData.split_matrix (above). Their log
has no timings: the seconds of an epoch and of an evaluation are the differences of its line
timestamps (milliseconds).

The MixGCF family, both sides: embedding 64, Adam 1e-3, batch 2048, Xavier init, LightGCN with our n_layers
(their --context_hops) and mean pooling of the layers (--pool mean), L2 weight our reg_weight =
their --l2 (both 0.5 x the batch's squared ego norms / batch size), one negative per positive
(--K 1), the strategy's parameters from our typed config (defaults: our table of strategies).
Each side in its own process with one thread (run the script under `taskset -c 0`). Printed: best
validation Recall@20 and its epoch, median seconds per training epoch and per evaluation, peak
RSS, then per strategy the seconds per epoch against uniform sampling on the same side and ours
against the reference. Rows: bench/results/baselines_reference.csv (`side` = ours or the
reference's name; `model` = lightgcn for uniform, else lightgcn_<strategy>, bpr_dns_shi_mf for MF).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.baselines_reference import (  # noqa: E402
    as_argv,
    describe,
    reference_result,
    run_script,
    run_worker,
    save_rows,
    train_ours,
    write_stubs,
)

# Our strategy -> (the reference that runs it, its --ns; Shi et al.'s code has no --ns). dns_shi and
# dns_shi_mf are our dns against Shi et al.'s code, on LightGCN and on MF: keys of their own, so their
# rows and run settings stay apart from dns against the AHNS code.
REFERENCE_NS = {
    "uniform": ("ahns", "rns"),
    "dns": ("ahns", "dns_mn"),
    "mixgcf": ("mixgcf", "mixgcf"),
    "dens": ("dens", "dens"),
    "ahns": ("ahns", "ahns"),
    "dns_shi": ("shi", None),
    "dns_shi_mf": ("shi", None),
}
# A comparison's key -> our strategy, where they differ.
OUR_STRATEGY = {"dns_shi": "dns", "dns_shi_mf": "dns"}
# A comparison's key -> our model, where not LightGCN; Shi et al.'s --model for each of ours.
OUR_MODEL = {"dns_shi_mf": "bpr"}
SHI_MODEL = {"lightgcn": 4, "bpr": 0}
# A comparison's key -> our TrainConfig fields it changes. Shi et al.'s only L2 is Adam's weight_decay
# on every row at every step, which no reg_weight (the batch's rows) equals: both sides run without L2.
TRAIN_OVERRIDES = {"dns_shi": {"reg_weight": 0.0}, "dns_shi_mf": {"reg_weight": 0.0}}
# Each reference reads "user item item ..." lines (no item-id remapping, test set = validation set)
# only for these dataset folder names.
REFERENCE_FOLDER = {"mixgcf": "yelp2018", "ahns": "ml", "dens": "baby"}
# Our sampler params -> the references' flags.
REFERENCE_FLAG = {"candidates": "n_negs", "hardest": "topk", "alpha": "alpha", "beta": "beta", "p": "p",
                  "gate_weight": "gamma", "warmup_epochs": "warmup"}  # fmt: skip


def model_name(key: str) -> str:
    return "lightgcn" if key == "uniform" else f"{OUR_MODEL.get(key, 'lightgcn')}_{key}"


def sampler_config(key: str, params: dict):
    from pydantic import TypeAdapter

    from neggen_model.config import NegativeSamplerConfig

    return TypeAdapter(NegativeSamplerConfig).validate_python({"strategy": OUR_STRATEGY.get(key, key)} | params)


def train_config(key: str, **fields):
    from neggen_model.config import TrainConfig

    return TrainConfig(**TRAIN_OVERRIDES.get(key, {}), **fields)


def evaluated_epochs(reference: str, epochs: int) -> list[int]:
    """The epochs (from 1) after which a reference scores its test file, in the order of its log:
    every fifth from the first (the MixGCF family); Shi et al.'s every tenth from the first, then
    once more at the end of the run."""
    if reference == "shi":
        return [*range(1, epochs + 1, 10), epochs]
    return list(range(1, epochs + 1, 5))


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


def export_shi(train, held_out, path: Path) -> None:
    """The .mat file Shi et al.'s RecData reads (`<data>data.mat`): `data`, the user x item matrix it
    would split at random per user, here our training and validation pairs; and that split, `train`
    and `test` (our validation matrix), which the worker's RecData.split_matrix returns instead."""
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    train, held_out = (matrix.tocsr().astype(bool).astype(float) for matrix in (train, held_out))  # their recall's denominators sum the values
    scipy.io.savemat(path, {"data": train + held_out, "train": train, "test": held_out})


def load_data(args):
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    return load_interaction_data(DatasetStore(args.home, args.dataset))


def worker_ours(args) -> dict:
    import torch

    torch.set_num_threads(1)
    config = train_config(args.strategy, seed=args.seed, epochs=args.epochs, early_stop_patience=args.epochs,
                          negative_sampler=sampler_config(args.strategy, json.loads(args.params)))  # fmt: skip
    log = Path(args.workdir) / f"ours_{args.dataset}-{model_name(args.strategy)}-{args.seed}.json"
    return train_ours(OUR_MODEL.get(args.strategy, "lightgcn"), load_data(args), config, log)


def worker_reference(args) -> dict:
    """The reference's main script, unmodified, run as `python main.py ...` in this process on CPU."""
    import torch

    torch.set_num_threads(1)
    reference = REFERENCE_NS[args.strategy][0]
    worker = worker_shi if reference == "shi" else worker_mixgcf_family
    return worker(args, Path(getattr(args, reference)).resolve())


def worker_mixgcf_family(args, checkout: Path) -> dict:
    """MixGCF's, the AHNS or the DENS authors' main.py with `--ns`."""
    import argparse as argparse_module
    import random

    import numpy as np
    import torch

    reference, ns = REFERENCE_NS[args.strategy]
    folder = REFERENCE_FOLDER[reference]
    run_dir = Path(args.workdir) / f"{reference}_{args.dataset}"
    data = load_data(args)
    export_mixgcf_family(data.train, data.valid, run_dir / "data" / folder)
    train = train_config(args.strategy)
    flags = {"dataset": folder, "data_path": "data/", "gnn": "lightgcn", "epoch": args.epochs, "batch_size": train.batch_size,
             "dim": train.embedding_size, "lr": train.learning_rate, "l2": train.reg_weight, "context_hops": train.n_layers,
             "pool": "mean", "K": 1, "ns": ns, "n_negs": 1, "Ks": "[20]", "cuda": ""}  # fmt: skip
    params = sampler_config(args.strategy, json.loads(args.params)).model_dump(exclude={"strategy"})
    flags |= {REFERENCE_FLAG[key]: value for key, value in params.items()}

    os.chdir(run_dir)
    stubs = write_stubs(Path(args.workdir))
    (stubs / "prettytable.py").write_text(
        "class PrettyTable:\n    def __init__(self):\n        self.field_names, self.rows = [], []\n"
        "    def add_row(self, row):\n        self.rows.append(row)\n"
        "    def __str__(self):\n"
        "        return '\\n'.join('TABLE ' + ' | '.join(f'{n}={v}' for n, v in zip(self.field_names, r)) for r in self.rows)\n"
    )
    sys.path[:0] = [str(stubs), str(checkout)]
    np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)
    for module, name in ((random, "seed"), (np.random, "seed"), (torch, "manual_seed")):
        setattr(module, name, lambda _literal, seed_with=getattr(module, name): seed_with(args.seed))
    parse_args = argparse_module.ArgumentParser.parse_args
    argparse_module.ArgumentParser.parse_args = lambda self, args=None, namespace=None: parse_args(
        self, None if args == [] else args, namespace
    )
    log = Path(args.workdir) / f"{reference}_{args.dataset}-{model_name(args.strategy)}-{args.seed}.log"
    wall = run_script(checkout / "main.py", as_argv(flags), log)
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


def worker_shi(args, checkout: Path) -> dict:
    """Shi et al.'s main_more.py: DNS(M, N) (`--loss_type 1`, M = `--sample_num` uniform candidates
    from `--sampler 0`, N = `--lambda_w`) on their LightGCN (`--model 4`) or MF (`--model 0`), on our split."""
    import importlib
    import types

    import numpy as np
    import scipy.io
    import torch

    run_dir = Path(args.workdir) / f"shi_{args.dataset}"
    data = load_data(args)
    export_shi(data.train, data.valid, run_dir / "datasets" / f"{args.dataset}data.mat")
    train = train_config(args.strategy)
    params = sampler_config(args.strategy, json.loads(args.params))
    name = f"{args.dataset}-{model_name(args.strategy)}-{args.seed}"
    # weight_decay 0 and reg_weight 0 (TRAIN_OVERRIDES); gamma 1: their StepLR keeps the rate constant, as ours.
    flags = {"data": args.dataset, "data_dir": "datasets", "model": SHI_MODEL[OUR_MODEL.get(args.strategy, "lightgcn")], "lgn_n_layer": train.n_layers, "dims": train.embedding_size,
             "sampler": 0, "sample_num": params.candidates, "loss_type": 1, "lambda_w": params.hardest,
             "batch_size": train.batch_size, "epoch": args.epochs, "optim": "adam", "learning_rate": train.learning_rate,
             "weight_decay": 0.0, "gamma": 1.0, "seed": args.seed, "device": "cpu", "log_path": "logs", "log_info": name}  # fmt: skip

    os.chdir(run_dir)
    sys.path.insert(0, str(checkout))
    np.int, np.float = int, float  # removed in numpy 1.24; their loader and NDCG use them
    function_base = types.ModuleType("numpy.lib.function_base")  # private in numpy 2; model.py imports
    function_base.select = np.select  # select from it and never calls it
    sys.modules[function_base.__name__] = function_base
    to = torch.Tensor.to  # their LightGCN puts its graph and item ids on "cuda", whatever --device says
    torch.Tensor.to = lambda self, *a, **k: to(self, *("cpu" if isinstance(x, str) and x == "cuda" else x for x in a), **k)

    def exported_split(self, mat, ratio):  # instead of a random per-user split of `data` at `ratio`
        split = scipy.io.loadmat(self.file_name)
        return split["train"].tocsr(), split["test"].tocsr()

    importlib.import_module("dataloader").RecData.split_matrix = exported_split
    for stale in (run_dir / "logs").glob(f"{name}_*"):
        stale.unlink()
    wall = run_script(checkout / "main_more.py", [*as_argv(flags), "--fix_seed"], run_dir / "stdout.log")
    (log,) = (run_dir / "logs").glob(f"{name}_*.txt")
    return reference_result(*shi_log(log.read_text(), args.epochs), wall, evaluated_epochs("shi", args.epochs))


def shi_log(text: str, epochs: int) -> tuple[list[float], list[float], list[float]]:
    """Validation Recall@20 at each evaluation, and seconds of each epoch's training and each
    evaluation, from the timestamps of Shi et al.'s log lines ("Epoch i" ... "--loss", "Start
    evaluation" ... "Eval_Res : NDCG")."""
    from datetime import datetime

    recalls, train, evals, began = [], [], [], None
    for line in text.splitlines():
        stamp = re.match(r"\[([\d-]+ [\d:]+,\d+)\]", line)
        if not stamp:
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if re.search(r"\] (Epoch \d+|Start evaluation)$", line):
            began = at
        elif "--loss :" in line:
            train.append(at - began)
        elif "Eval_Res : NDCG@5,20,50" in line:
            evals.append(at - began)
        elif recall := re.search(r"Eval_Res : RECALL@5,20,50 [\d.]+, ([\d.]+),", line):
            recalls.append(float(recall.group(1)))
    if len(train) != epochs or len(recalls) != len(evaluated_epochs("shi", epochs)):
        raise RuntimeError(f"Shi et al.'s log has {len(train)} epochs and {len(recalls)} evaluations")
    return recalls, train, evals


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
    parser.add_argument("--shi", type=Path, default=Path("/tmp/WWW_2023_code"), help="Shi et al.'s checkout (holds main_more.py)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/samplers_reference"))
    parser.add_argument("--csv", type=Path, default=REPO / "bench" / "results" / "baselines_reference.csv")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if (args.epochs - 1) % 5 and any(REFERENCE_NS[key][0] != "shi" for key in ([args.strategy] if args.worker else args.strategies)):
        parser.error("--epochs must be 1 + a multiple of 5: the MixGCF family validates every fifth epoch from the first")
    if args.worker:
        result = {"ours": worker_ours, "reference": worker_reference}[args.worker](args)
        print("RESULT " + json.dumps(result))
        return
    import pandas as pd

    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for strategy in args.strategies:
        params = sampler_config(strategy, json.loads(args.params).get(strategy, {})).model_dump(exclude={"strategy"})
        for seed in args.seeds:
            for worker in ("ours", "reference"):
                side = "ours" if worker == "ours" else REFERENCE_NS[strategy][0]
                command = [sys.executable, __file__, "--worker", worker, "--strategy", strategy, "--home", args.home,
                           "--dataset", args.dataset, "--seed", str(seed), "--epochs", str(args.epochs),
                           "--params", json.dumps(params), "--mixgcf", str(args.mixgcf), "--ahns", str(args.ahns),
                           "--dens", str(args.dens), "--shi", str(args.shi), "--workdir", str(args.workdir)]  # fmt: skip
                result = run_worker(command, f"{side} {strategy} seed {seed}")
                rows.append({"dataset": args.dataset, "model": model_name(strategy), "seed": seed, "side": side,
                             "params": json.dumps(params, sort_keys=True), "max_epochs": args.epochs, **result})  # fmt: skip
                note = ""
                if worker == "ours":
                    their_epochs = set(evaluated_epochs(REFERENCE_NS[strategy][0], args.epochs))
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
        # the reference's uniform run is the AHNS code's: no anchor for another code base
        other_code = [model_name(key) for key, (reference, _) in REFERENCE_NS.items() if reference == "shi"]
        summary.loc[summary.index.isin(other_code), ("x uniform", "reference")] = float("nan")
    summary[("train_seconds", "ours/reference")] = seconds["ours"] / seconds["reference"]
    summary[("eval_seconds", "ours/reference")] = summary[("eval_seconds", "ours")] / summary[("eval_seconds", "reference")]
    print(summary.sort_index(axis=1).round(4).to_string())


if __name__ == "__main__":
    main()
