"""DiffMM (Jiang et al., ACM MM 2024): "DiffMM: Multi-Modal Diffusion Model for Recommendation".
Paper Table 2 row "DiffMM"; the architecture follows the authors' code (HKUDS/DiffMM, `Model.py`,
`Main.py`), the defaults its parameters with the authors' command for Amazon Baby (reg 1e-5,
ssl_reg 0.1, keepRate 1, e_loss 0.01; MMRec has no DiffMM).

What is computed, per modality m the dataset has (text, visual):

- features f_m = leakyReLU₀.₂(X_m W_m) (W_m a free matrix, raw features frozen);
- graph diffusion, before every training epoch (`begin_epoch`): a denoiser per modality
  (x_t, sinusoidal step embedding → Linear → tanh → Linear, 1000 hidden) is trained on every user's
  interaction row x₀ (a denoiser dropout of 0.5 on its input): x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε
  (T = 5 steps; 1 − ᾱ_t linear in 0.1 × [1e-4, 0.02], β₀ = 1e-4), loss (SNR(t−1) − SNR(t))
  ‖x₀ − x̂₀‖²/n_items + e_loss × ‖x̂₀ f_m − x₀ E_items‖²/d (modality-aware alignment of the
  generated row with the id embeddings; SNR(−1) − SNR(0) read as 1);
  then every row x₀ is denoised (T reverse steps, no noise) and its top rebuild_k = 5 items form the
  modality's generated user-item graph G_m (self loops, D^-1/2 (A + I) D^-1/2, edges dropped with
  keep_rate for training);
- Â = D^-1/2 (A + I) D^-1/2 of the training graph; per modality
  c_m = Â[E_u ; normalize(f_m)], e_m = c_m + Â[(c_m)_users ; E_i] + λ_adj G_m[E_u ; E_i] (λ_adj = 0.2);
- fused = Σ_m softmax(w)_m e_m (w initialised equal); final = Σ_{l=0..L} Âˡ fused + λ_r normalize(fused)
  (L = 1, λ_r = 0.5); score = user · item;
- loss: BPR + reg_weight (‖E_u‖² + ‖E_i‖²) + ssl_weight × InfoNCE (τ = 0.5, the batch's users and
  positive items against all users / items) between the modality views v_m = Σ_l Âˡ G_m[E_u ;
  normalize(f_m)]: each pair of modalities (`contrast = modalities`, the authors' default) or each
  modality against the final embeddings (`contrast = main`).

How it sits on the shared trainer: the diffusion step runs in `begin_epoch` with the denoisers' own
Adam (same learning rate, as the authors' separate optimisers). Its moments, the denoiser weights and
the generated graphs (top items per user) are in the state dict, so checkpoints carry them: a resumed
run is bit for bit the uninterrupted one, and the best epoch's weights are scored with the graphs they
were trained with. All noise, dropout and edge-drop masks come from a generator seeded by
`begin_epoch`. Ranking uses the generated graphs without edge dropping. For speed, the reverse steps
run in an algebraically equal form (`_Denoiser.reverse_chain`, one items-wide product per row instead
of 2T) and the contrastive logsumexp without a max shift (`multimodal.bounded_logsumexp`, hence τ ≥ 0.025).
Departures: with one modality (Beauty, MovieLens) there is no pair of modality views, so the view is
contrasted with the final embeddings (the authors' `cl_method 1`); the BPR batch is the protocol's
2048 (the diffusion batch keeps the authors' 1024).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn

from neggen_model.config import TrainConfig
from neggen_model.content import ItemContent
from neggen_model.data import InteractionData
from neggen_model.models.lightgcn import _SymmetricSpMM
from neggen_model.models.multimodal import ContentModel, ModelParams, SparseMM, bounded_logsumexp, torch_csr


class DiffMMParams(ModelParams):
    n_layers: int = Field(1, ge=0, description="GCN layers after the modality fusion (gnn_layer).")
    reg_weight: float = Field(1e-5, ge=0.0, description="Weight of the squared norms of all id embeddings (reg).")
    ssl_weight: float = Field(0.1, ge=0.0, description="Weight of the contrastive losses (ssl_reg).")
    temperature: float = Field(
        0.5, ge=0.025, description="τ of the contrastive losses (temp); at least 1/40, so its logits cannot overflow unshifted."
    )
    contrast: Literal["modalities", "main"] = Field(
        "modalities", description="Contrast each pair of modality views, or each view with the final embeddings (cl_method)."
    )
    keep_rate: float = Field(1.0, gt=0.0, le=1.0, description="Share of the generated graphs' edges kept per epoch (keepRate).")
    residual_weight: float = Field(0.5, ge=0.0, description="Weight of normalize(fused) added to the output (ris_lambda).")
    generated_graph_weight: float = Field(0.2, ge=0.0, description="Weight of the ids propagated over G_m (ris_adj_lambda).")
    align_weight: float = Field(0.01, ge=0.0, description="Weight of the modality-aware alignment loss (e_loss).")
    rebuild_k: int = Field(5, gt=0, description="Items per user in each generated graph (rebuild_k).")
    steps: int = Field(5, gt=0, description="Diffusion steps T (steps).")
    noise_scale: float = Field(0.1, gt=0.0, description="Scale of the noise schedule (noise_scale).")
    noise_min: float = Field(1e-4, gt=0.0, description="Lower end of the noise schedule (noise_min).")
    noise_max: float = Field(0.02, gt=0.0, description="Upper end of the noise schedule (noise_max).")
    denoiser_hidden: int = Field(1000, gt=0, description="Hidden width of the denoiser (dims).")
    step_embedding: int = Field(10, gt=0, description="Width of the step embedding (d_emb_size).")
    denoiser_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout on the denoiser's noised input.")
    diffusion_batch_size: int = Field(1024, gt=0, description="Users per denoiser step (the authors' batch).")

    @field_validator("noise_max")
    @classmethod
    def _schedule_rises_and_stays_below_one(cls, value: float, info: ValidationInfo) -> float:
        low, scale = info.data.get("noise_min"), info.data.get("noise_scale")
        if low is not None and value < low:
            raise ValueError(f"{value} is below noise_min {low}")
        if scale is not None and scale * value >= 1.0:
            raise ValueError(f"noise_scale x noise_max must stay below 1, got {scale * value}")
        return value


class _Denoiser(nn.Module):
    """x̂₀ from (x_t, t): [x_t ; Linear(sinusoid(t))] → Linear → tanh → Linear (the authors' Denoise)."""

    def __init__(self, n_items: int, hidden: int, step_embedding: int):
        super().__init__()
        self.step_embedding = step_embedding
        self.step_layer = nn.Linear(step_embedding, step_embedding)
        self.encoder = nn.Linear(n_items + step_embedding, hidden)
        self.decoder = nn.Linear(hidden, n_items)
        for layer in (self.step_layer, self.encoder, self.decoder):
            nn.init.xavier_normal_(layer.weight)
            nn.init.normal_(layer.bias, 0.0, 1e-3)

    def step_inputs(self, t: Tensor) -> Tensor:
        """Linear(sinusoid(t)) per row of t: the step embedding the encoder reads beside x_t."""
        half = self.step_embedding // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        angles = t[:, None].float() * frequencies[None]
        embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
        if self.step_embedding % 2:
            embedding = F.pad(embedding, (0, 1))
        return self.step_layer(embedding)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h = torch.tanh(self.encoder(torch.cat([x, self.step_inputs(t)], dim=1)))
        return self.decoder(h)

    @torch.no_grad()
    def reverse_chain(self, batches: Iterable[Tensor], x0_weights: Tensor, xt_weights: Tensor) -> Iterator[Tensor]:
        """x after the reverse steps T-1, …, 0 from each batch of rows x₀ (no noise),
        x ← x0_weights[t] D(x, t) + xt_weights[t] x.

        With D(x, t) = W₂ tanh(W₁ x + s_t) + b₂, x stays of the form α x₀ + W₂ z + γ b₂, so a step
        needs only W₁ x = α W₁ x₀ + (W₁ W₂) z + γ W₁ b₂: W₁ x₀ is a sparse product (rows are
        interactions), W₁ W₂ is hidden × hidden, and the items-wide W₂ z is formed once, at the end.
        The same function of x₀ as T passes through `forward` (rounding aside), at about a tenth of
        the arithmetic on Beauty."""
        n_items = self.decoder.out_features
        steps = len(x0_weights)
        reads_items = self.encoder.weight[:, :n_items]  # W₁ on the row; the rest reads the step embedding
        arange = torch.arange(steps, device=reads_items.device)
        step_part = self.step_inputs(arange) @ self.encoder.weight[:, n_items:].T + self.encoder.bias
        through = self.decoder.weight.T @ reads_items.T  # (W₁ W₂)ᵀ, hidden × hidden
        bias_through = self.decoder.bias @ reads_items.T
        for x0 in batches:
            read = torch.sparse.mm(x0.to_sparse(), reads_items.T)
            z = torch.zeros_like(read)
            alpha, gamma = 1.0, 0.0
            for step in reversed(range(steps)):
                h = torch.tanh(alpha * read + z @ through + gamma * bias_through + step_part[step])
                a, c = x0_weights[step], xt_weights[step]
                z = a * h + c * z
                alpha, gamma = c * alpha, a + c * gamma
            yield alpha * x0 + z @ self.decoder.weight.T + gamma * self.decoder.bias


def normalised_with_self_loops(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """D^-1/2 (A + I) D^-1/2 of the user-item graph with the given edges (nodes: users, then items)."""
    n = n_users + n_items
    nodes = np.arange(n, dtype=np.int64)
    rows = np.concatenate([users, items + n_users, nodes])
    cols = np.concatenate([items + n_users, users, nodes])
    inv_sqrt = np.bincount(rows, minlength=n).astype(np.float64) ** -0.5
    return sp.csr_matrix(((inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32), (rows, cols)), shape=(n, n))


def info_nce(anchors: Tensor, others: Tensor, nodes: Tensor, temperature: float) -> Tensor:
    """Mean InfoNCE of anchors[nodes] against their own rows of others, among all rows of others."""
    # τ divides the anchors, not the [nodes, all] logits: the same numbers, a smaller division.
    a, every = F.normalize(anchors[nodes]) / temperature, F.normalize(others)
    positive = (a * every[nodes]).sum(dim=1)
    return (bounded_logsumexp(a, every) - positive).mean()


class DiffMM(ContentModel):
    name = "diffmm"
    Params = DiffMMParams
    # The authors tune the contrast per dataset (ssl_reg 0.01 on TikTok and Sports, 0.1 on Baby;
    # temp 0.1 on Sports, 0.5 elsewhere).
    grid: ClassVar[dict[str, tuple]] = {"ssl_weight": (0.01, 0.1), "temperature": (0.1, 0.5)}

    def __init__(self, data: InteractionData, config: TrainConfig, content: ItemContent, params=None):
        super().__init__(data, config, content, params)
        p: DiffMMParams = self.params
        d = config.embedding_size
        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(data.n_items, d)))
        self.modalities = content.modalities
        self.projections = nn.ParameterDict()
        self.denoisers = nn.ModuleDict()
        for modality, matrix in content.matrices().items():
            self.register_buffer(f"_feat_{modality}", torch.from_numpy(matrix.copy()), persistent=False)
            self.projections[modality] = nn.Parameter(nn.init.xavier_uniform_(torch.empty(matrix.shape[1], d)))
        for modality in self.modalities:
            self.denoisers[modality] = _Denoiser(data.n_items, p.denoiser_hidden, p.step_embedding)
        self.modality_weight = nn.Parameter(torch.full((len(self.modalities),), 1.0 / len(self.modalities)))
        self.train_matrix = data.train.astype(np.float32)
        users, items = data.train_pairs()
        self.register_buffer("norm_adj", torch_csr(normalised_with_self_loops(users, items, data.n_users, data.n_items)), persistent=False)
        self._register_schedule(p)
        # State of the diffusion step, checkpointed with the weights: the generated graphs (top item
        # ids per user and modality; -1 = none yet) and the denoisers' Adam moments.
        self.register_buffer("generated_items", torch.full((len(self.modalities), data.n_users, p.rebuild_k), -1, dtype=torch.int64))
        n_denoiser = sum(w.numel() for w in self.denoisers.parameters())
        self.register_buffer("denoiser_adam_step", torch.zeros(()))
        self.register_buffer("denoiser_adam_exp_avg", torch.zeros(n_denoiser))
        self.register_buffer("denoiser_adam_exp_avg_sq", torch.zeros(n_denoiser))
        self.learning_rate = config.learning_rate
        self._training_graphs: list[tuple[Tensor, Tensor]] | None = None
        self._diffusion_losses: list[float] = []

    def _register_schedule(self, p: DiffMMParams) -> None:
        """The authors' Gaussian schedule (float64, then float32 buffers), betas[0] fixed at 1e-4."""
        alpha_bar_target = 1.0 - p.noise_scale * np.linspace(p.noise_min, p.noise_max, p.steps, dtype=np.float64)
        betas = np.empty(p.steps)
        betas[0] = 1e-4
        betas[1:] = np.minimum(1.0 - alpha_bar_target[1:] / alpha_bar_target[:-1], 0.999)
        alphas = 1.0 - betas
        alpha_bar = np.cumprod(alphas)
        alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
        snr = alpha_bar / (1.0 - alpha_bar)
        schedule = {
            "sqrt_alpha_bar": np.sqrt(alpha_bar),
            "sqrt_one_minus_alpha_bar": np.sqrt(1.0 - alpha_bar),
            # Loss weight SNR(t-1) - SNR(t); 1 at t = 0.
            "step_weight": np.concatenate([[1.0], snr[:-1] - snr[1:]]),
            "posterior_x0": betas * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
            "posterior_xt": (1.0 - alpha_bar_prev) * np.sqrt(alphas) / (1.0 - alpha_bar),
        }
        for key, values in schedule.items():
            self.register_buffer(key, torch.from_numpy(values.astype(np.float32)), persistent=False)

    def feature(self, modality: str) -> Tensor:
        return getattr(self, f"_feat_{modality}")

    def modality_features(self, modality: str) -> Tensor:
        return F.leaky_relu(self.feature(modality) @ self.projections[modality], 0.2)

    # --- the diffusion step -----------------------------------------------------------------

    def _interaction_rows(self, users: np.ndarray) -> Tensor:
        return torch.from_numpy(self.train_matrix[users].toarray()).to(self.device)

    def _denoiser_optimizer(self) -> torch.optim.Adam:
        """Adam over the denoisers, resumed from the moments kept in buffers."""
        params = list(self.denoisers.parameters())
        optimizer = torch.optim.Adam(params, lr=self.learning_rate)
        if self.denoiser_adam_step.item() > 0:
            sizes = [w.numel() for w in params]
            first, second = self.denoiser_adam_exp_avg.split(sizes), self.denoiser_adam_exp_avg_sq.split(sizes)
            state = {
                index: {"step": self.denoiser_adam_step.clone().cpu(), "exp_avg": m.view_as(w).clone(), "exp_avg_sq": v.view_as(w).clone()}
                for index, (w, m, v) in enumerate(zip(params, first, second))
            }
            optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
        return optimizer

    def _keep_optimizer_state(self, optimizer: torch.optim.Adam) -> None:
        params = list(self.denoisers.parameters())
        self.denoiser_adam_step.copy_(optimizer.state[params[0]]["step"])
        self.denoiser_adam_exp_avg.copy_(torch.cat([optimizer.state[w]["exp_avg"].reshape(-1) for w in params]))
        self.denoiser_adam_exp_avg_sq.copy_(torch.cat([optimizer.state[w]["exp_avg_sq"].reshape(-1) for w in params]))

    def _train_denoisers(self, generator: torch.Generator) -> None:
        """One pass over all users in shuffled batches: diffusion + alignment loss per modality."""
        p: DiffMMParams = self.params
        optimizer = self._denoiser_optimizer()
        item_ids = self.item_embedding.detach()
        with torch.no_grad():
            features = {m: self.modality_features(m) for m in self.modalities}
        order = torch.randperm(self.n_users, generator=generator).numpy()
        for start in range(0, self.n_users, p.diffusion_batch_size):
            x0 = self._interaction_rows(order[start : start + p.diffusion_batch_size])
            target = x0 @ item_ids
            loss = 0.0
            for modality, denoiser in self.denoisers.items():
                t = torch.randint(0, p.steps, (len(x0),), generator=generator).to(self.device)
                noise = torch.randn(x0.shape, generator=generator).to(self.device)
                x_t = self.sqrt_alpha_bar[t, None] * x0 + self.sqrt_one_minus_alpha_bar[t, None] * noise
                keep = (torch.rand(x0.shape, generator=generator) >= p.denoiser_dropout).to(self.device)
                x0_hat = denoiser(x_t * keep / (1.0 - p.denoiser_dropout), t)
                diffusion = (self.step_weight[t] * (x0 - x0_hat).square().mean(dim=1)).mean()
                align = (x0_hat @ features[modality] - target).square().mean(dim=1).mean()
                loss = loss + diffusion + p.align_weight * align
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self._diffusion_losses.append(loss.item())
        self._keep_optimizer_state(optimizer)

    @torch.no_grad()
    def _generate_graphs(self) -> None:
        """Each user's row denoised through the T reverse steps (no noise); its top items are G_m."""
        p: DiffMMParams = self.params
        from neggen_model.evaluate import topk_items  # here: evaluate imports the models package

        starts = range(0, self.n_users, p.diffusion_batch_size)
        for index, denoiser in enumerate(self.denoisers.values()):
            batches = (self._interaction_rows(np.arange(s, min(s + p.diffusion_batch_size, self.n_users))) for s in starts)
            for start, x in zip(starts, denoiser.reverse_chain(batches, self.posterior_x0, self.posterior_xt)):
                self.generated_items[index, start : start + len(x)] = topk_items(x, p.rebuild_k)

    def _generated_graph(self, index: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """G_m (and its transpose) from the stored top items; with a generator, edges dropped (keep_rate)."""
        items = self.generated_items[index].cpu().numpy()
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), items.shape[1])
        items = items.ravel()
        present = items >= 0
        graph = normalised_with_self_loops(users[present], items[present], self.n_users, self.n_items).tocoo()
        keep_rate = self.params.keep_rate
        if generator is not None and keep_rate < 1.0:
            kept = (torch.rand(graph.nnz, generator=generator) < keep_rate).numpy()
            graph = sp.coo_matrix((graph.data[kept] / keep_rate, (graph.row[kept], graph.col[kept])), shape=graph.shape)
        return torch_csr(graph).to(self.device), torch_csr(graph.T).to(self.device)

    def begin_epoch(self, rng: np.random.Generator) -> None:
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        self._train_denoisers(generator)
        self._generate_graphs()
        self._training_graphs = [self._generated_graph(index, generator) for index in range(len(self.modalities))]

    def pop_epoch_stats(self) -> dict[str, float]:
        if not self._diffusion_losses:
            return {}
        stats = {"diffusion_loss": float(np.mean(self._diffusion_losses))}
        self._diffusion_losses = []
        return stats

    # --- the recommender --------------------------------------------------------------------

    def _propagate(self, x: Tensor) -> Tensor:
        """Σ_{l=0..L} Âˡ x."""
        total = layer = x
        for _ in range(self.params.n_layers):
            layer = _SymmetricSpMM.apply(self.norm_adj, layer)
            total = total + layer
        return total

    def forward_all(self, with_views: bool) -> tuple[Tensor, list[Tensor]]:
        """The final [users; items] embeddings and, with_views, each modality's contrastive view."""
        p: DiffMMParams = self.params
        n = self.n_users
        if self.training and self._training_graphs is not None:
            graphs = self._training_graphs
        else:
            graphs = [self._generated_graph(index, None) for index in range(len(self.modalities))]
        ids = torch.cat([self.user_embedding, self.item_embedding], dim=0)
        weights = F.softmax(self.modality_weight, dim=0)
        fused, views = 0.0, []
        for index, (modality, (graph, graph_t)) in enumerate(zip(self.modalities, graphs)):
            content = torch.cat([self.user_embedding, F.normalize(self.modality_features(modality))], dim=0)
            first = _SymmetricSpMM.apply(self.norm_adj, content)
            second = _SymmetricSpMM.apply(self.norm_adj, torch.cat([first[:n], self.item_embedding], dim=0))
            generated = SparseMM.apply(graph, graph_t, ids)
            fused = fused + weights[index] * (first + second + p.generated_graph_weight * generated)
            if with_views:
                views.append(self._propagate(SparseMM.apply(graph, graph_t, content)))
        final = self._propagate(fused) + p.residual_weight * F.normalize(fused)
        return final, views

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        final, _ = self.forward_all(with_views=False)
        return final[: self.n_users], final[self.n_users :]

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        p: DiffMMParams = self.params
        final, views = self.forward_all(with_views=True)
        n = self.n_users
        u, pos, neg = final[users], final[n + pos_items], final[n + neg_items]
        loss = F.softplus((u * neg).sum(1) - (u * pos).sum(1)).mean()
        loss = loss + p.reg_weight * (self.user_embedding.square().sum() + self.item_embedding.square().sum())
        if p.contrast == "modalities" and len(views) > 1:
            pairs = list(itertools.combinations(views, 2))
        else:  # one modality has no partner view: contrast it with the final embeddings
            pairs = [(final, view) for view in views]
        contrast = sum(
            info_nce(a[:n], b[:n], users, p.temperature) + info_nce(a[n:], b[n:], pos_items, p.temperature) for a, b in pairs
        )
        return loss + p.ssl_weight * contrast
