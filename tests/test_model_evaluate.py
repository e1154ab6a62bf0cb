"""The evaluator against a plain-Python reference: sorted lists and explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.evaluate import evaluate, rank_metrics, topk_items
from neggen_model.models import build_model


def reference_metrics(scores: np.ndarray, truth: list[set[int]], exclude: list[set[int]], topk) -> dict[str, float]:
    """Rank by (score descending, item id ascending), skipping excluded items."""
    n_users, n_items = scores.shape
    sums = {f"{m}@{k}": 0.0 for k in topk for m in ("recall", "ndcg")}
    evaluated = 0
    for u in range(n_users):
        if not truth[u]:
            continue
        evaluated += 1
        candidates = [i for i in range(n_items) if i not in exclude[u]]
        ranked = sorted(candidates, key=lambda i: (-float(scores[u, i]), i))
        for k in topk:
            hits = [1 if i in truth[u] else 0 for i in ranked[:k]]
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(truth[u]))))
            sums[f"recall@{k}"] += sum(hits) / len(truth[u])
            sums[f"ndcg@{k}"] += dcg / idcg
    return {name: total / evaluated for name, total in sums.items()}


def rows_as_sets(matrix: sp.csr_matrix) -> list[set[int]]:
    return [set(matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].tolist()) for u in range(matrix.shape[0])]


def random_split(rng: np.random.Generator, n_users: int, n_items: int) -> pd.DataFrame:
    """Per user a random number of train/valid/test items, some users without any test item."""
    rows = []
    for u in range(n_users):
        items = rng.permutation(n_items)[: rng.integers(1, n_items // 2)]
        labels = rng.choice(["train", "valid", "test"], size=len(items), p=[0.6, 0.2, 0.2])
        rows += [(u, int(i), str(s)) for i, s in zip(items, labels)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "split"])


@pytest.mark.parametrize("seed", range(6))
def test_rank_metrics_match_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, int(rng.integers(12, 40))
    # Few distinct score values: most rankings hinge on the tie-break.
    scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)
    data = InteractionData.from_frame(random_split(rng, n_users, n_items), n_users, n_items)
    for exclude in (data.train, data.train + data.valid):
        got = rank_metrics(lambda u: torch.from_numpy(scores)[u].clone(), data.test, exclude, (10, 20), batch_size=7)
        want = reference_metrics(scores, rows_as_sets(data.test), rows_as_sets(exclude), (10, 20))
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_topk_items_breaks_ties_by_lower_id_including_the_kth_place():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert topk_items(scores, 3).tolist() == [[1, 2, 4], [0, 1, 2]]
    assert topk_items(scores, 6).tolist() == [[1, 2, 4, 5, 3, 0], [0, 1, 2, 3, 4, 5]]
    assert topk_items(scores, 10).shape == (2, 6)


def test_user_with_fewer_test_items_than_k_gets_full_ndcg_for_a_perfect_ranking():
    scores = np.array([[5.0, 4.0, 0.0, 0.0]], dtype=np.float32)
    truth = sp.csr_matrix(np.array([[1, 1, 0, 0]], dtype=np.float32))
    exclude = sp.csr_matrix((1, 4), dtype=np.float32)
    got = rank_metrics(lambda u: torch.from_numpy(scores)[u].clone(), truth, exclude, (10,), batch_size=1)
    assert got == {"recall@10": 1.0, "ndcg@10": 1.0}


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_modes_match_reference(seed):
    """evaluate() on a model: mmrec excludes train only at test time, strict also excludes valid."""
    rng = np.random.default_rng(100 + seed)
    n_users, n_items = 30, 25
    data = InteractionData.from_frame(random_split(rng, n_users, n_items), n_users, n_items)
    config = TrainConfig(embedding_size=2, n_layers=0)
    model = build_model("bpr", data, config)
    # Small integer embeddings: exact float scores with many ties.
    with torch.no_grad():
        model.user_embedding.copy_(torch.from_numpy(rng.integers(-1, 2, size=(n_users, 2)).astype(np.float32)))
        model.item_embedding.copy_(torch.from_numpy(rng.integers(-1, 2, size=(n_items, 2)).astype(np.float32)))
    scores = (model.user_embedding @ model.item_embedding.T).detach().numpy()
    train, valid, test = (rows_as_sets(m) for m in (data.train, data.valid, data.test))
    train_valid = [a | b for a, b in zip(train, valid)]
    cases = {
        ("valid", "mmrec"): (valid, train),
        ("valid", "strict"): (valid, train),
        ("test", "mmrec"): (test, train),
        ("test", "strict"): (test, train_valid),
    }
    for (split, mode), (truth, exclude) in cases.items():
        got = evaluate(model, data, split, mode=mode, topk=(10, 20), batch_size=4)
        assert got == pytest.approx(reference_metrics(scores, truth, exclude, (10, 20)), rel=1e-12, abs=1e-12)


def test_evaluate_rejects_unknown_split_and_mode():
    data = InteractionData.from_frame(
        pd.DataFrame({"user_id": [0, 0, 0], "item_id": [0, 1, 2], "split": ["train", "valid", "test"]})
    )
    model = build_model("bpr", data, TrainConfig())
    with pytest.raises(ValueError, match="split"):
        evaluate(model, data, "train")
    with pytest.raises(ValueError, match="mode"):
        evaluate(model, data, "test", mode="lenient")
