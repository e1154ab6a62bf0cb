"""Our baselines beside MMRec's implementations of the same models, on the same data, in one run.

    .venv/bin/python bench/baselines_reference.py --home /tmp/home --dataset beauty \\
        --mmrec /tmp/mmrec --models vbpr freedom --epochs 3

MMRec (github.com/enoche/MMRec) is not part of this project: pass a checkout of it (`--mmrec`, the
folder holding `src/`). Its code runs unmodified; this script only exports the dataset in MMRec's
format into `--workdir` (`<name>.inter` with x_label, and our pooled item content as
`text_feat.npy` / `image_feat.npy`, see neggen_model/content.py) and patches three things the
current numpy/scipy removed and MMRec still uses or imports (np.float, dok_matrix._update, and
stubs for lmdb/torchvision, which it imports for end-to-end image training only).

For each model and seed, ours and the reference train with the same hyper-parameters (embedding
64, Adam 1e-3, batch 2048, Xavier init, uniform negatives, the model params given) for up to
`--epochs` epochs with early stopping after 20 epochs without a better validation Recall@20, each
in its own process pinned to one thread. Printed side by side: best validation Recall@20 and its
epoch, median seconds per training epoch, median seconds per full validation ranking, and each
process's peak resident memory. Results: bench/results/baselines_reference.csv (one row per side).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Our params -> MMRec config keys (the same names in both, for these models).
MMREC_NAME = {"vbpr": "VBPR", "freedom": "FREEDOM", "lgmrec": "LGMRec", "bm3": "BM3"}
DEFAULT_PARAMS = {"vbpr": {"reg_weight": 1.0}, "freedom": {"dropout": 0.8, "reg_weight": 1e-3}, "lgmrec": {"alpha": 0.3}, "bm3": {"n_layers": 1, "reg_weight": 0.1, "dropout": 0.5}}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_ours(args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from neggen_model.config import TrainConfig
    from neggen_model.models import build_model
    from neggen_model.trainer import Trainer
    from pipeline.baselines import load_item_content
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    store = DatasetStore(args.home, args.dataset)
    data = load_interaction_data(store)
    content = load_item_content(store, data.n_items)
    config = TrainConfig(seed=args.seed, epochs=args.epochs)
    started = time.perf_counter()
    model = build_model(args.models[0], data, config, content, json.loads(args.params))
    setup = time.perf_counter() - started
    result = Trainer(model, data, config, progress=False).fit()
    history = result.history
    return {
        "best_valid_recall@20": result.best_valid["recall@20"],
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "valid_recall@20_last": history[-1]["valid_recall@20"],
        "train_seconds": float(np.median([h["seconds"] for h in history])),
        "eval_seconds": float(np.median([h["eval_seconds"] for h in history])),
        "setup_seconds": setup,
        "peak_mib": _peak_mib(),
    }


def export_mmrec(home: str, dataset: str, folder: Path, name: str) -> None:
    """The dataset in MMRec's layout: <name>.inter (userID, itemID, x_label) and the item content."""
    import numpy as np

    from pipeline.baselines import load_item_content
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    if (folder / f"{name}.inter").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    store = DatasetStore(home, dataset)
    frame = store.read("interactions", columns=["user_id", "item_id", "split"])
    frame = frame.rename(columns={"user_id": "userID", "item_id": "itemID"})
    frame["x_label"] = frame.pop("split").map({"train": 0, "valid": 1, "test": 2})
    frame.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    content = load_item_content(store, load_interaction_data(store).n_items)
    for modality, file in (("text", "text_feat.npy"), ("visual", "image_feat.npy")):
        if getattr(content, modality) is not None:
            np.save(folder / file, getattr(content, modality))


def worker_mmrec(args) -> dict:
    import numpy as np

    name = f"neggen_{args.dataset}"
    data_root = Path(args.workdir) / "data"
    export_mmrec(args.home, args.dataset, data_root / name, name)
    src = Path(args.mmrec) / "src"
    dataset_yaml = src / "configs" / "dataset" / f"{name}.yaml"
    dataset_yaml.write_text(
        "USER_ID_FIELD: userID\nITEM_ID_FIELD: itemID\nTIME_FIELD: timestamp\nfilter_out_cod_start_users: True\n"
        f"inter_file_name: '{name}.inter'\nvision_feature_file: 'image_feat.npy'\ntext_feature_file: 'text_feat.npy'\n"
        "user_graph_dict_file: 'user_graph_dict.npy'\nfield_separator: \"\\t\"\n"
    )
    for cached in (data_root / name).glob("mm_adj*"):  # MMRec caches the item graph on disk
        cached.unlink()
    # What current numpy / scipy removed and MMRec (numpy 1.21, scipy 1.7) still uses.
    stubs = Path(args.workdir) / "stubs"
    (stubs / "torchvision" / "transforms").mkdir(parents=True, exist_ok=True)
    (stubs / "lmdb.py").write_text("")
    (stubs / "torchvision" / "__init__.py").write_text("")
    (stubs / "torchvision" / "transforms" / "__init__.py").write_text("")
    (stubs / "torchvision" / "transforms" / "functional.py").write_text("def pad(*a, **k): ...\ndef resize(*a, **k): ...\n")
    sys.path[:0] = [str(stubs), str(src)]
    np.float = float
    import scipy.sparse as sp
    import torch

    torch.set_num_threads(1)
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = lambda self, values: self._dict.update(values)
    os.chdir(src)
    from utils.quick_start import quick_start

    config = {"use_gpu": False, "gpu_id": 0, "data_path": str(data_root) + "/", "epochs": args.epochs, "seed": [args.seed]}
    config.update({k: [v] for k, v in json.loads(args.params).items()})
    log = Path(args.workdir) / f"{name}-{args.models[0]}-{args.seed}.log"
    import logging

    started = time.perf_counter()
    quick_start(model=MMREC_NAME[args.models[0]], dataset=name, config_dict=config, save_model=False)
    wall = time.perf_counter() - started
    text = "\n".join(h.baseFilename and Path(h.baseFilename).read_text() for h in logging.getLogger().handlers if hasattr(h, "baseFilename"))
    log.write_text(text)
    train = [float(t) for t in re.findall(r"epoch \d+ training \[time: ([\d.]+)s", text)]
    evals = re.findall(r"epoch (\d+) evaluating \[time: ([\d.]+)s, valid_score: ([\d.]+)\]", text)
    scores = [float(s) for _, _, s in evals]
    best = int(np.argmax(scores))  # first best, as MMRec's early stopping keeps it
    return {
        "best_valid_recall@20": scores[best],
        "best_epoch": best + 1,
        "epochs_run": len(train),
        "valid_recall@20_last": scores[-1],
        "train_seconds": float(np.median(train)),
        "eval_seconds": float(np.median([float(t) for _, t, _ in evals])),
        "setup_seconds": wall - sum(train) - sum(float(t) for _, t, _ in evals),
        "peak_mib": _peak_mib(),
    }


def run_side(side: str, args, model: str, seed: int, params: dict) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--home", args.home, "--dataset", args.dataset,
               "--models", model, "--seed", str(seed), "--epochs", str(args.epochs), "--params", json.dumps(params),
               "--mmrec", str(args.mmrec), "--workdir", str(args.workdir)]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{side} {model} seed {seed} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="NEGGEN_HOME with the dataset's data and encoding stages")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--models", nargs="+", default=["vbpr", "freedom"], choices=sorted(MMREC_NAME))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2024])
    parser.add_argument("--seed", type=int, default=2024, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1000, help="at most this many epochs (early stopping after 20)")
    parser.add_argument("--params", default=None, help="JSON params of the model (default: the demo's chosen ones)")
    parser.add_argument("--mmrec", type=Path, default=Path("/tmp/mmrec"), help="MMRec checkout (holds src/)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/baselines_reference"))
    parser.add_argument("--csv", type=Path, default=REPO / "bench" / "results" / "baselines_reference.csv")
    parser.add_argument("--worker", choices=["ours", "mmrec"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = (worker_ours if args.worker == "ours" else worker_mmrec)(args)
        print("RESULT " + json.dumps(result))
        return
    import pandas as pd

    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        params = json.loads(args.params) if args.params else DEFAULT_PARAMS[model]
        for seed in args.seeds:
            for side in ("ours", "mmrec"):
                result = run_side(side, args, model, seed, params)
                rows.append({"dataset": args.dataset, "model": model, "seed": seed, "side": side,
                             "params": json.dumps(params, sort_keys=True), "max_epochs": args.epochs, **result})  # fmt: skip
                print(f"{model} seed {seed} {side:5s}: best valid R@20 {result['best_valid_recall@20']:.4f} at epoch "
                      f"{result['best_epoch']}/{result['epochs_run']}, {result['train_seconds']:.3f} s/epoch, "
                      f"{result['eval_seconds']:.3f} s/eval, peak {result['peak_mib']:.0f} MiB", flush=True)  # fmt: skip
    table = pd.DataFrame(rows)
    if args.csv.exists():
        old = pd.read_csv(args.csv)
        same = old.set_index(["dataset", "model", "seed", "side", "max_epochs"]).index.isin(
            table.set_index(["dataset", "model", "seed", "side", "max_epochs"]).index
        )
        table = pd.concat([old[~same], table], ignore_index=True)
    table.to_csv(args.csv, index=False)
    mine = pd.DataFrame(rows)
    summary = mine.pivot_table(index="model", columns="side", values=["best_valid_recall@20", "train_seconds", "eval_seconds", "peak_mib"], aggfunc="mean")
    for what in ("train_seconds", "eval_seconds"):
        summary[(what, "ours/mmrec")] = summary[(what, "ours")] / summary[(what, "mmrec")]
    print(summary.sort_index(axis=1).round(4).to_string())


if __name__ == "__main__":
    main()
