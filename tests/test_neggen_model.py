"""The NegGen causal module: shapes, gradients, own negatives, losses vs an independent
computation, variant switches, and bit-for-bit reproducible training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from neggen_model.config import VARIANTS, NegGenConfig, TrainConfig, variant_config
from neggen_model.data import InteractionData
from neggen_model.features import ItemFeatures, ModalityToken, negative_hardness
from neggen_model.models import build_model
from neggen_model.models.neggen import NegGen
from neggen_model.synthetic import clustered_interactions
from neggen_model.trainer import Trainer

TRAIN = TrainConfig(epochs=3, batch_size=256, early_stop_patience=5)
#: NegGen as printed (eq. 19 on a frozen base, the paper's attention module).
PAPER = variant_config(NegGenConfig(), "neggen_paper")


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_frame(clustered_interactions(n_users=60, n_items=40, per_user=8))


def make_features(n_items: int, seed: int = 0, missing_brand: int | None = None) -> ItemFeatures:
    """Two text tokens (title, brand), one image-description token and one picture token."""
    rng = np.random.default_rng(seed)

    def token(name, modality, dim, regenerated=True):
        original = rng.normal(size=(n_items, dim)).astype(np.float32)
        generated = rng.normal(size=(n_items, dim)).astype(np.float32) if regenerated else original
        direct = rng.normal(size=(n_items, dim)).astype(np.float32) if regenerated else original
        present = np.ones(n_items, dtype=bool)
        if name == "brand" and missing_brand is not None:
            present[missing_brand] = False
            for matrix in (original, generated, direct):
                matrix[missing_brand] = 0.0
        return ModalityToken(name, modality, {"original": original, "generated": generated, "direct": direct}, present)

    return ItemFeatures(
        n_items,
        (
            token("title", "text", 12),
            token("brand", "text", 12),
            token("image", "visual", 12),
            token("image_features", "visual", 20, regenerated=False),
        ),
    )


@pytest.fixture(scope="module")
def base(data):
    return build_model("lightgcn", data, TrainConfig(embedding_size=16, n_layers=2))


def neggen(base, data, config=NegGenConfig(), seed=0, features=None):
    return NegGen(base, features or make_features(data.n_items), config, seed)


def randomize_linear(model: NegGen, seed: int = 0) -> NegGen:
    """The linear encoder starts at zero (the model then equals its base); give it weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for project in model.causal.project:
            project.weight.copy_(torch.randn(project.weight.shape, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("config", [NegGenConfig(), PAPER], ids=["neggen", "neggen_paper"])
def test_shapes_and_gradients_reach_every_weight(base, data, config):
    model = neggen(base, data, config)
    items = torch.arange(data.n_items)
    e_c, e_c_star = model.causal_embeddings(items)
    assert e_c.shape == e_c_star.shape == (data.n_items, 16)
    users, item_all = model.final_embeddings()
    assert users.shape == (data.n_users, 16) and item_all.shape == (data.n_items, 16)
    loss = model.calculate_loss(torch.tensor([0, 1, 2]), torch.tensor([3, 4, 3]), torch.tensor([5, 6, 7]))
    loss.backward()
    for name, parameter in model.causal.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # Both keep the base frozen by default (the `finetune` variant trains it).
    if config.finetune_base:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.base.parameters())
    else:
        assert all(p.grad is None for p in model.base.parameters())
    assert np.isfinite(loss.item())
    model.base.zero_grad(set_to_none=True)


@pytest.mark.parametrize("config", [NegGenConfig(), PAPER], ids=["neggen", "neggen_paper"])
def test_missing_token_is_ignored_and_never_nan(base, data, config):
    features = make_features(data.n_items, missing_brand=5)
    model = neggen(base, data, config, features=features)
    if config.encoder == "linear":
        randomize_linear(model)
    before = model.causal_embeddings(torch.tensor([5]))[0]
    # Whatever an absent token's vector holds, it does not reach the item's embeddings.
    model.original_1[5] = 1e6
    model.negative_1[5] = -1e6
    after = model.causal_embeddings(torch.tensor([5]))[0]
    assert torch.allclose(before, after) and torch.isfinite(after).all()
    model.present[5] = False  # an item with no token at all
    model.negative_present[5] = False
    assert torch.isfinite(model.causal_embeddings(torch.tensor([5]))[0]).all()


def test_neggen_starts_as_its_base_and_ranks_by_real_content_only(base, data):
    """Epoch 0 of NegGen is its base exactly (so "best epoch 0" means the content added nothing);
    its scores use the items' own attributes, never their generated negatives."""
    users = torch.arange(data.n_users)

    def scores(layer: str, features: ItemFeatures) -> torch.Tensor:
        model = randomize_linear(neggen(base, data, NegGenConfig(content_layer=layer), features=features))
        with torch.no_grad():
            return model.full_sort_predict(users)

    features = make_features(data.n_items)
    title = features.tokens[0]
    other_negatives = replace(title, versions=title.versions | {"generated": title.versions["generated"] + 1.0})
    own_title = title.versions["original"].copy()
    own_title[7] *= -1.0  # item 7's own title only (same norm: tokens are scaled by their RMS norm)
    other_title = replace(title, versions=title.versions | {"original": own_title})
    for layer in ("input", "output"):
        with torch.no_grad():
            start = neggen(base, data, NegGenConfig(content_layer=layer), features=features).full_sort_predict(users)
        assert torch.equal(start, base.full_sort_predict(users))
        before = scores(layer, features)
        assert torch.equal(scores(layer, replace(features, tokens=(other_negatives, *features.tokens[1:]))), before)
        changed = (scores(layer, replace(features, tokens=(other_title, *features.tokens[1:]))) != before).any(dim=0)
        # At the output only item 7's score moves; at the input LightGCN carries it to its users.
        assert changed[7] and (changed.sum() == 1 if layer == "output" else changed.sum() > 1)


def test_the_shipped_path_equals_propagating_the_content_every_batch(base, data):
    """Frozen base, linear encoder at the input: the loss, its gradients and Fig. 3's statistic
    from the precomputed LightGCN([0; X]) rows equal those of a full propagation per batch."""
    config = NegGenConfig(content_bpr_weight=0.5)
    model = randomize_linear(neggen(base, data, config, features=make_features(data.n_items, missing_brand=5)))
    assert model.precomputed
    users, pos, neg = torch.tensor([0, 1, 2, 3, 1, 4]), torch.tensor([4, 9, 4, 11, 20, 5]), torch.tensor([5, 4, 30, 2, 7, 8])

    def step(precomputed: bool):
        model.precomputed = precomputed
        model.zero_grad(set_to_none=True)
        loss = model.calculate_loss(users, pos, neg)
        loss.backward()
        return loss.item(), [p.weight.grad.clone() for p in model.causal.project], model.pop_epoch_stats()

    (fast, fast_grads, fast_stats), (full, full_grads, full_stats) = step(True), step(False)
    assert fast == pytest.approx(full, rel=1e-6)
    for a, b in zip(fast_grads, full_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert fast_stats.keys() == full_stats.keys() == {"grad_negative_text", "grad_negative_visual"}
    for key, value in fast_stats.items():
        assert value == pytest.approx(full_stats[key], rel=1e-5) and value > 0
    with torch.no_grad():
        fast_items = model.final_embeddings()[1]
        model.precomputed = False
        assert torch.allclose(fast_items, model.final_embeddings()[1], atol=1e-6)


def test_bfloat16_rows_follow_the_float32_path(base, data):
    """precision "bfloat16" stores the precomputed rows in bfloat16: the loss, P's gradients, Fig. 3's
    statistic and the ranking embeddings stay float32 and within bfloat16's rounding of the float32
    model's; P and Adam's state stay float32."""
    config = NegGenConfig(content_bpr_weight=0.5)
    features = make_features(data.n_items, missing_brand=5)
    users, pos, neg = torch.tensor([0, 1, 2, 3, 1, 4]), torch.tensor([4, 9, 4, 11, 20, 5]), torch.tensor([5, 4, 30, 2, 7, 8])

    def step(precision: str):
        model = randomize_linear(neggen(base, data, config.model_copy(update={"precision": precision}), features=features))
        assert model.precomputed and model.propagated.dtype == getattr(torch, precision)
        loss = model.calculate_loss(users, pos, neg)
        loss.backward()
        grads = [p.weight.grad for p in model.causal.project]
        with torch.no_grad():
            items = model.final_embeddings()[1]
        return loss, grads, model.pop_epoch_stats(), items

    (loss16, grads16, stats16, items16), (loss32, grads32, stats32, items32) = step("bfloat16"), step("float32")
    assert loss16.dtype == items16.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads16)
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-2) and loss16.item() != loss32.item()
    for a, b in zip(grads16, grads32):
        assert torch.linalg.norm(a - b) <= 2e-2 * torch.linalg.norm(b)
    for key, value in stats32.items():
        assert stats16[key] == pytest.approx(value, rel=2e-2)
    assert torch.allclose(items16, items32, rtol=2e-2, atol=2e-3)


def test_paper_scores_use_each_items_own_negative(base, data):
    model = neggen(base, data, PAPER)
    users = torch.arange(data.n_users)
    with torch.no_grad():
        before = model.full_sort_predict(users)
        model.negative_0[7] += 1.0  # change item 7's negative title only
        after = model.full_sort_predict(users)
    changed = (before != after).any(dim=0)
    assert changed[7] and changed.sum() == 1


def _softplus(x):
    return np.logaddexp(0.0, x)


def test_paper_losses_match_an_independent_computation(base, data):
    config = PAPER.model_copy(update={"score_weight": 0.7, "align_weight": 0.3, "temperature": 0.15})
    model = neggen(base, data, config)
    users = torch.tensor([0, 1, 2, 3, 1])
    pos = torch.tensor([4, 9, 4, 11, 20])
    with torch.no_grad():
        e_c, e_cs = (t.double().numpy() for t in model.causal_embeddings(pos))
        user_all, item_all = (t.double().numpy() for t in base.final_embeddings())
        loss = model.calculate_loss(users, pos, torch.zeros_like(pos)).item()
    e_u, e_i = user_all[users.numpy()], item_all[pos.numpy()]
    # eq. 19: -log sigmoid(λ e_u·e_c + e_u·e_i - e_u·e_c*)
    margin = 0.7 * (e_u * e_c).sum(1) + (e_u * e_i).sum(1) - (e_u * e_cs).sum(1)
    rec = np.mean(-np.log(1.0 / (1.0 + np.exp(-margin))))
    # Documented alignment: over the batch's distinct items, two-way softmax cross-entropy of
    # cosine logits: -log(exp(c+/τ) / (exp(c+/τ) + exp(c-/τ))).
    _, first = np.unique(pos.numpy(), return_index=True)
    a, b, i = e_c[first], e_cs[first], e_i[first]
    cos = lambda x, y: (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    pos_logit, neg_logit = cos(a, i) / 0.15, cos(b, i) / 0.15
    align = np.mean(-pos_logit + np.log(np.exp(pos_logit) + np.exp(neg_logit)))
    assert loss == pytest.approx(rec + 0.3 * align, rel=1e-5)
    # The alignment term is bounded below by 0 and its logits by 1/τ, unlike eq. 20 as printed.
    huge = neggen(base, data, config)
    with torch.no_grad():
        huge.causal.mlp[2].weight.mul_(1e6)
        huge.causal.mlp[2].bias.mul_(1e6)
        e_c, e_cs = huge.causal_embeddings(pos)
        value = huge.alignment_loss(e_c, e_cs, torch.from_numpy(e_i).float())
    assert torch.isfinite(value) and 0 <= value.item() <= _softplus(2 / 0.15) + 1e-4


def _alignment(e_c, e_cs, e_i, tau):
    cos = lambda x, y: (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    pos_logit, neg_logit = cos(e_c, e_i) / tau, cos(e_cs, e_i) / tau
    return np.mean(-pos_logit + np.log(np.exp(pos_logit) + np.exp(neg_logit)))


@pytest.mark.parametrize(
    ("layer", "finetune", "align"),
    [("input", True, 0.3), ("output", True, 0.3), ("input", False, 0.3), ("input", False, 0.0)],
    ids=["input-finetuned", "output-finetuned", "input-frozen-aligned", "input-frozen-shipped"],
)
def test_ranking_loss_matches_an_independent_computation(base, data, layer, finetune, align):
    """BPR against the sampled item + β counterfactual term (eq. 12) + β_j content BPR + α alignment
    (+ L2 when the base is fine-tuned), on every code path (a frozen base at the input uses precomputed rows)."""
    config = NegGenConfig(score_weight=0.7, counterfactual_weight=0.5, content_bpr_weight=0.4, align_weight=align,
                          temperature=0.15, content_layer=layer, finetune_base=finetune)  # fmt: skip
    model = randomize_linear(neggen(base, data, config))
    assert model.precomputed == (layer == "input" and not finetune)
    users, pos, neg = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([4, 9, 4, 11, 20]), torch.tensor([5, 4, 30, 2, 7])
    with torch.no_grad():
        e_c, e_cs = (t.double().numpy() for t in model.causal_embeddings())
        ego_u, ego_i = (t.double().numpy() for t in (base.user_embedding, base.item_embedding))
        loss = model.calculate_loss(users, pos, neg).item()
        # LightGCN by hand: mean over layers 0..L of Â^l [users; items].
        adjacency = base.norm_adj.to_dense().double().numpy()
        layer_0 = np.concatenate([ego_u, ego_i + (0.7 * e_c if layer == "input" else 0)])
        layers = [layer_0]
        for _ in range(base.n_layers):
            layers.append(adjacency @ layers[-1])
        final = np.mean(layers, axis=0)
    user_all, item_all = final[: data.n_users], final[data.n_users :]
    collaborative = item_all  # what e_c is aligned with: the item's final LightGCN embedding
    if layer == "output":
        item_all = item_all + 0.7 * e_c
    u, p, n = users.numpy(), pos.numpy(), neg.numpy()
    score = lambda items: (user_all[u] * item_all[items]).sum(1)
    bpr = np.mean(_softplus(score(n) - score(p)))
    effect_weight = 0.7 / (base.n_layers + 1) if layer == "input" else 0.7
    effect = effect_weight * (user_all[u] * (e_c[p] - e_cs[p])).sum(1)
    distinct = np.unique(np.r_[p, n])
    alignment = _alignment(e_c[distinct], e_cs[distinct], collaborative[distinct], 0.15)
    reg = 1e-4 * 0.5 * (np.square(ego_u[u]).sum() + np.square(ego_i[p]).sum() + np.square(ego_i[n]).sum()) / len(u)
    content_margin = effect_weight * (user_all[u] * (e_c[p] - e_c[n])).sum(1)
    expected = (bpr + 0.5 * np.mean(_softplus(-effect)) + 0.4 * np.mean(_softplus(-content_margin))
                + align * alignment + (reg if finetune else 0.0))  # fmt: skip
    assert loss == pytest.approx(expected, rel=1e-5)


def test_variant_switches_change_the_computation(base, data):
    features = make_features(data.n_items)
    items = torch.arange(data.n_items)

    # Printed model w/o CF: no attention and e_c does not depend on the negative.
    wo_cf = neggen(base, data, variant_config(PAPER, "wo_cf"), features=features)
    wo_cf.calculate_loss(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])).backward()
    assert wo_cf.causal.query.weight.grad is None and wo_cf.causal.key.weight.grad is None
    with torch.no_grad():
        before = wo_cf.causal_embeddings(items)[0].clone()
        wo_cf.negative_0.add_(1.0)
        assert torch.equal(before, wo_cf.causal_embeddings(items)[0])
    paper = neggen(base, data, PAPER, features=features)
    paper.calculate_loss(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])).backward()
    assert paper.causal.query.weight.grad.abs().sum() > 0

    # NegGen w/o CF (and without alignment): the loss no longer depends on the negatives.
    batch = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    no_align = NegGenConfig(align_weight=0.0)
    title = features.tokens[0]
    shifted = replace(title, versions=title.versions | {"generated": title.versions["generated"] + 1.0})
    other_negatives = replace(features, tokens=(shifted, *features.tokens[1:]))

    def losses(with_features: ItemFeatures) -> tuple[float, float]:
        full = randomize_linear(neggen(base, data, no_align, features=with_features))
        ranking_wo_cf = randomize_linear(neggen(base, data, variant_config(no_align, "wo_cf"), features=with_features))
        with torch.no_grad():
            return full.calculate_loss(*batch).item(), ranking_wo_cf.calculate_loss(*batch).item()

    before, after = losses(features), losses(other_negatives)
    assert before[0] != after[0] and before[1] == after[1]
    full = neggen(base, data, NegGenConfig(), features=features)

    # w/o NEG: each item's negative is another item's original tokens, fixed by the seed.
    wo_neg = neggen(base, data, variant_config(NegGenConfig(), "wo_neg"), seed=3, features=features)
    original = torch.from_numpy(features.tokens[0].versions["original"])
    scale = original.square().sum(1).mean().sqrt()
    partner = [int(torch.argmin((original / scale - wo_neg.negative_0[i]).abs().sum(1))) for i in range(data.n_items)]
    assert all(p != i for i, p in enumerate(partner)) and len(set(partner)) > data.n_items // 2
    again = neggen(base, data, variant_config(NegGenConfig(), "wo_neg"), seed=3, features=features)
    assert torch.equal(again.negative_0, wo_neg.negative_0)

    # Direct negatives are other vectors than the generated ones.
    direct = neggen(base, data, variant_config(NegGenConfig(), "direct"), features=features)
    assert not torch.equal(direct.negative_0, full.negative_0)

    # Modalities: a text-only model ignores the picture tokens entirely.
    text_only = neggen(base, data, variant_config(NegGenConfig(), "text_only"), features=features)
    assert text_only.token_names == ("title", "brand") and text_only.token_modalities == ("text", "text")
    visual_only = neggen(base, data, variant_config(NegGenConfig(), "visual_only"), features=features)
    assert visual_only.token_names == ("image", "image_features")

    # Fine-tuning: the base embeddings receive gradients (by default they are frozen).
    tuned_base = build_model("lightgcn", data, TrainConfig(embedding_size=16, n_layers=2))
    tuned = neggen(tuned_base, data, variant_config(NegGenConfig(), "finetune"), features=features)
    tuned.calculate_loss(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])).backward()
    assert tuned.base.user_embedding.grad is not None and tuned.base.user_embedding.grad.abs().sum() > 0


def test_unknown_variant_and_absent_modality_are_clear_errors(base, data):
    with pytest.raises(ValueError, match="unknown NegGen variant 'w/o'"):
        variant_config(NegGenConfig(), "w/o")
    text = ItemFeatures(data.n_items, (make_features(data.n_items).tokens[0],))
    with pytest.raises(ValueError, match=r"no token of modalities \['visual'\]"):
        neggen(base, data, variant_config(NegGenConfig(), "visual_only"), features=text)
    assert set(VARIANTS) >= {"neggen", "neggen_paper", "wo_neg", "wo_cf", "wo_both", "visual_only", "text_only", "direct"}


def _train(data, seed):
    base = build_model("lightgcn", data, TrainConfig(embedding_size=16, n_layers=2, seed=seed))
    model = NegGen(base, make_features(data.n_items), NegGenConfig(), seed)
    result = Trainer(model, data, TRAIN.model_copy(update={"seed": seed}), progress=False).fit()
    return model, result


def test_seeded_training_is_reproducible_bit_for_bit(data):
    first_model, first = _train(data, seed=11)
    second_model, second = _train(data, seed=11)
    timeless = lambda history: [{k: v for k, v in h.items() if "seconds" not in k} for h in history]
    assert timeless(first.history) == timeless(second.history)
    assert first.test == second.test
    for (name, a), (_, b) in zip(first_model.state_dict().items(), second_model.state_dict().items()):
        assert torch.equal(a, b), name
    # The gradient magnitude of the negatives is recorded per modality and epoch.
    assert first.history[0]["epoch"] == 0 and "grad_negative_text" not in first.history[0]  # scored before training
    assert all(h["grad_negative_text"] > 0 and h["grad_negative_visual"] > 0 for h in first.history[1:])
    _, other = _train(data, seed=12)
    assert other.history[1]["loss"] != first.history[1]["loss"]


def test_study_on_a_text_only_store(tmp_path, data):
    """The features loader on hand-written embedding stores, and a study without pictures."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.storage import DatasetStore
    from pipeline.config import StudyConfig
    from pipeline.study import load_item_features, run_study

    store = DatasetStore(tmp_path, "toy")
    users, items = data.train_pairs()
    frames = [pd.DataFrame({"user_id": users, "item_id": items, "split": "train"})]
    for split in ("valid", "test"):
        matrix = data.split(split).tocoo()
        frames.append(pd.DataFrame({"user_id": matrix.row.astype("int64"), "item_id": matrix.col.astype("int64"), "split": split}))
    store.write("interactions", pd.concat(frames, ignore_index=True))
    rng = np.random.default_rng(0)
    rows = [(i, field, version) for i in range(data.n_items) for field in ("title", "brand") for version in ("original", "generated")]
    rows = [r for r in rows if r != (3, "brand", "generated")]  # item 3's negative kept its brand line
    vectors = rng.normal(size=(len(rows), 8)).astype(np.float32)
    table = pa.table({
        "item_id": pa.array([r[0] for r in rows], pa.int64()), "field": [r[1] for r in rows],
        "modality": ["text"] * len(rows), "version": [r[2] for r in rows], "encoder": ["test"] * len(rows),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), 8),
    })  # fmt: skip
    pq.write_table(table, store.table_path("text_embeddings"))

    features = load_item_features(store, data.n_items)
    assert [(t.name, t.modality) for t in features.tokens] == [("title", "text"), ("brand", "text")]
    brand = features.tokens[1]
    assert np.array_equal(brand.versions["generated"][3], brand.versions["original"][3])
    assert not np.array_equal(brand.versions["generated"][4], brand.versions["original"][4])
    assert np.array_equal(brand.versions["original"][5], vectors[rows.index((5, "brand", "original"))])

    study = StudyConfig(seeds=(1,), variants=("neggen", "wo_neg", "wo_cf", "wo_both", "visual_only", "direct"),
                        sensitivity={"counterfactual_weight": (0.0,)}, workers=2)  # fmt: skip
    train = TrainConfig(epochs=2, embedding_size=8, n_layers=1)
    result = run_study(store, study, train)
    assert set(result.skipped) == {"visual_only", "direct"}
    assert set(result.metrics.model) == {"lightgcn", "neggen", "wo_neg", "wo_cf", "wo_both"}
    # w/o CF, w/o both and β = 0 train the same model (no term reads a negative): one run serves all three.
    runs = result.metrics.drop_duplicates(["model", "study", "run_dir"]).set_index(["model", "study"]).run_dir
    assert runs["wo_cf", "main"] == runs["wo_both", "main"] == runs["neggen", "sensitivity"] != runs["wo_neg", "main"]
    assert len({runs["neggen", "main"], runs["wo_neg", "main"], runs["wo_cf", "main"]}) == 3
    assert sorted(p.name.split("-")[0] for p in store.folder("neggen_model").iterdir()) == ["neggen", "wo_cf", "wo_neg"]
    # In two worker processes or in this one, the finished runs are found and reused as they are.
    again = run_study(store, study.model_copy(update={"workers": 1}), train)
    pd.testing.assert_frame_equal(again.metrics.drop(columns="finished_at"), result.metrics.drop(columns="finished_at"))
    # A hard negative strategy chooses the base's negatives; NegGen trains on uniform ones on top.
    dns = TrainConfig.model_validate(train.model_dump() | {"negative_sampler": {"strategy": "dns", "candidates": 4}})
    hard = run_study(store, StudyConfig(seeds=(1,), variants=("neggen",), sensitivity={}, workers=1), dns)
    hard_runs = hard.metrics.drop_duplicates("model").set_index("model").run_dir
    assert hard_runs["lightgcn"] != runs["lightgcn", "main"] and hard_runs["neggen"] != runs["neggen", "main"]
    history = store.read("neggen_history")
    neggen_epochs = history[(history.model == "neggen") & (history.study == "main") & (history.epoch > 0)]
    # The linear encoder starts at 0, so no gradient reaches the negatives before its first step.
    assert neggen_epochs.grad_negative_text.iloc[-1] > 0 and neggen_epochs.grad_negative_visual.isna().all()


def test_negative_hardness_against_a_direct_computation():
    """hardness = cosine of the item's regenerated tokens before/after; cohesion = cosine of the
    negative with its nearest other real item; unchanged tokens (pictures) are left out."""
    rng = np.random.default_rng(5)
    n = 30
    original = rng.normal(size=(n, 6)).astype(np.float32)
    generated = original.copy()
    generated[:10] = rng.normal(size=(10, 6))  # items 0-9: another vector entirely
    generated[10:20] += 0.1 * rng.normal(size=(10, 6)).astype(np.float32)  # items 10-19: a small change
    generated[25] = original[3]  # item 25's negative is item 3
    present = np.ones(n, dtype=bool)
    picture = ModalityToken("image_features", "visual", {"original": original * 2, "generated": original * 2}, present)
    features = ItemFeatures(n, (ModalityToken("title", "text", {"original": original, "generated": generated}, present), picture))
    measures = negative_hardness(features)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)
    expected = (unit(original) * unit(generated)).sum(1)
    np.testing.assert_allclose(measures["hardness"], expected, rtol=1e-5, atol=1e-6)
    assert measures["hardness"][10:20].mean() > measures["hardness"][:10].mean()
    assert np.all(measures["hardness"][20:25] > 0.9999)
    assert measures["cohesion"][25] == pytest.approx(1.0, abs=1e-5)
    assert measures["changed_tokens"].tolist() == [1] * 20 + [0] * 5 + [1] + [0] * 4
    with pytest.raises(ValueError, match="differ from the originals"):
        negative_hardness(ItemFeatures(n, (picture,)))


def test_canonical_config_merges_only_identical_trainings():
    """The stage keys runs by NegGenConfig.canonical(): merged configs must train the same model."""
    shipped = NegGenConfig()
    no_negative_read = [variant_config(shipped, "wo_cf"), variant_config(shipped, "wo_both"),
                        shipped.model_copy(update={"counterfactual_weight": 0.0})]  # fmt: skip
    assert len({c.canonical() for c in no_negative_read}) == 1
    assert shipped.canonical() == shipped  # the defaults are their own canonical form
    # Each of these reads the negatives or changes the computation, so it keeps its own run.
    distinct = [
        shipped,
        variant_config(shipped, "wo_neg"),
        variant_config(shipped, "wo_cf"),
        variant_config(shipped.model_copy(update={"align_weight": 0.1}), "wo_cf"),
        variant_config(shipped.model_copy(update={"align_weight": 0.1}), "wo_both"),
        shipped.model_copy(update={"align_weight": 0.1, "temperature": 0.5}),
        shipped.model_copy(update={"encoder": "attention", "counterfactual_weight": 0.0}),
        variant_config(shipped.model_copy(update={"encoder": "attention"}), "wo_cf"),
        PAPER,
        variant_config(PAPER, "wo_neg"),
    ]
    assert len({c.canonical() for c in distinct}) == len(distinct)
    # Fields added later are left out of the hashed dump where they mean what the code did before
    # them (no β_j term, the base's learning rate): earlier runs, the printed model's too, keep their keys.
    assert {"content_bpr_weight", "learning_rate"} <= set(shipped.model_dump())
    assert not {"content_bpr_weight", "learning_rate", "decay_epochs"} & set(PAPER.canonical().model_dump())
    assert shipped.model_copy(update={"decay_epochs": 50}).model_dump()["decay_epochs"] == 50
    assert "decay_epochs" not in shipped.model_dump()
    assert "content_bpr_weight" not in shipped.model_copy(update={"content_bpr_weight": 0.0}).model_dump()
    assert "learning_rate" not in shipped.model_copy(update={"learning_rate": None}).model_dump()
    assert "precision" not in shipped.model_dump()
    # bfloat16 rows change the numerics, so they are a run of their own; where no rows are
    # precomputed (the printed model, a fine-tuned base) the precision changes nothing.
    bfloat16 = {"precision": "bfloat16"}
    assert shipped.model_copy(update=bfloat16).canonical() != shipped
    assert variant_config(shipped.model_copy(update=bfloat16), "neggen_paper").canonical() == PAPER.canonical()
    finetuned = variant_config(shipped, "finetune")
    assert variant_config(shipped.model_copy(update=bfloat16), "finetune").canonical() == finetuned.canonical()
    # τ without alignment and β of the printed objective change nothing.
    assert shipped.model_copy(update={"temperature": 0.9}).canonical() == shipped
    assert PAPER.model_copy(update={"counterfactual_weight": 7.0}).canonical() == PAPER.canonical()


def test_the_stage_trains_with_its_own_rate_and_schedule():
    """NegGen's learning rate and cosine schedule replace the base's; the printed model keeps the base's."""
    from pipeline.study import neggen_train_config

    base = TrainConfig(learning_rate=1e-3, decay_epochs=7)
    shipped = neggen_train_config(base, NegGenConfig())
    assert (shipped.learning_rate, shipped.decay_epochs) == (1e-2, None)
    decayed = neggen_train_config(base, NegGenConfig(learning_rate=3e-2, decay_epochs=50))
    assert (decayed.learning_rate, decayed.decay_epochs) == (3e-2, 50)
    printed = neggen_train_config(base, PAPER)
    assert (printed.learning_rate, printed.decay_epochs) == (1e-3, None)
