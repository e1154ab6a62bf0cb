"""LightGCN's graph and propagation against a dense numpy computation of paper eq. 6-7."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.models import BPRMF, LightGCN, build_model

# 4 users, 5 items; user 3 and item 4 have no training interaction (isolated nodes).
EDGES = [(0, 0), (0, 1), (1, 1), (1, 2), (1, 3), (2, 0), (2, 3)]


def tiny_data() -> InteractionData:
    rows = [(u, i, "train") for u, i in EDGES] + [(3, 4, "test")]
    return InteractionData.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "split"]))


def dense_norm_adj(n_users: int, n_items: int) -> np.ndarray:
    adj = np.zeros((n_users + n_items, n_users + n_items))
    for u, i in EDGES:
        adj[u, n_users + i] = adj[n_users + i, u] = 1.0
    degree = adj.sum(axis=1)
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0.0)
    return inv_sqrt[:, None] * adj * inv_sqrt[None, :]


def test_norm_adj_is_eq6_weights():
    data = tiny_data()
    np.testing.assert_allclose(data.norm_adj.to_dense().numpy(), dense_norm_adj(4, 5), rtol=1e-6)


@pytest.mark.parametrize("n_layers", [0, 1, 3])
def test_propagation_equals_dense_eq6_eq7(n_layers):
    data = tiny_data()
    model = build_model("lightgcn", data, TrainConfig(embedding_size=8, n_layers=n_layers))
    ego = torch.cat([model.user_embedding, model.item_embedding]).detach().double().numpy()
    norm = dense_norm_adj(4, 5)
    layers = [ego]
    for _ in range(n_layers):
        layers.append(norm @ layers[-1])
    expected = np.mean(layers, axis=0)
    users, items = model.final_embeddings()
    np.testing.assert_allclose(users.detach().numpy(), expected[:4], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(items.detach().numpy(), expected[4:], rtol=1e-5, atol=1e-7)


def test_gradient_equals_dense_autograd():
    data = tiny_data()
    config = TrainConfig(embedding_size=4, n_layers=2, reg_weight=0.1)
    model = build_model("lightgcn", data, config)
    users, pos, neg = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 2, 3, 1]), torch.tensor([4, 0, 1, 3])
    model.calculate_loss(users, pos, neg).backward()

    dense = torch.from_numpy(dense_norm_adj(4, 5)).float()
    ego = torch.cat([model.user_embedding, model.item_embedding]).detach().requires_grad_(True)
    layers = [ego]
    for _ in range(2):
        layers.append(dense @ layers[-1])
    final = torch.stack(layers).mean(dim=0)
    u, p, n = final[users], final[4 + pos], final[4 + neg]
    loss = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    loss = loss + 0.1 * 0.5 * (ego[users].pow(2).sum() + ego[4 + pos].pow(2).sum() + ego[4 + neg].pow(2).sum()) / 4
    loss.backward()
    got = torch.cat([model.user_embedding.grad, model.item_embedding.grad])
    torch.testing.assert_close(got, ego.grad, rtol=1e-5, atol=1e-7)


def test_frozen_embeddings_score_like_live_ones_and_are_dropped_on_exit():
    data = tiny_data()
    model = build_model("lightgcn", data, TrainConfig(embedding_size=8, n_layers=2))
    users = torch.tensor([0, 2])
    live = model.full_sort_predict(users).detach()
    with model.frozen_embeddings():
        torch.testing.assert_close(model.full_sort_predict(users), live)
        assert not model.training
    assert model.training and model._frozen is None


def test_bpr_is_lightgcn_without_layers():
    data = tiny_data()
    bpr = build_model("bpr", data, TrainConfig(embedding_size=8, n_layers=3))
    lgcn = build_model("lightgcn", data, TrainConfig(embedding_size=8, n_layers=0))
    assert isinstance(bpr, BPRMF) and isinstance(lgcn, LightGCN)
    batch = (torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([4, 4]))
    torch.testing.assert_close(bpr.calculate_loss(*batch), lgcn.calculate_loss(*batch))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("ngcf", tiny_data(), TrainConfig())
