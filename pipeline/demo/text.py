"""The demo items' and reviews' text, in the Amazon 2014 records: the three text-only attributes
(brand, material, category) in titles, descriptions and reviews; none names a colour, pattern or
shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

import numpy as np

from pipeline.demo.world import DemoWorld, streams

DATASET_NAME = "Demo"
IMAGE_URL = "http://example.invalid/images/{asin}.png"

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


def meta_lines(world: DemoWorld) -> Iterator[str]:
    """The meta file's lines: Python-literal dicts (repr), one per item, like the real `meta_*.json.gz`."""
    config = world.config
    price_noise = np.exp(streams(config.seed)["price"].normal(0.0, 0.25, config.n_items))
    degree = np.bincount(world.inter_item, minlength=config.n_items)
    sales_rank = np.empty(config.n_items, dtype=np.int64)
    sales_rank[np.argsort(-degree, kind="stable")] = np.arange(1, config.n_items + 1)
    for item in range(config.n_items):
        a = world.item_attributes(item)
        price = _BASE_PRICE[a["category"]] * _MATERIAL_PRICE[a["material"]] * price_noise[item]
        yield repr(_meta_record(world, item, round(float(price), 2), int(sales_rank[item])))


def review_lines(world: DemoWorld) -> Iterator[str]:
    """The reviews file's lines: strict JSON, one per interaction, grouped by asin like the real
    5-core files."""
    config = world.config
    rr = streams(config.seed)["reviews"]
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
    for k in np.lexsort((world.inter_user, world.inter_time, world.inter_item)):
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
