"""Uniform negative sampling: for each (user, positive) pair, an item the user never trained on."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

#: Membership is read from one bit per (user, item) when those bits take at most this much memory
#: (Amazon Beauty: 34 MiB); above it, from a binary search over the sorted training pairs, about
#: 8x slower per look-up. The hard strategies test M candidates per pair, so this is their cost.
BITSET_MAX_BYTES = 64 << 20


class UniformNegativeSampler:
    """Draws items uniformly from those outside each user's training interactions.

    Vectorised rejection sampling: draw for the whole batch, then redraw only the positions
    that hit a training item, until none is left. With Amazon densities (< 0.2%) one or two
    rounds suffice. Valid/test items are eligible: at training time they are unknown.
    """

    def __init__(self, train: sp.csr_matrix, seed: int | np.random.SeedSequence):
        self.n_users, self.n_items = train.shape
        counts = np.diff(train.indptr)
        full = np.flatnonzero(counts >= self.n_items)
        if len(full):
            raise ValueError(f"users {full[:5].tolist()} interacted with every item: no negative to sample")
        csr = train.tocsr()
        csr.sort_indices()
        users = np.repeat(np.arange(self.n_users, dtype=np.int64), counts)
        # Row-major CSR with sorted columns gives globally sorted keys, ready for searchsorted.
        self._keys = users * self.n_items + csr.indices.astype(np.int64)
        self._bits: np.ndarray | None = None
        if self.n_users * self.n_items <= 8 * BITSET_MAX_BYTES:
            self._bits = np.zeros((self.n_users * self.n_items + 7) // 8, dtype=np.uint8)
            np.bitwise_or.at(self._bits, self._keys >> 3, (1 << (self._keys & 7)).astype(np.uint8))
        #: Every draw comes from this generator (a strategy built on the sampler draws its other
        #: randomness from it too), so its state is all there is to checkpoint.
        self.rng = np.random.default_rng(seed)

    def _interacted(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        if self._bits is not None:
            return ((self._bits[keys >> 3] >> (keys & 7)) & 1).astype(bool)
        if not len(self._keys):
            return np.zeros(len(keys), dtype=bool)
        pos = np.searchsorted(self._keys, keys)
        pos[pos == len(self._keys)] = 0  # any in-range index; the equality test below rejects it
        return self._keys[pos] == keys

    def sample(self, users: np.ndarray) -> np.ndarray:
        """One negative item (int64) per entry of users."""
        users = np.asarray(users, dtype=np.int64)
        items = self.rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        redo = np.flatnonzero(self._interacted(users, items))
        while len(redo):
            items[redo] = self.rng.integers(0, self.n_items, size=len(redo), dtype=np.int64)
            redo = redo[self._interacted(users[redo], items[redo])]
        return items

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable RNG state, so a resumed run draws the same negatives."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state
