"""Write the demo world to a folder exactly as the Amazon 2014 files look (see
pipeline/demo/__init__.py), every file atomically (neggen_model/atomic.py)."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable
from pathlib import Path

from neggen_model.atomic import TEMPORARY_SUFFIX, atomic_path, write_bytes, write_json
from pipeline.config.demo import FORMAT_VERSION, IMAGE_ATTRIBUTES, TEXT_ATTRIBUTES, DemoConfig
from pipeline.demo.pictures import BACKGROUND, draw_item
from pipeline.demo.text import DATASET_NAME, meta_lines, review_lines
from pipeline.demo.world import COLOURS, VOCABULARY, build_world, streams

REVIEWS_FILENAME = f"reviews_{DATASET_NAME}_5.json.gz"
META_FILENAME = f"meta_{DATASET_NAME}.json.gz"
IMAGES_DIRNAME = "images"
WORLD_FILENAME = "world.json"


def _write_gzip_lines(path: Path, lines: Iterable[str]) -> None:
    """Deterministic gzip (mtime 0, no file name in the header): the same lines give the same bytes.
    Not fsynced: the source is rewritten from its config if lost, and `world.json`, written last
    and durably, says whether the folder is complete."""
    with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            buf = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
            for line in lines:
                buf.write(line)
                buf.write("\n")
            buf.flush()
            buf.detach()


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
        if old.is_file() and old.name.endswith((".png", TEMPORARY_SUFFIX)) and old.name not in wanted:
            old.unlink(missing_ok=True)
    jitters = streams(config.seed)["jitter"].random((config.n_items, 4))
    for item, asin in enumerate(world.asins):
        if not world.has_image[item]:
            continue
        a = world.item_attributes(item)
        picture = draw_item(a["colour"], a["pattern"], a["shape"], config.image_size, jitters[item])
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        write_bytes(images / f"{asin}.png", buf.getvalue(), durable=False)

    # Text: the meta and review records (pipeline/demo/text.py).
    _write_gzip_lines(out_dir / META_FILENAME, meta_lines(world))
    _write_gzip_lines(out_dir / REVIEWS_FILENAME, review_lines(world))

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
        "n_interactions": len(world.inter_user),
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
    write_json(out_dir / WORLD_FILENAME, truth)
    return out_dir


def read_world(out_dir: Path) -> dict:
    """The ground truth (`world.json`) of a written demo source."""
    return json.loads((Path(out_dir) / WORLD_FILENAME).read_text())
