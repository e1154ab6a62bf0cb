"""The recommender core on the real Amazon 5-core splits in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.evaluate import evaluate
from neggen_model.models import build_model
from neggen_model.trainer import Trainer

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AMAZON = DATA_DIR / "amazon2014"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not AMAZON.is_dir(), reason=f"real data not found at {AMAZON} (see the project's data notes)"),
]

# Counts from ../shared/data/README.md.
EXPECTED = {
    "baby": (19_445, 7_050, 118_551, 20_559, 21_682),
    "beauty": (22_363, 12_101, 147_320, 24_868, 26_314),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_inter_file_counts_match_the_data_notes(name):
    data = InteractionData.from_inter_file(AMAZON / name / f"{name}.inter")
    assert (data.n_users, data.n_items, data.train.nnz, data.valid.nnz, data.test.nnz) == EXPECTED[name]
    n_nodes = data.n_users + data.n_items
    assert data.norm_adj.shape == (n_nodes, n_nodes) and data.norm_adj.values().numel() == 2 * data.train.nnz


def test_one_lightgcn_epoch_on_baby_beats_random():
    data = InteractionData.from_inter_file(AMAZON / "baby" / "baby.inter")
    config = TrainConfig(epochs=1)
    model = build_model("lightgcn", data, config)
    result = Trainer(model, data, config, progress=False).fit()
    # Random ranking over ~7,040 candidates: Recall@20 about 20/7040 = 0.003.
    assert result.best_valid["recall@20"] > 0.03
    # Excluding validation items can only lift test items in the ranking.
    assert all(result.test["strict"][m] >= result.test["mmrec"][m] for m in result.test["mmrec"])
    assert evaluate(model, data, "test", mode="strict", batch_size=config.eval_batch_size) == result.test["strict"]
