"""device="cuda": the same training and evaluation as on CPU, up to floating-point rounding, for the
recommenders and every baseline of Table 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent
from neggen_model.data import InteractionData
from neggen_model.evaluate import evaluate
from neggen_model.models import BASELINES, build_model
from neggen_model.synthetic import clustered_interactions
from neggen_model.trainer import Trainer
from pipeline.baselines import baseline_train_config, build_baseline, starts_from_pretraining

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_frame(clustered_interactions(n_users=400, n_items=200, n_clusters=4, seed=1))


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_cuda_training_tracks_cpu_training(name, data, tmp_path):
    results = {}
    for device in ("cpu", "cuda"):
        config = TrainConfig(embedding_size=16, n_layers=2, batch_size=256, learning_rate=5e-3, epochs=5, device=device)
        model = build_model(name, data, config)
        results[device] = Trainer(model, data, config, checkpoint_dir=tmp_path / device, progress=False).fit()
    cpu_losses = [h["loss"] for h in results["cpu"].history]
    cuda_losses = [h["loss"] for h in results["cuda"].history]
    assert cuda_losses == pytest.approx(cpu_losses, rel=1e-3)
    assert results["cuda"].best_valid["recall@20"] == pytest.approx(results["cpu"].best_valid["recall@20"], abs=0.02)


def test_cuda_evaluation_equals_cpu_evaluation_for_the_same_weights(data):
    config = TrainConfig(embedding_size=16, n_layers=2)
    model = build_model("lightgcn", data, config)
    cpu = {mode: evaluate(model, data, "test", mode=mode) for mode in ("mmrec", "strict")}
    model = model.to("cuda")
    cuda = {mode: evaluate(model, data, "test", mode=mode) for mode in ("mmrec", "strict")}
    for mode in cpu:
        assert cuda[mode] == pytest.approx(cpu[mode], abs=1e-3)


@pytest.mark.parametrize("model", sorted(BASELINES))
def test_every_baseline_trains_on_cuda_as_on_cpu(model, data):
    """Each baseline of Table 2 on cuda: the same losses as on the CPU up to rounding, since every model
    draws its masks and noise on a CPU generator and moves them (IRGAN draws on its device's own
    generator, so its cuda run only has to learn)."""
    content = ItemContent(text=np.random.default_rng(0).normal(size=(data.n_items, 8)).astype(np.float32))
    losses = {}
    for device in ("cpu", "cuda"):
        config = baseline_train_config(model, {}, TrainConfig(embedding_size=16, batch_size=256, epochs=3, device=device))
        pretrained = None
        if starts_from_pretraining(model):  # IRGAN starts from BPR-MF
            pretrained = build_model("bpr", data, config.model_copy(update={"epochs": 2}))
            Trainer(pretrained, data, config.model_copy(update={"epochs": 2}), progress=False).fit()
        instance = build_baseline(model, {}, config, data, content, pretrained)
        result = Trainer(instance, data, config, progress=False).fit()
        losses[device] = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses["cuda"]) == 3 and np.isfinite(losses["cuda"]).all()
    if model != "irgan":
        assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-2)
