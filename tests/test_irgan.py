"""IRGAN on tiny synthetic data: the generator draws items from its softmax, reproducibly under a
seed; G and D start from the BPR-MF pre-training, which the pipeline trains once and reuses; the
adversarial game learns; bad hyper-parameters name the key; a resumed run is the uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.evaluate import evaluate
from neggen_model.models import build_model
from neggen_model.synthetic import clustered_interactions
from neggen_model.trainer import STATE_JSON, Trainer
from pipeline.baselines import irgan_pretraining, run_baselines
from pipeline.config import BaselinesConfig, ConfigError, load_config
from pipeline.storage import DatasetStore
from pipeline.tables import BASELINES as STAGE
from pipeline.tables import TEXT_EMBEDDINGS as TEXT_STAGE
from tests.interruption import Interrupted, crash_at

FROM_SCRATCH = {"pretrain": "none"}


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_frame(
        clustered_interactions(n_users=120, n_items=60, n_clusters=4, per_user=10, affinity=0.6, seed=3)
    )


def config(**overrides) -> TrainConfig:
    values = dict(embedding_size=16, batch_size=256, learning_rate=1e-2, epochs=4, early_stop_patience=50, seed=11)
    return TrainConfig(**(values | overrides))


@pytest.fixture(scope="module")
def bpr(data):
    """A short BPR-MF run: the pre-training IRGAN starts from."""
    cfg = config(epochs=3)
    model = build_model("bpr", data, cfg)
    Trainer(model, data, cfg, progress=False).fit()
    return model


def fit(data, cfg, params, pretrained=None, checkpoint_dir=None):
    model = build_model("irgan", data, cfg, params=params, pretrained=pretrained)
    return model, Trainer(model, data, cfg, checkpoint_dir=checkpoint_dir, progress=False).fit()


def timeless(history):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


def test_generator_draws_valid_items_from_its_softmax_reproducibly(data):
    model = build_model("irgan", data, config(), params=FROM_SCRATCH)
    user = torch.tensor([5])
    draws = model.sample_items(user, 20_000, torch.Generator().manual_seed(0), temperature=0.2)[0]
    assert draws.dtype == torch.int64 and 0 <= int(draws.min()) and int(draws.max()) < data.n_items
    with torch.no_grad():
        expected = torch.softmax(model.generator_logits(user)[0] / 0.2, dim=0)
    frequency = torch.bincount(draws, minlength=data.n_items).double() / len(draws)
    # Each item's share within 5 binomial standard deviations of its softmax probability ...
    tolerance = 5 * (expected * (1 - expected) / len(draws)).sqrt() + 1e-4
    assert ((frequency - expected).abs() <= tolerance).all()
    # ... so the items G scores highest are drawn most often.
    top, bottom = expected.argsort()[-5:], expected.argsort()[:5]
    assert frequency[top].sum() > 3 * frequency[bottom].sum()
    batch = torch.arange(40)
    again = [model.sample_items(batch, 3, torch.Generator().manual_seed(seed)) for seed in (7, 7, 8)]
    assert torch.equal(again[0], again[1]) and not torch.equal(again[0], again[2])


def test_generator_update_moves_mass_towards_what_the_discriminator_rewards(data):
    """One REINFORCE step on G alone raises p(i | u) of the items D scores highest for u."""
    cfg = config(learning_rate=0.05)
    model = build_model("irgan", data, cfg, params=FROM_SCRATCH)
    users = torch.arange(data.n_users).repeat_interleave(4)
    every_item = torch.arange(data.n_items).expand(data.n_users, -1)
    liked = model.reward(torch.arange(data.n_users), every_item).argsort(dim=1)[:, -10:]
    with torch.no_grad():
        before = torch.softmax(model.generator_logits(torch.arange(data.n_users)), 1).gather(1, liked).sum()
    optimizer = torch.optim.Adam(model.generator.parameters(), lr=cfg.learning_rate)
    model.generator_loss(users, torch.Generator().manual_seed(0)).backward()
    optimizer.step()
    with torch.no_grad():
        after = torch.softmax(model.generator_logits(torch.arange(data.n_users)), 1).gather(1, liked).sum()
    assert after > before


def test_generator_and_discriminator_start_from_the_pretraining(data, bpr):
    cfg = config()
    model = build_model("irgan", data, cfg, pretrained=bpr)
    for player in (model.generator, model.discriminator):
        for (name, start), (_, trained) in zip(player.state_dict().items(), bpr.state_dict().items(), strict=True):
            assert torch.equal(start, trained), name
    # Epoch 0 of the run is the pre-trained model, as the evaluator scores it.
    _, result = fit(data, config(epochs=1), None, pretrained=bpr)
    assert result.history[0]["valid_recall@20"] == evaluate(bpr, data, "valid", topk=cfg.topk)["recall@20"]
    with pytest.raises(ValueError, match="pretrain: 'bpr' needs the trained BPR-MF model, got NoneType"):
        build_model("irgan", data, cfg)
    with pytest.raises(ValueError, match="pretrain: 'none' starts from Xavier and takes no pretrained model"):
        build_model("irgan", data, cfg, params=FROM_SCRATCH, pretrained=bpr)


def test_pipeline_trains_the_pretraining_once_and_keys_it(data, tmp_path):
    store = DatasetStore(tmp_path, "toy")
    params = build_model("irgan", data, config(), params=FROM_SCRATCH).Params(pretrain_epochs=2)
    first = irgan_pretraining(store, params, config(), data)
    stamp = (first.run_dir / STATE_JSON).stat().st_mtime_ns
    again = irgan_pretraining(store, params, config(), data)
    assert again.run_dir == first.run_dir and (again.run_dir / STATE_JSON).stat().st_mtime_ns == stamp
    assert first.run_dir.name.startswith("bpr-") and first.result.epochs_run == 2
    other = irgan_pretraining(store, params.model_copy(update={"pretrain_epochs": 1}), config(), data)
    assert other.run_dir != first.run_dir
    assert irgan_pretraining(store, params.model_copy(update={"pretrain": "none", "pretrain_epochs": None}), config(), data) is None


def test_the_game_learns_from_scratch(data):
    """From Xavier (no pre-training), the generator's validation recall rises far above the
    untrained model's (epoch 0 of the same run); 10 of 60 items per user, so random is about 1/3."""
    model, result = fit(data, config(epochs=25), FROM_SCRATCH)
    untrained = result.history[0]["valid_recall@20"]
    assert result.best_epoch > 0 and result.best_valid["recall@20"] > untrained + 0.3
    assert {"discriminator_loss", "generator_loss"} <= set(result.history[1])
    # Ranking is the generator's unless the params choose the discriminator.
    assert all(torch.equal(a, b) for a, b in zip(model.final_embeddings(), model.generator.final_embeddings()))
    by_d = build_model("irgan", data, config(), params=FROM_SCRATCH | {"rank_by": "discriminator"})
    by_d.discriminator.load_state_dict(model.discriminator.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(by_d.final_embeddings(), model.discriminator.final_embeddings()))


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"temperature": 0}, "irgan params: temperature: Input should be greater than 0"),
        ({"sample_lambda": 1.0}, "irgan params: sample_lambda: Input should be less than 1"),
        ({"pretrain": "mf"}, "irgan params: pretrain: Input should be 'bpr' or 'none'"),
        ({"pretrain": "none", "pretrain_epochs": 5}, "irgan params: pretrain_epochs: Value error, 5 epochs of pre-training given, but pretrain is 'none'"),
        ({"reward": "log"}, "irgan params: reward: Input should be 'sigmoid' or 'softplus'"),
        ({"tempreature": 0.2}, "irgan params: tempreature: Extra inputs are not permitted"),
    ],
)
def test_bad_hyper_parameters_name_the_key(data, params, needle):
    with pytest.raises(ValueError) as err:
        build_model("irgan", data, config(), params=params)
    assert needle in str(err.value)


def test_chosen_in_neggen_yaml_with_errors_naming_the_key(tmp_path):
    path = tmp_path / "neggen.yaml"
    path.write_text("datasets:\n  demo:\n    format: demo\n    baselines: {models: [irgan], params: {irgan: {pretrain_epochs: 50}}}\n")
    chosen = load_config(path).baselines_config("demo")
    assert chosen.models == ("irgan",) and chosen.params["irgan"] == {"pretrain_epochs": 50}
    path.write_text("datasets:\n  demo:\n    format: demo\n    baselines: {models: [irgan], params: {irgan: {sample_lambda: -1}}}\n")
    with pytest.raises(ConfigError, match=r"datasets\.demo\.baselines.*params\.irgan: irgan params: sample_lambda"):
        load_config(path).baselines_config("demo")


def test_resumed_run_equals_uninterrupted(data, bpr, tmp_path, monkeypatch):
    """G's draws come from the trainer's checkpointed model generator, through begin_epoch."""
    cfg = config(epochs=5)
    model_full, full = fit(data, cfg, None, bpr, tmp_path / "full")
    run_epoch = crash_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        fit(data, cfg, None, bpr, tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / STATE_JSON).read_text())["epoch"] == 2
    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)
    model_resumed, resumed = fit(data, cfg, None, bpr, tmp_path / "resumed")
    for (name, x), (_, y) in zip(model_full.state_dict().items(), model_resumed.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert timeless(full.history) == timeless(resumed.history) and full.test == resumed.test
    _, other_seed = fit(data, config(epochs=5, seed=12), None, bpr)
    assert timeless(other_seed.history) != timeless(full.history)


def test_baselines_stage_trains_irgan_on_its_pretraining_and_reuses_both(data, tmp_path):
    """`baselines: {models: [irgan]}` end to end on a tiny store: one BPR-MF pre-training run and one
    IRGAN run keyed by it; a second pass trains nothing; another pre-training is another IRGAN run."""
    store = DatasetStore(tmp_path, "toy")
    store.write("interactions", clustered_interactions(n_users=120, n_items=60, n_clusters=4, per_user=10, affinity=0.6, seed=3))
    vectors = np.random.default_rng(0).normal(size=(data.n_items, 4)).astype(np.float32)
    store.write(TEXT_STAGE, pa.table({"item_id": np.arange(data.n_items), "field": ["title"] * data.n_items,
                                      "modality": ["text"] * data.n_items, "version": ["original"] * data.n_items,
                                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 4)}))  # fmt: skip

    def stage(epochs: int):
        chosen = BaselinesConfig(models=("irgan",), seeds=(11,), params={"irgan": {"pretrain_epochs": epochs}}, workers=1)
        result = run_baselines(store, chosen, config(epochs=2))
        return result, sorted(p.name for p in store.folder(STAGE).iterdir() if p.is_dir())

    first, runs = stage(epochs=2)
    assert [r.split("-")[0] for r in runs] == ["bpr", "irgan"] and set(first.metrics.model) == {"irgan"}
    stamps = [(store.folder(STAGE) / run / STATE_JSON).stat().st_mtime_ns for run in runs]
    again, same_runs = stage(epochs=2)
    assert same_runs == runs and again.metrics.value.tolist() == first.metrics.value.tolist()
    assert [(store.folder(STAGE) / run / STATE_JSON).stat().st_mtime_ns for run in runs] == stamps
    _, more_runs = stage(epochs=1)
    assert [r.split("-")[0] for r in more_runs] == ["bpr", "bpr", "irgan", "irgan"]
