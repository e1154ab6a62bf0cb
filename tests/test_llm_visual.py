"""The visual describer (no VLM) on the demo pictures: the item's true colour is named for
(nearly) every item, and the cheap shape/pattern cues are mostly right too."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.demo import DemoConfig, read_world, write_demo_source
from pipeline.llm.engines import build_engine
from pipeline.llm.engines.visual import FEATURE_PREFIX, describe_picture
from pipeline.llm.prompts import render_request
from pipeline.llm.types import ImagePart, Message, Request


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = write_demo_source(tmp_path_factory.mktemp("demo"), DemoConfig(seed=5, n_users=200, n_items=150))
    return out, read_world(out)


def test_true_colour_pattern_and_shape_are_named(demo):
    out, world = demo
    engine = build_engine({"kind": "visual"})
    asins = sorted(world["items"])
    requests = [render_request("description_generation", item_image=out / "images" / f"{a}.png") for a in asins]
    results = engine.generate(requests)
    rates = {"colour": 0, "main colour": 0, "pattern": 0, "shape": 0}
    for asin, result in zip(asins, results):
        truth, text = world["items"][asin], result.text
        assert result.ok and text.startswith(FEATURE_PREFIX)
        colours = text.split("Colours:")[1].split(".")[0]
        rates["colour"] += truth["colour"] in colours.replace(",", " ").split()
        main = colours.replace("mostly", "").split(",")[0].split(" and ")[0].strip()
        rates["main colour"] += main == truth["colour"]
        rates["pattern"] += f"Pattern: {truth['pattern']}." in text
        rates["shape"] += f"Shape: {truth['shape']}." in text
    rates = {k: v / len(asins) for k, v in rates.items()}
    print("visual describer on the demo pictures:", rates)
    assert rates["colour"] >= 0.95 and rates["main colour"] >= 0.9
    assert rates["pattern"] >= 0.8 and rates["shape"] >= 0.8


def test_bytes_and_busy_pictures_and_missing_images(demo, tmp_path):
    out, world = demo
    engine = build_engine({"kind": "visual"})
    first = sorted(world["items"])[0]
    data = (out / "images" / f"{first}.png").read_bytes()
    by_path = engine.generate([Request(messages=(Message.user("x", ImagePart(path=out / "images" / f"{first}.png")),))])
    by_bytes = engine.generate([Request(messages=(Message.user("x", ImagePart(data=data)),))])
    assert by_path[0].text == by_bytes[0].text
    # a picture without a plain background: colours only (no outline to read)
    noisy = Image.effect_noise((64, 64), 80).convert("RGB")
    text = describe_picture(noisy)
    assert "Colours:" in text and "Shape:" not in text
    # JPEG works too
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (30, 80, 200)).save(buf, format="JPEG")
    (jpeg,) = engine.generate([Request(messages=(Message.user(ImagePart(data=buf.getvalue())),))])
    assert "blue" in jpeg.text
    # no image, or an unreadable one: an error result, not an exception
    missing, broken = engine.generate([
        Request(messages=(Message.user("no picture"),)),
        Request(messages=(Message.user(ImagePart(path=tmp_path / "nope.png")),)),
    ])
    assert "no image" in missing.error and "cannot read image" in broken.error
