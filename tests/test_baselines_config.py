"""The `baselines:` block of neggen.yaml: typed, validated, per-dataset overrides, errors naming the key."""

from __future__ import annotations

import pytest

from neggen_model.config import AHNSConfig, DNSConfig, UniformSamplerConfig
from neggen_model.models import BASELINES, FREEDOM
from pipeline.baselines import grid_points
from pipeline.config import BaselinesConfig, ConfigError, load_config


def write(tmp_path, text: str):
    path = tmp_path / "neggen.yaml"
    path.write_text(text)
    return load_config(path)


def test_defaults_are_vbpr_and_freedom_over_three_seeds_with_the_models_grids(tmp_path):
    config = write(tmp_path, "{}\n").baselines_config("demo")
    assert config.models == ("vbpr", "freedom") and config.seeds == (2024, 2025, 2026)
    points = grid_points("freedom", config)
    assert len(points) == 8 and {(p["dropout"], p["reg_weight"]) for p in points} >= {(0.8, 0.0), (0.9, 1e-3)}
    assert all(p["knn_k"] == 10 for p in points)


def test_per_dataset_overrides_merge_and_fix_params(tmp_path):
    config = write(
        tmp_path,
        "baselines: {models: [freedom], params: {freedom: {knn_k: 5}}}\n"
        "datasets:\n  demo:\n    format: demo\n    baselines: {grid: {freedom: {dropout: [0.9]}}, seeds: [1]}\n",
    )
    demo = config.baselines_config("demo")
    assert demo.models == ("freedom",) and demo.seeds == (1,)
    assert grid_points("freedom", demo) == [FREEDOM.Params(knn_k=5, dropout=0.9).model_dump(mode="json")]
    no_search = BaselinesConfig(grid={"vbpr": {}})
    assert len(grid_points("vbpr", no_search)) == 1


@pytest.mark.parametrize(
    "block, needle",
    [
        ("{models: [vbpr, dragonn]}", "datasets.demo.baselines.models: Value error, unknown baselines ['dragonn']"),
        ("{grid: {freedom: {dropuot: [0.8]}}}", "grid.freedom.dropuot: unknown parameter"),
        ("{grid: {freedom: {dropout: [1.5]}}}", "grid.freedom.dropout: 1.5 is invalid"),
        ("{params: {vbpr: {reg_weight: -1}}}", "params.vbpr: vbpr params: reg_weight"),
        ("{params: {mmgcnn: {}}}", "params.mmgcnn: unknown baseline"),
        ("{grid: {dragon: {reg_weight: [-1]}}}", "grid.dragon.reg_weight: -1 is invalid"),
        ("{params: {diffmm: {contrast: both}}}", "params.diffmm: diffmm params: contrast: Input should be 'modalities' or 'main'"),
        ("{params: {diffmm: {noise_min: 0.5, noise_max: 0.1}}}", "diffmm params: noise_max: Value error, 0.1 is below noise_min 0.5"),
        ("{params: {lightgcn_dns: {candidates: 0}}}", "params.lightgcn_dns: lightgcn_dns params: candidates: Input should be greater than 0"),
        ("{params: {lightgcn_dns: {candidates: 4, hardest: 5}}}", "params.lightgcn_dns: lightgcn_dns params: Value error, hardest (N = 5) must not exceed candidates (M = 4)"),
        ("{params: {lightgcn_ahns: {betta: 0.5}}}", "params.lightgcn_ahns.betta: unknown parameter; lightgcn_ahns has ['alpha', 'beta'"),
        ("{params: {lightgcn_mixgcf: {strategy: dns}}}", "params.lightgcn_mixgcf: lightgcn_mixgcf params: strategy: Input should be 'mixgcf'"),
        ("{grid: {lightgcn_dens: {gate_weight: [0.1, -1]}}}", "grid.lightgcn_dens.gate_weight: -1 is invalid (lightgcn_dens params: gate_weight"),
        ("{models: [lightgcn_uniform]}", "unknown baselines ['lightgcn_uniform']"),
        ("{seeds: [1, 1]}", "datasets.demo.baselines.seeds"),
        ("{modells: [vbpr]}", "datasets.demo.baselines.modells: Extra inputs are not permitted"),
    ],
)
def test_invalid_baselines_config_names_the_key(tmp_path, block, needle):
    config = write(tmp_path, f"datasets:\n  demo:\n    format: demo\n    baselines: {block}\n")
    with pytest.raises(ConfigError) as err:
        config.baselines_config("demo")
    assert needle in str(err.value)


def test_global_block_is_validated_when_the_file_is_read(tmp_path):
    with pytest.raises(ConfigError, match="baselines.models"):
        write(tmp_path, "baselines: {models: [nope]}\n")


def test_sampler_baselines_take_the_samplers_params_and_grid(tmp_path):
    """lightgcn_<strategy>'s params are that sampler's config; a grid searches them like any baseline's."""
    config = write(tmp_path, "baselines: {models: [lightgcn_dns, lightgcn_ahns], params: {lightgcn_dns: {candidates: 64}},"
                             " grid: {lightgcn_dns: {hardest: [1, 2]}}}\n").baselines_config("demo")
    assert grid_points("lightgcn_dns", config) == [DNSConfig(candidates=64, hardest=n).model_dump(mode="json") for n in (1, 2)]
    assert grid_points("lightgcn_ahns", config) == [AHNSConfig().model_dump(mode="json")]
    assert BASELINES["lightgcn_dns"].negative_sampler(grid_points("lightgcn_dns", config)[1]) == DNSConfig(candidates=64, hardest=2)
    # The content models and IRGAN train on uniform negatives, whatever `train.negative_sampler` says.
    assert BASELINES["irgan"].negative_sampler() == BASELINES["vbpr"].negative_sampler() == UniformSamplerConfig()
