"""LightGCN (He et al., 2020), the NegGen base recommender (paper §3.1, eq. 6-7)."""

from __future__ import annotations

import torch
from torch import Tensor

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.models.base import Recommender


class _SymmetricSpMM(torch.autograd.Function):
    """adj @ x for a symmetric sparse adj, whose gradient w.r.t. x is again adj @ grad.

    torch's own backward of a CSR product transposes the matrix on every call; reusing adj
    made a LightGCN training epoch 1.5-1.8x faster on CPU (bench/results/cf_perf.md).
    """

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, torch.sparse.mm(ctx.adj, grad)


class LightGCN(Recommender):
    """Embeddings propagated L times over the normalised user-item graph, then averaged."""

    name = "lightgcn"
    linear_propagation = True

    def __init__(self, data: InteractionData, config: TrainConfig):
        super().__init__(data, config)
        self.n_layers = config.n_layers
        # The graph is data, not a learned weight: kept out of state_dict (and checkpoints),
        # but a buffer so that .to(device) moves it with the embeddings.
        self.register_buffer("norm_adj", data.norm_adj, persistent=False)

    def _layers(self, user_ego: Tensor, item_ego: Tensor) -> list[Tensor]:
        """Users then items at layers 0..L (eq. 6)."""
        layers = [torch.cat([user_ego, item_ego], dim=0)]
        for _ in range(self.n_layers):
            layers.append(_SymmetricSpMM.apply(self.norm_adj, layers[-1]))
        return layers

    def propagate(self, user_ego: Tensor, item_ego: Tensor) -> tuple[Tensor, Tensor]:
        layers = self._layers(user_ego, item_ego)
        total = layers[0]
        for layer in layers[1:]:
            total = total + layer
        final = total / (self.n_layers + 1)  # eq. 7: mean over layers 0..L
        return final[: self.n_users], final[self.n_users :]

    def layer_embeddings(self) -> tuple[Tensor, Tensor]:
        stacked = torch.stack(self._layers(self.user_embedding, self.item_embedding), dim=1)
        return stacked[: self.n_users], stacked[self.n_users :]
