"""Our baselines beside reference implementations of the same models, on the same data, in one run.

    .venv/bin/python bench/baselines_reference.py --home /tmp/home --dataset beauty \\
        --mmrec /tmp/mmrec --models vbpr freedom --epochs 3
    .venv/bin/python bench/baselines_reference.py --home /tmp/home --dataset demo \\
        --diffmm /tmp/diffmm --models diffmm --epochs 50 --seeds 2024 2025 2026

The references are not part of this project: pass a checkout of each. MMRec (enoche/MMRec,
`--mmrec`, the folder holding `src/`) has VBPR, MMGCN, FREEDOM, LGMRec, BM3 and DRAGON; DiffMM is
its authors' code (HKUDS/DiffMM, `--diffmm`, the folder holding `Main.py`). Bench prerequisite, not
a project dependency: MMRec's MMGCN and DRAGON import torch_geometric (`pip install
torch_geometric==2.8.1`, pure Python). The references' code runs unmodified; this script only
exports the dataset in their formats into `--workdir` and, in the reference's own process, patches
what the current numpy/scipy/torch removed or this CPU machine lacks:

- MMRec: `<name>.inter` with x_label, our pooled item content as `text_feat.npy` /
  `image_feat.npy` (neggen_model/content.py), and for DRAGON `user_graph_dict.npy`, the user-user
  file MMRec's preprocessing script makes (see `export_user_graph`); patched: np.float,
  dok_matrix._update, Parameter.to (returns a plain tensor, as a move to a GPU does: DRAGON needs
  it, see worker_mmrec), and stubs for lmdb/torchvision, which it imports for end-to-end image
  training only.
- DiffMM: `Datasets/baby/` (the authors' loader knows only the folder names baby, sports and
  tiktok; baby is the one with exactly pictures and text) with `trnMat.pkl` (training pairs) and
  `tstMat.pkl` (pickled scipy COO matrices) and the features. Their code scores `tstMat.pkl` after
  every epoch and keeps the best: we write our *validation* pairs there, so their number is the best
  validation Recall@20 over the epochs, the same quantity as ours (both rank all items with only the
  training items masked, recall = hits / the user's held-out items, averaged over users that have
  some). Patched: `.cuda()` of tensors and modules is the identity (their code calls it
  everywhere), coo_matrix.A (removed in scipy 1.14), and a stub for setproctitle (imported, unused).
  Their code has no early stopping (it runs `--epoch` epochs), so ours runs exactly `--epochs`
  epochs for DiffMM too; their batch (`--batch`, 1024) is both the BPR and the denoiser batch, so
  ours trains DiffMM with batch_size = its diffusion_batch_size (1024) here, not the protocol's
  2048. Every DiffMM parameter of ours is passed to their flags, so both sides run the same setting
  (their defaults are not relied on). Their code needs pictures (no text-only path), as MMRec's
  LGMRec does: `--text-as-pictures` times either on a text-only dataset with the text vectors in
  both roles, on both sides.

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
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Our params -> MMRec config keys (the same names in both, for these models).
MMREC_NAME = {"vbpr": "VBPR", "mmgcn": "MMGCN", "freedom": "FREEDOM", "lgmrec": "LGMRec", "bm3": "BM3", "dragon": "DRAGON"}
# The reference each model is compared with: MMRec's, or (DiffMM, not in MMRec) its authors' code.
REFERENCE = {model: "mmrec" for model in MMREC_NAME} | {"diffmm": "authors"}
DEFAULT_PARAMS = {
    "vbpr": {"reg_weight": 1.0},
    "mmgcn": {"reg_weight": 1e-4},  # our default (MMRec's MMGCN.yaml only lists a grid)
    "freedom": {"dropout": 0.8, "reg_weight": 1e-3},
    "lgmrec": {"alpha": 0.3},
    "bm3": {"n_layers": 1, "reg_weight": 0.1, "dropout": 0.5},
    "dragon": {"reg_weight": 1e-3},
    "diffmm": {},  # the authors' Amazon-Baby command (our defaults)
}
# Our DiffMM params -> the authors' command-line flags (Params.py); dims and cl_method are mapped apart.
DIFFMM_FLAG = {
    "n_layers": "gnn_layer", "reg_weight": "reg", "ssl_weight": "ssl_reg", "temperature": "temp", "keep_rate": "keepRate",
    "residual_weight": "ris_lambda", "generated_graph_weight": "ris_adj_lambda", "align_weight": "e_loss",
    "rebuild_k": "rebuild_k", "steps": "steps", "noise_scale": "noise_scale", "noise_min": "noise_min",
    "noise_max": "noise_max", "step_embedding": "d_emb_size", "diffusion_batch_size": "batch",
}  # fmt: skip
# MMRec's user-user file keeps each user's 200 users sharing the most training items (DRAGON reads 40).
MMREC_USER_GRAPH_SIZE = 200
FIXED_EPOCHS = {"diffmm"}
# References that read pictures unconditionally: on a text-only dataset, timed with --text-as-pictures.
NEED_PICTURES = {"diffmm", "lgmrec"}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_ours(args) -> dict:
    import torch

    torch.set_num_threads(1)
    from neggen_model.config import TrainConfig
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    store = DatasetStore(args.home, args.dataset)
    data = load_interaction_data(store)
    content = compared_content(store, data.n_items, args.text_as_pictures)
    model_name = args.models[0]
    # A reference without early stopping (DiffMM's authors) runs every epoch: so does ours then.
    patience = args.epochs if model_name in FIXED_EPOCHS else TrainConfig().early_stop_patience
    params = json.loads(args.params)
    batch = {"batch_size": diffmm_batch(params)} if model_name == "diffmm" else {}
    config = TrainConfig(seed=args.seed, epochs=args.epochs, early_stop_patience=patience, **batch)
    log = Path(args.workdir) / f"ours_{dataset_label(args)}-{model_name}-{args.seed}.json"
    return train_ours(model_name, data, config, log, content, params)


def train_ours(model_name: str, data, config, log: Path, content=None, params: dict | None = None) -> dict:
    """Our run of model_name under config, timed: the record both sides of a comparison share; the
    per-epoch history goes to `log` (JSON), to compare whole validation curves with a reference's log."""
    from neggen_model.models import build_model
    from neggen_model.trainer import Trainer

    started = time.perf_counter()
    model = build_model(model_name, data, config, content, params)
    setup = time.perf_counter() - started
    result = Trainer(model, data, config, progress=False).fit()
    return our_result(result, setup, log)


def our_result(result, setup: float, log: Path) -> dict:
    """Our run's record from its TrainResult; its per-epoch history goes to log, beside the
    references' logs, to compare whole validation curves."""
    import numpy as np

    history = [record for record in result.history if "seconds" in record]  # not a validation before training
    log.write_text(json.dumps(history, indent=1))
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


def compared_content(store, n_items: int, text_as_pictures: bool):
    """Our pooled item content; with text_as_pictures (timing DiffMM or LGMRec, whose reference code
    needs pictures, on a text-only dataset) the text vectors are the picture modality too, on both sides."""
    from neggen_model.content import ItemContent
    from pipeline.baselines import load_item_content

    content = load_item_content(store, n_items)
    if text_as_pictures and content.visual is None:
        content = ItemContent(text=content.text, visual=content.text)
    return content


def export_content(home: str, dataset: str, folder: Path, text_as_pictures: bool = False) -> None:
    """Our pooled item content as text_feat.npy / image_feat.npy (the file names of both references)."""
    import numpy as np

    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    store = DatasetStore(home, dataset)
    content = compared_content(store, load_interaction_data(store).n_items, text_as_pictures)
    for modality, file in (("text", "text_feat.npy"), ("visual", "image_feat.npy")):
        if getattr(content, modality) is not None:
            np.save(folder / file, getattr(content, modality))


def export_user_graph(train, path: Path) -> None:
    """MMRec's `user_graph_dict.npy` (its preprocessing/dualgnn-gen-u-u-matrix.py) from the training matrix.

    A pickled dict user -> [neighbour ids, shared-item counts as floats]: every other user sharing at
    least one training item, most shared first, at most 200. MMRec's script orders ties by whatever
    torch.topk returns on a dense users x users row; here ties go to the lower user id, the order
    our DRAGON uses, so both sides read the same 40 neighbours. Built from the sparse co-occurrence
    matrix (MMRec's script fills a dense one pair by pair).
    """
    import numpy as np

    binary = (train > 0).astype(np.int64).tocsr()
    shared = (binary @ binary.T).tocsr()
    shared.setdiag(0)
    shared.eliminate_zeros()
    graph = {}
    for user in range(shared.shape[0]):
        ids = shared.indices[shared.indptr[user] : shared.indptr[user + 1]]
        counts = shared.data[shared.indptr[user] : shared.indptr[user + 1]]
        order = np.lexsort((ids, -counts))[:MMREC_USER_GRAPH_SIZE]
        graph[user] = [ids[order].tolist(), counts[order].astype(float).tolist()]
    np.save(path, graph, allow_pickle=True)


def export_mmrec(home: str, dataset: str, folder: Path, name: str, text_as_pictures: bool = False) -> None:
    """The dataset in MMRec's layout: <name>.inter (userID, itemID, x_label), the item content and
    the user-user file of DRAGON; each file written once (an existing one is kept)."""
    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    folder.mkdir(parents=True, exist_ok=True)
    store = DatasetStore(home, dataset)
    if not (folder / f"{name}.inter").exists():
        frame = store.read("interactions", columns=["user_id", "item_id", "split"])
        frame = frame.rename(columns={"user_id": "userID", "item_id": "itemID"})
        frame["x_label"] = frame.pop("split").map({"train": 0, "valid": 1, "test": 2})
        frame.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    if not (folder / "text_feat.npy").exists() and not (folder / "image_feat.npy").exists():
        export_content(home, dataset, folder, text_as_pictures)
    if not (folder / "user_graph_dict.npy").exists():
        export_user_graph(load_interaction_data(store).train, folder / "user_graph_dict.npy")


def worker_mmrec(args) -> dict:
    import numpy as np

    name = f"neggen_{args.dataset}" + ("_text_as_pictures" if args.text_as_pictures else "")
    data_root = Path(args.workdir) / "data"
    export_mmrec(args.home, args.dataset, data_root / name, name, args.text_as_pictures)
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
    sys.path[:0] = [str(write_stubs(Path(args.workdir))), str(src)]
    np.float = float
    import scipy.sparse as sp
    import torch

    torch.set_num_threads(1)
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = lambda self, values: self._dict.update(values)
    # MMRec is written for a GPU, where Parameter.to(device) returns a plain tensor (a copy on the
    # device); on CPU it returns the Parameter itself. DRAGON relies on the former: its result_embed,
    # `nn.Parameter(...).to(device)`, is reassigned a computed tensor in every forward, which torch
    # refuses for a registered Parameter. So here too a Parameter moved by .to() is a plain tensor.
    def parameter_to(self, *moves, **options):
        moved = torch.Tensor.to(self, *moves, **options)
        return moved.view_as(moved) if moved is self else moved

    torch.nn.Parameter.to = parameter_to
    os.chdir(src)
    from utils.quick_start import quick_start

    config = {"use_gpu": False, "gpu_id": 0, "data_path": str(data_root) + "/", "epochs": args.epochs, "seed": [args.seed]}
    config.update({k: [v] for k, v in json.loads(args.params).items()})
    import yaml

    # DRAGON.yaml searches the learning rate too: the protocol fixes Adam 1e-3 (MMRec's default).
    searched = yaml.safe_load((src / "configs" / "model" / f"{MMREC_NAME[args.models[0]]}.yaml").read_text())["hyper_parameters"]
    if "learning_rate" in searched:
        config["learning_rate"] = [1e-3]
    log = Path(args.workdir) / f"{name}-{args.models[0]}-{args.seed}.log"
    import logging

    started = time.perf_counter()
    quick_start(model=MMREC_NAME[args.models[0]], dataset=name, config_dict=config, save_model=False)
    wall = time.perf_counter() - started
    text = "\n".join(h.baseFilename and Path(h.baseFilename).read_text() for h in logging.getLogger().handlers if hasattr(h, "baseFilename"))
    log.write_text(text)
    train = [float(t) for t in re.findall(r"epoch \d+ training \[time: ([\d.]+)s", text)]
    evals = re.findall(r"epoch (\d+) evaluating \[time: ([\d.]+)s, valid_score: ([\d.]+)\]", text)
    return reference_result([float(r) for _, _, r in evals], train, [float(t) for _, t, _ in evals], wall)


def as_argv(flags: dict) -> list[str]:
    return [item for key, value in flags.items() for item in (f"--{key}", str(value))]


def run_script(script: Path, argv: list[str], log: Path) -> float:
    """`python script argv...` in this process (imports from sys.path as the caller left it), its
    stdout into log; its seconds."""
    import runpy

    sys.argv = [script.name, *argv]
    started = time.perf_counter()
    with open(log, "w") as handle, redirect_stdout(handle):
        runpy.run_path(str(script), run_name="__main__")
    return time.perf_counter() - started


def write_stubs(workdir: Path) -> Path:
    """Empty modules for what the references import but never use here (lmdb and torchvision:
    MMRec's end-to-end image training; setproctitle: DiffMM's Main.py). Returns their folder."""
    stubs = workdir / "stubs"
    (stubs / "torchvision" / "transforms").mkdir(parents=True, exist_ok=True)
    for module in ("lmdb.py", "setproctitle.py", "torchvision/__init__.py", "torchvision/transforms/__init__.py"):
        (stubs / module).write_text("")
    (stubs / "torchvision" / "transforms" / "functional.py").write_text("def pad(*a, **k): ...\ndef resize(*a, **k): ...\n")
    return stubs


def export_diffmm(home: str, dataset: str, folder: Path, text_as_pictures: bool) -> None:
    """The dataset as the authors' DiffMM reads it: trnMat.pkl / tstMat.pkl (pickled scipy COO
    users x items) and the item content. tstMat.pkl holds our validation pairs (see the docstring)."""
    import pickle

    from pipeline.storage import DatasetStore
    from pipeline.training import load_interaction_data

    if (folder / "tstMat.pkl").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    export_content(home, dataset, folder, text_as_pictures)
    if not (folder / "image_feat.npy").exists():
        raise SystemExit(
            f"{dataset} has no pictures: the authors' DiffMM reads image_feat.npy and fuses exactly pictures and "
            "text (TikTok adds audio); it has no text-only path (--text-as-pictures times it with the text in both roles)"
        )
    data = load_interaction_data(DatasetStore(home, dataset))
    for file, matrix in (("trnMat.pkl", data.train), ("tstMat.pkl", data.valid)):
        with open(folder / file, "wb") as handle:
            pickle.dump(matrix.astype("float32").tocoo(), handle)


def diffmm_batch(params: dict) -> int:
    """The one batch of a DiffMM comparison: the authors' --batch is both their BPR and their denoiser
    batch (and must not exceed the number of users: their loss logging divides by users // batch)."""
    from neggen_model.models import BASELINES

    return BASELINES["diffmm"].parse_params(params).diffusion_batch_size


def worker_authors(args) -> dict:
    """The authors' DiffMM, unmodified, run as `python Main.py --data baby ...` in this process on CPU."""
    from datetime import datetime

    import scipy.sparse as sp
    import torch

    from neggen_model.models import BASELINES

    params = BASELINES["diffmm"].parse_params(json.loads(args.params)).model_dump()
    run_dir = Path(args.workdir) / f"diffmm_{dataset_label(args)}"
    export_diffmm(args.home, args.dataset, run_dir / "Datasets" / "baby", args.text_as_pictures)
    flags = {DIFFMM_FLAG[key]: value for key, value in params.items() if key in DIFFMM_FLAG}
    flags |= {"dims": f"[{params['denoiser_hidden']}]", "cl_method": {"modalities": 0, "main": 1}[params["contrast"]]}
    flags |= {"data": "baby", "epoch": args.epochs, "seed": args.seed, "lr": 1e-3, "latdim": 64, "topk": 20}
    # Their DataHandler reads ./Datasets/baby; their modules import each other by bare name.
    os.chdir(run_dir)
    sys.path[:0] = [str(write_stubs(Path(args.workdir))), str(Path(args.diffmm).resolve())]
    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sp.coo_matrix.A = property(lambda self: self.toarray())
    log = Path(args.workdir) / f"diffmm_{dataset_label(args)}-{args.seed}.log"
    wall = run_script(Path(args.diffmm).resolve() / "Main.py", as_argv(flags), log)
    # Their log lines are "<datetime>: <message>"; one-line progress messages end in \r.
    stamped = [line.split(": ", 1) for line in re.split(r"[\r\n]", log.read_text()) if re.match(r"\d{4}-\d\d-\d\d ", line)]
    train, evals, recalls, mark = [], [], [], None
    for stamp, message in stamped:
        at = datetime.fromisoformat(stamp)
        if message.startswith("Model Initialized"):
            mark = at
        elif match := re.match(r"Epoch \d+/\d+, (Train|Test): ", message):
            (train if match[1] == "Train" else evals).append((at - mark).total_seconds())
            mark = at
            if match[1] == "Test":
                recalls.append(float(re.search(r"Recall = ([\d.]+)", message)[1]))
    return reference_result(recalls, train, evals, wall)


def reference_result(
    recalls: list[float], train: list[float], evals: list[float], wall: float, evaluated: list[int] | None = None
) -> dict:
    """A reference run's record from its log: validation Recall@20 and seconds of each epoch's
    training and evaluation; the best epoch is the first highest, as the references keep it.
    `evaluated`: the epochs (from 1) the recalls belong to, when a reference does not validate every epoch."""
    import numpy as np

    best = int(np.argmax(recalls))
    return {
        "best_valid_recall@20": recalls[best],
        "best_epoch": evaluated[best] if evaluated else best + 1,
        "epochs_run": len(train),
        "valid_recall@20_last": recalls[-1],
        "train_seconds": float(np.median(train)),
        "eval_seconds": float(np.median(evals)),
        "setup_seconds": wall - sum(train) - sum(evals),
        "peak_mib": _peak_mib(),
    }


def run_side(side: str, args, model: str, seed: int, params: dict) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--home", args.home, "--dataset", args.dataset,
               "--models", model, "--seed", str(seed), "--epochs", str(args.epochs), "--params", json.dumps(params),
               "--mmrec", str(args.mmrec), "--diffmm", str(args.diffmm), "--workdir", str(args.workdir)]  # fmt: skip
    command += ["--text-as-pictures"] if args.text_as_pictures else []
    return run_worker(command, f"{side} {model} seed {seed}")


def run_worker(command: list[str], label: str, env: dict[str, str] | None = None) -> dict:
    """One side of a comparison in its own process with one thread (env: further variables); its
    record is the RESULT line."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} | (env or {})
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{label} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def describe(result: dict) -> str:
    return (f"best valid R@20 {result['best_valid_recall@20']:.4f} at epoch {result['best_epoch']}/{result['epochs_run']}, "
            f"{result['train_seconds']:.3f} s/epoch, {result['eval_seconds']:.3f} s/eval, peak {result['peak_mib']:.0f} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="NEGGEN_HOME with the dataset's data and encoding stages")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--models", nargs="+", default=["vbpr", "freedom"], choices=sorted(REFERENCE))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2024])
    parser.add_argument("--seed", type=int, default=2024, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1000, help="at most this many epochs (early stopping after 20; DiffMM: exactly)")
    parser.add_argument("--params", default=None, help="JSON params of the model (default: the demo's chosen ones)")
    parser.add_argument("--mmrec", type=Path, default=Path("/tmp/mmrec"), help="MMRec checkout (holds src/)")
    parser.add_argument("--diffmm", type=Path, default=Path("/tmp/diffmm"), help="the authors' DiffMM checkout (holds Main.py)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/baselines_reference"))
    parser.add_argument("--csv", type=Path, default=REPO / "bench" / "results" / "baselines_reference.csv")
    parser.add_argument("--text-as-pictures", action="store_true",
                        help="DiffMM or LGMRec timing on a text-only dataset: the text vectors are the pictures too, on both sides "
                        "(rows under dataset '<name>+text_as_pictures')")  # fmt: skip
    parser.add_argument("--worker", choices=["ours", "mmrec", "authors"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.text_as_pictures and not set(args.models) <= NEED_PICTURES:
        parser.error(f"--text-as-pictures is for {' and '.join(sorted(NEED_PICTURES))} only (the other references run text-only)")
    if args.worker:
        result = {"ours": worker_ours, "mmrec": worker_mmrec, "authors": worker_authors}[args.worker](args)
        print("RESULT " + json.dumps(result))
        return
    import pandas as pd

    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        params = json.loads(args.params) if args.params else DEFAULT_PARAMS[model]
        for seed in args.seeds:
            for side in ("ours", REFERENCE[model]):
                result = run_side(side, args, model, seed, params)
                rows.append({"dataset": dataset_label(args), "model": model, "seed": seed, "side": side,
                             "params": json.dumps(params, sort_keys=True), "max_epochs": args.epochs, **result})  # fmt: skip
                print(f"{model} seed {seed} {side:5s}: {describe(result)}", flush=True)
                save_rows(args.csv, rows)  # after every run: a long series killed midway keeps what it measured
    mine = pd.DataFrame(rows)
    mine["side"] = mine["side"].where(mine["side"] == "ours", "reference")
    summary = mine.pivot_table(index="model", columns="side", values=["best_valid_recall@20", "train_seconds", "eval_seconds", "peak_mib"], aggfunc="mean")
    for what in ("train_seconds", "eval_seconds"):
        summary[(what, "ours/reference")] = summary[(what, "ours")] / summary[(what, "reference")]
    print(summary.sort_index(axis=1).round(4).to_string())


def dataset_label(args) -> str:
    return args.dataset + ("+text_as_pictures" if args.text_as_pictures else "")


def save_rows(csv: Path, rows: list[dict]) -> None:
    """rows into csv, replacing the rows of the same dataset, model, seed, side and epochs."""
    import pandas as pd

    table = pd.DataFrame(rows)
    key = ["dataset", "model", "seed", "side", "max_epochs"]
    if csv.exists():
        old = pd.read_csv(csv)
        table = pd.concat([old[~old.set_index(key).index.isin(table.set_index(key).index)], table], ignore_index=True)
    table.to_csv(csv, index=False)


if __name__ == "__main__":
    main()
