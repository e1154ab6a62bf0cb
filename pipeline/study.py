"""The NegGen model stage: item features from the embedding stores, then every configured run —
LightGCN and each NegGen variant over seeds, and the λ/α/τ sweep — on one dataset.

Each run is an ordinary resumable Trainer run in a folder keyed by everything that determines
it, so a re-materialization reuses finished runs and resumes an interrupted one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from neggen_model.checkpoint import MODEL_META, load_model
from neggen_model.config import SWEPT_PARAMETERS, VARIANTS, NegGenConfig, TrainConfig, variant_config
from neggen_model.data import InteractionData
from neggen_model.features import ItemFeatures, ModalityToken, negative_hardness
from neggen_model.models.neggen import GRADIENT_COLUMNS, NegGen
from neggen_model.trainer import Trainer
from pipeline import tables
from pipeline.config import StudyConfig
from pipeline.encoding import IMAGE_FIELD, VERSION_OF_TABLE
from pipeline.llm.prompts import DESCRIPTION_LABELS
from pipeline.storage import DatasetStore
from pipeline.training import (
    BASE_MODEL,
    TrainedRun,
    content_key,
    load_interaction_data,
    metric_rows,
    run_columns,
    train_run,
    with_uniform_negatives,
)
from pipeline.workers import run_all

# Versions of an attribute in the text store other than the item's own: one per negative source.
NEGATIVE_VERSIONS = tuple(v for v in VERSION_OF_TABLE.values() if v != "original")

# --- features -----------------------------------------------------------------------------


def _vectors(table) -> np.ndarray:
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def _field_order(name: str) -> tuple[int, str]:
    labels = [label.lower() for label in DESCRIPTION_LABELS]
    return (labels.index(name) if name in labels else len(labels), name)


def load_item_features(store: DatasetStore, n_items: int) -> ItemFeatures:
    """One token per described field (title, brand, ..., image description) from `text_embeddings`
    and one for the picture from `image_embeddings` when the dataset has pictures.

    A field a negative source left out keeps the item's original vector for that source; a
    picture is never regenerated, so its negatives repeat the original.
    """
    text = pq.read_table(store.table_path(tables.TEXT_EMBEDDINGS), columns=["item_id", "field", "modality", "version", "vector"])
    frame = text.select(["item_id", "field", "modality", "version"]).to_pandas()
    vectors = _vectors(text)
    if (frame.item_id < 0).any() or (frame.item_id >= n_items).any():
        raise ValueError(f"{tables.TEXT_EMBEDDINGS} holds item ids outside 0..{n_items - 1}")
    ids, fields, versions_of_rows = frame.item_id.to_numpy(), frame.field.to_numpy(), frame.version.to_numpy()
    tokens = []
    for name in sorted(frame.field.unique(), key=_field_order):
        of_field = fields == name
        rows = np.flatnonzero(of_field & (versions_of_rows == "original"))
        original = np.zeros((n_items, vectors.shape[1]), np.float32)
        original[ids[rows]] = vectors[rows]
        present = np.zeros(n_items, dtype=bool)
        present[ids[rows]] = True
        versions = {"original": original}
        for version in NEGATIVE_VERSIONS:
            rows = np.flatnonzero(of_field & (versions_of_rows == version))
            if len(rows):
                versions[version] = original.copy()
                versions[version][ids[rows]] = vectors[rows]
        tokens.append(ModalityToken(name, frame.modality[of_field].iloc[0], versions, present))
    if store.table_path(tables.IMAGE_EMBEDDINGS).exists():
        images = pq.read_table(store.table_path(tables.IMAGE_EMBEDDINGS), columns=["item_id", "vector"])
        if images.num_rows:
            ids = images.column("item_id").to_numpy()
            original = np.zeros((n_items, images.column("vector").type.list_size), np.float32)
            original[ids] = _vectors(images)
            present = np.zeros(n_items, dtype=bool)
            present[ids] = True
            same = dict.fromkeys(("original", *NEGATIVE_VERSIONS), original)
            tokens.append(ModalityToken(IMAGE_FIELD, "visual", same, present))
    return ItemFeatures(n_items, tuple(tokens))


def hardness_table(store: DatasetStore) -> pd.DataFrame:
    """negative_hardness per item and negative source (see neggen_model.features.negative_hardness)."""
    features = load_item_features(store, len(store.read(tables.ITEMS, columns=["item_id"])))
    frames = []
    for source in NEGATIVE_VERSIONS:
        if all(source in t.versions for t in features.tokens):
            measures = negative_hardness(features, source)
            frames.append(pd.DataFrame({"item_id": np.arange(features.n_items), "source": source, **measures}))
    return pd.concat(frames, ignore_index=True)


def features_fingerprint(features: ItemFeatures) -> str:
    digest = hashlib.sha256()
    for token in features.tokens:
        digest.update(f"{token.name}/{token.modality}".encode())
        digest.update(token.present.tobytes())
        for version in sorted(token.versions):
            digest.update(version.encode())
            digest.update(token.versions[version].tobytes())
    return digest.hexdigest()


# --- runs ---------------------------------------------------------------------------------


@dataclass
class StudyResult:
    metrics: pd.DataFrame
    history: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)  # variant -> why it was not run

    def summary(self, split: str = "test", mode: str = "mmrec") -> pd.DataFrame:
        """mean and std over seeds of the main runs, one row per model."""
        main = self.metrics[(self.metrics.study == "main") & (self.metrics.split == split) & (self.metrics["mode"] == mode)]
        return main.assign(name=main.metric + "@" + main.k.astype(str)).pivot_table(
            index="model", columns="name", values="value", aggfunc=["mean", "std"]
        )


def planned_runs(
    study: StudyConfig, features: ItemFeatures
) -> tuple[list[tuple[str, str, int, NegGenConfig]], dict[str, str]]:
    """(model, study, seed, config) of every NegGen run, and the variants that cannot run here."""
    modalities = {token.modality for token in features.tokens}
    sources = set.intersection(*(set(token.versions) for token in features.tokens)) | {"uniform"}
    runs, skipped = [], {}
    for variant in study.variants:
        config = variant_config(study.model, variant)
        lacking = set(VARIANTS[variant].get("modalities", ())) - modalities
        if lacking:
            skipped[variant] = f"the dataset has no {'/'.join(sorted(lacking))} tokens"
        elif config.negatives not in sources:
            skipped[variant] = f"no {config.negatives!r} negatives were encoded"
        elif config.negatives == "direct" and all(
            np.array_equal(t.versions["direct"], t.versions["generated"]) for t in features.tokens
        ):
            # The catalogue engine swaps the same values in one step as in mask + complete.
            skipped[variant] = "the direct negatives equal the generated ones (it would repeat that run)"
        else:
            runs += [(variant, "main", seed, config) for seed in study.seeds]
    for parameter, values in study.sensitivity.items():
        for value in values:
            if value != getattr(study.model, parameter):
                runs.append(("neggen", "sensitivity", study.seeds[0], study.model.model_copy(update={parameter: value})))
    return runs, skipped


def _finished_at(run_dir) -> str:
    stamp = (run_dir / MODEL_META).stat().st_mtime
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")


def stage_data(store: DatasetStore) -> InteractionData:
    """The interactions alone (runs that read no item content), read once per process and table state."""
    return _read_interactions(store.home, store.dataset, store.table_path(tables.INTERACTIONS).stat().st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _read_interactions(home: Path, dataset: str, _state: int) -> InteractionData:
    return load_interaction_data(DatasetStore(home, dataset))


def stage_inputs(store: DatasetStore) -> tuple[InteractionData, ItemFeatures, str]:
    """The interactions, item features and their fingerprint, read once per process and table state."""
    paths = [store.table_path(t) for t in (tables.INTERACTIONS, tables.TEXT_EMBEDDINGS, tables.IMAGE_EMBEDDINGS)]
    return _read_stage_inputs(store.home, store.dataset, tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths))


@functools.lru_cache(maxsize=1)
def _read_stage_inputs(home: Path, dataset: str, _state: tuple[int, ...]) -> tuple[InteractionData, ItemFeatures, str]:
    store = DatasetStore(home, dataset)
    data = stage_data(store)
    features = load_item_features(store, data.n_items)
    return data, features, features_fingerprint(features)


def _train_base(store: DatasetStore, config: TrainConfig, progress: bool) -> TrainedRun:
    return train_run(store, tables.BASE_MODEL, BASE_MODEL, config, stage_data(store), progress)


def _neggen_run_key(base: TrainedRun, config: NegGenConfig, fingerprint: str) -> str:
    """Keyed by the canonical config: variants that train the same model (w/o CF, w/o both, β = 0) share a key."""
    return content_key({"neggen": config.canonical().model_dump(mode="json"), "train": base.config.model_dump(mode="json"),
                        "base": base.run_dir.name, "features": fingerprint})  # fmt: skip


def neggen_train_config(base: TrainConfig, config: NegGenConfig) -> TrainConfig:
    """The trainer's settings for NegGen on a base trained with `base`: the base's, on uniform
    negatives, at the NegGen stage's own learning rate when it has one, with its own schedule."""
    train = with_uniform_negatives(base)
    if config.learning_rate is not None:
        train = train.model_copy(update={"learning_rate": config.learning_rate})
    return train.model_copy(update={"decay_epochs": config.decay_epochs})


def _train_neggen(
    store: DatasetStore, base: TrainedRun, run_dir: Path, model: str, config: NegGenConfig, seed: int, progress: bool
) -> TrainedRun:
    data, features, _ = stage_inputs(store)
    # A fresh copy of the trained base per run: fine-tuning must not leak into later runs.
    base_model, _ = load_model(base.run_dir, data, device=base.config.device)
    neggen = NegGen(base_model, features, config, seed)
    result = Trainer(neggen, data, neggen_train_config(base.config, config), checkpoint_dir=run_dir, progress=progress).fit()
    return TrainedRun(tables.NEGGEN_MODEL, model, run_dir, base.config, result)


def run_study(
    store: DatasetStore,
    study: StudyConfig,
    train_config: TrainConfig,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
    write: bool = True,
) -> StudyResult:
    """Train LightGCN per seed and every planned NegGen run on it, `study.workers` at a time
    (pipeline/workers.py); write the metrics and history tables of all of them (tables.NEGGEN_METRICS,
    tables.NEGGEN_HISTORY; not with write=False, for a benchmark beside the stage) and return them."""
    if store.table_path(tables.TEXT_EMBEDDINGS).exists():
        _, features, fingerprint = stage_inputs(store)
        planned, skipped = planned_runs(study, features)
    else:  # interactions only (Baby here): LightGCN at every seed, the uniform anchor of Table 2
        reason = f"the dataset has no item content ({tables.TEXT_EMBEDDINGS} not materialized)"
        planned, skipped = [], {variant: reason for variant in study.variants}
        skipped |= {f"sensitivity {parameter}": reason for parameter in study.sensitivity}
    for variant, why in skipped.items():
        log(f"skipping {variant}: {why}")
    total = len(study.seeds) + len(planned)
    progress = progress and study.workers == 1  # epoch bars of several processes would interleave
    finished: dict[int, tuple[list[dict], pd.DataFrame]] = {}

    def record(index: int, model: str, study_name: str, run: TrainedRun, config: NegGenConfig | None) -> None:
        r = run.result
        columns = run_columns(model, study_name, r.seed, f"{run.stage}/{run.run_dir.name}", config)
        rows = metric_rows(columns, asdict(r), run.stage, store.dataset, _finished_at(run.run_dir))
        finished[index] = (rows, pd.DataFrame(r.history).assign(**columns))
        swept = "".join(f" {name}={getattr(config, name)}" for name in SWEPT_PARAMETERS) if study_name != "main" else ""
        log(
            f"[{len(finished)}/{total}] {model} seed {r.seed}{swept}: best epoch {r.best_epoch}/{r.epochs_run}, "
            f"valid recall@20 {r.best_valid['recall@20']:.4f}, test recall@20 {r.test['mmrec']['recall@20']:.4f} "
            f"({r.wall_seconds:.1f}s)"
        )

    bases: dict[int, TrainedRun] = {}
    base_calls = [(store, train_config.model_copy(update={"seed": seed}), progress) for seed in study.seeds]
    for index, run in run_all(_train_base, base_calls, study.workers):
        bases[run.result.seed] = run
        record(index, BASE_MODEL, "main", run, None)
    keys = [_neggen_run_key(bases[seed], config, fingerprint) for _, _, seed, config in planned]
    first_of: dict[str, int] = {}  # each run once, even when two variants name it
    for index, key in enumerate(keys):
        first_of.setdefault(key, index)
    # Runs of the printed objective last: they stop early (after 20-50 epochs on every dataset here),
    # so with them at the end both workers stay busy until the last run finishes.
    distinct = sorted(first_of, key=lambda key: planned[first_of[key]][3].objective == "paper")
    calls = []
    for key in distinct:
        model, _, seed, config = planned[first_of[key]]
        # Named after the first variant that ran it (an existing folder of the same key is reused).
        existing = sorted(store.folder(tables.NEGGEN_MODEL).glob(f"*-{key}"))
        run_dir = existing[0] if existing else store.folder(tables.NEGGEN_MODEL) / f"{model}-{key}"
        calls.append((store, bases[seed], run_dir, model, config, seed, progress))
    for index, run in run_all(_train_neggen, calls, study.workers):
        for planned_index in (i for i, key in enumerate(keys) if key == distinct[index]):
            model, study_name, _, config = planned[planned_index]
            record(len(study.seeds) + planned_index, model, study_name, replace(run, model=model), config)
    metrics = [row for index in sorted(finished) for row in finished[index][0]]
    history = [finished[index][1] for index in sorted(finished)]
    history_table = pd.concat(history, ignore_index=True)
    for column in GRADIENT_COLUMNS.values():  # a column per modality, NaN where absent
        if column not in history_table:
            history_table[column] = np.nan
    out = StudyResult(pd.DataFrame(metrics), history_table, skipped)
    if write:
        store.write(tables.NEGGEN_METRICS, out.metrics)
        store.write(tables.NEGGEN_HISTORY, out.history)
    return out
