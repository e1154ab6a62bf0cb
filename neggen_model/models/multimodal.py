"""What the multi-modal baselines (VBPR, FREEDOM, ...) share: their constructor contract (their typed
per-model hyper-parameters and small validation grid come from base.BaselineModel), and sparse-graph helpers.

A content model is a ScoringModel built from (data, TrainConfig, ItemContent, params). TrainConfig
gives what every model of the paper shares (embedding size 64, Adam, learning rate, batch 2048,
epochs, early stopping, seed); everything specific to the model, its own regulariser included, is
in its `Params` (TrainConfig's `reg_weight` and `n_layers` are LightGCN's and are not used here).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from neggen_model.config import Modality, TrainConfig
from neggen_model.content import ItemContent
from neggen_model.data import InteractionData
from neggen_model.models.base import BaselineModel, ModelParams


class ContentModel(BaselineModel):
    """A recommender that reads item content (one vector per modality, see neggen_model.content)."""

    #: Modalities without which the model cannot run (most run on whatever the item content has).
    requires: ClassVar[tuple[Modality, ...]] = ()

    def __init__(self, data: InteractionData, config: TrainConfig, content: ItemContent, params: Any = None):
        if not isinstance(content, ItemContent):
            raise TypeError(f"{self.name}: content must be an ItemContent, got {type(content).__name__}")
        content.check_items(data.n_items, self.name)
        lacking = [m for m in self.requires if m not in content.modalities]
        if lacking:
            raise ValueError(f"{self.name} needs {'/'.join(lacking)} features; the item content has {list(content.modalities)}")
        super().__init__(params)
        self.n_users, self.n_items = data.n_users, data.n_items
        self.embedding_size = config.embedding_size

    @classmethod
    def skip_reason(cls, content: ItemContent | None) -> str | None:
        if content is None:
            return f"{cls.name} reads item content; the dataset has none (no text or picture features)"
        lacking = [m for m in cls.requires if m not in content.modalities]
        return f"{cls.name} needs {'/'.join(lacking)} features, the dataset has {list(content.modalities)}" if lacking else None

    @abstractmethod
    def final_embeddings(self) -> tuple[Tensor, Tensor]: ...


def project_rows(projection: nn.Module, matrix: Tensor, *index: Tensor) -> tuple[Tensor, ...]:
    """projection(matrix[ix]) for each index tensor, projecting each distinct row once: a batch
    names each of its items several times, and small catalogues have fewer items than a batch."""
    rows, inverse = torch.unique(torch.cat(index), return_inverse=True)
    projected = projection(matrix[rows])[inverse]
    return tuple(projected.split([len(ix) for ix in index]))


# --- sparse helpers ---------------------------------------------------------------------------


def torch_csr(matrix: sp.spmatrix) -> Tensor:
    """A scipy matrix as a float32 torch CSR tensor (sorted indices)."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    csr.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data),
            size=csr.shape,
            check_invariants=False,  # built here from a valid scipy CSR
        )


class SparseMM(torch.autograd.Function):
    """adj @ x for a constant sparse adj, with its transpose given for the backward pass."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, Tensor]:
        return None, None, torch.sparse.mm(ctx.adj_t, grad)


LOGSUMEXP_BLOCK = 512  # a [2048, 512] float32 block of logits is 4 MiB


class _BoundedLogSumExp(torch.autograd.Function):
    """logsumexp over each row of a @ bᵀ when no logit exceeds 40 in size (rows of a of norm ≤ 1/τ
    with τ ≥ 0.025, rows of b of norm ≤ 1): exp cannot overflow float32 there, so no row maximum is
    subtracted. The contrastive losses' [batch, all users or items] logits are most of a DiffMM or
    LGMRec training step. They are taken in blocks of `LOGSUMEXP_BLOCK` rows of b, small enough to
    stay in cache, and never stored: backward recomputes each block's exponentials. Writing and
    rereading the whole [2048, 22363] logits (180 MiB) cost more on a CPU than computing them twice."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        totals = a.new_zeros(a.shape[0])
        for block in b.split(LOGSUMEXP_BLOCK):
            totals += (a @ block.T).exp_().sum(dim=1)
        ctx.save_for_backward(a, b, totals)
        return totals.log()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        a, b, totals = ctx.saved_tensors
        scale = (grad / totals)[:, None]
        a_t = a.T.contiguous()  # aᵀ w is several times faster than wᵀ a at these shapes
        grad_a = torch.zeros_like(a)
        grad_b = torch.empty_like(b)
        for block, grad_block in zip(b.split(LOGSUMEXP_BLOCK), grad_b.split(LOGSUMEXP_BLOCK)):
            weights = (a @ block.T).exp_().mul_(scale)  # softmax of the block's logits times grad
            grad_a.addmm_(weights, block)
            grad_block.copy_((a_t @ weights).T)
        return grad_a, grad_b


def bounded_logsumexp(a: Tensor, b: Tensor) -> Tensor:
    """logsumexp(a @ bᵀ, dim=1) for logits of size at most 40 (see _BoundedLogSumExp)."""
    return _BoundedLogSumExp.apply(a, b)


def knn_graph(features: np.ndarray, k: int, chunk: int = 1024) -> sp.csr_matrix:
    """The k nearest items of each item by cosine similarity (itself included, as in MMRec's
    LATTICE/FREEDOM), normalised D^-1/2 A D^-1/2 with D the row sums: every entry is 1/k.

    Computed in row chunks (never the dense items x items matrix); ties go to the lower item id.
    """
    from neggen_model.evaluate import topk_items  # here: evaluate imports the models package

    n = features.shape[0]
    k = min(k, n)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cols = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        cols[start : start + chunk] = topk_items(x[start : start + chunk] @ x.T, k).numpy()
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    graph = sp.csr_matrix((np.full(n * k, 1.0 / k, dtype=np.float32), (rows, cols.ravel())), shape=(n, n))
    graph.sort_indices()
    return graph


def sym_norm_bipartite(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 of the user-item graph with the given edges (nodes: users, then items).

    Degrees get MMRec's 1e-7, so isolated nodes have none of their own edges and no division by zero.
    """
    du = np.bincount(users, minlength=n_users).astype(np.float64) + 1e-7
    di = np.bincount(items, minlength=n_items).astype(np.float64) + 1e-7
    values = (du[users] ** -0.5 * di[items] ** -0.5).astype(np.float32)
    r = sp.csr_matrix((values, (users, items)), shape=(n_users, n_items))
    return sp.bmat([[None, r], [r.T, None]], format="csr")
