"""LGMRec (Guo et al., AAAI 2024): "Local and Global Graph Learning for Multimodal Recommendation".
Paper Table 2 row "LGMRec"; defaults follow MMRec's `lgmrec.py` / LGMRec.yaml (its Baby setting).

What is computed (per modality m the dataset has: text, visual):

- collaborative embedding (CGE): LightGCN over the user-item graph (2 layers, mean of layers 0..L);
- modality embedding (MGE): item features projected by a free matrix W_m (frozen raw features),
  users as the mean of their items' projections, then L_m = 2 propagations over the normalised
  user-item graph (last layer); local embedding = CGE + Σ_m normalize(MGE_m);
- global hypergraph embedding (GHE): item-to-hyperedge weights softmax_Gumbel(f_m H_m / τ) (τ = 0.2,
  hyper_num = 4 hyperedges), user-to-hyperedge weights from the sum over the user's items; with
  dropout (keep 0.5) on both, hyperedge embeddings = A_iᵀ CGE_items, then users A_u · and items A_i ·
  that; final = local + α normalize(Σ_m GHE_m) (α = 0.3);
- loss: BPR + cl_weight * hypergraph contrast (InfoNCE, τ = 0.2, summed over the batch) between the
  visual and text hyperedge views of the batch's users and positive items + reg_weight *
  (‖u‖ + ‖i+‖ + ‖i−‖)/batch.

Departures, all forced by determinism or by text-only data: the Gumbel noise and the dropout masks
are drawn from a generator that `begin_epoch` seeds from the trainer's model generator (so resumed
runs are bit for bit); ranking uses one fixed Gumbel draw per model seed (MMRec draws fresh noise at
every ranking, which makes its evaluation itself random). With one modality (Beauty, MovieLens)
there is no second view to contrast, so the contrast term is absent (MMRec's code cannot run then).

Speed, not a departure: each hypergraph view is (weights to the hyperedges) @ latent, of rank
hyper_num, so the contrast's [batch, all users / items] logits are taken through those factors
(`_contrast`), hyper_num multiply-adds each instead of d.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent
from neggen_model.data import InteractionData
from neggen_model.models.lightgcn import _SymmetricSpMM
from neggen_model.models.multimodal import ContentModel, ModelParams, SparseMM, bounded_logsumexp, sym_norm_bipartite, torch_csr


class HyperView(NamedTuple):
    """One modality's hypergraph embeddings: users' = users @ latent, items' = items @ latent."""

    users: Tensor  # [n_users, hyper_num] weights to the hyperedges (after Gumbel softmax and dropout)
    items: Tensor  # [n_items, hyper_num]
    latent: Tensor  # [hyper_num, d] the hyperedges' embeddings


class LGMRecParams(ModelParams):
    n_ui_layers: int = Field(2, ge=0, description="LightGCN layers of the collaborative embedding.")
    n_mm_layers: int = Field(2, ge=0, description="Propagations of the modality embeddings.")
    n_hyper_layer: int = Field(1, ge=1, description="Hypergraph propagation layers.")
    hyper_num: int = Field(4, gt=0, description="Hyperedges per modality.")
    keep_rate: float = Field(0.5, gt=0.0, le=1.0, description="1 - dropout on the hyperedge weights.")
    alpha: float = Field(0.3, ge=0.0, description="Weight of the global hypergraph embedding.")
    cl_weight: float = Field(1e-4, ge=0.0, description="Weight of the hypergraph contrastive loss.")
    reg_weight: float = Field(1e-6, ge=0.0, description="Weight of the norm penalty on the batch's vectors.")
    temperature: float = Field(
        0.2, ge=0.025, description="τ of the Gumbel softmax and the contrast; at least 1/40, so its logits cannot overflow unshifted."
    )


class LGMRec(ContentModel):
    name = "lgmrec"
    Params = LGMRecParams
    # MMRec ships one setting per dataset (Baby: α 0.3, keep 0.5, 4 hyperedges; Sports: α 0.6,
    # keep 0.4; Clothing: α 0.2, keep 0.2, 64 hyperedges); the grid searches α over them.
    grid: ClassVar[dict[str, tuple]] = {"alpha": (0.2, 0.3, 0.6)}

    def __init__(self, data: InteractionData, config: TrainConfig, content: ItemContent, params=None):
        super().__init__(data, config, content, params)
        p: LGMRecParams = self.params
        d = config.embedding_size
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.projections = nn.ParameterDict()
        self.hyperedges = nn.ParameterDict()
        for modality, matrix in content.matrices().items():
            self.register_buffer(f"_feat_{modality}", torch.from_numpy(matrix.copy()), persistent=False)
            self.projections[modality] = nn.Parameter(nn.init.xavier_uniform_(torch.empty(matrix.shape[1], d)))
            self.hyperedges[modality] = nn.Parameter(nn.init.xavier_uniform_(torch.empty(matrix.shape[1], p.hyper_num)))
        users, items = data.train_pairs()
        inter = data.train.astype(np.float32)
        self.register_buffer("inter", torch_csr(inter), persistent=False)
        self.register_buffer("inter_t", torch_csr(inter.T), persistent=False)
        degree = np.asarray(inter.sum(axis=1)).ravel() + 1e-7
        self.register_buffer("inv_user_degree", torch.from_numpy((1.0 / degree).astype(np.float32))[:, None], persistent=False)
        self.register_buffer("norm_adj", torch_csr(sym_norm_bipartite(users, items, data.n_users, data.n_items)), persistent=False)
        self._seed = config.seed
        self._generator: torch.Generator | None = None

    def feature(self, modality: str) -> Tensor:
        return getattr(self, f"_feat_{modality}")

    def begin_epoch(self, rng: np.random.Generator) -> None:
        self._generator = torch.Generator().manual_seed(int(rng.integers(2**62)))

    def _noise_source(self) -> torch.Generator:
        if self.training and self._generator is not None:
            return self._generator
        # Ranking (and any use before the first epoch): one fixed draw per model seed.
        return torch.Generator().manual_seed(self._seed)

    def _gumbel_softmax(self, logits: Tensor, generator: torch.Generator) -> Tensor:
        # Noise drawn on the CPU generator, then moved: the same draws on any device.
        gumbels = -torch.empty(logits.shape, dtype=logits.dtype).exponential_(generator=generator).to(logits.device).log()
        return F.softmax((logits + gumbels) / self.params.temperature, dim=1)

    def _dropout(self, x: Tensor, generator: torch.Generator) -> Tensor:
        keep = self.params.keep_rate
        if not self.training or keep >= 1.0:
            return x
        mask = (torch.rand(x.shape, generator=generator) < keep).to(x.device)
        return x * mask / keep

    def _inter_mm(self, x: Tensor) -> Tensor:
        return SparseMM.apply(self.inter, self.inter_t, x)

    def forward_all(self) -> tuple[Tensor, Tensor, dict[str, HyperView]]:
        p: LGMRecParams = self.params
        generator = self._noise_source()
        layer = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        total = layer
        for _ in range(p.n_ui_layers):
            layer = _SymmetricSpMM.apply(self.norm_adj, layer)
            total = total + layer
        cge = total / (p.n_ui_layers + 1)
        local, hyper_sum, views = cge, 0.0, {}
        for modality in self.projections:
            feats = self.feature(modality)
            items = feats @ self.projections[modality]
            users = self._inter_mm(items) * self.inv_user_degree
            mge = torch.cat([users, items], dim=0)
            for _ in range(p.n_mm_layers):
                mge = _SymmetricSpMM.apply(self.norm_adj, mge)
            local = local + F.normalize(mge)
            item_hyper = feats @ self.hyperedges[modality]
            user_hyper = self._gumbel_softmax(self._inter_mm(item_hyper), generator)
            item_hyper = self._gumbel_softmax(item_hyper, generator)
            item_hyper, user_hyper = self._dropout(item_hyper, generator), self._dropout(user_hyper, generator)
            item_ret = cge[self.n_users :]
            for _ in range(p.n_hyper_layer):
                latent = item_hyper.T @ item_ret
                item_ret = item_hyper @ latent
            # Each view is (weights to the hyperedges) @ latent: rank hyper_num, kept factored for the contrast.
            views[modality] = HyperView(user_hyper, item_hyper, latent)
            hyper_sum = hyper_sum + torch.cat([user_hyper @ latent, item_ret], dim=0)
        final = local + p.alpha * F.normalize(hyper_sum)
        return final[: self.n_users], final[self.n_users :], views

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        users, items, _ = self.forward_all()
        return users, items

    def _contrast(self, anchors: Tensor, weights: Tensor, latent: Tensor, index: Tensor) -> Tensor:
        """InfoNCE, summed over the batch (MMRec's), of each anchor against row `index` of the other
        view among all its rows; that view is weights @ latent (n x hyper_num times hyper_num x d).

        Computed through the factors: the cosine of anchor a with row w @ latent is
        (a latentᵀ) · w / ‖w latent‖, and ‖w latent‖² = w (latent latentᵀ) wᵀ, so the [batch, all]
        logits cost hyper_num, not d, multiply-adds each (16x fewer at MMRec's 4 and 64).
        """
        # τ divides the anchors, not the [batch, all] logits: the same numbers, a smaller division.
        anchors = F.normalize(anchors) / self.params.temperature
        squared_norms = ((weights @ (latent @ latent.T)) * weights).sum(dim=1)
        # F.normalize's floor of 1e-12 on the norm; below it (a row dropout zeroed) no gradient flows.
        unit_weights = weights * squared_norms.clamp_min(1e-24).rsqrt()[:, None]
        projected = anchors @ latent.T
        positives = (projected * unit_weights[index]).sum(dim=1)
        return (bounded_logsumexp(projected, unit_weights) - positives).sum()

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        p: LGMRecParams = self.params
        user_all, item_all, views = self.forward_all()
        u, pos, neg = user_all[users], item_all[pos_items], item_all[neg_items]
        loss = F.softplus((u * neg).sum(1) - (u * pos).sum(1)).mean()
        if "visual" in views and "text" in views and p.cl_weight > 0:
            visual, text = views["visual"], views["text"]
            loss = loss + p.cl_weight * (
                self._contrast(visual.users[users] @ visual.latent, text.users, text.latent, users)
                + self._contrast(visual.items[pos_items] @ visual.latent, text.items, text.latent, pos_items)
            )
        return loss + p.reg_weight * (u.norm() + pos.norm() + neg.norm()) / len(users)
