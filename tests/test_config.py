"""Config loading: defaults, validation errors that name the key, path resolution."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config


def test_defaults_register_demo_and_paper_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEGGEN_HOME", raising=False)
    monkeypatch.delenv("NEGGEN_CONFIG", raising=False)
    config = load_config()
    assert list(config.datasets) == ["demo"]
    assert config.home == tmp_path / "neggen_home"
    assert (config.train.embedding_size, config.train.batch_size, config.train.early_stop_patience) == (64, 2048, 20)


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("NEGGEN_HOME", raising=False)
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "my.yaml"
    path.write_text("home: out\ndatasets:\n  toy: {format: mmrec, path: ../data/toy, kcore: 3}\n")
    config = load_config(path)
    assert config.home == tmp_path / "conf" / "out"
    assert config.dataset("toy").path == tmp_path / "data" / "toy"
    assert config.dataset("toy").kcore == 3
    monkeypatch.setenv("NEGGEN_HOME", str(tmp_path / "elsewhere"))
    assert load_config(path).home == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("datasets:\n  toy: {fromat: mmrec, path: x}\n", "datasets.toy.fromat: Extra inputs are not permitted"),
        ("datasets:\n  toy: {format: parquet, path: x}\n", "datasets.toy.format: Input should be 'mmrec', 'amazon2014', 'recbole' or 'demo'"),
        ("datasets:\n  toy: {format: mmrec}\n", "format `mmrec` needs `path`"),
        ("datasets:\n  toy: {format: mmrec, path: x, kcore: 0}\n", "datasets.toy.kcore: Input should be greater than or equal to 1"),
        ("train: {batch_size: -1}\n", "train.batch_size"),
        ("homme: x\n", "homme: Extra inputs are not permitted"),
        ("datasets: [1, 2\n", "cannot read config"),
        ("- just a list\n", "the top level must be a mapping"),
    ],
)
def test_invalid_config_names_the_bad_key(tmp_path, text, needle):
    path = tmp_path / "neggen.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_dataset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    path = tmp_path / "neggen.yaml"
    path.write_text("{}\n")
    with pytest.raises(ConfigError, match="unknown dataset 'bbay'; registered: demo"):
        load_config(path).dataset("bbay")


def test_per_dataset_training_overrides_are_validated(tmp_path):
    path = tmp_path / "neggen.yaml"
    path.write_text("datasets:\n  toy: {format: mmrec, path: x, train: {n_layers: 2, lr: 1}}\n")
    with pytest.raises(ConfigError, match="datasets.toy.train.lr: Extra inputs are not permitted"):
        load_config(path).train_config("toy")
    path.write_text("datasets:\n  toy: {format: mmrec, path: x, train: {n_layers: 2}}\n")
    assert load_config(path).train_config("toy").n_layers == 2
