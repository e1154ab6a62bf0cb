"""The contract of a negative-sampling strategy, and the candidate scoring the hard ones share.

A strategy plugs into the trainer in two calls per epoch and batch:
- `draw(users, epoch)`, once per epoch, returns arrays with one row per training pair (uniform
  negatives, or M uniform candidates per pair and whatever else the strategy draws at random), all
  from one numpy generator the trainer checkpoints (`get_state` / `set_state`), so a resumed run
  draws what the uninterrupted one drew;
- `loss(model, users, pos_items, *drawn)`, per batch, scores the candidates with the model as it
  is at that step and returns the batch loss.
A strategy is an nn.Module: one with trainable parts (DENS's gates) is optimised and checkpointed
with the model; the others hold no parameters and leave the optimiser exactly as before.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from neggen_model.config import TrainConfig
from neggen_model.models.base import Recommender, ScoringModel
from neggen_model.sampling import UniformNegativeSampler

#: The gathered candidate embeddings are scored in row blocks of about this many floats: one
#: block stays in cache, and a batch-sized gather (hundreds of MB for 200 candidates of 4 layers)
#: would spend more time faulting in fresh memory than multiplying.
_SCORE_BLOCK_FLOATS = 1 << 20
#: With at most this many items per candidate, one matrix product of the batch against every item
#: is cheaper than gathering the candidates (a gathered float costs about 30-40x a multiply-add of
#: the product on one CPU core), and its [batch, items] block is still smaller than the
#: [batch, candidates, d] gather (d = 64).
_DENSE_ITEMS_PER_CANDIDATE = 32


class NegativeSampler(nn.Module, ABC):
    """A way of choosing (or synthesising) each positive's negative; see the module docstring."""

    name: ClassVar[str]

    def __init__(self, train: sp.csr_matrix, seed: int | np.random.SeedSequence, train_config: TrainConfig):
        super().__init__()
        self.config = train_config.negative_sampler
        # Every draw of every strategy goes through this one generator, so its state is the whole
        # random state to checkpoint.
        self.uniform = UniformNegativeSampler(train, seed)

    def draw(self, users: np.ndarray, epoch: int) -> tuple[np.ndarray, ...]:
        """The epoch's random draws, each with len(users) rows (epoch = epochs trained before this
        one). Default: the config's M candidates per pair."""
        return (self.candidates(users, self.config.candidates),)

    @abstractmethod
    def loss(self, model: ScoringModel, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        """Mean loss of a batch; drawn are the batch's rows of draw()'s arrays."""

    @abstractmethod
    def negatives(self, model: ScoringModel, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        """The real items loss() would pick for the batch, [B, k] (k: N for DNS, one per layer for
        MixGCF and DENS, else 1), by the model as it is now; no gradient."""

    def check_model(self, model: ScoringModel) -> None:
        """Raise if the strategy cannot train this model (the hard ones need a Recommender)."""
        if not isinstance(model, Recommender):
            raise ValueError(
                f"negative_sampler {self.name!r} trains the collaborative recommenders (lightgcn, bpr); "
                f"{model.name!r} trains with negative_sampler 'uniform'"
            )

    def candidates(self, users: np.ndarray, count: int) -> np.ndarray:
        """[len(users), count] items drawn uniformly from those each user did not train on."""
        return self.uniform.sample(np.repeat(users, count)).reshape(len(users), count)

    def get_state(self) -> dict[str, Any]:
        return self.uniform.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.uniform.set_state(state)


@torch.no_grad()
def candidate_scores(user_vectors: Tensor, item_table: Tensor, candidates: Tensor) -> Tensor:
    """<user_vectors[b], item_table[candidates[b, m]]> for every batch row b and candidate m.

    item_table is [items, d] (scores [B, M]) or [items, layers, d] (scores [B, layers, M], a row of
    candidate scores per layer). Vectorised over the batch: no per-user loop, and never a users x
    items matrix.
    """
    n_items, width = item_table.shape[0], item_table.shape[-1]
    table = item_table.reshape(n_items, -1)  # [items, layers x d]
    n_layers, n_candidates = table.shape[1] // width, candidates.shape[1]
    if n_items <= _DENSE_ITEMS_PER_CANDIDATE * n_candidates:
        every_item = (user_vectors @ table.view(-1, width).T).view(len(candidates), n_items, n_layers)
        scores = every_item.gather(1, candidates.unsqueeze(2).expand(-1, -1, n_layers))
    else:
        rows = max(1, _SCORE_BLOCK_FLOATS // (n_candidates * table.shape[1]))
        blocks = []
        for start in range(0, len(candidates), rows):
            block = candidates[start : start + rows]
            # index_select on flat indices: several times faster than advanced indexing here.
            gathered = table.index_select(0, block.reshape(-1)).view(len(block), n_candidates, n_layers, width)
            blocks.append((gathered * user_vectors[start : start + rows, None, None, :]).sum(dim=3))
        scores = torch.cat(blocks)
    # Layers first: an argmax over the candidates then runs along contiguous memory (5x faster).
    return scores.transpose(1, 2).contiguous() if item_table.dim() == 3 else scores.squeeze(2)
