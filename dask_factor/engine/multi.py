"""Graph layers on the one-pass engine: row-stacked inputs and layers fed by an upstream H.

Every layer of a factorization graph factorises a matrix ``M`` (R × n) whose columns are the
samples, ``M ≈ U diag(d) Vᵀ``:

* ``U`` (R × k) is *global*: small, solved by row ranges from reduced partials, broadcast;
* ``V`` (n × k) is *distributed*: its row block ``V_p`` (n_p × k) lives with sample block p.

Two kinds of layer share this machinery (docs/graphs.md):

* a **data layer** reads inputs: ``M = [A_1; …; A_q; Z]`` (``factor_shared`` row-binds inputs
  with the same samples, ``factor_condition`` appends Z's rows). ``U = W`` (one row part per
  input, never concatenated: the Gram and right-hand side are sums over the parts) and
  ``V = Hᵀ``. RcppML updates H first, so the order is V then U: one pass over the blocks per
  iteration, exactly like ``engine.als``.
* an **embedding layer** reads upstream layers: its RcppML input is ``X = t(H_up)`` (n × k_up),
  so ``M = Xᵀ`` is stacked from the upstream ``H`` blocks (``factor_concat`` stacks branches,
  ``factor_add`` sums them, ``factor_condition`` appends Z). Then ``U = Hᵀ`` of the layer (the
  k_up × k connecting matrix) and ``V = W`` (the per-sample embedding, row-local). H first means
  U then V: a pass for ``P = M V``, ``Q = VᵀV``, the small U solve, then a pass solving ``V_p``.

Scale follows RcppML: the factor solved first is normalised (its scale carried lazily for the
distributed factor), the second one is normalised and gives ``d``. Distributed blocks are kept
as their raw solve; the scale ``dV`` travels in the small :class:`LayerPack`.

Per-factor options (:class:`SideSpec`) act on the normal equations in RcppML's order
(docs/concepts.md): ``G += L2``, ``B −= L1``, ``G += λ_g F Lg Fᵀ`` (graph, from the current factor),
``G_ii += L21/‖F_i‖``, target (``G += λI, B += λT`` for λ > 0, the PROJ_ADV Gram edit for λ < 0);
after the solve the upper bound (inside the solvers) and the angular decorrelation ``F ← F (I − λ
diag(1/‖F‖) C diag(‖F‖))`` (clipped at 0 when non-negative). The angular step of the distributed
factor needs its Gram first, so it adds one pass of block tasks.

Functions here run inside Dask tasks (``spec`` is the layer, an :class:`~.nmf_layer.NMFSpec`
without its arrays; ``*args`` are a sample block's part arguments, turned into row blocks by
``spec.rows_of``); :class:`~.nmf_layer.NMFSpec` wires them into per-iteration graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..kernels.nnls import cholesky_clip_batch, gram_cholesky, nnls_cd_batch, sweep_budget
from ..kernels.products import column_sums, csc_a_ht, csc_wt_a, gram
from . import checkpoint
from .driver import BlockOutput
from .plan import LayerSpec, SideSpec

__all__ = ["SideSpec", "LayerPack", "factor_scale", "column_scale", "side_gram",
           "side_gram_extra", "angular_transform", "apply_angular", "graph_term"]


def __getattr__(name: str):
    if name == "PartSpec":  # the parts are classes now (one per kind of row block)
        import warnings

        from .plan import Part

        warnings.warn("dask_factor.engine.multi.PartSpec is deprecated; use the Part classes of "
                      "dask_factor.engine.plan", DeprecationWarning, stacklevel=2)
        return Part
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


EPS_GRAM = 1e-15
EPS_D = 1e-15
L21_FLOOR = 1e-10
PROJ_ADV_FLOOR = 1e-8


@checkpoint.register
@dataclass
class LayerPack:
    """The small state of a layer every task receives (opaque to Dask).

    U : (R, k) normalised U in the storage dtype (the raw initial value before the first update;
        None for an embedding layer before its first U solve).
    dU, dV : (k,) scales: ``U_raw = U·dU``; ``V_norm = V_raw / dV`` for the distributed blocks.
    G, L : Gram (features folded in) and its Cholesky factor for the next V solve.
    xscale : (k,) warm start of the next V solve, ``x₀ = V_raw_prev · xscale``.
    t : number of completed iterations.
    u_graph : λ_g UᵀLgU of the current U (next U solve), or None.
    v_norms : (k,) L2 norms of the current normalised V's columns (L21 on V), or None.
    """

    U: np.ndarray | None
    dU: np.ndarray
    dV: np.ndarray
    G: np.ndarray | None = None
    L: np.ndarray | None = None
    xscale: np.ndarray | None = None
    t: int = 0
    u_graph: np.ndarray | None = None
    v_norms: np.ndarray | None = None
    stats: dict | None = field(default=None)

    def d(self, embedding: bool) -> np.ndarray:
        """The model's scale: U's for a data layer, V's for an embedding layer."""
        return self.dV if embedding else self.dU

    def per_sample(self, V) -> np.ndarray:
        """The normalised per-sample factor of a raw V block (what downstream layers read)."""
        return np.asarray(V, dtype=np.float64) / self.dV


# --------------------------------------------------------------------------------------------
# small helpers (pure numpy)


def factor_scale(s: np.ndarray, s2: np.ndarray, norm: str) -> np.ndarray:
    """Per-factor scale from column sums of |F| (``s``) and of F² (``s2``)."""
    if norm == "L1":
        return s + EPS_D
    if norm == "L2":
        return np.sqrt(s2) + EPS_D
    return np.ones_like(s)


def column_scale(F: np.ndarray, norm: str) -> np.ndarray:
    """Per-column scale of a dense ``F`` (r × k): :func:`factor_scale` of its column sums of
    ``|F|`` or of ``F²`` (only the one ``norm`` uses is computed)."""
    F = np.asarray(F)
    k = F.shape[1]
    if norm == "L1":
        return factor_scale(column_sums(F, False), np.zeros(k), norm)
    if norm == "L2":
        return factor_scale(np.zeros(k), column_sums(F, True), norm)
    return np.ones(k)


def side_gram(G0: np.ndarray, side: SideSpec, *, graph_term=None, norms=None,
              gram_target=None, has_target: bool = False) -> np.ndarray:
    """Fold one side's options into the Gram ``G0`` (k × k), RcppML's order (docs/concepts.md)."""
    k = G0.shape[0]
    G = G0 + (side.L2 + EPS_GRAM) * np.eye(k)
    if graph_term is not None:
        G = G + graph_term
    if side.L21 > 0 and norms is not None:
        inc = np.where(norms > L21_FLOOR, side.L21 / np.maximum(norms, L21_FLOOR), 0.0)
        G = G + np.diag(inc)
    lam = side.target_lambda
    if has_target and lam > 0:
        G = G + lam * np.eye(k)
    elif has_target and lam < 0 and gram_target is not None:
        tr_t = float(np.trace(gram_target))
        alpha = float(np.trace(G)) / tr_t if tr_t > 1e-10 else 0.0
        G = G - abs(lam) * alpha * gram_target
        evals, evecs = np.linalg.eigh(G)
        if evals.min() < PROJ_ADV_FLOOR:
            G = (evecs * np.maximum(evals, PROJ_ADV_FLOOR)) @ evecs.T
    return G


def side_gram_extra(G0: np.ndarray, side: SideSpec, **kw) -> np.ndarray:
    """What :func:`side_gram` adds to ``G0`` beyond ``L2 + ε`` (graph, L21, target terms)."""
    k = G0.shape[0]
    return side_gram(G0, side, **kw) - (G0 + (side.L2 + EPS_GRAM) * np.eye(k))


def angular_transform(Q: np.ndarray, lam: float) -> np.ndarray:
    """``Tm`` with ``F_new = F Tm`` for the angular step, from ``Q = FᵀF`` (k × k, F: len × k).

    RcppML: ``Fᵀ ← Fᵀ − λ diag(‖F_i‖) C F̂ᵀ`` with ``C`` the cosine matrix of the factors
    (diagonal zeroed), i.e. ``F ← F (I − λ diag(1/‖F‖) C diag(‖F‖))``.
    """
    k = Q.shape[0]
    nrm = np.sqrt(np.maximum(np.diag(Q), 0.0))
    safe = np.where(nrm > L21_FLOOR, nrm, 1.0)
    C = Q / np.outer(safe, safe)
    np.fill_diagonal(C, 0.0)
    C[nrm <= L21_FLOOR, :] = 0.0
    C[:, nrm <= L21_FLOOR] = 0.0
    return np.eye(k) - lam * (C * (nrm[None, :] / safe[:, None]))


def apply_angular(F: np.ndarray, lam: float, nonneg: bool) -> np.ndarray:
    """The angular step on a whole factor ``F`` (len × k), clipped at 0 when ``nonneg``."""
    F = np.asarray(F, dtype=np.float64)
    out = F @ angular_transform(gram(F), lam)
    return np.maximum(out, 0.0) if nonneg else out


def graph_term(Fn: np.ndarray, Lg, lam: float) -> np.ndarray:
    """``λ Fnᵀ Lg Fn`` (k × k) for a Laplacian ``Lg`` over the factor's length."""
    Fn = np.asarray(Fn, dtype=np.float64)
    LF = Lg @ Fn
    return lam * (Fn.T @ np.asarray(LF))


# --------------------------------------------------------------------------------------------
# block products


def _is_sparse(x) -> bool:
    return hasattr(x, "indptr")


def rhs_t(parts, U: np.ndarray, offsets) -> np.ndarray:
    """``Σ_i A_iᵀ U_i`` for the row parts of one sample block: (n_p, k) float64."""
    out = None
    for i, A in enumerate(parts):
        Ui = U[offsets[i]:offsets[i + 1]]
        if _is_sparse(A):
            term = csc_wt_a(A.indptr, A.indices, A.data, np.ascontiguousarray(Ui)).T
        else:
            term = np.asarray(A, dtype=np.float64).T @ np.asarray(Ui, dtype=np.float64)
        out = term.copy() if out is None else out + term
    return np.ascontiguousarray(out)


def part_products(parts, V64: np.ndarray) -> list[np.ndarray]:
    """``A_i V`` (R_i × k, float64) for every row part of one sample block."""
    out = []
    Vt = None
    for A in parts:
        if _is_sparse(A):
            if Vt is None:
                Vt = np.ascontiguousarray(V64.T)
            out.append(csc_a_ht(A.indptr, A.indices, A.data, Vt, A.shape[0]))
        else:
            out.append(np.asarray(A, dtype=np.float64) @ V64)
    return out


def parts_sq_norm(parts) -> float:
    total = 0.0
    for A in parts:
        vals = A.data if _is_sparse(A) else np.asarray(A)
        v = np.asarray(vals, dtype=np.float64).ravel()
        total += float(v @ v)
    return total


def _gram_stats(V64: np.ndarray):
    return gram(V64), np.abs(V64).sum(axis=0), (V64 * V64).sum(axis=0)


# --------------------------------------------------------------------------------------------
# task functions: the distributed factor V


def v_solve(parts, pack: LayerPack, vprev, vtarget, spec: LayerSpec):
    """Solve ``V_p`` for one block; returns (V_raw in the storage dtype, clean RHS Σ A_iᵀU_i)."""
    side = spec.V
    Bc = rhs_t(parts, pack.U, spec.offsets)
    B = Bc - side.L1 if side.L1 else Bc.copy()
    if vtarget is not None and side.target_lambda > 0:
        B += side.target_lambda * vtarget
    X = np.empty(B.shape, dtype=np.float64)
    if spec.solver == "cholesky":
        cholesky_clip_batch(pack.L, B, X, side.nonneg, side.upper_bound)
    else:
        warm = vprev is not None
        if warm:
            X[...] = np.asarray(vprev, dtype=np.float64) * pack.xscale
        nnls_cd_batch(pack.G, B, X, warm, side.nonneg, side.upper_bound,
                      sweep_budget(warm, spec.cd_maxit), spec.cd_tol, spec.solver == "active")
    return X.astype(spec.dtype), Bc


def _v_extras(parts, V, Bc, want: str):
    V64 = np.asarray(V, dtype=np.float64)
    if want == "partials":  # data layer: W-update partials of the new V
        Q, s, s2 = _gram_stats(V64)
        return (part_products(parts, V64), Q, s, s2)
    if want == "gram":  # first phase of V's angular step
        return (gram(V64),)
    if want == "loss":  # embedding layer: what the loss and d need
        Q, s, s2 = _gram_stats(V64)
        cross = np.einsum("jf,jf->f", V64, Bc)
        return (Q, s, s2, cross, parts_sq_norm(parts))
    return ()


def v_task(pack: LayerPack, vprev, vtarget, spec: LayerSpec, want: str, *args):
    """V solve for one block plus the per-block reductions ``want`` asks for."""
    parts = spec.rows_of(args)
    V, Bc = v_solve(parts, pack, vprev, vtarget, spec)
    return BlockOutput((V, _v_extras(parts, V, Bc, want)))


def v_angular_task(pack: LayerPack, V, tm, spec: LayerSpec, want: str, *args):
    """Second phase of V's angular step: ``V ← V Tm`` (clipped), then the reductions."""
    parts = spec.rows_of(args)
    Vn = np.asarray(V, dtype=np.float64) @ tm
    if spec.V.nonneg:
        np.maximum(Vn, 0.0, out=Vn)
    Vs = Vn.astype(spec.dtype)
    Bc = rhs_t(parts, pack.U, spec.offsets) if want == "loss" else None
    return BlockOutput((Vs, _v_extras(parts, Vs, Bc, want)))


def m_partials(spec: LayerSpec, vraw, *args):
    """Embedding layer, first pass: ``P_i = M_i V``, ``Q = VᵀV``, Σ|V|, ΣV², ‖M_p‖² (raw V)."""
    parts = spec.rows_of(args)
    V64 = np.asarray(vraw, dtype=np.float64)
    Q, s, s2 = _gram_stats(V64)
    return (part_products(parts, V64), Q, s, s2, parts_sq_norm(parts))


def angular_tm(red, lam: float):
    return angular_transform(red[0], lam)


# --------------------------------------------------------------------------------------------
# task functions: the global factor U


def _u_gram(Qn: np.ndarray, pack: LayerPack, spec: LayerSpec, ugram_target, has_target):
    norms = None
    if spec.U.L21 > 0 and pack.U is not None and pack.t > 0:
        U64 = np.asarray(pack.U, dtype=np.float64)
        norms = np.sqrt((U64 * U64).sum(axis=0))
    return side_gram(Qn, spec.U, graph_term=pack.u_graph, norms=norms,
                     gram_target=ugram_target, has_target=has_target)


def u_rows_task(red, pack: LayerPack, part: int, r0: int, r1: int, spec: LayerSpec,
                utarget, ugram_target):
    """Solve rows ``r0:r1`` of row part ``part`` of U from the reduced partials.

    ``red`` = (P_list, Q, s, s2, …) of the *raw* V; V's scale is taken from ``red`` (data
    layer: V was just solved) or from the pack (embedding layer: V is the previous iterate).
    """
    P_list, Q, s, s2 = red[0], red[1], red[2], red[3]
    dV = pack.dV if spec.embedding else factor_scale(s, s2, spec.norm)
    Qn = Q / np.outer(dV, dV)
    has_t = utarget is not None
    G = _u_gram(Qn, pack, spec, ugram_target, has_t)
    o = spec.offsets[part]
    B = P_list[part][r0:r1] / dV
    if spec.U.L1:
        B = B - spec.U.L1
    if has_t and spec.U.target_lambda > 0:
        B = B + spec.U.target_lambda * utarget[o + r0:o + r1]
    B = np.ascontiguousarray(B, dtype=np.float64)
    X = np.empty(B.shape, dtype=np.float64)
    if spec.solver == "cholesky":
        cholesky_clip_batch(gram_cholesky(G), B, X, spec.U.nonneg, spec.U.upper_bound)
    else:
        warm = pack.t > 0 and pack.U is not None
        if warm:
            X[...] = np.asarray(pack.U[o + r0:o + r1], dtype=np.float64) * dV
        nnls_cd_batch(G, B, X, warm, spec.U.nonneg, spec.U.upper_bound,
                      sweep_budget(warm, spec.cd_maxit), spec.cd_tol, spec.solver == "active")
    return X


def _finish_u(spec: LayerSpec, rows, ugraph_lap):
    Uraw = np.vstack(rows) if len(rows) > 1 else np.asarray(rows[0])
    if spec.U.angular > 0:
        Uraw = apply_angular(Uraw, spec.U.angular, spec.U.nonneg)
    dU = column_scale(Uraw, spec.norm)
    U = (Uraw / dU).astype(spec.dtype)
    U64 = U.astype(np.float64)
    ug = (graph_term(U64, ugraph_lap, spec.U.graph_lambda)
          if ugraph_lap is not None and spec.U.graph_lambda else None)
    return U, U64, dU, ug


def _v_gram(U64, spec: LayerSpec, vterm, vnorms, vgram_target, has_vtarget):
    G = side_gram(gram(U64), spec.V, graph_term=vterm,
                  norms=vnorms if spec.V.L21 > 0 else None,
                  gram_target=vgram_target, has_target=has_vtarget)
    L = gram_cholesky(G) if spec.solver == "cholesky" else None
    return G, L


def u_finish_data(red, pack: LayerPack, ssq: float, spec: LayerSpec, ugraph_lap,
                  vgram_target, has_vtarget: bool, vterm, *rows):
    """Data layer: assemble U, extract d, the loss (Gram trick), the next V-solve package."""
    P_list, Q, s, s2 = red[0], red[1], red[2], red[3]
    dV = factor_scale(s, s2, spec.norm)
    U, U64, dU, ug = _finish_u(spec, rows, ugraph_lap)
    Qn = Q / np.outer(dV, dV)
    off = spec.offsets
    cross = 0.0
    for i, P in enumerate(P_list):
        cross += float(np.sum(dU * np.einsum("if,if->f", U64[off[i]:off[i + 1]], P / dV)))
    quad = float(np.sum(np.outer(dU, dU) * gram(U64) * Qn))
    sse = ssq - 2.0 * cross + quad
    vnorms = np.sqrt(s2) / dV
    G, L = _v_gram(U64, spec, vterm, vnorms, vgram_target, has_vtarget)
    return LayerPack(U=U, dU=dU, dV=dV, G=G, L=L, xscale=dU / dV, t=pack.t + 1, u_graph=ug,
                     v_norms=vnorms, stats={"sse": max(sse, 0.0), "ssq": ssq})


def u_finish_embedding(red, pack: LayerPack, spec: LayerSpec, ugraph_lap, vgram_target,
                       has_vtarget: bool, vterm, *rows):
    """Embedding layer, after the U solve: normalise U, build the V-solve package."""
    U, U64, dU, ug = _finish_u(spec, rows, ugraph_lap)
    G, L = _v_gram(U64, spec, vterm, pack.v_norms, vgram_target, has_vtarget)
    return LayerPack(U=U, dU=dU, dV=pack.dV, G=G, L=L, xscale=dU / pack.dV, t=pack.t,
                     u_graph=ug, v_norms=pack.v_norms, stats={"ssq": float(red[4])})


def v_finish_embedding(red, upack: LayerPack, spec: LayerSpec):
    """Embedding layer, after the V solve: ``d`` from V's scale and the loss."""
    Q, s, s2, cross, ssq = red
    dV = factor_scale(s, s2, spec.norm)
    U64 = np.asarray(upack.U, dtype=np.float64)
    sse = float(ssq) - 2.0 * float(np.sum(cross)) + float(np.sum(Q * gram(U64)))
    return LayerPack(U=upack.U, dU=upack.dU, dV=dV, G=upack.G, L=upack.L, xscale=upack.xscale,
                     t=upack.t + 1, u_graph=upack.u_graph, v_norms=np.sqrt(s2) / dV,
                     stats={"sse": max(sse, 0.0), "ssq": float(ssq)})


def v_graph_term_data(Lg, lam: float, red, norm: str, *blocks):
    """``λ Vnᵀ Lg Vn`` of the V just solved (gathers the blocks: n × k)."""
    dV = factor_scale(red[2], red[3], norm)
    Vn = np.vstack([np.asarray(b, dtype=np.float64) for b in blocks]) / dV
    return graph_term(Vn, Lg, lam)


def v_graph_term_pack(Lg, lam: float, pack: LayerPack, *blocks):
    """``λ Vnᵀ Lg Vn`` of the current V (before the first update: None)."""
    if blocks[0] is None:
        return None
    Vn = np.vstack([np.asarray(b, dtype=np.float64) for b in blocks]) / pack.dV
    return graph_term(Vn, Lg, lam)


# --------------------------------------------------------------------------------------------
# initial packages, projection


def initial_pack(spec: LayerSpec, U0, vgram_target=None, has_vtarget: bool = False):
    """The package before the first iteration: U0 (data layer, used as is) or nothing."""
    k = spec.k
    ones = np.ones(k)
    if spec.embedding:
        return LayerPack(U=None, dU=ones, dV=ones.copy(), xscale=ones.copy(), t=0)
    U = np.ascontiguousarray(U0, dtype=spec.dtype)
    U64 = U.astype(np.float64)
    G, L = _v_gram(U64, spec, None, None, vgram_target, has_vtarget)
    return LayerPack(U=U, dU=ones, dV=ones.copy(), G=G, L=L, xscale=ones.copy(), t=0)


def projection_pack(spec: LayerSpec, U: np.ndarray, d: np.ndarray) -> LayerPack:
    """Package projecting new samples onto a fitted U: ``V = NNLS(UᵀU + L2, UᵀM − L1)``.

    ``dV = d`` so that an embedding layer downstream reads ``V_raw / d`` (H scaled like the
    fitted H).
    """
    U = np.ascontiguousarray(U, dtype=spec.dtype)
    U64 = U.astype(np.float64)
    G = gram(U64) + (spec.V.L2 + EPS_GRAM) * np.eye(spec.k)
    return LayerPack(U=U, dU=np.ones(spec.k), dV=np.asarray(d, dtype=np.float64), G=G, L=None,
                     xscale=np.ones(spec.k), t=0)


def project_task(pack: LayerPack, spec: LayerSpec, *args):
    """Cold-start projection of one block (coordinate descent to convergence)."""
    return v_solve(spec.rows_of(args), pack, None, None, spec)[0]


def to_dense_block(x):
    """A block as a dense float64 array (for tests and gathers)."""
    return x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)
