"""TrainConfig validation and InteractionData construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData


def test_config_defaults_follow_the_paper():
    config = TrainConfig()
    assert (config.embedding_size, config.learning_rate, config.batch_size) == (64, 1e-3, 2048)
    assert (config.epochs, config.early_stop_patience, config.stop_metric) == (1000, 20, "recall@20")
    assert (config.seed, config.topk, config.device) == (2024, (10, 20), "cpu")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("embedding_size", 0, "greater than 0"),
        ("batch_size", -1, "greater than 0"),
        ("learning_rate", 0.0, "greater than 0"),
        ("topk", (10, 0), "positive"),
        ("device", "tpu", "device must be"),
        ("stop_metric", "hr@20", "stop_metric must look like"),
        ("stop_metric", "recall@50", "needs K=50 in topk"),
        ("learning_rat", 1e-3, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_bad_values_with_clear_messages(field, value, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig(**{field: value})


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "split"])


def test_from_frame_builds_binary_split_matrices():
    data = InteractionData.from_frame(
        frame([(0, 0, "train"), (0, 0, "train"), (0, 2, "valid"), (1, 1, "train"), (1, 3, "test")]), n_items=6
    )
    assert (data.n_users, data.n_items) == (2, 6)
    assert data.train.toarray().tolist() == [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]]
    assert data.valid.nnz == 1 and data.test.nnz == 1
    users, items = data.train_pairs()
    assert users.tolist() == [0, 1] and items.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        ([(0, 0, "train"), (0, 0, "test")], {}, "more than one split"),
        ([(0, 0, "training")], {}, "split must be one of"),
        ([(0, 5, "train")], {"n_items": 3}, "n_items=3 but item_id goes up to 5"),
        ([(-1, 0, "train")], {}, "user_id must be >= 0"),
    ],
)
def test_from_frame_rejects_bad_frames(rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        InteractionData.from_frame(frame(rows), **kwargs)


def test_from_inter_file_reads_mmrec_labels(tmp_path):
    path = tmp_path / "toy.inter"
    path.write_text("userID\titemID\tx_label\n0\t0\t0\n0\t1\t1\n1\t2\t2\n1\t0\t0\n")
    data = InteractionData.from_inter_file(path)
    assert [m.nnz for m in (data.train, data.valid, data.test)] == [2, 1, 1]
    assert data.valid[0, 1] == 1 and data.test[1, 2] == 1
    bad = tmp_path / "bad.inter"
    bad.write_text("userID\titemID\tx_label\n0\t0\t3\n")
    with pytest.raises(ValueError, match="x_label must be 0, 1 or 2"):
        InteractionData.from_inter_file(bad)


def test_fingerprint_tracks_the_training_matrix():
    a = InteractionData.from_frame(frame([(0, 0, "train"), (0, 1, "test")]))
    b = InteractionData.from_frame(frame([(0, 1, "train"), (0, 0, "test")]))
    assert a.train_fingerprint() != b.train_fingerprint()
    same = InteractionData.from_frame(frame([(0, 0, "train"), (0, 1, "test")]))
    assert a.train_fingerprint() == same.train_fingerprint()
    assert np.isclose(a.norm_adj.to_dense().sum().item(), 2.0)
