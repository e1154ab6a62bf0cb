"""MixGCF (Huang et al., "MixGCF: An Improved Training Method for Graph Neural Network-based
Recommender Systems", KDD 2021): a synthetic hard negative built from M uniform candidates.

Positive mixing: at every propagation layer l, each candidate's layer-l embedding is mixed with the
positive's, e'_l = a_l p_l + (1 - a_l) n_l, a_l ~ U(0, 1) once per pair and layer. Hop mixing: at
each layer the mixed candidate scored highest against the user (mean of the user's layers) is kept,
and the kept layers are pooled (mean, as LightGCN) into the negative. The regulariser reads layer 0
of the synthetic negative, as the authors' code does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from neggen_model.config import MixGCFConfig
from neggen_model.models.base import Recommender
from neggen_model.samplers.base import NegativeSampler, candidate_scores


class MixGCFSampler(NegativeSampler):
    name = "mixgcf"
    config: MixGCFConfig

    @staticmethod
    def _per_layer(user: Tensor, item_layers: Tensor, candidates: Tensor) -> Tensor:
        """[B, layers]: the candidate kept at each layer. The mixed score a_l <u, p_l> + (1 - a_l) <u, n_l>
        is largest for the candidate with the largest <u, n_l> (a_l < 1): the choice needs no mixing."""
        per_layer = candidate_scores(user.detach(), item_layers.detach(), candidates)  # [B, layers, M]
        return candidates.gather(1, per_layer.argmax(dim=2))

    def negatives(self, model: Recommender, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        with torch.no_grad():
            user_layers, item_layers = model.layer_embeddings()
            return self._per_layer(user_layers[users].mean(dim=1), item_layers, *drawn)

    def loss(self, model: Recommender, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        user_layers, item_layers = model.layer_embeddings()  # [n, layers, d]
        user, pos_layers = user_layers[users].mean(dim=1), item_layers[pos_items]
        chosen = self._per_layer(user, item_layers, *drawn)
        n_layers = item_layers.shape[1]
        neg_layers = item_layers[chosen, torch.arange(n_layers, device=chosen.device)]
        mix = self.uniform.rng.random((len(users), n_layers, 1), dtype=np.float32)
        mix = torch.from_numpy(mix).to(pos_layers.device)
        synthetic = mix * pos_layers + (1 - mix) * neg_layers
        pos_score = (user * pos_layers.mean(dim=1)).sum(dim=1)
        neg_score = (user * synthetic.mean(dim=1)).sum(dim=1)
        ranking = F.softplus(neg_score - pos_score).mean()
        synthetic_l2 = model.reg_weight * 0.5 * synthetic[:, 0].square().sum() / len(users)
        return ranking + model.ego_regulariser(users, pos_items) + synthetic_l2
