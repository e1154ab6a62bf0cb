"""The built-in `demo` dataset: a seeded synthetic catalogue in the Amazon 2014 raw format.

The world is built so that NegGen's idea (contrasting item *attributes* across modalities)
has something to find:

* every item has six attributes. Three are visible only in its picture (``colour``,
  ``pattern``, ``shape``: drawn with PIL) and three only in its text (``brand``,
  ``material``, ``category``: title, description, reviews). No text field ever names a
  colour, pattern or shape, and no picture shows a brand or material.
* every user likes a combination of 2-3 ``(attribute, value)`` pairs that spans both
  modalities (at least one image-only and one text-only like).
* a user's items are drawn without replacement with probability
  ``∝ exp(preference_strength · #matched likes) · popularity ** popularity_exponent``,
  where popularity is Zipf-like and drawn once per item.

`write_demo_source` writes the world to a folder exactly as the Amazon 2014 files look::

    reviews_Demo_5.json.gz   one strict JSON object per line
    meta_Demo.json.gz        one Python-literal dict per line (like the real meta files)
    images/<asin>.png        the item pictures (a `missing_image_fraction` are left out)
    world.json               the ground truth: attributes, likes, config and its hash

and the data stage ingests it with the same code as real data. Same config → byte-identical
files; every file is written atomically; a folder already holding the same world is reused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Bump when the generator's output changes for the same config: old folders are rewritten.
FORMAT_VERSION = 1

DATASET_NAME = "Demo"
REVIEWS_FILENAME = f"reviews_{DATASET_NAME}_5.json.gz"
META_FILENAME = f"meta_{DATASET_NAME}.json.gz"
IMAGES_DIRNAME = "images"
WORLD_FILENAME = "world.json"
IMAGE_URL = "http://example.invalid/images/{asin}.png"

# --- vocabularies -----------------------------------------------------------------------

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

IMAGE_ATTRIBUTES: tuple[str, ...] = ("colour", "pattern", "shape")
TEXT_ATTRIBUTES: tuple[str, ...] = ("brand", "material", "category")
ATTRIBUTES: tuple[str, ...] = IMAGE_ATTRIBUTES + TEXT_ATTRIBUTES
VOCABULARY: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "shape": SHAPES,
    "brand": BRANDS,
    "material": MATERIALS,
    "category": CATEGORIES,
}
#: Picture background; never one of the drawn colours or their shades.
BACKGROUND: tuple[int, int, int] = (246, 244, 238)
#: Pattern ink = this fraction of the item colour (a darker shade of it).
SHADE = 0.55

# --- text templates (none may name a colour, pattern or shape) ---------------------------

_MATERIAL_PHRASES = {
    "cotton": "Soft, breathable cotton that is easy to wash.",
    "leather": "Full-grain leather that ages well with use.",
    "wool": "Warm wool with a dense, cosy knit.",
    "plastic": "Light, durable plastic that wipes clean.",
    "bamboo": "Sustainably grown bamboo, light and sturdy.",
    "ceramic": "Glazed ceramic fired for durability.",
    "linen": "Airy linen with a natural texture.",
    "steel": "Brushed steel that resists rust.",
}
_CATEGORY_PHRASES = {
    "bag": "Roomy enough for everyday essentials.",
    "mug": "Holds a generous cup of coffee or tea.",
    "lamp": "Gives a warm glow on a desk or bedside table.",
    "scarf": "Long enough to wrap twice on cold days.",
    "cushion": "Adds comfort to any sofa or reading nook.",
    "notebook": "Lies flat and takes ink without bleeding.",
    "vase": "Sized for a small bunch of fresh flowers.",
    "bottle": "Keeps drinks handy on the go.",
}
_BASE_PRICE = {
    "bag": 35.0, "mug": 12.0, "lamp": 40.0, "scarf": 22.0,
    "cushion": 18.0, "notebook": 9.0, "vase": 25.0, "bottle": 15.0,
}  # fmt: skip
_MATERIAL_PRICE = {
    "cotton": 1.0, "leather": 1.8, "wool": 1.4, "plastic": 0.7,
    "bamboo": 1.1, "ceramic": 1.2, "linen": 1.3, "steel": 1.5,
}  # fmt: skip
_REVIEWS = {  # by rating band: (summaries, texts)
    "high": (
        ("Love it", "Exactly what I wanted", "Great {category}", "Five stars", "Very happy"),
        (
            "Really happy with this {material} {category}. {brand} did a great job.",
            "The {material} feels lovely and the {category} is well made. "
            "Would buy from {brand} again.",
            "Best {category} I have owned. The {material} is excellent quality.",
            "Bought this {brand} {category} as a gift and ended up keeping it for myself.",
        ),
    ),
    "mid": (
        ("It's okay", "Decent", "Does the job", "Fine for the price"),
        (
            "A decent {category}. The {material} is fine, nothing special.",
            "Does what a {category} should. {brand} quality is about average.",
            "The {material} is okay but I expected a bit more from {brand}.",
        ),
    ),
    "low": (
        ("Not for me", "Disappointed", "Would not buy again", "Meh"),
        (
            "Not really my style. The {material} {category} went back after a week.",
            "Disappointed with this {brand} {category}; the {material} felt cheap.",
            "Returned it. Just not what I was looking for in a {category}.",
        ),
    ),
}
_FIRST_NAMES = (
    "Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Jamie", "Robin", "Chris", "Pat",
    "Lee", "Dana", "Kim", "Toni", "Drew", "Max", "Noa", "Eli", "Rene", "Sasha",
)  # fmt: skip
_LAST_INITIALS = "ABCDEFGHJKLMNPRSTVW"

_START = int(datetime(2012, 1, 1, tzinfo=timezone.utc).timestamp())
_START_SPAN_DAYS = 730  # users start within 2012-2013
_DAY = 86_400


# --- config -----------------------------------------------------------------------------


class DemoConfig(BaseModel):
    """Size and seed of the demo world. Same config → byte-identical files."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=0, description="Seed of everything random in the world.")
    # 1,500 users x 1,000 items at 9 interactions a user gives Amazon's long tail after the 5-core:
    # an item's median training count is 8 (Beauty: 6), and content (the users' attribute tastes)
    # is what generalises to the tail (README, "The demo world").
    n_users: int = Field(default=1500, description="Number of users (reviewers).")
    n_items: int = Field(default=1000, description="Number of items (asins).")
    mean_interactions: float = Field(
        default=9.0,
        description="Mean number of interactions (reviews) per user; a user's count is "
        "capped at n_items // 2.",
    )
    min_interactions: int = Field(
        default=5, description="Every user has at least this many interactions (5-core)."
    )
    min_likes: int = Field(default=2, description="Fewest (attribute, value) likes per user.")
    max_likes: int = Field(default=3, description="Most (attribute, value) likes per user.")
    preference_strength: float = Field(
        default=2.0, description="Log-odds added per matched like; 0 = preferences ignored."
    )
    popularity_exponent: float = Field(
        default=0.6, description="Exponent on the Zipf-like item popularity; 0 = ignored."
    )
    image_size: int = Field(default=64, description="Side of the square PNG pictures (px).")
    missing_image_fraction: float = Field(
        default=0.0, description="Fraction of items whose picture is deliberately not written."
    )

    @field_validator("n_users")
    @classmethod
    def _check_users(cls, v: int) -> int:
        if not 10 <= v <= 9_999_999:
            raise ValueError(f"n_users must be between 10 and 9,999,999 (got {v})")
        return v

    @field_validator("n_items")
    @classmethod
    def _check_items(cls, v: int) -> int:
        if not 20 <= v <= 99_999:
            raise ValueError(
                f"n_items must be between 20 and 99,999 (got {v}); fewer items cannot cover "
                "the attribute vocabularies, and asins have 5 digits"
            )
        return v

    @field_validator("min_interactions")
    @classmethod
    def _check_min_interactions(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"min_interactions must be at least 1 (got {v})")
        return v

    @field_validator("min_likes", "max_likes")
    @classmethod
    def _check_likes(cls, v: int, info) -> int:
        if not 2 <= v <= len(ATTRIBUTES):
            raise ValueError(
                f"{info.field_name} must be between 2 and {len(ATTRIBUTES)} (got {v}): a user "
                "likes at least one image-only and one text-only attribute value"
            )
        return v

    @field_validator("preference_strength", "popularity_exponent")
    @classmethod
    def _check_non_negative(cls, v: float, info) -> float:
        if not (math.isfinite(v) and 0 <= v <= 20):
            raise ValueError(f"{info.field_name} must be a number between 0 and 20 (got {v})")
        return v

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, v: int) -> int:
        if not 16 <= v <= 1024:
            raise ValueError(f"image_size must be between 16 and 1024 px (got {v})")
        return v

    @field_validator("missing_image_fraction")
    @classmethod
    def _check_missing(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"missing_image_fraction must be in [0, 1) (got {v})")
        return v

    @model_validator(mode="after")
    def _check_consistent(self) -> DemoConfig:
        if self.max_likes < self.min_likes:
            raise ValueError(
                f"max_likes ({self.max_likes}) must be >= min_likes ({self.min_likes})"
            )
        mean = self.mean_interactions
        if not math.isfinite(mean) or mean < self.min_interactions:
            raise ValueError(
                f"mean_interactions ({self.mean_interactions}) must be >= min_interactions "
                f"({self.min_interactions})"
            )
        if self.min_interactions > self.n_items // 2:
            raise ValueError(
                f"min_interactions ({self.min_interactions}) must be at most half of n_items "
                f"({self.n_items}); users sample items without replacement"
            )
        return self

    def config_hash(self) -> str:
        """Identifies the files this config produces (includes the generator's version)."""
        payload = f"neggen-demo-v{FORMAT_VERSION}:{self.model_dump_json()}"
        return hashlib.sha256(payload.encode()).hexdigest()


# --- the world ----------------------------------------------------------------------------


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


def _streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators, so e.g. `missing_image_fraction` does not move the interactions."""
    names = (
        "items", "likes", "counts", "choice", "order", "time",
        "reviews", "images", "jitter", "price",
    )  # fmt: skip
    children = np.random.SeedSequence([seed, FORMAT_VERSION]).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children)}


def build_world(config: DemoConfig) -> DemoWorld:
    """Sample the world (no IO). Vectorised over users and items."""
    rng = _streams(config.seed)
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


# --- pictures -----------------------------------------------------------------------------


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def draw_item(
    colour: str, pattern: str, shape: str, size: int, jitter: np.ndarray
) -> Image.Image:
    """The item's picture: its shape, filled with its colour and pattern, on `BACKGROUND`.

    `jitter` holds 4 numbers in [0, 1) (scale, x offset, y offset, pattern phase) so that
    items with the same attributes do not share one picture.
    """
    rgb = COLOURS[colour]
    ink = tuple(int(c * SHADE) for c in rgb)
    fill = Image.new("RGB", (size, size), rgb)
    pen = ImageDraw.Draw(fill)
    period = max(4, size // 8)
    phase = int(jitter[3] * period)
    if pattern == "striped":
        width = max(1, period // 3)
        for y in range(phase - period, size, period):
            pen.rectangle([0, y, size, y + width - 1], fill=ink)
    elif pattern == "dotted":
        rad = max(1, period // 4)
        for y in range(phase - period, size + period, period):
            for x in range(phase - period, size + period, period):
                pen.ellipse([x - rad, y - rad, x + rad, y + rad], fill=ink)
    elif pattern == "checked":
        width = max(1, period // 5)
        for t in range(phase - period, size, period):
            pen.rectangle([0, t, size, t + width - 1], fill=ink)
            pen.rectangle([t, 0, t + width - 1, size], fill=ink)
    elif pattern != "solid":
        raise ValueError(f"unknown pattern {pattern!r}")

    mask = Image.new("L", (size, size), 0)
    outline = ImageDraw.Draw(mask)
    r = size * (0.34 + 0.1 * float(jitter[0]))
    cx = size / 2 + (float(jitter[1]) - 0.5) * size * 0.1
    cy = size / 2 + (float(jitter[2]) - 0.5) * size * 0.1
    if shape == "circle":
        outline.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        outline.polygon(_shape_points(shape, cx, cy, r), fill=255)

    picture = Image.new("RGB", (size, size), BACKGROUND)
    picture.paste(fill, (0, 0), mask)
    return picture


# --- text ---------------------------------------------------------------------------------


def _meta_record(world: DemoWorld, item: int, price: float, sales_rank: int) -> dict:
    a = world.item_attributes(item)
    brand, material, category = a["brand"], a["material"], a["category"]
    asin = world.asins[item]
    return {
        "asin": asin,
        "title": f"{brand} {material.title()} {category.title()}",
        "price": price,
        "imUrl": IMAGE_URL.format(asin=asin),
        "salesRank": {DATASET_NAME: sales_rank},
        "brand": brand,
        "categories": [[DATASET_NAME, category.title()]],
        "description": (
            f"A {material} {category} from {brand}. {_MATERIAL_PHRASES[material]} "
            f"{_CATEGORY_PHRASES[category]}"
        ),
    }


def _review_time(unix: int) -> str:
    d = datetime.fromtimestamp(unix, tz=timezone.utc)
    return f"{d.month:02d} {d.day}, {d.year}"  # as in the real files: "09 13, 2009"


# --- writing ------------------------------------------------------------------------------


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = _tmp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_gzip_lines(path: Path, lines) -> None:
    """Deterministic gzip (mtime 0, no file name in the header), written atomically."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                buf = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
                for line in lines:
                    buf.write(line)
                    buf.write("\n")
                buf.flush()
                buf.detach()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _is_complete(out_dir: Path, config_hash: str) -> bool:
    try:
        world = json.loads((out_dir / WORLD_FILENAME).read_text())
    except (OSError, ValueError):
        return False
    if world.get("config_hash") != config_hash:
        return False
    if not ((out_dir / REVIEWS_FILENAME).is_file() and (out_dir / META_FILENAME).is_file()):
        return False
    images = out_dir / IMAGES_DIRNAME
    return all(
        (images / f"{asin}.png").is_file() == item["has_image"]
        for asin, item in world.get("items", {}).items()
    )


def write_demo_source(out_dir: Path, config: DemoConfig | None = None) -> Path:
    """Write the demo world under `out_dir` in the Amazon 2014 raw format; return `out_dir`.

    Idempotent: a folder already holding the complete world of the same config (its hash is
    in `world.json`, written last) is returned untouched. Otherwise `world.json` is removed
    first, so a crash mid-write never leaves a folder that looks complete.
    """
    config = config or DemoConfig()
    out_dir = Path(out_dir)
    config_hash = config.config_hash()
    if _is_complete(out_dir, config_hash):
        return out_dir

    world = build_world(config)
    images = out_dir / IMAGES_DIRNAME
    images.mkdir(parents=True, exist_ok=True)
    (out_dir / WORLD_FILENAME).unlink(missing_ok=True)

    # Pictures; stale ones from another config (or meant to be missing) are removed.
    wanted = {f"{a}.png" for a, ok in zip(world.asins, world.has_image) if ok}
    for old in images.iterdir():
        if old.is_file() and old.name.endswith((".png", ".tmp")) and old.name not in wanted:
            old.unlink(missing_ok=True)
    jitters = _streams(config.seed)["jitter"].random((config.n_items, 4))
    for item, asin in enumerate(world.asins):
        if not world.has_image[item]:
            continue
        a = world.item_attributes(item)
        picture = draw_item(a["colour"], a["pattern"], a["shape"], config.image_size, jitters[item])
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        _atomic_bytes(images / f"{asin}.png", buf.getvalue())

    # Meta: Python-literal dicts (repr), one per line, like the real `meta_*.json.gz`.
    price_noise = np.exp(_streams(config.seed)["price"].normal(0.0, 0.25, config.n_items))
    degree = np.bincount(world.inter_item, minlength=config.n_items)
    sales_rank = np.empty(config.n_items, dtype=np.int64)
    sales_rank[np.argsort(-degree, kind="stable")] = np.arange(1, config.n_items + 1)

    def meta_lines():
        for item in range(config.n_items):
            a = world.item_attributes(item)
            price = _BASE_PRICE[a["category"]] * _MATERIAL_PRICE[a["material"]] * price_noise[item]
            yield repr(_meta_record(world, item, round(float(price), 2), int(sales_rank[item])))

    _atomic_gzip_lines(out_dir / META_FILENAME, meta_lines())

    # Reviews: strict JSON, grouped by asin like the real 5-core files.
    rr = _streams(config.seed)["reviews"]
    n = len(world.inter_user)
    noise = rr.normal(0.0, 0.8, n)
    ratings = np.clip(np.rint(2.7 + 0.9 * world.inter_matches + noise), 1, 5)
    pick_summary = rr.integers(0, 1 << 30, n)
    pick_text = rr.integers(0, 1 << 30, n)
    helpful_total = rr.geometric(0.6, n) - 1
    helpful_yes = (helpful_total * rr.random(n)).round().astype(np.int64)
    names = [
        f"{_FIRST_NAMES[u % len(_FIRST_NAMES)]} "
        f"{_LAST_INITIALS[(u * 7 + config.seed) % len(_LAST_INITIALS)]}."
        for u in range(config.n_users)
    ]
    order = np.lexsort((world.inter_user, world.inter_time, world.inter_item))

    def review_lines():
        for k in order:
            u, i = int(world.inter_user[k]), int(world.inter_item[k])
            a = world.item_attributes(i)
            rating = float(ratings[k])
            band = "high" if rating >= 4 else ("mid" if rating >= 3 else "low")
            summaries, texts = _REVIEWS[band]
            unix = int(world.inter_time[k])
            yield json.dumps(
                {
                    "reviewerID": world.reviewer_ids[u],
                    "asin": world.asins[i],
                    "reviewerName": names[u],
                    "helpful": [int(helpful_yes[k]), int(helpful_total[k])],
                    "reviewText": texts[pick_text[k] % len(texts)].format(**a),
                    "overall": rating,
                    "summary": summaries[pick_summary[k] % len(summaries)].format(**a),
                    "unixReviewTime": unix,
                    "reviewTime": _review_time(unix),
                }
            )

    _atomic_gzip_lines(out_dir / REVIEWS_FILENAME, review_lines())

    # Ground truth, last: its presence (with the right hash) marks the folder complete.
    truth = {
        "format_version": FORMAT_VERSION,
        "config_hash": config_hash,
        "config": config.model_dump(),
        "files": {
            "reviews": REVIEWS_FILENAME,
            "meta": META_FILENAME,
            "images": IMAGES_DIRNAME,
        },
        "attributes": {"image": list(IMAGE_ATTRIBUTES), "text": list(TEXT_ATTRIBUTES)},
        "vocabulary": {a: list(v) for a, v in VOCABULARY.items()},
        "colours_rgb": {c: list(rgb) for c, rgb in COLOURS.items()},
        "background_rgb": list(BACKGROUND),
        "n_interactions": n,
        "items": {
            asin: {
                **world.item_attributes(i),
                "popularity": float(world.popularity[i]),
                "has_image": bool(world.has_image[i]),
            }
            for i, asin in enumerate(world.asins)
        },
        "users": {
            rid: {"likes": [list(like) for like in world.user_likes(u)]}
            for u, rid in enumerate(world.reviewer_ids)
        },
    }
    _atomic_bytes(out_dir / WORLD_FILENAME, (json.dumps(truth, indent=1) + "\n").encode())
    return out_dir


def read_world(out_dir: Path) -> dict:
    """The ground truth (`world.json`) of a written demo source."""
    return json.loads((Path(out_dir) / WORLD_FILENAME).read_text())
