"""The multi-modal baselines on tiny data: they learn, gradients reach the content projections,
seeded and resumed runs are bit for bit the same, text-only content works, bad content is refused
with a clear error; and the pieces they are built from (pooling, kNN graph, edge pruning, DRAGON's
user-user graph, DiffMM's diffusion step)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent, pool_item_content
from neggen_model.data import InteractionData
from neggen_model.features import ItemFeatures, ModalityToken
from neggen_model.models import CONTENT_MODELS, build_model
from neggen_model.models.dragon import co_occurrence_neighbours
from neggen_model.models.multimodal import LOGSUMEXP_BLOCK, bounded_logsumexp, knn_graph
from neggen_model.synthetic import clustered_interactions
from tests.interruption import Interrupted, crash_at
from neggen_model.trainer import STATE_JSON, Trainer

MODELS = sorted(CONTENT_MODELS)
N_CLUSTERS = 4


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_frame(
        clustered_interactions(n_users=120, n_items=60, n_clusters=N_CLUSTERS, per_user=10, affinity=0.6, seed=3)
    )


def make_content(n_items: int, visual: bool = True, seed: int = 0) -> ItemContent:
    """Text and visual vectors that carry each item's taste group (item % N_CLUSTERS) plus noise."""
    rng = np.random.default_rng(seed)
    group = np.eye(N_CLUSTERS, dtype=np.float32)[np.arange(n_items) % N_CLUSTERS]
    text = np.concatenate([group, rng.normal(scale=0.3, size=(n_items, 8))], axis=1).astype(np.float32)
    pictures = np.concatenate([rng.normal(scale=0.3, size=(n_items, 6)), group], axis=1).astype(np.float32)
    return ItemContent(text=text, visual=pictures if visual else None)


def config(**overrides) -> TrainConfig:
    values = dict(embedding_size=16, batch_size=256, learning_rate=5e-3, epochs=6, early_stop_patience=50, seed=11)
    return TrainConfig(**(values | overrides))


def fit(name, data, content, cfg, checkpoint_dir=None, params=None):
    model = build_model(name, data, cfg, content, params)
    return model, Trainer(model, data, cfg, checkpoint_dir=checkpoint_dir, progress=False).fit()


def timeless(history):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in history]


def assert_same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("name", MODELS)
def test_loss_falls_and_ranking_beats_random(name, data):
    _, result = fit(name, data, make_content(data.n_items), config(epochs=15))
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.85 * losses[0]
    # 10 items per user from 60 in 4 groups; random ranking gives recall@20 about 1/3.
    assert result.best_valid["recall@20"] > 0.45


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_the_content_projections(name, data):
    content = make_content(data.n_items)
    model = build_model(name, data, config(), content)
    model.train()
    model.begin_epoch(np.random.default_rng(0))
    users, items = data.train_pairs()
    negatives = (items + 7) % data.n_items
    model.calculate_loss(*(torch.from_numpy(a[:200]) for a in (users, items, negatives))).backward()
    projections = {
        n: p for n, p in model.named_parameters() if ("projection" in n or ".mlp." in n or "preference" in n) and not n.endswith("bias")
    }
    assert projections, "the model has no content projection"
    for pname, param in projections.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname
    if name == "lgmrec":  # the hyperedge weights of both modalities learn too
        assert {"projections.text", "projections.visual"} <= set(projections)
        for modality in ("text", "visual"):
            assert model.hyperedges[modality].grad.abs().sum() > 0
    if name == "freedom":  # both modalities are projected, and the raw features are fine-tuned
        assert {"projections.text.weight", "projections.visual.weight"} <= set(projections)
        for modality in ("text", "visual"):
            assert model.features[modality].grad.abs().sum() > 0
    if name == "dragon":  # both modalities' MLPs and preferences learn, and so do the fusion weights
        assert {"projections.text.0.weight", "projections.visual.2.weight", "preferences.text", "preferences.visual"} <= set(projections)
        assert model.fusion_weights.grad.abs().sum() > 0
    if name == "diffmm":  # both modalities are projected; the fusion weights learn too
        assert {"projections.text", "projections.visual"} <= set(projections)
        assert model.modality_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_seeded_runs_are_bit_for_bit_identical(name, data):
    content = make_content(data.n_items)
    model_a, a = fit(name, data, content, config(epochs=3))
    model_b, b = fit(name, data, content, config(epochs=3))
    assert_same_weights(model_a, model_b)
    assert timeless(a.history) == timeless(b.history) and a.test == b.test
    _, c = fit(name, data, content, config(epochs=3, seed=12))
    assert timeless(c.history) != timeless(a.history)


@pytest.mark.parametrize("name", MODELS)
def test_resumed_run_equals_uninterrupted(name, data, tmp_path, monkeypatch):
    """FREEDOM prunes the graph per epoch from the trainer's model generator: its state must cross
    the interruption with the weights. DiffMM's diffusion step also leaves state the next epochs
    need (the denoisers' Adam moments, the generated graphs): it must be in the checkpoint too."""
    content, cfg = make_content(data.n_items), config(epochs=5)
    model_full, full = fit(name, data, content, cfg, tmp_path / "full")
    run_epoch = crash_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        fit(name, data, content, cfg, tmp_path / "resumed")
    state = json.loads((tmp_path / "resumed" / STATE_JSON).read_text())
    assert state["epoch"] == 2 and "model" in state["rng"]
    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)
    model_resumed, resumed = fit(name, data, content, cfg, tmp_path / "resumed")
    assert_same_weights(model_full, model_resumed)
    assert timeless(full.history) == timeless(resumed.history) and full.test == resumed.test


@pytest.mark.parametrize("name", MODELS)
def test_text_only_content_works(name, data):
    content = make_content(data.n_items, visual=False)
    assert content.modalities == ("text",)
    model, result = fit(name, data, content, config(epochs=8))
    assert result.best_valid["recall@20"] > 0.4
    assert not any("visual" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", MODELS)
def test_bad_feature_shapes_give_a_clear_error(name, data):
    good = make_content(data.n_items)
    with pytest.raises(ValueError, match=rf"{name}: item features .* 59 rows, the interactions have 60 items"):
        build_model(name, data, config(), ItemContent(text=good.text[:59], visual=good.visual[:59]))
    with pytest.raises(ValueError, match="different numbers of items"):
        ItemContent(text=good.text, visual=good.visual[:-1])
    with pytest.raises(ValueError, match=r"visual features must be a non-empty 2-D array \[n_items, dim\], got \(60,\)"):
        ItemContent(text=good.text, visual=good.visual[:, 0])
    with pytest.raises(ValueError, match="text features hold NaN"):
        ItemContent(text=np.full_like(good.text, np.nan))
    with pytest.raises(ValueError, match="at least one modality"):
        ItemContent()
    with pytest.raises(ValueError, match="multi-modal model: pass the item content"):
        build_model(name, data, config())
    with pytest.raises(ValueError, match=rf"{name} params: no_such_key: Extra inputs"):
        build_model(name, data, config(), good, {"no_such_key": 1})


def test_cf_models_refuse_content(data):
    with pytest.raises(ValueError, match="lightgcn takes no item content"):
        build_model("lightgcn", data, config(), make_content(data.n_items))


# --- building blocks --------------------------------------------------------------------------


def test_pooling_means_present_text_fields_and_keeps_the_picture():
    n = 4
    rng = np.random.default_rng(0)
    title, brand, described = (rng.normal(size=(n, 3)).astype(np.float32) for _ in range(3))
    brand[2] = 0.0
    picture = rng.normal(size=(n, 5)).astype(np.float32)
    picture[3] = 0.0
    everywhere = np.ones(n, dtype=bool)
    features = ItemFeatures(
        n,
        (
            ModalityToken("title", "text", {"original": title, "generated": -title}, everywhere),
            ModalityToken("brand", "text", {"original": brand}, np.array([True, True, False, True])),
            ModalityToken("image", "visual", {"original": described}, everywhere),
            ModalityToken("image_features", "visual", {"original": picture}, np.array([True, True, True, False])),
        ),
    )
    content = pool_item_content(features)
    expected = (title + brand) / 2
    expected[2] = title[2]  # no brand: the mean of the fields it has
    np.testing.assert_allclose(content.text, expected, rtol=1e-6)
    np.testing.assert_array_equal(content.visual[:3], picture[:3])
    np.testing.assert_allclose(content.visual[3], picture[:3].mean(axis=0), rtol=1e-6)  # no picture: the mean
    text_only = pool_item_content(ItemFeatures(n, features.tokens[:2]))
    assert text_only.visual is None and text_only.modalities == ("text",)


def test_knn_graph_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    graph = knn_graph(x, k=5, chunk=7).toarray()
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    for i in range(50):
        expected = set(np.argsort(-sim[i], kind="stable")[:5])
        assert set(np.flatnonzero(graph[i])) == expected and i in expected
    np.testing.assert_allclose(graph.sum(axis=1), 1.0, rtol=1e-6)


def test_freedom_prunes_by_degree_and_ranks_on_the_full_graph(data):
    model = build_model("freedom", data, config(), make_content(data.n_items), {"dropout": 0.5})
    n_edges = data.train.nnz
    model.train()
    model.begin_epoch(np.random.default_rng(0))
    masked = model._masked_adj.to_dense()
    assert torch.equal(masked, masked.T)
    assert int((masked[: data.n_users] > 0).sum()) == n_edges // 2
    # Ranking (eval mode) propagates over the full normalised graph, training over the pruned one.
    model.eval()
    with torch.no_grad():
        full_users, _ = model.final_embeddings()
        model.train()
        pruned_users, _ = model.final_embeddings()
    assert not torch.allclose(full_users, pruned_users)
    # Degree-sensitive: edges between low-degree nodes (large 1/sqrt(d_u d_i)) survive more often.
    weight = torch.from_numpy(model._edge_weight)
    users, items = (torch.from_numpy(a) for a in data.train_pairs())
    kept = torch.zeros(n_edges)
    rng = np.random.default_rng(1)
    for _ in range(40):
        model.begin_epoch(rng)
        kept += (model._masked_adj.to_dense()[users, data.n_users + items] > 0).float()
    heavy = weight > weight.median()
    assert kept[heavy].mean() > kept[~heavy].mean()


def test_freedom_fused_adam_trains_as_the_default_kernel(data, monkeypatch):
    """FREEDOM trains with torch's fused Adam (speed): the same run as with the default kernel, up to
    the rounding of the last bits."""
    content, cfg = make_content(data.n_items), config(epochs=4)
    fused_model, fused = fit("freedom", data, content, cfg)
    assert Trainer(fused_model, data, cfg, progress=False).optimizer.param_groups[0]["fused"]
    monkeypatch.setattr(type(fused_model), "fused_adam", False)
    default_model, default = fit("freedom", data, content, cfg)
    for (name, x), (_, y) in zip(fused_model.state_dict().items(), default_model.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)
    losses = [[r["loss"] for r in run.history] for run in (fused, default)]
    np.testing.assert_allclose(*losses, rtol=1e-5)


def test_dragon_user_graph_is_each_users_top_co_occurring_users():
    train = sp.random(30, 40, density=0.08, random_state=2, format="csr")
    train.data[:] = 1.0
    ids, counts = co_occurrence_neighbours(train, k=4, cells=7 * 30)  # blocks of 7 users
    shared = (train @ train.T).toarray()
    np.fill_diagonal(shared, 0)
    for user in range(30):
        # most shared items first, the lower id among ties; users sharing nothing are not neighbours
        expected = sorted((-shared[user, other], other) for other in np.flatnonzero(shared[user]))[:4]
        assert ids[user].tolist() == [other for _, other in expected] + [-1] * (4 - len(expected))
        assert counts[user, : len(expected)].tolist() == [-count for count, _ in expected]


def test_dragon_pads_short_neighbour_lists_per_epoch_and_ranks_on_one_fixed_draw(data):
    k = 60
    content = make_content(data.n_items)
    model = build_model("dragon", data, config(), content, {"user_knn_k": k})
    have = (model._neighbours >= 0).sum(axis=1)
    short, full = have < k, have == k
    assert short.any() and full.any()
    model.train()
    draws = []
    for seed in (0, 0, 1):
        model.begin_epoch(np.random.default_rng(seed))
        draws.append(model._training_user_graph[0].to_dense().numpy())
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])
    assert np.array_equal(draws[0][full], draws[2][full])  # only short lists are drawn
    listed = np.zeros((data.n_users, data.n_users), dtype=bool)
    rows, places = np.nonzero(model._neighbours >= 0)
    listed[rows, model._neighbours[rows, places]] = True
    ranking = model.ranking_user_graph.to_dense().numpy()
    for graph in (ranking, *draws):
        np.testing.assert_allclose(graph.sum(axis=1), 1.0, rtol=1e-5)
        assert np.array_equal(graph > 0, listed)  # every listed user kept, padding repeats listed ones
        # weight / exp(count) is how many of the k places a neighbour fills: whole numbers summing to k
        shared = np.zeros_like(graph)
        shared[rows, model._neighbours[rows, places]] = model._counts[rows, places]
        places_filled = np.where(listed, graph / np.exp(shared - shared.max(axis=1, keepdims=True)), 0.0)
        places_filled *= k / places_filled.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(places_filled, np.round(places_filled), atol=1e-3)
    model.eval()  # ranking ignores the epoch's draw: the same embeddings as an untouched model
    untouched = build_model("dragon", data, config(), content, {"user_knn_k": k}).eval()
    with torch.no_grad():
        assert torch.equal(model.final_embeddings()[0], untouched.final_embeddings()[0])


def test_diffmm_diffusion_step_generates_the_graphs_and_checkpoints_its_state(data):
    content = make_content(data.n_items)
    model = build_model("diffmm", data, config(), content)
    initial = {n: w.detach().clone() for n, w in model.denoisers.named_parameters()}
    assert (model.generated_items == -1).all()
    model.train()
    model.begin_epoch(np.random.default_rng(0))
    # The denoisers took one Adam step per batch of users; their moments are buffers of the model.
    assert all(not torch.equal(initial[n], w) for n, w in model.denoisers.named_parameters())
    assert model.denoiser_adam_step.item() == math.ceil(data.n_users / model.params.diffusion_batch_size)
    assert {"generated_items", "denoiser_adam_step", "denoiser_adam_exp_avg", "denoiser_adam_exp_avg_sq"} <= set(model.state_dict())
    assert model.pop_epoch_stats()["diffusion_loss"] > 0 and model.pop_epoch_stats() == {}
    # Each user gets rebuild_k distinct items per modality.
    generated = model.generated_items
    assert generated.shape == (2, data.n_users, 5) and (generated >= 0).all()
    assert (generated.sort(dim=2).values.diff(dim=2) > 0).all()
    # A model given this state dict ranks exactly the same: the graphs travel with the weights.
    copy = build_model("diffmm", data, config(seed=99), content)
    copy.load_state_dict(model.state_dict())
    model.eval()
    copy.eval()
    with torch.no_grad():
        assert torch.equal(model.final_embeddings()[1], copy.final_embeddings()[1])


def test_diffmm_graphs_learn_the_taste_groups_and_drop_edges_for_training_only(data):
    model, _ = fit("diffmm", data, make_content(data.n_items), config(epochs=6))
    # Chance is 1 in N_CLUSTERS: the denoised rows favour items of the user's own group.
    same_group = model.generated_items % N_CLUSTERS == torch.arange(data.n_users)[None, :, None] % N_CLUSTERS
    assert (same_group.float().mean(dim=(1, 2)) > 0.5).all()
    half = build_model("diffmm", data, config(), make_content(data.n_items), {"keep_rate": 0.5})
    half.load_state_dict(model.state_dict())
    half.train()
    half.begin_epoch(np.random.default_rng(0))
    dropped = half._training_graphs[0][0].to_dense()
    full = half._generated_graph(0, None)[0].to_dense()
    kept = dropped != 0
    assert 0.4 < kept.sum() / (full != 0).sum() < 0.6
    torch.testing.assert_close(dropped[kept], full[kept] / 0.5)


def test_diffmm_text_only_contrasts_the_view_with_the_final_embeddings(data):
    content = make_content(data.n_items, visual=False)
    users, items = data.train_pairs()
    batch = tuple(torch.from_numpy(a[:200]) for a in (users, items, (items + 7) % data.n_items))

    def loss(**params):
        return build_model("diffmm", data, config(), content, params).calculate_loss(*batch)

    assert torch.equal(loss(contrast="modalities"), loss(contrast="main"))
    assert loss() > loss(ssl_weight=0.0)


def test_diffmm_reverse_chain_is_the_t_denoiser_passes(data):
    """The graphs come from the reverse chain's algebraic form (one items-wide product per row);
    it must be the T passes through the denoiser it replaces, on a trained denoiser."""
    model, _ = fit("diffmm", data, make_content(data.n_items), config(epochs=2))
    denoiser = model.denoisers["text"]
    x0 = torch.from_numpy(data.train[:50].toarray().astype(np.float32))
    with torch.no_grad():
        x = x0
        for step in reversed(range(model.params.steps)):
            x = model.posterior_x0[step] * denoiser(x, torch.full((len(x0),), step)) + model.posterior_xt[step] * x
    (chained,) = denoiser.reverse_chain([x0], model.posterior_x0, model.posterior_xt)
    torch.testing.assert_close(chained, x, rtol=1e-5, atol=1e-6)
    assert x.std() > 0.01  # not a trivially flat row


def test_contrastive_logsumexp_matches_torch_in_value_and_gradient():
    """DiffMM's and LGMRec's InfoNCE take logsumexp without a max shift (multimodal.bounded_logsumexp)."""

    rng = torch.Generator().manual_seed(0)
    temperature = 0.025  # the smallest τ allowed: logits up to 40
    a = (torch.nn.functional.normalize(torch.randn(7, 5, generator=rng, dtype=torch.float64)) / temperature).requires_grad_()
    # More rows than one block, and not a multiple of it: the blocks and the last short one all count.
    b = torch.nn.functional.normalize(torch.randn(2 * LOGSUMEXP_BLOCK + 3, 5, generator=rng, dtype=torch.float64)).requires_grad_()
    weights = torch.randn(7, generator=rng, dtype=torch.float64)
    ours = bounded_logsumexp(a, b)
    (ours * weights).sum().backward()
    grads = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    reference = torch.logsumexp(a @ b.T, dim=1)
    (reference * weights).sum().backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grads, (a.grad, b.grad))


def test_lgmrec_contrast_through_the_hyperedge_factors_equals_the_direct_infonce(data):
    """LGMRec scores the [batch, all] logits through the views' factors (weights @ latent); the value
    and the gradients equal InfoNCE on the assembled, normalised view, a dropout-zeroed row included."""
    model = build_model("lgmrec", data, config(), make_content(data.n_items))
    rng = torch.Generator().manual_seed(0)
    anchors = torch.randn(6, 16, generator=rng, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(40, model.params.hyper_num, generator=rng, dtype=torch.float64)
    weights[7] = 0.0  # every hyperedge of this row dropped
    weights.requires_grad_()
    latent = torch.randn(model.params.hyper_num, 16, generator=rng, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 7, 3, 3, 39, 12])
    tau = model.params.temperature

    ours = model._contrast(anchors, weights, latent, index)
    ours.backward()
    grads = anchors.grad.clone(), weights.grad.clone(), latent.grad.clone()
    anchors.grad = weights.grad = latent.grad = None
    a, view = F.normalize(anchors) / tau, F.normalize(weights @ latent)
    direct = (torch.logsumexp(a @ view.T, dim=1) - (a * view[index]).sum(dim=1)).sum()
    direct.backward()
    torch.testing.assert_close(ours, direct)
    torch.testing.assert_close(grads, (anchors.grad, weights.grad, latent.grad))


@pytest.mark.parametrize("name", ["diffmm", "lgmrec"])
def test_contrastive_models_refuse_a_temperature_their_logits_could_overflow_at(name, data):
    with pytest.raises(ValueError, match="temperature"):
        build_model(name, data, config(), make_content(data.n_items), {"temperature": 0.01})
