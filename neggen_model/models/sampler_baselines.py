"""The negative-sampling baselines of the paper's Table 2 (DNS(M,N), MixGCF, DENS, AHNS): LightGCN, the
base recommender the paper trains every one of them on, trained with that hard negative sampler.

Not models of their own: the strategy lives in neggen_model/samplers and is chosen by
TrainConfig.negative_sampler, so such a baseline is LightGCN with its `params` (the strategy's typed
config, e.g. DNSConfig) as the trainer's sampler. They read no item content.
"""

from __future__ import annotations

from typing import Any, ClassVar

from neggen_model.config import AHNSConfig, DENSConfig, DNSConfig, MixGCFConfig, NegativeSamplerConfig
from neggen_model.models.base import Baseline
from neggen_model.models.lightgcn import LightGCN


class SamplerBaseline(Baseline):
    """LightGCN trained with the hard negative sampler whose config class is `Params`."""

    model: ClassVar[str] = LightGCN.name

    @classmethod
    def negative_sampler(cls, params: Any = None) -> NegativeSamplerConfig:
        return cls.parse_params(params)


def sampler_baseline(config: type[NegativeSamplerConfig]) -> type[SamplerBaseline]:
    """The baseline `lightgcn_<strategy>` whose params are the strategy's config class."""
    strategy = config.model_fields["strategy"].default
    return type(f"LightGCN_{strategy}", (SamplerBaseline,), {"name": f"{LightGCN.name}_{strategy}", "Params": config})


#: In the paper's Table 2 order.
SAMPLER_BASELINES: dict[str, type[SamplerBaseline]] = {
    cls.name: cls for cls in map(sampler_baseline, (MixGCFConfig, DENSConfig, DNSConfig, AHNSConfig))
}
