"""Glue between the dataset stores and `neggen_model`: train a recommender for a stage,
keep its run on disk, and gather every stage's results into the metrics table."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from neggen_model.atomic import write_json
from neggen_model.config import SWEPT_PARAMETERS, NegGenConfig, TrainConfig, UniformSamplerConfig
from neggen_model.data import InteractionData
from neggen_model.models import build_model
from neggen_model.trainer import Trainer, TrainResult
from pipeline import tables
from pipeline.storage import DatasetStore

BASE_MODEL = "lightgcn"  # the model the base_model stage trains
# Stages whose latest finished run feeds the metrics table, in report order.
MODEL_STAGES = (tables.BASE_MODEL,)
# One row per run (model, study, seed, λ, β, α, τ) and metric: a run present twice counts once.
RUN_KEY = ["model", "study", "seed", *SWEPT_PARAMETERS]
METRIC_KEY = [*RUN_KEY, "split", "mode", "metric", "k"]
RUN_RECORD = "latest_run.json"


@dataclass
class TrainedRun:
    stage: str
    model: str
    run_dir: Path
    config: TrainConfig
    result: TrainResult

    def metadata(self) -> dict:
        r = self.result
        flat = {f"valid_{k}": round(v, 5) for k, v in r.best_valid.items()}
        for mode, values in r.test.items():
            flat.update({f"test_{mode}_{k}": round(v, 5) for k, v in values.items()})
        return {
            "run_dir": str(self.run_dir),
            "model": self.model,
            "seed": r.seed,
            "epochs_run": r.epochs_run,
            "best_epoch": r.best_epoch,
            "wall_seconds": round(r.wall_seconds, 1),
            **flat,
        }


def load_interaction_data(store: DatasetStore) -> InteractionData:
    frame = store.read(tables.INTERACTIONS, columns=["user_id", "item_id", "split"])
    return InteractionData.from_frame(frame)


def content_key(payload: dict) -> str:
    """Short digest of everything that determines a run: same payload → same run folder."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def run_key(model: str, config: TrainConfig, data: InteractionData) -> str:
    """Same model, config and training graph → same run folder (resumed or reused)."""
    return content_key({"model": model, "config": config.model_dump(mode="json"), "train": data.train_fingerprint()})


def with_uniform_negatives(config: TrainConfig) -> TrainConfig:
    """config for NegGen on its base: the hard negative strategies score candidates through a
    recommender's layers, so NegGen trains on uniform negatives whatever `train.negative_sampler`
    says (it chooses the base's). The baselines stage takes each baseline's own (Baseline.negative_sampler)."""
    return config.model_copy(update={"negative_sampler": UniformSamplerConfig()})


def train_run(
    store: DatasetStore,
    stage: str,
    model_name: str,
    config: TrainConfig,
    data: InteractionData | None = None,
    progress: bool | None = None,
) -> TrainedRun:
    """Train (or resume, or reuse a finished run of) `model_name` in `stage`'s run folder.

    The epoch bar is drawn on a terminal only (progress=None)."""
    if progress is None:
        progress = sys.stderr.isatty()
    data = data if data is not None else load_interaction_data(store)
    run_dir = store.folder(stage) / f"{model_name}-{run_key(model_name, config, data)}"
    model = build_model(model_name, data, config)
    result = Trainer(model, data, config, checkpoint_dir=run_dir, progress=progress).fit()
    return TrainedRun(stage, model_name, run_dir, config, result)


def train_recommender(
    store: DatasetStore, stage: str, model_name: str, config: TrainConfig, progress: bool | None = None
) -> TrainedRun:
    """train_run, then record it as the stage's latest run (history table, RUN_RECORD)."""
    run = train_run(store, stage, model_name, config, progress=progress)
    result = run.result
    store.write(tables.history_table(stage), pd.DataFrame(result.history).assign(model=model_name))
    write_json(
        store.folder(stage) / RUN_RECORD,
        {
            "model": model_name,
            "run_dir": run.run_dir.name,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": config.model_dump(mode="json"),
            "result": asdict(result),
        },
    )
    return run


def run_columns(model: str, study: str, seed: int, run_dir: str, config: NegGenConfig | None = None) -> dict:
    """The columns naming a run in the metrics and history tables (λ/β/α/τ NaN for non-NegGen runs)."""
    swept = {name: getattr(config, name) if config else float("nan") for name in SWEPT_PARAMETERS}
    return {"model": model, "study": study, "seed": seed, **swept, "run_dir": run_dir}


def metric_rows(columns: dict, result: dict, stage: str, dataset: str, finished_at: str) -> list[dict]:
    """Long-format rows (split, mode, metric, k, value) of one run's result, with the run's
    columns (run_columns) and how it ran (epochs, best epoch, wall time)."""
    extra = columns | {"stage": stage, "dataset": dataset, "epochs_run": result["epochs_run"],
                       "best_epoch": result["best_epoch"], "wall_seconds": result["wall_seconds"],
                       "finished_at": finished_at}  # fmt: skip
    rows = []
    scored = [("valid", "mmrec", result["best_valid"])] + [("test", m, v) for m, v in result["test"].items()]
    for split, mode, values in scored:
        for name, value in values.items():
            metric, k = name.split("@")
            rows.append({"split": split, "mode": mode, "metric": metric, "k": int(k), "value": float(value), **extra})
    return rows


def collect_metrics(store: DatasetStore) -> pd.DataFrame:
    """Metric rows of every model stage's latest run, of every NegGen stage run and of the baselines."""
    frames = []
    for stage in MODEL_STAGES:
        record_path = store.root / stage / RUN_RECORD
        if not record_path.exists():
            continue
        record = json.loads(record_path.read_text())
        result = record["result"]
        columns = run_columns(record["model"], "main", result["seed"], f"{stage}/{record['run_dir']}")
        frames.append(pd.DataFrame(metric_rows(columns, result, stage, store.dataset, record["finished_at"])))
    # The metric rows of every run the NegGen and the baselines stages trained.
    for table in (tables.NEGGEN_METRICS, tables.BASELINES_METRICS):
        if store.table_path(table).exists():
            frames.append(store.read(table))
    if not frames:
        raise FileNotFoundError(f"no finished model run under {store.root}; materialize {tables.BASE_MODEL} first")
    table = pd.concat(frames, ignore_index=True)
    return table.drop_duplicates(METRIC_KEY, keep="last").reset_index(drop=True)
