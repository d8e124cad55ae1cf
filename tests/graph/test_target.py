"""compute_target, separability and refine."""

from __future__ import annotations

import numpy as np
import pytest

from dask_factor import nmf
from dask_factor.graph import compute_target, refine, separability


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], [10, 20, 30])
    means = {"a": [3.0, 0.0, 0.0, 1.0], "b": [0.0, 2.0, 0.0, 1.0], "c": [0.0, 0.0, 1.0, 1.0]}
    H = np.stack([np.asarray(means[x]) + 0.3 * rng.random(4) for x in labels], axis=1)
    return H, labels


def test_compute_target_unwhitened_is_centred_centroids(toy):
    H, labels = toy
    T = compute_target(H, labels, whiten=False)
    cents = {c: H[:, labels == c].mean(axis=1) for c in "abc"}
    mu = np.mean(list(cents.values()), axis=0)  # unweighted mean of the centroids
    for j in (0, 15, 45):
        np.testing.assert_allclose(T[:, j], cents[labels[j]] - mu)
    np.testing.assert_allclose(np.mean([T[:, labels == c][:, 0] for c in "abc"], axis=0), 0,
                               atol=1e-12)


def test_compute_target_whitened_and_missing_labels(toy):
    H, labels = toy
    lab = labels.astype(object)
    lab[:3] = None
    T = compute_target(H, lab)
    assert T.shape == H.shape
    np.testing.assert_array_equal(T[:, :3], 0)  # unlabelled samples get no pull
    # one column per class, centred; whitening changes the geometry, not the class structure
    for c in "abc":
        cols = T[:, np.asarray(lab == c)]
        np.testing.assert_allclose(cols, cols[:, :1].repeat(cols.shape[1], axis=1))
    assert not np.allclose(T[:, 3:], compute_target(H, lab, whiten=False)[:, 3:])
    np.testing.assert_array_equal(compute_target(H, np.repeat("x", 60)), 0)  # one class
    with pytest.raises(ValueError, match="labels has 5 entries"):
        compute_target(H, labels[:5])
    with pytest.raises(ValueError, match="every label is missing"):
        compute_target(H, [None] * 60)


def test_separability_formula(toy):
    H, labels = toy
    mu = H.mean(axis=1)
    between = sum((labels == c).sum() * np.sum((H[:, labels == c].mean(1) - mu) ** 2)
                  for c in "abc")
    within = sum(np.sum((H[:, labels == c] - H[:, labels == c].mean(1, keepdims=True)) ** 2)
                 for c in "abc")
    assert separability(H, labels) == pytest.approx(between / within)
    assert separability(3 * H, labels) == pytest.approx(separability(H, labels))


def test_refine_pulls_towards_labels(hawaiibirds):
    A, _, cols = hawaiibirds
    island = cols["island"].to_numpy()
    model = nmf(A, 6, seed=1, maxit=20)
    s0 = separability(model.H, island)
    Hr = refine(model.H, labels=island, lam=0.5)
    assert Hr.shape == model.H.shape and Hr.min() >= 0
    assert separability(Hr, island) > s0
    refined = refine(model, A, labels=island, lam=0.5, cycles=2)
    assert type(refined) is type(model)
    assert refined.W.shape == model.W.shape and np.all(np.isfinite(refined.H))
    assert separability(refined.H, island) > s0
    batch = np.asarray(cols["lat"] > cols["lat"].median())
    with_batch = refine(model, A, labels=island, batch=batch, lam=0.3, cycles=1)
    assert np.all(np.isfinite(with_batch.H))
    with pytest.raises(ValueError, match="lam must be in"):
        refine(model.H, labels=island, lam=2)
    with pytest.raises(ValueError, match="needs data="):
        refine(model, labels=island, cycles=1)
