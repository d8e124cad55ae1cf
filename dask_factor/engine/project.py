"""Projection of samples onto a fixed W (``predict``) and exact reconstruction error."""

from __future__ import annotations

import uuid

import dask
import numpy as np
import scipy.sparse as sp

from ..kernels.products import csc_residual_parts, csc_sq_sum
from .als import ALSConfig, compute_on, h_block_task, make_wpack
from .blocks import BlockedMatrix


def _ht_only(block, wpack, cfg):
    return h_block_task(block, wpack, None, None, cfg)[0]


def project_blocks(bm: BlockedMatrix, W: np.ndarray, cfg: ALSConfig, client=None) -> list:
    """Solve ``H_p = NNLS(WᵀW + L2, WᵀA_p − L1)`` for every block (cold start, no partials).

    Returns a list of Delayed, one (n_p × k) array per block, not yet computed.
    """
    tok = uuid.uuid4().hex[:8]
    pack = dask.delayed(make_wpack, pure=True)(W, 0, cfg, dask_key_name=f"ppack-{tok}")
    return [dask.delayed(_ht_only, pure=True)(b, pack, cfg, dask_key_name=f"proj-{tok}-{i}")
            for i, b in enumerate(bm.blocks)]


def _block_sse(block, Wd, Ht):
    """``(‖A_p − Wd H_pᵀ‖², ‖A_p‖²)`` for one block, exactly, in float64.

    Sparse blocks: the residual at the stored entries plus the reconstruction's mass elsewhere
    (a trace minus the stored part), never ‖A‖² − 2⟨A, R⟩ + ‖R‖², which cancels badly.
    """
    Wd = np.ascontiguousarray(Wd, dtype=np.float64)
    Ht = np.ascontiguousarray(Ht, dtype=np.float64)
    if sp.issparse(block):
        sq = float(csc_sq_sum(block.data))
        res, rec_stored = csc_residual_parts(block.indptr, block.indices, block.data, Wd, Ht)
        rec_all = float(np.einsum("ij,ij->", Wd.T @ Wd, Ht.T @ Ht))
        return np.array([res + max(rec_all - rec_stored, 0.0), sq])
    A = np.asarray(block, dtype=np.float64)
    R = A - Wd @ Ht.T
    return np.array([float(np.einsum("ij,ij->", R, R)), float(np.einsum("ij,ij->", A, A))])


def _sum(*xs):
    return np.sum(np.stack(xs), axis=0)


def reconstruction_sse(bm: BlockedMatrix, Wd: np.ndarray, h_blocks: list, client=None):
    """(SSE, ‖A‖²) of ``A ≈ Wd Hᵀ`` where ``h_blocks[p]`` is ``H_pᵀ`` (n_p × k)."""
    tok = uuid.uuid4().hex[:8]
    Wd = dask.delayed(Wd, name=f"wd-{tok}")  # one graph node, not hashed or copied per block
    parts = [dask.delayed(_block_sse, pure=True)(b, Wd, h, dask_key_name=f"sse-{tok}-{i}")
             for i, (b, h) in enumerate(zip(bm.blocks, h_blocks))]
    total = dask.delayed(_sum, pure=True)(*parts, dask_key_name=f"sse-{tok}")
    out = compute_on(total, client)
    return max(float(out[0]), 0.0), float(out[1])
