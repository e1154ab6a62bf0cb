"""AHNS (Lai et al., "Adaptive Hardness Negative Sampling for Collaborative Filtering", AAAI 2024).

The hardness of the negative adapts to how well the positive is already scored: of M uniform
candidates, the one whose score is closest to β (s(u, i+) + α)^(p+1). With p < -1 the target falls
as the positive's score rises, so a well-learned positive gets an easier negative and a poorly
learned one a harder negative (the authors' code: `adaptive_negative_sampling`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from neggen_model.config import AHNSConfig
from neggen_model.models.base import Recommender
from neggen_model.samplers.base import NegativeSampler, candidate_scores


class AHNSSampler(NegativeSampler):
    name = "ahns"
    config: AHNSConfig

    def _closest(
        self, user_all: Tensor, item_all: Tensor, users: Tensor, pos_items: Tensor, candidates: Tensor
    ) -> Tensor:
        cfg = self.config
        user, items = user_all[users].detach(), item_all.detach()
        positive = (user * items[pos_items]).sum(dim=1, keepdim=True)
        target = cfg.beta * (positive + cfg.alpha).pow(cfg.p + 1)
        distance = (candidate_scores(user, items, candidates) - target).abs()
        return candidates.gather(1, distance.argmin(dim=1, keepdim=True))  # [B, 1]

    def negatives(self, model: Recommender, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        with torch.no_grad():
            return self._closest(*model.final_embeddings(), users, pos_items, *drawn)

    def loss(self, model: Recommender, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        user_all, item_all = model.final_embeddings()
        chosen = self._closest(user_all, item_all, users, pos_items, *drawn)
        return model.bpr_loss(user_all, item_all, users, pos_items, chosen.squeeze(1))
