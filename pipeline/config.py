"""Typed configuration: `neggen.yaml` (or `--config PATH`), validated at the edge.

Layers, lowest first: built-in defaults (the paper's), the config file, environment
(`NEGGEN_HOME`). The built-in `demo` dataset is always registered; a file may override it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neggen_model.config import TrainConfig
from pipeline.demo import DemoConfig
from pipeline.llm.config import GenerationConfig

CONFIG_FILENAME = "neggen.yaml"
CONFIG_ENV = "NEGGEN_CONFIG"
HOME_ENV = "NEGGEN_HOME"
DEFAULT_HOME = "neggen_home"


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class NeggenConfig(_Strict):
    home: Path = Field(default=Path(DEFAULT_HOME), description="Where every stage writes.")
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)

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

    def train_config(self, dataset: str) -> TrainConfig:
        """The global training config with the dataset's overrides applied and validated."""
        overrides = self.dataset(dataset).train or {}
        try:
            return TrainConfig.model_validate({**self.train.model_dump(), **overrides})
        except ValidationError as err:
            raise ConfigError(_describe(err, prefix=f"datasets.{dataset}.train")) from None


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
    return config
