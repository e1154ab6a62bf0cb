"""bench/samplers_reference.py's exporters: the files the samplers' authors' code reads hold exactly our
training pairs (train.txt; Shi et al.'s `train`) and our validation pairs (test.txt; `test`), from the
interactions parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.io

from bench.samplers_reference import export_mixgcf_family, export_shi
from pipeline.storage import DatasetStore
from pipeline.training import load_interaction_data


def read_pairs(path) -> set[tuple[int, int]]:
    """(user, item) pairs of "user item item ..." lines, as the references' loader reads them."""
    pairs = set()
    for line in path.read_text().splitlines():
        user, *items = map(int, line.split())
        pairs |= {(user, item) for item in items}
    return pairs


def matrix_pairs(matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


def toy_data(tmp_path):
    """A real interactions parquet of 30 users x 20 items, loaded as the trainer loads it; user 29
    has no validation items."""
    rng = np.random.default_rng(0)
    users, items = np.divmod(rng.choice(30 * 20, size=240, replace=False), 20)
    split = rng.choice(["train", "valid", "test"], size=users.size, p=[0.7, 0.15, 0.15])
    split[users == 29] = "train"
    store = DatasetStore(tmp_path / "home", "toy")
    store.write("interactions", pd.DataFrame({"user_id": users, "item_id": items, "split": split}))
    return load_interaction_data(store)


def test_exported_files_round_trip_to_our_training_and_validation_pairs(tmp_path):
    data = toy_data(tmp_path)

    export_mixgcf_family(data.train, data.valid, tmp_path / "export")

    assert read_pairs(tmp_path / "export" / "train.txt") == matrix_pairs(data.train)
    assert read_pairs(tmp_path / "export" / "test.txt") == matrix_pairs(data.valid)
    test_users = [int(line.split()[0]) for line in (tmp_path / "export" / "test.txt").read_text().splitlines()]
    assert 29 not in test_users and len(test_users) == len(set(test_users))  # no validation items: no line
    # The references take the number of users and items as the largest id + 1 over both files.
    exported = read_pairs(tmp_path / "export" / "train.txt") | read_pairs(tmp_path / "export" / "test.txt")
    assert max(u for u, _ in exported) + 1 == data.n_users


def test_exported_mat_file_round_trips_to_our_training_and_validation_pairs(tmp_path):
    data = toy_data(tmp_path)

    export_shi(data.train, data.valid, tmp_path / "datasets" / "toydata.mat")

    exported = scipy.io.loadmat(tmp_path / "datasets" / "toydata.mat")  # as Shi et al.'s RecData.load_file
    assert matrix_pairs(exported["train"]) == matrix_pairs(data.train)
    assert matrix_pairs(exported["test"]) == matrix_pairs(data.valid)
    # `data`, what their loader reads before splitting it, is the two together, with their shape
    assert matrix_pairs(exported["data"]) == matrix_pairs(data.train) | matrix_pairs(data.valid)
    for name in ("data", "train", "test"):
        assert exported[name].shape == (data.n_users, data.n_items)
        assert set(exported[name].data.tolist()) == {1.0}  # their recall divides by the sum of a user's values
