"""The data stage on the real datasets in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.datastage import build_interactions, build_items
from pipeline.sources import read_source
from tests.conftest import shared_dataset
from tests.test_data_stage import reference_kcore
from tests.test_pipeline_dagster import neggen

pytestmark = pytest.mark.realdata


def test_baby_materializes_to_the_published_counts(tmp_path):
    path = shared_dataset("amazon2014", "baby")
    (tmp_path / "neggen.yaml").write_text(f"datasets:\n  baby: {{format: mmrec, path: {path}}}\n")
    run = neggen("materialize", "--dataset", "baby", "--select", "group:data", cwd=tmp_path, env_home=tmp_path / "home")
    assert run.returncode == 0, run.stderr
    frame = pd.read_parquet(tmp_path / "home" / "baby" / "interactions.parquet")
    assert (frame.user_id.nunique(), frame.item_id.nunique(), len(frame)) == (19_445, 7_050, 160_792)
    assert frame.split.value_counts().to_dict() == {"train": 118_551, "test": 21_682, "valid": 20_559}
    # Baby's ids already are 0..n-1 and 5-core: remapping must keep them.
    assert (frame.user_id.astype(str) == frame.user_source).all()
    assert (frame.item_id.astype(str) == frame.item_source).all()
    items = pd.read_parquet(tmp_path / "home" / "baby" / "items.parquet")
    assert items.original_id.str.len().eq(10).all()  # asins from i_id_mapping.csv
    assert items.image_url.notna().all()


def test_beauty_split_rule_reproduces_the_published_counts():
    source = read_source("mmrec", shared_dataset("amazon2014", "beauty"))
    given = build_interactions(source, k=5, split_seed=2024, use_given_split=True)
    redrawn = build_interactions(source, k=5, split_seed=7, use_given_split=False)
    counts = redrawn.interactions.split.value_counts().to_dict()
    assert counts == given.interactions.split.value_counts().to_dict() == {"train": 147_320, "valid": 24_868, "test": 26_314}
    items = build_items(source, given.interactions)
    assert (items.title.notna().sum(), items.brand.notna().sum()) == (12_094, 10_003)


def test_movielens_kcore_really_removes_rows():
    source = read_source("recbole", shared_dataset("movielens-100k"))
    table = build_interactions(source, k=5, split_seed=2024, use_given_split=True)
    pairs = set(zip(source.interactions.user_source, source.interactions.item_source))
    kept = set(zip(table.interactions.user_source, table.interactions.item_source))
    assert kept == reference_kcore(pairs, 5)
    removed = len(source.interactions) - len(table.interactions)
    assert removed > 0
    print(f"MovieLens-100k 5-core removed {removed} of {len(source.interactions)} interactions")
