"""Our IRGAN beside its authors' code (geek-ai/irgan, `item_recommendation/`), on the same data, from
the same pre-trained generator, in one run; both scored by our evaluator.

    .venv/bin/python bench/irgan_reference.py --home /tmp/home --dataset ml100k \\
        --irgan /tmp/irgan/item_recommendation --tf-python /tmp/tfvenv/bin/python --epochs 50

The authors' code is Python 2 + TensorFlow 1 and not part of this project: pass the folder holding
their cf_gan.py (`--irgan`) and the Python of a separate environment with TensorFlow 2 for CPU and
numpy < 2 (`--tf-python`; bench prerequisite: `pip install tensorflow-cpu==2.18.0 numpy==1.26.4`,
their utils use np.asfarray, removed in numpy 2). Their algorithm is not changed. Mechanical
Python-3 patches of a copy (PY3_PATCHES, each must match exactly): print statements, cPickle ->
pickle (binary file modes), dict.keys() lists, and `import tensorflow.compat.v1 as tf` (with v2
behaviour disabled: their graphs, placeholders and sessions). In their process, before their main():
- the constants at the top of cf_gan.py are set to this dataset and our embedding size (USER_NUM,
  ITEM_NUM, all_items, EMB_DIM 64 instead of 5), `cores` to 1 (their evaluation's process pool: one
  core here), their session to one thread, and numpy's and TensorFlow's seeds to --seed (they set none);
- their hard-coded 15 rounds of (100 D epochs, 50 G epochs) are cut after --epochs G epochs by the
  hook on their evaluation, which they call after every G epoch;
- `--discriminator-start bpr` also hands their DIS the pre-trained weights (as ours starts D);
  their own code starts D from random (uniform ±0.05), the default here.

Same data: `ml-100k/movielens-100k-train.txt` holds our training pairs, `-test.txt` our *validation*
pairs (user \\t item \\t rating; they keep ratings > 3.99, so every pair is written with rating 5), so
their numbers are validation numbers. Same start: their generator reads `model_dns_ori.pkl`, the
list [user embeddings, item embeddings, item biases]; it is written here (never theirs: the pickles
in their repository are not read) from the BPR-MF pre-training of our side (this project's
`irgan_pretraining`, the baselines stage's), with zero item biases (our BPR-MF has none).
One evaluator: after every G epoch (and before training) the hook saves their generator's weights
(.npz), and Recall@20 of each is computed by our rank_metrics exactly as our IRGAN's validation
is (all items ranked, training items masked). Their own P@k/NDCG@k evaluation still runs, unchanged
(its seconds are their eval_seconds).

Epochs: an epoch of ours is one D step and one G step per batch over every training pair; their
D epoch is one pass over the training pairs (batch 16, SGD 1e-3) and their G epoch one SGD step per
user (2 x |positives| draws). Their schedule runs 2 D epochs per G epoch; train_seconds of their row
is one D epoch + one G epoch (the work of one of ours), with d_epoch_seconds and g_epoch_seconds
beside it. The core is shared, so each side also reports train_cpu_seconds, the same quantity in
its process's CPU time (time.process_time), which a neighbour on the core does not inflate; ours is
the CPU time of the whole fit() over its epochs (its validations, about 0.3% of it, included). Rows go to bench/results/baselines_reference.csv (model irgan, sides ours and authors /
authors+d_from_bpr), each side in its own process pinned to one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from baselines_reference import REPO, _peak_mib, our_result, reference_result, run_worker, save_rows

# (file, old, new, expected count): the mechanical Python 2 -> 3 patches of their code.
PY3_PATCHES = [
    *[(file, "import tensorflow as tf\n", "import tensorflow.compat.v1 as tf\n", 1) for file in ("cf_gan.py", "gen_model.py", "dis_model.py")],
    *[(file, "import cPickle\n", "import pickle as cPickle\n", 1) for file in ("cf_gan.py", "gen_model.py", "dis_model.py")],
    *[(file, "cPickle.dump(param, open(filename, 'w'))", "cPickle.dump(param, open(filename, 'wb'))", 1) for file in ("gen_model.py", "dis_model.py")],
    ("cf_gan.py", 'cPickle.load(open(workdir + "model_dns_ori.pkl"))', 'cPickle.load(open(workdir + "model_dns_ori.pkl", "rb"))', 1),
    ("cf_gan.py", "all_users = user_pos_train.keys()", "all_users = list(user_pos_train.keys())", 1),
    ("cf_gan.py", "test_users = user_pos_test.keys()", "test_users = list(user_pos_test.keys())", 1),
]  # fmt: skip
PRINT_STATEMENT = re.compile(r"^(\s*)print (.+)$", re.M)
PRINT_STATEMENTS = {"cf_gan.py": 5}
THEIR_FILES = ("cf_gan.py", "gen_model.py", "dis_model.py", "utils.py")
SIDES = {"authors": "random", "authors+d_from_bpr": "bpr"}  # side -> how their D starts
G_EPOCHS_PER_ROUND = 50  # their schedule: each round is 100 D epochs, then 50 G epochs


class _Finished(Exception):
    """Raised by the evaluation hook after the last G epoch asked for."""


def python3_copy(irgan: Path, folder: Path) -> None:
    """Their four modules, patched for Python 3 (PY3_PATCHES and print statements), into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = {file: (irgan / file).read_text() for file in THEIR_FILES}
    for file, old, new, count in PY3_PATCHES:
        if sources[file].count(old) != count:
            raise SystemExit(f"{file}: expected {count} x {old!r}: not the code these patches were written for")
        sources[file] = sources[file].replace(old, new)
    for file, source in sources.items():
        source, count = PRINT_STATEMENT.subn(r"\1print(\2)", source)
        if count != PRINT_STATEMENTS.get(file, 0):
            raise SystemExit(f"{file}: {count} print statements, expected {PRINT_STATEMENTS.get(file, 0)}")
        (folder / file).write_text(source)


def worker_ours(args) -> dict:
    """Our IRGAN (its defaults, pretrain: bpr), from the baselines stage's BPR-MF pre-training,
    whose weights are also saved for their side (bpr_start)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from neggen_model.checkpoint import load_model
    from neggen_model.config import TrainConfig
    from neggen_model.models import BASELINES, build_model
    from neggen_model.trainer import Trainer
    from pipeline.baselines import irgan_pretraining
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    store = DatasetStore(args.home, args.dataset)
    data = load_interaction_data(store)
    params = json.loads(args.params)
    pretraining = irgan_pretraining(store, BASELINES["irgan"].parse_params(params), TrainConfig(seed=args.seed), data)
    bpr = load_model(pretraining.run_dir, data)[0]
    np.savez(bpr_start(args), user=bpr.user_embedding.detach().numpy(), item=bpr.item_embedding.detach().numpy())
    config = TrainConfig(seed=args.seed, epochs=args.epochs, early_stop_patience=args.epochs)  # fixed epochs, as theirs
    started = time.perf_counter()
    model = build_model("irgan", data, config, params=params, pretrained=bpr)
    setup = time.perf_counter() - started
    cpu = time.process_time()
    result = Trainer(model, data, config, progress=False).fit()
    cpu = (time.process_time() - cpu) / result.epochs_run
    record = our_result(result, setup, Path(args.workdir) / f"ours_{args.dataset}-irgan-{args.seed}.json")
    return record | {"start_valid_recall@20": result.history[0]["valid_recall@20"], "train_cpu_seconds": cpu}


def bpr_start(args) -> Path:
    return Path(args.workdir) / f"bpr_{args.dataset}-{args.seed}.npz"


def export_their_data(home: str, dataset: str, folder: Path) -> None:
    """Our training and validation pairs as their movielens-100k-train.txt / -test.txt (rating 5)."""
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    data = load_interaction_data(DatasetStore(home, dataset))
    folder.mkdir(parents=True, exist_ok=True)
    for file, matrix in (("movielens-100k-train.txt", data.train), ("movielens-100k-test.txt", data.valid)):
        pairs = matrix.tocoo()
        (folder / file).write_text("".join(f"{u}\t{i}\t5\n" for u, i in zip(pairs.row, pairs.col)))


def worker_authors(args) -> dict:
    """Their cf_gan.main() in this process (the TensorFlow environment): see the module docstring."""
    import linecache
    import pickle

    import numpy as np

    run_dir = Path(args.workdir) / f"irgan_{args.dataset}-{args.seed}-{args.side}"
    snapshots = run_dir / "snapshots"
    shutil.rmtree(snapshots, ignore_errors=True)
    snapshots.mkdir(parents=True)
    start = np.load(bpr_start(args))
    pretrained = [start["user"], start["item"], np.zeros(start["item"].shape[0], dtype=np.float32)]
    with open(run_dir / "ml-100k" / "model_dns_ori.pkl", "wb") as handle:
        pickle.dump(pretrained, handle)
    python3_copy(Path(args.irgan), run_dir / "code")
    os.chdir(run_dir)  # they read and write ml-100k/...
    sys.path.insert(0, str(run_dir / "code"))
    started = time.perf_counter()
    import tensorflow.compat.v1 as tf

    tf.disable_v2_behavior()
    np.random.seed(args.seed)
    tf.set_random_seed(args.seed)
    import cf_gan  # loads their data files (module level)

    n_users, emb_dim = start["user"].shape
    n_items = start["item"].shape[0]
    cf_gan.USER_NUM, cf_gan.ITEM_NUM, cf_gan.EMB_DIM = n_users, n_items, emb_dim
    cf_gan.all_items, cf_gan.cores = set(range(n_items)), 1
    config_proto = tf.ConfigProto
    cf_gan.tf.ConfigProto = lambda: config_proto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    if SIDES[args.side] == "bpr":
        their_dis = cf_gan.DIS
        cf_gan.DIS = lambda *a, **k: their_dis(*a, **(k | {"param": pretrained}))
    events = {"generate_for_d": [], "eval": []}  # start times; eval: (start, end); each (wall, CPU)
    their_generate, their_test = cf_gan.generate_for_d, cf_gan.simple_test

    def generate_for_d(*a, **k):
        events["generate_for_d"].append(_clocks())
        return their_generate(*a, **k)

    def simple_test(sess, model):
        if not isinstance(model, cf_gan.GEN):
            return their_test(sess, model)
        begun = _clocks()
        user, item, bias = sess.run(model.g_params)
        np.savez(snapshots / f"{len(events['eval']):04d}.npz", user=user, item=item, bias=bias)
        result = their_test(sess, model)
        events["eval"].append((begun, _clocks()))
        if len(events["eval"]) > args.epochs:  # the first evaluation is of the start, before any epoch
            raise _Finished
        return result

    cf_gan.generate_for_d, cf_gan.simple_test = generate_for_d, simple_test
    try:
        cf_gan.main()
    except _Finished:
        pass
    wall = time.perf_counter() - started
    # Their D batches are read with linecache, which caches a file's lines on first read and does not
    # look again: whether what it holds now differs from the latest negatives written to the file.
    d_file = cf_gan.DIS_TRAIN_FILE
    stale = linecache.getlines(d_file) != Path(d_file).read_text().splitlines(keepends=True)
    return {"events": events, "started": started, "wall": wall, "peak_mib": _peak_mib(), "d_negatives_stale": stale}


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def their_epochs(events: dict, clock: int) -> tuple[float, float]:
    """Median seconds of their D epoch and G epoch on one clock (0 wall, 1 CPU): G epoch = from one
    evaluation's end to the next's start (not the first of a round, which follows the round's D
    epochs); D epoch = the time between successive negative draws for D (every 5 D epochs) / 5."""
    import numpy as np

    evals = [(begun[clock], end[clock]) for begun, end in events["eval"]]
    g_epochs = [evals[k + 1][0] - evals[k][1] for k in range(1, len(evals) - 1) if k % G_EPOCHS_PER_ROUND != 0]
    draws = events["generate_for_d"]
    round_of = np.searchsorted([begun[0] for begun, _ in events["eval"]], [at[0] for at in draws])  # same round
    d_epochs = [(b[clock] - a[clock]) / 5 for a, b, ra, rb in zip(draws, draws[1:], round_of, round_of[1:]) if ra == rb]
    return float(np.median(d_epochs)), float(np.median(g_epochs))


def their_record(run: dict, recalls: list[float]) -> dict:
    """Their row from the worker's event times (their_epochs) and our Recall@20 of each snapshot."""
    evals = [(begun[0], end[0]) for begun, end in run["events"]["eval"]]
    d, g = their_epochs(run["events"], 0)
    d_cpu, g_cpu = their_epochs(run["events"], 1)
    record = reference_result(recalls[1:], [d + g] * (len(evals) - 1), [end - begun for begun, end in evals], run["wall"])
    best = record["best_valid_recall@20"]
    return record | {
        "best_valid_recall@20": max(best, recalls[0]),
        "best_epoch": record["best_epoch"] if best >= recalls[0] else 0,
        "start_valid_recall@20": recalls[0],
        "d_epoch_seconds": d,
        "g_epoch_seconds": g,
        "train_cpu_seconds": d_cpu + g_cpu,
        "setup_seconds": evals[0][0] - run["started"],  # their data, graphs and session, to the first evaluation
        "peak_mib": run["peak_mib"],
    }


def score_snapshots(home: str, dataset: str, snapshots: Path) -> list[float]:
    """Validation Recall@20 of each saved generator (user·item + item bias), by our rank_metrics."""
    import numpy as np
    import torch

    from neggen_model.config import TrainConfig
    from neggen_model.evaluate import rank_metrics
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    data = load_interaction_data(DatasetStore(home, dataset))
    recalls = []
    for file in sorted(snapshots.glob("*.npz")):
        weights = {name: torch.from_numpy(array) for name, array in np.load(file).items()}
        score = lambda users: weights["user"][users] @ weights["item"].T + weights["bias"]  # noqa: E731
        recalls.append(rank_metrics(score, data.valid, data.train, (20,), TrainConfig().eval_batch_size)["recall@20"])
    return recalls


def run_side(python: str, args, side: str) -> dict:
    command = [python, __file__, "--worker", side, "--home", args.home, "--dataset", args.dataset, "--seed", str(args.seed),
               "--epochs", str(args.epochs), "--params", args.params, "--irgan", str(args.irgan), "--workdir", str(args.workdir)]  # fmt: skip
    return run_worker(command, f"irgan {side} seed {args.seed}", env={"TF_CPP_MIN_LOG_LEVEL": "2"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="NEGGEN_HOME with the dataset's interactions")
    parser.add_argument("--dataset", default="ml100k")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--epochs", type=int, default=50, help="our epochs = their G epochs (theirs: 100 D epochs per 50)")
    parser.add_argument("--params", default="{}", help="JSON params of our IRGAN (default: its defaults, pretrain: bpr)")
    parser.add_argument("--irgan", type=Path, default=Path("/tmp/irgan/item_recommendation"), help="their folder holding cf_gan.py")
    parser.add_argument("--tf-python", default="/tmp/tfvenv/bin/python", help="Python of the TensorFlow environment")
    parser.add_argument("--discriminator-start", nargs="+", choices=["random", "bpr"], default=["random"],
                        help="how their D starts: random (their code) and/or bpr (as ours)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/irgan_reference"))
    parser.add_argument("--csv", type=Path, default=REPO / "bench" / "results" / "baselines_reference.csv")
    parser.add_argument("--worker", choices=["ours", *SIDES], help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.side = args.worker
        result = worker_ours(args) if args.worker == "ours" else worker_authors(args)
        print("RESULT " + json.dumps(result))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    base = {"dataset": args.dataset, "model": "irgan", "seed": args.seed, "params": json.dumps(json.loads(args.params), sort_keys=True), "max_epochs": args.epochs}  # fmt: skip
    rows = [base | {"side": "ours"} | run_side(sys.executable, args, "ours")]
    save_rows(args.csv, rows)
    for side in (side for side, start in SIDES.items() if start in args.discriminator_start):
        export_their_data(args.home, args.dataset, args.workdir / f"irgan_{args.dataset}-{args.seed}-{side}" / "ml-100k")
        run = run_side(args.tf_python, args, side)
        recalls = score_snapshots(args.home, args.dataset, args.workdir / f"irgan_{args.dataset}-{args.seed}-{side}" / "snapshots")
        rows.append(base | {"side": side} | their_record(run, recalls))
        print(f"{side}: D trained on stale negatives (linecache): {run['d_negatives_stale']}", flush=True)
        save_rows(args.csv, rows)  # after every side: a long series killed midway keeps what it measured
    for row in rows:
        print(f"irgan {row['side']:18s}: valid R@20 start {row['start_valid_recall@20']:.4f}, best {row['best_valid_recall@20']:.4f} "
              f"at epoch {row['best_epoch']}/{row['epochs_run']}, last {row['valid_recall@20_last']:.4f}; "
              f"{row['train_seconds']:.3f} s/epoch, {row['eval_seconds']:.3f} s/eval, peak {row['peak_mib']:.0f} MiB")  # fmt: skip
    for row in rows[1:]:
        print(f"ours/{row['side']}: train seconds {rows[0]['train_seconds'] / row['train_seconds']:.3f}, "
              f"train CPU seconds {rows[0]['train_cpu_seconds'] / row['train_cpu_seconds']:.3f}")


if __name__ == "__main__":
    main()
