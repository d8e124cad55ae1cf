"""sample_w_init: the blocks it samples, its W against an NMF of those columns cut out with
scipy, the same W from a path and from the opened array, and a start that needs fewer passes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dask_factor import nmf
from dask_factor.datasets import simulate_counts
from dask_factor.io import open_matrix
from dask_factor.sample_init import sample_blocks, sample_w_init


@pytest.mark.parametrize(("widths", "columns", "want"), [
    ([10] * 5, 20, [0, 4]), ([10] * 5, 25, [0, 2, 4]), ([10] * 5, 1, [0]),
    ([10] * 5, 10**6, [0, 1, 2, 3, 4]),
    ([5, 50, 5], 40, [0, 1, 2]), ([7], 3, [0])])
def test_sample_blocks(widths, columns, want):
    bounds = np.concatenate([[0], np.cumsum(widths)])
    got = sample_blocks(bounds, columns)
    assert got == want
    assert np.diff(bounds)[got].sum() >= min(columns, bounds[-1])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("si") / "a.zarr"
    simulate_counts(12_000, 250, 5, seed=4, path=path, block_cols=1000, layout="scan")
    return path


def test_w_is_the_nmf_of_the_sampled_columns(store):
    A = sp.csc_matrix(open_matrix(store).compute())
    W0 = sample_w_init(store, 5, seed=3, fraction=0.2, maxit=8, tol=0)
    # 20 % of 12 blocks of 1000 columns: 3 evenly spaced blocks (0, 6, 11)
    cols = np.concatenate([np.arange(b * 1000, (b + 1) * 1000) for b in (0, 6, 11)])
    ref = nmf(A[:, cols], 5, seed=3, maxit=8, tol=0)
    np.testing.assert_array_equal(W0, ref.W.astype(np.float64))
    assert W0.shape == (250, 5) and W0.min() >= 0
    np.testing.assert_array_equal(W0, sample_w_init(open_matrix(store), 5, seed=3, fraction=0.2,
                                                    maxit=8, tol=0))


def test_sampled_start_needs_fewer_passes(store):
    """The default fit's final loss is reached in fewer passes from the sample's W (planted
    programs, fixed seeds: a regression check, not a timing)."""
    default = nmf(str(store), 5, seed=1, cache="none")
    W0 = sample_w_init(store, 5, seed=1, fraction=0.1)
    losses: list[float] = []
    nmf(str(store), 5, seed=1, w_init=W0, cache="none", tol=0, maxit=default.iterations,
        on_iteration=lambda it, mse, rel: losses.append(mse))
    reached = next(i + 1 for i, v in enumerate(losses) if v <= default.loss_history[-1])
    assert reached < default.iterations


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"fraction": 0}, "fraction: expected a number in"),
    ({"fraction": 1.5}, "fraction: expected a number in"),
    ({"min_columns": 0}, "min_columns: expected an integer"),
    ({"k": 0}, "k: expected an integer"),
])
def test_bad_arguments_fail_before_reading(kwargs, match):
    args = {"k": 3, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        sample_w_init("/nonexistent/a.zarr", **args)


def test_in_memory_input_with_every_block_is_the_plain_fit():
    A = sp.csc_matrix(simulate_counts(3_000, 120, 3, seed=2).compute())
    W0 = sample_w_init(A, 3, seed=5, fraction=1.0, maxit=5, tol=0)
    np.testing.assert_array_equal(W0, nmf(A, 3, seed=5, maxit=5, tol=0).W.astype(np.float64))
