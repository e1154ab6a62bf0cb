"""bench/samplers_reference.py's exporter: the files the samplers' authors' code reads hold exactly our
training pairs (train.txt) and our validation pairs (test.txt), from the interactions parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.samplers_reference import export_mixgcf_family
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


def test_exported_files_round_trip_to_our_training_and_validation_pairs(tmp_path):
    rng = np.random.default_rng(0)
    users, items = np.divmod(rng.choice(30 * 20, size=240, replace=False), 20)
    split = rng.choice(["train", "valid", "test"], size=users.size, p=[0.7, 0.15, 0.15])
    split[users == 29] = "train"  # a user with no validation items: not a line of test.txt
    store = DatasetStore(tmp_path / "home", "toy")
    store.write("interactions", pd.DataFrame({"user_id": users, "item_id": items, "split": split}))
    data = load_interaction_data(store)

    export_mixgcf_family(data.train, data.valid, tmp_path / "export")

    assert read_pairs(tmp_path / "export" / "train.txt") == matrix_pairs(data.train)
    assert read_pairs(tmp_path / "export" / "test.txt") == matrix_pairs(data.valid)
    test_users = [int(line.split()[0]) for line in (tmp_path / "export" / "test.txt").read_text().splitlines()]
    assert 29 not in test_users and len(test_users) == len(set(test_users))
    # The references take the number of users and items as the largest id + 1 over both files.
    exported = read_pairs(tmp_path / "export" / "train.txt") | read_pairs(tmp_path / "export" / "test.txt")
    assert max(u for u, _ in exported) + 1 == data.n_users
