"""Parallel-tempered MCMC of the step-function reddening profile of one pixel (§4.2.3).

The whole chain (all temperatures, all rounds) runs inside one compiled numba function,
:func:`_pt_chain_kernel`. What it samples:

* state: ``y[x]``, the cumulative reddening at the distance-modulus edge ``x`` in quanta of
  0.01 mag, non-decreasing, ``0 <= y < n_E`` (``n_E = 700``);
* log posterior at inverse temperature ``beta``:
  ``log P(y) + beta * sum_k w_k log(L_k(y) + eps)``, with the line integral
  ``L_k(y) = sum_x img_k[x, y[x]]`` through star ``k``'s (distance, reddening) posterior,
  ``eps = p_badstar / n_E`` and ``log P`` the jump prior of :mod:`.prior`;
* proposals as the C++ sampler that made the released map draws them (of 12 equally likely
  codes): 4/12 a +-1 step of ``y`` in one bin, 4/12 a swap of the jumps of two adjacent bins,
  and 1/12 each: shift of the near part (bins ``0..x``) or the far part (bins ``x..``) by
  +-1, and the same two shifts to a level drawn from an exponential of mean ``n_E / 20``
  truncated at ``n_E`` (with its Hastings factor);
* per round: ``sweeps_per_round * n_dist`` proposals in each temperature, then one swap
  proposal between a random adjacent pair of temperatures; the coldest chain is recorded
  once per round.

Speed (against the C++ sampler of the released map, bayestar v0.2.0, which Zucker et al. 2025
cite in §4.2.3, footnote 5): star images are packed by distance column, each column holding
only the stars and reddening rows where some star is non-zero, with stars innermost and sorted
by distance, in half precision and whole groups of 8 stars (:class:`PackedPixel`), read eight
stars per instruction by the vector helpers of :mod:`._simd`; each chain keeps the offsets of
the rows just below, at and above its profile, so a +-1 shift reads its columns without any
index arithmetic, and a shift to an absolute level asks for all its (rarely cached) new rows
before reading the first; the prior change of every move is computed first and invalid or
prior-impossible moves cost nothing more; swaps of two equal jumps are skipped (they do not
change the state); the uniform variate is drawn before the per-star work, so that the bounds
``z / (1 + z) <= log(1 + z) <= z`` (``z = delta_k / (L_k + eps)``) accept or reject most moves
without a logarithm; the per-star line integrals and their inverses are updated incrementally,
and re-synchronised exactly (with the total log likelihood and prior) at the end of every
round.

Defects of that C++ code (found by reading its source) and what this port does: the first
star's image is never modified (fixed); the temperature-swap acceptance uses the likelihoods of
the pair that was drawn (fixed); the bound check uses the ``n_E`` reddening rows, so a jump may
reach the top of the grid (fixed); proposals with log acceptance below -10 are not cut off --
the exact Metropolis test is kept and made cheap by the bound above (fixed, no bias).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from ._simd import LANES as _LANES
from ._simd import add_row_difference, half_to_float, prefetch_once, set_row_difference

__all__ = ["PackedPixel", "SamplerSettings", "ChainResult", "RETRY_SETTINGS", "PROPOSAL_NAMES",
           "pack_pixel", "pack_dense_images", "sample_pixel", "run_chain", "initial_profiles",
           "integrated_autocorr_time", "line_integrals", "log_prior_of_profile"]

#: Proposal codes (same order as the counters returned by the kernel).
PROPOSAL_NAMES = ("step", "swap", "shift_near", "shift_far", "shift_abs_near", "shift_abs_far")


# --------------------------------------------------------------------------- packing
@dataclass(frozen=True)
class PackedPixel:
    """Star images of one pixel packed by distance column (the sampler's input).

    Stars are sorted by distance, so the stars that matter in a distance column form a short
    contiguous range ``a[x]..b[x]-1``. Column ``x`` stores ``nrows[x] + 2`` rows of
    ``stride[x]`` values at ``data[off[x]:]``: rows ``row_lo[x] - 1 .. row_lo[x] + nrows[x]``
    (the first and last rows are zeros, so out-of-range reddening reads zero), each row
    holding stars ``lane_lo[x] .. lane_lo[x] + stride[x] - 1``, the range ``a..b`` widened to
    whole groups of :data:`._simd.LANES` stars (zeros outside ``a..b``).

    Values are half floats (``data`` holds their uint16 bits), star ``k``'s image divided by
    ``star_scale[k]``, the power of two at or above its largest value: the relative rounding
    is at most 2**-11 (4.9e-4), far below the sampling noise of a binned posterior, values
    down to 6e-8 of a star's peak are kept, and half the bytes of float32 let the rows that
    the sampler reads stay in the fastest caches. The sampler works with these values
    throughout (line integrals, differences, re-synchronisation), so it samples the posterior
    of the stored images exactly.
    """

    data: np.ndarray
    off: np.ndarray
    row_lo: np.ndarray
    nrows: np.ndarray
    a: np.ndarray
    b: np.ndarray
    lane_lo: np.ndarray
    stride: np.ndarray
    n_star: int
    n_E: int
    star_scale: np.ndarray  # power of two that each packed star's stored values are times
    order: np.ndarray  # original index of each packed star
    weights: np.ndarray  # exponent of each packed star's likelihood
    ebv_median: np.ndarray  # median reddening (mag) of each packed star's posterior

    @property
    def n_dist(self) -> int:
        return int(self.off.size)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@numba.njit(cache=True, nogil=True)
def _pack_kernel(x0, nx, y0, ny, boff, bdata, order, scale, n_dist):
    n = order.size
    a = np.full(n_dist, n, np.int64)
    b = np.zeros(n_dist, np.int64)
    row_lo = np.full(n_dist, 1 << 30, np.int64)
    row_hi = np.zeros(n_dist, np.int64)
    for i in range(n):
        k = order[i]
        for x in range(x0[k], x0[k] + nx[k]):
            if i < a[x]:
                a[x] = i
            if i + 1 > b[x]:
                b[x] = i + 1
            if y0[k] < row_lo[x]:
                row_lo[x] = y0[k]
            if y0[k] + ny[k] > row_hi[x]:
                row_hi[x] = y0[k] + ny[k]
    off = np.zeros(n_dist, np.int64)
    nrows = np.zeros(n_dist, np.int64)
    lane_lo = np.zeros(n_dist, np.int64)
    stride = np.zeros(n_dist, np.int64)
    total = 0
    for x in range(n_dist):
        if b[x] <= a[x]:
            a[x] = 0
            b[x] = 0
            row_lo[x] = 0
            nrows[x] = 0
        else:
            nrows[x] = row_hi[x] - row_lo[x]
            lane_lo[x] = (a[x] // _LANES) * _LANES
            stride[x] = (b[x] + _LANES - 1) // _LANES * _LANES - lane_lo[x]
        off[x] = total
        total += (nrows[x] + 2) * stride[x]
    data = np.zeros(total, np.float32)
    for i in range(n):
        k = order[i]
        s = scale[i]
        p = boff[k]
        for x in range(x0[k], x0[k] + nx[k]):
            w = stride[x]
            base = off[x] + (y0[k] - row_lo[x] + 1) * w + (i - lane_lo[x])
            for yy in range(ny[k]):
                data[base + yy * w] = bdata[p] * s
                p += 1
    return data, off, row_lo, nrows, a, b, lane_lo, stride


def pack_pixel(x0, nx, y0, ny, offsets, data, *, star_index=None, weights=None,
               weight_mode: str = "image", n_dist: int = 120, n_E: int = 700) -> PackedPixel:
    """Pack bounding-box star images (see :mod:`.inputs`) for the sampler.

    Parameters
    ----------
    x0, nx, y0, ny : array_like of int, shape (n_all,)
        First distance column / number of columns and first reddening row / number of rows of
        each star's bounding box.
    offsets : array_like of int, shape (n_all,)
        Start of each star's box in ``data`` (row-major: distance, then reddening).
    data : array_like of float32
        Concatenated boxes.
    star_index : array_like of int, optional
        Stars of this pixel (default: all).
    weights : array_like of float, optional
        Pixel weight of each selected star (default 1).
    weight_mode : {"image", "loglike"}
        ``"image"`` multiplies each star's posterior by its weight, as the paper words it;
        ``"loglike"`` raises the star's likelihood to the power of its weight.
    n_dist, n_E : int
        Grid size.

    Returns
    -------
    PackedPixel
    """
    x0 = np.asarray(x0, np.int64)
    nx = np.asarray(nx, np.int64)
    y0 = np.asarray(y0, np.int64)
    ny = np.asarray(ny, np.int64)
    offsets = np.asarray(offsets, np.int64)
    data = np.asarray(data, np.float32)
    idx = np.arange(x0.size) if star_index is None else np.asarray(star_index, np.int64)
    w = np.ones(idx.size) if weights is None else np.asarray(weights, np.float64)
    if w.shape != idx.shape:
        raise ValueError("weights must have one value per selected star")
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    if weight_mode not in ("image", "loglike"):
        raise ValueError("weight_mode must be 'image' or 'loglike'")
    if idx.size and (np.any(x0[idx] < 0) or np.any(x0[idx] + nx[idx] > n_dist)
                     or np.any(y0[idx] < 0) or np.any(y0[idx] + ny[idx] > n_E)):
        raise ValueError("star bounding boxes must lie inside the grid")
    centre = x0[idx] + 0.5 * nx[idx]
    sort = np.argsort(centre, kind="stable")
    order = idx[sort]
    w = w[sort]
    image_weight = w if weight_mode == "image" else np.ones_like(w)
    exps = np.ones_like(w) if weight_mode == "image" else w
    # stored values: each star's (weighted) image over a power of two at or above its peak
    peak = _box_peaks(nx, ny, offsets, data, order) * image_weight
    star_scale = np.exp2(np.ceil(np.log2(np.where(peak > 0, peak, 1.0))))
    values, off, row_lo, nrows, a, b, lane_lo, stride = _pack_kernel(
        x0, nx, y0, ny, offsets, data, order, (image_weight / star_scale).astype(np.float32),
        n_dist)
    half = values.astype(np.float16).view(np.uint16)
    med = _box_median_rows(x0, nx, y0, ny, offsets, data, order) * 0.01
    return PackedPixel(half, off, row_lo, nrows, a, b, lane_lo, stride, int(order.size),
                       int(n_E), star_scale, order, exps.astype(np.float64), med)


@numba.njit(cache=True, nogil=True)
def _box_peaks(nx, ny, boff, bdata, order):
    out = np.zeros(order.size)
    for i in range(order.size):
        k = order[i]
        p = boff[k]
        for q in range(nx[k] * ny[k]):
            out[i] = max(out[i], bdata[p + q])
    return out


@numba.njit(cache=True, nogil=True)
def _box_median_rows(x0, nx, y0, ny, boff, bdata, order):
    out = np.zeros(order.size)
    for i in range(order.size):
        k = order[i]
        marg = np.zeros(ny[k])
        p = boff[k]
        for x in range(nx[k]):
            for yy in range(ny[k]):
                marg[yy] += bdata[p]
                p += 1
        tot = marg.sum()
        acc = 0.0
        for yy in range(ny[k]):
            acc += marg[yy]
            if acc >= 0.5 * tot:
                out[i] = y0[k] + yy + 0.5
                break
    return out


def pack_dense_images(images, weights=None, weight_mode: str = "image",
                      threshold: float = 0.0) -> PackedPixel:
    """Pack dense star images of shape (n_star, n_dist, n_E) (tests, benchmarks).

    Each star's bounding box is the range of cells above ``threshold`` times its maximum.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 3:
        raise ValueError("images must have shape (n_star, n_dist, n_E)")
    n_star, n_dist, n_E = images.shape
    x0 = np.zeros(n_star, np.int64)
    nx = np.zeros(n_star, np.int64)
    y0 = np.zeros(n_star, np.int64)
    ny = np.zeros(n_star, np.int64)
    chunks, offs, pos = [], np.zeros(n_star, np.int64), 0
    for k in range(n_star):
        keep = images[k] > threshold * images[k].max()
        xs = np.flatnonzero(keep.any(axis=1))
        ys = np.flatnonzero(keep.any(axis=0))
        if xs.size == 0:
            xs, ys = np.array([0]), np.array([0])
        x0[k], nx[k] = xs[0], xs[-1] - xs[0] + 1
        y0[k], ny[k] = ys[0], ys[-1] - ys[0] + 1
        box = images[k, x0[k]:x0[k] + nx[k], y0[k]:y0[k] + ny[k]]
        chunks.append(box.ravel())
        offs[k] = pos
        pos += box.size
    return pack_pixel(x0, nx, y0, ny, offs, np.concatenate(chunks), weights=weights,
                      weight_mode=weight_mode, n_dist=n_dist, n_E=n_E)


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SamplerSettings:
    """Parallel-tempering settings (defaults: the paper's base setting).

    Parameters
    ----------
    n_rounds : int
        Rounds of updates (2500 in the base setting).
    sweeps_per_round : int
        Proposals per temperature per round, in units of ``n_dist`` (20 sweeps of 120 bins =
        the paper's "2400 steps").
    n_temperatures : int
        Chains at inverse temperatures ``beta_ratio ** k``.
    beta_ratio : float
        Ratio of successive inverse temperatures (0.9).
    burnin_fraction : float
        Fraction of rounds discarded (0.2).
    n_samples : int
        Samples kept from the coldest chain (100).
    p_badstar : float
        Softening of each star's line integral, ``eps = p_badstar / n_E``.
    resync : bool
        Recompute the line integrals exactly at the end of each round.
    """

    n_rounds: int = 2500
    sweeps_per_round: int = 20
    n_temperatures: int = 4
    beta_ratio: float = 0.9
    burnin_fraction: float = 0.2
    n_samples: int = 100
    p_badstar: float = 1e-3
    resync: bool = True

    def __post_init__(self):
        if self.n_rounds < 2 or self.sweeps_per_round < 1 or self.n_temperatures < 1:
            raise ValueError("n_rounds >= 2, sweeps_per_round >= 1, n_temperatures >= 1 needed")
        if not 0 < self.beta_ratio <= 1:
            raise ValueError("beta_ratio must lie in (0, 1]")
        if not 0 <= self.burnin_fraction < 1:
            raise ValueError("burnin_fraction must lie in [0, 1)")
        if self.n_samples < 1 or self.p_badstar <= 0:
            raise ValueError("n_samples must be >= 1 and p_badstar > 0")


#: The paper's four increasingly expensive settings: (sweeps_per_round, n_rounds), i.e.
#: (2400, 2500), (2400, 5000), (4800, 5000) and (4800, 10000) steps and rounds.
RETRY_SETTINGS = ((20, 2500), (20, 5000), (40, 5000), (40, 10000))


# --------------------------------------------------------------------------- RNG
@numba.njit(inline="always")
def _next(state):
    """splitmix64: returns (new_state, 64 random bits)."""
    s = state + np.uint64(0x9E3779B97F4A7C15)
    z = s
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return s, z ^ (z >> np.uint64(31))


@numba.njit(inline="always")
def _uniform(state):
    s, z = _next(state)
    return s, ((z >> np.uint64(11)) + np.uint64(1)) * (1.0 / 9007199254740993.0)


@numba.njit(inline="always")
def _randint(state, n):
    s, u = _uniform(state)
    k = int(u * n)
    if k >= n:
        k = n - 1
    return s, k


# --------------------------------------------------------------------------- kernel helpers
@numba.njit(inline="always")
def _row(off, row_lo, nrows, a, lane_lo, stride, x, y):
    r = y - row_lo[x] + 1
    if r < 0:
        r = 0
    elif r > nrows[x] + 1:
        r = nrows[x] + 1
    return off[x] + r * stride[x] + (a[x] - lane_lo[x])


@numba.njit(inline="always")
def _set_rows(rows_c, cm, j, yj):
    """Offsets of column ``j``'s rows at reddening ``yj - 1``, ``yj`` and ``yj + 1``."""
    for q in range(3):
        r = min(max(yj - 1 + q - cm[j, 1], 0), cm[j, 2])
        rows_c[j, q] = cm[j, 0] + r * cm[j, 4]


@numba.njit(inline="always")
def _step_rows(rows_c, cm, yc, j_lo, j_hi, dy):
    """Move columns ``j_lo..j_hi-1`` of a profile by ``dy = +-1`` and their cached rows: two
    of the three offsets are already known, one is computed."""
    if dy > 0:
        for j in range(j_lo, j_hi):
            yc[j] += 1
            rows_c[j, 0] = rows_c[j, 1]
            rows_c[j, 1] = rows_c[j, 2]
            r = min(max(yc[j] + 1 - cm[j, 1], 0), cm[j, 2])
            rows_c[j, 2] = cm[j, 0] + r * cm[j, 4]
    else:
        for j in range(j_lo, j_hi):
            yc[j] -= 1
            rows_c[j, 2] = rows_c[j, 1]
            rows_c[j, 1] = rows_c[j, 0]
            r = min(max(yc[j] - 1 - cm[j, 1], 0), cm[j, 2])
            rows_c[j, 0] = cm[j, 0] + r * cm[j, 4]


@numba.njit(cache=True, nogil=True)
def _line_integrals(data, off, row_lo, nrows, a, b, lane_lo, stride, y, n_star):
    L = np.zeros(n_star)
    for x in range(off.size):
        p = _row(off, row_lo, nrows, a, lane_lo, stride, x, y[x])
        ax = a[x]
        for i in range(b[x] - ax):
            L[ax + i] += half_to_float(data, p + i)
    return L


@numba.njit(cache=True, nogil=True)
def _log_prior(y, logp_dy):
    lp = 0.0
    prev = 0
    for x in range(y.size):
        d = y[x] - prev
        if d < 0 or d >= logp_dy.shape[1]:
            return -np.inf
        lp += logp_dy[x, d]
        prev = y[x]
    return lp


@numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _sum_logs(L, wts, eps, star_scale):
    """``sum_k w_k log(L_k + eps)`` for line integrals ``L_k`` in units of ``star_scale``."""
    s = 0.0
    for k in range(L.size):
        s += wts[k] * math.log(star_scale[k] * (L[k] + eps[k]))
    return s


@numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def _pt_chain_kernel(data, off, row_lo, nrows, a, b, lane_lo, stride, n_star, n_E, star_scale,
                     wts, logp_dy, betas, y_init, n_rounds, steps_per_round, eps_true,
                     y_abs_mean, seed, resync):
    n_T, n_dist = y_init.shape
    # prefix (near shifts, columns 0..x) and suffix (far shifts, columns x..) star ranges
    pre_lo = np.empty(n_dist, np.int64)
    pre_hi = np.empty(n_dist, np.int64)
    suf_lo = np.empty(n_dist, np.int64)
    suf_hi = np.empty(n_dist, np.int64)
    lo, hi = n_star, 0
    for x in range(n_dist):
        if b[x] > a[x]:
            lo = min(lo, a[x])
            hi = max(hi, b[x])
        pre_lo[x] = lo
        pre_hi[x] = max(hi, lo)
    lo, hi = n_star, 0
    for x in range(n_dist - 1, -1, -1):
        if b[x] > a[x]:
            lo = min(lo, a[x])
            hi = max(hi, b[x])
        suf_lo[x] = lo
        suf_hi[x] = max(hi, lo)

    # line integrals are kept in units of each star's stored scale, so the softening is too
    eps = np.empty(n_star)
    for k in range(n_star):
        eps[k] = eps_true / star_scale[k]
    # per-chain state, indexed by slot; temp_slot[t] is the slot at temperature t
    y = y_init.copy()
    L = np.zeros((n_T, n_star))
    winv = np.zeros((n_T, n_star))
    logL = np.zeros(n_T)
    logPr = np.zeros(n_T)
    for c in range(n_T):
        L[c] = _line_integrals(data, off, row_lo, nrows, a, b, lane_lo, stride, y[c], n_star)
        for k in range(n_star):
            winv[c, k] = wts[k] / (L[c, k] + eps[k])
        logL[c] = _sum_logs(L[c], wts, eps, star_scale)
        logPr[c] = _log_prior(y[c], logp_dy)
    temp_slot = np.arange(n_T)
    # per-column metadata in one array (one cache line per column in the shift loop):
    # data offset, first stored row - 1, stored rows + 1, first star lane, lanes, vectors
    cm = np.empty((n_dist, 6), np.int64)
    for j in range(n_dist):
        cm[j, 0] = off[j]
        cm[j, 1] = row_lo[j] - 1
        cm[j, 2] = nrows[j] + 1
        cm[j, 3] = lane_lo[j]
        cm[j, 4] = stride[j]
        cm[j, 5] = stride[j] // _LANES
    # offsets of the rows one quantum below, at and above each chain's profile (the +-1
    # shifts read only these), kept up to date as moves are accepted
    rows = np.empty((n_T, n_dist, 3), np.int64)
    new_row = np.zeros(n_dist, np.int64)  # rows of an absolute-level shift
    for c in range(n_T):
        for j in range(n_dist):
            _set_rows(rows[c], cm, j, y[c, j])

    delta = np.zeros((n_star + _LANES - 1) // _LANES * _LANES, np.float32)
    y_trace = np.zeros((n_rounds, n_dist), np.int16)
    logL_trace = np.zeros(n_rounds)
    logPr_trace = np.zeros(n_rounds)
    n_prop = np.zeros(6, np.int64)
    n_valid = np.zeros(6, np.int64)
    n_acc = np.zeros(6, np.int64)
    n_bound_rejected = 0
    n_bound_accepted = 0
    swap_tried = 0
    swap_acc = 0
    lam = 1.0 / y_abs_mean
    trunc = 1.0 - math.exp(-lam * n_E)
    state = np.uint64(seed)
    for _ in range(4):
        state, _z = _next(state)

    for rnd in range(n_rounds):
        for t in range(n_T):
            c = temp_slot[t]
            beta = betas[t]
            yc = y[c]
            Lc = L[c]
            winvc = winv[c]
            rc = rows[c]
            for _step in range(steps_per_round):
                # one 64-bit draw gives the move type (high half), the distance bin
                # (low half, multiply-shift) and the direction (lowest bit)
                state, z = _next(state)
                zl = z & np.uint64(0xFFFFFFFF)
                code = np.int64(((z >> np.uint64(32)) * np.uint64(12)) >> np.uint64(32))
                bit = np.int64(z & np.uint64(1))
                if code < 4:
                    kind = 0
                elif code < 8:
                    kind = 1
                else:
                    kind = code - 6  # 2 near, 3 far, 4 abs near, 5 abs far
                n_prop[kind] += 1
                lnq = 0.0
                x = 0
                dy = 0
                y_new = 0
                # ---- propose and compute the prior change (cheap) ----
                if kind == 0:
                    x = np.int64((zl * np.uint64(n_dist)) >> np.uint64(32))
                    dy = 2 * bit - 1
                    y_new = yc[x] + dy
                    prev = yc[x - 1] if x > 0 else 0
                    j0_old = yc[x] - prev
                    j0_new = y_new - prev
                    if y_new < 0 or y_new >= n_E or j0_new < 0:
                        continue
                    dlp = logp_dy[x, j0_new] - logp_dy[x, j0_old]
                    if x < n_dist - 1:
                        j1_old = yc[x + 1] - yc[x]
                        j1_new = yc[x + 1] - y_new
                        if j1_new < 0:
                            continue
                        dlp += logp_dy[x + 1, j1_new] - logp_dy[x + 1, j1_old]
                    lo = a[x]
                    hi = b[x]
                elif kind == 1:
                    x = 1 + np.int64((zl * np.uint64(n_dist - 2)) >> np.uint64(32))
                    jl = yc[x] - yc[x - 1]
                    jr = yc[x + 1] - yc[x]
                    if jl == jr:
                        continue  # swapping equal jumps leaves the state unchanged
                    y_new = yc[x - 1] + jr
                    dy = y_new - yc[x]
                    dlp = (logp_dy[x, jr] + logp_dy[x + 1, jl]
                           - logp_dy[x, jl] - logp_dy[x + 1, jr])
                    lo = a[x]
                    hi = b[x]
                else:
                    x = np.int64((zl * np.uint64(n_dist - 1)) >> np.uint64(32))
                    if kind <= 3:
                        dy = 2 * bit - 1
                    else:
                        state, u = _uniform(state)
                        lev = int(-math.log(1.0 - trunc * u) / lam)
                        if lev >= n_E:
                            lev = n_E - 1
                        dy = lev - yc[x]
                        lnq = lam * dy
                        if dy == 0:
                            continue
                    if kind == 2 or kind == 4:  # near part: bins 0..x
                        if yc[0] + dy < 0 or yc[x] + dy >= n_E:
                            continue
                        j1_old = yc[x + 1] - yc[x]
                        if j1_old - dy < 0:
                            continue
                        dlp = (logp_dy[x + 1, j1_old - dy] - logp_dy[x + 1, j1_old]
                               + logp_dy[0, yc[0] + dy] - logp_dy[0, yc[0]])
                        lo = pre_lo[x]
                        hi = pre_hi[x]
                    else:  # far part: bins x..
                        if yc[x] + dy < 0 or yc[n_dist - 1] + dy >= n_E:
                            continue
                        j0_old = yc[x] - (yc[x - 1] if x > 0 else 0)
                        if j0_old + dy < 0:
                            continue
                        dlp = logp_dy[x, j0_old + dy] - logp_dy[x, j0_old]
                        lo = suf_lo[x]
                        hi = suf_hi[x]
                n_valid[kind] += 1
                # ---- threshold on the likelihood change (uniform drawn first) ----
                state, u = _uniform(state)
                thr = (math.log(u) - dlp - lnq) / beta
                if hi <= lo:
                    if thr >= 0.0:
                        continue
                else:
                    # ---- per-star differences of the line integrals ----
                    # (whole vectors of 8 stars from the half-float rows, see _simd; the
                    # loops below use unsigned indices: numba then skips the negative-index
                    # wraparound test and they vectorise; no slices or helper calls here,
                    # both cost reference-count updates)
                    ulo = np.uint64(lo)
                    un = np.uint64(hi - lo)
                    if kind <= 1:
                        r0 = min(max(yc[x] - row_lo[x] + 1, 0), nrows[x] + 1)
                        r1 = min(max(y_new - row_lo[x] + 1, 0), nrows[x] + 1)
                        w = stride[x]
                        set_row_difference(delta, lane_lo[x], data, off[x] + r1 * w,
                                           off[x] + r0 * w, w // _LANES)
                    else:
                        # zero whole lane groups: the columns' vectors then add to (and read
                        # back) exactly the vectors stored here
                        z_lo = np.uint64((lo // _LANES) * _LANES)
                        z_hi = np.uint64((hi + _LANES - 1) // _LANES * _LANES)
                        for i in range(z_hi - z_lo):
                            delta[z_lo + i] = 0.0
                        if kind == 2 or kind == 4:
                            j_lo = 0
                            j_hi = x + 1
                        else:
                            j_lo = x
                            j_hi = n_dist
                        # no test per column (columns without stars have no vectors, equal rows
                        # add zeros): a mispredicted branch costs more than the few vectors
                        if kind <= 3:
                            q_new = 1 + dy
                            for j in range(j_lo, j_hi):
                                add_row_difference(delta, cm[j, 3], data, rc[j, q_new], rc[j, 1],
                                                   cm[j, 5])
                        else:
                            # the new rows are far from the current ones and rarely cached:
                            # ask for all of them (as data used once) before reading any; the
                            # first line of each row only (a second request per row costs
                            # more in queued misses than it saves)
                            for j in range(j_lo, j_hi):
                                q = (cm[j, 0]
                                     + min(max(yc[j] + dy - cm[j, 1], 0), cm[j, 2]) * cm[j, 4])
                                new_row[j] = q
                                prefetch_once(data, q)
                            for j in range(j_lo, j_hi):
                                add_row_difference(delta, cm[j, 3], data, new_row[j], rc[j, 1],
                                                   cm[j, 5])
                    # ---- bounds: z / (1 + z) <= log(1 + z) <= z, z = delta / (L + eps) ----
                    upper = 0.0
                    for i in range(un):
                        k = ulo + i
                        upper += delta[k] * winvc[k]
                    if upper <= thr:
                        n_bound_rejected += 1
                        continue
                    lower = 0.0
                    for i in range(un):
                        k = ulo + i
                        lower += wts[k] * delta[k] / (Lc[k] + delta[k] + eps[k])
                    if lower > thr:
                        n_bound_accepted += 1
                    else:
                        dlogL = 0.0
                        for i in range(un):
                            k = ulo + i
                            if delta[k] != 0.0 and wts[k] > 0.0:
                                dlogL += wts[k] * math.log1p(delta[k] / (Lc[k] + eps[k]))
                        if dlogL <= thr:
                            continue
                    # ---- accept: update the line integrals incrementally ----
                    for i in range(un):
                        k = ulo + i
                        Lc[k] += delta[k]
                        winvc[k] = wts[k] / (Lc[k] + eps[k])
                n_acc[kind] += 1
                if kind <= 1:
                    yc[x] = y_new
                    _set_rows(rc, cm, x, y_new)
                else:
                    if kind == 2 or kind == 4:
                        j_lo = 0
                        j_hi = x + 1
                    else:
                        j_lo = x
                        j_hi = n_dist
                    if kind >= 4:
                        for j in range(j_lo, j_hi):
                            yc[j] += dy
                            _set_rows(rc, cm, j, yc[j])
                    else:
                        _step_rows(rc, cm, yc, j_lo, j_hi, dy)
                logPr[c] += dlp
        # ---- one temperature swap per round (likelihoods of the drawn pair) ----
        for c in range(n_T):
            if resync:
                Lx = _line_integrals(data, off, row_lo, nrows, a, b, lane_lo, stride, y[c], n_star)
                for k in range(n_star):
                    L[c, k] = Lx[k]
                    winv[c, k] = wts[k] / (Lx[k] + eps[k])
            logL[c] = _sum_logs(L[c], wts, eps, star_scale)
            logPr[c] = _log_prior(y[c], logp_dy)
        if n_T > 1:
            state, t = _randint(state, n_T - 1)
            swap_tried += 1
            c0 = temp_slot[t]
            c1 = temp_slot[t + 1]
            lr = (betas[t] - betas[t + 1]) * (logL[c1] - logL[c0])
            state, u = _uniform(state)
            if lr >= 0.0 or math.log(u) < lr:
                temp_slot[t] = c1
                temp_slot[t + 1] = c0
                swap_acc += 1
        c = temp_slot[0]
        for x in range(n_dist):
            y_trace[rnd, x] = y[c, x]
        logL_trace[rnd] = logL[c]
        logPr_trace[rnd] = logPr[c]

    y_out = np.empty_like(y)
    L_out = np.empty_like(L)
    logL_out = np.empty(n_T)
    logPr_out = np.empty(n_T)
    for t in range(n_T):
        c = temp_slot[t]
        y_out[t] = y[c]
        for k in range(n_star):
            L_out[t, k] = L[c, k] * star_scale[k]
        logL_out[t] = logL[c]
        logPr_out[t] = logPr[c]
    stats = np.zeros(22, np.int64)
    stats[0:6] = n_prop
    stats[6:12] = n_valid
    stats[12:18] = n_acc
    stats[18] = n_bound_rejected
    stats[19] = swap_tried
    stats[20] = swap_acc
    stats[21] = n_bound_accepted
    return y_trace, logL_trace, logPr_trace, y_out, L_out, logL_out, logPr_out, stats


# --------------------------------------------------------------------------- public layer
@dataclass
class ChainResult:
    """Output of :func:`sample_pixel` for one pixel.

    Attributes
    ----------
    samples : numpy.ndarray, shape (n_samples, n_dist), float32
        Cumulative E(B-V) (mag) at each distance edge, from the coldest chain after burn-in.
    converged : bool
        Whether the autocorrelation test passed on the attempt reported.
    tau : numpy.ndarray, shape (3,)
        Integrated autocorrelation times (rounds) of the log prior, the log likelihood and
        the first principal component of the profile.
    attempts : int
        Chains run (1 when the first converged).
    setting : tuple of int
        (sweeps_per_round, n_rounds) of the attempt reported.
    n_proposals : int
        Proposals made in all attempts (all temperatures).
    stats : dict
        Counters of the last attempt: proposals, valid, accepted per move type, bound
        rejections, temperature swaps tried and accepted.
    logL_trace, logPr_trace : numpy.ndarray, shape (n_rounds,)
        Coldest chain, once per round (last attempt).
    y_final : numpy.ndarray, shape (n_temperatures, n_dist)
        Final state of each temperature (quanta).
    L_final : numpy.ndarray, shape (n_temperatures, n_star)
        Final incremental line integrals of each temperature.
    logL_final, logPr_final : numpy.ndarray, shape (n_temperatures,)
        Final incremental log likelihood and log prior of each temperature.
    """

    samples: np.ndarray
    converged: bool
    tau: np.ndarray
    attempts: int
    setting: tuple
    n_proposals: int
    stats: dict
    logL_trace: np.ndarray
    logPr_trace: np.ndarray
    y_final: np.ndarray
    L_final: np.ndarray
    logL_final: np.ndarray
    logPr_final: np.ndarray


def line_integrals(packed: PackedPixel, y) -> np.ndarray:
    """Line integral of each packed star's (stored) image along the profile ``y`` (quanta)."""
    y = np.ascontiguousarray(y, dtype=np.int64)
    if y.shape != (packed.n_dist,):
        raise ValueError(f"y must have shape ({packed.n_dist},)")
    scaled = _line_integrals(packed.data, packed.off, packed.row_lo, packed.nrows, packed.a,
                             packed.b, packed.lane_lo, packed.stride, y, packed.n_star)
    return scaled * packed.star_scale


def log_prior_of_profile(y, logp_dy) -> float:
    """Log prior of a profile ``y`` (quanta) under the jump table ``logp_dy``."""
    return float(_log_prior(np.ascontiguousarray(y, dtype=np.int64),
                            np.ascontiguousarray(logp_dy, dtype=np.float64)))


def integrated_autocorr_time(x, c: float = 5.0) -> float:
    """Integrated autocorrelation time of a 1D series (Sokal's automatic window).

    Returns ``inf`` for fewer than 4 values and 1 for a constant series (a chain stuck in
    one state on this statistic carries no sign of poor mixing in it).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n < 4:
        return float("inf")
    x = x - x.mean()
    var = float(np.dot(x, x))
    if var == 0.0:
        return 1.0
    m = 1 << int(math.ceil(math.log2(2 * n)))
    f = np.fft.rfft(x, m)
    acf = np.fft.irfft(f * np.conj(f), m)[:n].real / var
    taus = 2.0 * np.cumsum(acf) - 1.0
    win = np.arange(n) < c * taus
    window = int(np.argmin(win)) if not win.all() else n - 1
    return float(taus[window])


@numba.njit(cache=True, nogil=True)
def _first_pc_projection(yk):
    """Projection of each row of ``yk`` on its first principal component.

    Covariance and power iteration in numba (no BLAS threads: per-pixel calls from many
    workers must not oversubscribe the cores).
    """
    n, m = yk.shape
    mean = np.zeros(m)
    for t in range(n):
        for j in range(m):
            mean[j] += yk[t, j]
    mean /= n
    cov = np.zeros((m, m))
    yc = np.empty(m)
    for t in range(n):
        for j in range(m):
            yc[j] = yk[t, j] - mean[j]
        for i in range(m):
            if yc[i] != 0.0:
                for j in range(m):
                    cov[i, j] += yc[i] * yc[j]
    v = np.ones(m) / math.sqrt(m)
    for _ in range(500):
        w = np.zeros(m)
        for i in range(m):
            s = 0.0
            for j in range(m):
                s += cov[i, j] * v[j]
            w[i] = s
        norm = math.sqrt(np.sum(w * w))
        if norm == 0.0:
            break
        w /= norm
        diff = np.sum(np.abs(w - v))
        v = w
        if diff < 1e-10:
            break
    out = np.zeros(n)
    for t in range(n):
        s = 0.0
        for j in range(m):
            s += (yk[t, j] - mean[j]) * v[j]
        out[t] = s
    return out


def _convergence(y_trace, logL_trace, logPr_trace, n_burn, tau_fraction):
    yk = y_trace[n_burn:].astype(np.float64)
    n = yk.shape[0]
    if n < 4:
        return False, np.full(3, np.inf)
    pc1 = _first_pc_projection(np.ascontiguousarray(yk))
    tau = np.array([integrated_autocorr_time(logPr_trace[n_burn:]),
                    integrated_autocorr_time(logL_trace[n_burn:]),
                    integrated_autocorr_time(pc1)])
    return bool(np.all(tau <= tau_fraction * n)), tau


def initial_profiles(packed: PackedPixel, n_temperatures: int, rng: np.random.Generator,
                     n_dist: int | None = None) -> np.ndarray:
    """Random starting profiles (quanta), one per temperature (§4.2.3).

    Jumps are chi-square (1 dof) draws, scaled so that the far value equals the 90th
    percentile of the stars' median reddenings times a factor uniform in [0.8, 1.2].
    """
    n_dist = packed.n_dist if n_dist is None else n_dist
    e90 = float(np.percentile(packed.ebv_median, 90)) if packed.n_star else 0.0
    out = np.zeros((n_temperatures, n_dist), np.int64)
    for t in range(n_temperatures):
        target = e90 * (0.8 + 0.4 * rng.random())
        cum = np.cumsum(rng.chisquare(1.0, n_dist))
        yv = np.ceil(cum * (target / 0.01) / cum[-1]).astype(np.int64)
        out[t] = np.minimum(yv, packed.n_E - 1)
    return out


def _attempt_seed(seed: int, attempt: int, stream: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, attempt, stream])


def run_chain(packed: PackedPixel, logp_dy, settings: SamplerSettings, seed: int,
              attempt: int = 0) -> tuple:
    """Run one parallel-tempered chain (no convergence test); returns the kernel outputs."""
    logp_dy = np.ascontiguousarray(logp_dy, dtype=np.float64)
    if logp_dy.shape != (packed.n_dist, packed.n_E):
        raise ValueError(f"logp_dy must have shape ({packed.n_dist}, {packed.n_E})")
    if packed.n_dist < 3:
        raise ValueError("at least 3 distance bins are needed")
    rng = np.random.default_rng(_attempt_seed(seed, attempt, 1))
    y0 = initial_profiles(packed, settings.n_temperatures, rng)
    betas = settings.beta_ratio ** np.arange(settings.n_temperatures, dtype=np.float64)
    kseed = int(_attempt_seed(seed, attempt, 2).generate_state(1, np.uint64)[0])
    eps = settings.p_badstar / packed.n_E
    return _pt_chain_kernel(packed.data, packed.off, packed.row_lo, packed.nrows, packed.a,
                            packed.b, packed.lane_lo, packed.stride, packed.n_star, packed.n_E,
                            packed.star_scale, packed.weights, logp_dy, betas, y0,
                            settings.n_rounds, settings.sweeps_per_round * packed.n_dist, eps,
                            packed.n_E / 20.0, np.uint64(kseed), settings.resync)


def sample_pixel(packed: PackedPixel, logp_dy, settings: SamplerSettings | None = None, *,
                 seed: int = 0, retry: bool = True, retry_settings=RETRY_SETTINGS,
                 attempts_per_setting: int = 3, tau_fraction: float = 0.05) -> ChainResult:
    """Sample the reddening profile of one pixel, with the paper's escalating retries.

    Parameters
    ----------
    packed : PackedPixel
        The pixel's star images (:func:`pack_pixel`).
    logp_dy : numpy.ndarray, shape (n_dist, n_E)
        Jump prior table (:func:`.prior.log_jump_prior_table`).
    settings : SamplerSettings, optional
        Temperatures, burn-in, samples; with ``retry`` its ``sweeps_per_round`` and
        ``n_rounds`` are replaced by those of ``retry_settings``.
    seed : int
        Seed of this pixel (attempt ``i`` uses a stream derived from (seed, i)).
    retry : bool
        Re-run non-converged pixels up to ``attempts_per_setting`` times under each of
        ``retry_settings`` (the paper: 3 times under each of 4 settings).
    tau_fraction : float
        Converged when every autocorrelation time is at most this fraction of the kept rounds.

    Returns
    -------
    ChainResult
    """
    settings = settings or SamplerSettings()
    plan = ([(s, r) for s, r in retry_settings for _ in range(attempts_per_setting)] if retry
            else [(settings.sweeps_per_round, settings.n_rounds)])
    n_total = 0
    for attempt, (sweeps, rounds) in enumerate(plan):
        st = SamplerSettings(n_rounds=rounds, sweeps_per_round=sweeps,
                             n_temperatures=settings.n_temperatures,
                             beta_ratio=settings.beta_ratio,
                             burnin_fraction=settings.burnin_fraction,
                             n_samples=settings.n_samples, p_badstar=settings.p_badstar,
                             resync=settings.resync)
        out = run_chain(packed, logp_dy, st, seed, attempt)
        y_trace, logL_tr, logPr_tr, y_fin, L_fin, logL_fin, logPr_fin, stats = out
        n_total += int(stats[:6].sum())
        n_burn = int(st.burnin_fraction * rounds)
        converged, tau = _convergence(y_trace, logL_tr, logPr_tr, n_burn, tau_fraction)
        if converged or attempt == len(plan) - 1:
            break
    n_post = rounds - n_burn
    pick = n_burn + np.round(np.linspace(0, n_post - 1, st.n_samples)).astype(np.int64)
    samples = (y_trace[pick].astype(np.float32) * np.float32(0.01))
    stat = {"proposed": dict(zip(PROPOSAL_NAMES, stats[0:6].tolist())),
            "valid": dict(zip(PROPOSAL_NAMES, stats[6:12].tolist())),
            "accepted": dict(zip(PROPOSAL_NAMES, stats[12:18].tolist())),
            "bound_rejected": int(stats[18]), "bound_accepted": int(stats[21]),
            "swaps_tried": int(stats[19]),
            "swaps_accepted": int(stats[20])}
    return ChainResult(samples, converged, tau, attempt + 1, (sweeps, rounds), n_total, stat,
                       logL_tr, logPr_tr, y_fin, L_fin, logL_fin, logPr_fin)
