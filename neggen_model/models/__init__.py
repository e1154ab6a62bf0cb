"""Registry of the recommenders by the names configs and checkpoints use."""

from __future__ import annotations

import torch

from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent
from neggen_model.data import InteractionData
from neggen_model.models.base import Baseline, BaselineModel, Recommender
from neggen_model.models.bm3 import BM3
from neggen_model.models.bpr import BPRMF
from neggen_model.models.diffmm import DiffMM
from neggen_model.models.dragon import DRAGON
from neggen_model.models.freedom import FREEDOM
from neggen_model.models.irgan import IRGAN
from neggen_model.models.lgmrec import LGMRec
from neggen_model.models.lightgcn import LightGCN
from neggen_model.models.mmgcn import MMGCN
from neggen_model.models.multimodal import ContentModel
from neggen_model.models.sampler_baselines import SAMPLER_BASELINES, SamplerBaseline
from neggen_model.models.vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {cls.name: cls for cls in (BPRMF, LightGCN)}
#: The multi-modal baselines of the paper's Table 2: built with item content and their own params.
CONTENT_MODELS: dict[str, type[ContentModel]] = {cls.name: cls for cls in (VBPR, MMGCN, BM3, FREEDOM, DRAGON, DiffMM, LGMRec)}
#: What the `baselines` stage can train: IRGAN (which starts from a BPR-MF run), LightGCN with each hard
#: negative sampler (lightgcn_dns, ...) and the content models: Table 2's order.
BASELINES: dict[str, type[Baseline]] = {IRGAN.name: IRGAN, **SAMPLER_BASELINES, **CONTENT_MODELS}


def build_model(
    name: str,
    data: InteractionData,
    config: TrainConfig,
    content: ItemContent | None = None,
    params: dict | None = None,
    pretrained: BPRMF | None = None,
) -> Recommender | BaselineModel:
    """Instantiate a registered model; initialisation is seeded with config.seed, so it is reproducible.

    Content models (CONTENT_MODELS) need `content` and take their own `params` (None: defaults);
    IRGAN takes its `params` and, when they name a pre-training, the `pretrained` BPR-MF model.
    """
    torch.manual_seed(config.seed)
    if name == IRGAN.name:
        if content is not None:
            raise ValueError("irgan takes no item content")
        return IRGAN(data, config, params, pretrained).to(config.device)
    if pretrained is not None:
        raise ValueError(f"{name} starts from no pretrained model")
    if name in CONTENT_MODELS:
        if content is None:
            raise ValueError(f"{name} is a multi-modal model: pass the item content (neggen_model.content)")
        return CONTENT_MODELS[name](data, config, content, params).to(config.device)
    if name not in MODELS:
        if name in SAMPLER_BASELINES:
            raise ValueError(f"{name} is {SAMPLER_BASELINES[name].model} with TrainConfig.negative_sampler from its params")
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS) + sorted(BASELINES.keys() - SAMPLER_BASELINES.keys())}")
    if content is not None or params:
        raise ValueError(f"{name} takes no item content or params")
    return MODELS[name](data, config).to(config.device)


__all__ = ["BASELINES", "CONTENT_MODELS", "MODELS", "SAMPLER_BASELINES", "BM3", "BPRMF", "DRAGON", "DiffMM", "FREEDOM", "IRGAN", "LGMRec", "LightGCN", "MMGCN", "VBPR", "Baseline", "BaselineModel", "ContentModel",
           "Recommender", "SamplerBaseline", "build_model"]
