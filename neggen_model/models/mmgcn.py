"""MMGCN (Wei et al., ACM MM 2019): "Multi-modal Graph Convolution Network for Personalized
Recommendation of Micro-video". Paper Table 2 row "MMGCN"; the architecture follows MMRec's
`mmgcn.py` (three layers, mean aggregation, concatenation in the combination layer, 256-d latent for
pictures, raw width for text), its defaults and reg grid.

What is computed, per modality m (text, visual), on the user-item graph:

- x⁰ = normalize([user preference vectors of modality m ; item features of m (visual: Linear to 256)]);
- three layers l: h = leakyReLU(mean over the node's neighbours of xˡ Wˡ) (aggregation),
  x̂ = leakyReLU(Linear(xˡ)) + e_id (the node's id embedding, shared by the modalities),
  xˡ⁺¹ = leakyReLU(Linear([h ; x̂])) (combination);
- a node's representation is the mean over modalities of x³; score = user · item;
- loss: BPR + reg_weight × (mean of the squared id embeddings of the batch's users and items, + the
  mean squared visual preference vectors).

Departure from MMRec's code, on purpose: there the id embeddings and the preference vectors are
plain tensors outside the model's parameters, so the optimiser never updates them (they stay at
their random initial values); here they are parameters and learn, as in the MMGCN paper.
"""

from __future__ import annotations

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
from neggen_model.models.multimodal import ContentModel, ModelParams, SparseMM, torch_csr

VISUAL_LATENT = 256


def mean_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its sum (rows of zeros stay zero)."""
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    inv = np.zeros_like(sums)
    np.divide(1.0, sums, out=inv, where=sums > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ matrix)


class MMGCNParams(ModelParams):
    reg_weight: float = Field(1e-4, ge=0.0, description="Weight of the squared-embedding penalty.")
    n_layers: int = Field(3, ge=1, le=3, description="Graph layers (MMRec's MMGCN has 3).")


class _ModalityGCN(nn.Module):
    def __init__(self, n_users: int, feature_dim: int, latent: int | None, d: int, n_layers: int):
        super().__init__()
        width = latent or feature_dim
        self.mlp = nn.Linear(feature_dim, latent) if latent else None
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, width)))
        self.conv = nn.ParameterList()
        self.linear = nn.ModuleList()
        self.combine = nn.ModuleList()
        for layer in range(n_layers):
            inner = width if layer == 0 else d
            # MMRec re-initialises every conv weight Xavier-normal (over torch_geometric's uniform).
            self.conv.append(nn.Parameter(nn.init.xavier_normal_(torch.empty(inner, inner))))
            self.linear.append(nn.Linear(inner, d))
            nn.init.xavier_normal_(self.linear[-1].weight)
            self.combine.append(nn.Linear(inner + d, d))
            if layer == 0:
                nn.init.xavier_normal_(self.combine[-1].weight)

    def forward(self, features: Tensor, ids: Tensor, means: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """The users' and the items' x³ of this modality, kept as two blocks: on the bipartite graph a
        user's neighbours are items and an item's are users, so a layer is mean(neighbours' x) Wˡ
        per block ((A x) W = A (x W)). Where the items' x⁰ is constant (raw text), nothing is
        differentiated through it: about a third of the first layer's backward arithmetic."""
        user_means, user_means_t, item_means, item_means_t = means
        users = F.normalize(self.preference)
        items = F.normalize(self.mlp(features) if self.mlp is not None else features)
        user_ids, item_ids = ids[: len(users)], ids[len(users) :]
        for conv, linear, combine in zip(self.conv, self.linear, self.combine):
            user_h = F.leaky_relu(SparseMM.apply(user_means, user_means_t, items) @ conv)
            item_h = F.leaky_relu(SparseMM.apply(item_means, item_means_t, users) @ conv)
            users = F.leaky_relu(combine(torch.cat([user_h, F.leaky_relu(linear(users)) + user_ids], dim=1)))
            items = F.leaky_relu(combine(torch.cat([item_h, F.leaky_relu(linear(items)) + item_ids], dim=1)))
        return users, items


class MMGCN(ContentModel):
    name = "mmgcn"
    Params = MMGCNParams
    # MMRec's MMGCN.yaml searches reg_weight in [0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1] (and the learning
    # rate, which is TrainConfig's here and fixed by the paper's protocol).
    grid: ClassVar[dict[str, tuple]] = {"reg_weight": (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)}

    def __init__(self, data: InteractionData, config: TrainConfig, content: ItemContent, params=None):
        super().__init__(data, config, content, params)
        d = config.embedding_size
        n_layers = self.params.n_layers
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(data.n_users + data.n_items, d)))
        self.gcns = nn.ModuleDict()
        for modality, matrix in content.matrices().items():
            self.register_buffer(f"_feat_{modality}", torch.from_numpy(matrix.copy()), persistent=False)
            latent = VISUAL_LATENT if modality == "visual" else None
            self.gcns[modality] = _ModalityGCN(data.n_users, matrix.shape[1], latent, d, n_layers)
        # Mean over neighbours (no self loop), as the user → items and item → users blocks.
        interactions = data.train.astype(np.float32)
        user_means, item_means = (mean_rows(m) for m in (interactions, interactions.T.tocsr()))
        for name, matrix in (("user_means", user_means), ("item_means", item_means)):
            self.register_buffer(name, torch_csr(matrix), persistent=False)
            self.register_buffer(f"{name}_t", torch_csr(matrix.T), persistent=False)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        means = (self.user_means, self.user_means_t, self.item_means, self.item_means_t)
        users = items = 0.0
        for modality, gcn in self.gcns.items():
            u, i = gcn(getattr(self, f"_feat_{modality}"), self.id_embedding, means)
            users, items = users + u, items + i
        return users / len(self.gcns), items / len(self.gcns)

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        user_all, item_all = self.final_embeddings()
        u = user_all[users]
        loss = F.softplus((u * item_all[neg_items]).sum(1) - (u * item_all[pos_items]).sum(1)).mean()
        ids_u = self.id_embedding[users]
        reg = (ids_u.square() + self.id_embedding[self.n_users + pos_items].square()).mean()
        reg = reg + (ids_u.square() + self.id_embedding[self.n_users + neg_items].square()).mean()
        reg = reg / 2  # MMRec: the mean over the interleaved (user, pos), (user, neg) rows
        if "visual" in self.gcns:
            reg = reg + self.gcns["visual"].preference.square().mean()
        return loss + self.params.reg_weight * reg
