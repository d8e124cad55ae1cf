"""The Dask side of the truncated SVD: one-pass graphs over the column blocks of A.

:class:`GramPasses` builds, per call, a plain Dask graph of one task per column block and a
fixed-order reduction tree, and runs it through the engine's :class:`~.executor.Executor`
(threads, synchronous or a distributed cluster):

* :meth:`GramPasses.prepare` — one read of every block for the row moments (centring, scaling,
  the NaN check, ‖A‖²) and, for blocks already in memory, their row-major copies;
* :meth:`GramPasses.apply` — ``M X = Ã Ãᵀ X`` (the kernels of :mod:`dask_factor.kernels.svd`);
* :meth:`GramPasses.final` — the same pass keeping ``Y_p = Ã_pᵀ X`` on the workers, with a
  tall-skinny QR of Y reduced alongside;
* :meth:`GramPasses.right_vectors` — ``V_p = Y_p T`` where ``Y_p`` lives.

Only m × b partials, b × b factors and scalars reach the client; A is never gathered.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import scipy.sparse as sp

from ..kernels.svd import (
    csc_gram_apply,
    csc_row_moments,
    csc_to_csr,
    csr_gram_kernel,
    dense_gram_apply,
    dense_row_moments,
    merge_moments,
)
from .als import block_graph
from .blocks import BlockedMatrix, tree_keys
from .executor import Executor

#: partial sums reduced per task (fixed-order tree): few tasks per pass, small fan-in memory
REDUCE_FANIN = 8


# --------------------------------------------------------------------------------------------
# task functions (run on workers)


class _Pack:
    """The broadcast of one pass: X pre-divided by the row SDs, and the centring correction."""

    __slots__ = ("Q", "c")

    def __init__(self, Q: np.ndarray, c: np.ndarray):
        self.Q = Q
        self.c = c


class RowMajorBlock:
    """A sparse column block kept row-major (CSR of ``A_p``) for the faster product kernel."""

    __slots__ = ("indptr", "indices", "data", "shape")

    def __init__(self, indptr, indices, data, shape):
        self.indptr = indptr
        self.indices = indices
        self.data = data
        self.shape = shape


def _moments(block):
    m, n_p = block.shape
    if sp.issparse(block):
        mean, m2, sumsq, n_bad = csc_row_moments(block.indptr, block.indices, block.data, m)
    else:
        mean, m2, sumsq, n_bad = dense_row_moments(block)
    return n_p, mean, m2, float(sumsq), int(n_bad)


def _prepare_task(block, want_moments: bool, convert: bool):
    """(row-major copy or None, moments or None) of one block, in one read."""
    mom = _moments(block) if want_moments else None
    rb = None
    if convert:
        if sp.issparse(block):
            rp, ci, cv = csc_to_csr(block.indptr, block.indices, block.data, block.shape[0])
            rb = RowMajorBlock(rp, ci, cv, block.shape)
        else:
            rb = block
    return rb, mom


def _merge_moments_task(*parts):
    n, mean, m2, sq, bad = parts[0]
    for q in parts[1:]:
        n, mean, m2 = merge_moments(n, mean, m2, q[0], q[1], q[2])
        sq += q[3]
        bad += q[4]
    return n, mean, m2, sq, bad


def _gram_apply(block, pack: _Pack):
    if isinstance(block, RowMajorBlock):
        kernel = csr_gram_kernel(pack.Q.shape[1])
        return kernel(block.indptr, block.indices, block.data, pack.Q, pack.c, block.shape[1])
    if sp.issparse(block):
        return csc_gram_apply(block.indptr, block.indices, block.data, pack.Q, pack.c,
                              block.shape[0])
    return dense_gram_apply(block, pack.Q, pack.c)


def _gram_partial(block, pack: _Pack):
    """One block's share of ``M X``: ``(Z_p, s_p)``."""
    _, Z, s = _gram_apply(block, pack)
    return Z, s


def _r_factor(Y: np.ndarray) -> np.ndarray:
    """The R of a QR of Y, as (min(rows, cols) × cols)."""
    return np.linalg.qr(Y, mode="r")


def _gram_final(block, pack: _Pack):
    """One block's share of the final pass: ``(Y_p, (Z_p, s_p, R_p))`` with ``Y_p = Q_p R_p``."""
    Y, Z, s = _gram_apply(block, pack)
    return Y, (Z, s, _r_factor(Y))


def _add_final_parts(*parts):
    """Sum the Z and s partials; combine the R factors by a QR of their stack (TSQR)."""
    Z, s, _ = _add_parts(*[(p[0], p[1], np.zeros(1)) for p in parts])
    R = _r_factor(np.vstack([p[2] for p in parts])) if len(parts) > 1 else parts[0][2]
    return Z, s, R


def _first(x):
    return x[0]


def _second(x):
    return x[1]


def _add_parts(*parts):
    """Sum tuples of arrays element-wise, in the given (fixed) order."""
    out = [np.array(a, copy=True) for a in parts[0]]
    for q in parts[1:]:
        for a, b in zip(out, q):
            a += b
    return tuple(out)


def _v_task(Y, T):
    return np.ascontiguousarray(Y @ T)


# --------------------------------------------------------------------------------------------
# passes


def _is_resident(v) -> bool:
    """Whether a graph entry is data already in memory (a value or a future), not a read task."""
    if isinstance(v, tuple):
        return False
    mod = type(v).__module__
    if mod.startswith("distributed"):
        return True
    if mod.startswith("dask"):
        return type(v).__name__ == "DataNode"
    return True


class GramPasses:
    """Builds and runs the one-pass graphs over a :class:`BlockedMatrix`.

    ``apply(X)`` returns ``M X`` for the implicit ``Ã``; ``final(X)`` also keeps ``Y_p = ÃᵀX``
    block by block on the workers. Sparse blocks already in memory (in-memory inputs, persisted
    or scattered blocks) are copied once to row-major form by :meth:`prepare`, which makes every
    later pass faster; blocks read from disk are used as they come (CSC), each pass.
    """

    def __init__(self, bm: BlockedMatrix, client=None, *, row_major: bool = True):
        self.bm = bm
        self.ex = Executor(client)
        self.static, self.bkeys = block_graph(bm, self.ex)
        self.schedule = tree_keys(bm.n_blocks, REDUCE_FANIN)
        self.tok = uuid.uuid4().hex[:8]
        self.count = 0
        self.mu: np.ndarray | None = None
        self.sd: np.ndarray | None = None
        self.seconds: list[float] = []
        self.convert = [bool(row_major and bm.sparse and _is_resident(self.static[k]))
                        for k in self.bkeys]

    def _tree(self, dsk: dict, parts: list[str], func, tag: str) -> str:
        for lvl, groups in enumerate(self.schedule):
            nxt = []
            for gi, g in enumerate(groups):
                if len(g) == 1:
                    nxt.append(parts[g[0]])
                    continue
                rk = f"{tag}-red-{lvl}-{gi}"
                dsk[rk] = (func, *[parts[i] for i in g])
                nxt.append(rk)
            parts = nxt
        return parts[0]

    def prepare(self, want_moments: bool):
        """One read of every block (if needed): the row moments, and the row-major copies.

        Returns
        -------
        (n, row means, row Σ squared deviations, Σa², #non-finite), or None when
        ``want_moments`` is False.
        """
        todo = [b for b in range(self.bm.n_blocks) if want_moments or self.convert[b]]
        if not todo:
            return None
        self.count += 1
        tag = f"svdprep-{self.tok}"
        dsk = dict(self.static)
        keep, parts = [], []
        for b in todo:
            key = f"{tag}-{b}"
            dsk[key] = (_prepare_task, self.bkeys[b], want_moments, self.convert[b])
            if self.convert[b]:
                dsk[f"{key}-rm"] = (_first, key)
                keep.append(f"{key}-rm")
            if want_moments:
                dsk[f"{key}-mom"] = (_second, key)
                parts.append(f"{key}-mom")
        fetch = []
        if want_moments:
            schedule, self.schedule = self.schedule, tree_keys(len(parts), REDUCE_FANIN)
            fetch = [self._tree(dsk, parts, _merge_moments_task, tag)]
            self.schedule = schedule
        t0 = time.perf_counter()
        kept, out = self.ex.run(dsk, keep, fetch)
        self.seconds.append(time.perf_counter() - t0)
        for b in todo:
            if self.convert[b]:
                rk = f"{tag}-{b}-rm"
                self.static[rk] = kept[rk]
                self.bkeys[b] = rk
                self.convert[b] = False
        return out[0] if want_moments else None

    def _pass_graph(self, X: np.ndarray, keep_y: bool):
        self.count += 1
        tag = f"svdpass-{self.tok}-{self.count}"
        Q = X if self.sd is None else X / self.sd[:, None]
        Q = np.ascontiguousarray(Q, dtype=np.float64)
        c = (self.mu @ Q) if self.mu is not None else np.zeros(Q.shape[1])
        pack_key = f"{tag}-pack"
        pack = _Pack(Q, np.ascontiguousarray(c))
        dsk = dict(self.static)
        dsk[pack_key] = self.ex.scatter(pack_key, pack) if self.ex.distributed else pack
        ykeys, parts = [], []
        for b, bk in enumerate(self.bkeys):
            key = f"{tag}-{b}"
            if keep_y:
                dsk[key] = (_gram_final, bk, pack_key)
                dsk[f"{key}-y"] = (_first, key)
                dsk[f"{key}-p"] = (_second, key)
                ykeys.append(f"{key}-y")
                parts.append(f"{key}-p")
            else:
                dsk[key] = (_gram_partial, bk, pack_key)
                parts.append(key)
        root = self._tree(dsk, parts, _add_final_parts if keep_y else _add_parts, tag)
        return dsk, ykeys, root

    def _finish(self, Z, s):
        MX = Z if self.mu is None else Z - np.outer(self.mu, s)
        if self.sd is not None:
            MX = MX / self.sd[:, None]
        return MX

    def apply(self, X: np.ndarray) -> np.ndarray:
        """``M X = Ã Ãᵀ X`` (m × b) in one pass."""
        dsk, _, root = self._pass_graph(X, False)
        t0 = time.perf_counter()
        _, ((Z, s),) = self.ex.run(dsk, [], [root])
        self.seconds.append(time.perf_counter() - t0)
        return self._finish(Z, s)

    def final(self, X: np.ndarray):
        """One pass keeping ``Y_p = ÃᵀX`` per block.

        Returns (Y handles, M X, R) with R the triangular factor of a QR of the stacked
        ``Y = ÃᵀX`` (a tall-skinny QR reduced in the same fixed-order tree as the sums).
        """
        dsk, ykeys, root = self._pass_graph(X, True)
        t0 = time.perf_counter()
        kept, ((Z, s, R),) = self.ex.run(dsk, ykeys, [root])
        self.seconds.append(time.perf_counter() - t0)
        return [kept[y] for y in ykeys], self._finish(Z, s), R

    def right_vectors(self, y_handles: list, T: np.ndarray) -> list:
        """``V_p = Y_p T`` on the workers; returns the handles (values or futures)."""
        tag = f"svdv-{self.tok}-{self.count}"
        dsk: dict = {}
        vkeys = []
        for b, h in enumerate(y_handles):
            yk, vk = f"{tag}-y-{b}", f"{tag}-{b}"
            dsk[yk] = h
            dsk[vk] = (_v_task, yk, T)
            vkeys.append(vk)
        kept, _ = self.ex.run(dsk, vkeys, [])
        return [kept[v] for v in vkeys]


