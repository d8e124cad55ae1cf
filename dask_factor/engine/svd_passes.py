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

from ..io.delta_csc import DeltaCSC
from ..kernels.svd import (
    csc_row_moments,
    csc_to_csr,
    dense_gram_apply,
    dense_row_moments,
    gram_kernel,
    kernel_width,
    merge_moments,
)
from .blocks import BlockedMatrix, block_graph
from .driver import (
    BlockOutput,
    Step,
    inlinable_reads,
    kept_value,
    placing,
    sum_partials,
    wait_for_a_worker,
)
from .executor import Executor, is_worker_loss

#: attempts at one pass, after lost workers, before the error is raised
MAX_PASS_ATTEMPTS = 4
#: passes this wide or wider copy in-memory sparse blocks to row-major form first. The
#: row-major kernels are faster from 5 columns on (pbmc3k, one core, a pass: 7.7 against 8.4 ms
#: at 5 columns, 7.5 against 10.2 at 8, 10.2 against 21.2 at 16), where their random accesses
#: stay in the small Y_p; at 4 columns and below the column-major ones are faster (5.2 against
#: 6.1 ms at 4), and the copy (26 ms) would not pay off.
ROW_MAJOR_MIN_WIDTH = 5

# --------------------------------------------------------------------------------------------
# task functions (run on workers)


class GramPack:
    """The broadcast of one pass: X pre-divided by the row SDs, the centring correction, and
    whether the pass needs ``Z_p = A_p Y_p`` (a final pass whose ``M X`` is known does not)."""

    __slots__ = ("Q", "c", "with_z", "_padded")

    def __init__(self, Q: np.ndarray, c: np.ndarray, with_z: bool = True):
        self.Q = Q
        self.c = c
        self.with_z = with_z
        self._padded = None

    def padded(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, c) with zero columns up to ``width`` (made once per pass, shared by the blocks;
        two threads may both make it, with the same result)."""
        b = self.c.size
        if width == b:
            return self.Q, self.c
        cached = self._padded
        if cached is None or cached[0].shape[1] != width:
            Q = np.zeros((self.Q.shape[0], width))
            Q[:, :b] = self.Q
            c = np.zeros(width)
            c[:b] = self.c
            cached = self._padded = (Q, c)
        return cached


class RowMajorBlock:
    """A sparse column block kept row-major (CSR of ``A_p``) for the faster product kernel."""

    __slots__ = ("indptr", "indices", "data", "shape")

    def __init__(self, indptr, indices, data, shape):
        self.indptr = indptr
        self.indices = indices
        self.data = data
        self.shape = shape


def _moments(block):
    if isinstance(block, DeltaCSC):
        block = block.tocsc()
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
        if isinstance(block, DeltaCSC):
            block = block.tocsc()
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


def gram_apply(block, pack: GramPack):
    """``(Y_p, Z_p, s_p)`` of one block for the pack's ``b`` vectors (a CSC, row-major or dense
    block, or a scan-layout store's block as stored,
    :class:`~dask_factor.io.delta_csc.DeltaCSC`)."""
    b = pack.c.size
    w = kernel_width(b)
    if isinstance(block, DeltaCSC):
        kernel = gram_kernel("csc", w, with_z=pack.with_z, delta=True)
        if kernel is None:  # no fixed-width kernel for this width: decode the block
            block = block.tocsc()
    if isinstance(block, DeltaCSC | RowMajorBlock) or sp.issparse(block):
        Q, c = pack.padded(w)
        if isinstance(block, DeltaCSC):
            Y, Z, s = kernel(block.indptr, block.deltas, block.data, Q, c, block.shape[0])
        elif isinstance(block, RowMajorBlock):
            kernel = gram_kernel("csr", w, with_z=pack.with_z)
            Y, Z, s = kernel(block.indptr, block.indices, block.data, Q, c, block.shape[1])
        else:
            kernel = gram_kernel("csc", w, with_z=pack.with_z)
            Y, Z, s = kernel(block.indptr, block.indices, block.data, Q, c, block.shape[0])
        if w != b:  # drop the zero lanes
            Y, Z, s = np.ascontiguousarray(Y[:, :b]), np.ascontiguousarray(Z[:, :b]), s[:b]
        return Y, Z, s
    return dense_gram_apply(block, pack.Q, pack.c)


def _gram_partial(block, pack: GramPack):
    """One block's share of ``M X``: ``(Z_p, s_p)``."""
    _, Z, s = gram_apply(block, pack)
    return Z, s


def _r_factor(Y: np.ndarray) -> np.ndarray:
    """The R of a QR of Y, as (min(rows, cols) × cols)."""
    return np.linalg.qr(Y, mode="r")


def _gram_final(block, pack: GramPack):
    """One block's share of the final pass: ``(Y_p, (Z_p, s_p, R_p))`` with ``Y_p = Q_p R_p``."""
    Y, Z, s = gram_apply(block, pack)
    return BlockOutput((Y, (Z, s, _r_factor(Y))))


def _add_final_parts(*parts):
    """Sum the Z and s partials; combine the R factors by a QR of their stack (TSQR)."""
    parts = [p[1] if isinstance(p, BlockOutput) else p for p in parts]
    Z, s = sum_partials(*[(p[0], p[1]) for p in parts])
    R = _r_factor(np.vstack([p[2] for p in parts])) if len(parts) > 1 else parts[0][2]
    return Z, s, R


def _prepare_out(out):
    """The moments of a :func:`_prepare_task` output (for the reduction)."""
    return out[1]


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

    Each pass is a pure function of A and the broadcast, so a pass that loses data with a worker
    is run again after the blocks are placed anew (and their row-major copies rebuilt); the
    Krylov state lives on the client and is never lost.
    """

    def __init__(self, bm: BlockedMatrix, client=None, *, row_major: bool = True):
        self.bm = bm
        self.ex = Executor(client)
        self.row_major = row_major
        self.tok = uuid.uuid4().hex[:8]
        self.count = 0
        self.mu: np.ndarray | None = None
        self.sd: np.ndarray | None = None
        self.seconds: list[float] = []
        self._last_final: tuple[np.ndarray, bool] | None = None
        self._steps = 0  # graphs built (passes and the right-vector step), for unique keys
        placing(self.ex, "svd", self._place)

    def _place(self, tag: str | None = None):
        # blocks read each pass come as stored where the store allows (gram_apply reads them)
        self.static, self.bkeys = block_graph(self.bm, self.ex, tag=tag, delta=True)
        self.reads = inlinable_reads(self.static)
        self.convert = [bool(self.row_major and self.bm.sparse and _is_resident(self.static[k]))
                        for k in self.bkeys]

    def _run(self, build):
        """Run ``build() -> (step graph, keep, fetch)``; after a lost worker, place the blocks
        anew and run the pass again (it is deterministic)."""
        for attempt in range(1, MAX_PASS_ATTEMPTS + 1):
            try:  # building places the broadcast pack: a loss can surface there too
                if attempt > 1:
                    self._place(tag=uuid.uuid4().hex[:8])
                    if any(self.convert):
                        self.prepare(False)
                g, keep, fetch = build()
                t0 = time.perf_counter()
                # each block read runs inside its one user, as in the ALS steps: a read task
                # of its own could run ahead of its user (while the pass's broadcast pack is
                # still on its way) and hold decoded blocks past the O(block) bound
                kept, out = self.ex.run(g.with_reads_inlined(self.reads), keep, fetch,
                                        g.placement())
            except Exception as exc:
                if not (self.ex.distributed and is_worker_loss(exc)) \
                        or attempt == MAX_PASS_ATTEMPTS:
                    raise
                wait_for_a_worker(self.ex, "svd", ["(a worker)"], exc)
                continue
            self.seconds.append(time.perf_counter() - t0)
            return kept, out
        raise AssertionError("unreachable")

    def _step(self, label: str, *, data_pass: bool = True) -> Step:
        self.count += data_pass  # ``count`` is the number of passes over the data
        self._steps += 1
        owners = {k: w for k, v in self.static.items()
                  if (w := self.ex.owner_of(v, k)) is not None}
        return Step(f"svd-{label}", self.tok, self._steps, self.static, owners)

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

        def build():
            g = self._step("prepare")
            keep, parts = [], []
            for b in todo:
                key = g.task("block-read", (b,), _prepare_task, self.bkeys[b], want_moments,
                             self.convert[b])
                if self.convert[b]:
                    keep.append(g.task("row-major", (b,), kept_value, key))
                if want_moments:
                    parts.append(g.task("moments", (b,), _prepare_out, key))
            fetch = [g.reduce(parts, _merge_moments_task)] if want_moments else []
            self._prep_keep = dict(zip([b for b in todo if self.convert[b]], keep))
            return g, keep, fetch

        kept, out = self._run(build)
        self.ex.locate(list(kept.values()))  # the row-major copies stay where they were made
        for b, rk in self._prep_keep.items():
            self.static[rk] = kept[rk]
            self.bkeys[b] = rk
            self.convert[b] = False
        return out[0] if want_moments else None

    def _pass_graph(self, X: np.ndarray, keep_y: bool, with_z: bool = True):
        g = self._step("final" if keep_y else "pass")
        Q = X if self.sd is None else X / self.sd[:, None]
        Q = np.ascontiguousarray(Q, dtype=np.float64)
        c = (self.mu @ Q) if self.mu is not None else np.zeros(Q.shape[1])
        pack_key = g.key("broadcast")
        pack = GramPack(Q, np.ascontiguousarray(c), with_z)
        g.dsk[pack_key] = self.ex.scatter(pack_key, pack) if self.ex.distributed else pack
        ykeys, parts = [], []
        for b, bk in enumerate(self.bkeys):
            if keep_y:
                key = g.task("block-product", (b,), _gram_final, bk, pack_key)
                ykeys.append(g.task("y", (b,), kept_value, key))
            else:
                key = g.task("block-product", (b,), _gram_partial, bk, pack_key)
            parts.append(key)
        root = g.reduce(parts, _add_final_parts if keep_y else sum_partials)
        return g, ykeys, root

    def _finish(self, Z, s):
        MX = Z if self.mu is None else Z - np.outer(self.mu, s)
        if self.sd is not None:
            MX = MX / self.sd[:, None]
        return MX

    def apply(self, X: np.ndarray) -> np.ndarray:
        """``M X = Ã Ãᵀ X`` (m × b) in one pass."""
        def build():
            g, _, root = self._pass_graph(X, False)
            return g, [], [root]

        _, ((Z, s),) = self._run(build)
        return self._finish(Z, s)

    def final(self, X: np.ndarray, *, products: bool = True):
        """One pass keeping ``Y_p = ÃᵀX`` per block.

        Returns (Y handles, M X or None, R) with R the triangular factor of a QR of the stacked
        ``Y = ÃᵀX`` (a tall-skinny QR reduced in the same fixed-order tree as the sums).
        ``products=False`` skips ``M X`` (the caller has it): the blocks then make one sweep,
        ``Ãᵀ X``, instead of two.
        """
        def build():
            g, ykeys, root = self._pass_graph(X, True, products)
            self._ykeys = ykeys
            return g, ykeys, [root]

        kept, ((Z, s, R),) = self._run(build)
        self._last_final = (X, products)
        MX = self._finish(Z, s) if products else None
        return [kept[y] for y in self._ykeys], MX, R

    def right_vectors(self, y_handles: list, T: np.ndarray) -> list:
        """``V_p = Y_p T`` on the workers; returns the handles (values or futures).

        If the ``Y_p`` were lost with a worker, the final pass is run again to rebuild them.
        """
        for attempt in range(1, MAX_PASS_ATTEMPTS + 1):
            g = self._step("right-vectors", data_pass=False)
            vkeys = []
            for b, h in enumerate(y_handles):
                yk = g.key("y", b)
                g.dsk[yk] = h
                vkeys.append(g.task("v", (b,), _v_task, yk, T))
            try:
                kept, _ = self.ex.run(g.dsk, vkeys, [])
                handles = [kept[v] for v in vkeys]
                self.ex.settle(handles)  # a loss raises here, where the pass can be redone
                return handles
            except Exception as exc:
                if not (self.ex.distributed and is_worker_loss(exc)) \
                        or attempt == MAX_PASS_ATTEMPTS or self._last_final is None:
                    raise
                X, products = self._last_final
                y_handles, _, _ = self.final(X, products=products)
        raise AssertionError("unreachable")
