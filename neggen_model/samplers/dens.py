"""DENS (Lai et al., "Disentangled Negative Sampling for Collaborative Filtering", WSDM 2023).

A hierarchical gate splits an item into the factors relevant to the user's choice and the rest,
per propagation layer l (σ = sigmoid, W = four linear gates):
    positive:   g+ = σ(W_item p_l + W_user u_l),   p_rel = g+ ⊙ p_l,   p_irr = p_l - p_rel
    candidate:  g- = σ(W_neg n_l + W_pos p_rel),   n_rel = g- ⊙ n_l,   n_irr = n_l - n_rel
Factor-aware selection: at each layer the candidate maximising <u_l, (1 - w) n_l - n_rel>, where
w = min(1, epoch / warm-up) moves the choice from the irrelevant factors (w = 0: <u_l, n_irr>) to
contrasting the relevant ones; the chosen layers pool into the negative. The gates learn from four
contrastive BPR terms (relevant above irrelevant for the positive, the reverse for the negative,
and across the two), weighted by γ, on top of the ranking BPR. As in the authors' code.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from neggen_model.config import DENSConfig, TrainConfig
from neggen_model.models.base import Recommender
from neggen_model.samplers.base import NegativeSampler


class DENSSampler(NegativeSampler):
    name = "dens"
    config: DENSConfig

    def __init__(self, train: sp.csr_matrix, seed: int | np.random.SeedSequence, train_config: TrainConfig):
        super().__init__(train, seed, train_config)
        width = train_config.embedding_size
        # nn.Linear's own initialisation, U(±1/sqrt(d)), drawn from the sampler's generator rather
        # than torch's global one, so the gates start the same whatever ran before.
        bound = width**-0.5

        def gate() -> nn.Linear:
            layer = skip_init(nn.Linear, width, width)
            with torch.no_grad():
                for tensor in (layer.weight, layer.bias):
                    drawn = self.uniform.rng.uniform(-bound, bound, tuple(tensor.shape)).astype(np.float32)
                    tensor.copy_(torch.from_numpy(drawn))
            return layer

        self.user_gate, self.item_gate, self.pos_gate, self.neg_gate = gate(), gate(), gate(), gate()
        self._selection_weight = 1.0

    def draw(self, users: np.ndarray, epoch: int) -> tuple[np.ndarray, ...]:
        self._selection_weight = 1.0 - min(1.0, epoch / self.config.warmup_epochs)
        return super().draw(users, epoch)

    def _relevant(self, user: Tensor, pos: Tensor, neg: Tensor, neg_projected: Tensor) -> tuple[Tensor, Tensor]:
        """Relevant factors of the positive and of the negatives (neg may carry a candidates axis);
        neg_projected is neg_gate(neg)."""
        pos_relevant = pos * torch.sigmoid(self.item_gate(pos) + self.user_gate(user))
        pos_gate = self.pos_gate(pos_relevant)
        if neg.dim() > pos.dim():
            pos_gate = pos_gate.unsqueeze(1)
        return pos_relevant, neg * torch.sigmoid(neg_projected + pos_gate)

    @torch.no_grad()
    def _per_layer(self, user_batch: Tensor, pos_layers: Tensor, item_layers: Tensor, candidates: Tensor) -> Tensor:
        """[B, layers]: the candidate maximising <u_l, (1 - w) n_l - n_rel> at each layer."""
        cand_layers = item_layers[candidates]  # [B, M, layers, d]
        # The gate is linear per vector: through every item once when there are fewer items than
        # candidates in the batch, else through the candidates.
        if len(item_layers) <= candidates.numel():
            cand_projected = self.neg_gate(item_layers)[candidates]
        else:
            cand_projected = self.neg_gate(cand_layers)
        _, cand_relevant = self._relevant(user_batch, pos_layers, cand_layers, cand_projected)
        selection = self._selection_weight * cand_layers - cand_relevant
        per_layer = (user_batch.unsqueeze(1) * selection).sum(dim=3)  # [B, M, layers]
        return candidates.gather(1, per_layer.argmax(dim=1))

    def negatives(self, model: Recommender, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        with torch.no_grad():
            user_layers, item_layers = model.layer_embeddings()
            return self._per_layer(user_layers[users], item_layers[pos_items], item_layers, *drawn)

    def loss(self, model: Recommender, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        user_layers, item_layers = model.layer_embeddings()  # [n, layers, d]
        user_batch, pos_layers = user_layers[users], item_layers[pos_items]
        chosen = self._per_layer(user_batch, pos_layers, item_layers, *drawn)
        neg_layers = item_layers[chosen, torch.arange(item_layers.shape[1], device=chosen.device)]
        user = user_batch.mean(dim=1)

        def score(layers: Tensor) -> Tensor:
            return (user * layers.mean(dim=1)).sum(dim=1)

        ranking = F.softplus(score(neg_layers) - score(pos_layers)).mean()
        if self.config.gate_weight > 0:
            pos_rel, neg_rel = self._relevant(user_batch, pos_layers, neg_layers, self.neg_gate(neg_layers))
            pos_r, pos_i = score(pos_rel), score(pos_layers - pos_rel)
            neg_r, neg_i = score(neg_rel), score(neg_layers - neg_rel)
            contrast = F.softplus(pos_i - pos_r) + F.softplus(neg_r - neg_i) + F.softplus(neg_r - pos_r)
            contrast = contrast + F.softplus(pos_i - neg_i)
            ranking = ranking + self.config.gate_weight * contrast.mean() / 4
        # Layer 0 of the negative is the ego embedding of the item chosen there.
        return ranking + model.ego_regulariser(users, pos_items, chosen[:, 0])
