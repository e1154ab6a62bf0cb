"""Negative-sampling strategies for the collaborative recommenders (LightGCN, BPR): one file each,
one interface (base.NegativeSampler), chosen by TrainConfig.negative_sampler."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from neggen_model.config import TrainConfig
from neggen_model.samplers.ahns import AHNSSampler
from neggen_model.samplers.base import NegativeSampler, candidate_scores
from neggen_model.samplers.dens import DENSSampler
from neggen_model.samplers.dns import DNSSampler
from neggen_model.samplers.mixgcf import MixGCFSampler
from neggen_model.samplers.uniform import UniformSampler

SAMPLERS: dict[str, type[NegativeSampler]] = {
    cls.name: cls for cls in (UniformSampler, DNSSampler, MixGCFSampler, DENSSampler, AHNSSampler)
}


def build_sampler(config: TrainConfig, train: sp.csr_matrix, seed: int | np.random.SeedSequence) -> NegativeSampler:
    """The strategy config.negative_sampler names, drawing from a generator seeded with seed."""
    return SAMPLERS[config.negative_sampler.strategy](train, seed, config).to(config.device)


__all__ = ["SAMPLERS", "AHNSSampler", "DENSSampler", "DNSSampler", "MixGCFSampler", "NegativeSampler",
           "UniformSampler", "build_sampler", "candidate_scores"]  # fmt: skip
