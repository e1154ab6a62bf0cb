"""VBPR (He & McAuley, AAAI 2016): "Visual Bayesian Personalized Ranking from Implicit Feedback".
Paper Table 2 row "VBPR"; the defaults and grid follow MMRec's recommended version (`vbpr.py`).

What is computed (MMRec's version: no bias terms, every modality as "visual" content):

- an item is [γ_i ; E f_i]: a free id embedding γ_i (d = 64) beside a linear projection of its
  content f_i (the concatenation of its text and visual features, whatever the dataset has);
- a user is one free vector of width 2d = [γ_u ; θ_u];
- score(u, i) = user · item; loss = BPR + reg_weight * (‖u‖ + ‖i+‖ + ‖i−‖) / batch, with the
  Frobenius norms (not squared) of the batch's final user and item vectors, as MMRec's EmbLoss.
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
from neggen_model.models.multimodal import ContentModel, ModelParams, project_rows


class VBPRParams(ModelParams):
    reg_weight: float = Field(1e-2, ge=0.0, description="Weight of the norm penalty on the batch's vectors.")


class VBPR(ContentModel):
    name = "vbpr"
    Params = VBPRParams
    # MMRec's VBPR.yaml: reg_weight in [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5].
    grid: ClassVar[dict[str, tuple]] = {"reg_weight": (2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)}

    def __init__(self, data: InteractionData, config: TrainConfig, content: ItemContent, params=None):
        super().__init__(data, config, content, params)
        d = config.embedding_size
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, 2 * d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        raw = np.concatenate([content.matrices()[m] for m in content.modalities], axis=1)
        self.register_buffer("item_content", torch.from_numpy(raw), persistent=False)
        self.content_projection = nn.Linear(raw.shape[1], d)
        nn.init.xavier_normal_(self.content_projection.weight)
        nn.init.zeros_(self.content_projection.bias)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_embedding, torch.cat([self.item_embedding, self.content_projection(self.item_content)], dim=1)

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        u = self.user_embedding[users]
        pos_content, neg_content = project_rows(self.content_projection, self.item_content, pos_items, neg_items)
        pos = torch.cat([self.item_embedding[pos_items], pos_content], dim=1)
        neg = torch.cat([self.item_embedding[neg_items], neg_content], dim=1)
        ranking = F.softplus((u * neg).sum(1) - (u * pos).sum(1)).mean()
        norms = u.norm() + pos.norm() + neg.norm()
        return ranking + self.params.reg_weight * norms / len(users)
