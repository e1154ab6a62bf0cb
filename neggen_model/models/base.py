"""The contract every recommender in neggen_model fulfils, and the BPR objective they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from neggen_model.config import NegativeSamplerConfig, TrainConfig, UniformSamplerConfig
from neggen_model.data import InteractionData

if TYPE_CHECKING:
    from neggen_model.content import ItemContent


class ScoringModel(nn.Module, ABC):
    """What the trainer and the evaluator need of a model: a loss on a batch of (user, positive,
    negative) triples and full-ranking scores, served from `final_embeddings`.

    Evaluation wraps its batches in `frozen_embeddings()` so the embeddings are computed once
    per evaluation instead of once per batch of users.
    """

    name: ClassVar[str]
    #: Score validation before the first update (epoch 0 of the history): a model that starts from
    #: a trained one (NegGen on its base) then shows when training added nothing (best epoch 0).
    validate_before_training: ClassVar[bool] = False
    #: Train with torch's fused Adam kernel (one pass over each weight per step instead of about
    #: ten): the same update, rounded differently in the last bits. A model turns it on where Adam
    #: is a large share of its step; the others keep torch's default (foreach) kernel, so their
    #: recorded runs replay bit for bit.
    fused_adam: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self._frozen: tuple[Tensor, Tensor] | None = None

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the model's tensors live."""

    @abstractmethod
    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """(user, item) embeddings whose inner products are the ranking scores."""

    @abstractmethod
    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """Mean training loss of a batch of triples."""

    def begin_epoch(self, rng: np.random.Generator) -> None:
        """Called by the trainer before each training epoch, in training mode.

        A model whose training changes per epoch (FREEDOM's degree-sensitive edge pruning, a
        diffusion step) draws its randomness from `rng` only: the trainer owns that generator
        and checkpoints its state with the weights, so a resumed run stays bit for bit the same.
        State derived here must be redrawable from `rng` (it is not checkpointed). Default: nothing.
        """

    def pop_epoch_stats(self) -> dict[str, float]:
        """Statistics gathered while training since the last call (added to the epoch's history)."""
        return {}

    def full_sort_predict(self, users: Tensor, out: Tensor | None = None) -> Tensor:
        """Scores [len(users), n_items] of every item for each user (written into `out` if given)."""
        user_all, item_all = self._frozen if self._frozen is not None else self.final_embeddings()
        return torch.mm(user_all[users], item_all.T, out=out)

    @contextmanager
    def frozen_embeddings(self) -> Iterator[None]:
        """Compute final embeddings once (eval mode, no grad) for all scoring inside the block.

        The cache is dropped on exit, so it can never outlive a parameter update.
        """
        was_training = self.training
        self.eval()
        with torch.no_grad():
            user_all, item_all = self.final_embeddings()
        self._frozen = (user_all.detach(), item_all.detach())
        try:
            yield
        finally:
            self._frozen = None
            self.train(was_training)


class ModelParams(BaseModel):
    """Base of each baseline's hyper-parameters: typed, frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Baseline:
    """What the `baselines` stage knows of a Table 2 baseline: its typed hyper-parameters (`Params`),
    the small grid it searches on validation Recall@20, whether the dataset's content lets it run,
    and the negatives it trains on. Models of their own (BaselineModel) and LightGCN trained with a
    hard negative sampler (samplers.py in this package) are both Baselines."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    #: param -> values searched by the baselines runner ({}: the defaults only).
    grid: ClassVar[dict[str, tuple[Any, ...]]] = {}

    @classmethod
    def parse_params(cls, params: Any = None) -> BaseModel:
        """params as the baseline's typed Params (None: the defaults); errors name the baseline and key."""
        if params is None:
            return cls.Params()
        if isinstance(params, cls.Params):
            return params
        try:
            return cls.Params.model_validate(dict(params))
        except ValidationError as err:
            # A model-level check (DNS's N <= M) has no loc: its message names the keys itself.
            problems = "; ".join(": ".join(filter(None, (".".join(map(str, p["loc"])), p["msg"]))) for p in err.errors())
            raise ValueError(f"{cls.name} params: {problems}") from None

    @classmethod
    def skip_reason(cls, content: ItemContent | None) -> str | None:
        """Why the baseline cannot run on this dataset's item content (None when it can; content is
        None for a dataset without any)."""
        return None

    @classmethod
    def negative_sampler(cls, params: Any = None) -> NegativeSamplerConfig:
        """The trainer's negatives for a run with these params. Default: uniform, because the hard
        strategies score candidates through a recommender's layers (LightGCN, BPR)."""
        return UniformSamplerConfig()


class BaselineModel(ScoringModel, Baseline):
    """A baseline that is a model of its own (the multi-modal ones, IRGAN), built with its params."""

    def __init__(self, params: Any = None):
        super().__init__()
        self.params = self.parse_params(params)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class Recommender(ScoringModel):
    """Users and items embedded in one space, scored by inner product, trained with BPR.

    Subclasses define how free (ego) embeddings become final ones (`propagate`).
    """

    #: propagate(a + b) == propagate(a) + propagate(b) and propagate(c a) == c propagate(a): lets a
    #: model on a frozen base push constant inputs through the graph once (NegGen's content).
    linear_propagation: ClassVar[bool] = False

    def __init__(self, data: InteractionData, config: TrainConfig):
        super().__init__()
        self.n_users = data.n_users
        self.n_items = data.n_items
        self.reg_weight = config.reg_weight
        self.user_embedding = nn.Parameter(torch.empty(data.n_users, config.embedding_size))
        self.item_embedding = nn.Parameter(torch.empty(data.n_items, config.embedding_size))
        # Paper §4.1: Xavier initialisation for all models.
        nn.init.xavier_uniform_(self.user_embedding)
        nn.init.xavier_uniform_(self.item_embedding)

    @property
    def device(self) -> torch.device:
        return self.user_embedding.device

    @abstractmethod
    def propagate(self, user_ego: Tensor, item_ego: Tensor) -> tuple[Tensor, Tensor]:
        """Final (user, item) embeddings computed from the ego embeddings."""

    @abstractmethod
    def layer_embeddings(self) -> tuple[Tensor, Tensor]:
        """(user, item) embeddings of every propagation layer, [n, layers, d] with layer 0 the ego
        embeddings; their mean over layers is the final embedding (MixGCF and DENS work per layer)."""

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.propagate(self.user_embedding, self.item_embedding)

    def ego_regulariser(self, users: Tensor, *items: Tensor) -> Tensor:
        """reg_weight x 0.5 x squared L2 of the batch's ego embeddings, per triple."""
        squares = self.user_embedding[users].square().sum()
        for batch_items in items:
            squares = squares + self.item_embedding[batch_items].square().sum()
        return self.reg_weight * 0.5 * squares / len(users)

    def calculate_loss(self, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """Mean BPR loss of the batch plus reg_weight x L2 of the batch's ego embeddings."""
        user_all, item_all = self.final_embeddings()
        return self.bpr_loss(user_all, item_all, users, pos_items, neg_items)

    def bpr_loss(self, user_all: Tensor, item_all: Tensor, users: Tensor, pos_items: Tensor, neg_items: Tensor) -> Tensor:
        """calculate_loss on final embeddings already computed (a sampler that scored candidates
        with them trains on the same forward pass)."""
        u, pos, neg = user_all[users], item_all[pos_items], item_all[neg_items]
        # softplus(-x) is -log(sigmoid(x)) without its underflow for large margins.
        ranking = F.softplus((u * neg).sum(dim=1) - (u * pos).sum(dim=1)).mean()
        return ranking + self.ego_regulariser(users, pos_items, neg_items)
