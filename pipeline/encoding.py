"""Attribute encoding (paper §3.2.4, eq. 8-9): a dataset's two embedding stores.

    text_embeddings.parquet    one row per (item_id, field, version): each labelled field of
                               each description ("Title: ...", "Image: ...") embedded alone;
                               version `original` (item_descriptions, e_m), `generated`
                               (negative_descriptions, e_m*), `direct` (direct_negatives)
    image_embeddings.parquet   one row per item with a picture: its visual features

Both have the columns item_id int64, field, modality, version, encoder (strings) and vector
fixed_size_list<float32>[dim]. Encoding is cached by content in
`<home>/<dataset>/embedding_cache/embeddings.sqlite` (key: the encoder's identity and the
sha256 of the text or of the image file's bytes), committed per batch: only distinct inputs
are encoded, a re-run encodes only what changed, and a crash loses no finished batch.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import tables
from pipeline.config import EncodingConfig
from pipeline.encoders import (
    BatchedEncoder,
    EncoderError,
    PrecomputedImageFeatures,
    build_image_encoder,
    build_text_encoder,
)
from pipeline.llm.cache import DurableStore
from pipeline.storage import DatasetStore, file_digest

CACHE_FOLDER = "embedding_cache"
CACHE_FILE = "embeddings.sqlite"
# Which description table gives which `version`; direct_negatives is optional.
VERSION_OF_TABLE = {tables.ITEM_DESCRIPTIONS: "original", tables.NEGATIVE_DESCRIPTIONS: "generated",
                    tables.DIRECT_NEGATIVES: "direct"}  # fmt: skip
OPTIONAL_TABLES = (tables.DIRECT_NEGATIVES,)
VISUAL_TEXT_FIELD = "image"  # the picture described as text (§3.2.1): visual modality
IMAGE_FIELD = "image_features"

# A field label: up to three words starting with a letter, then a colon ("Title:",
# "Product type:"); "http://" is not one.
_LABEL = re.compile(r"^\s*([A-Za-z][\w&/-]*(?: [\w&/-]+){0,2})\s*:(?!//)(.*)$")


def split_fields(text: str) -> dict[str, str]:
    """The "Field: value" lines of a description as {field: value}.

    Field names are lower-cased with spaces as "_"; a line without a label continues the
    field above it; lines before the first label, or a text with no labels at all, form the
    field "text". Whitespace is collapsed; empty fields are left out; a repeated label's values
    are joined.
    """
    fields: dict[str, str] = {}
    current = "text"
    for line in (text or "").splitlines():
        match = _LABEL.match(line)
        if match:
            current = "_".join(match.group(1).lower().split())
            line = match.group(2)
        value = " ".join(line.split())
        if value:
            fields[current] = f"{fields[current]} {value}" if current in fields else value
    return fields


# --------------------------------------------------------------------------- the cache


def content_key(identity: str, digest: str) -> str:
    """The cache address of an input (by its sha256 `digest`) under an encoder."""
    return hashlib.sha256(f"{identity}\0{digest}".encode()).hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    key TEXT PRIMARY KEY,
    encoder TEXT NOT NULL,
    vector BLOB NOT NULL,
    created_at REAL NOT NULL
)
"""


class EmbeddingCache(DurableStore):
    """Vectors by content key (float32 little-endian bytes), durable per `put_many`."""

    def __init__(self, folder: str | Path):
        super().__init__(Path(folder) / CACHE_FILE, _SCHEMA)

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return {key: np.frombuffer(blob, dtype="<f4") for key, blob in self.select_keys("embeddings", "vector", keys)}

    def put_many(self, encoder: str, keys: Sequence[str], vectors: np.ndarray) -> int:
        now = time.time()
        blobs = np.ascontiguousarray(vectors, dtype="<f4")
        return self.insert_many("embeddings", [(key, encoder, row.tobytes(), now) for key, row in zip(keys, blobs)])

    def __len__(self) -> int:
        return self.count("embeddings")


@dataclass
class CachedVectors:
    vectors: np.ndarray  # float32 [n inputs, dim], row i for input i
    cache_hits: int
    encoded: int


def encode_cached(
    encoder: BatchedEncoder, digests: Sequence[str], inputs: Sequence, cache: EmbeddingCache
) -> CachedVectors:
    """Vectors of distinct inputs (`digests[i]` is the sha256 of `inputs[i]`): cached ones are
    read, the others encoded in batches and each batch stored as soon as it is done."""
    keys = [content_key(encoder.identity, digest) for digest in digests]
    found = cache.get_many(keys)
    missing = [i for i, key in enumerate(keys) if key not in found]
    for positions, vectors in encoder.iter_batches([inputs[i] for i in missing]):
        batch_keys = [keys[missing[p]] for p in positions]
        cache.put_many(encoder.identity, batch_keys, vectors)
        found.update(zip(batch_keys, vectors))
    if not keys:
        return CachedVectors(np.zeros((0, encoder.dim), dtype=np.float32), 0, 0)
    return CachedVectors(np.stack([found[key] for key in keys]), len(keys) - len(missing), len(missing))


# --------------------------------------------------------------------------- the stores


class Check(NamedTuple):
    name: str
    passed: bool
    metadata: dict


@dataclass
class EncodingRun:
    table: pa.Table
    meta: dict
    checks: list[Check]


def vector_table(rows: pd.DataFrame, encoder: str, vectors: np.ndarray | None) -> pa.Table:
    """The store's Arrow table: `rows` (item_id, field, modality, version) plus encoder and
    vector; `vectors` None (no encoder) gives a variable-size list column with no rows."""
    if vectors is None:
        vector = pa.array([], pa.list_(pa.float32()))
    else:
        values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
        vector = pa.FixedSizeListArray.from_arrays(values, vectors.shape[1])
    return pa.table({
        "item_id": pa.array(rows["item_id"].to_numpy(dtype=np.int64), pa.int64()),
        **{name: pa.array(rows[name].astype(object).tolist(), pa.string())
           for name in ("field", "modality", "version")},
        "encoder": pa.array([encoder] * len(rows), pa.string()),
        "vector": vector,
    })  # fmt: skip


def description_fields(store: DatasetStore) -> pd.DataFrame:
    """item_id, field, modality, version, text: every labelled field of every description."""
    rows = []
    for table, version in VERSION_OF_TABLE.items():
        if table in OPTIONAL_TABLES and not store.table_path(table).exists():
            continue
        descriptions = store.read(table, columns=["item_id", "text"]).dropna(subset=["text"])
        for item_id, text in zip(descriptions["item_id"], descriptions["text"]):
            for name, value in split_fields(text).items():
                rows.append((int(item_id), name, "visual" if name == VISUAL_TEXT_FIELD else "text", version, value))
    frame = pd.DataFrame(rows, columns=["item_id", "field", "modality", "version", "text"])
    return frame.sort_values("item_id", kind="stable", ignore_index=True)


def build_text_embeddings(store: DatasetStore, config: EncodingConfig) -> EncodingRun:
    """Embed every field of the original and generated descriptions; write `text_embeddings`."""
    start = time.perf_counter()
    rows = description_fields(store)
    distinct = list(dict.fromkeys(rows["text"]))
    encoder = build_text_encoder(config)
    with EmbeddingCache(store.folder(CACHE_FOLDER)) as cache:
        done = encode_cached(encoder, [text_digest(text) for text in distinct], distinct, cache)
    index = {text: i for i, text in enumerate(distinct)}
    table = vector_table(rows, encoder.identity, done.vectors[[index[text] for text in rows["text"]]])
    store.write(tables.TEXT_EMBEDDINGS, table)
    seconds = time.perf_counter() - start
    items = int(rows["item_id"].nunique())
    meta = {
        "rows": len(rows), "items": items, "distinct_strings": len(distinct),
        "strings_encoded": done.encoded, "cache_hits": done.cache_hits, "seconds": round(seconds, 3),
        "items_per_s": round(items / seconds, 1), "strings_per_s": round(len(distinct) / seconds, 1),
        "dim": int(done.vectors.shape[1]), "encoder": encoder.identity,
        **{f"rows_{version}": int(n) for version, n in rows["version"].value_counts().items()},
        "fields": ", ".join(rows["field"].unique()),
    }  # fmt: skip
    item_ids = store.read(tables.ITEMS, columns=["item_id"])["item_id"]
    # The generation stage records the items it could not describe or write a negative for (its
    # coverage checks accept them, and an item that failed upstream is recorded in every later
    # stage). Without a description an item has no original text tokens; without a negative it
    # keeps its original tokens only, and NegGen gives it no contrast.
    without_description = _failed_items(store, tables.failures_table(tables.ITEM_DESCRIPTIONS))
    without_negative = _failed_items(store, tables.failures_table(tables.NEGATIVE_DESCRIPTIONS))
    meta["items_without_description"] = len(without_description)
    meta["items_without_negative"] = len(without_negative)
    pairing = _pairing_check(rows, item_ids, {"original": without_description, "generated": without_negative})
    return EncodingRun(table, meta, [pairing, *vector_checks(table)])


def _failed_items(store: DatasetStore, failures: str) -> set[int]:
    if not store.table_path(failures).exists():
        return set()
    return {int(i) for i in store.read(failures, columns=["item_id"])["item_id"]}


def build_image_embeddings(store: DatasetStore, config: EncodingConfig, dataset_folder: Path | None) -> EncodingRun:
    """Embed every item's picture (or read its precomputed features); write `image_embeddings`."""
    start = time.perf_counter()
    items = store.read(tables.ITEMS, columns=["item_id", "item_source", "image_path", "image_status"])
    encoder = build_image_encoder(config, dataset_folder)
    counts = {"cache_hits": 0, "images_encoded": 0, "distinct_images": 0}
    if encoder is None:
        embedded, vectors = items.iloc[:0], None
    elif isinstance(encoder, PrecomputedImageFeatures):
        embedded, vectors = items, encoder.rows(items["item_source"].astype(str).tolist(), len(items))
    else:
        embedded = items[(items["image_status"] == "ok") & items["image_path"].notna()]
        paths = embedded["image_path"].astype(str).tolist()
        digests = [_image_digest(path, item) for path, item in zip(paths, embedded["item_id"])]
        first_path: dict[str, str] = {}  # identical pictures are encoded once
        for digest, path in zip(digests, paths):
            first_path.setdefault(digest, path)
        with EmbeddingCache(store.folder(CACHE_FOLDER)) as cache:
            done = encode_cached(encoder, list(first_path), list(first_path.values()), cache)
        index = {digest: i for i, digest in enumerate(first_path)}
        vectors = done.vectors[[index[digest] for digest in digests]]
        counts = {"cache_hits": done.cache_hits, "images_encoded": done.encoded, "distinct_images": len(first_path)}
    rows = embedded[["item_id"]].assign(field=IMAGE_FIELD, modality="visual", version="original")
    identity = "none" if encoder is None else encoder.identity
    table = vector_table(rows, identity, vectors)
    store.write(tables.IMAGE_EMBEDDINGS, table)
    seconds = time.perf_counter() - start
    meta = {
        "rows": len(rows), "items": len(items), "items_without_image": len(items) - len(rows),
        "items_with_corrupt_image": int((items["image_status"] == "corrupt").sum()), **counts,
        "seconds": round(seconds, 3), "images_per_s": round(len(rows) / seconds, 1),
        "dim": 0 if vectors is None else int(vectors.shape[1]), "encoder": identity,
    }  # fmt: skip
    return EncodingRun(table, meta, vector_checks(table))


def _image_digest(path: str, item_id: int) -> str:
    try:
        return file_digest(path)
    except OSError as err:
        raise EncoderError(
            f"item {item_id}: cannot read its picture {path} ({err.strerror or err}); if the pictures "
            "moved, materialize `items` again"
        ) from None


# --------------------------------------------------------------------------- checks


def pairing_gaps(rows: pd.DataFrame, item_ids: Sequence[int]) -> pd.DataFrame:
    """(item_id, field, missing) where an item lacks an original or a generated vector for a
    field that either version has; field "*" for an item with no vector of that version at all."""
    pairs = rows[rows["version"].isin(["original", "generated"])]
    have = pairs.groupby(["item_id", "field"])["version"].agg(frozenset)
    gaps = [
        (int(item_id), name, version)
        for (item_id, name), versions in have.items()
        for version in ("original", "generated") if version not in versions
    ]  # fmt: skip
    for version in ("original", "generated"):
        present = set(pairs.loc[pairs["version"] == version, "item_id"])
        gaps += [(int(item_id), "*", version) for item_id in item_ids if item_id not in present]
    return pd.DataFrame(gaps, columns=["item_id", "field", "missing"])


def _pairing_check(rows: pd.DataFrame, item_ids: Sequence[int], excused: dict[str, set[int]]) -> Check:
    """`pairing_gaps`, except the versions the generation stage recorded as failed for an item
    (`excused`: version -> item ids)."""
    gaps = pairing_gaps(rows, item_ids)
    recorded = np.zeros(len(gaps), dtype=bool)
    for version, items in excused.items():
        recorded |= (gaps["missing"] == version).to_numpy() & gaps["item_id"].isin(items).to_numpy()
    gaps = gaps[~recorded]
    return Check("original_and_generated", gaps.empty, {
        "items": len(item_ids), "gaps": len(gaps), "items_with_gaps": int(gaps["item_id"].nunique()),
        "gaps_of_recorded_failures": int(recorded.sum()),
        "sample": gaps.head(10).to_string(index=False) if len(gaps) else "none",
    })  # fmt: skip


def vector_checks(table: pa.Table) -> list[Check]:
    """`finite`: no NaN or inf anywhere; `dims`: one encoder and one dimension > 0 for all rows."""
    vector = table.column("vector").combine_chunks()
    finite = pc.is_finite(vector.flatten()).to_numpy(zero_copy_only=False)
    bad = len(np.unique(pc.list_parent_indices(vector).to_numpy()[~finite]))
    dims = sorted(pc.unique(pc.list_value_length(vector)).to_pylist())
    encoders = pc.unique(table.column("encoder")).to_pylist()
    consistent = len(encoders) <= 1 and len(dims) <= 1 and all(d > 0 for d in dims)
    return [
        Check("finite", bad == 0, {"rows_with_nan_or_inf": bad}),
        Check("dims", consistent,
              {"dims": ", ".join(map(str, dims)) or "none", "encoders": ", ".join(encoders) or "none"}),
    ]  # fmt: skip
