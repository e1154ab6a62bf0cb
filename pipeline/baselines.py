"""The baselines stage: per dataset, each configured baseline of Table 2 (IRGAN, LightGCN with a hard
negative sampler such as lightgcn_dns, VBPR, FREEDOM, ...) with its small hyper-parameter grid searched
at the first seed on validation Recall@20 only, then the chosen setting trained at every seed and
tested once at its best validation epoch. A dataset without item content runs the baselines that read
none (IRGAN, the samplers) and skips the content models with the reason.

Each run is an ordinary resumable Trainer run in `baselines/<model>-<key>/`, the key hashing the
model, its params, the training config (the sampler's included), the training graph and the item
content (IRGAN: its pre-training run instead), so a re-materialization reuses finished runs and resumes
an interrupted one.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pandas as pd

from neggen_model.atomic import write_json
from neggen_model.checkpoint import MODEL_META, load_model
from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent, pool_item_content
from neggen_model.data import InteractionData
from neggen_model.models import BASELINES, CONTENT_MODELS, SAMPLER_BASELINES, build_model
from neggen_model.models.base import BaselineModel, Recommender
from neggen_model.models.bpr import BPRMF
from neggen_model.models.irgan import IRGANParams
from neggen_model.trainer import Trainer, TrainResult
from pipeline import tables
from pipeline.config import BaselinesConfig
from pipeline.lock import dataset_lock
from pipeline.storage import DatasetStore
from pipeline.study import load_item_features, stage_data, stage_inputs
from pipeline.training import (
    TrainedRun,
    content_key,
    metric_rows,
    run_columns,
    run_key,
    train_run,
)
from pipeline.workers import run_all

SELECT_METRIC = "recall@20"


@dataclass
class BaselineRun:
    model: str
    params: dict
    seed: int
    run_dir: str
    result: TrainResult


@dataclass
class BaselinesResult:
    metrics: pd.DataFrame
    grid: pd.DataFrame
    chosen: dict[str, dict] = field(default_factory=dict)  # model -> chosen params
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it was not run


def load_item_content(store: DatasetStore, n_items: int) -> ItemContent:
    """The encoding stage's stores pooled to one vector per item and modality (neggen_model.content)."""
    return pool_item_content(load_item_features(store, n_items))


def grid_points(model: str, config: BaselinesConfig) -> list[dict]:
    """Every setting of the model's grid (config's, else the model's own), over its fixed params."""
    cls = BASELINES[model]
    grid = config.grid.get(model, cls.grid)
    fixed = config.params.get(model, {})
    names = sorted(grid)
    points = [fixed | dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    return [cls.parse_params(point).model_dump(mode="json") for point in points] or [cls.parse_params(fixed).model_dump(mode="json")]


def starts_from_pretraining(model: str) -> bool:
    """IRGAN: the baseline that reads no content, is no sampler, and starts from a BPR-MF run."""
    return model not in CONTENT_MODELS and model not in SAMPLER_BASELINES


def irgan_pretrain_config(params: IRGANParams, train_config: TrainConfig) -> TrainConfig | None:
    """The training config of IRGAN's BPR-MF pre-training (None for `pretrain: none`): the run's own,
    stopped after `pretrain_epochs` when that is set."""
    if params.pretrain == "none":
        return None
    return train_config if params.pretrain_epochs is None else train_config.model_copy(update={"epochs": params.pretrain_epochs})


def irgan_pretraining(
    store: DatasetStore, params: IRGANParams, train_config: TrainConfig, data: InteractionData, progress: bool = False
) -> TrainedRun | None:
    """IRGAN's pre-training (None for `pretrain: none`): this project's BPR-MF run under the same
    training config (`pretrain_epochs` at most), trained once in `baselines/bpr-<key>/` and reused
    by every IRGAN run that names it. Locked, so parallel IRGAN runs never train it twice at once."""
    config = irgan_pretrain_config(params, train_config)
    if config is None:
        return None
    with dataset_lock(store.folder(tables.BASELINES) / f"bpr-{run_key('bpr', config, data)}", "IRGAN's BPR-MF pre-training"):
        return train_run(store, tables.BASELINES, "bpr", config, data, progress)


def dataset_content(store: DatasetStore) -> ItemContent | None:
    """The dataset's item content, or None when it has no embedding stores (Baby here: interactions only)."""
    if not store.table_path(tables.TEXT_EMBEDDINGS).exists():
        return None
    return pool_item_content(stage_inputs(store)[1])


def baseline_train_config(model: str, params: dict, train_config: TrainConfig) -> TrainConfig:
    """The stage's training config with the baseline's own negative sampler (uniform but for the
    samplers of Table 2), so the sampler lands in the run key."""
    return train_config.model_copy(update={"negative_sampler": BASELINES[model].negative_sampler(params)})


def build_baseline(
    model: str,
    params: dict,
    train_config: TrainConfig,
    data: InteractionData,
    content: ItemContent | None = None,
    pretrained: BPRMF | None = None,
) -> Recommender | BaselineModel:
    """The untrained model of one baseline run: a content model on its pooled item content, LightGCN
    for a sampler baseline (the sampler is in train_config), IRGAN from its pre-trained BPR-MF."""
    if model in CONTENT_MODELS:
        return build_model(model, data, train_config, content, params)
    if model in SAMPLER_BASELINES:
        return build_model(SAMPLER_BASELINES[model].model, data, train_config)
    return build_model(model, data, train_config, params=params, pretrained=pretrained)


def train_baseline(
    store: DatasetStore, model: str, params: dict, train_config: TrainConfig, progress: bool = False
) -> BaselineRun:
    """Train (or resume, or reuse) one baseline run in its keyed folder."""
    data = stage_data(store)
    train_config = baseline_train_config(model, params, train_config)
    inputs = {"model": model, "params": params, "train": train_config.model_dump(mode="json"), "graph": data.train_fingerprint()}
    content = pretrained = None
    if model in CONTENT_MODELS:
        content = pool_item_content(stage_inputs(store)[1])
        inputs["content"] = content.fingerprint()
    elif starts_from_pretraining(model):  # IRGAN: its pre-training run is in the key
        pretraining = irgan_pretraining(store, BASELINES[model].parse_params(params), train_config, data, progress)
        pretrained = None if pretraining is None else load_model(pretraining.run_dir, data, train_config.device)[0]
        inputs["pretrain"] = None if pretraining is None else pretraining.run_dir.name
    instance = build_baseline(model, params, train_config, data, content, pretrained)
    run_dir = store.folder(tables.BASELINES) / f"{model}-{content_key(inputs)}"
    result = Trainer(instance, data, train_config, checkpoint_dir=run_dir, progress=progress).fit()
    write_json(run_dir / "params.json", {"model": model, "params": params})
    return BaselineRun(model, params, train_config.seed, f"{tables.BASELINES}/{run_dir.name}", result)


def _finished_at(store: DatasetStore, run: BaselineRun) -> str:
    stamp = (store.root / run.run_dir / MODEL_META).stat().st_mtime
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")


def run_baselines(
    store: DatasetStore,
    config: BaselinesConfig,
    train_config: TrainConfig,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> BaselinesResult:
    """Grid at the first seed, chosen setting at every seed, `config.workers` runs at a time
    (pipeline/workers.py); writes the metric rows of the chosen setting at every seed
    (tables.BASELINES_METRICS, joined into the metrics table) and every grid run (tables.BASELINES_GRID)."""
    content = dataset_content(store)
    if content is None:
        log(f"item content: none ({tables.TEXT_EMBEDDINGS} not materialized)")
    else:
        log(f"item content: {', '.join(f'{m} {v.shape[1]}-d' for m, v in content.matrices().items())}")
    progress = progress and config.workers == 1  # epoch bars of several processes would interleave
    metrics, grid_rows, chosen, skipped = [], [], {}, {}
    first, *others = config.seeds
    points: dict[str, list[dict]] = {}
    for model in config.models:
        reason = BASELINES[model].skip_reason(content)
        if reason:
            skipped[model] = reason
            log(f"skipping {model}: {reason}")
        else:
            points[model] = grid_points(model, config)
    grid_calls = [(store, model, params, train_config.model_copy(update={"seed": first}), progress)
                  for model, of_model in points.items() for params in of_model]  # fmt: skip
    grid_runs: dict[int, BaselineRun] = {}
    for index, run in run_all(train_baseline, grid_calls, config.workers):
        grid_runs[index] = run
        of_model = points[run.model]
        log(f"{run.model} grid [{of_model.index(run.params) + 1}/{len(of_model)}] {_changed(run.params, of_model)}: "
            f"valid {SELECT_METRIC} {run.result.best_valid[SELECT_METRIC]:.4f} "
            f"(best epoch {run.result.best_epoch}, {run.result.wall_seconds:.1f}s)")  # fmt: skip
    runs = [grid_runs[index] for index in sorted(grid_runs)]
    for run in runs:
        grid_rows.append({"model": run.model, "seed": first, "params": json.dumps(run.params, sort_keys=True),
                          f"valid_{SELECT_METRIC}": run.result.best_valid[SELECT_METRIC],
                          "best_epoch": run.result.best_epoch, "epochs_run": run.result.epochs_run,
                          "wall_seconds": run.result.wall_seconds, "run_dir": run.run_dir})  # fmt: skip
    finals: dict[str, list[BaselineRun]] = {}
    for model in points:
        of_model = [r for r in runs if r.model == model]
        # Validation only; the first setting in grid order wins a tie.
        best = max(of_model, key=lambda r: (r.result.best_valid[SELECT_METRIC], -of_model.index(r)))
        chosen[model], finals[model] = best.params, [best]
    seed_calls = [(store, model, chosen[model], train_config.model_copy(update={"seed": s}), progress)
                  for model in points for s in others]  # fmt: skip
    seed_runs = dict(run_all(train_baseline, seed_calls, config.workers))
    for index in sorted(seed_runs):
        finals[seed_runs[index].model].append(seed_runs[index])
    for model, of_model in finals.items():
        for run in of_model:
            r = run.result
            columns = run_columns(model, "main", run.seed, run.run_dir)
            metrics.extend(metric_rows(columns, asdict(r), tables.BASELINES, store.dataset, _finished_at(store, run)))
            log(f"{model} seed {run.seed}: best epoch {r.best_epoch}/{r.epochs_run}, valid {SELECT_METRIC} "
                f"{r.best_valid[SELECT_METRIC]:.4f}, test {SELECT_METRIC} {r.test['mmrec'][SELECT_METRIC]:.4f} ({r.wall_seconds:.1f}s)")  # fmt: skip
    out = BaselinesResult(pd.DataFrame(metrics), pd.DataFrame(grid_rows), chosen, skipped)
    for table, frame in ((tables.BASELINES_METRICS, out.metrics), (tables.BASELINES_GRID, out.grid)):
        if len(frame):
            store.write(table, frame)
        else:  # nothing ran: no stale rows of an earlier config may reach the metrics table
            store.table_path(table).unlink(missing_ok=True)
    return out


def _changed(params: dict, points: list[dict]) -> str:
    """The params that vary over the grid, as k=v."""
    varying = [k for k in params if len({json.dumps(p[k]) for p in points}) > 1]
    return " ".join(f"{k}={params[k]}" for k in varying) or "defaults"

