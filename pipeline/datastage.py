"""The data stage: raw source → deduplicated, k-core filtered, remapped, split tables.

The filtering and remapping run in DuckDB (SQL in `sql/`); the split is numpy, seeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from pipeline.duck import connect, sql_text
from pipeline.sources import RawSource, SourceError

SPLIT_NAMES = np.array(["train", "valid", "test"])


class EmptyAfterKCore(SourceError):
    """k-core filtering removed everything; the message says what each round left."""


@dataclass
class KCoreRound:
    round: int
    interactions: int
    users: int
    items: int


@dataclass
class InteractionTable:
    interactions: pd.DataFrame
    kcore_rounds: list[KCoreRound] = field(default_factory=list)
    split_source: str = "given"
    duplicates_collapsed: int = 0


def deduplicate_and_kcore(con, interactions: pd.DataFrame, k: int) -> tuple[str, list[KCoreRound]]:
    """Load raw interactions into DuckDB (as Arrow: no per-row conversion), collapse
    duplicates, and filter to the k-core."""
    con.register("raw_interactions", pa.Table.from_pandas(interactions, preserve_index=False))
    con.execute(sql_text("dedupe.sql"))
    return kcore_filter(con, k)


def kcore_filter(con, k: int) -> tuple[str, list[KCoreRound]]:
    """Iterate the k-core round in DuckDB until no row is removed; returns the final table."""

    def shape(table: str) -> KCoreRound:
        n, users, items = con.execute(
            f"SELECT count(*), count(DISTINCT u), count(DISTINCT i) FROM {table}"
        ).fetchall()[0]  # fetchall: DuckDB 2 keeps a half-fetched result open
        return KCoreRound(0, n, users, items)

    rounds = [shape("kcore_0")]
    current = 0
    while True:
        con.execute(sql_text("kcore_round.sql", prev=f"kcore_{current}", next=f"kcore_{current + 1}", k=k))
        con.execute(f"DROP TABLE kcore_{current}")
        current += 1
        step = shape(f"kcore_{current}")
        step.round = current
        rounds.append(step)
        if step.interactions == rounds[-2].interactions or step.interactions == 0:
            return f"kcore_{current}", rounds


def mmrec_split(user_ids: np.ndarray, seed: int) -> np.ndarray:
    """x_label per row by MMRec's per-user rule: shuffle a user's interactions; fewer than 10
    → exactly 1 valid and 1 test; otherwise floor(20%) held out, valid gets the floor of half."""
    user_ids = np.asarray(user_ids)
    n = len(user_ids)
    keys = np.random.default_rng(seed).random(n)
    order = np.lexsort((keys, user_ids))
    sorted_users = user_ids[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    sizes = np.diff(np.r_[starts, n])
    held = np.where(sizes < 10, 2, np.floor(sizes * 0.2).astype(np.int64))
    n_valid = np.where(sizes < 10, 1, held // 2)
    n_train = sizes - held
    position = np.arange(n) - np.repeat(starts, sizes)
    label_sorted = np.where(
        position < np.repeat(n_train, sizes), 0,
        np.where(position < np.repeat(n_train + n_valid, sizes), 1, 2),
    ).astype(np.int8)
    labels = np.empty(n, dtype=np.int8)
    labels[order] = label_sorted
    return labels


def build_interactions(raw: RawSource, k: int, split_seed: int, use_given_split: bool) -> InteractionTable:
    """Deduplicate, k-core to a fixpoint, remap ids, split. One row per (user, item)."""
    if raw.interactions.empty:
        raise SourceError(f"the source has no interactions (files: {', '.join(raw.files)})")
    con = connect()
    final, rounds = deduplicate_and_kcore(con, raw.interactions, k)
    if rounds[-1].interactions == 0:
        trail = "; ".join(
            f"round {r.round}: {r.interactions} interactions, {r.users} users, {r.items} items"
            for r in rounds
        )
        raise EmptyAfterKCore(
            f"k-core filtering with k={k} left no interactions ({len(raw.interactions)} read; {trail}). "
            f"Lower `kcore` for this dataset in neggen.yaml."
        )
    con.execute(sql_text("remap_ids.sql", core=final))
    interactions = con.sql("SELECT * FROM remapped").df()
    con.close()

    if use_given_split and interactions["x_label"].notna().all():
        labels = interactions["x_label"].to_numpy(dtype=np.int8)
        split_source = "given"
    else:
        labels = mmrec_split(interactions["user_id"].to_numpy(), split_seed)
        split_source = f"mmrec rule, seed {split_seed}"
    interactions["x_label"] = labels
    interactions["split"] = SPLIT_NAMES[labels]
    columns = ["user_id", "item_id", "split", "x_label", "rating", "timestamp", "user_source", "item_source"]
    return InteractionTable(
        interactions=interactions[columns].reset_index(drop=True),
        kcore_rounds=rounds,
        split_source=split_source,
        duplicates_collapsed=len(raw.interactions) - rounds[0].interactions,
    )


def build_items(raw: RawSource, interactions: pd.DataFrame) -> pd.DataFrame:
    """One row per item kept by the data stage, with what the source says about it.

    Each picture is opened and decoded: one that cannot be (not an image, truncated, ...) gets
    `image_status` `corrupt` and is used nowhere after (no picture description, no visual
    features); the run goes on."""
    ids = interactions[["item_id", "item_source"]].drop_duplicates().sort_values("item_id")
    items = ids.merge(raw.items, on="item_source", how="left")
    train = interactions.loc[interactions["split"] == "train"]
    items["n_train"] = train.groupby("item_id").size().reindex(items["item_id"], fill_value=0).to_numpy()
    items["image_status"] = items["image_status"].fillna("none")
    found = (items["image_status"] == "ok").to_numpy()
    unreadable = [not picture_is_readable(path) if ok else False for path, ok in zip(items["image_path"], found)]
    items.loc[np.array(unreadable, dtype=bool), "image_status"] = "corrupt"
    return items.reset_index(drop=True)


def picture_is_readable(path) -> bool:
    """Whether the file decodes as a picture (JPEGs at reduced scale: the whole file is still
    read, which is what finds a truncated one, at a fraction of the cost)."""
    try:
        with Image.open(path) as img:
            img.draft(None, (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
        return True
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return False


def build_users(raw: RawSource, interactions: pd.DataFrame) -> pd.DataFrame:
    """One row per user kept by the data stage, with interaction counts per split."""
    ids = interactions[["user_id", "user_source"]].drop_duplicates().sort_values("user_id")
    users = ids.merge(raw.users, on="user_source", how="left")
    counts = (
        interactions.groupby(["user_id", "split"]).size().unstack(fill_value=0)
        .reindex(columns=SPLIT_NAMES, fill_value=0)
    )
    for name in SPLIT_NAMES:
        users[f"n_{name}"] = counts[name].reindex(users["user_id"]).to_numpy()
    return users.reset_index(drop=True)
