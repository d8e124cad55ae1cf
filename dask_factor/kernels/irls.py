"""Per-column IRLS around coordinate-descent NNLS, for the count-data losses (docs/losses.md).

Every problem solved here is one column ``y`` (length p) of a CSC matrix against a dense factor
``F`` (p × k): the H half-step solves the columns of a block of A against W, the W half-step the
columns of a block of Aᵀ (rows of A) against H. The model of the column is ``μ = F x`` and the
objective ``Σᵢ ℓ(yᵢ, μᵢ)`` with ℓ the loss's unit negative log-likelihood or deviance:

    ====================  ======================================  ============  ==============
    loss (code)           ℓ(y, μ)                                 V(μ)          zeros
    ====================  ======================================  ============  ==============
    kl (1)                y log(y/μ) − y + μ                      μ             observed
    nb (2), size r        −log NB(y; μ, r)                        μ + μ²/r      observed
    gamma (3)             2(−log(y/μ) + (y − μ)/μ)                μ²            outside support
    inverse_gaussian (4)  (y − μ)² / (μ² y)                       μ³            outside support
    tweedie (5), power q  2(y^{2−q}/((1−q)(2−q)) − yμ^{1−q}/(1−q) μ^q           observed if q<2
                          + μ^{2−q}/(2−q))
    gp (6), θ             −log GP(y; λ = μ/(1+θ), ξ = θ/(1+θ))    μ(1+θ)²       observed
    ====================  ======================================  ============  ==============

One IRLS step fixes the weights ``wᵢ = 1/V(μᵢ)`` at the current ``x`` (μ floored, weights capped at
``W_CAP``; the KL/GP weight is ``1/max(μ, 1e-4)``, RcppML's), each stored entry's curvature
``hᵢ = max(wᵢ, ∂²ℓ(yᵢ, μᵢ)/∂μ²)`` (:func:`step_curvature`; ``hᵢ = wᵢ`` in the first step from
x = 0, which a cold solve takes only when :func:`scale_start` has nothing to scale)
and solves the NNLS

    minimise  ½ Σ_{yᵢ>0} hᵢ (zᵢ − Fᵢᵀx)²  +  Σ_{yᵢ=0} cᵢ Fᵢᵀx  (+ L1·Σx + ½ L2 ‖x‖²),
              zᵢ = μᵢ − wᵢ(μᵢ − yᵢ)/hᵢ

where the zero entries enter through the derivative of their loss, ``cᵢ = ∂ℓ(0, μ)/∂μ`` in the
same units (1 for KL and GP, r/(r+μ) for NB, μ·w(μ) = μ^{1−q} for Tweedie). The gradient of this
subproblem at the current ``x`` is the gradient of the true objective (``wᵢ(μᵢ − yᵢ)`` is each
stored entry's) wherever the weight cap does not bind (it does for Tweedie's zeros at μ < 1e-4,
whose pull is then smaller: kept, as the exact slope settles in worse fits), so its solution
is a descent direction: the step is halved until the column's objective does not rise
(monotone fits), and a fixed point is a stationary point of the loss over *all* entries. The
quadratic is built over the stored entries only (O(nnz·k²)); the zero entries cost O(k) per
column for KL/GP (``cᵢ`` ≡ 1: ``Σ_zeros Fᵢ = Σ_all Fᵢ − Σ_stored Fᵢ``) and O(p·k) for
NB/Tweedie (:func:`zero_pull`). Gamma and inverse Gaussian have no mass at 0: a zero entry is
outside their support and is not part of the fit or the objective.

The columns are solved serially (Dask runs blocks in parallel); sums are float64 in a fixed order.
GP follows RcppML: the factor updates use the KL weights, θ is fitted separately
(:func:`row_update`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .masked import column_excluded
from .nnls import cd_solve, residual, sweep_budget
from .simd import vfma, vfma_vec, vload, vload_f64, vmuladd, vstore, vzeros
from .vmath import vexp, vlog, vlog1p

MSE, KL, NB, GAMMA, INVERSE_GAUSSIAN, TWEEDIE, GP = 0, 1, 2, 3, 4, 5, 6
# the codes as numpy scalars, for calls with a fixed loss: numba types a Python int constant as
# a literal and compiles the callee once more for it (unit_loss was compiled four times); int64
ANY_MSE, ANY_KL = np.int64(MSE), np.int64(KL)
#: loss name → kernel code
LOSS_CODES = {"mse": MSE, "kl": KL, "nb": NB, "gamma": GAMMA, "inverse_gaussian": INVERSE_GAUSSIAN,
              "tweedie": TWEEDIE, "gp": GP}
MU_FLOOR = 1e-10
KL_FLOOR = 1e-4
W_CAP = 1e6
#: halvings of an IRLS step before it is abandoned (the start is kept)
MAX_BACKTRACK = 10
#: halvings of a step that is no descent direction (its slope at the start is ≥ 0): the
#: objective is not convex along the step, so a shorter one may still lower it, but on pbmc3k
#: (Tweedie) no step that failed a first halving passed a later one
ASCENT_HALVINGS = 1


@njit(nogil=True, cache=True, inline="always")
def _power(m, e):
    """``m ** e`` (m > 0), by a square root for e = ±½ (Tweedie's default power 1.5 needs
    μ^{−1.5}, μ^{−0.5} and μ^{0.5}: a square root is several times cheaper than ``pow``)."""
    if e == 0.5:
        return math.sqrt(m)
    if e == -0.5:
        return 1.0 / math.sqrt(m)
    if e == -1.5:
        return 1.0 / (m * math.sqrt(m))
    return m ** e


@njit(nogil=True, cache=True, fastmath=False)
def zeros_observed(code, power):
    """Whether a zero entry is part of the fit and the objective for this loss."""
    if code == GAMMA or code == INVERSE_GAUSSIAN:
        return False
    if code == TWEEDIE:
        return power < 2.0
    return True


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def irls_weight(code, mu, disp, power):
    """The IRLS weight ``1/V(μ)`` (floored μ, capped at :data:`W_CAP`)."""
    if code == MSE:
        return 1.0
    if code == KL or code == GP:
        return 1.0 / max(mu, KL_FLOOR)
    m = max(mu, MU_FLOOR)
    if code == NB:
        r = max(disp, 1e-10)
        w = r / (m * (r + m))
    elif code == GAMMA:
        w = 1.0 / (m * m)
    elif code == INVERSE_GAUSSIAN:
        w = 1.0 / (m * m * m)
    else:
        w = _power(m, -power)
    return min(w, W_CAP)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def step_curvature(code, y, mu, disp, power, w):
    """The curvature an IRLS step gives a stored entry: the larger of its Fisher weight ``w``
    and the observed second derivative of ℓ in μ (subproblem units), capped at :data:`W_CAP`
    but for Tweedie: a count whose mean is near 0 has a curvature far above the cap there, and
    capping it let the step overshoot (more halvings, a higher objective; docs/losses.md)."""
    if code == KL or code == GP:
        m = max(mu, KL_FLOOR)
        obs = y / (m * m)
    elif code == NB:
        r = max(disp, 1e-10)
        m = max(mu, MU_FLOOR)
        obs = y / (m * m) - (y + r) / ((r + m) * (r + m))
    elif code == MSE:
        return w
    else:  # Tweedie family (Gamma q = 2, inverse Gaussian q = 3): w·(1 + q(y − μ)/μ)
        m = max(mu, MU_FLOOR)
        q = 2.0 if code == GAMMA else (3.0 if code == INVERSE_GAUSSIAN else power)
        obs = w * (1.0 + q * (y - m) / m)
        if code == TWEEDIE:
            return max(w, obs)
    return min(max(w, obs), W_CAP)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def unit_slope(code, y, mu, disp, power):
    """``∂ℓ(y, μ)/∂μ`` of a stored entry in the objective's units (μ floored as
    :func:`unit_loss` floors it), for the IRLS losses (least squares, robust or not, is fitted
    from its Gram and never asks): the slope a step's directional derivative is made of
    (:func:`irls_column`'s backtracking)."""
    m = max(mu, MU_FLOOR)
    if code == KL or code == GP:
        return 1.0 - y / m
    if code == NB:
        r = max(disp, 1e-10)
        return r * (m - y) / (m * (r + m))
    if code == GAMMA:
        return 2.0 * (m - y) / (m * m)
    if code == INVERSE_GAUSSIAN:
        return 2.0 * (m - y) / (m * m * m)
    return 2.0 * (m - y) * _power(m, -power)


@njit(nogil=True, cache=True, fastmath=False)
def zero_slope(code, mu, disp, power):
    """``∂ℓ(0, μ)/∂μ`` in the IRLS subproblem's units (the pull of a zero entry)."""
    if code == KL or code == GP:
        return 1.0
    if code == NB:
        r = max(disp, 1e-10)
        return r / (r + max(mu, 0.0))
    if code == TWEEDIE:
        m = max(mu, MU_FLOOR)
        return m * irls_weight(code, m, disp, power)
    return 0.0


#: counts up to this take their log-gamma terms as sums of logarithms and a table
SMALL_COUNT = 16
#: ``log y!`` for y = 0 … SMALL_COUNT
LOG_FACTORIAL = np.array([math.lgamma(y + 1.0) for y in range(SMALL_COUNT + 1)])


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def log_factorial(y):
    """``log Γ(y + 1)``: from :data:`LOG_FACTORIAL` for a small whole ``y``."""
    if 0.0 <= y <= SMALL_COUNT and y == math.floor(y):
        return LOG_FACTORIAL[int(y)]
    return math.lgamma(y + 1.0)


@njit(nogil=True, cache=True, inline="always")
def kl_stored(y, m):
    """KL's ``ℓ(y, μ)`` (m the floored μ): ``y·log(y/μ) − y + μ``, and ``μ`` where y = 0."""
    return y * vlog(y / m) - y + m if y > 0.0 else m


@njit(nogil=True, cache=True, inline="always")
def nb_mu_terms(r, m, y):
    """NB's ``ℓ(y, μ)`` up to its log-gamma terms: ``r·log1p(μ/r) + y·log1p(r/μ)`` (r, m
    floored), without the large constants of the other forms."""
    return r * vlog1p(m / r) + y * vlog1p(r / m)


@njit(nogil=True, cache=True, inline="always")
def zero_loss(code, mu, disp, power):
    """``ℓ(0, μ)`` of NB (``r·log1p(μ/r)``) and Tweedie with q < 2 (``2μ^{2−q}/(2−q)``), in
    arithmetic a loop over rows vectorises (:mod:`.vmath`, :func:`_power`)."""
    m = max(mu, MU_FLOOR)
    if code == NB:
        r = max(disp, 1e-10)
        return r * vlog1p(m / r)
    if power == 1.0:
        return 2.0 * m
    tmp = 2.0 - power
    return 2.0 * _power(m, tmp) / tmp


@njit(nogil=True, cache=True, fastmath={"contract"})
def nb_log_gamma(y, r):
    """NB's terms free of μ at a count ``y`` > 0 and size ``r``: ``log y! + log Γ(r) −
    log Γ(y + r)`` (a sum of logarithms for a small whole y, ``log Γ(y+r)/Γ(r) =
    Σ_{t<y} log(r + t)``)."""
    if y <= SMALL_COUNT and y == math.floor(y):
        g = LOG_FACTORIAL[int(y)]
        for t in range(int(y)):
            g -= vlog(r + t)
        return g
    return -math.lgamma(y + r) + math.lgamma(r) + math.lgamma(y + 1.0)


@njit(nogil=True, cache=True, fastmath={"contract"})
def tweedie_stored(y, m, omp, tmp):
    """Tweedie's ``ℓ(y, μ)`` at y > 0, 1 < q < 2 (``omp`` = 1 − q, ``tmp`` = 2 − q; m the
    floored μ), :func:`unit_loss`'s; :func:`stored_losses` takes the powers in loops of their
    own and then :func:`tweedie_parts` as this does (the same bits)."""
    return tweedie_parts(y, _power(y, tmp), _power(m, omp), _power(m, tmp), omp, tmp)


@njit(nogil=True, cache=True, fastmath={"contract"})
def tweedie_parts(y, yp, mp, mq, omp, tmp):
    """:func:`tweedie_stored` from its powers ``yp = y^tmp``, ``mp = μ^omp``, ``mq = μ^tmp``."""
    return 2.0 * (yp / (omp * tmp) - y * mp / omp + mq / tmp)


@njit(nogil=True, cache=True, fastmath={"contract"})
def unit_loss(code, y, mu, disp, power):
    """ℓ(y, μ) of one entry (NB and GP: the full negative log-likelihood, log y! included)."""
    if code == MSE:
        return (y - mu) * (y - mu)
    m = max(mu, MU_FLOOR)
    if code == KL:
        return kl_stored(y, m)
    if code == NB:
        r = max(disp, 1e-10)
        if y == 0.0:
            return zero_loss(code, mu, disp, power)
        return nb_log_gamma(y, r) + nb_mu_terms(r, m, y)
    if code == GAMMA:
        return 2.0 * (-math.log(y / m) + (y - m) / m)
    if code == INVERSE_GAUSSIAN:
        return (y - m) * (y - m) / (m * m * y)
    if code == TWEEDIE:
        if power == 1.0:
            if y > 0.0:
                return 2.0 * (y * math.log(y / m) - (y - m))
            return 2.0 * m
        if power == 2.0:
            return 2.0 * (-math.log(y / m) + (y - m) / m)
        if y == 0.0:
            return zero_loss(code, mu, disp, power)
        return tweedie_stored(y, m, 1.0 - power, 2.0 - power)
    # GP: λ = μ/(1+θ), ξ = θ/(1+θ), P(y) = λ(λ+ξy)^{y−1} e^{−λ−ξy} / y!
    th = max(disp, 0.0)
    lam = m / (1.0 + th)
    xy = th * y / (1.0 + th)
    out = lam + xy
    if y > 0.0:
        out += -vlog(lam) + log_factorial(y)
        if y >= 1.0:
            out -= (y - 1.0) * math.log(max(lam + xy, MU_FLOOR))
    return out


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def robust_parts(code, y, mu, disp, power, delta):
    """``(entry, h)`` of one entry under ``robust=δ``: the Huber-robustified loss
    ``ℓ − s·max(√dev − δ, 0)²`` and its IRLS weight factor ``h = min(1, δ/√dev)``.

    ``dev = (ℓ − ℓ_sat)/s`` is the entry's squared deviance residual: ``(y − μ)²`` for MSE
    (s = 1: classic Huber), twice ℓ for KL (s = ½: the Poisson deviance), the NB deviance
    (s = ½, ℓ_sat the NLL at μ = y), ℓ itself for Gamma, inverse Gaussian and Tweedie (full
    deviances, s = 1); GP's residual is the Poisson deviance's (its factor updates fit KL). The
    entry equals ℓ while ``√dev ≤ δ`` and grows linearly in ``√dev`` beyond, and its derivative
    in μ is ``h·∂ℓ/∂μ``: the IRLS weight ``h/V(μ)`` is exact for this objective.
    """
    ent, h = robust_terms(code, y, mu, disp, power, delta)
    if code == NB and y > 0.0:
        ent += nb_log_gamma(y, max(disp, 1e-10))
    return ent, h


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def robust_terms(code, y, mu, disp, power, delta):
    """:func:`robust_parts` up to terms free of μ: NB leaves out its log-gamma terms
    (:func:`nb_mu_terms`; its deviance is their difference at μ and at y, which they cancel
    from), the other losses are whole. What the IRLS step test compares."""
    if code == NB:
        r = max(disp, 1e-10)
        ell = nb_mu_terms(r, max(mu, MU_FLOOR), y)
        sat = nb_mu_terms(r, y, y) if y > 0.0 else 0.0
        s = 0.5
        dev = (ell - sat) / s
    else:
        ell = unit_loss(code, y, mu, disp, power)
        s = 0.5 if code == KL or code == GP else 1.0
        if code == GP:
            dev = unit_loss(ANY_KL, y, mu, disp, power) / s
        else:
            dev = ell / s
    return huber(ell, dev, s, delta)


@njit(nogil=True, cache=True, error_model="numpy", inline="always")
def huber(ell, dev, s, delta):
    """``(ρ, h)`` of an entry whose loss is ``ell`` and squared deviance residual ``dev`` (its
    scale ``s``) under ``robust=δ`` (δ > 0): ``ρ = ℓ − s·max(√dev − δ, 0)²`` and the Huber
    factor ``h = min(1, δ/√dev)``, computed as ``δ/max(√dev, δ)`` (exactly 1 while
    ``√dev ≤ δ``, an exact fit included: no division by zero). Branch-free, so loops over
    entries vectorise; ``ρ`` is ``ℓ`` to the bit while ``√dev ≤ δ``."""
    rt = math.sqrt(max(dev, 0.0))
    over = max(rt - delta, 0.0)
    return ell - s * over * over, delta / max(rt, delta)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def _dot(F, i, x):
    acc = 0.0
    for f in range(x.size):
        acc += F[i, f] * x[f]
    return acc


@njit(nogil=True, cache=True, inline="always")
def _skip(ex_row, ne, e, i):
    """Advance the excluded-rows pointer ``e`` to row ``i``; returns (e, whether i is excluded)."""
    while e < ne and ex_row[e] < i:
        e += 1
    return e, (e < ne and ex_row[e] == i)


@njit(nogil=True, cache=True, inline="always")
def _walk(indices, end, q, ex_row, ne, e, i):
    """Row ``i`` of a walk over every row of a column whose stored entries run from ``q`` to
    ``end`` and whose excluded rows are ``ex_row[:ne]`` (both sorted): returns ``(q, e, stored,
    excluded)``, ``q`` moved past row i's stored entry (at ``q − 1`` when ``stored``) and ``e``
    to the exclusions at row i."""
    stored = q < end and indices[q] == i
    if stored:
        q += 1
    excluded = False
    if ne > 0:
        e, excluded = _skip(ex_row, ne, e, i)
    return q, e, stored, excluded


#: the largest zero-inflation probability (a row or column of zeros only goes there)
PI_MAX = 1.0 - 1e-10
NO_PI = np.zeros(0)
NO_FT = np.zeros((0, 0))


@njit(nogil=True, cache=True, fastmath=False)
def zi_zero(code, mu, disp, power, pi):
    """``(ℓ, 1 − z)`` of a zero under zero inflation π: ``ℓ = −log(π + (1 − π)P₀(μ))`` and the
    count part's posterior share ``1 − z = (1 − π)P₀/(π + (1 − π)P₀)`` (P₀ = e^{−ℓ(0, μ)})."""
    p0 = math.exp(-unit_loss(code, 0.0, mu, disp, power))
    mix = max(pi + (1.0 - pi) * p0, 1e-300)
    return -math.log(mix), (1.0 - pi) * p0 / mix


# inline="always": left to LLVM, the call stays a call and zi_rows' loop runs one row at a
# time (nb with zi="row" on pbmc3k: 12.6 → 43.3 s an iteration, measured)
@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _zi_term(code, mu, disp, pi):
    """``(ℓ, 1 − z, ∂ℓ(0, μ)/∂μ)`` of a zero at ``μ`` under zero inflation π (:func:`zi_zero`
    and :func:`zero_slope` for NB, GP and KL, in arithmetic a loop over rows vectorises)."""
    m = max(mu, MU_FLOOR)
    if code == NB:
        r = max(disp, 1e-10)
        l0 = r * vlog1p(m / r)
        slope = r / (r + max(mu, 0.0))
    elif code == GP:
        l0 = m / (1.0 + max(disp, 0.0))
        slope = 1.0
    else:  # KL
        l0 = m
        slope = 1.0
    p0 = vexp(-l0)
    mix = max(pi + (1.0 - pi) * p0, 1e-300)
    return -vlog(mix), (1.0 - pi) * p0 / mix, slope


@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def zi_rows(Ft, x, j, disp, disp_by_col, code, zrow, pj, mu, out, cz):
    """Every row of F scored as a zero at ``μᵢ = (F x)ᵢ`` under zero inflation (:func:`_zi_term`;
    π is ``zrow[i]`` when ``zrow`` has entries, else ``pj``): ``out`` (4,) ← ``(Σ ℓᵢ, Σ zᵢ,
    Σ (1 − zᵢ)μᵢ, Σ (1 − zᵢ)μᵢ²)``, ``mu`` ← F x (as :func:`all_means`, to the bit) and ``cz``
    ← ``Σᵢ (1 − zᵢ)·∂ℓ(0, μᵢ)/∂μ·Fᵢ``. ``Ft`` is Fᵀ (k × p, C order).
    O(p·k), in tiles of :data:`PULL_TILE` rows whose sums go into :data:`LANES` partials added
    in lane order at the end (as :func:`zero_pull`): every loop vectorises, the order is
    fixed."""
    k, p = Ft.shape
    T = PULL_TILE
    L = LANES
    acc = np.zeros(k * L)
    lanes = np.zeros(4 * L)
    terms = np.empty((4, T))
    w1 = np.empty(T)
    dt = np.empty(T)
    pt = np.empty(T)
    for i0 in range(0, p, T):
        n = min(T, p - i0)
        mt = mu[i0:i0 + n]
        tile_means(Ft, x, i0, mt)
        if disp_by_col:  # the tile's dispersions and π first: the next loop has no branch
            dt[:n] = disp[j]
        else:
            dt[:n] = disp[i0:i0 + n]
        if zrow.size > 0:
            pt[:n] = zrow[i0:i0 + n]
        else:
            pt[:n] = pj
        for t in range(n):
            ell, keep, slope = _zi_term(code, mt[t], dt[t], pt[t])
            terms[0, t] = ell
            terms[1, t] = 1.0 - keep
            terms[2, t] = keep * mt[t]
            terms[3, t] = keep * mt[t] * mt[t]
            w1[t] = keep * slope
        for s_ in range(4):
            lanes_add(lanes[s_ * L:(s_ + 1) * L], terms[s_], n)
        for f in range(k):
            lanes_fma(acc[f * L:(f + 1) * L], w1, Ft[f, i0:i0 + n], n)
    for s_ in range(4):
        out[s_] = lanes_total(lanes, s_ * L)
    for f in range(k):
        cz[f] = lanes_total(acc, f * L)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def zi_sums(indptr, indices, j, F, Ft, x, disp, disp_by_col, code, zrow, pj, ex_row, ne, mu,
            cz):
    """Column j's kept entries at ``μ = F x`` under zero inflation (π is ``zrow[i]`` when
    ``zrow`` has entries, else ``pj``; ``code`` NB, GP or KL): ``(part, kept, Σ zᵢ,
    Σ (1 − zᵢ)μᵢ, Σ (1 − zᵢ)μᵢ²)``, ``part`` the zero-inflated part of its objective
    (``−log(1 − π)`` per stored entry, the mixture loss of each zero: :func:`zi_zero`), the
    sums over its zeros of their posterior ``zᵢ`` of being an extra zero, and ``cz`` (k,) ←
    ``Σ_zeros (1 − zᵢ)·∂ℓ(0, μᵢ)/∂μ·Fᵢ``, the zeros' pull (the gradient of the mixture's
    loss: the E-step's weights at the current μ). ``Ft`` (Fᵀ, C order) and ``mu`` (p,,
    scratch): every row is first scored as a zero in vectorised passes (:func:`zi_rows`), then
    the stored and the excluded rows' zero terms are taken back out (O(nnz)); an empty ``Ft``
    is made here. O(p·k)."""
    if Ft.shape[1] != F.shape[0] or mu.size != F.shape[0]:
        Ft = _transposed(F, Ft)
        mu = np.empty(F.shape[0])
    k = x.size
    s = np.empty(4)
    zi_rows(Ft, x, j, disp, disp_by_col, code, zrow, pj, mu, s, cz)
    part, tz, s1, s2 = s[0], s[1], s[2], s[3]
    e = 0
    q = indptr[j]
    end = indptr[j + 1]
    for pass_ in range(2):  # the stored rows (not excluded), then the excluded rows
        top = end if pass_ == 0 else ne
        for t in range(q if pass_ == 0 else 0, top):
            if pass_ == 0:
                i = indices[t]
                e, skip = _skip(ex_row, ne, e, i)
                if skip:  # taken out with the exclusions
                    continue
            else:
                i = ex_row[t]
            pi = zrow[i] if zrow.size > 0 else pj
            ell, keep, slope = _zi_term(code, mu[i], disp[j] if disp_by_col else disp[i], pi)
            part -= ell
            if pass_ == 0:
                part -= math.log1p(-pi)
            tz -= 1.0 - keep
            s1 -= keep * mu[i]
            s2 -= keep * mu[i] * mu[i]
            for f in range(k):
                cz[f] -= keep * slope * F[i, f]
    return part, F.shape[0] - ne, tz, s1, s2


@njit(nogil=True, cache=True, fastmath=False)
def zi_entries(indptr, indices, j, F, Ft, x, disp, disp_by_col, code, zpi, zpi_by_col,
               ex_row, ne, mu, cz, want_cz):
    """The zero-inflated part of column j's objective over its kept entries, with π
    ``zpi[j]`` (``zpi_by_col``) or ``zpi[i]``, and with ``want_cz`` the zeros' pull ``cz``
    (:func:`zi_sums`; else ``cz`` is left as it was). O(p·k)."""
    pull = cz if want_cz else np.empty(x.size)
    # zpi[:0], not NO_PI: one compiled zi_sums (a constant array is typed read-only)
    zrow = zpi[:0] if zpi_by_col else zpi
    return zi_sums(indptr, indices, j, F, Ft, x, disp, disp_by_col, code, zrow,
                   zpi[j] if zpi_by_col else 0.0, ex_row, ne, mu, pull)[0]


@njit(nogil=True, cache=True, fastmath=False)
def zero_shares(indptr, indices, j, F, x, disp, disp_by_col, code, power, pi, zpi, ex_row, ne,
                Ft=NO_FT, mu=NO_PI):
    """The kept entries of column j at ``μ = F x`` under zero inflation: ``(kept, Σ zᵢ,
    Σ (1 − zᵢ)μᵢ, Σ (1 − zᵢ)μᵢ²)``, the last three over its zeros, ``zᵢ`` the posterior of
    being an extra zero (:func:`zi_zero`) with π = ``zpi[i]`` when ``zpi`` has entries, else
    ``pi``; ``code`` NB, GP or KL (:func:`zi_sums`). O(p·k)."""
    _, kept, tz, s1, s2 = zi_sums(indptr, indices, j, F, Ft, x, disp, disp_by_col, code, zpi,
                                  pi, ex_row, ne, mu, np.empty(x.size))
    return kept, tz, s1, s2


@njit(nogil=True, cache=True, fastmath=False)
def zi_pi_step(indptr, indices, j, F, x, disp, disp_by_col, code, power, pi, ex_row, ne,
               Ft=NO_FT, mu=NO_PI):
    """One EM step of column j's zero-inflation probability at ``μ = F x``: the mean over its
    kept entries of the posterior ``z`` of being an extra zero (0 for a stored entry)."""
    kept, total, _, _ = zero_shares(indptr, indices, j, F, x, disp, disp_by_col, code, power,
                                    pi, np.empty(0), ex_row, ne, Ft, mu)
    if kept == 0:
        return pi
    return min(max(total, 0.0) / kept, PI_MAX)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def _robust_mse_column(indptr, indices, data, j, F, Ft, Q, x, delta, ex_row, ne, mu, G, b,
                       gram):
    """:func:`robust_column` for least squares with the zeros in the fit, from the Gram
    ``Q = FᵀF``: every kept entry has weight 1 but the outliers (``|y − μ| > δ``, weight
    ``δ/|y − μ|``), so ``Σ`` over the rows is ``xᵀQx`` (``G`` ← Q) corrected at the stored and
    excluded rows (O(nnz·k²)) and at the zeros whose ``|μ| > δ`` (found in one pass over ``μ``,
    computed in vectorised passes, :func:`all_means`): O(p·k + (nnz + outliers)·k²) instead
    of O(p·k²)."""
    k = x.size
    p = F.shape[0]
    all_means(Ft, x, mu)
    out = 0.0
    for f in range(k):
        s_ = 0.0
        for g in range(k):
            s_ += Q[f, g] * x[g]
        out += x[f] * s_
    if gram:
        for f in range(k):
            for g in range(f + 1):
                G[f, g] += Q[f, g]
    start, end = indptr[j], indptr[j + 1]
    e = 0
    for q in range(start, end):  # a stored entry: its own term instead of a zero's
        i = indices[q]
        e, skip = _skip(ex_row, ne, e, i)
        if skip:
            continue
        y = np.float64(data[q])
        m = mu[i]
        ent, h = robust_parts(ANY_MSE, y, m, 0.0, 0.0, delta)
        out += ent - m * m
        if gram:
            for f in range(k):
                hf = (h - 1.0) * F[i, f]
                b[f] += h * y * F[i, f]
                for g in range(f + 1):
                    G[f, g] += hf * F[i, g]
    for e in range(ne):  # an excluded row: no term
        i = ex_row[e]
        out -= mu[i] * mu[i]
        if gram:
            for f in range(k):
                for g in range(f + 1):
                    G[f, g] -= F[i, f] * F[i, g]
    q = start
    e = 0
    for i in range(p):  # a zero beyond δ: Huber's linear part
        r = abs(mu[i])
        if r <= delta:
            continue
        while q < end and indices[q] < i:
            q += 1
        while e < ne and ex_row[e] < i:
            e += 1
        if (q < end and indices[q] == i) or (e < ne and ex_row[e] == i):
            continue
        out -= (r - delta) * (r - delta)
        if gram:
            c = 1.0 - delta / r
            for f in range(k):
                cf = c * F[i, f]
                for g in range(f + 1):
                    G[f, g] -= cf * F[i, g]
    return out


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def robust_column(indptr, indices, data, j, F, x, disp, disp_by_col, code, power, delta,
                  ex_row, ne, obs_only, G, b, gram, Ft=NO_FT, Q=NO_FT, mu=NO_PI):
    """``Σ`` of :func:`robust_parts`' entries over every kept entry of column j (a dense pass over
    the rows of F: zeros too when the loss covers them); with ``gram`` also the weighted normal
    equations ``G += Σ hᵢwᵢ FᵢFᵢᵀ`` (lower triangle), ``b += Σ hᵢwᵢ yᵢ Fᵢ`` of the robust IRLS
    step, every kept entry a quadratic term (a zero's has the gradient of its own loss,
    ``wᵢμᵢ = ∂ℓ(0, μᵢ)/∂μ``). O(p·k²) with ``gram``, O(p·k) without. Least squares with the
    zeros in the fit, given ``Ft`` (Fᵀ, C order), ``Q`` (FᵀF) and ``mu`` (p,, scratch), takes
    :func:`_robust_mse_column`'s shortcut (the same sums, in another order)."""
    k = x.size
    zeros = zeros_observed(code, power) and not obs_only
    if (code == MSE and zeros and Q.shape[0] == k and Ft.shape[1] == F.shape[0]
            and mu.size == F.shape[0]):
        return _robust_mse_column(indptr, indices, data, j, F, Ft, Q, x, delta, ex_row, ne, mu,
                                  G, b, gram)
    start, end = indptr[j], indptr[j + 1]
    q = start
    e = 0
    out = 0.0
    for i in range(F.shape[0]):
        q, e, stored, skip = _walk(indices, end, q, ex_row, ne, e, i)
        if skip or not (stored or zeros):
            continue
        y = np.float64(data[q - 1]) if stored else 0.0
        d = disp[j] if disp_by_col else disp[i]
        mu = _dot(F, i, x)
        ent, h = robust_parts(code, y, mu, d, power, delta)
        out += ent
        if gram:
            w = h * irls_weight(code, mu, d, power)
            for f in range(k):
                wf = w * F[i, f]
                b[f] += wf * y
                for g in range(f + 1):
                    G[f, g] += wf * F[i, g]
    return out


@njit(nogil=True, cache=True, fastmath=False)
def _zero_mass(indptr, indices, j, F, x, Fsum, ex_row, ne):
    """``Σ μᵢ`` over the rows of column j that are neither stored nor excluded:
    ``Σ_all μ − Σ_stored, kept μ − Σ_excluded μ`` (O(nnz·k + ne·k))."""
    tot = 0.0
    for f in range(x.size):
        tot += Fsum[f] * x[f]
    e = 0
    for q in range(indptr[j], indptr[j + 1]):
        i = indices[q]
        e, out = _skip(ex_row, ne, e, i)
        if not out:
            tot -= _dot(F, i, x)
    for e in range(ne):
        tot -= _dot(F, ex_row[e], x)
    return tot


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def stored_value(indptr, indices, data, j, F, x, disp, disp_by_col, code, power, ex_row, ne,
                 ms, Fs=NO_FT):
    """``Σ ℓ(yᵢ, μᵢ)`` over the stored, kept entries of column j at ``μ = F x``, up to terms
    free of μ (NB leaves out its log-gamma terms: ``r·log1p(μ/r) + y·log1p(r/μ)``, no large
    constant to drown a small change when r is large). ``ms`` (6, p): row 0 receives each
    stored entry's μ at its position ``q − indptr[j]``, row 1 its loss (:func:`stored_losses`),
    rows 3–5 are scratch; the kept entries' losses are then summed in order. O(nnz·k).
    ``Fs`` (≥ k rows), when not empty: the column's kept stored rows of F, transposed
    (:func:`irls_column`), from which their means are formed in vector lanes
    (:func:`tile_means`: the bits of the row-by-row dot products; an excluded entry's by its
    dot product)."""
    start, end = indptr[j], indptr[j + 1]
    mus, losses = ms[0], ms[1]
    if Fs.shape[0] > 0 and ne == 0:
        tile_means(Fs, x, 0, mus[:end - start])
    elif Fs.shape[0] > 0:
        kept = ms[3]
        nk = end - start
        e = 0
        for q in range(start, end):
            e, skip = _skip(ex_row, ne, e, indices[q])
            nk -= skip
        tile_means(Fs, x, 0, kept[:nk])
        e = 0
        u = 0
        for q in range(start, end):
            e, skip = _skip(ex_row, ne, e, indices[q])
            if skip:
                mus[q - start] = _dot(F, indices[q], x)
            else:
                mus[q - start] = kept[u]
                u += 1
    else:
        for q in range(start, end):
            mus[q - start] = _dot(F, indices[q], x)
    stored_losses(indices[start:end], data[start:end], mus, disp, j, disp_by_col, code, power,
                  losses, ms[3:].reshape(-1))
    out = 0.0
    e = 0
    for q in range(start, end):
        if ne > 0:
            e, skip = _skip(ex_row, ne, e, indices[q])
            if skip:
                continue
        out += losses[q - start]
    return out


# error_model="numpy": no division can be by zero here (μ and r are floored), and the loop
# vectorises for NB and KL (the logarithms of .vmath; the dispersion gathered by row)
@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def stored_losses(idx, y, mus, disp, j, disp_by_col, code, power, out, dq):
    """``out[t] = ℓ(y[t], mus[t])`` for the stored entries ``t`` of a column (rows ``idx``),
    as :func:`stored_value` counts them (NB without its log-gamma terms). ``dq`` (≥ 3n,):
    scratch for the entries' dispersion by row (NB), gathered in a loop of its own (a gather
    inside the losses' loop keeps it from vectorising: 2.7× slower), or Tweedie's powers."""
    n = idx.size
    if code == NB:
        if disp_by_col:
            rr = max(disp[j], 1e-10)
            for t in range(n):
                out[t] = nb_mu_terms(rr, max(mus[t], MU_FLOOR), np.float64(y[t]))
        else:
            for t in range(n):
                dq[t] = max(disp[idx[t]], 1e-10)
            for t in range(n):
                out[t] = nb_mu_terms(dq[t], max(mus[t], MU_FLOOR), np.float64(y[t]))
    elif code == KL:
        for t in range(n):
            out[t] = kl_stored(np.float64(y[t]), max(mus[t], MU_FLOOR))
    elif code == TWEEDIE and power != 1.0 and power != 2.0:  # :func:`unit_loss`'s, y > 0
        omp, tmp = 1.0 - power, 2.0 - power  # the powers in loops of their own (they vectorise)
        yp, mp, mq = dq[:n], dq[n:2 * n], dq[2 * n:3 * n]
        for t in range(n):
            yp[t] = _power(np.float64(y[t]), tmp)
        _powers(mus[:n], omp, mp)
        _powers(mus[:n], tmp, mq)
        for t in range(n):
            out[t] = tweedie_parts(np.float64(y[t]), yp[t], mp[t], mq[t], omp, tmp)
    else:
        for t in range(n):
            d = disp[j] if disp_by_col else disp[idx[t]]
            out[t] = unit_loss(code, np.float64(y[t]), mus[t], d, power)


@njit(nogil=True, cache=True, fastmath={"contract"})
def all_means(Ft, x, mu):
    """``μ = F x`` over every row of F, from its transpose ``Ft`` (k × p, C order), tile by
    tile (:func:`tile_means`)."""
    p = Ft.shape[1]
    for i0 in range(0, p, PULL_TILE):
        tile_means(Ft, x, i0, mu[i0:min(i0 + PULL_TILE, p)])


@njit(nogil=True, cache=True, fastmath={"contract"})
def tile_means(Ft, x, i0, mt):
    """``mt ← (F x)`` at rows ``i0 : i0 + mt.size`` from Fᵀ (k × p, C order), ``i0`` a multiple
    of :data:`LANES`: each row's multiply-adds in factor order from 0 (the bits of a scalar
    loop ``m += x[f]·Fᵢf``, fused), :data:`LANES` rows at a time held in a vector register
    while the factors go by (one store per row, not one per factor). Used by every pass over
    the rows of F (:func:`zero_pull`, :func:`zi_rows`, :func:`all_means`)."""
    n = mt.size
    k = x.size
    nf = n - n % LANES
    for c in range(0, nf, LANES):
        m = vzeros(mt, LANES)
        for f in range(k):  # (rows of Fᵀ as slices: a reshaped view was 2× slower)
            m = vfma(m, x[f], vload_f64(Ft[f], i0 + c, LANES))
        vstore(mt, c, m)
    for t in range(nf, n):
        s = 0.0
        for f in range(k):
            s += x[f] * Ft[f, i0 + t]
        mt[t] = s


#: rows per tile of :func:`zero_pull` and the other passes over every row of F: the tile's
#: slice of Fᵀ (k × 64 floats) stays in L1 while its means, weights and sums are formed
PULL_TILE = 64
#: lanes of every fixed-order sum of the IRLS kernels (:func:`lanes_fma`): term t of a run
#: goes into partial sum t mod LANES, the partials are added in lane order at the end. One
#: vector register of float64 on AVX-512 (two on AVX2); the order is the source's on every CPU
LANES = 8


@njit(nogil=True, cache=True, inline="always")
def lanes_fma(acc, u, v, n):
    """``acc[t mod LANES] += u[t]·v[t]`` for ``t < n`` in order (``acc`` (LANES,), ``u``, ``v``
    C-contiguous, each run starting at a multiple of :data:`LANES` of its sum): the lanes are
    one vector held in registers over the run, so a dot product costs two loads per
    :data:`LANES` multiply-adds, not a load and a store per term. Each lane is fused as the
    scalar ``acc[l] += u[t] * v[t]`` under ``fastmath={"contract"}`` (:mod:`.simd`).
    Inlined (called once per tile and factor, a call cost 1.5× the pass): its callers state
    ``"contract"``, so the run's last terms fuse as its vector lanes do."""
    a = vload(acc, 0, LANES)
    nf = n - n % LANES
    for c in range(0, nf, LANES):
        a = vfma_vec(a, vload(u, c, LANES), vload_f64(v, c, LANES))
    vstore(acc, 0, a)
    for t in range(nf, n):
        acc[t - nf] += u[t] * v[t]


@njit(nogil=True, cache=True, fastmath={"contract"})
def lanes_fma4(acc, u, v0, v1, v2, v3, n):
    """:func:`lanes_fma` of ``u`` against four vectors at once (``acc`` (4·LANES,): the four
    sums' lanes side by side): ``u`` is loaded once for four multiply-adds."""
    a0 = vload(acc, 0, LANES)
    a1 = vload(acc, LANES, LANES)
    a2 = vload(acc, 2 * LANES, LANES)
    a3 = vload(acc, 3 * LANES, LANES)
    nf = n - n % LANES
    for c in range(0, nf, LANES):
        uc = vload(u, c, LANES)
        a0 = vfma_vec(a0, uc, vload(v0, c, LANES))
        a1 = vfma_vec(a1, uc, vload(v1, c, LANES))
        a2 = vfma_vec(a2, uc, vload(v2, c, LANES))
        a3 = vfma_vec(a3, uc, vload(v3, c, LANES))
    vstore(acc, 0, a0)
    vstore(acc, LANES, a1)
    vstore(acc, 2 * LANES, a2)
    vstore(acc, 3 * LANES, a3)
    for t in range(nf, n):
        l = t - nf
        acc[l] += u[t] * v0[t]
        acc[LANES + l] += u[t] * v1[t]
        acc[2 * LANES + l] += u[t] * v2[t]
        acc[3 * LANES + l] += u[t] * v3[t]


@njit(nogil=True, cache=True, inline="always")
def lanes_add(acc, v, n):
    """``acc[t mod LANES] += v[t]`` for ``t < n`` in order (:func:`lanes_fma` with u = 1: the
    same lanes for sums of terms)."""
    a = vload(acc, 0, LANES)
    nf = n - n % LANES
    for c in range(0, nf, LANES):
        a = vmuladd(a, 1.0, vload(v, c, LANES))  # 1·v is exact: a plain sum
    vstore(acc, 0, a)
    for t in range(nf, n):
        acc[t - nf] += v[t]


@njit(nogil=True, cache=True, fastmath=False)
def lanes_total(acc, off=0):
    """The sum of the :data:`LANES` partials ``acc[off : off + LANES]``, in lane order."""
    s = 0.0
    for t in range(LANES):
        s += acc[off + t]
    return s


@njit(nogil=True, cache=True, fastmath=False)
def pull_scratch(k):
    """Scratch for :func:`zero_pull` at rank ``k``: (2, PULL_TILE + k·LANES)."""
    return np.empty((2, PULL_TILE + k * LANES))


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _powers(m, e, out):
    """``out[:n] = max(m, MU_FLOOR) ** e`` (n = m.size, :func:`_power`): a loop of its own,
    which the compiler vectorises (square roots for e = ±½)."""
    for t in range(m.size):
        out[t] = _power(max(m[t], MU_FLOOR), e)


# error_model="numpy": a division by zero (never: r ≥ 1e-10, μ ≥ 0) would give inf rather
# than raise, and without the check the slopes' loop vectorises
@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"}, error_model="numpy")
def zero_pull(F, Ft, x, j, disp, disp_by_col, code, power, zmask, mu, ws, cz, cb, delta=0.0):
    """The zeros' pull on column j at ``x`` for NB and Tweedie (q < 2), whose ``ℓ(0, μ)`` is
    concave in μ: ``cz = Σ_zeros ∂ℓ(0, μᵢ)/∂μ · Fᵢ`` in the IRLS subproblem's units
    (:func:`zero_slope`, weight cap included) and ``cb``, the same slope in the objective's
    units (uncapped; NB: equal to ``cz``). ``zmask`` (p,) is 1 at the kept zero rows, else 0;
    ``mu`` receives ``F x`` at every row (as :func:`all_means`, to the bit); ``ws`` is scratch
    of :func:`pull_scratch`'s shape. O(p·k).

    One pass over ``Ft`` (Fᵀ, k × p, C order) in tiles of :data:`PULL_TILE` rows: the tile's
    means (:func:`tile_means`), its slopes, then each factor's products added into
    :data:`LANES` partial sums (row i into lane i mod LANES, rows in order, :func:`lanes_fma`),
    which are summed in lane order at the end. Every loop runs along contiguous rows and
    vectorises without reassociating a sum: a fixed order, the same on every machine.

    By concavity ``ℓ(0, μ') ≤ ℓ(0, μ) + ∂ℓ(0, μ)/∂μ · (μ' − μ)``: ``cb·(x' − x)`` bounds the
    change of the zeros' part of the objective from above (:func:`irls_column`'s step test).

    ``delta`` > 0: a robust fit's zeros (KL too), each slope times its Huber factor ``h``
    (:func:`_huber_zero`): the slope of the zero's Huberised loss, concave as well.
    """
    k, p = Ft.shape
    T = PULL_TILE
    nb = code == NB or code == KL  # one slope in both units (cb = cz)
    w1, w2 = ws[0, :T], ws[1, :T]  # the tile's slopes
    dt = w2  # a robust NB's sizes (w2 is free when cb = cz)
    L = LANES
    acc = ws[0, T:T + k * L]  # lane partial sums of cz, factor f at f·LANES
    acc2 = ws[1, T:T + k * L]  # of cb (Tweedie)
    acc[:] = 0.0
    acc2[:] = 0.0
    rr = max(disp[j], 1e-10) if disp_by_col else 0.0
    q1 = 1.0 - power  # Tweedie: ℓ(0, μ) = 2μ^{2−q}/(2−q), slope 2μ^{1−q}; subproblem μ·w(μ)
    flat = huber_flat_mean(code, power, delta) if delta > 0.0 else 0.0
    for i0 in range(0, p, T):
        n = min(T, p - i0)
        mt = mu[i0:i0 + n]
        zt = zmask[i0:i0 + n]
        tile_means(Ft, x, i0, mt)
        if delta > 0.0:  # robust: one loop per loss, no branch inside (they vectorise)
            # the tile's slopes with h = 1, then h at the few rows above ``flat`` (the same
            # bits as h everywhere: h is exactly 1 at or below it, :func:`huber_flat_mean`)
            big = 0.0
            for t in range(n):
                big = max(big, mt[t])
            if code == KL:  # ℓ = μ (half the Poisson deviance), slope 1
                for t in range(n):
                    w1[t] = zt[t]
                if big > flat:
                    for t in range(n):
                        if mt[t] > flat:
                            w1[t] = zt[t] * _huber_zero(max(mt[t], MU_FLOOR), 0.5, delta)[1]
            elif code == NB:
                if disp_by_col:
                    dt[:n] = rr
                else:
                    for t in range(n):
                        dt[t] = max(disp[i0 + t], 1e-10)
                for t in range(n):
                    w1[t] = zt[t] * (dt[t] / (dt[t] + max(mt[t], 0.0)))
                if big > flat:
                    for t in range(n):
                        if mt[t] > flat:
                            ell, slope = _nb_zero(mt[t], dt[t])
                            w1[t] = zt[t] * _huber_zero(ell, 0.5, delta)[1] * slope
            else:  # Tweedie
                _powers(mt, q1, w2)
                for t in range(n):
                    m = max(mt[t], MU_FLOOR)
                    tt = w2[t]
                    w1[t] = zt[t] * min(tt, m * W_CAP)
                    w2[t] = zt[t] * (2.0 * tt)
                if big > flat:
                    for t in range(n):
                        if mt[t] > flat:
                            m = max(mt[t], MU_FLOOR)
                            tt = _power(m, q1)
                            h = _huber_zero(2.0 * m * tt / (2.0 - power), 1.0, delta)[1]
                            w1[t] = zt[t] * h * min(tt, m * W_CAP)
                            w2[t] = zt[t] * h * (2.0 * tt)
        elif nb:
            if disp_by_col:
                for t in range(n):
                    w1[t] = zt[t] * (rr / (rr + max(mt[t], 0.0)))
            else:
                dt = disp[i0:i0 + n]
                for t in range(n):
                    ri = max(dt[t], 1e-10)
                    w1[t] = zt[t] * (ri / (ri + max(mt[t], 0.0)))
        else:
            _powers(mt, q1, w2)
            for t in range(n):
                tt = w2[t]
                w1[t] = zt[t] * min(tt, max(mt[t], MU_FLOOR) * W_CAP)
                w2[t] = zt[t] * (2.0 * tt)
        if nb:  # (a branch inside the factors' loop made it 1.5× slower)
            for f in range(k):
                lanes_fma(acc[f * L:(f + 1) * L], w1, Ft[f, i0:i0 + n], n)
        else:
            for f in range(k):
                ft = Ft[f, i0:i0 + n]
                lanes_fma(acc[f * L:(f + 1) * L], w1, ft, n)
                lanes_fma(acc2[f * L:(f + 1) * L], w2, ft, n)
    for f in range(k):
        cz[f] = lanes_total(acc, f * L)
        cb[f] = cz[f] if nb else lanes_total(acc2, f * L)


# error_model="numpy": Tweedie's loop (no division by zero: μ is floored) then vectorises
@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "arcp", "nsz"})
def zero_change(mu, mu2, zmask, j, disp, disp_by_col, code, power, base=NO_PI):
    """``Σ [ℓ(0, μ2ᵢ) − ℓ(0, μᵢ)]`` over the rows where ``zmask`` is set (μ, μ2 given at every
    row). NB sums ``r·log1p((μ2 − μ)/(r + μ))``: one logarithm per row, and a sum of the
    changes rather than a difference of two large sums (no cancellation near convergence).
    Tweedie: ``base``, when not empty, holds ``max(μᵢ, MU_FLOOR)^{2−q}`` at every row
    (:func:`_powers`; the same sum, one power a row fewer).
    Tweedie (1 ≤ q < 2, ``ℓ(0, μ) = 2μ^{2−q}/(2−q)``) sums ``zmaskᵢ·(μ2ᵢ^{2−q} − μᵢ^{2−q})``,
    formed a tile at a time in a loop the compiler vectorises (q = 1.5: square roots), in
    :data:`LANES` partials (row i into lane i mod LANES, :func:`lanes_add`)."""
    out = 0.0
    if code == NB:
        for i in range(mu.size):
            if zmask[i] != 0.0:
                r = max(disp[j] if disp_by_col else disp[i], 1e-10)
                a = max(mu[i], MU_FLOOR)
                out += r * math.log1p((max(mu2[i], MU_FLOOR) - a) / (r + a))
        return out
    tmp = 2.0 - power
    T = PULL_TILE
    acc = np.zeros(LANES)
    vt = np.empty(T)  # the tile's terms
    p = mu.size
    for i0 in range(0, p, T):
        n = min(T, p - i0)
        zt, a, b = zmask[i0:i0 + n], mu[i0:i0 + n], mu2[i0:i0 + n]
        if base.size > 0:
            c = base[i0:i0 + n]
            for t in range(n):
                vt[t] = zt[t] * (_power(max(b[t], MU_FLOOR), tmp) - c[t])
        else:
            for t in range(n):
                vt[t] = zt[t] * (_power(max(b[t], MU_FLOOR), tmp)
                                 - _power(max(a[t], MU_FLOOR), tmp))
        lanes_add(acc, vt, n)
    return 2.0 * lanes_total(acc) / tmp


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "arcp", "nsz"})
def _huber_zero(ell, s, delta):
    """``(ρ, h)`` of a zero entry whose loss is ``ell`` (deviance ``ell/s``) under ``robust=δ``:
    ``ρ = ℓ − s·max(√(ℓ/s) − δ, 0)²`` (:func:`robust_parts` at y = 0) and the Huber factor
    ``h = min(1, δ/√(ℓ/s))`` (ℓ > 0: the mean is floored)."""
    return huber(ell, ell / s, s, delta)


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def huber_flat_mean(code, power, delta):
    """A mean at or below which a zero entry's Huber factor is exactly 1 under ``robust=δ``
    (KL, NB, Tweedie q < 2): ``ℓ(0, μ)/s ≤ δ²`` there, with a relative margin of 10⁻⁹ for
    rounding. KL's ``ℓ(0, μ) = μ`` and NB's ``r·log1p(μ/r) ≤ μ`` (s = ½) give ``δ²/2``;
    Tweedie's ``2μ^{2−q}/(2−q)`` (s = 1) gives ``(δ²(2−q)/2)^{1/(2−q)}``. Most zeros of a
    count matrix have means far below it, and their robust terms are then the plain ones."""
    if code == KL or code == NB:
        flat = 0.5 * delta * delta
    else:
        tmp = 2.0 - power
        flat = (0.5 * delta * delta * tmp) ** (1.0 / tmp)
    return flat * (1.0 - 1e-9)


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "arcp", "nsz"})
def _nb_zero(mu, r):
    """NB's ``(ℓ(0, μ), ∂ℓ(0, μ)/∂μ)`` with ``r`` the floored size: ``r·log1p(μ/r)``,
    ``r/(r + μ)`` (:func:`zero_loss`, :func:`zero_slope`)."""
    return r * vlog1p(max(mu, MU_FLOOR) / r), r / (r + max(mu, 0.0))


# The zeros of a robust fit (KL, NB, Tweedie q < 2, whose ℓ(0, μ) is concave and increasing):
# a zero's Huberised loss ρ is concave in μ too (its slope h·ℓ' is a product of two
# non-increasing positive factors), so its tangent bounds its change from above, as for the
# plain NB and Tweedie zeros. One loop per loss below (no branch inside: they vectorise).
@njit(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
def robust_zero_change(mu, mu2, zmask, j, disp, disp_by_col, code, power, delta):
    """``Σ [ρ(μ2ᵢ) − ρ(μᵢ)]`` of the zeros' robust losses (:func:`_huber_zero`) over the rows
    where ``zmask`` is set (KL, NB, Tweedie q < 2), in :data:`LANES` partials (a fixed
    order, :func:`lanes_add`)."""
    T = PULL_TILE
    acc = np.zeros(LANES)
    dt = np.empty(T)
    pa = np.empty(T)
    pb = np.empty(T)
    vt = np.empty(T)  # the tile's changes
    p = mu.size
    tmp = 2.0 - power
    flat = huber_flat_mean(code, power, delta)
    # each tile: the plain losses' changes (ρ = ℓ where both means are at or below ``flat``),
    # then ρ's at the few rows above it (the same bits as ρ everywhere)
    for i0 in range(0, p, T):
        n = min(T, p - i0)
        a, b, zt = mu[i0:i0 + n], mu2[i0:i0 + n], zmask[i0:i0 + n]
        big = 0.0
        for t in range(n):
            big = max(big, max(a[t], b[t]))
        if code == KL:
            for t in range(n):
                vt[t] = max(b[t], MU_FLOOR) - max(a[t], MU_FLOOR)
            if big > flat:
                for t in range(n):
                    if a[t] > flat or b[t] > flat:
                        vt[t] = (_huber_zero(max(b[t], MU_FLOOR), 0.5, delta)[0]
                                 - _huber_zero(max(a[t], MU_FLOOR), 0.5, delta)[0])
        elif code == NB:
            if disp_by_col:
                dt[:n] = max(disp[j], 1e-10)
            else:
                for t in range(n):
                    dt[t] = max(disp[i0 + t], 1e-10)
            for t in range(n):  # as :func:`zero_change`: one logarithm, no cancellation
                am = max(a[t], MU_FLOOR)
                vt[t] = dt[t] * vlog1p((max(b[t], MU_FLOOR) - am) / (dt[t] + am))
            if big > flat:
                for t in range(n):
                    if a[t] > flat or b[t] > flat:
                        vt[t] = (_huber_zero(_nb_zero(b[t], dt[t])[0], 0.5, delta)[0]
                                 - _huber_zero(_nb_zero(a[t], dt[t])[0], 0.5, delta)[0])
        else:
            _powers(b[:n], tmp, pb)
            _powers(a[:n], tmp, pa)
            for t in range(n):
                vt[t] = 2.0 * pb[t] / tmp - 2.0 * pa[t] / tmp
            if big > flat:
                for t in range(n):
                    if a[t] > flat or b[t] > flat:
                        vt[t] = (_huber_zero(2.0 * pb[t] / tmp, 1.0, delta)[0]
                                 - _huber_zero(2.0 * pa[t] / tmp, 1.0, delta)[0])
        for t in range(n):
            vt[t] *= zt[t]
        lanes_add(acc, vt, n)
    return lanes_total(acc)


# error_model="numpy": no division is by zero (r ≥ 1e-10, y > 0 where used); without the
# check the loop vectorises
@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "arcp", "nsz"})
def nb_saturated(indptr, indices, data, j, disp, disp_by_col, out):
    """``out[q − indptr[j]]`` = NB's :func:`nb_mu_terms` at μ = y for each stored entry of
    column j: the saturated terms its deviance is measured from (:func:`robust_stored`)."""
    start = indptr[j]
    n = indptr[j + 1] - start
    for t in range(n):  # the sizes first, in a loop of their own (the next one vectorises)
        out[t] = max(disp[j] if disp_by_col else disp[indices[start + t]], 1e-10)
    for t in range(n):
        y = np.float64(data[start + t])
        out[t] = nb_mu_terms(out[t], y, y) if y > 0.0 else 0.0


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "arcp", "nsz"})
def robust_stored(indptr, indices, data, j, F, x, disp, disp_by_col, code, power, delta,
                  ex_row, ne, ms, Fs=NO_FT):
    """``Σ`` of :func:`robust_terms`' entries over the stored, kept entries of column j at
    ``μ = F x`` (KL, NB, Tweedie): the plain losses (:func:`stored_value`, which leaves each
    stored entry's μ in ``ms[0]`` and its loss in ``ms[1]``), then each one's Huber transform
    (:func:`huber`, in a loop that vectorises; ``ms[3]`` receives the transformed entries, which
    are then summed in order, the excluded ones left out); ``ms[1]`` then holds the Huber
    factors (the kept entries' are the next IRLS step's). NB reads its saturated terms from
    ``ms[2]`` (:func:`nb_saturated`). O(nnz·k)."""
    start, end = indptr[j], indptr[j + 1]
    stored_value(indptr, indices, data, j, F, x, disp, disp_by_col, code, power, ex_row, ne, ms,
                 Fs)
    n = end - start
    hs, sat, ents = ms[1], ms[2], ms[3]
    s = 0.5 if code == KL or code == NB else 1.0
    if code == NB:
        for t in range(n):
            ell = hs[t]
            ents[t], hs[t] = huber(ell, (ell - sat[t]) / s, s, delta)
    else:
        for t in range(n):
            ell = hs[t]
            ents[t], hs[t] = huber(ell, ell / s, s, delta)
    out = 0.0
    e = 0
    for q in range(start, end):
        if ne > 0:
            e, skip = _skip(ex_row, ne, e, indices[q])
            if skip:
                continue
        out += ents[q - start]
    return out


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def _step_slope(gs, cb, l1, l2, xold, x):
    """The directional derivative of a column's objective at ``xold`` along ``x − xold``: the
    stored entries' slope ``gs``, the zeros' ``cb`` and the penalties' (objective units)."""
    dd = 0.0
    for f in range(x.size):
        dd += (gs[f] + cb[f] + l1 + l2 * xold[f]) * (x[f] - xold[f])
    return dd


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def _relative_change(x, xold):
    """``maxᵢ |xᵢ − xoldᵢ| / (|xoldᵢ| + 1e-12)``, the IRLS stopping rule's measure."""
    change = 0.0
    for f in range(x.size):
        rel = abs(x[f] - xold[f]) / (abs(xold[f]) + 1e-12)
        if rel > change:
            change = rel
    return change


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def column_value(indptr, indices, data, j, F, x, disp, disp_by_col, search, power, l1, l2,
                 ex_row, ne, obs_only, delta, zpi, zpi_by_col, cz, ms, Ft, mu, Q, rpull, Fs):
    """The part of column j's penalised objective at ``x`` that :func:`irls_column` evaluates:
    the penalties plus the robust objective of every kept entry (``delta`` > 0,
    :func:`robust_column`), or the stored entries' loss (:func:`stored_value`, which fills
    ``ms``) plus, under zero inflation, the zeros' mixture loss (:func:`zi_entries`, which fills
    ``cz`` with their pull). Without either, the zeros' part is left to the step test. ``Fs``:
    the column's stored rows of F, transposed, or empty (:func:`stored_value`)."""
    out = 0.0
    for f in range(x.size):
        out += l1 * x[f] + 0.5 * l2 * x[f] * x[f]
    if rpull:  # robust, the zeros left to the step test (:func:`zero_pull` with delta)
        return out + robust_stored(indptr, indices, data, j, F, x, disp, disp_by_col, search,
                                   power, delta, ex_row, ne, ms, Fs)
    if delta > 0.0:
        return out + robust_column(indptr, indices, data, j, F, x, disp, disp_by_col, search,
                                   power, delta, ex_row, ne, obs_only, np.empty((0, 0)), cz,
                                   False, Ft, Q, mu)
    out += stored_value(indptr, indices, data, j, F, x, disp, disp_by_col, search, power,
                        ex_row, ne, ms, Fs)
    if zpi.size > 0 and not obs_only and zeros_observed(search, power):
        out += zi_entries(indptr, indices, j, F, Ft, x, disp, disp_by_col, search, zpi,
                          zpi_by_col, ex_row, ne, mu, cz, True)
    return out


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def scale_start(indptr, indices, data, j, F, Fsum, ex_row, ne, zeros, ub, x):
    """A cold start of column j: ``x = c·1`` with ``c`` the scale at which the model's sum
    over the kept entries equals the column's (``Σ μᵢ = Σ yᵢ``, rows ``ex_row[:ne]`` left
    out; over the stored entries only when zeros are not part of the fit), capped at ``ub``
    when ``ub`` > 0. Leaves ``x`` at 0 and returns False when the column or the model has
    nothing to scale (no positive sum)."""
    k = x.size
    num = 0.0
    den = 0.0
    e = 0
    for q in range(indptr[j], indptr[j + 1]):
        i = indices[q]
        e, skip = _skip(ex_row, ne, e, i)
        if skip:
            continue
        num += np.float64(data[q])
        if not zeros:
            for f in range(k):
                den += F[i, f]
    if zeros:
        for f in range(k):
            den += Fsum[f]
        for e in range(ne):
            for f in range(k):
                den -= F[ex_row[e], f]
    if not (num > 0.0 and den > 0.0):
        return False
    c = num / den
    if ub > 0.0:
        c = min(c, ub)
    for f in range(k):
        x[f] = c
    return True


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def weighted_gram(Fs, n, G, b, gs, lane):
    """The IRLS step's sums over a column's ``n`` kept stored entries, from ``Fs`` (k + 4, ≥ n):
    rows 0..k−1 the entries' rows of F, transposed; rows k, k+1, k+2 their curvature h, target
    t and slope s; row k+3 scratch. ``G[f, g] ← Σ (h·F_f)·F_g``
    (g ≤ f: the lower triangle), ``b[f] ← Σ t·F_f``, ``gs[f] ← Σ s·F_f``, each a
    :func:`lanes_fma` sum (``lane`` (4·LANES,) scratch): vector multiply-adds along the
    entries, four columns of G per pass over ``h·F_f``. The products are the scalar loop's
    (``h·F_f`` rounded, then fused with ``F_g``); only the order of each sum is the lanes'."""
    k = G.shape[0]
    L = LANES
    hs, ts, ds, hf = Fs[k], Fs[k + 1], Fs[k + 2], Fs[k + 3]
    for f in range(k):
        ff = Fs[f]
        for u in range(n):
            hf[u] = hs[u] * ff[u]
        lane[:2 * L] = 0.0
        lanes_fma(lane[:L], ts, ff, n)
        lanes_fma(lane[L:2 * L], ds, ff, n)
        b[f] = lanes_total(lane, 0)
        gs[f] = lanes_total(lane, L)
        g = 0
        while g + 4 <= f + 1:
            lane[:] = 0.0
            lanes_fma4(lane, hf, Fs[g], Fs[g + 1], Fs[g + 2], Fs[g + 3], n)
            for c in range(4):
                G[f, g + c] = lanes_total(lane, c * L)
            g += 4
        while g <= f:
            lane[:L] = 0.0
            lanes_fma(lane[:L], hf, Fs[g], n)
            G[f, g] = lanes_total(lane, 0)
            g += 1


@njit(nogil=True, cache=True, fastmath={"contract", "arcp", "nsz"})
def irls_column(indptr, indices, data, j, F, Ft, Fsum, disp, disp_by_col, code, power, l1, l2,
                nonneg, ub, x, cd_maxit, cd_tol, irls_maxit, irls_tol, warm, G, vk, vp, ws, ms,
                Fs, lane, ex_row, ne, obs_only, delta=0.0, zpi=NO_PI, zpi_by_col=False, Q=NO_FT,
                gain_tol=0.0):
    """Solve column ``j`` by IRLS, in place in ``x`` (k,: the start, then the solution).

    ``disp`` holds the dispersion (NB size r, GP θ) per row of F (``disp_by_col`` False) or per
    column (True: ``disp[j]``). ``Ft`` is Fᵀ in C order (used by NB and Tweedie; else any array).
    Scratch: ``G`` (k, k), ``vk`` (6, k), ``vp`` (5, p) with row 1 all ones on entry (it is left
    so), ``ws`` (:func:`pull_scratch`), ``ms`` (6, p: :func:`stored_value`'s rows; row 2 a robust NB
    fit's saturated terms), ``Fs`` (k + 4, ≥ the column's entries) and ``lane`` (4·LANES,): the kept
    stored entries' rows of F, transposed, and their weights, for the step's weighted Gram
    (:func:`weighted_gram`). Returns the coordinate-descent sweeps made. The column must store no
    explicit zeros. Rows ``ex_row[:ne]`` (sorted) get zero weight (held out or missing: no part of
    the fit); with ``obs_only`` every unstored entry is missing. ``delta`` > 0: the robust (Huber)
    fit of :func:`robust_parts`: least squares makes every kept entry a weighted term of each step
    (:func:`robust_column`, from the Gram ``Q`` = FᵀF); KL, GP, NB and Tweedie weigh their stored
    entries by the Huber factor and take their zeros by their pull, as the plain fit does
    (:func:`zero_pull` with ``delta``: a zero's Huberised loss is concave in μ too). ``zpi``: the
    zero-inflation probabilities (by column of the block with ``zpi_by_col``, else by row of F;
    empty: none) — the zeros' pull is then weighted by their E-step share.

    **When it stops.** After ``irls_maxit`` steps, when a step moves no coordinate by more than
    ``irls_tol`` relative to its start (RcppML's rule, :func:`_relative_change`), when no
    decrease is found, or (``gain_tol`` > 0) when a step lowers the objective by at most
    ``gain_tol`` times what the column's steps have lowered it so far: past that point the
    steps converge linearly (the zeros' curvature is left out of each subproblem) and the
    further gain is a small fraction of the gain made (docs/decisions.md).

    **The step test.** A step is kept when the column's objective does not rise. The zeros'
    part of the objective is not evaluated entry by entry where it need not be: KL and GP
    (whose factor updates fit KL) have ``ℓ(0, μ) = μ``, linear, so its change is exactly
    ``cb·Δx`` with ``cb = Σ_zeros Fᵢ``; NB and Tweedie (q < 2) have a concave ``ℓ(0, μ)``, so
    ``cb·Δx`` (:func:`zero_pull`) bounds its change from above and a step passing the bounded
    test lowers the true objective. Only when the bound is inconclusive are the zeros' losses
    compared (:func:`zero_change`): the accepted steps are those of the exact test. A step is
    halved until it passes, at most :data:`MAX_BACKTRACK` times and not below ``irls_tol``;
    a step whose slope at its start is not negative (the capped weights and zero slopes can
    make one) only :data:`ASCENT_HALVINGS` times.
    """
    k = x.size
    start, end = indptr[j], indptr[j + 1]
    robust = delta > 0.0
    # robust least squares keeps every entry a weighted quadratic term (from the Gram)
    zeros = zeros_observed(code, power) and not obs_only and not (robust and code == MSE)
    zi = zeros and zpi.size > 0
    linear = zeros and not zi and not robust and (code == KL or code == GP)
    concave = zeros and not zi and not linear  # NB, Tweedie with 1 ≤ q < 2; robust KL/GP too
    rpull = robust and concave  # robust: the zeros' Huberised losses are concave as well
    b, r, xold, cz, cb, gs = vk[0], vk[1], vk[2], vk[3], vk[4], vk[5]
    mu, zmask, mu2, dmu, mub = vp[0], vp[1], vp[2], vp[3], vp[4]
    for f in range(k):
        cz[f] = 0.0
        cb[f] = 0.0
    if linear:  # Σ over zero rows of Fᵢ = Σ over all − Σ over stored/excluded
        for f in range(k):
            cz[f] = Fsum[f]
        e = 0
        for q in range(start, end):
            i = indices[q]
            e, skip = _skip(ex_row, ne, e, i)
            if skip:
                continue
            for f in range(k):
                cz[f] -= F[i, f]
        for e in range(ne):
            i = ex_row[e]
            for f in range(k):
                cz[f] -= F[i, f]
        for f in range(k):
            cb[f] = cz[f]
    if concave:
        for q in range(start, end):
            zmask[indices[q]] = 0.0
        for e in range(ne):
            zmask[ex_row[e]] = 0.0
    if rpull and code == NB:  # the deviances' saturated terms, once for the column
        nb_saturated(indptr, indices, data, j, disp, disp_by_col, ms[2])
    if not warm and code != MSE:  # a start from 0 has infinite weights: start at the scale
        warm = scale_start(indptr, indices, data, j, F, Fsum, ex_row, ne, zeros, ub, x)
    slopes = not (robust and not rpull)
    # the kept stored entries' rows of F, gathered once for every evaluation's μ and step's
    # Gram (in order, the excluded ones left out: each sum's lanes do not depend on them)
    nk = 0
    if slopes:
        e = 0
        for q in range(start, end):
            i = indices[q]
            if ne > 0:
                e, skip = _skip(ex_row, ne, e, i)
                if skip:
                    continue
            for f in range(k):
                Fs[f, nk] = F[i, f]
            nk += 1
    sweeps = 0
    gain = 0.0  # the decrease of the column's objective over the accepted steps
    search = KL if code == GP else code  # GP's factor updates fit the KL objective (RcppML)
    v_old = column_value(indptr, indices, data, j, F, x, disp, disp_by_col, search, power, l1,
                         l2, ex_row, ne, obs_only, delta, zpi, zpi_by_col, cz, ms, Ft, mu, Q,
                         rpull, Fs)
    for it in range(irls_maxit):
        if concave:
            zero_pull(F, Ft, x, j, disp, disp_by_col, search, power, zmask, mu, ws, cz, cb,
                      delta if rpull else 0.0)
        if not slopes:
            for f in range(k):
                b[f] = 0.0
                gs[f] = 0.0
                for g in range(k):
                    G[f, g] = 0.0
            robust_column(indptr, indices, data, j, F, x, disp, disp_by_col, search, power,
                          delta, ex_row, ne, obs_only, G, b, True, Ft, Q, mu)
        else:  # μ at the stored entries: from the last evaluation, at this x
            newton = warm or it > 0  # a cold start (x = 0) has no curvature to observe
            hs, ts, ds = Fs[k], Fs[k + 1], Fs[k + 2]  # each kept entry's h, t and slope
            e = 0
            u = 0
            for q in range(start, end):
                i = indices[q]
                if ne > 0:
                    e, skip = _skip(ex_row, ne, e, i)
                    if skip:
                        continue
                y = np.float64(data[q])
                d = disp[j] if disp_by_col else disp[i]
                mq = ms[0, q - start]
                w = irls_weight(code, mq, d, power)
                h = step_curvature(code, y, mq, d, power, w) if newton else w
                dl = unit_slope(search, y, mq, d, power)
                if rpull:  # the Huber factor at μ, from the same evaluation
                    hr = ms[1, q - start]
                    w *= hr
                    h *= hr
                    dl *= hr
                hs[u] = h
                ts[u] = h * mq - w * (mq - y)
                ds[u] = dl  # the stored entries' slope Σ ∂ℓ/∂μ·Fᵢ (objective units): the
                u += 1  # step's directional derivative, for the backtracking below
            weighted_gram(Fs, nk, G, b, gs, lane)
        for f in range(k):
            for g in range(f):
                G[g, f] = G[f, g]
            G[f, f] += l2
            if zeros:  # the zero entries' pull at the current x
                b[f] -= cz[f]
            b[f] -= l1
            xold[f] = x[f]
        residual(G, b, x, r)
        # plain sweeps (exact=False: the free-set workspace is never touched, G stands in)
        sweeps += cd_solve(G, x, r, nonneg, ub, sweep_budget(warm or it > 0, cd_maxit), cd_tol,
                           False, G)
        # the step x − xold is a descent direction of the true objective when the subproblem
        # has its gradient at xold (a convex quadratic): halve it until the objective does not
        # rise, so every column's objective falls monotonically
        # halvings stop once the step is within irls_tol of the start (a smaller one would end
        # the IRLS loop anyway: the decrease is then below the sums' rounding)
        # the capped weights and zero slopes (Tweedie's μ^{1−q} at μ < 1e-4) can give the
        # subproblem another gradient, and the step an ascent direction: its slope D at xold
        # (stored entries, zeros, penalties) is then ≥ 0 and it gets ASCENT_HALVINGS halvings
        known = slopes and not zi  # zero inflation's zeros are not in cb
        dd = _step_slope(gs, cb, l1, l2, xold, x) if known else 0.0
        tries = 0
        while True:
            v_new = column_value(indptr, indices, data, j, F, x, disp, disp_by_col, search,
                                 power, l1, l2, ex_row, ne, obs_only, delta, zpi, zpi_by_col,
                                 cz, ms, Ft, mu, Q, rpull, Fs)
            lin = 0.0
            for f in range(k):
                lin += cb[f] * (x[f] - xold[f])
            change = v_new - v_old + lin  # bounds the objective's change from above
            ok = change <= 0.0
            if not ok and concave:  # the bound is inconclusive: the zeros' exact change
                if tries == 0:  # μ at the full step, and its change along the step
                    all_means(Ft, x, mu2)
                    for i in range(mu.size):
                        dmu[i] = mu2[i] - mu[i]
                    if code == TWEEDIE:  # the start's zero losses, for every halving
                        _powers(mu, 2.0 - power, mub)
                else:  # halved steps lie on the same ray: μ + 2⁻ᵗ·Δμ, O(p) instead of O(p·k)
                    a = 0.5 ** tries
                    for i in range(mu.size):
                        mu2[i] = mu[i] + a * dmu[i]
                if rpull:
                    dz = robust_zero_change(mu, mu2, zmask, j, disp, disp_by_col, search,
                                            power, delta)
                else:
                    dz = zero_change(mu, mu2, zmask, j, disp, disp_by_col, code, power,
                                     mub if code == TWEEDIE else NO_PI)
                change = v_new - v_old + dz
                ok = change <= 0.0
            if (ok or tries == MAX_BACKTRACK or _relative_change(x, xold) < irls_tol
                    or (known and dd >= 0.0 and tries >= ASCENT_HALVINGS)):
                break
            for f in range(k):
                x[f] = xold[f] + 0.5 * (x[f] - xold[f])
            tries += 1
        if not ok:  # no decrease found: keep the start
            for f in range(k):
                x[f] = xold[f]
            break
        v_old = v_new
        gain -= change
        if _relative_change(x, xold) < irls_tol or -change <= gain_tol * gain:
            break
    if concave:
        for q in range(start, end):
            zmask[indices[q]] = 1.0
        for e in range(ne):
            zmask[ex_row[e]] = 1.0
    return sweeps

#: the hold-out of an unmasked fit: ``(masked, seed, thr, all_rows, mask_zeros, obs_only,
#: transposed, g0)`` (see :func:`exclusions`)
NO_HOLDOUT = (False, np.uint64(0), np.uint64(0), False, False, False, False, np.int64(0))
NO_MASK = np.zeros(0, dtype=np.int64)


@njit(nogil=True, cache=True, fastmath=False)
def exclusions(indptr, indices, data, j, p, mk, mptr, midx, ex_row, ex_val, ex_test):
    """The excluded rows of column ``j`` (sorted, into ``ex_row``/``ex_val``/``ex_test``) for the
    hold-out ``mk`` = ``(masked, seed, thr, all_rows, mask_zeros, obs_only, transposed, g0)``:
    the test entries of :func:`dask_factor.kernels.masked.column_excluded` (column ``g0 + j`` of
    A, or row ``g0 + j`` when ``transposed``), NaN values and the user's mask ``mptr``/``midx``
    (empty: none). Returns their count (0 when not ``masked``)."""
    if not mk[0]:
        return 0
    return column_excluded(indptr, indices, data, j, mk[7] + j, p, mk[1], mk[2],
                           mk[3] and not mk[5], mk[4], mptr, midx, ex_row, ex_val, ex_test,
                           mk[6])


@njit(nogil=True, cache=True, fastmath=False)
def row_passes(code, power, delta, zi):
    """Whether :func:`irls_block` passes over every row of F (Fᵀ and μ at every row): the
    zeros' pull of NB and Tweedie (q < 2) and of a robust fit with zeros, zero inflation, and
    robust least squares (from FᵀF).

    Examples
    --------
    >>> row_passes(NB, 1.5, 0.0, False), row_passes(KL, 1.5, 0.0, False)
    (True, False)
    """
    concave = ((code == NB or (code == TWEEDIE and power < 2.0)) and delta == 0.0
               or (delta > 0.0 and code != MSE and zeros_observed(code, power)))
    return concave or zi or (code == MSE and delta > 0.0)


@njit(nogil=True, cache=True, fastmath=False)
def _transposed(F, Ft):
    """``Ft`` when it is Fᵀ's shape (given by the caller), else Fᵀ made from F in Ft's dtype
    (float32 only where F's values are float32: :func:`irls_block`)."""
    if Ft.shape[0] == F.shape[1] and Ft.shape[1] == F.shape[0]:
        return Ft
    out = np.empty((F.shape[1], F.shape[0]), dtype=Ft.dtype)
    for f in range(F.shape[1]):
        for i in range(F.shape[0]):
            out[f, i] = F[i, f]
    return out


@njit(nogil=True, cache=True, fastmath=False)
def irls_block(indptr, indices, data, F, disp, disp_by_col, code, power, l1, l2, nonneg, ub,
               Xprev, xscale, warm, cd_maxit, cd_tol, irls_maxit, irls_tol, Xt,
               mk=NO_HOLDOUT, mptr=NO_MASK, midx=NO_MASK, delta=0.0, zpi=NO_PI,
               zpi_by_col=False, zpi_out=NO_PI, gain_tol=0.0, Ft=NO_FT):
    """IRLS-NNLS for every column of a CSC matrix (p × n) against ``F`` (p × k).

    ``Xprev`` (n × k) times ``xscale`` (k,) is the warm start when ``warm``; ``Xt`` (n × k)
    receives the solutions (it may be ``Xprev``). ``mk``, ``mptr``, ``midx``: the held-out and
    missing entries, which get zero weight (:func:`exclusions`); ``delta`` > 0 the robust fit
    (:func:`robust_parts`). ``zpi``, ``zpi_by_col``: zero inflation (:func:`irls_column`); with
    ``zpi_by_col`` and a non-empty ``zpi_out`` (n,), each column's π after one EM step at its
    solution (:func:`zi_pi_step`, with the loss's own P₀). ``gain_tol``: each column's IRLS
    also stops at a step that gains at most that share of its gain so far (:func:`irls_column`).
    ``Ft``: Fᵀ (k × p, C order) for the passes over every row of F (:func:`row_passes`), in
    float32 when F's values are (exactly: the same results, half the bytes streamed per
    pass), or empty (Fᵀ is then made here, in F's float64).
    Returns the total coordinate-descent sweeps.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> F = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> A = sp.csc_matrix(np.array([[2.0], [1.0], [3.0]]))
    >>> X = np.zeros((1, 2))
    >>> _ = irls_block(A.indptr, A.indices, A.data, F, np.ones(3), False, KL, 1.5, 0.0, 0.0,
    ...                True, 0.0, X, np.ones(2), False, 100, 1e-10, 50, 1e-10, X)
    >>> np.round(X, 6)
    array([[2., 1.]])
    """
    n = indptr.size - 1
    p, k = F.shape
    Fsum = np.zeros(k)
    for i in range(p):
        for f in range(k):
            Fsum[f] += F[i, f]
    concave = ((code == NB or (code == TWEEDIE and power < 2.0)) and delta == 0.0
               or (delta > 0.0 and code != MSE and zeros_observed(code, power)))
    robust_ls = code == MSE and delta > 0.0  # robust least squares: from FᵀF
    rows = row_passes(code, power, delta, zpi.size > 0)  # passes over every row of F
    Ft = _transposed(F, Ft) if rows else np.empty((k, 0), dtype=Ft.dtype)
    Q = _sums_and_gram(F)[1] if robust_ls else np.empty((0, 0))
    G = np.empty((k, k))
    vk = np.empty((6, k))
    vp = np.empty((5, p if rows else 0))
    vp[1, :] = 1.0
    ws = pull_scratch(k if concave else 0)
    ms = np.empty((6, p))
    most = 0  # the most entries a column stores: the gathered rows' scratch (≤ p)
    for j in range(n):
        most = max(most, indptr[j + 1] - indptr[j])
    Fs = np.empty((k + 4, most))
    lane = np.empty(4 * LANES)
    x = np.empty(k)
    cap = p if mk[0] else 1
    ex_row = np.empty(cap, dtype=np.int64)
    ex_val = np.empty(cap)
    ex_test = np.empty(cap, dtype=np.bool_)
    total = 0
    for j in range(n):
        ne = exclusions(indptr, indices, data, j, p, mk, mptr, midx, ex_row, ex_val, ex_test)
        for f in range(k):
            x[f] = Xprev[j, f] * xscale[f] if warm else 0.0
        total += irls_column(indptr, indices, data, j, F, Ft, Fsum, disp, disp_by_col, code,
                             power, l1, l2, nonneg, ub, x, cd_maxit, cd_tol, irls_maxit,
                             irls_tol, warm, G, vk, vp, ws, ms, Fs, lane, ex_row, ne, mk[5],
                             delta, zpi, zpi_by_col, Q, gain_tol)
        for f in range(k):
            Xt[j, f] = x[f]
        if zpi_out.size > 0:
            zpi_out[j] = zi_pi_step(indptr, indices, j, F, x, disp, disp_by_col, code, power,
                                    zpi[j], ex_row, ne, Ft, vp[0])
    return total


@njit(nogil=True, cache=True, fastmath=False)
def lane_sum(v):
    """``Σ v`` (1-D, C order) in a fixed order that vectorises, the lanes of every IRLS sum:
    entry i into partial sum i mod :data:`LANES` (in order), the partials then added in lane
    order (:func:`lanes_add`)."""
    acc = np.zeros(LANES)
    lanes_add(acc, v, v.size)
    return lanes_total(acc)


@njit(nogil=True, cache=True, fastmath=False, error_model="numpy")
def nb_log_gamma_sum(indptr, indices, data, j, disp, disp_by_col, ex_row, ne):
    """``Σ`` :func:`nb_log_gamma` over the kept stored entries of column j (rows ``ex_row[:ne]``
    left out), in stored order. With one size for the column (``disp_by_col``) a small whole
    count's ``Σ_{t<y} log(r + t)`` is a running sum kept for the column: each logarithm is
    taken once per column, not once per count of every entry (on pbmc3k's genes 0.22 M
    logarithms instead of 6.3 M)."""
    start, end = indptr[j], indptr[j + 1]
    out = 0.0
    e = 0
    if disp_by_col:
        r = max(disp[j], 1e-10)
        S = np.empty(SMALL_COUNT + 1)  # S[y] = Σ_{t<y} log(r + t), filled as far as needed
        S[0] = 0.0
        top = 0
        for q in range(start, end):
            if ne > 0:
                e, skip = _skip(ex_row, ne, e, indices[q])
                if skip:
                    continue
            y = np.float64(data[q])
            if 0.0 <= y <= SMALL_COUNT and y == math.floor(y):
                iy = int(y)
                while top < iy:
                    S[top + 1] = S[top] + vlog(r + top)
                    top += 1
                out += LOG_FACTORIAL[iy] - S[iy]
            else:
                out += nb_log_gamma(y, r)
        return out
    for q in range(start, end):
        i = indices[q]
        if ne > 0:
            e, skip = _skip(ex_row, ne, e, i)
            if skip:
                continue
        out += nb_log_gamma(np.float64(data[q]), max(disp[i], 1e-10))
    return out


@njit(nogil=True, cache=True, fastmath=False)
def column_objective(indptr, indices, data, j, F, x, Fsum, disp, disp_by_col, code, power,
                     ex_row, ne, obs_only, delta=0.0, zpi=NO_PI, zpi_by_col=False, Ft=NO_FT,
                     mu=NO_PI, Q=NO_FT, ms=NO_FT):
    """``Σᵢ ℓ(y_ij, μᵢ)`` of column ``j`` with ``μ = F x``, zero entries included when the loss
    has mass at 0 (O(nnz·k), plus O(p·k) for NB and Tweedie). No explicit zeros stored. Rows
    ``ex_row[:ne]`` are left out; with ``obs_only`` the unstored entries too. ``delta`` > 0:
    the robust objective (:func:`robust_column`); ``zpi``: zero inflation (:func:`zi_entries`).
    ``Ft`` (Fᵀ in C order) and ``mu`` (p,, scratch): the zeros' means and then their losses,
    each in one vectorised pass (:func:`all_means`, :func:`zero_losses`); ``Q`` (FᵀF): robust
    least squares from the Gram (:func:`robust_column`); ``ms`` (6, p; empty: entry by entry):
    the stored entries' losses in vectorised passes (:func:`stored_value`)."""
    zeros = zeros_observed(code, power) and not obs_only
    dense = Ft.shape[1] == F.shape[0]  # μ and ℓ(0, μ) at every row in vectorised passes
    robust = delta > 0.0
    # a robust fit's zeros by the vectorised passes below (KL, NB, Tweedie: a zero's deviance
    # is its loss over s); least squares, GP and fits without their zeros entry by entry
    if robust and not (zeros and dense and (code == KL or code == NB or code == TWEEDIE)):
        return robust_column(indptr, indices, data, j, F, x, disp, disp_by_col, code, power,
                             delta, ex_row, ne, obs_only, np.empty((0, 0)), np.empty(0),
                             False, Ft, Q, mu)
    start, end = indptr[j], indptr[j + 1]
    out = 0.0
    e = 0
    if not robust and ms.shape[0] > 0:  # the μ-dependent part, then NB's log-gammas
        out = stored_value(indptr, indices, data, j, F, x, disp, disp_by_col, code, power,
                           ex_row, ne, ms)
        if code == NB:
            out += nb_log_gamma_sum(indptr, indices, data, j, disp, disp_by_col, ex_row, ne)
    else:
        for q in range(start, end):
            i = indices[q]
            e, skip = _skip(ex_row, ne, e, i)
            if skip:
                continue
            d = disp[j] if disp_by_col else disp[i]
            if robust:
                out += robust_parts(code, np.float64(data[q]), _dot(F, i, x), d, power,
                                    delta)[0]
            else:
                out += unit_loss(code, np.float64(data[q]), _dot(F, i, x), d, power)
    if not zeros:
        return out
    if zpi.size > 0:
        return out + zi_entries(indptr, indices, j, F, Ft, x, disp, disp_by_col, code, zpi,
                                zpi_by_col, ex_row, ne, mu, x, False)
    if (code == KL or code == GP) and not robust:  # ℓ(0, μ) is linear in μ: Σ_all − Σ_stored
        if code == KL or disp_by_col:
            scale = 1.0 / (1.0 + max(disp[j], 0.0)) if code == GP else 1.0
            return out + max(_zero_mass(indptr, indices, j, F, x, Fsum, ex_row, ne), 0.0) * scale
    if dense:
        all_means(Ft, x, mu)
        zero_losses(mu, disp, j, disp_by_col, code, power)
        if robust:
            huber_losses(mu, 0.5 if code == KL or code == NB else 1.0, delta)
    q = start
    if dense and ne == 0:  # every row's but the stored ones': in lanes, which vectorise
        for q in range(start, end):
            mu[indices[q]] = 0.0
        return out + lane_sum(mu)
    e = 0
    for i in range(F.shape[0]):
        q, e, stored, skip = _walk(indices, end, q, ex_row, ne, e, i)
        if stored or skip:
            continue
        if dense:
            out += mu[i]
        else:
            out += unit_loss(code, 0.0, _dot(F, i, x), disp[j] if disp_by_col else disp[i],
                             power)
    return out


# error_model="numpy": no division can be by zero (μ and r are floored); the loop vectorises
@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def zero_losses(mu, disp, j, disp_by_col, code, power):
    """``mu[i] ← ℓ(0, mu[i])`` at every row, in place (:func:`zero_loss`; NB, Tweedie q < 2;
    KL's ``ℓ(0, μ) = μ``, floored)."""
    if code == KL:
        for i in range(mu.size):
            mu[i] = max(mu[i], MU_FLOOR)
        return
    if disp_by_col:
        d = disp[j]
        for i in range(mu.size):
            mu[i] = zero_loss(code, mu[i], d, power)
    else:
        for i in range(mu.size):
            mu[i] = zero_loss(code, mu[i], disp[i], power)


@njit(nogil=True, cache=True, error_model="numpy", fastmath=False)
def huber_losses(ell, s, delta):
    """``ell[i] ← ρ`` of :func:`huber` at every row, in place: zeros' losses whose deviance is
    the loss over ``s`` (KL, NB, Tweedie), under ``robust=δ``. A loop that vectorises."""
    for i in range(ell.size):
        ell[i] = huber(ell[i], ell[i] / s, s, delta)[0]


@njit(nogil=True, cache=True, fastmath=False)
def _sums_and_gram(F):
    """Column sums ``Σᵢ Fᵢ`` (k,) and Gram ``FᵀF`` (k × k) of F (p × k), float64, in row order."""
    p, k = F.shape
    Fsum = np.zeros(k)
    Q = np.zeros((k, k))
    for i in range(p):
        for f in range(k):
            Fsum[f] += F[i, f]
            for g in range(k):
                Q[f, g] += F[i, f] * F[i, g]
    return Fsum, Q


@njit(nogil=True, cache=True, fastmath=False)
def _column_sse(indptr, indices, data, j, F, x, Q, sse, ex_row, ne, obs_only):
    """``sse`` plus column j's squared error ``Σᵢ (yᵢ − μᵢ)²`` with ``μ = F x`` over the kept
    entries: ``xᵀQx`` (Q = FᵀF) corrected at the stored and the excluded entries (with
    ``obs_only``: the stored, kept entries only)."""
    k = x.size
    sq = 0.0
    if not obs_only:
        for f in range(k):
            for g in range(k):
                sq += x[f] * Q[f, g] * x[g]
    e = 0
    for q in range(indptr[j], indptr[j + 1]):
        i = indices[q]
        e, skip = _skip(ex_row, ne, e, i)
        if skip:
            continue
        mu = _dot(F, i, x)
        y = np.float64(data[q])
        if obs_only:
            sse += (y - mu) * (y - mu)
        else:
            sse += (y - mu) * (y - mu) - mu * mu
    for e in range(ne):
        if not obs_only:
            mu = _dot(F, ex_row[e], x)
            sse -= mu * mu
    return sse + sq


@njit(nogil=True, cache=True, fastmath=False)
def _column_test(F, x, disp, disp_by_col, j, code, power, ex_row, ex_val, ex_test, ne, obs_only,
                 stats, zpi=NO_PI, zpi_by_col=False):
    """Add column j's held-out entries to ``stats``: [2] Σ ℓ over the test entries the loss
    covers, [3] their squared error (all test entries), [5] their count, [7] the count the
    loss covers."""
    zeros = zeros_observed(code, power) and not obs_only
    for e in range(ne):
        if not ex_test[e]:
            continue
        i = ex_row[e]
        y = ex_val[e]
        mu = _dot(F, i, x)
        stats[3] += (y - mu) * (y - mu)
        stats[5] += 1.0
        if y > 0.0 or zeros:
            d = disp[j] if disp_by_col else disp[i]
            if zpi.size > 0:  # zero inflation: the mixture's loss
                pi = zpi[j] if zpi_by_col else zpi[i]
                if y > 0.0:
                    stats[2] += unit_loss(code, y, mu, d, power) - math.log1p(-pi)
                else:
                    stats[2] += zi_zero(code, mu, d, power, pi)[0]
            else:
                stats[2] += unit_loss(code, y, mu, d, power)
            stats[7] += 1.0


@njit(nogil=True, cache=True, fastmath=False)
def block_objective(indptr, indices, data, F, Xt, disp, disp_by_col, code, power, delta,
                    zpi, zpi_by_col):
    """``(Σ ℓ, Σ (y − μ)²)`` over a CSC block (p × n) with ``μ = F Xtᵀ``, all entries, float64.

    The exact objective and squared error of ``evaluate(A, loss=...)``: one serial pass per
    column (O(p·k) per column for the zeros, O(nnz·k) for the stored entries). ``delta`` > 0:
    the robust objective (least squares included); ``zpi`` (non-empty): the zero-inflated one,
    π per row, or per column of the block (``zpi_by_col``), as :func:`column_objective`.
    """
    n = indptr.size - 1
    k = F.shape[1]
    Fsum, Q = _sums_and_gram(F)
    x = np.empty(k)
    rows = code == NB or code == TWEEDIE or zpi.size > 0 or delta > 0.0
    Ft = np.ascontiguousarray(F.T) if rows else np.empty((k, 0))
    mu = np.empty(Ft.shape[1])
    ms = np.empty((6, F.shape[0]))
    obj = 0.0
    sse = 0.0
    for j in range(n):
        for f in range(k):
            x[f] = Xt[j, f]
        if code != MSE or delta > 0.0:
            obj += column_objective(indptr, indices, data, j, F, x, Fsum, disp, disp_by_col,
                                    code, power, NO_MASK, 0, False, delta, zpi, zpi_by_col,
                                    Ft, mu, Q, ms)
        sse = _column_sse(indptr, indices, data, j, F, x, Q, sse, NO_MASK, 0, False)
    if code == MSE and delta == 0.0:
        obj = sse
    return obj, sse


@njit(nogil=True, cache=True, fastmath=False)
def nb_size_moments(indptr, indices, data, j, F, x, Fsum, Q, ex_row=NO_MASK, ne=0,
                    obs_only=False):
    """NB size by the method of moments for column ``j`` with ``μ = F x``:
    ``(Σ μ², Σ [(y − μ)² − μ])`` over the kept entries (all but ``ex_row[:ne]``; with
    ``obs_only`` the stored ones only; the ratio is r). O(nnz·k + k²)."""
    k = x.size
    s_all = 0.0
    sq_all = 0.0
    if not obs_only:
        for f in range(k):
            s_all += Fsum[f] * x[f]
            for g in range(k):
                sq_all += x[f] * Q[f, g] * x[g]
        for e in range(ne):
            mu = _dot(F, ex_row[e], x)
            s_all -= mu
            sq_all -= mu * mu
    excess = sq_all - s_all
    e = 0
    for q in range(indptr[j], indptr[j + 1]):
        i = indices[q]
        e, skip = _skip(ex_row, ne, e, i)
        if skip:
            continue
        mu = max(_dot(F, i, x), MU_FLOOR)
        y = np.float64(data[q])
        if obs_only:
            sq_all += mu * mu
            excess += (y - mu) * (y - mu) - mu
        else:
            excess += (y - mu) * (y - mu) - mu * mu
    return sq_all, excess


@njit(nogil=True, cache=True, fastmath=False)
def gp_theta_mm(indptr, indices, data, j, F, x, Fsum, theta, theta_min, theta_max, inner,
                ex_row=NO_MASK, ne=0, obs_only=False, zero_mass=0.0):
    """GP dispersion θ of column ``j`` by RcppML's closed-form MM update (``inner`` passes from
    ``theta``): per pass ``α θ² + β θ − γ = 0`` with η = s/(s + θy) over entries y ≥ 1 (the
    kept entries: all but ``ex_row[:ne]``, with ``obs_only`` the stored ones only).
    ``zero_mass`` is added to ``Σ s`` (with ``obs_only``: the zeros' means weighted by their
    count-model share under zero inflation, :func:`zero_shares`)."""
    start, end = indptr[j], indptr[j + 1]
    sum_s = zero_mass
    if not obs_only:
        for f in range(x.size):
            sum_s += Fsum[f] * x[f]
        for e in range(ne):
            sum_s -= _dot(F, ex_row[e], x)
    sum_y = 0.0
    n1 = 0
    e = 0
    for q in range(start, end):
        e, skip = _skip(ex_row, ne, e, indices[q])
        if skip:
            continue
        y = np.float64(data[q])
        sum_y += y
        if obs_only:
            sum_s += _dot(F, indices[q], x)
        if y >= 1.0:
            n1 += 1
    th = theta
    for _ in range(inner):
        alpha = 0.0
        gamma = 0.0
        e = 0
        for q in range(start, end):
            e, skip = _skip(ex_row, ne, e, indices[q])
            if skip:
                continue
            y = np.float64(data[q])
            if y >= 1.0:
                s = max(_dot(F, indices[q], x), MU_FLOOR)
                eta = s / max(s + th * y, MU_FLOOR)
                alpha += (y - 1.0) * eta
                gamma += (y - 1.0) * (1.0 - eta)
        alpha += n1
        beta = (sum_y - sum_s) - gamma + alpha
        if alpha > 1e-15:
            disc = beta * beta + 4.0 * alpha * gamma
            if disc > 0.0 and math.isfinite(disc):
                new = (-beta + math.sqrt(disc)) / (2.0 * alpha)
                if math.isfinite(new) and new >= 0.0:
                    th = min(max(new, theta_min), theta_max)
    return th


#: the statistics of :func:`row_update`: objective and squared error over the training
#: entries, the same over the held-out ones, the training and test counts, and the counts the
#: loss covers (Gamma and inverse Gaussian leave zeros out)
ROW_STATS = ("objective", "sse", "test_objective", "test_sse", "n_train", "n_test",
             "n_train_loss", "n_test_loss")


@njit(nogil=True, cache=True, fastmath=False)
def row_update(indptr, indices, data, F, disp_old, code, power, estimate, score_new,
               disp_bounds, Xt, out_disp, out_stats, mk=NO_HOLDOUT, mptr=NO_MASK,
               midx=NO_MASK, delta=0.0, zpi=NO_PI, zpi_by_col=False, zpi_out=NO_PI):
    """After the W solve of a block of rows (columns of Aᵀ against ``F`` = normalised H): the
    dispersion of each row (with ``estimate``: NB size by moments, GP θ by MM from
    ``disp_old``; else ``disp_old`` is kept; under zero inflation each zero counts by its
    count-model share at ``disp_old`` and ``zpi``, :func:`zero_shares`) and the block's
    :data:`ROW_STATS`, scored with the new dispersion (``score_new``) or the old one.

    ``disp_bounds`` = (min, max). ``out_disp`` (n_rows,) and ``out_stats`` (8,) are outputs.
    ``mk``, ``mptr``, ``midx``: the held-out and missing entries (:func:`exclusions`, transposed);
    the dispersion and the training statistics leave them out, the test statistics score the
    held-out ones. ``delta`` > 0: the training objective is the robust one. ``zpi``: zero
    inflation; with ``zpi_by_col`` (π per row of A) each row's π takes one EM step into
    ``zpi_out`` and the objective is scored with it.
    """
    n = indptr.size - 1
    p, k = F.shape
    # the dispersion is by column of Aᵀ here: a True known only at run time, so the callees
    # compile once for both half-steps (a literal True would be a specialisation of its own)
    by_col = n >= 0
    Fsum, Q = _sums_and_gram(F)
    x = np.empty(k)
    Ft = (np.ascontiguousarray(F.T)
          if code == NB or code == TWEEDIE or zpi.size > 0 or delta > 0.0
          else np.empty((k, 0)))
    mu = np.empty(Ft.shape[1])
    ms = np.empty((6, p))
    cap = p if mk[0] else 1
    ex_row = np.empty(cap, dtype=np.int64)
    ex_val = np.empty(cap)
    ex_test = np.empty(cap, dtype=np.bool_)
    obs_only = mk[5]
    covers_zeros = zeros_observed(code, power) and not obs_only
    for s in range(out_stats.size):
        out_stats[s] = 0.0
    sse = 0.0
    for j in range(n):
        ne = exclusions(indptr, indices, data, j, p, mk, mptr, midx, ex_row, ex_val, ex_test)
        for f in range(k):
            x[f] = Xt[j, f]
        d = disp_old[j]
        # under zero inflation a zero counts for the dispersion by its count-model share
        weigh = estimate and zpi.size > 0 and not obs_only and (code == NB or code == GP)
        z1 = z2 = 0.0
        if weigh:
            _, _, z1, z2 = zero_shares(indptr, indices, j, F, x, disp_old, by_col, code, power,
                                       zpi[j] if zpi_by_col else 0.0,
                                       zpi[:0] if zpi_by_col else zpi, ex_row, ne, Ft, mu)
        if estimate and code == NB:
            num, den = nb_size_moments(indptr, indices, data, j, F, x, Fsum, Q, ex_row, ne,
                                       obs_only or weigh)
            if weigh:  # a zero's (y − μ)² − μ is μ² − μ
                num += z2
                den += z2 - z1
            if den > 1e-10 and num > 1e-10:
                d = min(max(num / den, disp_bounds[0]), disp_bounds[1])
            else:
                d = disp_bounds[1]
        elif estimate and code == GP:
            d = gp_theta_mm(indptr, indices, data, j, F, x, Fsum, d, disp_bounds[0],
                            disp_bounds[1], 5, ex_row, ne, obs_only or weigh, z1)
        out_disp[j] = d
        disp = out_disp if score_new else disp_old
        pis = zpi
        if zpi_out.size > 0:
            zpi_out[j] = zi_pi_step(indptr, indices, j, F, x, disp, by_col, code, power, zpi[j],
                                    ex_row, ne, Ft, mu)
            pis = zpi_out
        out_stats[0] += column_objective(indptr, indices, data, j, F, x, Fsum, disp, by_col, code,
                                         power, ex_row, ne, obs_only, delta, pis, zpi_by_col,
                                         Ft, mu, Q, ms)
        sse = _column_sse(indptr, indices, data, j, F, x, Q, sse, ex_row, ne, obs_only)
        # counts of the training entries: all rows but the excluded (stored kept ones only
        # when the zeros are missing or outside the loss's support)
        stored = 0
        e = 0
        for q in range(indptr[j], indptr[j + 1]):
            e, skip = _skip(ex_row, ne, e, indices[q])
            if not skip:
                stored += 1
        out_stats[4] += stored if obs_only else p - ne
        out_stats[6] += p - ne if covers_zeros else stored
        if ne:
            _column_test(F, x, disp, by_col, j, code, power, ex_row, ex_val, ex_test, ne,
                         obs_only, out_stats, pis, zpi_by_col)
    out_stats[1] = sse
