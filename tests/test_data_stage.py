"""k-core to a fixpoint, deduplication, id remapping and the MMRec split rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.datastage import EmptyAfterKCore, build_interactions, mmrec_split
from pipeline.sources import RawSource


def raw(pairs, x_label=None) -> RawSource:
    frame = pd.DataFrame(pairs, columns=["user_source", "item_source"]).astype("string")
    frame["rating"] = 5.0
    frame["timestamp"] = pd.array(range(len(frame)), dtype="Int64")
    frame["x_label"] = pd.array(x_label if x_label is not None else [None] * len(frame), dtype="Int8")
    return RawSource(frame, pd.DataFrame(), pd.DataFrame(), files=["handmade"])


def pairs_of(table) -> set[tuple[str, str]]:
    frame = table.interactions
    return set(zip(frame.user_source, frame.item_source))


def reference_kcore(pairs: set, k: int) -> set:
    """Plain-Python k-core: remove under-degree users and items until nothing changes."""
    pairs = set(pairs)
    while True:
        users = pd.Series([u for u, _ in pairs]).value_counts()
        items = pd.Series([i for _, i in pairs]).value_counts()
        kept = {(u, i) for u, i in pairs if users[u] >= k and items[i] >= k}
        if kept == pairs:
            return kept
        pairs = kept


def test_kcore_needs_several_rounds_to_reach_fixpoint():
    # A 2x2 block that is a 2-core, plus a chain u3-i3, u3-i2, u4-i3: removing u4 (degree 1)
    # drops i3 to degree 1, which then removes u3's link and finally u3 itself.
    pairs = [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2"),
             ("u3", "i3"), ("u3", "i2"), ("u4", "i3"), ("u5", "i3"), ("u5", "i9")]
    table = build_interactions(raw(pairs), k=2, split_seed=0, use_given_split=True)
    assert pairs_of(table) == {("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2")}
    assert len(table.kcore_rounds) >= 4, table.kcore_rounds  # start + several rounds + fixpoint
    assert [r.interactions for r in table.kcore_rounds][-1] == [r.interactions for r in table.kcore_rounds][-2]


def test_kcore_matches_reference_on_random_graphs():
    rng = np.random.default_rng(7)
    for trial in range(5):
        pairs = {(f"u{u}", f"i{i}") for u, i in zip(rng.integers(0, 60, 500), rng.zipf(1.6, 500) % 80)}
        table = build_interactions(raw(sorted(pairs)), k=3, split_seed=0, use_given_split=True)
        assert pairs_of(table) == reference_kcore(pairs, 3), f"trial {trial}"


def test_duplicates_collapse_to_one_row_per_pair():
    pairs = [("a", "x"), ("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("b", "y")]
    table = build_interactions(raw(pairs), k=1, split_seed=0, use_given_split=True)
    assert len(table.interactions) == 4
    assert table.duplicates_collapsed == 2


def test_ids_are_contiguous_and_keep_numeric_order_and_sources():
    pairs = [(str(u), str(i)) for u in (10, 2, 33) for i in (7, 100, 5)]
    table = build_interactions(raw(pairs), k=1, split_seed=0, use_given_split=True)
    frame = table.interactions
    users = frame.drop_duplicates("user_id").set_index("user_id")["user_source"].sort_index()
    items = frame.drop_duplicates("item_id").set_index("item_id")["item_source"].sort_index()
    assert list(users) == ["2", "10", "33"]  # numeric, not lexicographic, order
    assert list(items) == ["5", "7", "100"]
    assert list(users.index) == [0, 1, 2] and list(items.index) == [0, 1, 2]


def test_empty_after_kcore_says_which_k_and_what_remained():
    pairs = [("a", "x"), ("a", "y"), ("b", "x")]
    with pytest.raises(EmptyAfterKCore) as err:
        build_interactions(raw(pairs), k=5, split_seed=0, use_given_split=True)
    message = str(err.value)
    assert "k=5" in message and "3 read" in message and "round 0: 3 interactions, 2 users, 2 items" in message


@pytest.mark.parametrize(
    ("size", "expected"), [(5, (3, 1, 1)), (9, (7, 1, 1)), (10, (8, 1, 1)), (19, (16, 1, 2)), (23, (19, 2, 2)), (50, (40, 5, 5))]
)
def test_mmrec_split_counts_per_user(size, expected):
    users = np.repeat([4, 1], [size, 6])  # the user under test, and a second one of 6
    labels = mmrec_split(users, seed=3)
    counts = tuple(int((labels[users == 4] == label).sum()) for label in (0, 1, 2))
    assert counts == expected
    assert tuple(int((labels[users == 1] == label).sum()) for label in (0, 1, 2)) == (4, 1, 1)


def test_mmrec_split_is_seeded_and_shuffles():
    users = np.repeat(np.arange(30), 20)
    first, again, other = mmrec_split(users, 1), mmrec_split(users, 1), mmrec_split(users, 2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    # a shuffle, not "last rows are test": held-out positions vary across users
    test_positions = {tuple(np.flatnonzero(first[users == u] == 2)) for u in range(30)}
    assert len(test_positions) > 10


def test_given_split_is_kept_and_can_be_overridden():
    pairs = [(f"u{u}", f"i{i}") for u in range(3) for i in range(6)]
    labels = [0, 0, 0, 0, 1, 2] * 3
    kept = build_interactions(raw(pairs, labels), k=1, split_seed=0, use_given_split=True)
    assert kept.split_source == "given"
    assert kept.interactions.sort_values(["user_id", "item_id"]).x_label.tolist() == labels
    redrawn = build_interactions(raw(pairs, labels), k=1, split_seed=9, use_given_split=False)
    assert redrawn.split_source == "mmrec rule, seed 9"
    assert redrawn.interactions.groupby("user_id").x_label.apply(lambda s: sorted(s)).tolist() == [[0, 0, 0, 0, 1, 2]] * 3
