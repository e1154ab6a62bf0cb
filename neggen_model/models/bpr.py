"""BPR-MF (Rendle et al., 2009): matrix factorisation trained with the BPR loss."""

from __future__ import annotations

from torch import Tensor

from neggen_model.models.base import Recommender


class BPRMF(Recommender):
    """The ego embeddings are the final embeddings; everything else is the shared BPR objective."""

    name = "bpr"
    linear_propagation = True

    def propagate(self, user_ego: Tensor, item_ego: Tensor) -> tuple[Tensor, Tensor]:
        return user_ego, item_ego

    def layer_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_embedding.unsqueeze(1), self.item_embedding.unsqueeze(1)
