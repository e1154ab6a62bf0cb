"""Training configuration for the collaborative-filtering recommenders.

Defaults follow the NegGen paper §4.1 (embedding 64, Xavier init, Adam, batch 2048,
at most 1000 epochs, early stop after 20 epochs without a better validation Recall@20)
and, where the paper is silent, MMRec's LightGCN setup that the paper's baselines come from.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

# A metric name as the evaluator reports it, e.g. "recall@20".
_METRIC_RE = re.compile(r"^(recall|ndcg)@(\d+)$")


class _SamplerConfig(BaseModel):
    # Each strategy defaults to its own name, so a config class alone validates that strategy's
    # parameters (the `baselines` stage's lightgcn_<strategy> params); TrainConfig still needs the name.
    model_config = ConfigDict(extra="forbid", frozen=True)


class UniformSamplerConfig(_SamplerConfig):
    """BPR against one item drawn uniformly from those the user did not train on (Rendle et al., 2009)."""

    strategy: Literal["uniform"] = "uniform"


class DNSConfig(_SamplerConfig):
    """DNS(M, N) (Shi et al., WWW 2023): of M uniform candidates, the N the model scores highest are the
    negatives; N = 1 is DNS (Zhang et al., 2013). Defaults: the DNS(M, N) of the AHNS authors' code
    (M = 32, N = 1), the candidate count every hard strategy there uses; Shi et al.'s example command
    for Gowalla is M = 200, N = 2 (about 3x the cost of M = 32 here, see bench/samplers_speed.py)."""

    strategy: Literal["dns"] = "dns"
    candidates: int = Field(32, gt=0, description="M: uniform candidates per positive.")
    hardest: int = Field(1, gt=0, description="N: the highest-scored candidates that enter the loss.")

    @model_validator(mode="after")
    def _hardest_within_candidates(self) -> DNSConfig:
        if self.hardest > self.candidates:
            raise ValueError(f"hardest (N = {self.hardest}) must not exceed candidates (M = {self.candidates})")
        return self


class MixGCFConfig(_SamplerConfig):
    """MixGCF (Huang et al., KDD 2021): per propagation layer, the candidate scored highest against the
    user, mixed with the positive's same layer (positive mixing), the layers pooled into one synthetic
    negative (hop mixing). Default M = 16: the authors' command for their Amazon data."""

    strategy: Literal["mixgcf"] = "mixgcf"
    candidates: int = Field(16, gt=0, description="M: uniform candidates per positive.")


class DENSConfig(_SamplerConfig):
    """DENS (Lai et al., WSDM 2023): gates split items into factors relevant and irrelevant to the user's
    positive; the negative keeps irrelevant factors close and relevant ones far. Defaults: the authors' code."""

    strategy: Literal["dens"] = "dens"
    candidates: int = Field(6, gt=0, description="M: uniform candidates per positive.")
    gate_weight: float = Field(0.3, ge=0.0, description="γ: weight of the four contrastive gating losses.")
    warmup_epochs: float = Field(
        100.0, gt=0.0, description="Epochs over which selection moves from the irrelevant factors to the relevant."
    )


class AHNSConfig(_SamplerConfig):
    """AHNS (Lai et al., AAAI 2024): the candidate whose score is closest to β (s(u, i+) + α)^(p+1), so a
    better-scored positive gets an easier negative (p < -1). Defaults: the authors' command for Amazon."""

    strategy: Literal["ahns"] = "ahns"
    candidates: int = Field(32, gt=0, description="M: uniform candidates per positive.")
    alpha: float = Field(1.0, description="α: shift of the positive score.")
    beta: float = Field(0.1, gt=0.0, description="β: scale of the target negative score.")
    p: int = Field(-2, description="p: the target is β (s+ + α)^(p+1); p < -1 makes it fall as s+ rises.")


NegativeSamplerConfig = Annotated[
    UniformSamplerConfig | DNSConfig | MixGCFConfig | DENSConfig | AHNSConfig, Field(discriminator="strategy")
]


class TrainConfig(BaseModel):
    """Hyper-parameters of one training run; frozen so a run's config cannot drift mid-run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding_size: int = Field(64, gt=0, description="Dimension of user and item embeddings (paper §4.1).")
    # MMRec grid-searches LightGCN over n_layers in {1, 2, 3, 4}; 3 is the depth the LightGCN
    # authors recommend and the middle of that grid. bench/cf_baselines.py re-selects it on
    # validation per dataset (see bench/results/cf_baselines.md).
    n_layers: int = Field(3, ge=0, description="LightGCN propagation layers L (eq. 6-7); 0 reduces it to MF.")
    # Weight of 0.5 * mean over the batch of the squared L2 norms of the ego (layer-0)
    # embeddings of user, positive and negative item — LightGCN's original regulariser, whose
    # authors use 1e-4 on every dataset; MMRec searches {1e-2 ... 1e-6} around it.
    reg_weight: float = Field(1e-4, ge=0.0, description="L2 weight on the batch's ego embeddings.")
    learning_rate: float = Field(1e-3, gt=0.0, description="Adam learning rate.")
    decay_epochs: int | None = Field(
        None, gt=0, description="Cosine decay: the learning rate falls from learning_rate to 0 along a half cosine "
        "over this many epochs, and the run ends there (the optimiser can change nothing after); None = constant.",
    )
    batch_size: int = Field(2048, gt=0, description="Training (user, pos, neg) triples per step.")
    epochs: int = Field(1000, gt=0, description="Maximum number of training epochs.")
    early_stop_patience: int = Field(
        20, gt=0, description="Stop after this many evaluations without a better stop_metric."
    )
    stop_metric: str = Field("recall@20", description="Validation metric for early stopping and model selection.")
    # One batch of scores is eval_batch_size x n_items float32. MMRec uses 4096; on CPU 512 was
    # 1.3x faster (cache-sized score blocks) with a 2.5-4x smaller memory peak (bench/results/cf_perf.md).
    eval_batch_size: int = Field(512, gt=0, description="Users scored per evaluation batch.")
    seed: int = Field(2024, ge=0, description="Seed of model init, shuffling and negative sampling.")
    topk: tuple[int, ...] = Field((10, 20), description="Cut-offs K of Recall@K and NDCG@K.")
    device: str = Field("cpu", description='"cpu", "cuda" or "cuda:<index>".')
    eval_every: int = Field(1, gt=0, description="Validate every this many epochs.")
    negative_sampler: NegativeSamplerConfig = Field(
        default_factory=UniformSamplerConfig,
        description="How each positive gets its negative: uniform, dns, mixgcf, dens or ahns (neggen_model/samplers).",
    )

    @field_validator("negative_sampler", mode="before")
    @classmethod
    def _strategy_name_alone(cls, value: Any) -> Any:
        """`negative_sampler: dns` means that strategy with its defaults."""
        return {"strategy": value} if isinstance(value, str) else value

    @model_serializer(mode="wrap")
    def _omit_uniform_sampler(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Run keys and checkpoints hash this dump: leaving the default out keeps every run trained
        # before samplers existed under its key.
        dumped = handler(self)
        if self.negative_sampler == UniformSamplerConfig():
            del dumped["negative_sampler"]
        if self.decay_epochs is None:  # likewise: runs before the schedule existed had a constant rate
            del dumped["decay_epochs"]
        return dumped

    @field_validator("topk")
    @classmethod
    def _topk_positive_sorted(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("topk must name at least one cut-off K")
        if any(k <= 0 for k in value):
            raise ValueError(f"every K in topk must be positive, got {value}")
        return tuple(sorted(set(value)))

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError(f'device must be "cpu", "cuda" or "cuda:<index>", got {value!r}')
        return value

    @field_validator("stop_metric")
    @classmethod
    def _metric_syntax(cls, value: str) -> str:
        if not _METRIC_RE.fullmatch(value):
            raise ValueError(f'stop_metric must look like "recall@20" or "ndcg@10", got {value!r}')
        return value

    @model_validator(mode="after")
    def _stop_metric_is_computed(self) -> TrainConfig:
        k = int(_METRIC_RE.fullmatch(self.stop_metric).group(2))
        if k not in self.topk:
            raise ValueError(f"stop_metric {self.stop_metric!r} needs K={k} in topk {self.topk}")
        return self


#: NegGen hyper-parameters a study may sweep (Fig. 7); each is a column of the metrics table.
SWEPT_PARAMETERS = ("score_weight", "counterfactual_weight", "align_weight", "temperature")

Modality = Literal["text", "visual"]
NegativeSource = Literal["generated", "direct", "uniform"]
#: "ranking": BPR of each positive against a sampled item the user did not take, with eq. 19 as an
#: auxiliary term (the default, see models/neggen.py); "paper": eq. 19 alone, as printed.
Objective = Literal["ranking", "paper"]
#: How an item's tokens become its content embedding: "linear" (a projection per token, summed)
#: or "attention" (self-attention over the tokens, mean, then the MLP of eq. 17-18).
Encoder = Literal["linear", "attention"]
#: Where an item's content embedding enters LightGCN: "input" (added to its layer-0 embedding, so
#: propagation carries it to neighbours and users) or "output" (added to its final embedding: the
#: printed score y = e_u·e_i + λ e_u·e_c).
ContentLayer = Literal["input", "output"]
#: Storage and matmul dtype of the precomputed content rows (frozen base, linear encoder at the input).
Precision = Literal["float32", "bfloat16"]


class NegGenConfig(BaseModel):
    """Hyper-parameters of the NegGen causal module (paper §3.3-3.4) and its ablation switches.

    Defaults are those of the shipped `neggen` (objective "ranking", chosen on validation: see
    models/neggen.py); the variant `neggen_paper` is the printed model with the authors' run
    command (λ = 0.4, α = 1e-2, τ = 0.2, frozen base).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    objective: Objective = Field(
        "ranking",
        description='"ranking": BPR against a sampled non-interacted item + β x eq. 19 + α x alignment; '
        '"paper": eq. 19 + α x alignment as printed (the variant neggen_paper).',
    )
    encoder: Encoder = Field(
        "linear",
        description='"linear": e_c(i) = sum over i\'s tokens of a projection per token; "attention": the paper\'s '
        "self-attention over the tokens, mean, MLP (eq. 13-18).",
    )
    content_layer: ContentLayer = Field(
        "input",
        description='"input": λ e_c(i) is added to item i\'s layer-0 embedding before propagation; "output": '
        "to its final embedding (the printed score).",
    )
    counterfactual_weight: float = Field(
        3.0, ge=0.0, description="β: weight of the counterfactual term (positive against itself with its generated "
        "attributes, eq. 12) in the ranking objective.",
    )
    content_bpr_weight: float = Field(
        3.0, ge=0.0, description="β_j: weight of the content-only BPR term of the ranking objective (the positive's "
        "own content against the sampled item's, through the same projection as the counterfactual term).",
    )
    learning_rate: float | None = Field(
        1e-2, gt=0.0, description="Adam learning rate of this stage; null = the base's (train.learning_rate). With a "
        "frozen base only the content projection trains, from 0; chosen on validation (README).",
    )
    decay_epochs: int | None = Field(
        None, gt=0, description="Cosine decay of this stage's learning rate to 0 over this many epochs (train.decay_epochs); "
        "null = constant. Beauty's config: 3e-2 decayed over 50 epochs, as good on validation as a constant 1e-2 in "
        "half the epochs; on the demo it lost (README).",
    )
    score_weight: float = Field(1.0, ge=0.0, description="λ: weight of the causal score e_u·e_c in y (and eq. 19).")
    align_weight: float = Field(0.0, ge=0.0, description="α: weight of the alignment loss (eq. 21).")
    temperature: float = Field(0.2, gt=0.0, description="τ: temperature of the alignment loss (eq. 20).")
    negatives: NegativeSource = Field(
        "generated",
        description='Negative of each item: "generated" (attribute masking + completion), "direct" '
        '(the Direct Generation prompt, §2.1) or "uniform" (a uniformly drawn other item: w/o NEG).',
    )
    causal: bool = Field(
        True, description="The causal part: eq. 12's counterfactual term (ranking) or self-attention and the "
        "difference e_t (paper, eq. 14-16); false = w/o CF.",
    )
    modalities: tuple[Modality, ...] = Field(("text", "visual"), description="Modality tokens used (Table 4).")
    finetune_base: bool = Field(
        False, description="Also train the LightGCN embeddings, from the base run (false: they stay as it left them)."
    )
    width: int = Field(64, gt=0, description="Width d of the modality tokens and the attention (eq. 13-14).")
    precision: Precision = Field(
        "float32", description='"bfloat16": the precomputed content rows (frozen base, linear encoder at the input) '
        "are stored and multiplied by the projection in bfloat16; the projection, its Adam state and every score stay "
        "float32. About 2x faster per epoch on CPUs with AVX512-BF16 or AMX, slower on those without (README).",
    )

    @field_validator("modalities")
    @classmethod
    def _modalities_set(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("modalities must name at least one of text, visual")
        return tuple(sorted(set(value)))

    @model_serializer(mode="wrap")
    def _omit_fields_at_their_old_meaning(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Run keys hash this dump: leaving out β_j at 0 (no such term), the learning rate at null (the
        # base's), the schedule at null (constant) and the precision at float32 keeps every run trained
        # before these fields existed under its key.
        dumped = handler(self)
        if self.content_bpr_weight == 0:
            del dumped["content_bpr_weight"]
        if self.learning_rate is None:
            del dumped["learning_rate"]
        if self.decay_epochs is None:
            del dumped["decay_epochs"]
        if self.precision == "float32":
            del dumped["precision"]
        return dumped

    @property
    def precomputable(self) -> bool:
        """Whether a batch needs only its own rows of LightGCN([0; X]) (models/neggen.py), on a
        base whose propagation is linear."""
        return self.encoder == "linear" and self.content_layer == "input" and not self.finetune_base

    def canonical(self) -> NegGenConfig:
        """The same training with every field it cannot depend on set to its default, so that
        configs that train the same model share one run (the stage keys runs by this)."""
        defaults, update = NegGenConfig(), {}
        if self.align_weight == 0:  # τ acts only through the alignment loss
            update["temperature"] = defaults.temperature
        if not self.precomputable:  # the precision is that of the precomputed rows only
            update["precision"] = defaults.precision
        if self.objective == "paper":  # β and β_j weigh terms of the ranking objective only
            update |= {"counterfactual_weight": defaults.counterfactual_weight, "content_bpr_weight": 0.0}
        elif self.encoder == "linear" and self.align_weight == 0 and (not self.causal or self.counterfactual_weight == 0):
            # No term reads a negative (w/o CF = w/o both = β 0): plain BPR on the content.
            update |= {"causal": False, "counterfactual_weight": defaults.counterfactual_weight,
                       "negatives": defaults.negatives}  # fmt: skip
        return self.model_copy(update=update)


#: The paper's ablations (Tables 4-5, §2.1, Fig. 6) as overrides of NegGenConfig, by the name
#: they carry in the metrics table. "neggen" is the full model (V&T in Table 4).
VARIANTS: dict[str, dict[str, object]] = {
    "neggen": {},
    # The printed model: eq. 19 and the paper's module on a frozen base, the authors' λ.
    "neggen_paper": {"objective": "paper", "encoder": "attention", "content_layer": "output", "score_weight": 0.4,
                     "align_weight": 1e-2,
                     "temperature": 0.2, "finetune_base": False, "learning_rate": None,
                     "decay_epochs": None},
    "wo_neg": {"negatives": "uniform"},
    "wo_cf": {"causal": False},
    "wo_both": {"negatives": "uniform", "causal": False},
    "visual_only": {"modalities": ("visual",)},
    "text_only": {"modalities": ("text",)},
    "direct": {"negatives": "direct"},
    "direct_wo_cf": {"negatives": "direct", "causal": False},
    "finetune": {"finetune_base": True},
}


def variant_config(base: NegGenConfig, variant: str) -> NegGenConfig:
    """base with the variant's switches applied (unknown variant: ValueError naming the known)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown NegGen variant {variant!r}; known: {list(VARIANTS)}")
    return base.model_copy(update=VARIANTS[variant])
