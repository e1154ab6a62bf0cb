"""The paper's four prompt templates: text as printed, versions, strict rendering, images;
and the §3.2.1 item description."""

from __future__ import annotations

import pytest

from pipeline.llm.prompts import (
    PromptError,
    build_description,
    parse_description,
    parse_template,
    render,
    render_request,
    template_version,
    templates,
)
from pipeline.llm.types import ImagePart, SamplingParams, TextPart

PAPER = {
    "direct_generation": [
        "**Task Overview:** Given the attributes of a positive item, generate contrasting negative "
        "attributes following the same structure as the positive item. The generated attributes "
        "should be semantically similar but different from the positive item.",
        "**Input:** {positive_attributes}",
    ],
    "description_generation": [
        "**Task Overview:** You are a descriptive writer who excels at capturing the essence and "
        "details of items in clear language. Generate natural, detailed description of the item "
        "shown in the given image.",
        "**Input:** {item_image}",
    ],
    "attribute_masking": [
        "**Task Overview:** Transform the given item description by masking key feature words with [MASK].",
        "- Analyze the given item description.",
        "- Identify most significant words that represent (1) Core features (2) Distinctive "
        "characteristics (3) Key specifications",
        "- Replace these words with [MASK].",
        "- Only output the masked description.",
        "**Input:** {item_description}",
    ],
    "attribute_completion": [
        "**Task Overview:** Complete the masked product description by filling in the missing words marked with [MASK].",
        "- Analyze the given masked product description.",
        "- Identify the possible words that can be used to complete the masked description.",
        "- Replace the [MASK] tokens with the appropriate words.",
        "- Ensure that the completed description is coherent and meaningful.",
        "- Only the completed description is output.",
        "**Input:** {masked_description}",
    ],
}


def test_the_four_templates_reproduce_the_paper_and_have_versions():
    loaded = templates()
    assert set(PAPER) <= set(loaded)
    for name, lines in PAPER.items():
        body = loaded[name].body
        for line in lines:
            assert line in body.splitlines(), (name, line)
        assert body.rstrip().endswith("**Output:**")
        assert template_version(name) >= 1
        assert len(loaded[name].fields) == 1


def test_render_text_template_keeps_braces_in_values():
    messages = render("attribute_masking", item_description="A {weird} mug")
    assert len(messages) == 1 and messages[0].role == "user"
    text = messages[0].text
    assert "**Input:** A {weird} mug" in text and "{item_description}" not in text


def test_render_image_template_places_an_image_part(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    (message,) = render("description_generation", item_image=png)
    kinds = [type(p) for p in message.content]
    assert kinds == [TextPart, ImagePart, TextPart]
    assert message.content[0].text.endswith("**Input:** ")
    assert message.images[0].mime_type() == "image/png"


def test_render_is_strict_about_fields():
    with pytest.raises(PromptError, match="missing item_description"):
        render("attribute_masking")
    with pytest.raises(PromptError, match="unknown extra"):
        render("attribute_masking", item_description="x", extra="y")
    with pytest.raises(PromptError, match="unknown template"):
        render("nope")
    with pytest.raises(PromptError, match="version"):
        parse_template("bad", "title: x\n---\nbody {a}")


def test_render_request_carries_template_version_fields_and_context():
    req = render_request("attribute_completion", SamplingParams(seed=4), context={"source": "s"},
                         masked_description="a [MASK] mug")
    assert req.template == "attribute_completion"
    assert req.template_version == template_version("attribute_completion")
    assert req.fields == {"masked_description": "a [MASK] mug"} and req.context == {"source": "s"}
    assert req.sampling.seed == 4


def test_template_folder_override(tmp_path):
    (tmp_path / "attribute_masking.md").write_text("version: 7\n---\nMask: {item_description}\nOutput:")
    assert template_version("attribute_masking", tmp_path) == 7
    assert render("attribute_masking", tmp_path, item_description="d")[0].text == "Mask: d\nOutput:"


def test_build_description_merges_image_text_with_metadata():
    text = build_description("[from image features] Colours: mostly red.", "Norvik Cotton Bag", "Norvik",
                             "Demo, Bag", "A cotton bag.\nRoomy.", max_description_chars=400)
    assert text.splitlines() == [
        "Title: Norvik Cotton Bag",
        "Brand: Norvik",
        "Categories: Demo, Bag",
        "Image: [from image features] Colours: mostly red.",
        "Description: A cotton bag. Roomy.",
    ]
    assert parse_description(text)["Brand"] == "Norvik"
    # missing fields (None / NaN) leave their line out; long descriptions are cut on a word
    short = build_description(None, "T", float("nan"), None, "word " * 100, max_description_chars=20)
    assert short.splitlines()[0] == "Title: T" and len(short.splitlines()) == 2
    assert short.endswith("...") and len(short.splitlines()[1]) < 40
