"""Full-ranking Recall@K and NDCG@K over all items, batched over users.

Protocol (MMRec's, paper §4.1.2):
- every item is ranked for every user that has at least one item in the evaluated split, and
  the metrics are averaged over those users;
- training items are excluded from the ranking (score -inf); at test time, mode "mmrec" excludes
  the training items only, as MMRec does, so a user's validation items stay in the ranking and
  count as misses, while mode "strict" excludes validation items too; on the valid split both
  modes exclude the training items only;
- Recall@K = hits in the top K / number of the user's items in the split;
  NDCG@K = sum over hits of 1 / log2(rank + 1) (rank from 1), divided by the ideal DCG of
  min(K, number of the user's items in the split) hits;
- ties in score are broken by lower item id first, so that the metrics are deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.models.base import ScoringModel

EvalMode = Literal["mmrec", "strict"]
EVAL_MODES: tuple[EvalMode, ...] = ("mmrec", "strict")


def evaluate(
    model: ScoringModel,
    data: InteractionData,
    split: Literal["valid", "test"],
    mode: EvalMode = "mmrec",
    topk: Sequence[int] = TrainConfig().topk,
    batch_size: int = TrainConfig().eval_batch_size,
) -> dict[str, float]:
    """Metrics of model on split, e.g. {"recall@10": ..., "ndcg@10": ..., "recall@20": ...}."""
    if split not in ("valid", "test"):
        raise ValueError(f'split must be "valid" or "test", got {split!r}')
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    exclude = data.train + data.valid if (split == "test" and mode == "strict") else data.train
    device = model.device
    with model.frozen_embeddings():
        # One score buffer for every batch: a fresh batch_size x n_items block each time costs
        # its page faults again (about a quarter of a validation pass on Beauty, README).
        buffer = torch.empty((batch_size, data.n_items), device=device)
        score = lambda users: model.full_sort_predict(users, out=buffer[: len(users)])  # noqa: E731
        return rank_metrics(score, data.split(split), exclude, topk, batch_size, device)


def rank_metrics(
    score_fn: Callable[[Tensor], Tensor],
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix,
    topk: Sequence[int],
    batch_size: int,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Recall@K and NDCG@K of the scores that score_fn(users) returns, one batch of users at a time."""
    n_users, n_items = truth.shape
    truth = truth.tocsr()
    exclude = exclude.tocsr()
    n_relevant = np.diff(truth.indptr)
    users = np.flatnonzero(n_relevant > 0)
    k_max = min(max(topk), n_items)
    truth_keys = _sorted_keys(truth, device)

    # discount[r] = 1 / log2(r + 2) for 0-based rank r; ideal[m] = DCG of m hits at the top.
    discount = 1.0 / torch.log2(torch.arange(2, k_max + 2, dtype=torch.float64, device=device))
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64, device=device), discount.cumsum(0)])
    totals = {
        f"{metric}@{k}": torch.zeros((), dtype=torch.float64, device=device)
        for k in topk
        for metric in ("recall", "ndcg")
    }

    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        batch_t = torch.from_numpy(batch).to(device)
        scores = score_fn(batch_t)
        _mask_items(scores, exclude[batch], device)
        top = topk_items(scores, k_max)
        hits = torch.isin(batch_t[:, None] * n_items + top, truth_keys).to(torch.float64)
        cum_hits = hits.cumsum(dim=1)
        cum_dcg = (hits * discount).cumsum(dim=1)
        relevant = torch.from_numpy(n_relevant[batch]).to(device)
        for k in topk:
            col = min(k, k_max) - 1
            totals[f"recall@{k}"] += (cum_hits[:, col] / relevant).sum()
            totals[f"ndcg@{k}"] += (cum_dcg[:, col] / ideal[relevant.clamp(max=min(k, k_max))]).sum()

    count = max(len(users), 1)
    return {name: float(total) / count for name, total in totals.items()}


def topk_items(scores: Tensor, k: int) -> Tensor:
    """Ids of the k best items per row: score descending, then item id ascending among ties.

    torch.topk is fast but leaves the order of tied scores unspecified. Its values are exact,
    though, so ties only matter (a) inside the top k, settled by a stable sort of the k ids, and
    (b) across the k-th place, detected by comparing the k-th and (k+1)-th values and settled
    for those few rows by taking the tied items with the lowest ids.
    """
    n_items = scores.shape[1]
    k = min(k, n_items)
    values, ids = torch.topk(scores, min(k + 1, n_items), dim=1)
    ids = ids[:, :k].clone()
    if k < n_items:
        straddle = torch.nonzero(values[:, k - 1] == values[:, k]).squeeze(1)
        if len(straddle):
            ids[straddle] = _lowest_ids_at_boundary(scores[straddle], values[straddle, k - 1], k)
    ids = ids.sort(dim=1).values
    order = torch.sort(scores.gather(1, ids), dim=1, descending=True, stable=True).indices
    return ids.gather(1, order)


def _lowest_ids_at_boundary(scores: Tensor, kth: Tensor, k: int) -> Tensor:
    above = scores > kth[:, None]
    tied = scores == kth[:, None]
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))
    # nonzero walks row-major, so each row yields exactly its k chosen ids in ascending order.
    return torch.nonzero(chosen)[:, 1].view(-1, k)


def _mask_items(scores: Tensor, rows: sp.csr_matrix, device: torch.device | str) -> None:
    """Set scores of the given (batch row, item) pairs to -inf in place."""
    row_ids = torch.from_numpy(np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))).to(device)
    scores[row_ids, torch.from_numpy(rows.indices.astype(np.int64)).to(device)] = -torch.inf


def _sorted_keys(matrix: sp.csr_matrix, device: torch.device | str) -> Tensor:
    users = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    keys = users * matrix.shape[1] + matrix.indices.astype(np.int64)
    return torch.from_numpy(np.sort(keys)).to(device)
