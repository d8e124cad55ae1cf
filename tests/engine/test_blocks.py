"""Column blocking of inputs (dask_factor.engine.blocks): every input kind becomes column-block
tasks that reassemble A exactly, without reading lazy inputs, with a split that depends only on
the matrix; plus the fixed-order reduction schedule and the validation statistics."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import random_csc
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_factor.engine.blocks import (
    as_blocked,
    block_stats,
    default_bounds,
    sum_stats,
)
from dask_factor.engine.driver import Step, inlinable_reads, sum_partials, tree_schedule
from dask_factor.io.chunking import default_block_nnz


def materialise(bm):
    """Compute every block; check the block invariants; return A reassembled (dense float64)."""
    parts = dask.compute(*bm.blocks, scheduler="synchronous")
    assert len(parts) == bm.n_blocks == bm.bounds.size - 1
    assert bm.bounds[0] == 0 and bm.bounds[-1] == bm.shape[1]
    assert np.all(np.diff(bm.bounds) > 0)
    out = []
    for b, part in enumerate(parts):
        width = int(bm.bounds[b + 1] - bm.bounds[b])
        assert part.shape == (bm.shape[0], width)
        assert part.dtype == bm.dtype
        if bm.sparse:
            assert isinstance(part, sp.csc_matrix) or part.format == "csc"
            assert part.has_sorted_indices
            out.append(part.toarray())
        else:
            assert isinstance(part, np.ndarray) and part.flags.c_contiguous
            out.append(part)
    return np.hstack(out).astype(np.float64)


@pytest.fixture(scope="module")
def mat():
    rng = np.random.default_rng(0)
    return random_csc(rng, 37, 300, 0.1, empty_cols=[0, 5, 299])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_input_reassembles(mat, dtype):
    A = mat.toarray()
    bm = as_blocked(A, dtype=dtype)
    assert not bm.sparse and bm.shape == A.shape and bm.dtype == dtype
    np.testing.assert_array_equal(materialise(bm), A.astype(dtype).astype(np.float64))


@pytest.mark.parametrize("fmt", ["csc", "csr", "coo", "csc_array", "csr_array"])
def test_scipy_inputs_reassemble_with_the_same_split(mat, fmt):
    X = {"csc": mat, "csr": mat.tocsr(), "coo": mat.tocoo(), "csc_array": sp.csc_array(mat),
         "csr_array": sp.csr_array(mat)}[fmt]
    bm = as_blocked(X, dtype=np.float64)
    assert bm.sparse
    np.testing.assert_array_equal(materialise(bm), mat.toarray())
    np.testing.assert_array_equal(bm.bounds, as_blocked(mat).bounds)


def test_unsorted_indices_are_sorted(mat):
    X = mat.copy()
    # reverse the row order inside every column
    for j in range(X.shape[1]):
        a, b = X.indptr[j], X.indptr[j + 1]
        X.indices[a:b] = X.indices[a:b][::-1].copy()
        X.data[a:b] = X.data[a:b][::-1].copy()
    X.has_sorted_indices = False
    np.testing.assert_array_equal(materialise(as_blocked(X, dtype=np.float64)), mat.toarray())


def test_a_callers_unsorted_chunks_are_sorted_in_a_copy():
    """Chunks of a caller's dask array are sorted in a copy (never in place: the arrays may be
    shared or read-only); blocks built by our readers are used as they are, no second pass."""
    from dask_factor.engine.blocks import _to_block
    from dask_factor.io.validate import csc_from_arrays

    indices = np.array([2, 0, 1], dtype=np.int32)
    indices.flags.writeable = False
    theirs = sp.csc_matrix((np.array([1.0, 2.0, 3.0], dtype=np.float32), indices,
                            np.array([0, 2, 3])), shape=(3, 2))
    chunk = da.from_delayed(dask.delayed(theirs), (3, 2), meta=theirs[:0, :0])
    out = materialise(as_blocked(chunk, dtype=np.float32))
    np.testing.assert_array_equal(out, [[2, 0], [0, 3], [1, 0]])
    np.testing.assert_array_equal(theirs.indices, [2, 0, 1])
    ours = csc_from_arrays(np.ones(3, np.float32), np.array([0, 2, 1]), np.array([0, 2, 3]),
                           (3, 2), where="x")
    assert _to_block(ours, np.float32, True) is ours


def test_reader_arrays_are_read_in_one_task_per_block(mat, tmp_path):
    """An array opened from a file is read in the task that normalises each block (one task
    per block, not a chunk task and a block task); anything derived from it takes the general
    path; both give the same blocks."""
    from dask_factor.engine.blocks import block_graph
    from dask_factor.engine.executor import Executor
    from dask_factor.io import open_matrix, write_matrix

    path = tmp_path / "m.zarr"
    write_matrix(mat, path, block_nnz=max(1, mat.nnz // 12))  # >= MIN_BLOCKS blocks
    A = open_matrix(path)
    fused = as_blocked(A, dtype=np.float32)
    dsk, keys = block_graph(fused, Executor())
    assert len(dsk) == len(keys) == fused.n_blocks == A.numblocks[1]
    general = as_blocked(A.map_blocks(lambda x: x), dtype=np.float32)  # derived: a new array
    dsk2, keys2 = block_graph(general, Executor())
    assert len(dsk2) > len(keys2)
    np.testing.assert_array_equal(materialise(fused), mat.toarray().astype(np.float32))
    np.testing.assert_array_equal(materialise(general), materialise(fused))


def test_chunks_gives_uniform_blocks(mat):
    bm = as_blocked(mat, chunks=64)
    np.testing.assert_array_equal(bm.bounds, [0, 64, 128, 192, 256, 300])
    np.testing.assert_array_equal(materialise(bm), mat.astype(np.float32).toarray())


def test_block_nnz_balances_stored_entries():
    rng = np.random.default_rng(1)
    A = random_csc(rng, 50, 2000, 0.05)
    bm = as_blocked(A, block_nnz=500)
    nnz = np.diff(A.indptr[bm.bounds])
    assert bm.n_blocks >= A.nnz // 500
    max_col = np.diff(A.indptr).max()
    assert nnz.max() <= 500 + 2 * max_col + A.nnz / 8  # about the target, never a runaway block
    # the split depends only on the matrix: same bounds from the CSR and dense forms
    np.testing.assert_array_equal(default_bounds(A, 500), default_bounds(A.tocsr(), 500))


def test_default_split_spreads_small_matrices(mat):
    """Small in-memory matrices still get several blocks (fixed, not taken from the machine)."""
    for X in (mat, mat.toarray()):
        bm = as_blocked(X)
        assert bm.n_blocks >= 2
        np.testing.assert_array_equal(bm.bounds, as_blocked(X).bounds)


@pytest.mark.parametrize(("rows", "target"), [
    (50, 2_000_000), (5_000, 2_000_000), (12_000, 4_800_000), (20_000, 8_000_000),
    (60_000, 8_000_000)])
def test_default_blocks_grow_with_the_rows(rows, target):
    """Default blocks hold ~400 entries per row, between 2 M and 8 M: a block's fixed cost is
    its m × k partial.  Checked on a column pointer alone: a million columns of 100 entries."""
    assert default_block_nnz(rows) == target
    indptr = np.arange(0, 100 * 10**6 + 1, 100, dtype=np.int64)
    bounds = default_bounds(indptr=indptr, rows=rows)
    sizes = np.diff(indptr[bounds])
    assert len(sizes) == -(-10**8 // target)  # 50, 50, 21, 13, 13 blocks: above the minimum
    assert sizes.sum() == 10**8 and sizes.max() - sizes.min() <= 100  # equal shares
    with pytest.raises(ValueError, match="rows="):
        default_bounds(indptr=indptr)
    with pytest.raises(ValueError, match="rows="):
        default_bounds(indptr=indptr, block_nnz=0)


def test_simulated_arrays_are_cut_in_default_blocks():
    """The simulator cuts its (lazy) matrix, and so the stores it writes, like the engine
    would: ~default_block_nnz(m) expected entries a block, in multiples of its 256-column
    random-number groups."""
    from dask_factor.datasets import simulate_counts

    A = simulate_counts(100_000, 20_000, 5, density=0.06, seed=1)
    cols = A.chunks[1][0]
    assert cols % 256 == 0 and abs(cols * 0.06 * 20_000 - 8_000_000) <= 256 * 0.06 * 20_000


@pytest.mark.parametrize("row_chunk", [37, 10])
@pytest.mark.parametrize("sparse_chunks", [False, True])
def test_dask_inputs_keep_their_column_chunks(mat, row_chunk, sparse_chunks):
    src = mat.tocsr() if sparse_chunks else mat.toarray()
    D = da.from_array(src, chunks=(row_chunk, 30), asarray=not sparse_chunks)
    bm = as_blocked(D, dtype=np.float64)
    assert bm.sparse == sparse_chunks
    np.testing.assert_array_equal(bm.bounds, np.arange(0, 301, 30))
    np.testing.assert_array_equal(materialise(bm), mat.toarray())
    rechunked = as_blocked(D, dtype=np.float64, chunks=100)
    np.testing.assert_array_equal(rechunked.bounds, [0, 100, 200, 300])
    np.testing.assert_array_equal(materialise(rechunked), mat.toarray())


def test_dask_input_with_one_column_chunk_reassembles(mat):
    D = da.from_array(mat.toarray(), chunks=(37, 300))
    np.testing.assert_array_equal(materialise(as_blocked(D, dtype=np.float64)), mat.toarray())


def test_lazy_inputs_are_not_read_when_wrapped():
    def boom():
        raise AssertionError("the data were read while building the blocks")

    D = da.from_delayed(dask.delayed(boom)(), shape=(10, 20), dtype=np.float64)
    bm = as_blocked(D)
    assert bm.n_blocks == 1 and bm.shape == (10, 20)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 120),
       st.sampled_from([0.0, 0.02, 0.3]), st.integers(1, 200))
def test_any_split_covers_every_column_once(seed, m, n, density, block_nnz):
    A = random_csc(np.random.default_rng(seed), m, n, density)
    bm = as_blocked(A, block_nnz=block_nnz, dtype=np.float64)
    np.testing.assert_array_equal(materialise(bm), A.toarray())


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 17])
@pytest.mark.parametrize("fanin", [2, 3])
def test_tree_schedule_is_a_fixed_order_reduction(n, fanin):
    levels = tree_schedule(n, fanin)
    assert len(levels) == (0 if n == 1 else int(np.ceil(np.log(n) / np.log(fanin) - 1e-12)))
    count = n
    for groups in levels:
        flat = [i for g in groups for i in g]
        assert flat == list(range(count))  # consecutive, in order, each once
        assert all(1 <= len(g) <= fanin for g in groups)
        count = len(groups)
    assert count == 1
    assert tree_schedule(n, fanin) == levels


@pytest.mark.parametrize("n", [1, 2, 7, 9, 20])
def test_reduction_sums_in_block_order(n):
    """Step.reduce builds the fixed tree: the result equals a left-to-right sum of the parts."""
    rng = np.random.default_rng(n)
    parts = [(rng.standard_normal(3), float(i)) for i in range(n)]
    g = Step("t", "tok", 1, {})
    keys = [g.task("part", (i,), lambda x: x, p) for i, p in enumerate(parts)]
    root = g.reduce(keys, split_every=3)
    (out,) = dask.get(g.dsk, [root])
    want = sum_partials(*parts)
    np.testing.assert_allclose(out[0], want[0], rtol=1e-12)
    assert out[1] == sum(range(n))


def test_block_stats_equal_numpy():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 30))
    X[X < -1.5] = 0.0
    X[0, 0] = np.nan
    X[1, 1] = np.inf
    X[2, 2] = -np.inf
    good = X[np.isfinite(X)]
    want = [np.sum(good**2), 3, np.sum(good < 0), np.count_nonzero(X)]
    np.testing.assert_allclose(block_stats(X), want, rtol=1e-12)
    S = sp.csc_matrix(np.where(np.isfinite(X), X, 0.0))
    S.data[:2] = [np.nan, np.inf]
    vals = S.data
    g = vals[np.isfinite(vals)]
    np.testing.assert_allclose(block_stats(S), [np.sum(g**2), 2, np.sum(g < 0),
                                                np.count_nonzero(vals)], rtol=1e-12)
    np.testing.assert_allclose(sum_stats(block_stats(X), block_stats(S)),
                               block_stats(X) + block_stats(S))


@settings(max_examples=60)
@given(n=st.integers(1, 20), fanin=st.integers(2, 8), seed=st.integers(0, 2**32 - 1),
       owner_pattern=st.lists(st.integers(0, 3), min_size=20, max_size=20))
def test_chained_reduction_is_bitwise_the_one_task_sum(n, fanin, seed, owner_pattern):
    """Cutting a level-0 group where the blocks' worker changes is the same left fold: the
    result is bit for bit the unplaced one, for partials of very different magnitudes."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.integers(-8, 9, size=n)
    parts = [((rng.standard_normal(4) * s).astype(np.float32 if i % 3 == 0 else np.float64),
              float(s), i) for i, s in enumerate(scale)]
    static = {f"blk-{i}": None for i in range(n)}
    owners = {f"blk-{i}": f"w{owner_pattern[i]}" for i in range(n)}

    def build(own):
        g = Step("t", "tok", 1, static, own)
        keys = [g.task("part", (i,), lambda _b, p: p, f"blk-{i}", p)
                for i, p in enumerate(parts)]
        return g, g.reduce(keys, split_every=fanin)

    g0, r0 = build(None)
    g1, r1 = build(owners)
    (a,) = dask.get(g0.dsk, [r0])
    (b,) = dask.get(g1.dsk, [r1])
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1] and a[2] == b[2]
    # one reduction task per run of equal owners inside each level-0 group
    groups = tree_schedule(n, fanin)[0] if n > 1 else [[0]]
    runs = sum(1 + sum(owner_pattern[i] != owner_pattern[i - 1] for i in grp[1:])
               for grp in groups)
    level0 = [k for k in g1.dsk if k.startswith("t-reduce-tok-1-0-")]
    assert len(level0) == runs


@pytest.mark.cluster
def test_blocks_are_placed_in_contiguous_runs_and_fits_match_threads(pbmc3k):
    """On a 2-worker cluster each worker holds one contiguous run of blocks (sized by its
    threads); the fit, whose reductions then chain per run, equals the threaded one bitwise."""
    distributed = pytest.importorskip("distributed")
    from dask_factor import nmf
    from dask_factor.engine.executor import Executor

    A = pbmc3k[0][:, :600]
    ref = nmf(A, k=4, seed=2, tol=0, maxit=4, chunks=75)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        ex = Executor(client)
        futs = ex.scatter_blocks([np.full(3, i) for i in range(7)])
        where = [ex.owner_of(f) for f in futs]
        assert where == sorted(where) and len(set(where)) == 2  # two contiguous runs
        who = client.who_has(futs)
        assert [next(iter(who[f.key])) for f in futs] == where
        got = nmf(A, k=4, seed=2, tol=0, maxit=4, chunks=75, client=client)
        assert got.W.tobytes() == ref.W.tobytes()
        assert np.asarray(got.H).tobytes() == np.asarray(ref.H).tobytes()
        # blocks read each pass get the same runs (their tasks prefer their run's worker)
        ex.assign_reads([f"read-{i}" for i in range(7)])
        assert [ex.owner_of(None, f"read-{i}") for i in range(7)] == where
        assert ex.owner_of(None, "not-a-read") is None


def test_block_reads_used_once_run_inside_their_task():
    """A step's graph on a cluster: a static block read that exactly one task of the step uses
    runs inside that task (its key leaves the graph); a read used twice, or one that another
    static task depends on, stays a task of its own; the values are unchanged."""
    from dask._task_spec import Task

    static = {
        "r0": Task("r0", np.arange, 3),
        "r1": Task("r1", np.arange, 4),
        "r2": Task("r2", np.arange, 5),
        "held": 10,
        "dep": (np.sum, "r2"),  # another static task reads r2
        "r3": Task("r3", np.arange, 2),
    }
    reads = inlinable_reads(static)
    assert reads == {"r0", "r1", "dep", "r3"}  # r2: another static task reads it
    g = Step("t", "tok", 1, static)
    a = g.task("a", (), np.sum, "r0")
    b = g.task("b", (), lambda x, y: x.sum() + y, "r1", "held")
    c = g.task("c", (), lambda x: x.sum(), "r1")
    d = g.task("d", (), lambda x, y: x.sum() + y, "r2", "dep")
    e = g.task("e", (), lambda xs: xs[0].sum(), ["r3"])  # used once, but inside a list
    dsk = g.with_reads_inlined(reads)
    assert dsk["r3"] is static["r3"] and dsk[e][1] == ["r3"]  # kept: only direct uses go
    assert "r0" not in dsk and "dep" not in dsk  # each has one user
    assert "r1" in dsk and "r2" in dsk  # r1 has two users; r2 is read by "dep"
    assert dsk[a][1] is static["r0"] and dsk[b][1] == "r1" and dsk[d][2] == static["dep"]
    assert dask.get(dsk, [a, b, c, d, e]) == dask.get(g.dsk, [a, b, c, d, e]) == (3, 16, 6, 20, 1)
    assert g.with_reads_inlined(set()) is g.dsk


@pytest.mark.cluster
def test_streamed_block_reads_chain_their_reductions_per_worker_run(tmp_path, monkeypatch):
    """A fit that reads its blocks every pass on a 2-worker cluster: the block reads get the
    workers' contiguous runs, so each level-0 reduction group that spans both runs is summed as
    a chain (one partial crosses per run boundary); the fit is the threaded one bitwise."""
    import dask

    distributed = pytest.importorskip("distributed")
    from dask_factor import nmf
    from dask_factor.datasets import simulate_counts
    from dask_factor.engine import driver

    path = simulate_counts(2_000, 300, 3, density=0.1, seed=4, path=tmp_path / "a.zarr",
                           block_cols=250, layout="scan")
    with dask.config.set(scheduler="threads"):
        ref = nmf(str(path), 3, seed=1, tol=0, maxit=3, cache="none")
    owners_seen = []
    real = driver.Step.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        owners_seen.append(dict(self.owners))

    monkeypatch.setattr(driver.Step, "__init__", spy)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        got = nmf(str(path), 3, seed=1, tol=0, maxit=3, cache="none", client=client)
        H = np.asarray(got.H)  # gathered while the cluster is up
    owners = owners_seen[-1]
    reads = sorted((k for k in owners if "-delta-" in k), key=lambda k: int(k.rsplit("-", 1)[1]))
    assert len(reads) == 8
    where = [owners[k] for k in reads]
    assert where == sorted(where) and len(set(where)) == 2
    assert got.W.tobytes() == ref.W.tobytes()
    assert H.tobytes() == np.asarray(ref.H).tobytes()
