"""IRGAN (Wang et al., SIGIR 2017), item recommendation: a generator G and a discriminator D, each
a matrix factorisation (this project's BPR-MF), playing the paper's minimax game; the algorithm of
the authors' code (geek-ai/irgan, `item_recommendation/cf_gan.py`).

- G is a policy over all items per user, p_θ(i | u) = softmax_i(⟨g_u, g_i⟩).
- D scores pairs, s(u, i) = ⟨d_u, d_i⟩, with the pointwise logistic loss: the user's training
  positive labelled 1, an item G draws for the user from softmax(⟨g_u, g_i⟩ / τ) labelled 0
  (τ = 0.2; over all items, the user's positives included, as in the original), + L2 (0.1).
- G is updated by REINFORCE with D's reward r(u, i) = 2 (σ(s(u, i)) − 0.5) (or log(1 + exp s)):
  loss −mean log p_θ(i | u) r(u, i) p_θ(i | u) / p_n(i | u) over 2 draws per training pair from
  the importance-sampling mixture p_n = 0.8 p_θ + 0.2 × uniform over the user's training positives.
- Ranking uses G's scores, as the paper's item-recommendation results do (`rank_by` may choose D).

Pre-training is explicit (`pretrain`): with "bpr" (the default) G and D both start from the weights
of a finished BPR-MF run of this project under the same training config, which the caller trains or
reuses (pipeline/baselines.py keys IRGAN's run by it); "none" starts both from Xavier. The authors
start G from a pre-trained MF (DNS-trained, with item biases) and D from random; here D starts from
the same run, and neither has item biases (this project's BPR-MF has none to start them from).

How it sits on the shared trainer: one training batch of (user, positive) pairs is one D step and
one G step, both computed with the players as they are before the step. Their losses are summed:
the two parameter sets are disjoint and neither loss reaches the other player (G's items are drawn,
D's reward is detached), so the trainer's Adam step on the sum is each player's own Adam step (the
original alternates whole epochs of D and of G, with SGD). The trainer's negatives are not used.
G's draws come from a torch generator seeded by `begin_epoch`, so a resumed run draws what the
uninterrupted one drew. Per batch, G's scores are a [batch, items] block: never users × items.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.models.base import BaselineModel, ModelParams
from neggen_model.models.bpr import BPRMF


class IRGANParams(ModelParams):
    """Defaults: the authors' item-recommendation code (cf_gan.py)."""

    pretrain: Literal["bpr", "none"] = Field(
        "bpr", description='"bpr": G and D start from a finished BPR-MF run under the same training config; "none": from Xavier.'
    )
    pretrain_epochs: int | None = Field(
        None, gt=0, description="Epochs of the BPR-MF pre-training; null = until its early stopping on validation."
    )
    temperature: float = Field(0.2, gt=0.0, description="τ of G's softmax when it draws the items D learns to reject.")
    sample_lambda: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of G's update draws taken uniformly from the user's training positives."
    )
    generator_samples: int = Field(2, gt=0, description="Items G draws per training pair for its update (2 x |positives|).")
    reward: Literal["sigmoid", "softplus"] = Field(
        "sigmoid", description='D\'s reward for a drawn item: "sigmoid" 2 (σ(s) - 0.5), "softplus" log(1 + exp(s)).'
    )
    generator_reg: float = Field(0.0, ge=0.0, description="L2 weight of G (the authors' 0).")
    discriminator_reg: float = Field(0.1, ge=0.0, description="L2 weight of D (the authors' 0.1 per batch).")
    rank_by: Literal["generator", "discriminator"] = Field("generator", description="Whose scores rank items at evaluation.")

    @field_validator("pretrain_epochs")
    @classmethod
    def _epochs_need_a_pretraining(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("pretrain") == "none":
            raise ValueError(f"{value} epochs of pre-training given, but pretrain is 'none'")
        return value


class IRGAN(BaselineModel):
    name = "irgan"
    Params = IRGANParams
    # Epoch 0 scores the starting point (the pre-trained MF): a best epoch 0 says the game added nothing.
    validate_before_training = True

    def __init__(self, data: InteractionData, config: TrainConfig, params=None, pretrained: BPRMF | None = None):
        super().__init__(params)
        p: IRGANParams = self.params
        self.generator = BPRMF(data, config.model_copy(update={"reg_weight": p.generator_reg}))
        self.discriminator = BPRMF(data, config.model_copy(update={"reg_weight": p.discriminator_reg}))
        if p.pretrain == "bpr":
            if not isinstance(pretrained, BPRMF):
                raise ValueError(f"irgan params: pretrain: 'bpr' needs the trained BPR-MF model, got {type(pretrained).__name__}")
            for player in (self.generator, self.discriminator):
                player.load_state_dict(pretrained.state_dict())
        elif pretrained is not None:
            raise ValueError("irgan params: pretrain: 'none' starts from Xavier and takes no pretrained model")
        self.train_matrix = data.train.astype(np.float32)
        self._draws: torch.Generator | None = None
        self._losses: dict[str, list[float]] = {"discriminator_loss": [], "generator_loss": []}

    def begin_epoch(self, rng: np.random.Generator) -> None:
        self._draws = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        ranker = self.generator if self.params.rank_by == "generator" else self.discriminator
        return ranker.final_embeddings()

    def generator_logits(self, users: Tensor) -> Tensor:
        """⟨g_u, g_i⟩ for every item, [len(users), n_items]: the batch's rows only."""
        return self.generator.user_embedding[users] @ self.generator.item_embedding.T

    def sample_items(self, users: Tensor, count: int, generator: torch.Generator, temperature: float = 1.0) -> Tensor:
        """[len(users), count] items drawn with replacement from softmax(G's scores / temperature)."""
        with torch.no_grad():
            policy = F.softmax(self.generator_logits(users) / temperature, dim=1)
        return torch.multinomial(policy, count, replacement=True, generator=generator)

    def reward(self, users: Tensor, items: Tensor) -> Tensor:
        """D's reward for each users[b], items[b, k] (no gradient: G learns from it, D does not)."""
        with torch.no_grad():
            d = self.discriminator
            scores = (d.user_embedding[users, None, :] * d.item_embedding[items]).sum(dim=2)
        return 2.0 * (torch.sigmoid(scores) - 0.5) if self.params.reward == "sigmoid" else F.softplus(scores)

    def discriminator_loss(self, users: Tensor, pos_items: Tensor, generator: torch.Generator) -> Tensor:
        """Pointwise logistic loss: each positive labelled 1, one item G draws for its user labelled 0."""
        drawn = self.sample_items(users, 1, generator, self.params.temperature).squeeze(1)
        d = self.discriminator
        u = d.user_embedding[users]
        real = (u * d.item_embedding[pos_items]).sum(dim=1)
        fake = (u * d.item_embedding[drawn]).sum(dim=1)
        logistic = (F.softplus(-real) + F.softplus(fake)).mean() / 2  # mean over the 2 x batch labelled pairs
        return logistic + d.ego_regulariser(users, pos_items, drawn)

    def generator_loss(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """REINFORCE with D's reward, from draws of the importance-sampling mixture p_n."""
        p: IRGANParams = self.params
        log_policy = F.log_softmax(self.generator_logits(users), dim=1)
        policy = log_policy.detach().exp()
        positives = torch.from_numpy(self.train_matrix[users.cpu().numpy()].toarray()).to(self.device)
        mixture = (1.0 - p.sample_lambda) * policy + p.sample_lambda * positives / positives.sum(dim=1, keepdim=True)
        items = torch.multinomial(mixture, p.generator_samples, replacement=True, generator=generator)
        weight = self.reward(users, items) * policy.gather(1, items) / mixture.gather(1, items)
        return -(log_policy.gather(1, items) * weight).mean() + self.generator.ego_regulariser(users, items)

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """One D step and one G step on the batch (summed: see the module docstring)."""
        if self._draws is None:
            raise RuntimeError("irgan draws its items from begin_epoch's generator: call begin_epoch first")
        d_loss = self.discriminator_loss(users, pos_items, self._draws)
        g_loss = self.generator_loss(users, self._draws)
        self._losses["discriminator_loss"].append(d_loss.item())
        self._losses["generator_loss"].append(g_loss.item())
        return d_loss + g_loss

    def pop_epoch_stats(self) -> dict[str, float]:
        stats = {name: float(np.mean(values)) for name, values in self._losses.items() if values}
        self._losses = {name: [] for name in self._losses}
        return stats
