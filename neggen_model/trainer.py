"""Training loop: BPR with a negative-sampling strategy (uniform by default, see
neggen_model/samplers), Adam, early stopping on validation, resumable.

Protocol of paper §4.1.4: Adam, batch 2048, up to 1000 epochs, early stopping when validation
Recall@20 has not improved for 20 evaluations; the weights of the best validation epoch are kept
and the test split is scored once, with those weights, at the end.

Reproducibility: model initialisation is seeded by build_model; training draws randomness only
from three numpy generators (pair shuffling, negative sampling, and the model's own per-epoch
draws through ScoringModel.begin_epoch) spawned from config.seed. Their
states are checkpointed with the weights and the Adam moments after every epoch, so a run that is
killed and resumed ends bit for bit where an uninterrupted run ends (on the same machine).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from neggen_model.atomic import write_json
from neggen_model.checkpoint import flatten_optimizer, read_tensors, restore_optimizer, save_model, write_tensors
from neggen_model.config import TrainConfig
from neggen_model.data import InteractionData
from neggen_model.evaluate import EVAL_MODES, evaluate
from neggen_model.models.base import ScoringModel
from neggen_model.samplers import build_sampler

STATE_JSON = "train_state.json"


@dataclass
class TrainResult:
    """What a finished run reports; test holds one metrics dict per evaluation mode."""

    history: list[dict[str, float]]
    best_epoch: int
    best_valid: dict[str, float]
    test: dict[str, dict[str, float]]
    wall_seconds: float
    epochs_run: int
    seed: int


class Trainer:
    """Trains one model on one dataset; with checkpoint_dir, fit() survives interruption."""

    def __init__(
        self,
        model: ScoringModel,
        data: InteractionData,
        config: TrainConfig,
        checkpoint_dir: Path | None = None,
        progress: bool = True,
    ):
        self.model = model.to(config.device)
        self.data = data
        self.config = config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.progress = progress
        # The third child is the model's own (begin_epoch); spawning it leaves the first two,
        # and so the runs of models that draw nothing, exactly as they were.
        shuffle_seed, negative_seed, model_seed = np.random.SeedSequence(config.seed).spawn(3)
        self._shuffle_rng = np.random.default_rng(shuffle_seed)
        self._model_rng = np.random.default_rng(model_seed)
        self.sampler = build_sampler(config, data.train, negative_seed)
        self.sampler.check_model(self.model)
        # A strategy's own weights (DENS's gates) train beside the model's; the others have none,
        # which leaves the optimiser as it was.
        # fused=None is torch's default (foreach) kernel; fused=False would pick another one.
        self.optimizer = torch.optim.Adam(
            [*self.model.parameters(), *self.sampler.parameters()],
            lr=config.learning_rate,
            fused=True if self.model.fused_adam else None,
        )
        self._users, self._items = data.train_pairs()
        # Run state; everything here goes into the checkpoint.
        self._epoch = 0
        self._history: list[dict[str, float]] = []
        self._best_epoch = 0
        self._best_valid: dict[str, float] = {}
        self._best_state: dict[str, torch.Tensor] | None = None
        self._stale = 0  # evaluations since the stop metric last improved
        self._wall = 0.0

    def fit(self) -> TrainResult:
        """Train to early stopping (resuming from checkpoint_dir if it holds a run), then test."""
        cfg = self.config
        if self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            finished = self._resume()
            if finished is not None:
                return finished
        if self.model.validate_before_training and not self._history:
            self._history.append(self._validate(0, {"epoch": 0}))
            if self.checkpoint_dir is not None:
                self._save_checkpoint(finished=None)
        bar = tqdm(total=cfg.epochs, initial=self._epoch, desc=self.model.name, unit="epoch", disable=not self.progress)
        # With a decaying rate nothing changes after decay_epochs (the rate is 0), so the best epoch
        # cannot: the run ends there rather than waiting out its patience.
        last = cfg.epochs if cfg.decay_epochs is None else min(cfg.epochs, cfg.decay_epochs)
        while self._epoch < last and self._stale < cfg.early_stop_patience:
            started = time.perf_counter()
            record = self._run_epoch(self._epoch + 1)
            self._history.append(record)
            self._epoch += 1
            self._wall += time.perf_counter() - started
            if self.checkpoint_dir is not None:
                self._save_checkpoint(finished=None)
            bar.update(1)
            metric = f"valid_{cfg.stop_metric}"
            postfix = {"loss": f"{record['loss']:.4f}", metric: f"{record.get(metric, float('nan')):.4f}"}
            bar.set_postfix(postfix | {"best_epoch": self._best_epoch})
        bar.close()
        return self._finish()

    def _run_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        started = time.perf_counter()
        record: dict[str, float] = {"epoch": epoch, "loss": self._train_epoch()}
        record["seconds"] = time.perf_counter() - started
        record.update(self.model.pop_epoch_stats())
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            record = self._validate(epoch, record)
        return record

    def _validate(self, epoch: int, record: dict[str, float]) -> dict[str, float]:
        """record plus the validation metrics of the current weights (observed for early stopping)."""
        cfg = self.config
        started = time.perf_counter()
        valid = evaluate(self.model, self.data, "valid", topk=cfg.topk, batch_size=cfg.eval_batch_size)
        record["eval_seconds"] = time.perf_counter() - started
        record.update({f"valid_{name}": value for name, value in valid.items()})
        self._observe(epoch, valid)
        return record

    def _train_epoch(self) -> float:
        """One pass over the shuffled training pairs; returns the mean per-pair loss."""
        cfg = self.config
        device = torch.device(cfg.device)
        self.model.train()
        for group in self.optimizer.param_groups:  # a function of the epoch alone, so a resumed run follows it too
            group["lr"] = self._learning_rate(self._epoch)
        self.model.begin_epoch(self._model_rng)
        order = self._shuffle_rng.permutation(len(self._users))
        users, pos = self._users[order], self._items[order]
        # Negatives (or candidates) for the whole epoch in one vectorised draw.
        drawn = self.sampler.draw(users, self._epoch)
        total = 0.0
        for start in range(0, len(users), cfg.batch_size):
            batch = slice(start, start + cfg.batch_size)
            u, p, *batch_drawn = (torch.from_numpy(a[batch]).to(device) for a in (users, pos, *drawn))
            loss = self.sampler.loss(self.model, u, p, *batch_drawn)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(u)
        return total / max(len(users), 1)

    def _learning_rate(self, epoch: int) -> float:
        """The rate of the epoch after `epoch` finished ones: constant, or cosine-decayed to 0 over decay_epochs."""
        cfg = self.config
        if cfg.decay_epochs is None:
            return cfg.learning_rate
        return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(epoch, cfg.decay_epochs) / cfg.decay_epochs))

    def _observe(self, epoch: int, valid: dict[str, float]) -> None:
        metric = self.config.stop_metric
        if not self._best_valid or valid[metric] > self._best_valid[metric]:
            self._best_epoch, self._best_valid, self._stale = epoch, valid, 0
            self._best_state = {name: t.detach().clone() for name, t in self.model.state_dict().items()}
        else:
            self._stale += 1

    def _finish(self) -> TrainResult:
        cfg = self.config
        started = time.perf_counter()
        self.model.load_state_dict(self._best_state)
        test = {
            mode: evaluate(self.model, self.data, "test", mode=mode, topk=cfg.topk, batch_size=cfg.eval_batch_size)
            for mode in EVAL_MODES
        }
        self._wall += time.perf_counter() - started
        result = TrainResult(
            history=self._history,
            best_epoch=self._best_epoch,
            best_valid=self._best_valid,
            test=test,
            wall_seconds=self._wall,
            epochs_run=self._epoch,
            seed=cfg.seed,
        )
        if self.checkpoint_dir is not None:
            self._save_checkpoint(finished=result)
            save_model(self.checkpoint_dir, self.model, cfg, self.data)
        return result

    # --- checkpoints -------------------------------------------------------------------------
    # Layout: state-<epoch>.safetensors (weights, best weights, Adam moments) and train_state.json
    # (everything else, naming the tensor file). The JSON is replaced last, so it is the commit
    # point: a crash at any moment leaves a consistent pair behind.

    def _save_checkpoint(self, finished: TrainResult | None) -> None:
        directory = self.checkpoint_dir
        optim_tensors, optim_groups = flatten_optimizer(self.optimizer)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"optim.{k}": v for k, v in optim_tensors.items()})
        tensors.update({f"sampler.{k}": v for k, v in self.sampler.state_dict().items()})
        if self._best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self._best_state.items()})
        tensor_file = f"state-{self._epoch:05d}.safetensors"
        write_tensors(directory / tensor_file, tensors, metadata={"epoch": str(self._epoch)})
        write_json(
            directory / STATE_JSON,
            {
                "model": self.model.name,
                "config": self.config.model_dump(mode="json"),
                "train_fingerprint": self.data.train_fingerprint(),
                "tensors": tensor_file,
                "epoch": self._epoch,
                "history": self._history,
                "best_epoch": self._best_epoch,
                "best_valid": self._best_valid,
                "stale": self._stale,
                "wall_seconds": self._wall,
                "rng": {
                    "shuffle": self._shuffle_rng.bit_generator.state,
                    "negatives": self.sampler.get_state(),
                    "model": self._model_rng.bit_generator.state,
                },
                "optimizer_groups": optim_groups,
                "result": asdict(finished) if finished is not None else None,
            },
        )
        for old in directory.glob("state-*.safetensors"):
            if old.name != tensor_file:
                old.unlink()

    def _resume(self) -> TrainResult | None:
        """Load the checkpoint if there is one; return the stored result if that run had finished."""
        path = self.checkpoint_dir / STATE_JSON
        if not path.exists():
            return None
        state: dict[str, Any] = json.loads(path.read_text())
        self._check_compatible(state)
        tensors = read_tensors(self.checkpoint_dir / state["tensors"])
        device = torch.device(self.config.device)

        def group(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)}

        self.model.load_state_dict(group("model."))
        self.sampler.load_state_dict(group("sampler."))
        restore_optimizer(self.optimizer, group("optim."), state["optimizer_groups"])
        self._best_state = group("best.") or None
        self._epoch = state["epoch"]
        self._history = state["history"]
        self._best_epoch = state["best_epoch"]
        self._best_valid = state["best_valid"]
        self._stale = state["stale"]
        self._wall = state["wall_seconds"]
        self._shuffle_rng.bit_generator.state = state["rng"]["shuffle"]
        self.sampler.set_state(state["rng"]["negatives"])
        if "model" in state["rng"]:  # checkpoints written before begin_epoch existed drew nothing from it
            self._model_rng.bit_generator.state = state["rng"]["model"]
        if state["result"] is None:
            return None
        self.model.load_state_dict(self._best_state)
        return TrainResult(**state["result"])

    def _check_compatible(self, state: dict[str, Any]) -> None:
        where = self.checkpoint_dir
        if state["model"] != self.model.name:
            raise ValueError(f"{where} holds a {state['model']!r} run, not {self.model.name!r}")
        if state["train_fingerprint"] != self.data.train_fingerprint():
            raise ValueError(f"{where} was trained on other interactions than the data given")
        ours = self.config.model_dump(mode="json")
        # eval_batch_size only changes the speed of validation, not the training trajectory.
        differ = sorted(k for k in ours if ours[k] != state["config"].get(k) and k != "eval_batch_size")
        if differ:
            raise ValueError(f"{where} holds a run with another config (fields {differ}); use a fresh directory")
