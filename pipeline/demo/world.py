"""The demo world (no IO): the attribute vocabularies, and the items, users and interactions
sampled from a `DemoConfig` (see pipeline/demo/__init__.py for how the world is built)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from pipeline.config.demo import ATTRIBUTES, FORMAT_VERSION, IMAGE_ATTRIBUTES, DemoConfig

#: Image-only: the fill colour of the shape.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 45),
    "orange": (242, 133, 24),
    "yellow": (236, 200, 30),
    "green": (46, 150, 66),
    "teal": (20, 140, 145),
    "blue": (38, 86, 205),
    "purple": (128, 58, 176),
    "pink": (238, 120, 176),
}
#: Image-only: how the shape is filled (a darker shade of its colour, always < half the area).
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checked")
#: Image-only: the outline drawn.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")
#: Text-only: invented brand names (title, `brand` field, reviews).
BRANDS: tuple[str, ...] = (
    "Norvik", "Pellago", "Quillon", "Zentara", "Brisko",
    "Halvard", "Omnira", "Tessaly", "Vantoo", "Lumora",
)  # fmt: skip
#: Text-only: what the item is made of (title, description, reviews).
MATERIALS: tuple[str, ...] = (
    "cotton", "leather", "wool", "plastic", "bamboo", "ceramic", "linen", "steel",
)  # fmt: skip
#: Text-only: the kind of item (title, categories, description).
CATEGORIES: tuple[str, ...] = (
    "bag", "mug", "lamp", "scarf", "cushion", "notebook", "vase", "bottle",
)  # fmt: skip
VOCABULARY: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "shape": SHAPES,
    "brand": BRANDS,
    "material": MATERIALS,
    "category": CATEGORIES,
}

_START = int(datetime(2012, 1, 1, tzinfo=timezone.utc).timestamp())
_START_SPAN_DAYS = 730  # users start within 2012-2013
_DAY = 86_400


@dataclass(frozen=True)
class DemoWorld:
    """The sampled world, as arrays (codes index into `VOCABULARY[attribute]`)."""

    config: DemoConfig
    asins: list[str]
    reviewer_ids: list[str]
    item_attrs: np.ndarray  # (n_items, 6) int codes, columns in ATTRIBUTES order
    popularity: np.ndarray  # (n_items,) sums to 1
    like_attr: np.ndarray  # (n_users, max_likes) column index into ATTRIBUTES, -1 = none
    like_value: np.ndarray  # (n_users, max_likes) value code, -1 = none
    inter_user: np.ndarray  # (n_interactions,) user index, grouped by user
    inter_item: np.ndarray  # (n_interactions,) item index
    inter_time: np.ndarray  # (n_interactions,) unix seconds, increasing per user
    inter_matches: np.ndarray  # (n_interactions,) number of the user's likes the item matches
    has_image: np.ndarray  # (n_items,) bool

    def item_attributes(self, item: int) -> dict[str, str]:
        return {a: VOCABULARY[a][self.item_attrs[item, j]] for j, a in enumerate(ATTRIBUTES)}

    def user_likes(self, user: int) -> list[tuple[str, str]]:
        likes = []
        for col, val in zip(self.like_attr[user], self.like_value[user]):
            if col >= 0:
                name = ATTRIBUTES[col]
                likes.append((name, VOCABULARY[name][val]))
        return likes


def streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators, so e.g. `missing_image_fraction` does not move the interactions."""
    names = (
        "items", "likes", "counts", "choice", "order", "time",
        "reviews", "images", "jitter", "price",
    )  # fmt: skip
    children = np.random.SeedSequence([seed, FORMAT_VERSION]).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children)}


def build_world(config: DemoConfig) -> DemoWorld:
    """Sample the world (no IO). Vectorised over users and items."""
    rng = streams(config.seed)
    n_u, n_i = config.n_users, config.n_items
    cards = np.array([len(VOCABULARY[a]) for a in ATTRIBUTES])

    # Items: uniform attribute values; Zipf-like popularity over a random rank order.
    item_attrs = (rng["items"].random((n_i, len(ATTRIBUTES))) * cards).astype(np.int64)
    ranks = rng["items"].permutation(n_i) + 1
    popularity = 1.0 / ranks
    popularity /= popularity.sum()

    # Likes: one image-only and one text-only attribute first, then the rest in random order.
    n_img = len(IMAGE_ATTRIBUTES)
    r = rng["likes"]
    keys = r.random((n_u, len(ATTRIBUTES)))
    rows = np.arange(n_u)
    keys[rows, r.integers(0, n_img, n_u)] = -2.0
    keys[rows, n_img + r.integers(0, len(ATTRIBUTES) - n_img, n_u)] = -1.0
    like_attr = np.argsort(keys, axis=1)[:, : config.max_likes]
    like_value = (r.random(like_attr.shape) * cards[like_attr]).astype(np.int64)
    n_likes = r.integers(config.min_likes, config.max_likes + 1, n_u)
    unused = np.arange(config.max_likes)[None, :] >= n_likes[:, None]
    like_attr[unused] = -1
    like_value[unused] = -1

    # Interaction counts: min + geometric tail with the requested mean, capped.
    extra = config.mean_interactions - config.min_interactions
    if extra > 0:
        counts = config.min_interactions + rng["counts"].geometric(1.0 / (extra + 1.0), n_u) - 1
    else:
        counts = np.full(n_u, config.min_interactions)
    counts = np.minimum(counts, n_i // 2).astype(np.int64)
    k_max = int(counts.max())

    # Sampling without replacement ∝ exp(score): Gumbel top-k, in chunks of users.
    log_pop = config.popularity_exponent * np.log(popularity)
    chunk = max(1, 2_000_000 // (n_i * config.max_likes))
    chosen = np.empty((n_u, k_max), dtype=np.int64)
    chosen_matches = np.empty((n_u, k_max), dtype=np.int64)
    for start in range(0, n_u, chunk):
        sl = slice(start, min(start + chunk, n_u))
        la, lv = like_attr[sl], like_value[sl]
        values = item_attrs[:, np.where(la >= 0, la, 0)]  # (n_i, c, L)
        matches = ((values == lv[None]) & (la[None] >= 0)).sum(axis=2).T  # (c, n_i)
        score = config.preference_strength * matches + log_pop[None, :]
        score = score + rng["choice"].gumbel(size=score.shape)
        top = np.argpartition(-score, k_max - 1, axis=1)[:, :k_max]
        top_scores = np.take_along_axis(score, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        chosen[sl] = top
        chosen_matches[sl] = np.take_along_axis(matches, top, axis=1)

    # Keep each user's first `count` draws, in random order (so time order is not biased
    # towards the best-matching items, which would skew leave-last-out splits).
    keep = np.arange(k_max)[None, :] < counts[:, None]
    order_keys = np.where(keep, rng["order"].random((n_u, k_max)), np.inf)
    order = np.argsort(order_keys, axis=1, kind="stable")
    chosen = np.take_along_axis(chosen, order, axis=1)
    chosen_matches = np.take_along_axis(chosen_matches, order, axis=1)
    keep = np.take_along_axis(keep, order, axis=1)

    # Timestamps: a start day in 2012-2013, then gaps of >= 1 day (midnight UTC, like Amazon).
    start_day = rng["time"].integers(0, _START_SPAN_DAYS, n_u)
    gaps = 1 + rng["time"].geometric(1 / 8, (n_u, k_max))
    gaps[:, 0] = 0
    days = start_day[:, None] + np.cumsum(gaps, axis=1)
    times = _START + days * _DAY

    inter_user = np.repeat(rows, counts)
    n_missing = int(round(config.missing_image_fraction * n_i))
    has_image = np.ones(n_i, dtype=bool)
    if n_missing:
        has_image[rng["images"].choice(n_i, n_missing, replace=False)] = False

    return DemoWorld(
        config=config,
        asins=[f"B0DEM{i:05d}" for i in range(n_i)],
        reviewer_ids=[f"AD{u:07d}" for u in range(n_u)],
        item_attrs=item_attrs,
        popularity=popularity,
        like_attr=like_attr,
        like_value=like_value,
        inter_user=inter_user,
        inter_item=chosen[keep],
        inter_time=times[keep],
        inter_matches=chosen_matches[keep],
        has_image=has_image,
    )
