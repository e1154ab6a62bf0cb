"""DNS(M, N) (Shi et al., "On the Theories behind Hard Negative Sampling for Recommendation", WWW 2023).

For each (user, positive): M candidates uniform over the items the user did not train on, scored by
the current model; the N highest-scored are the negatives. The paper draws one of those N with
probability 1/N; the loss here is that draw's expectation, BPR averaged over the N (the authors'
code sums them: N times this). BPR with DNS(M, N) estimates one-way partial AUC with FPR up to N/M.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neggen_model.config import DNSConfig
from neggen_model.models.base import Recommender
from neggen_model.samplers.base import NegativeSampler, candidate_scores


class DNSSampler(NegativeSampler):
    name = "dns"
    config: DNSConfig

    def _hardest(self, user_all: Tensor, item_all: Tensor, users: Tensor, candidates: Tensor) -> Tensor:
        scores = candidate_scores(user_all[users].detach(), item_all.detach(), candidates)
        n = self.config.hardest
        # topk is about 10x slower than argmax for k = 1 on CPU.
        picks = scores.argmax(dim=1, keepdim=True) if n == 1 else scores.topk(n, dim=1).indices
        return candidates.gather(1, picks)  # [B, N]

    def negatives(self, model: Recommender, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        with torch.no_grad():
            return self._hardest(*model.final_embeddings(), users, *drawn)

    def loss(self, model: Recommender, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        user_all, item_all = model.final_embeddings()
        hardest = self._hardest(user_all, item_all, users, *drawn)
        n = self.config.hardest
        # Each (user, positive) once per hardest negative: BPR and its L2 term averaged over the N.
        return model.bpr_loss(user_all, item_all, users.repeat_interleave(n), pos_items.repeat_interleave(n),
                              hardest.reshape(-1))  # fmt: skip
