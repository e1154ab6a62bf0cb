"""How much can item content add to LightGCN on the demo world? Ceilings for the NegGen result.

Needs a materialized demo (`neggen materialize --dataset demo`). For each seed of the study:

* `lightgcn`: the base model of that seed (the study's own run, reused);
* `oracle`: LightGCN score + w x (number of the user's true likes the item has), w chosen on
  validation from a grid: what perfect knowledge of the attributes and of the user's tastes adds;
* `content onehot`: a content-only model learned with BPR from the items' true attributes
  (one-hot) and a free user embedding: what can be *learned* from perfect item attributes and
  the training interactions;
* `content encoded`: the same learner on the encoded fields NegGen uses (text_embeddings,
  image_embeddings);
* `lightgcn + true attributes (from scratch)`: LightGCN whose item layer-0 embedding is its free
  embedding plus W a_i (a_i the one-hot true attributes), trained from scratch with BPR: the
  content-aware baseline of the demo world's acceptance (it must beat LightGCN by >= 10% test
  Recall@20 over the seeds; that is a property of the world, not of NegGen);
* `lightgcn + true attributes (NegGen's path, β = 0)`: the same attributes through NegGen's
  content path on the frozen base, without counterfactuals;
* `neggen`: the shipped NegGen on the encoded fields, for comparison.

Validation picks the epoch of the content models (every 5 epochs) and w of the oracle; the test
column is scored once at that choice. Prints a markdown table (mean ± std over seeds).

    .venv/bin/python bench/neggen_demo_headroom.py [--config neggen.yaml] [--epochs 60] [--seeds 2024 ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from assets.resources import NeggenResource
from neggen_model.checkpoint import load_model
from neggen_model.config import NegGenConfig
from neggen_model.evaluate import rank_metrics
from neggen_model.features import ItemFeatures, ModalityToken
from neggen_model.models.lightgcn import LightGCN
from neggen_model.models.neggen import NegGen
from neggen_model.sampling import UniformNegativeSampler
from neggen_model.trainer import Trainer
from pipeline.config import load_config
from pipeline.demo import VOCABULARY, read_world
from pipeline.study import load_item_features, neggen_train_config
from pipeline.tables import BASE_MODEL as BASE_STAGE
from pipeline.training import BASE_MODEL, load_interaction_data, train_run

ORACLE_WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0)


def recall20(score_fn, data, split):
    return rank_metrics(score_fn, data.split(split), data.train, (20,), 512)["recall@20"]


def true_attributes(resource: NeggenResource, data) -> tuple[np.ndarray, np.ndarray]:
    """(items x values one-hot, users x items number of matched likes) from world.json."""
    world = read_world(resource.store("demo").source_dir)
    items, users = resource.store("demo").read("items"), resource.store("demo").read("users")
    offsets = np.cumsum([0] + [len(v) for v in VOCABULARY.values()])
    onehot = np.zeros((data.n_items, offsets[-1]), np.float32)
    for row in items.itertuples():
        truth = world["items"][row.item_source]
        for k, attribute in enumerate(VOCABULARY):
            onehot[row.item_id, offsets[k] + VOCABULARY[attribute].index(truth[attribute])] = 1.0
    likes = np.zeros((data.n_users, offsets[-1]), np.float32)
    for row in users.itertuples():
        for attribute, value in world["users"][row.user_source]["likes"]:
            k = list(VOCABULARY).index(attribute)
            likes[row.user_id, offsets[k] + VOCABULARY[attribute].index(value)] = 1.0
    return onehot, likes @ onehot.T


def content_model(data, features: np.ndarray, seed: int, epochs: int) -> tuple[float, float]:
    """BPR on score(u, i) = p_u · (W x_i + b); (valid, test) Recall@20 at the best valid epoch."""
    torch.manual_seed(seed)
    x = torch.from_numpy(features)
    project = torch.nn.Linear(x.shape[1], 64)
    users = torch.nn.Parameter(torch.randn(data.n_users, 64) * 0.1)
    optimizer = torch.optim.Adam([*project.parameters(), users], lr=1e-2)
    pair_users, pair_items = data.train_pairs()
    sampler = UniformNegativeSampler(data.train, seed)
    rng = np.random.default_rng(seed)
    best = (-1.0, 0.0)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(pair_users))
        negatives = sampler.sample(pair_users[order])
        for start in range(0, len(order), 2048):
            batch = order[start : start + 2048]
            u, p = torch.from_numpy(pair_users[batch]), torch.from_numpy(pair_items[batch])
            n = torch.from_numpy(negatives[start : start + 2048])
            items = project(x)
            loss = F.softplus((users[u] * items[n]).sum(1) - (users[u] * items[p]).sum(1)).mean()
            loss = loss + 1e-4 * users[u].square().sum() / len(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch % 5 == 0:
            with torch.no_grad():
                items = project(x)
                score = lambda batch_users: users[batch_users] @ items.T  # noqa: E731
                valid = recall20(score, data, "valid")
                if valid > best[0]:
                    best = (valid, recall20(score, data, "test"))
    return best


class AttributeLightGCN(LightGCN):
    """LightGCN with W a_i added to each item's layer-0 embedding (a VBPR-style hybrid)."""

    name = "lightgcn_attributes"

    def __init__(self, data, config, attributes: np.ndarray):
        super().__init__(data, config)
        self.register_buffer("attributes", torch.from_numpy(attributes), persistent=False)
        self.attribute_projection = torch.nn.Linear(attributes.shape[1], config.embedding_size, bias=False)
        torch.nn.init.xavier_uniform_(self.attribute_projection.weight)

    def propagate(self, user_ego, item_ego):
        return super().propagate(user_ego, item_ego + self.attribute_projection(self.attributes))


def attribute_lightgcn(data, attributes: np.ndarray, config) -> tuple[float, float]:
    torch.manual_seed(config.seed)
    result = Trainer(AttributeLightGCN(data, config, attributes), data, config, progress=False).fit()
    return result.best_valid["recall@20"], result.test["mmrec"]["recall@20"]


def content_path(base_run, data, features: ItemFeatures, config: NegGenConfig, seed: int) -> tuple[float, float]:
    """(valid, test) Recall@20 of NegGen's content path on `features`, fine-tuned from the base run."""
    base, _ = load_model(base_run.run_dir, data)
    result = Trainer(NegGen(base, features, config, seed), data, neggen_train_config(base_run.config, config), progress=False).fit()
    return result.best_valid["recall@20"], result.test["mmrec"]["recall@20"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the study's seeds")
    args = parser.parse_args()
    resource = NeggenResource(config_path=args.config)
    config = load_config(args.config)
    store = resource.store("demo")
    data = load_interaction_data(store)
    features = load_item_features(store, data.n_items)
    encoded = np.concatenate(
        [t.versions["original"] / np.sqrt(np.mean(np.sum(t.versions["original"] ** 2, 1))) for t in features.tokens], 1
    ).astype(np.float32)
    onehot, matched = true_attributes(resource, data)
    matched = torch.from_numpy(matched)
    # The true attributes as one token whose "negative" is itself: no counterfactual (β = 0).
    truth = ItemFeatures(data.n_items, (ModalityToken(
        "true_attributes", "text", {"original": onehot, "generated": onehot}, np.ones(data.n_items, dtype=bool)),))
    rows = []
    for seed in args.seeds or config.study_config("demo").seeds:
        base = train_run(store, BASE_STAGE, BASE_MODEL, config.train_config("demo").model_copy(update={"seed": seed}), data)
        model, _ = load_model(base.run_dir, data)
        with torch.no_grad():
            user_all, item_all = model.final_embeddings()
        rows.append(("lightgcn", seed, base.result.best_valid["recall@20"], base.result.test["mmrec"]["recall@20"]))
        oracle = []
        for w in ORACLE_WEIGHTS:
            score = lambda u, w=w: user_all[u] @ item_all.T + w * matched[u]  # noqa: E731
            oracle.append((recall20(score, data, "valid"), w, score))
        valid, _, score = max(oracle, key=lambda t: t[0])
        rows.append(("oracle: lightgcn + w x matched likes", seed, valid, recall20(score, data, "test")))
        rows.append(("content onehot (true attributes)", seed, *content_model(data, onehot, seed, args.epochs)))
        rows.append(("content encoded (NegGen's tokens)", seed, *content_model(data, encoded, seed, args.epochs)))
        rows.append(("lightgcn + true attributes (from scratch)", seed, *attribute_lightgcn(data, onehot, base.config)))
        rows.append(("lightgcn + true attributes (NegGen's path, β = 0)", seed,
                      *content_path(base, data, truth, NegGenConfig(counterfactual_weight=0.0), seed)))
        rows.append(("neggen (encoded fields, generated negatives)", seed,
                     *content_path(base, data, features, config.study_config("demo").model, seed)))
        print(rows[-7:], flush=True)
    table = pd.DataFrame(rows, columns=["model", "seed", "valid_recall@20", "test_recall@20"])
    summary = table.groupby("model", sort=False)[["valid_recall@20", "test_recall@20"]].agg(["mean", "std"])
    print(summary.round(4).to_string())
    base = table[table.model == "lightgcn"].set_index("seed")["test_recall@20"]
    for model, runs in table[table.model != "lightgcn"].groupby("model", sort=False):
        ratio = runs.set_index("seed")["test_recall@20"] / base
        print(f"{model}: test Recall@20 / LightGCN's = {ratio.mean():.3f} (min {ratio.min():.3f} over {len(ratio)} seeds)")


if __name__ == "__main__":
    main()
