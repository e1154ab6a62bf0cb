"""FREEDOM (Zhou & Shen, ACM MM 2023): "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation". Paper Table 2 row "FREEDOM"; MMRec's `freedom.py` is the
reference the defaults and the grid follow.

What is computed:

- a frozen item-item graph: per modality the k-nearest-neighbour graph of the raw item features
  (cosine, k = 10, itself included, D^-1/2 A D^-1/2), mixed as
  w_v * visual + (1 - w_v) * text (w_v = 0.1); a text-only dataset uses the text graph alone;
- h = S^L' e_item (L' = 1): item id embeddings propagated over that graph;
- LightGCN over the user-item graph (L = 2, mean over layers 0..L); the item's final embedding is
  its LightGCN embedding plus h;
- denoising: before every training epoch (ScoringModel.begin_epoch) a fraction `dropout` of the
  user-item edges is pruned, keeping edges sampled without replacement with probability
  proportional to 1/sqrt(d_u d_i) (degree-sensitive), and the kept graph is renormalised; ranking
  uses the full graph;
- loss: BPR on the final embeddings + reg_weight * (BPR of the final user embedding against the
  linearly projected text features of the positive and the negative, and the same for visual).
  As in MMRec the raw features are trainable (`train_features`); only the batch's rows are
  projected, which gives MMRec's loss and gradients without projecting every item per step.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent
from neggen_model.data import InteractionData
from neggen_model.models.lightgcn import _SymmetricSpMM
from neggen_model.models.multimodal import ContentModel, ModelParams, SparseMM, knn_graph, project_rows, sym_norm_bipartite, torch_csr


class FreedomParams(ModelParams):
    knn_k: int = Field(10, gt=0, description="Neighbours per item in the item-item graph.")
    n_mm_layers: int = Field(1, ge=0, description="Propagation layers over the item-item graph.")
    n_ui_layers: int = Field(2, ge=0, description="LightGCN layers over the user-item graph.")
    mm_image_weight: float = Field(0.1, ge=0.0, le=1.0, description="Weight of the visual graph when both exist.")
    dropout: float = Field(0.8, ge=0.0, lt=1.0, description="Fraction of user-item edges pruned per epoch.")
    reg_weight: float = Field(1e-4, ge=0.0, description="Weight of the modality BPR losses.")
    train_features: bool = Field(True, description="Fine-tune the raw item features (MMRec does).")


class FREEDOM(ContentModel):
    name = "freedom"
    Params = FreedomParams
    # MMRec's FREEDOM.yaml: hyper_parameters ["dropout", "reg_weight"].
    grid: ClassVar[dict[str, tuple]] = {"dropout": (0.8, 0.9), "reg_weight": (0.0, 1e-5, 1e-4, 1e-3)}
    # Adam over the fine-tuned raw features (4.6M values on Beauty, 2/3 of all weights) was a third
    # of a training step; the fused kernel does it in a quarter of the time.
    fused_adam = True

    def __init__(self, data: InteractionData, config: TrainConfig, content: ItemContent, params=None):
        super().__init__(data, config, content, params)
        p: FreedomParams = self.params
        d = config.embedding_size
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.features = nn.ParameterDict() if p.train_features else None
        self.projections = nn.ModuleDict()
        graphs = {}
        for modality, matrix in content.matrices().items():
            tensor = torch.from_numpy(matrix.copy())
            if p.train_features:
                self.features[modality] = nn.Parameter(tensor)
            else:
                self.register_buffer(f"_feat_{modality}", tensor, persistent=False)
            self.projections[modality] = nn.Linear(matrix.shape[1], d)  # torch's default init, as MMRec
            graphs[modality] = knn_graph(matrix, p.knn_k)
        if len(graphs) == 2:
            item_graph = p.mm_image_weight * graphs["visual"] + (1.0 - p.mm_image_weight) * graphs["text"]
        else:
            (item_graph,) = graphs.values()
        self.register_buffer("item_graph", torch_csr(item_graph), persistent=False)
        self.register_buffer("item_graph_t", torch_csr(item_graph.T), persistent=False)
        users, items = data.train_pairs()
        self._edges = (users, items)
        # Sampling weights of the degree-sensitive pruning: the full graph's normalised edge values.
        full = sym_norm_bipartite(users, items, data.n_users, data.n_items)
        du = np.bincount(users, minlength=data.n_users) + 1e-7
        di = np.bincount(items, minlength=data.n_items) + 1e-7
        self._edge_weight = du[users] ** -0.5 * di[items] ** -0.5
        self.register_buffer("norm_adj", torch_csr(full), persistent=False)
        self._masked_adj: Tensor | None = None

    def feature(self, modality: str) -> Tensor:
        return self.features[modality] if self.features is not None else getattr(self, f"_feat_{modality}")

    def begin_epoch(self, rng: np.random.Generator) -> None:
        """Degree-sensitive edge pruning: keep (1 - dropout) of the edges, drawn without replacement
        with probability proportional to 1/sqrt(d_u d_i) (Efraimidis-Spirakis keys u^(1/w))."""
        dropout = self.params.dropout
        if dropout <= 0.0:
            self._masked_adj = None
            return
        users, items = self._edges
        keep = int(len(users) * (1.0 - dropout))
        keys = np.log(rng.random(len(users))) / self._edge_weight
        kept = np.sort(np.argpartition(-keys, keep - 1)[:keep]) if keep < len(users) else np.arange(len(users))
        adj = sym_norm_bipartite(users[kept], items[kept], self.n_users, self.n_items)
        self._masked_adj = torch_csr(adj).to(self.device)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        adj = self._masked_adj if (self.training and self._masked_adj is not None) else self.norm_adj
        h = self.item_embedding
        for _ in range(self.params.n_mm_layers):
            h = SparseMM.apply(self.item_graph, self.item_graph_t, h)
        layer = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        total = layer
        for _ in range(self.params.n_ui_layers):
            layer = _SymmetricSpMM.apply(adj, layer)
            total = total + layer
        final = total / (self.params.n_ui_layers + 1)
        return final[: self.n_users], final[self.n_users :] + h

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        user_all, item_all = self.final_embeddings()
        u = user_all[users]
        loss = F.softplus((u * item_all[neg_items]).sum(1) - (u * item_all[pos_items]).sum(1)).mean()
        if self.params.reg_weight > 0:
            modal = 0.0
            for modality, projection in self.projections.items():
                pos, neg = project_rows(projection, self.feature(modality), pos_items, neg_items)
                modal = modal + F.softplus((u * neg).sum(1) - (u * pos).sum(1)).mean()
            loss = loss + self.params.reg_weight * modal
        return loss
