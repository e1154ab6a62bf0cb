"""The demo world: Amazon-2014 format, determinism, modality separation, and that user
preferences (over attributes in both modalities) really drive the interactions."""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from pipeline.demo import (
    BACKGROUND,
    COLOURS,
    IMAGE_ATTRIBUTES,
    IMAGES_DIRNAME,
    META_FILENAME,
    PATTERNS,
    REVIEWS_FILENAME,
    SHAPES,
    TEXT_ATTRIBUTES,
    WORLD_FILENAME,
    DemoConfig,
    read_world,
    write_demo_source,
)

SMALL = DemoConfig(seed=3, n_users=300, n_items=120)


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line]


def _reviews(out: Path) -> list[dict]:
    return [json.loads(line) for line in _lines(out / REVIEWS_FILENAME)]


def _meta(out: Path) -> list[dict]:
    return [ast.literal_eval(line) for line in _lines(out / META_FILENAME)]


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_source(tmp_path_factory) -> Path:
    return write_demo_source(tmp_path_factory.mktemp("demo_default"), DemoConfig())


@pytest.fixture(scope="module")
def small_source(tmp_path_factory) -> Path:
    return write_demo_source(tmp_path_factory.mktemp("demo_small"), SMALL)


# --- format -------------------------------------------------------------------------------


def test_layout_and_gzip_header(small_source):
    assert (small_source / REVIEWS_FILENAME).name == "reviews_Demo_5.json.gz"
    assert (small_source / META_FILENAME).name == "meta_Demo.json.gz"
    for name in (REVIEWS_FILENAME, META_FILENAME):
        head = (small_source / name).read_bytes()[:10]
        assert head[:2] == b"\x1f\x8b"
        assert head[3] & 0x08 == 0, "no file name in the gzip header"
        assert head[4:8] == b"\x00\x00\x00\x00", "gzip mtime must be 0"


def test_reviews_are_strict_json_in_amazon_shape(small_source):
    world = read_world(small_source)
    reviews = _reviews(small_source)
    assert len(reviews) == world["n_interactions"]
    keys = {
        "reviewerID", "asin", "reviewerName", "helpful", "reviewText", "overall",
        "summary", "unixReviewTime", "reviewTime",
    }  # fmt: skip
    for r in reviews:
        assert set(r) == keys
        assert re.fullmatch(r"AD\d{7}", r["reviewerID"])
        assert len(r["asin"]) == 10 and r["asin"] in world["items"]
        assert isinstance(r["overall"], float) and 1.0 <= r["overall"] <= 5.0
        assert isinstance(r["unixReviewTime"], int)
        assert isinstance(r["helpful"], list) and len(r["helpful"]) == 2
        month, day, year = re.fullmatch(r"(\d\d) (\d{1,2}), (\d{4})", r["reviewTime"]).groups()
        assert 1 <= int(month) <= 12 and 1 <= int(day) <= 31 and 2012 <= int(year) <= 2030
    assert len({(r["reviewerID"], r["asin"]) for r in reviews}) == len(reviews), "no duplicates"


def test_meta_is_python_literal_not_json(small_source):
    lines = _lines(small_source / META_FILENAME)
    assert len(lines) == SMALL.n_items
    for line in lines:
        record = ast.literal_eval(line)
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
        assert {"asin", "title", "brand", "categories", "description", "price", "imUrl",
                "salesRank"} <= set(record)  # fmt: skip
        assert record["imUrl"] == f"http://example.invalid/images/{record['asin']}.png"
        assert record["categories"][0][0] == "Demo" and len(record["categories"][0]) == 2
        assert isinstance(record["price"], float) and record["price"] > 0
        assert record["brand"] in record["title"]
    assert len({ast.literal_eval(line)["asin"] for line in lines}) == len(lines)


def test_text_fields_follow_ground_truth(small_source):
    items = read_world(small_source)["items"]
    for record in _meta(small_source):
        truth = items[record["asin"]]
        assert record["brand"] == truth["brand"]
        assert truth["material"] in record["title"].lower()
        assert truth["material"] in record["description"]
        assert record["categories"][0][1].lower() == truth["category"]


def test_no_image_attribute_in_any_text_field(small_source):
    words = set(COLOURS) | set(PATTERNS) | set(SHAPES)
    words |= {"stripe", "stripes", "dot", "dots", "check", "checks", "round", "colour", "color"}
    forbidden = re.compile(r"\b(" + "|".join(sorted(words)) + r")\b", re.IGNORECASE)
    texts = []
    for record in _meta(small_source):
        texts += [record["title"], record["brand"], record["description"]]
        texts += [c for path in record["categories"] for c in path]
    for r in _reviews(small_source):
        texts += [r["reviewText"], r["summary"], r["reviewerName"]]
    hits = [t for t in texts if forbidden.search(t)]
    assert not hits, hits[:5]


# --- pictures -----------------------------------------------------------------------------


def test_drawn_colour_dominates_every_picture(default_source):
    world = read_world(default_source)
    for asin, truth in world["items"].items():
        picture = Image.open(default_source / IMAGES_DIRNAME / f"{asin}.png")
        assert picture.size == (64, 64) and picture.mode == "RGB"
        counts = Counter(map(tuple, np.asarray(picture).reshape(-1, 3).tolist()))
        assert counts[BACKGROUND] > 0
        del counts[BACKGROUND]
        (top, _), = counts.most_common(1)
        assert top == COLOURS[truth["colour"]], asin
        # brand/material are not drawn: only the colour and its pattern shade appear
        assert len(counts) <= 2, asin
        if truth["pattern"] == "solid":
            assert len(counts) == 1, asin


def test_missing_image_fraction(tmp_path):
    config = DemoConfig(seed=1, n_users=50, n_items=40, missing_image_fraction=0.25)
    out = write_demo_source(tmp_path, config)
    world = read_world(out)
    on_disk = {p.stem for p in (out / IMAGES_DIRNAME).glob("*.png")}
    missing = {a for a, item in world["items"].items() if not item["has_image"]}
    assert len(missing) == 10
    assert on_disk == set(world["items"]) - missing
    assert {r["asin"] for r in _meta(out)} == set(world["items"]), "meta keeps every item"
    # the interactions do not depend on which pictures are missing
    all_pictures = config.model_copy(update={"missing_image_fraction": 0.0})
    full = write_demo_source(tmp_path / "full", all_pictures)
    assert (out / REVIEWS_FILENAME).read_bytes() == (full / REVIEWS_FILENAME).read_bytes()


# --- determinism and idempotence ----------------------------------------------------------


def test_same_config_gives_byte_identical_files(tmp_path, small_source):
    again = write_demo_source(tmp_path / "again", SMALL)
    assert _tree(again) == _tree(small_source)
    other = write_demo_source(tmp_path / "other", SMALL.model_copy(update={"seed": 4}))
    assert (other / REVIEWS_FILENAME).read_bytes() != (small_source / REVIEWS_FILENAME).read_bytes()


def test_idempotent_and_rewrites_on_change(tmp_path):
    config = DemoConfig(n_users=40, n_items=30)
    out = write_demo_source(tmp_path, config)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert write_demo_source(tmp_path, config) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps

    # an incomplete folder (a picture lost) is repaired
    victim = next((out / IMAGES_DIRNAME).glob("*.png"))
    victim.unlink()
    write_demo_source(tmp_path, config)
    assert victim.exists()

    # another config rewrites everything and leaves no stale files behind
    smaller = DemoConfig(n_users=40, n_items=20, seed=9)
    write_demo_source(tmp_path, smaller)
    assert read_world(out)["config_hash"] == smaller.config_hash()
    assert len(list((out / IMAGES_DIRNAME).iterdir())) == 20
    assert not list(out.rglob("*.tmp"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [IMAGES_DIRNAME, META_FILENAME, REVIEWS_FILENAME, WORLD_FILENAME]
    )


# --- the world ----------------------------------------------------------------------------


def test_default_size_and_core(default_source):
    world = read_world(default_source)
    reviews = _reviews(default_source)
    per_user = Counter(r["reviewerID"] for r in reviews)
    per_item = Counter(r["asin"] for r in reviews)
    assert len(per_user) == 1500 and len(world["items"]) == 1000
    assert min(per_user.values()) >= 5
    assert 7 <= len(reviews) / len(per_user) <= 11
    # A long tail of items, as on Amazon: the data stage's 5-core removes the rarest.
    counts = sorted(per_item.values())
    assert counts[len(counts) // 2] <= 12 and 0.05 <= sum(c < 5 for c in counts) / len(counts) <= 0.3
    times = defaultdict(list)
    for r in sorted(reviews, key=lambda r: r["unixReviewTime"]):
        times[r["reviewerID"]].append(r["unixReviewTime"])
    assert all(len(set(t)) == len(t) for t in times.values()), "strictly increasing per user"


def test_likes_span_both_modalities(default_source):
    for user in read_world(default_source)["users"].values():
        attrs = [a for a, _ in user["likes"]]
        assert 2 <= len(attrs) <= 3 and len(set(attrs)) == len(attrs)
        assert set(attrs) & set(IMAGE_ATTRIBUTES) and set(attrs) & set(TEXT_ATTRIBUTES)


def _lift(out: Path, modality: tuple[str, ...] | None = None) -> float:
    """Mean likes matched by interacted items / mean likes matched by a random item."""
    world = read_world(out)
    items = world["items"]
    values = {
        a: np.array([item[a] for item in items.values()])
        for a in IMAGE_ATTRIBUTES + TEXT_ATTRIBUTES
    }
    observed = expected = 0.0
    by_user = defaultdict(list)
    for r in _reviews(out):
        by_user[r["reviewerID"]].append(r["asin"])
    for uid, asins in by_user.items():
        likes = world["users"][uid]["likes"]
        likes = [(a, v) for a, v in likes if modality is None or a in modality]
        for a, v in likes:
            observed += sum(items[asin][a] == v for asin in asins)
            expected += len(asins) * float(np.mean(values[a] == v))
    return observed / expected


def test_preferences_drive_interactions(default_source, tmp_path):
    assert _lift(default_source) > 2.5
    # both modalities carry signal: image-only likes (colour/pattern/shape) and text-only ones
    assert _lift(default_source, IMAGE_ATTRIBUTES) > 2.0
    assert _lift(default_source, TEXT_ATTRIBUTES) > 2.0
    # ... and it is the preferences that do it: without them, matches are at chance level
    flat = write_demo_source(tmp_path, DemoConfig(n_users=400, n_items=200, preference_strength=0))
    assert 0.85 < _lift(flat) < 1.15


def test_ratings_higher_when_more_likes_matched(default_source):
    world = read_world(default_source)
    by_matches = defaultdict(list)
    for r in _reviews(default_source):
        item = world["items"][r["asin"]]
        m = sum(item[a] == v for a, v in world["users"][r["reviewerID"]]["likes"])
        by_matches[m].append(r["overall"])
    means = [np.mean(by_matches[m]) for m in sorted(by_matches)]
    assert len(means) >= 3 and all(x < y for x, y in zip(means, means[1:]))


def test_popularity_shapes_interactions(default_source):
    world = read_world(default_source)
    degree = Counter(r["asin"] for r in _reviews(default_source))
    pop = np.array([item["popularity"] for item in world["items"].values()])
    deg = np.array([degree.get(a, 0) for a in world["items"]])
    top = pop >= np.quantile(pop, 0.9)
    assert deg[top].mean() > 3 * deg[~top].mean()


# --- config validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_items": 5}, "n_items must be between 20"),
        ({"n_users": 2}, "n_users must be between 10"),
        ({"image_size": 4}, "image_size must be between 16"),
        ({"missing_image_fraction": 1.0}, "missing_image_fraction must be in [0, 1)"),
        ({"min_likes": 1}, "min_likes must be between 2"),
        ({"min_likes": 3, "max_likes": 2}, "max_likes (2) must be >= min_likes (3)"),
        ({"mean_interactions": 3}, "must be >= min_interactions"),
        ({"n_items": 20, "min_interactions": 11, "mean_interactions": 12}, "at most half of n_items"),
        ({"preference_strength": -1}, "preference_strength must be a number between 0 and 20"),
        ({"colour_count": 3}, "Extra inputs are not permitted"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValidationError) as err:
        DemoConfig(**overrides)
    assert message in str(err.value)


def test_smallest_world_is_valid(tmp_path):
    out = write_demo_source(tmp_path, DemoConfig(n_users=10, n_items=20))
    per_user = Counter(r["reviewerID"] for r in _reviews(out))
    assert len(per_user) == 10 and 5 <= min(per_user.values()) <= max(per_user.values()) <= 10


def test_default_config_hash_is_stable():
    assert DemoConfig().config_hash() == DemoConfig().config_hash()
    assert DemoConfig().config_hash() != DemoConfig(seed=1).config_hash()
