"""NegGen (paper §3.3-3.4): a base recommender plus a content embedding of every item learned
with its generated negative. Two objectives: the shipped `ranking` one and the printed `paper` one.

Every item i carries a short sequence of modality tokens (its encoded attributes: title, brand,
image description, picture features, ...) and the same sequence for its own negative x_i* (the
generated description with contrasting attributes). The base recommender (LightGCN) is the run
of the same seed, frozen by default.

**objective="ranking" (the default, `neggen`).** Chosen on validation (README, "The NegGen
model stage"); it keeps the paper's generated counterfactuals, its causal quantity and its
projection, and adds what eq. 19 lacks, an item the user did not take:

    e_c(i)  = c(x_i) = sum over i's tokens k of P_k x_ik        linear encoder (default), or
            = MLP(mean(SelfAttention(x_i)))                    encoder="attention"
    e_c*(i) = c(x_i*)                                          the same item with its generated attributes
    content_layer="input" (default): (e_u, e_i) = LightGCN(user ego, item ego + λ e_c), y = e_u·e_i
    content_layer="output":          y = e_u·e_i + λ e_u·e_c(i)  (the printed score)
    TE(u,i) = λ/(L+1) e_u·(e_c(i) - e_c*(i))  (input; λ e_u·(...) at the output)
            = y(u, i) - y(u, i with do(x = x_i*)) to first order: eq. 12, the item keeps its ID
    L = mean softplus(y(u,j) - y(u,i))                         BPR, j a sampled non-interacted item
      + β mean softplus(-TE(u,i))                              the positive beats its own counterfactual
      + β_j mean softplus(-λ/(L+1) e_u·P(x_i - x_j))           its content beats j's (β_j = 3)
      + α L_align                                              (α = 0 by default: it lost on validation)
      (+ LightGCN's L2 term on the batch's ego embeddings when the base is fine-tuned)

With the linear encoder TE is proportional to e_u·P(x_i - x_i*): the causal difference of the
original and the generated attributes (eq. 16), projected (eq. 17). P starts at 0, so epoch 0 is
the base model itself and a best epoch 0 means the content added nothing. Only P trains on the
frozen base, with the stage's own Adam learning rate (1e-2; the paper's 1e-3 made every Beauty
run dip at epoch 1 and climb for hundreds of epochs). Ranking uses real content only. With
precision "bfloat16" the precomputed rows (LightGCN([0; X]), X and X - X*) are stored in bfloat16
and multiplied by P cast to bfloat16; each product comes back as float32, so P, its gradient,
Adam's state and every score stay float32. w/o CF
drops the counterfactual term; w/o NEG draws x_i* from another item.

**objective="paper" (the variant `neggen_paper`), as printed, on a frozen base:**

    m(i)   = mean(SelfAttention(x_i)),  m*(i) = mean(SelfAttention(x_i*))      eq. 13-15
    e_c(i) = MLP(m(i) - m*(i)),         e_c*(i) = MLP(m*(i))                    eq. 16-18
    L_rec  = mean softplus(-(λ e_u·e_c(i) + e_u·e_i - e_u·e_c*(i)))             eq. 19 as written
    L      = L_rec + α L_align

Attention runs over the item's tokens (DESIGN.md: over one vector it would be a linear map);
the mean is over the tokens the item has. w/o CF projects the mean of the token projections,
e_c = MLP(mean(proj(x_i))), with no attention and no difference.

L_align = mean over the batch's distinct items of softplus((cos(e_c*(i), e_i) - cos(e_c(i), e_i)) / τ)
keeps eq. 20's intent (e_c closer to the item's collaborative embedding than e_c* is), made bounded:
eq. 20 as printed, (e_c*·e_i - e_c·e_i)/τ, is linear in the embeddings and goes to -inf by scaling
e_c. Here it is the two-way softmax cross-entropy between the positive and the negative logit (so
>= 0) on cosine similarities (so each logit lies in [-1/τ, 1/τ]).
"""

from __future__ import annotations

import math
import warnings
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neggen_model.config import Modality, NegGenConfig
from neggen_model.features import ItemFeatures, TokenSet
from neggen_model.models.base import Recommender, ScoringModel


#: Epoch statistic (and history column) per modality: gradient magnitude of the negatives (Fig. 3).
GRADIENT_COLUMNS: dict[str, str] = {modality: f"grad_negative_{modality}" for modality in get_args(Modality)}


class CausalModule(nn.Module):
    """Modality tokens of an item and of its negative → (e_c, e_c*): the content embedding of the
    item and of the item with its generated attributes."""

    def __init__(self, token_dims: tuple[int, ...], width: int, out_dim: int, encoder: str, causal: bool, difference: bool):
        super().__init__()
        self.encoder = encoder
        self.causal = causal
        self.difference = difference and causal
        self.width = width
        if encoder == "linear":
            # e(x) = sum_k P_k x_k, starting at 0 so that the model starts as its base.
            self.project = nn.ModuleList(nn.Linear(dim, out_dim, bias=False) for dim in token_dims)
            for project in self.project:
                nn.init.zeros_(project.weight)
            return
        # One projection per token: tokens come from different encoders (384-d text, 1280-d image).
        self.project = nn.ModuleList(nn.Linear(dim, width) for dim in token_dims)
        self.query = nn.Linear(width, width, bias=False)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width, bias=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out_dim))  # eq. 17-18
        for module in self.modules():
            if isinstance(module, nn.Linear):  # paper §4.1: Xavier initialisation
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def summarize(self, tokens: list[Tensor], present: Tensor) -> Tensor:
        """[B, width]: self-attention over the item's tokens (eq. 13-14), mean over present ones
        (without attention for w/o CF); for the linear encoder, the sum of the token projections."""
        x = torch.stack([project(t) for project, t in zip(self.project, tokens)], dim=1)  # [B, T, w]
        weight = present.unsqueeze(-1).to(x.dtype)
        if self.encoder == "linear":
            return (x * weight).sum(dim=1)
        if self.causal:
            scores = self.query(x) @ self.key(x).transpose(1, 2) / math.sqrt(self.width)
            # An absent token (no brand, no picture) is never attended to; a finite fill keeps an
            # item with no token at all free of NaN (its summary is then zero, below).
            scores = scores.masked_fill(~present[:, None, :], -1e9)
            x = torch.softmax(scores, dim=-1) @ self.value(x)
        return (x * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)

    def embed(self, tokens: list[Tensor], present: Tensor) -> Tensor:
        """The content embedding of one side on its own, f_M(v, t) (not the printed difference form)."""
        m = self.summarize(tokens, present)
        return m if self.encoder == "linear" else self.mlp(m)

    def forward(
        self, original: list[Tensor], present: Tensor, negative: list[Tensor], negative_present: Tensor
    ) -> tuple[Tensor, Tensor]:
        if not self.difference:
            return self.embed(original, present), self.embed(negative, negative_present)
        m, m_star = self.summarize(original, present), self.summarize(negative, negative_present)
        return self.mlp(m - m_star), self.mlp(m_star)  # eq. 16-18


def _native_bfloat16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 natively (elsewhere torch emulates it, slower than float32)."""
    return any(getattr(torch.cpu, check, lambda: False)() for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def _scaled(matrix: np.ndarray, scale: float) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32) / scale)


class NegGen(ScoringModel):
    """Base recommender + causal module, scored by y = e_u·e_i + λ e_u·e_c(i)."""

    name = "neggen"
    validate_before_training = True

    def __init__(self, base: Recommender, features: ItemFeatures, config: NegGenConfig, seed: int):
        super().__init__()
        if features.n_items != base.n_items:
            raise ValueError(f"features cover {features.n_items} items, the base model {base.n_items}")
        self.config = config
        self.base = base
        self.base.requires_grad_(config.finetune_base)
        tokens: TokenSet = features.token_set(config.modalities, config.negatives, seed)
        self.token_names = tokens.names
        self.token_modalities = tokens.modalities
        # Features are data, not weights: buffers (moved by .to()) kept out of checkpoints.
        # Each token is divided by the RMS norm of its original vectors, so that encoders with
        # large activations (image CNNs) do not start out dominating the attention.
        for index, (original, negative) in enumerate(zip(tokens.original, tokens.negative)):
            rms = float(np.sqrt(np.mean(np.sum(original.astype(np.float64) ** 2, axis=1)))) or 1.0
            self.register_buffer(f"original_{index}", _scaled(original, rms), persistent=False)
            self.register_buffer(f"negative_{index}", _scaled(negative, rms), persistent=False)
        self.register_buffer("present", torch.from_numpy(tokens.present), persistent=False)
        self.register_buffer("negative_present", torch.from_numpy(tokens.negative_present), persistent=False)
        torch.manual_seed(seed)
        embedding_size = base.item_embedding.shape[1]
        dims = tuple(t.shape[1] for t in tokens.original)
        self.causal = CausalModule(
            dims, config.width, embedding_size, config.encoder, config.causal, difference=config.objective == "paper"
        )
        if config.objective == "ranking" and config.encoder == "attention":
            # e_c starts at 0 (as the linear encoder does), so epoch 0 scores exactly as the base
            # does: a best epoch 0 then says that the content added nothing on validation.
            nn.init.zeros_(self.causal.mlp[-1].weight)
        if not config.finetune_base:
            # Frozen base: its final embeddings are constants, computed once.
            with torch.no_grad():
                user_all, item_all = base.final_embeddings()
            self.register_buffer("base_user", user_all.detach().clone(), persistent=False)
            self.register_buffer("base_item", item_all.detach().clone(), persistent=False)
        # Linear encoder at the input of a frozen, linear propagation: LightGCN(ego + λ[0; Σ_k X_k P_k])
        # = LightGCN(ego) + λ LightGCN([0; X]) P, with X the item's tokens side by side and P the
        # P_k stacked. LightGCN([0; X]) is a constant, so a batch needs its own rows only, not a pass
        # over the graph, and eq. 12's effect needs P(X_i - X_i*) of its positives only (README).
        self.precomputed = config.precomputable and base.linear_propagation
        if self.precomputed:
            with torch.no_grad():
                original, negative = (
                    torch.cat([getattr(self, f"{side}_{k}") * mask[:, k : k + 1] for k in range(len(self.token_names))], 1)
                    for side, mask in (("original", self.present), ("negative", self.negative_present))
                )
                users_x, items_x = base.propagate(original.new_zeros(base.n_users, original.shape[1]), original)
            dtype = getattr(torch, config.precision)
            if dtype == torch.bfloat16 and self.device.type == "cpu" and not _native_bfloat16_cpu():
                warnings.warn("NegGen precision bfloat16 on a CPU without AVX512-BF16 or AMX is slower than "
                              "float32 here: set the study's model precision to float32", stacklevel=2)  # fmt: skip
            self.register_buffer("propagated", torch.cat([users_x, items_x]).to(dtype), persistent=False)
            self.register_buffer("content_original", original.to(dtype), persistent=False)
            self.register_buffer("content_difference", (original - negative).to(dtype), persistent=False)
            self.token_columns = np.cumsum([0] + [t.shape[1] for t in tokens.original])
        self._grad_sq: dict[str, Tensor] = {}  # this batch's per-item squared gradient norms
        self._grad_rows: Tensor | None = None  # which of those items count: the positives (None: all)
        self._grad_sum: dict[str, float] = {}
        self._grad_count: dict[str, int] = {}

    @property
    def device(self) -> torch.device:
        return self.base.device

    def _base_embeddings(self) -> tuple[Tensor, Tensor]:
        if self.config.finetune_base:
            return self.base.final_embeddings()
        return self.base_user, self.base_item

    def causal_embeddings(self, items: Tensor | None = None, gradient_scale: float | None = None) -> tuple[Tensor, Tensor]:
        """(e_c, e_c*) of the given items (all items when None). With gradient_scale, the loss
        gradient reaching each negative token is recorded (x gradient_scale) for Fig. 3."""
        pick = (lambda t: t) if items is None else (lambda t: t[items])
        n_tokens = len(self.token_names)
        original = [pick(getattr(self, f"original_{k}")) for k in range(n_tokens)]
        negative = [pick(getattr(self, f"negative_{k}")) for k in range(n_tokens)]
        if gradient_scale is not None:
            negative = [self._track(t, self.token_modalities[k], gradient_scale) for k, t in enumerate(negative)]
        return self.causal(original, pick(self.present), negative, pick(self.negative_present))

    def content_embeddings(self) -> Tensor:
        """e_c of every item, the side that ranking uses (e_c* is computed only where a loss needs it)."""
        if self.causal.difference:  # the printed e_c = MLP(m - m*) needs each item's negative
            return self.causal_embeddings()[0]
        original = [getattr(self, f"original_{k}") for k in range(len(self.token_names))]
        return self.causal.embed(original, self.present)

    def _stacked_projection(self) -> Tensor:
        """P = [P_1 ... P_K]: the linear encoder as one map of the side-by-side tokens."""
        return torch.cat([project.weight for project in self.causal.project], dim=1)

    def _project(self, content: Tensor, projection: Tensor) -> Tensor:
        """content P^T in the precomputed rows' dtype (bfloat16 or float32), returned as float32."""
        return F.linear(content, projection.to(content.dtype)).float()

    def _graph_content(self, rows: Tensor | None = None) -> Tensor:
        """λ LightGCN([0; X])[rows] P: what the items' content adds to the final embeddings of
        `rows` (users first, then items; all when None). Only when self.precomputed."""
        propagated = self.propagated if rows is None else self.propagated.index_select(0, rows)
        return self.config.score_weight * self._project(propagated, self._stacked_projection())

    def _propagated_with_content(self) -> tuple[Tensor, Tensor]:
        """content_layer "input": LightGCN run on ego embeddings whose items carry λ e_c (real content)."""
        if self.precomputed:
            added = self._graph_content()
            return self.base_user + added[: self.base.n_users], self.base_item + added[self.base.n_users :]
        e_c = self.content_embeddings()
        return self.base.propagate(self.base.user_embedding, self.base.item_embedding + self.config.score_weight * e_c)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        if self.config.content_layer == "input":
            return self._propagated_with_content()
        user_all, item_all = self._base_embeddings()
        e_c = self.content_embeddings()
        # y = e_u·e_i + λ e_u·e_c = e_u·(e_i + λ e_c): one item matrix serves full ranking.
        return user_all, item_all + self.config.score_weight * e_c

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """Eq. 21 on a batch of (user, positive, sampled negative) triples (module docstring).

        "paper": eq. 19 + α L_align; neg_items is unused (each positive's only negative is its
        generated description, or for w/o NEG a fixed uniformly drawn item). "ranking": BPR of
        y(u, i) against y(u, j) for the sampled non-interacted j, + β eq. 19 + α L_align."""
        self._fold_gradients()
        ranking = self.config.objective == "ranking"
        if ranking and self.precomputed and self.config.align_weight == 0:
            return self._precomputed_ranking_loss(users, pos_items, neg_items)
        n_pairs = len(users)
        scored = torch.cat([pos_items, neg_items]) if ranking else pos_items
        items, inverse = torch.unique(scored, return_inverse=True)
        # Fig. 3 is over the batch's distinct positives (a sampled j's own negative is not in the loss).
        self._grad_rows = torch.isin(items, pos_items) if ranking else None
        # The batch loss is a mean over pairs; x len(users) records gradients of the pairs' sum.
        scale = float(n_pairs) if self.training else None
        e_c_items, e_c_star_items = self.causal_embeddings(items, gradient_scale=scale)
        weight = self.config.score_weight
        at_input = self.config.content_layer == "input"
        if self.precomputed:  # the batch's rows only (see __init__)
            e_u = self.base_user[users] + self._graph_content(users)
            item_rows = self.base_item[items] + self._graph_content(items + self.base.n_users)
        else:  # at the input the content is inside the propagated items; at the output it is added below
            user_all, item_all = self._propagated_with_content() if at_input else self._base_embeddings()
            e_u, item_rows = user_all[users], item_all[items]
        effect_weight = self._effect_weight()
        pos = inverse[:n_pairs]

        def score(index: Tensor) -> Tensor:
            e_i = item_rows[index] if at_input else item_rows[index] + weight * e_c_items[index]
            return (e_u * e_i).sum(1)

        if ranking:
            y_pos, y_neg = score(pos), score(inverse[n_pairs:])
            # Eq. 12's total effect: item i with its own attributes against i with the generated
            # ones (same collaborative embedding e_i, so only the content terms differ).
            effect = effect_weight * (e_u * (e_c_items[pos] - e_c_star_items[pos])).sum(1)
            content_margin = effect_weight * (e_u * (e_c_items[pos] - e_c_items[inverse[n_pairs:]])).sum(1)
            loss = self._ranking_loss(y_pos, y_neg, effect, content_margin)
        else:
            loss = self.recommendation_loss(e_u, item_rows[pos], e_c_items[pos], e_c_star_items[pos])
        loss = loss + self.config.align_weight * self.alignment_loss(e_c_items, e_c_star_items, item_rows)
        if self.config.finetune_base:
            loss = loss + self.base.ego_regulariser(users, *((pos_items, neg_items) if ranking else (pos_items,)))
        return loss

    def _effect_weight(self) -> float:
        """The factor of e_u·(e_c - e_c*) in eq. 12's effect: λ at the output. At the input, replacing
        x_i by x_i* moves i's layer-0 embedding by λ(e_c* - e_c); through LightGCN's mean over L+1
        layers its own final embedding moves by 1/(L+1) of that (first order)."""
        if self.config.content_layer == "output":
            return self.config.score_weight
        return self.config.score_weight / (getattr(self.base, "n_layers", 0) + 1)

    def _ranking_loss(self, y_pos: Tensor, y_neg: Tensor, effect: Tensor | None, content_margin: Tensor | None) -> Tensor:
        """BPR of the positive against the sampled item, + β softplus(-TE) (w/o CF: BPR alone),
        + β_j softplus(-(the same difference of content alone, the sampled item in place of x_i*)).
        effect / content_margin may be None where their term is off."""
        loss = F.softplus(y_neg - y_pos).mean()
        if self.config.causal:
            loss = loss + self.config.counterfactual_weight * F.softplus(-effect).mean()
        if self.config.content_bpr_weight:
            loss = loss + self.config.content_bpr_weight * F.softplus(-content_margin).mean()
        return loss

    def _precomputed_ranking_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """The ranking loss from the batch's rows of the propagated content (same value and
        gradients as the general path, checked by a test; α = 0 so e_c* alone is never needed).
        A term that is off (w/o CF, β_j = 0) costs nothing."""
        n_users, n_pairs = self.base.n_users, len(users)
        projection = self._stacked_projection()
        rows = torch.cat([users, pos_items + n_users, neg_items + n_users])
        added = self.config.score_weight * self._project(self.propagated.index_select(0, rows), projection)
        e_u = self.base_user[users] + added[:n_pairs]
        y_pos = (e_u * (self.base_item[pos_items] + added[n_pairs : 2 * n_pairs])).sum(1)
        y_neg = (e_u * (self.base_item[neg_items] + added[2 * n_pairs :])).sum(1)
        effect = content_margin = None
        if self.config.causal:
            positives, pair_of = torch.unique(pos_items, return_inverse=True)
            difference = self.content_difference.index_select(0, positives)  # X_i - X_i* per distinct positive
            if self.training:  # d/dX* of the loss is -d/d(X - X*): the same norms for Fig. 3
                columns = self.token_columns
                difference = torch.cat([
                    self._track(difference[:, columns[k] : columns[k + 1]], modality, float(n_pairs),
                                present=self.negative_present[positives, k])
                    for k, modality in enumerate(self.token_modalities)
                ], dim=1)  # fmt: skip
            effect = self._effect_weight() * (e_u * self._project(difference, projection)[pair_of]).sum(1)
        if self.config.content_bpr_weight:
            sampled = self.content_original.index_select(0, pos_items) - self.content_original.index_select(0, neg_items)
            content_margin = self._effect_weight() * (e_u * self._project(sampled, projection)).sum(1)
        return self._ranking_loss(y_pos, y_neg, effect, content_margin)

    def recommendation_loss(self, e_u: Tensor, e_i: Tensor, e_c: Tensor, e_c_star: Tensor) -> Tensor:
        """Eq. 19: mean -log σ(λ e_u·e_c + e_u·e_i - e_u·e_c*), as softplus to avoid underflow."""
        margin = self.config.score_weight * (e_u * e_c).sum(1) + (e_u * e_i).sum(1) - (e_u * e_c_star).sum(1)
        return F.softplus(-margin).mean()

    def alignment_loss(self, e_c: Tensor, e_c_star: Tensor, e_i: Tensor) -> Tensor:
        """Bounded eq. 20: mean softplus((cos(e_c*, e_i) - cos(e_c, e_i)) / τ) (module docstring)."""
        positive = F.cosine_similarity(e_c, e_i, dim=1)
        negative = F.cosine_similarity(e_c_star, e_i, dim=1)
        return F.softplus((negative - positive) / self.config.temperature).mean()

    # --- gradient magnitude of the negatives per modality (paper Fig. 3) --------------------

    def _track(self, negative: Tensor, modality: str, scale: float, present: Tensor | None = None) -> Tensor:
        """negative as a leaf whose gradient is recorded; `present` (rows) zeroes the rows whose
        negative token is absent, when the tensor is a difference that still has the original part."""
        leaf = negative.detach().requires_grad_(True)

        def record(grad: Tensor) -> None:
            # Tokens of one modality add up: the norm is over all of that modality's tokens.
            sq = (grad.detach().float() * scale).square().sum(dim=1)
            if present is not None:
                sq = sq * present
            self._grad_sq[modality] = self._grad_sq.get(modality, 0) + sq

        leaf.register_hook(record)
        return leaf

    def _fold_gradients(self) -> None:
        for modality, sq in self._grad_sq.items():
            sq = sq if self._grad_rows is None else sq[self._grad_rows]
            self._grad_sum[modality] = self._grad_sum.get(modality, 0.0) + float(sq.sqrt().sum())
            self._grad_count[modality] = self._grad_count.get(modality, 0) + int(sq.numel())
        self._grad_sq = {}

    def pop_epoch_stats(self) -> dict[str, float]:
        """Mean L2 norm, per distinct positive item of a batch, of the loss gradient w.r.t. that item's
        negative tokens of each modality (the loss summed over the batch's pairs)."""
        self._fold_gradients()
        stats = {GRADIENT_COLUMNS[m]: self._grad_sum[m] / self._grad_count[m] for m in self._grad_sum}
        self._grad_sum, self._grad_count = {}, {}
        return stats
