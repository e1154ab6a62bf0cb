"""Small interaction data sets with known structure, for tests and smoke runs without real data."""

from __future__ import annotations

import numpy as np
import pandas as pd


def clustered_interactions(
    n_users: int = 300,
    n_items: int = 120,
    n_clusters: int = 6,
    per_user: int = 10,
    affinity: float = 0.8,
    seed: int = 0,
) -> pd.DataFrame:
    """Users and items in n_clusters taste groups; users mostly pick items of their own group.

    User u and item i belong to groups u % n_clusters and i % n_clusters. Each user picks
    per_user distinct items, ranked by uniform noise plus `affinity` for own-group items, so a
    learner that finds the groups beats random ranking by far. Each user's picks are split
    80/10/10 into train/valid/test (at least one valid and one test item), as in MMRec.
    Returns columns user_id, item_id, split, as InteractionData.from_frame expects.
    """
    if per_user < 3 or per_user > n_items:
        raise ValueError(f"per_user must be in [3, n_items], got {per_user}")
    rng = np.random.default_rng(seed)
    same_group = (np.arange(n_users)[:, None] % n_clusters) == (np.arange(n_items)[None, :] % n_clusters)
    preference = rng.random((n_users, n_items)) + affinity * same_group
    picks = np.argsort(-preference, axis=1)[:, :per_user]
    picks = rng.permuted(picks, axis=1)  # the split must not follow preference order
    n_held = max(1, per_user // 10)
    split = np.array(["train"] * (per_user - 2 * n_held) + ["valid"] * n_held + ["test"] * n_held)
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_users, dtype=np.int64), per_user),
            "item_id": picks.ravel().astype(np.int64),
            "split": np.tile(split, n_users),
        }
    )
