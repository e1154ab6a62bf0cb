"""BM3 (Zhou et al., WWW 2023): "Bootstrap Latent Representations for Multi-modal Recommendation".
Paper Table 2 row "BM3"; defaults and grid follow MMRec's `bm3.py` / BM3.yaml.

What is computed:

- embeddings: LightGCN over the user-item graph (n_layers, mean over layers 0..L); an item adds its
  own id embedding; a shared predictor (Linear 64 → 64) maps every online view;
- no negatives: the loss bootstraps a target view, a dropout copy (no gradient) of the embeddings,
  and pulls the predicted online view towards it by cosine:
  (1 − cos(p(u), ī)) + (1 − cos(p(i), ū)) for each training pair (u, i), where ū, ī are the targets;
- content: text / picture features projected to 64 (raw features fine-tuned, as MMRec), then the
  predictor; cl_weight × [(1 − cos(p(t_i), ī)) + (1 − cos(p(t_i), t̄_i))] per modality, t̄ the
  dropout target of the projected feature;
- + reg_weight × (‖E_users‖ + ‖E_items‖) / n_items over the whole final embedding matrices (MMRec's
  EmbLoss on them); ranking: p(u) · p(i).

The trainer's sampled negatives are ignored (BM3 needs none); the dropout masks come from a
generator seeded by `begin_epoch` (resumed runs stay bit for bit); a mask is drawn for the whole
matrix and indexed, as MMRec does, so an item twice in a batch gets the same target.
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
from neggen_model.models.multimodal import ContentModel, ModelParams, sym_norm_bipartite, torch_csr


class BM3Params(ModelParams):
    n_layers: int = Field(1, ge=0, description="LightGCN layers.")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout that makes the target view.")
    reg_weight: float = Field(0.1, ge=0.0, description="Weight of the norm penalty on all final embeddings.")
    cl_weight: float = Field(2.0, ge=0.0, description="Weight of the modality alignment losses.")


class BM3(ContentModel):
    name = "bm3"
    Params = BM3Params
    # MMRec's BM3.yaml: hyper_parameters n_layers [1, 2] x reg_weight [0.1, 0.01] x dropout [0.3, 0.5].
    grid: ClassVar[dict[str, tuple]] = {"n_layers": (1, 2), "reg_weight": (0.1, 0.01), "dropout": (0.3, 0.5)}

    def __init__(self, data: InteractionData, config: TrainConfig, content: ItemContent, params=None):
        super().__init__(data, config, content, params)
        d = config.embedding_size
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.predictor = nn.Linear(d, d)
        nn.init.xavier_normal_(self.predictor.weight)
        self.features = nn.ParameterDict()
        self.projections = nn.ModuleDict()
        for modality, matrix in content.matrices().items():
            self.features[modality] = nn.Parameter(torch.from_numpy(matrix.copy()))
            self.projections[modality] = nn.Linear(matrix.shape[1], d)
            nn.init.xavier_normal_(self.projections[modality].weight)
        users, items = data.train_pairs()
        self.register_buffer("norm_adj", torch_csr(sym_norm_bipartite(users, items, data.n_users, data.n_items)), persistent=False)
        self._seed = config.seed
        self._generator: torch.Generator | None = None

    def begin_epoch(self, rng: np.random.Generator) -> None:
        self._generator = torch.Generator().manual_seed(int(rng.integers(2**62)))

    def embeddings(self) -> tuple[Tensor, Tensor]:
        layer = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        total = layer
        for _ in range(self.params.n_layers):
            layer = _SymmetricSpMM.apply(self.norm_adj, layer)
            total = total + layer
        final = total / (self.params.n_layers + 1)
        return final[: self.n_users], final[self.n_users :] + self.item_embedding

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        users, items = self.embeddings()
        return self.predictor(users), self.predictor(items)

    def _target(self, x: Tensor, rows: Tensor, generator: torch.Generator) -> Tensor:
        """Rows of a dropout copy of x (mask drawn for all of x, as MMRec), without gradient."""
        p = self.params.dropout
        with torch.no_grad():
            if p == 0:
                return x[rows].detach()
            keep = torch.rand(x.shape, generator=generator) >= p  # drawn on the CPU: the same masks on any device
            return (x[rows] * keep[rows.cpu()].to(x.device) / (1 - p)).detach()

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        p: BM3Params = self.params
        generator = self._generator if self._generator is not None else torch.Generator().manual_seed(self._seed)
        user_all, item_all = self.embeddings()
        u_target, i_target = self._target(user_all, users, generator), self._target(item_all, pos_items, generator)
        u_online, i_online = self.predictor(user_all[users]), self.predictor(item_all[pos_items])
        loss = (1 - F.cosine_similarity(u_online, i_target, dim=-1).mean()) + (
            1 - F.cosine_similarity(i_online, u_target, dim=-1).mean()
        )
        loss = loss + p.reg_weight * (user_all.norm() + item_all.norm()) / self.n_items
        modal = 0.0
        rows, inverse = torch.unique(pos_items, return_inverse=True)
        for modality, projection in self.projections.items():
            projected = projection(self.features[modality][rows])  # only the batch's items
            with torch.no_grad():
                p_drop = p.dropout
                keep = (torch.rand((self.n_items, projected.shape[1]), generator=generator)[rows.cpu()] >= p_drop).to(projected.device)
                feat_target = (projected * keep / (1 - p_drop))[inverse] if p_drop > 0 else projected[inverse]
            online = self.predictor(projected)[inverse]
            modal = modal + (1 - F.cosine_similarity(online, i_target, dim=-1).mean())
            modal = modal + (1 - F.cosine_similarity(online, feat_target.detach(), dim=-1).mean())
        return loss + p.cl_weight * modal
