"""The data stage through Dagster (real materializations, parquet, DuckDB checks) and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import dagster as dg
import pandas as pd
import pytest

from assets.data import _check
from assets.definitions import all_assets
from assets.resources import NeggenResource
from pipeline.storage import DatasetStore


def test_demo_data_stage_materializes_end_to_end(neggen_home):
    result = dg.materialize(
        all_assets, partition_key="demo", selection="group:data", resources={"neggen": NeggenResource()},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"interactions", "items", "users"} <= materialized
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 5 and all(c.passed for c in checks)

    store = DatasetStore(neggen_home, "demo")
    interactions, items, users = store.read("interactions"), store.read("items"), store.read("users")
    meta = result.asset_materializations_for_node("interactions")[0].metadata
    assert meta["interactions"].value == len(interactions)
    assert meta["users"].value == len(users) == interactions.user_id.nunique()
    assert len(items) == interactions.item_id.nunique()
    assert (items.image_status == "ok").all() and items.image_path.map(os.path.exists).all()
    assert items.title.notna().all() and items.brand.notna().all()
    assert (users.n_train >= 1).all()
    assert set(interactions.split) == {"train", "valid", "test"}


def test_a_check_fails_on_data_that_breaks_it(neggen_home):
    store = DatasetStore(neggen_home, "toy")
    bad = pd.DataFrame({"user_id": [0, 0, 1], "item_id": [0, 0, 1], "split": ["valid", "train", "test"]})
    store.write("interactions", bad)
    kcore = _check(store, "interactions", "kcore_violations", ("interactions",), k=2)
    assert not kcore.passed and kcore.metadata["violations"].value == 2  # user 1 and item 1
    assert not _check(store, "interactions", "duplicate_pairs", ("interactions",)).passed
    assert not _check(store, "interactions", "users_without_train", ("interactions",)).passed


def neggen(*args, cwd, env_home, config_env=None):
    env = {**os.environ, "NEGGEN_HOME": str(env_home), "DAGSTER_HOME": str(env_home / "dagster")}
    env.pop("NEGGEN_CONFIG", None)
    if config_env is not None:
        env["NEGGEN_CONFIG"] = str(config_env)
    return subprocess.run(
        [sys.executable, "-m", "assets.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def toy_project(tmp_path):
    data = tmp_path / "data" / "toy"
    data.mkdir(parents=True)
    rows = [f"{u}\t{i}" for u in range(12) for i in range(8) if (u + i) % 3]
    (data / "toy.inter").write_text("userID\titemID\n" + "\n".join(rows) + "\n")
    (tmp_path / "neggen.yaml").write_text("datasets:\n  toy: {format: mmrec, path: data/toy, kcore: 3}\n")
    return tmp_path


def test_cli_materialize_then_query(toy_project):
    home = toy_project / "home"
    run = neggen("materialize", "--dataset", "toy", "--select", "group:data", cwd=toy_project, env_home=home)
    assert run.returncode == 0, run.stderr
    assert "[3/3]" in run.stderr and "check kcore_violations: passed" in run.stderr
    assert (home / "toy" / "interactions.parquet").exists()

    query = neggen("sql", "--dataset", "toy", "--csv",
                   "SELECT split, count(*) AS n FROM interactions GROUP BY split ORDER BY split",
                   cwd=toy_project, env_home=home)
    assert query.returncode == 0, query.stderr
    counts = pd.read_csv(StringIO(query.stdout)).set_index("split")["n"]
    expected = pd.read_parquet(home / "toy" / "interactions.parquet").split.value_counts()
    assert counts.to_dict() == expected.sort_index().to_dict()

    listing = neggen("sql", "--dataset", "toy", cwd=toy_project, env_home=home)
    assert listing.returncode == 0 and "split_counts" in listing.stdout and "interactions" in listing.stdout

    only_items = neggen("materialize", "--dataset", "toy", "--select", "items", cwd=toy_project, env_home=home)
    assert only_items.returncode == 0 and "[1/1] items" in only_items.stderr


def test_cli_reports_bad_input_clearly(toy_project):
    home = toy_project / "home"
    unknown = neggen("materialize", "--dataset", "nope", cwd=toy_project, env_home=home)
    assert unknown.returncode == 2 and "unknown dataset 'nope'; registered: demo, toy" in unknown.stderr

    with open(toy_project / "data" / "toy" / "toy.inter", "a") as handle:
        handle.write("3\n")
    broken = neggen("materialize", "--dataset", "toy", "--select", "interactions", cwd=toy_project, env_home=home)
    assert broken.returncode == 1
    assert "toy.inter:" in broken.stderr and "expected 2 tab-separated fields" in broken.stderr

    no_stage = neggen("sql", "--dataset", "toy", cwd=toy_project, env_home=home)
    assert no_stage.returncode == 1 and "nothing is materialized" in no_stage.stderr

    (toy_project / "neggen.yaml").write_text("datasets:\n  toy: {format: mmrec, path: data/toy, k: 3}\n")
    bad_key = neggen("datasets", cwd=toy_project, env_home=home)
    assert bad_key.returncode == 2 and "datasets.toy.k: Extra inputs are not permitted" in bad_key.stderr


def test_cli_materializes_with_the_config_neggen_config_names(toy_project):
    """$NEGGEN_CONFIG wins over ./neggen.yaml for the assets too, not only for the CLI's own check
    (the assets once read ./neggen.yaml: a dataset only the named config registers failed)."""
    other = toy_project / "other"
    other.mkdir()
    (other / "neggen.yaml").write_text("datasets:\n  elsewhere: {format: mmrec, path: ../data/toy, kcore: 3}\n")
    home = toy_project / "home"
    run = neggen("materialize", "--dataset", "elsewhere", "--select", "interactions",
                 cwd=toy_project, env_home=home, config_env=other / "neggen.yaml")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (home / "elsewhere" / "interactions.parquet").exists()
