"""DRAGON (Zhou et al., ACM MM 2023): "Enhancing Dyadic Relations with Homogeneous Graphs for
Multimodal Recommendation". Paper Table 2 row "DRAGON"; the architecture follows MMRec's `dragon.py`
(the authors' code), the defaults its DRAGON.yaml and the authors' published setting (reg 1e-3 on
Baby and Sports; their learning rate, 1e-4, is not taken: the protocol fixes Adam 1e-3).

What is computed, per modality m the dataset has (text, visual):

- x⁰ = normalize([user preference P_m ; MLP_m(item features of m)]), MLP_m = Linear(dim → 256),
  leaky ReLU, Linear(256 → 64), raw features frozen (MMRec's forward reads them as given);
- heterogeneous graph: H_m = Σ_{l=0..2} Âˡ x⁰, Â the user-item graph D^-1/2 A D^-1/2 (no self loops);
- attentive concatenation: user = [w_u,1 H_1,u ; w_u,2 H_2,u] with free per-user weights w_u
  (initialised softmax-normalised), item = [H_1,i ; H_2,i]; one modality: its H_m alone;
- homogeneous graphs: item += S item, S the frozen kNN item-item graph of the raw features
  (k = 10, 0.1 × visual + 0.9 × text, one layer, as FREEDOM's); user += Σ_v a_uv user_v over the
  user's 40 users sharing the most training items, a_u = softmax of those shared-item counts;
- loss: −mean log₂ σ(s(u, i+) − s(u, i−)) (MMRec's base-2 BPR) + reg_weight × (mean P_m[u]² per
  modality + mean w²).

The user-user graph as in MMRec's `pre_epoch_processing`: a user with fewer than 40 co-occurring
users fills the missing places before every epoch with draws from its list, each draw picking
uniformly among the places filled so far (padding included); here the draws come from the trainer's
generator (`begin_epoch`), so resumed runs stay bit for bit. Ranking uses one fixed draw per model
seed (MMRec ranks with the last training epoch's draw). Ties among co-occurrence counts go to the
lower user id. The neighbour lists are aggregated as a sparse users x users matrix (duplicates
summed) instead of gathering a [users, 40, dim] tensor per step.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent
from neggen_model.data import InteractionData
from neggen_model.models.lightgcn import _SymmetricSpMM
from neggen_model.models.multimodal import ContentModel, ModelParams, SparseMM, knn_graph, sym_norm_bipartite, torch_csr


class DragonParams(ModelParams):
    knn_k: int = Field(10, gt=0, description="Neighbours per item in the item-item graph.")
    n_mm_layers: int = Field(1, ge=0, description="Propagation layers over the item-item graph.")
    n_ui_layers: int = Field(2, ge=0, description="Propagations over the user-item graph (layers 0..L summed).")
    mm_image_weight: float = Field(0.1, ge=0.0, le=1.0, description="Weight of the visual item graph when both exist.")
    user_knn_k: int = Field(40, gt=0, description="Co-occurring users each user aggregates.")
    reg_weight: float = Field(1e-3, ge=0.0, description="Weight of the squared user preferences and fusion weights.")


def co_occurrence_neighbours(train: sp.csr_matrix, k: int, cells: int = 2**24) -> tuple[np.ndarray, np.ndarray]:
    """Each user's k users sharing the most training items (itself excluded; ties to the lower id).

    Returns ids [n_users, k] (-1 where a user has fewer such users) and the shared-item counts.
    Computed in blocks of about `cells` users x users entries, never the whole users x users matrix.
    """
    binary = (train > 0).astype(np.int64).tocsr()
    transposed = binary.T.tocsr()
    n_users = binary.shape[0]
    ids = np.full((n_users, k), -1, dtype=np.int64)
    counts = np.zeros((n_users, k), dtype=np.float32)
    kept = min(k, n_users)
    descending_id = torch.arange(n_users - 1, -1, -1)
    chunk = max(1, cells // n_users)
    for start in range(0, n_users, chunk):
        shared = torch.from_numpy((binary[start : start + chunk] @ transposed).toarray())
        rows = torch.arange(len(shared))
        shared[rows, rows + start] = 0
        # One key per pair, distinct within a row, so torch.topk has no ties to settle: more shared
        # items first, then the lower user id.
        key = torch.topk(torch.add(descending_id, shared, alpha=n_users), kept, dim=1).values
        shared_items = key // n_users
        found = (shared_items > 0).numpy()
        block = slice(start, start + len(shared))
        ids[block, :kept] = np.where(found, (n_users - 1 - key % n_users).numpy(), -1)
        counts[block, :kept] = np.where(found, shared_items.numpy(), 0)
    return ids, counts


class DRAGON(ContentModel):
    name = "dragon"
    Params = DragonParams
    # MMRec's DRAGON.yaml (and the authors'): reg_weight in [0.1, 0.01, 1e-3, 1e-4, 1e-5] (and the
    # learning rate, which is TrainConfig's here and fixed by the paper's protocol).
    grid: ClassVar[dict[str, tuple]] = {"reg_weight": (0.1, 0.01, 1e-3, 1e-4, 1e-5)}

    def __init__(self, data: InteractionData, config: TrainConfig, content: ItemContent, params=None):
        super().__init__(data, config, content, params)
        p: DragonParams = self.params
        d = config.embedding_size
        self.preferences = nn.ParameterDict()
        self.projections = nn.ModuleDict()
        graphs = {}
        for modality, matrix in content.matrices().items():
            self.register_buffer(f"_feat_{modality}", torch.from_numpy(matrix.copy()), persistent=False)
            self.preferences[modality] = nn.Parameter(nn.init.xavier_normal_(torch.empty(data.n_users, d)))
            # torch's default init of both layers, as MMRec's.
            self.projections[modality] = nn.Sequential(nn.Linear(matrix.shape[1], 4 * d), nn.LeakyReLU(), nn.Linear(4 * d, d))
            graphs[modality] = knn_graph(matrix, p.knn_k)
        if len(graphs) == 2:
            item_graph = p.mm_image_weight * graphs["visual"] + (1.0 - p.mm_image_weight) * graphs["text"]
            # Attentive concatenation: a weight per user and modality, softmax-normalised at init only.
            self.fusion_weights = nn.Parameter(F.softmax(nn.init.xavier_normal_(torch.empty(data.n_users, 2, 1)), dim=1).squeeze(2))
        else:
            (item_graph,) = graphs.values()
            self.fusion_weights = None
        self.register_buffer("item_graph", torch_csr(item_graph), persistent=False)
        self.register_buffer("item_graph_t", torch_csr(item_graph.T), persistent=False)
        users, items = data.train_pairs()
        self.register_buffer("norm_adj", torch_csr(sym_norm_bipartite(users, items, data.n_users, data.n_items)), persistent=False)
        self._neighbours, self._counts = co_occurrence_neighbours(data.train, p.user_knn_k)
        ranking_graph, ranking_graph_t = self._user_graph(np.random.default_rng(config.seed))
        self.register_buffer("ranking_user_graph", ranking_graph, persistent=False)
        self.register_buffer("ranking_user_graph_t", ranking_graph_t, persistent=False)
        self._training_user_graph: tuple[Tensor, Tensor] | None = None

    def feature(self, modality: str) -> Tensor:
        return getattr(self, f"_feat_{modality}")

    def _user_graph(self, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """The softmax-weighted user-user graph (and its transpose), short lists padded from rng."""
        ids, counts = self._neighbours.copy(), self._counts.copy()
        have = (ids >= 0).sum(axis=1)
        for place in range(1, ids.shape[1]):
            short = np.flatnonzero((have > 0) & (have <= place))
            if len(short):
                # MMRec's padding: a uniform pick among the places filled so far.
                drawn = rng.integers(0, place, size=len(short))
                ids[short, place], counts[short, place] = ids[short, drawn], counts[short, drawn]
        linked = have > 0
        weights = np.exp(counts - counts.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        rows = np.repeat(np.flatnonzero(linked), ids.shape[1])
        graph = sp.csr_matrix((weights[linked].ravel(), (rows, ids[linked].ravel())), shape=(self.n_users, self.n_users))
        return torch_csr(graph).to(self.device), torch_csr(graph.T).to(self.device)

    def begin_epoch(self, rng: np.random.Generator) -> None:
        self._training_user_graph = self._user_graph(rng)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        p: DragonParams = self.params
        n = self.n_users
        per_modality = []
        for modality, projection in self.projections.items():
            layer = F.normalize(torch.cat([self.preferences[modality], projection(self.feature(modality))], dim=0))
            total = layer
            for _ in range(p.n_ui_layers):
                layer = _SymmetricSpMM.apply(self.norm_adj, layer)
                total = total + layer
            per_modality.append(total)
        if self.fusion_weights is not None:
            users = torch.cat([w[:, None] * h[:n] for w, h in zip(self.fusion_weights.T, per_modality)], dim=1)
            items = torch.cat([h[n:] for h in per_modality], dim=1)
        else:
            users, items = per_modality[0][:n], per_modality[0][n:]
        neighbours = items
        for _ in range(p.n_mm_layers):
            neighbours = SparseMM.apply(self.item_graph, self.item_graph_t, neighbours)
        if self.training and self._training_user_graph is not None:
            user_graph, user_graph_t = self._training_user_graph
        else:
            user_graph, user_graph_t = self.ranking_user_graph, self.ranking_user_graph_t
        return users + SparseMM.apply(user_graph, user_graph_t, users), items + neighbours

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        user_all, item_all = self.final_embeddings()
        u = user_all[users]
        margin = (u * item_all[neg_items]).sum(1) - (u * item_all[pos_items]).sum(1)
        loss = F.softplus(margin).mean() / math.log(2)  # −log₂ σ(x) = softplus(−x) / ln 2
        reg = sum(preference[users].square().mean() for preference in self.preferences.values())
        if self.fusion_weights is not None:
            reg = reg + self.fusion_weights.square().mean()
        return loss + self.params.reg_weight * reg
