"""Uniform negative sampling: never a training item, reproducible, uniform over the rest."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from neggen_model.sampling import UniformNegativeSampler


def dense_train(seed: int, n_users: int = 50, n_items: int = 30) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.5
    dense[0, :] = True
    dense[0, 7] = False  # user 0 has exactly one negative
    dense[1, :] = False  # user 1 has none positive
    return sp.csr_matrix(dense.astype(np.float32))


@pytest.mark.parametrize("seed", range(3))
def test_never_returns_a_training_item(seed):
    train = dense_train(seed)
    sampler = UniformNegativeSampler(train, seed)
    users = np.repeat(np.arange(train.shape[0]), 200)
    negatives = sampler.sample(users)
    assert negatives.dtype == np.int64
    assert not train.toarray()[users, negatives].any()
    assert (negatives[users == 0] == 7).all()


def test_same_seed_same_draws_and_state_round_trip():
    train = dense_train(0)
    users = np.arange(train.shape[0]).repeat(10)
    first, second = UniformNegativeSampler(train, 42), UniformNegativeSampler(train, 42)
    np.testing.assert_array_equal(first.sample(users), second.sample(users))
    assert not np.array_equal(first.sample(users), UniformNegativeSampler(train, 43).sample(users))

    state = first.get_state()
    expected = first.sample(users)
    second.set_state(state)
    np.testing.assert_array_equal(second.sample(users), expected)


def test_uniform_over_the_non_interacted_items():
    train = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 1]], dtype=np.float32))
    negatives = UniformNegativeSampler(train, 0).sample(np.zeros(60_000, dtype=np.int64))
    counts = np.bincount(negatives, minlength=6)
    assert counts[[0, 2, 5]].sum() == 0
    np.testing.assert_allclose(counts[[1, 3, 4]] / 60_000, 1 / 3, atol=0.01)


def test_user_with_every_item_is_rejected():
    with pytest.raises(ValueError, match="every item"):
        UniformNegativeSampler(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)), 0)
