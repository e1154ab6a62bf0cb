"""Negative-sampling strategies (issue 12): never a training positive, reproducible, as hard as
designed, bad hyper-parameters named, and a LightGCN that resumes bit for bit with each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent
from neggen_model.data import InteractionData
from neggen_model import sampling
from neggen_model.models import build_model
from neggen_model.samplers import SAMPLERS, build_sampler
from neggen_model.sampling import UniformNegativeSampler
from neggen_model.synthetic import clustered_interactions
from tests.interruption import Interrupted, crash_at
from neggen_model.trainer import STATE_JSON, Trainer
from pipeline.config import ConfigError, load_config
from pipeline.training import content_key, run_key

STRATEGIES = list(SAMPLERS)
HARD = [s for s in STRATEGIES if s != "uniform"]


@pytest.fixture(scope="module")
def data() -> InteractionData:
    # Dense enough (10 of 40 items per user, 8 in training) that candidates often hit positives.
    frame = clustered_interactions(n_users=150, n_items=40, n_clusters=4, per_user=10, affinity=0.6, seed=3)
    return InteractionData.from_frame(frame)


def small_config(strategy: str | dict = "uniform", **overrides) -> TrainConfig:
    values = dict(embedding_size=16, n_layers=2, batch_size=128, learning_rate=1e-2, epochs=5, seed=11)
    return TrainConfig(**(values | overrides), negative_sampler=strategy)


@pytest.fixture(scope="module")
def trained(data) -> torch.nn.Module:
    """A LightGCN trained with uniform negatives, so that scores mean something."""
    config = small_config(epochs=30)
    model = build_model("lightgcn", data, config)
    Trainer(model, data, config, progress=False).fit()
    return model.eval()


def batch_negatives(sampler, model, data, epoch: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every training pair's (user, positive) and the items the strategy picks for it."""
    users, pos = data.train_pairs()
    drawn = sampler.draw(users, epoch)
    tensors = [torch.from_numpy(a) for a in (users, pos, *drawn)]
    return users, pos, sampler.negatives(model, *tensors).numpy()


def scores(model, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """score(u, i) for every users[b] and each column of items[b]."""
    with torch.no_grad():
        user_all, item_all = model.final_embeddings()
        return (user_all[users].unsqueeze(1) * item_all[torch.from_numpy(items)]).sum(-1).numpy()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_never_returns_a_training_positive(strategy, data, trained):
    train = data.train.toarray().astype(bool)
    for seed in range(3):
        sampler = build_sampler(small_config(strategy), data.train, seed)
        users, _, negatives = batch_negatives(sampler, trained, data)
        assert negatives.dtype == np.int64 and len(negatives) == len(users)
        assert not train[users[:, None], negatives].any()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_draws_and_state_round_trip(strategy, data, trained):
    config = small_config(strategy)
    first, second = build_sampler(config, data.train, 42), build_sampler(config, data.train, 42)
    picks = batch_negatives(first, trained, data)[2]
    np.testing.assert_array_equal(picks, batch_negatives(second, trained, data)[2])
    assert not np.array_equal(picks, batch_negatives(build_sampler(config, data.train, 43), trained, data)[2])
    state = first.get_state()
    expected = batch_negatives(first, trained, data)[2]
    second.set_state(state)
    np.testing.assert_array_equal(batch_negatives(second, trained, data)[2], expected)


@pytest.mark.parametrize("strategy", ["dns", "mixgcf", "dens"])
def test_hard_strategies_pick_higher_scored_items_than_uniform(strategy, data, trained):
    """DNS and MixGCF take the best-scored of their candidates (MixGCF per layer); DENS starts
    (epoch 0) from the candidates best scored on their irrelevant factors, about half of each."""
    uniform = build_sampler(small_config(), data.train, 0)
    users, _, uniform_negatives = batch_negatives(uniform, trained, data)
    hard = build_sampler(small_config(strategy), data.train, 0)
    _, _, hard_negatives = batch_negatives(hard, trained, data)
    uniform_mean, hard_mean = scores(trained, users, uniform_negatives).mean(), scores(trained, users, hard_negatives).mean()
    all_scores = scores(trained, users, np.tile(np.arange(data.n_items), (len(users), 1)))
    assert hard_mean > uniform_mean + 0.25 * all_scores.std()


def test_dns_with_more_candidates_is_harder_and_n_hardest_are_the_top(data, trained):
    users, _, few = batch_negatives(build_sampler(small_config({"strategy": "dns", "candidates": 2}), data.train, 0), trained, data)
    _, _, many = batch_negatives(build_sampler(small_config({"strategy": "dns", "candidates": 16}), data.train, 0), trained, data)
    assert scores(trained, users, many).mean() > scores(trained, users, few).mean()
    sampler = build_sampler(small_config({"strategy": "dns", "candidates": 8, "hardest": 3}), data.train, 0)
    users, pos = data.train_pairs()
    (candidates,) = sampler.draw(users, 0)
    hardest = sampler.negatives(trained, torch.from_numpy(users), torch.from_numpy(pos), torch.from_numpy(candidates)).numpy()
    candidate_scores = np.sort(scores(trained, users, candidates), axis=1)[:, ::-1]
    np.testing.assert_allclose(np.sort(scores(trained, users, hardest), axis=1)[:, ::-1], candidate_scores[:, :3], rtol=1e-5)


def test_ahns_gives_well_scored_positives_easier_negatives(data, trained):
    """p < -1: the target β (s+ + α)^(p+1) falls as the positive's score rises, and so do the picks."""
    config = small_config({"strategy": "ahns", "alpha": 1.0, "beta": 1.0, "p": -2})
    users, pos, negatives = batch_negatives(build_sampler(config, data.train, 0), trained, data)
    positive = scores(trained, users, pos[:, None])[:, 0]
    negative = scores(trained, users, negatives)[:, 0]
    low, high = positive < np.quantile(positive, 0.25), positive > np.quantile(positive, 0.75)
    assert negative[high].mean() < negative[low].mean()
    target = 1.0 / (positive + 1.0)
    uniform_negatives = batch_negatives(build_sampler(small_config(), data.train, 0), trained, data)[2]
    assert np.abs(negative - target).mean() < np.abs(scores(trained, users, uniform_negatives)[:, 0] - target).mean()


@pytest.mark.parametrize(
    ("sampler", "needle"),
    [
        ({"strategy": "dns", "candidates": 0}, "negative_sampler.dns.candidates"),
        ({"strategy": "dns", "candidates": 4, "hardest": 5}, "hardest (N = 5) must not exceed candidates (M = 4)"),
        ({"strategy": "ahns", "beta": -1}, "negative_sampler.ahns.beta"),
        ({"strategy": "ahns", "p": 0.5}, "negative_sampler.ahns.p"),
        ({"strategy": "mixgcf", "n_negs": 16}, "negative_sampler.mixgcf.n_negs"),
        ({"strategy": "dens", "warmup_epochs": 0}, "negative_sampler.dens.warmup_epochs"),
        ({"strategy": "hardest"}, "does not match any of the expected tags: 'uniform', 'dns', 'mixgcf', 'dens', 'ahns'"),
    ],
)
def test_bad_hyper_parameters_name_the_key(sampler, needle):
    with pytest.raises(ValidationError) as err:
        TrainConfig(negative_sampler=sampler)
    assert needle in str(err.value).replace("\n  ", ": ").replace("\n", " ")


def test_yaml_train_block_chooses_the_strategy_and_errors_name_the_key(tmp_path):
    path = tmp_path / "neggen.yaml"
    path.write_text(
        "train: {negative_sampler: dns}\n"
        "datasets:\n"
        "  toy: {format: mmrec, path: x, train: {negative_sampler: {strategy: ahns, alpha: 0.5}}}\n"
        "  other: {format: mmrec, path: y}\n"
    )
    config = load_config(path)
    assert config.train_config("other").negative_sampler.model_dump() == {"strategy": "dns", "candidates": 32, "hardest": 1}
    assert config.train_config("toy").negative_sampler.model_dump() == {"strategy": "ahns", "candidates": 32, "alpha": 0.5,
                                                                          "beta": 0.1, "p": -2}  # fmt: skip
    path.write_text("datasets:\n  toy: {format: mmrec, path: x, train: {negative_sampler: {strategy: ahns, beta: 0}}}\n")
    with pytest.raises(ConfigError, match=r"datasets\.toy\.train\.negative_sampler\.ahns\.beta: Input should be greater than 0"):
        load_config(path).train_config("toy")
    path.write_text("train: {negative_sampler: {strategy: dns, hardest: 0}}\n")
    with pytest.raises(ConfigError, match=r"train\.negative_sampler\.dns\.hardest: Input should be greater than 0"):
        load_config(path)


def test_default_run_key_is_unchanged_and_strategies_get_their_own(data):
    default = TrainConfig()
    assert "negative_sampler" not in default.model_dump(mode="json")
    before_samplers = {name: value for name, value in json.loads(default.model_dump_json()).items()}
    assert run_key("lightgcn", default, data) == content_key(
        {"model": "lightgcn", "config": before_samplers, "train": data.train_fingerprint()}
    )
    assert run_key("lightgcn", TrainConfig(negative_sampler="uniform"), data) == run_key("lightgcn", default, data)
    keys = {run_key("lightgcn", TrainConfig(negative_sampler=s), data) for s in STRATEGIES}
    keys.add(run_key("lightgcn", TrainConfig(negative_sampler={"strategy": "dns", "hardest": 2}), data))
    assert len(keys) == len(STRATEGIES) + 1


def timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if not k.endswith("seconds")} for record in history]


@pytest.mark.parametrize("model_name", ["lightgcn", "bpr"])
@pytest.mark.parametrize("strategy", HARD)
def test_training_with_each_strategy_resumes_bit_for_bit(strategy, model_name, data, tmp_path, monkeypatch):
    config = small_config(strategy, epochs=4)
    full = build_model(model_name, data, config)
    result_full = Trainer(full, data, config, checkpoint_dir=tmp_path / "full", progress=False).fit()
    assert all(np.isfinite(r["loss"]) for r in result_full.history)

    run_epoch = crash_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        Trainer(build_model(model_name, data, config), data, config, checkpoint_dir=tmp_path / "resumed", progress=False).fit()
    assert json.loads((tmp_path / "resumed" / STATE_JSON).read_text())["epoch"] == 2
    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)

    resumed = build_model(model_name, data, config)
    trainer = Trainer(resumed, data, config, checkpoint_dir=tmp_path / "resumed", progress=False)
    result_resumed = trainer.fit()
    for (name, x), (_, y) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert timeless(result_full.history) == timeless(result_resumed.history)
    assert result_full.test == result_resumed.test
    if strategy == "dens":  # its gates train with the model and resume from the checkpoint too
        assert len(list(trainer.sampler.parameters())) == 8


def test_hard_strategies_refuse_models_they_cannot_train(data):
    content = ItemContent(text=np.random.default_rng(0).normal(size=(data.n_items, 8)).astype(np.float32))
    config = small_config("dns")
    vbpr = build_model("vbpr", data, config, content=content)
    with pytest.raises(ValueError, match="negative_sampler 'dns' trains the collaborative recommenders"):
        Trainer(vbpr, data, config, progress=False)


def test_membership_bits_and_binary_search_agree(data, monkeypatch):
    """Small data reads membership from a bit per (user, item), large data from the sorted pairs:
    the draws are the same either way."""
    users = np.repeat(np.arange(data.n_users), 50)
    with_bits = UniformNegativeSampler(data.train, 5)
    monkeypatch.setattr(sampling, "BITSET_MAX_BYTES", 0)
    with_search = UniformNegativeSampler(data.train, 5)
    assert with_bits._bits is not None and with_search._bits is None
    np.testing.assert_array_equal(with_bits.sample(users), with_search.sample(users))
