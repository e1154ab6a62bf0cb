"""Registry of the recommenders by the names configs and checkpoints use."""

from __future__ import annotations

import torch

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.models.base import Recommender
from neggen_model.models.bpr import BPRMF
from neggen_model.models.lightgcn import LightGCN

MODELS: dict[str, type[Recommender]] = {cls.name: cls for cls in (BPRMF, LightGCN)}


def build_model(name: str, data: InteractionData, config: TrainConfig) -> Recommender:
    """Instantiate a registered model; initialisation is seeded with config.seed, so it is reproducible."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    torch.manual_seed(config.seed)
    return MODELS[name](data, config).to(config.device)


__all__ = ["MODELS", "BPRMF", "LightGCN", "Recommender", "build_model"]
