"""Uniform negatives (Rendle et al., 2009): the trainer's strategy before the hard ones existed."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from neggen_model.config import UniformSamplerConfig
from neggen_model.models.base import ScoringModel
from neggen_model.samplers.base import NegativeSampler


class UniformSampler(NegativeSampler):
    """One item per pair, uniform over those the user did not train on; the model's own loss.

    Draws the whole epoch at once from the same generator as before, so runs are unchanged bit for bit.
    """

    name = "uniform"

    config: UniformSamplerConfig

    def check_model(self, model: ScoringModel) -> None:
        """Every model trains with uniform negatives."""

    def draw(self, users: np.ndarray, epoch: int) -> tuple[np.ndarray, ...]:
        return (self.uniform.sample(users),)

    def loss(self, model: ScoringModel, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        (neg_items,) = drawn
        return model.calculate_loss(users, pos_items, neg_items)

    def negatives(self, model: ScoringModel, users: Tensor, pos_items: Tensor, *drawn: Tensor) -> Tensor:
        (neg_items,) = drawn
        return neg_items.unsqueeze(1)
