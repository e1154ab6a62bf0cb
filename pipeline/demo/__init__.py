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

    pipeline/config/demo.py   DemoConfig: size and seed (with the other config types)
    world.py                  the vocabularies and the sampled world (no IO)
    pictures.py               each item's picture (its image-only attributes)
    text.py                   the meta and review records (its text-only attributes)
    writer.py                 the files, written atomically; reading the ground truth back
"""

from pipeline.config.demo import ATTRIBUTES, FORMAT_VERSION, IMAGE_ATTRIBUTES, TEXT_ATTRIBUTES, DemoConfig
from pipeline.demo.pictures import BACKGROUND, SHADE, draw_item
from pipeline.demo.text import DATASET_NAME, IMAGE_URL
from pipeline.demo.world import BRANDS, CATEGORIES, COLOURS, MATERIALS, PATTERNS, SHAPES, VOCABULARY, DemoWorld, build_world
from pipeline.demo.writer import IMAGES_DIRNAME, META_FILENAME, REVIEWS_FILENAME, WORLD_FILENAME, read_world, write_demo_source

__all__ = [
    "ATTRIBUTES", "BACKGROUND", "BRANDS", "CATEGORIES", "COLOURS", "DATASET_NAME", "FORMAT_VERSION", "IMAGES_DIRNAME",
    "IMAGE_ATTRIBUTES", "IMAGE_URL", "MATERIALS", "META_FILENAME", "PATTERNS", "REVIEWS_FILENAME", "SHADE", "SHAPES",
    "TEXT_ATTRIBUTES", "VOCABULARY", "WORLD_FILENAME", "DemoConfig", "DemoWorld", "build_world", "draw_item",
    "read_world", "write_demo_source",
]  # fmt: skip
