"""Training: it learns, it is reproducible bit for bit, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from neggen_model.checkpoint import load_model
from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.evaluate import evaluate
from neggen_model.models import build_model
from neggen_model.synthetic import clustered_interactions
from tests.interruption import Interrupted, crash_at
from neggen_model.trainer import STATE_JSON, Trainer


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_frame(
        clustered_interactions(n_users=400, n_items=200, n_clusters=4, per_user=10, affinity=0.5, seed=1)
    )


def small_config(**overrides) -> TrainConfig:
    values = dict(embedding_size=16, n_layers=2, batch_size=256, learning_rate=5e-3, epochs=8, seed=7)
    return TrainConfig(**(values | overrides))


def train(name: str, data: InteractionData, config: TrainConfig, checkpoint_dir=None):
    model = build_model(name, data, config)
    return model, Trainer(model, data, config, checkpoint_dir=checkpoint_dir, progress=False).fit()


def timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if not k.endswith("seconds")} for record in history]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_loss_decreases_and_recall_beats_random(name, data):
    config = small_config(epochs=25)
    model, result = train(name, data, config)
    losses = [record["loss"] for record in result.history]
    assert losses[-1] < 0.6 * losses[0]
    # A random ranking of the ~192 candidate items puts a valid item in the top 20 w.p. ~0.10.
    assert result.best_valid["recall@20"] > 0.3
    assert set(result.test) == {"mmrec", "strict"}
    assert result.best_valid == evaluate(model, data, "valid", topk=config.topk)  # model holds the best weights


def test_seeded_runs_are_bit_for_bit_identical(data):
    config = small_config(epochs=4)
    model_a, result_a = train("lightgcn", data, config)
    model_b, result_b = train("lightgcn", data, config)
    assert_same_weights(model_a, model_b)
    assert timeless(result_a.history) == timeless(result_b.history)
    assert result_a.test == result_b.test
    _, result_c = train("lightgcn", data, small_config(epochs=4, seed=8))
    assert timeless(result_c.history) != timeless(result_a.history)


@pytest.mark.parametrize("decay_epochs", [None, 6], ids=["constant", "cosine"])
def test_resume_after_interruption_equals_uninterrupted(data, tmp_path, monkeypatch, decay_epochs):
    # The best epoch comes early, so best weights, the patience count and the early stop itself
    # all cross the interruption after epoch 3 (so does the decaying learning rate).
    config = small_config(epochs=30, early_stop_patience=4, stop_metric="ndcg@10", decay_epochs=decay_epochs)
    model_full, result_full = train("lightgcn", data, config, tmp_path / "full")
    assert 4 < result_full.epochs_run < config.epochs

    run_epoch = crash_at(monkeypatch, 4)
    with pytest.raises(Interrupted):
        train("lightgcn", data, config, tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / STATE_JSON).read_text())["epoch"] == 3
    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)

    model_resumed, result_resumed = train("lightgcn", data, config, tmp_path / "resumed")
    assert_same_weights(model_full, model_resumed)
    assert timeless(result_full.history) == timeless(result_resumed.history)
    assert (result_full.best_epoch, result_full.best_valid, result_full.test, result_full.epochs_run) == (
        result_resumed.best_epoch,
        result_resumed.best_valid,
        result_resumed.test,
        result_resumed.epochs_run,
    )
    assert len(list((tmp_path / "resumed").glob("state-*.safetensors"))) == 1


def test_cosine_decay_runs_the_rate_down_to_zero(data):
    """decay_epochs: a half cosine from learning_rate to 0, then 0, so the weights stop moving."""
    config = small_config(decay_epochs=2)
    trainer = Trainer(build_model("lightgcn", data, config), data, config, progress=False)
    assert [trainer._learning_rate(epoch) for epoch in range(4)] == pytest.approx([5e-3, 2.5e-3, 0.0, 0.0])
    weights = []
    for _ in range(4):
        trainer._train_epoch()
        trainer._epoch += 1
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert all(torch.equal(weights[1][k], weights[3][k]) for k in weights[0])
    # The rate is 0 after decay_epochs, so nothing can improve: fit() ends there.
    result = Trainer(build_model("lightgcn", data, config), data, config, progress=False).fit()
    assert result.epochs_run == 2 and [r["epoch"] for r in result.history] == [1, 2]
    # A constant rate stays out of the hashed dump: runs trained before the schedule keep their keys.
    assert "decay_epochs" not in small_config().model_dump() and small_config(decay_epochs=2).model_dump()["decay_epochs"] == 2


def test_finished_run_is_returned_not_retrained_and_best_model_loads(data, tmp_path):
    config = small_config(epochs=3)
    model, result = train("bpr", data, config, tmp_path)
    again_model, again = train("bpr", data, config, tmp_path)
    assert again.test == result.test and again.history == result.history
    assert_same_weights(model, again_model)

    loaded, loaded_config = load_model(tmp_path, data)
    assert loaded_config == config
    assert_same_weights(model, loaded)


def test_resume_refuses_another_config(data, tmp_path):
    train("bpr", data, small_config(epochs=1), tmp_path)
    with pytest.raises(ValueError, match="reg_weight"):
        train("bpr", data, small_config(epochs=1, reg_weight=0.5), tmp_path)
    with pytest.raises(ValueError, match="holds a 'bpr' run"):
        train("lightgcn", data, small_config(epochs=1), tmp_path)


def test_validate_before_training_records_epoch_zero_and_can_keep_the_start(data, tmp_path):
    """A model flagged validate_before_training scores validation at epoch 0; when every update
    makes it worse, the run keeps the starting weights and says best epoch 0."""
    from neggen_model.models.lightgcn import LightGCN

    class WarmStarted(LightGCN):
        validate_before_training = True

    trained, _ = train("lightgcn", data, small_config(epochs=25))
    wrecking = small_config(epochs=5, learning_rate=1.0, early_stop_patience=3)
    model = WarmStarted(data, wrecking)
    model.load_state_dict(trained.state_dict())
    start = evaluate(model, data, "valid", topk=wrecking.topk)
    result = Trainer(model, data, wrecking, checkpoint_dir=tmp_path, progress=False).fit()
    assert result.history[0]["epoch"] == 0 and "loss" not in result.history[0]
    assert result.history[0]["valid_recall@20"] == start["recall@20"]
    assert [r["epoch"] for r in result.history] == list(range(len(result.history)))
    assert result.best_epoch == 0 and result.best_valid == start
    assert_same_weights(model, trained)
    # A resumed finished run reports the same history (epoch 0 is not scored twice).
    again = Trainer(WarmStarted(data, wrecking), data, wrecking, checkpoint_dir=tmp_path, progress=False).fit()
    assert timeless(again.history) == timeless(result.history)
