"""The catalogue engine (no LLM): every item gets a masked template and a negative whose
attribute values are contrasting values of the same type from the catalogue — on the
demo world, on MovieLens-100k titles/genres and on Amazon Beauty."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.demo import BRANDS, CATEGORIES, MATERIALS, DemoConfig, read_world, write_demo_source
from pipeline.llm.engines import build_engine
from pipeline.llm.engines.catalog import CatalogEngine, split_categories
from pipeline.llm.lexicon import COLOUR_PALETTE
from pipeline.llm.prompts import MASK, build_description, parse_description
from pipeline.llm.run import generate_stage, join_texts
from pipeline.sources import read_amazon2014, read_mmrec, read_recbole
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = write_demo_source(tmp_path_factory.mktemp("demo"), DemoConfig(seed=3, n_users=300, n_items=120))
    items = read_amazon2014(out).items.rename(columns={"item_source": "item_id"})
    return items, read_world(out)


def run_all(items: pd.DataFrame, generator, describer=None, max_failed: float = 0.0):
    """description → masked → negative; every item is an output or a failure with a reason."""
    describer = describer or build_engine({"kind": "visual"})
    desc = generate_stage(items, "description", describer, progress=False)
    masked = generate_stage(join_texts(items, desc.outputs), "masked", generator, progress=False)
    negative = generate_stage(join_texts(items, desc.outputs, masked.outputs), "negative", generator, progress=False)
    for run, n_in in ((desc, len(items)), (masked, len(desc.outputs)), (negative, len(masked.outputs))):
        assert len(run.outputs) + len(run.failures) == n_in
        assert run.failures["reason"].str.len().gt(0).all()
        assert len(run.failures) <= max_failed * n_in, run.failures.head()
    frame = desc.outputs[["item_id", "text"]].rename(columns={"text": "description"})
    frame = frame.merge(masked.outputs[["item_id", "text"]].rename(columns={"text": "masked"}), on="item_id")
    frame = frame.merge(negative.outputs[["item_id", "text"]].rename(columns={"text": "negative"}), on="item_id")
    return frame, negative.meta


def test_demo_every_item_gets_contrasting_values_of_each_attribute_type(demo):
    items, world = demo
    frame, meta = run_all(items, build_engine({"kind": "catalog"}, catalogue=items))
    assert frame["masked"].str.contains(MASK, regex=False).all()
    assert (frame["negative"] != frame["description"]).all()
    assert not frame["negative"].str.contains(MASK, regex=False).any()
    assert 0.2 < meta["similarity"]["mean"] < 0.9 and meta["similarity"]["metric"] == "token_jaccard"
    for row in frame.itertuples():
        truth = world["items"][row.item_id]
        pos, neg = parse_description(row.description), parse_description(row.negative)
        brand, material, category = neg["Title"].split()
        assert neg["Brand"] == brand, row.negative  # one substitute per value, everywhere
        assert brand in BRANDS and brand != truth["brand"]
        assert material.lower() in MATERIALS and material.lower() != truth["material"]
        assert category.lower() in CATEGORIES and category.lower() != truth["category"]
        assert neg["Categories"] == f"Demo, {category}"  # the root stays, the leaf changes
        colour = neg["Image"].split("mostly ")[1].split(",")[0].split(".")[0]
        assert colour in COLOUR_PALETTE and colour != pos["Image"].split("mostly ")[1].split(",")[0].split(".")[0]
        # the structure is kept: same labelled lines
        assert list(neg) == list(pos)


def test_direct_generation_swaps_values_and_is_deterministic_per_seed(demo):
    items, world = demo
    engine = CatalogEngine.from_items(items)
    text = build_description(None, "Norvik Cotton Bag", "Norvik", "Demo, Bag", "A cotton bag from Norvik.")
    a, b = engine.swap(text, seed=0), engine.swap(text, seed=0)
    assert a == b and a != text and MASK not in a
    others = {engine.swap(text, seed=s) for s in range(1, 6)}
    assert len(others | {a}) > 1  # a retry (new seed) can give another negative
    fields = parse_description(a)
    assert fields["Brand"] in BRANDS and fields["Brand"] != "Norvik"
    assert "Norvik" not in a and "cotton" not in a.lower()


def test_completion_aligns_an_llm_style_masking_with_its_source(demo):
    items, _ = demo
    engine = CatalogEngine.from_items(items)
    source = build_description(None, "Norvik Cotton Bag", "Norvik", "Demo, Bag", None)
    # hand-made masks: one word, and two words hidden by a single [MASK]
    out = engine.complete("Title: Norvik [MASK] Bag\nBrand: Norvik\nCategories: Demo, Bag", source, seed=1)
    material = out.splitlines()[0].split()[2]
    assert material.lower() in MATERIALS and material != "Cotton"
    out = engine.complete("Title: [MASK] Bag\nBrand: [MASK]\nCategories: Demo, Bag", source, seed=1)
    title_value, brand_line = out.splitlines()[0].split()[1], parse_description(out)["Brand"]
    assert brand_line in BRANDS and brand_line != "Norvik" and title_value == brand_line
    # no source: masks are still filled (with catalogue words), never left
    assert MASK not in engine.complete("A [MASK] thing", None)


def test_salient_words_are_the_rare_ones_not_the_common_ones():
    items = pd.DataFrame({
        "item_id": range(10),
        "title": [f"Classic mug {w}" for w in ["alpha", "alpha", "beta", "beta", "gamma", "gamma", "delta", "delta", "eps", "eps"]],
        "categories": ["Kitchen, Mugs"] * 10,
    })  # fmt: skip
    engine = CatalogEngine.from_items(items, None)
    masked = engine.mask("Title: Classic mug alpha")
    assert masked == "Title: Classic mug [MASK]"  # 'classic'/'mug' are in every item
    completed = engine.complete(masked, "Title: Classic mug alpha", seed=0)
    assert completed.split()[-1] in {"beta", "gamma", "delta", "eps"}


def test_categories_split_like_the_readers_join_them():
    assert split_categories("Beauty, Makeup, Face | Beauty, Tools") == [["Beauty", "Makeup", "Face"], ["Beauty", "Tools"]]
    assert split_categories(None) == [] and split_categories(float("nan")) == []


@pytest.mark.realdata
def test_movielens_titles_and_genres():
    source = read_recbole(shared_dataset("movielens-100k"))
    items = source.items.rename(columns={"item_source": "item_id"})
    genres = {g for c in items["categories"].dropna() for p in split_categories(c) for g in p}
    frame, meta = run_all(items, build_engine({"kind": "catalog"}, catalogue=items))
    assert frame["masked"].str.contains(MASK, regex=False).all()
    assert (frame["negative"] != frame["description"]).all()
    changed = 0
    for row in frame.itertuples():
        pos, neg = parse_description(row.description), parse_description(row.negative)
        if "Categories" in pos:
            before, after = pos["Categories"].split(", "), neg["Categories"].split(", ")
            assert len(before) == len(after) and after[:-1] == before[:-1]
            assert after[-1] in genres and after[-1] not in before  # a genre, and a new one
            changed += 1
    assert changed >= 0.99 * len(frame)


@pytest.mark.realdata
def test_beauty_brands_become_other_catalogue_brands():
    source = read_mmrec(shared_dataset("amazon2014", "beauty"))
    items = source.items.rename(columns={"item_source": "item_id"})
    engine = build_engine({"kind": "catalog"}, catalogue=items)  # statistics of the whole catalogue
    sample = items.iloc[::6].reset_index(drop=True)  # ~2,000 items keep the test quick
    # a few real items cannot make a valid negative (e.g. a "brand" that is a whole title:
    # any other brand makes the text far shorter); they are recorded as failures
    frame, meta = run_all(sample, engine, max_failed=0.01)
    brands = set(items["brand"].dropna())
    with_brand = 0
    for row in frame.itertuples():
        pos, neg = parse_description(row.description), parse_description(row.negative)
        if "Brand" in pos:
            assert neg["Brand"] in brands and neg["Brand"].lower() != pos["Brand"].lower()
            with_brand += 1
    assert with_brand > 0.7 * len(frame)
    assert meta["items_per_s"] > 200


def test_max_attributes_swaps_fewer_types_and_makes_harder_negatives(demo):
    """`max_attributes` limits the attribute types masked per item: fewer [MASK]s, negatives that
    keep more of the original (higher token overlap), the same choice on every call."""
    items, _ = demo
    describer = build_engine({"kind": "visual"})
    desc = generate_stage(items, "description", describer, progress=False).outputs
    masks, overlap = {}, {}
    for limit in (1, 2, None):
        engine = build_engine({"kind": "catalog", "max_attributes": limit}, catalogue=items)
        frame, meta = run_all(items, engine, describer)
        masks[limit] = frame["masked"].str.count(r"\[MASK\]").mean()
        overlap[limit] = meta["similarity"]["mean"]
        if limit is not None:
            parsed = [engine.parse(text) for text in desc.text]
            kinds = [{s.kind for s in engine._chosen_spans(p)} for p in parsed]
            assert all(1 <= len(k) <= limit for k in kinds)
            assert [engine.mask(t) for t in desc.text] == [engine.mask(t) for t in desc.text]
    assert masks[1] < masks[2] < masks[None]
    assert overlap[1] > overlap[2] > overlap[None]
    assert build_engine({"kind": "catalog", "max_attributes": 1}, catalogue=items).fingerprint != build_engine(
        {"kind": "catalog"}, catalogue=items
    ).fingerprint
