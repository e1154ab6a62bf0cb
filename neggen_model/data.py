"""User-item interactions split into train / valid / test, and LightGCN's normalised graph."""

from __future__ import annotations

import hashlib
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

SPLITS = ("train", "valid", "test")
# MMRec's .inter files encode the split as an integer label.
_X_LABEL_TO_SPLIT = {0: "train", 1: "valid", 2: "test"}


class InteractionData:
    """Binary users x items CSR matrices per split; ids are contiguous from 0."""

    def __init__(self, n_users: int, n_items: int, train: sp.csr_matrix, valid: sp.csr_matrix, test: sp.csr_matrix):
        for name, matrix in zip(SPLITS, (train, valid, test)):
            if matrix.shape != (n_users, n_items):
                raise ValueError(f"{name} has shape {matrix.shape}, expected {(n_users, n_items)}")
        self.n_users = n_users
        self.n_items = n_items
        self.train = train
        self.valid = valid
        self.test = test

    @classmethod
    def from_frame(cls, df: pd.DataFrame, n_users: int | None = None, n_items: int | None = None) -> InteractionData:
        """Build from columns user_id, item_id (ints from 0) and split in {"train", "valid", "test"}.

        n_users / n_items default to max id + 1; pass them when trailing ids have no interaction.
        A (user, item) pair in two splits is rejected: it would leak a held-out item into training.
        """
        missing = {"user_id", "item_id", "split"} - set(df.columns)
        if missing:
            raise ValueError(f"interaction frame lacks columns {sorted(missing)}")
        users = df["user_id"].to_numpy()
        items = df["item_id"].to_numpy()
        for name, ids in (("user_id", users), ("item_id", items)):
            if not np.issubdtype(ids.dtype, np.integer):
                raise ValueError(f"{name} must be integer, got dtype {ids.dtype}")
            if len(ids) and ids.min() < 0:
                raise ValueError(f"{name} must be >= 0")
        n_users = _count(users, n_users, "n_users", "user_id")
        n_items = _count(items, n_items, "n_items", "item_id")
        unknown = set(df["split"].unique()) - set(SPLITS)
        if unknown:
            raise ValueError(f"split must be one of {SPLITS}, got {sorted(map(str, unknown))}")

        matrices = {}
        for name in SPLITS:
            rows = (df["split"] == name).to_numpy()
            matrices[name] = _binary_csr(users[rows], items[rows], n_users, n_items)
        overlap = sum(
            matrices[a].multiply(matrices[b]).nnz for a, b in (("train", "valid"), ("train", "test"), ("valid", "test"))
        )
        if overlap:
            raise ValueError(f"{overlap} (user, item) pairs appear in more than one split")
        return cls(n_users, n_items, **matrices)

    @classmethod
    def from_inter_file(cls, path: Path) -> InteractionData:
        """Read an MMRec .inter file (tab-separated userID, itemID, x_label with 0/1/2 = train/valid/test)."""
        raw = pd.read_csv(path, sep="\t", usecols=["userID", "itemID", "x_label"])
        frame = pd.DataFrame(
            {
                "user_id": raw["userID"].to_numpy(np.int64),
                "item_id": raw["itemID"].to_numpy(np.int64),
                "split": raw["x_label"].map(_X_LABEL_TO_SPLIT),
            }
        )
        if frame["split"].isna().any():
            bad = sorted(raw.loc[frame["split"].isna(), "x_label"].unique().tolist())
            raise ValueError(f"{path}: x_label must be 0, 1 or 2, got {bad}")
        return cls.from_frame(frame)

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def train_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of every training interaction as int64 arrays, row-major order."""
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.train.indptr))
        return users, self.train.indices.astype(np.int64)

    @cached_property
    def norm_adj(self) -> torch.Tensor:
        """D^-1/2 A D^-1/2 of the bipartite training graph (paper eq. 6), as a torch sparse CSR tensor.

        Nodes are users 0..n_users-1 then items. Built once per dataset: it is the only graph the
        model ever propagates on. Isolated nodes get weight 0 instead of a division by zero.
        """
        r = self.train.astype(np.float32)
        adj = sp.bmat([[None, r], [r.T, None]], format="csr")
        degree = np.asarray(adj.sum(axis=1)).ravel()
        inv_sqrt = np.zeros_like(degree)
        np.power(degree, -0.5, out=inv_sqrt, where=degree > 0)
        norm = (sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt)).tocsr().astype(np.float32)
        norm.sort_indices()
        with warnings.catch_warnings():
            # torch flags CSR as "beta" on every construction; the few ops used here are stable.
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            return torch.sparse_csr_tensor(
                torch.from_numpy(norm.indptr.astype(np.int64)),
                torch.from_numpy(norm.indices.astype(np.int64)),
                torch.from_numpy(norm.data),
                size=norm.shape,
                # Built once, so validating the structure costs nothing that matters.
                check_invariants=True,
            )

    def train_fingerprint(self) -> str:
        """SHA-256 of the training matrix: ties saved weights to the graph they were trained on."""
        digest = hashlib.sha256()
        digest.update(np.asarray([self.n_users, self.n_items], dtype=np.int64).tobytes())
        digest.update(self.train.indptr.astype(np.int64).tobytes())
        digest.update(self.train.indices.astype(np.int64).tobytes())
        return digest.hexdigest()


def _count(ids: np.ndarray, given: int | None, name: str, column: str) -> int:
    needed = int(ids.max()) + 1 if len(ids) else 0
    if given is None:
        return needed
    if given < needed:
        raise ValueError(f"{name}={given} but {column} goes up to {needed - 1}")
    return given


def _binary_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    matrix = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items), dtype=np.float32
    )
    # Duplicate rows in the frame are summed by scipy; interactions are binary.
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix
