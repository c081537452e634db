"""Cloud rises located under the stars' distance errors (not in Wang et al. 2025).

The fit of :mod:`.fit` compares each star's E(B-V) with the model at the star's measured
distance. Where the distance errors are a sizeable fraction of a cloud's distance (Gaia
parallaxes at 2-4 kpc), stars in front of a cloud are measured behind it and stars behind
it in front. Far more stars lie in front of a cloud than behind it (the cloud dims those
behind it), so among the stars measured just behind the cloud most are truly in front:
the best sharp step of the L1 fit then sits too far out and its column comes out too low.
The paper puts the width of its fitted rises down mainly to the distance errors, not to
the clouds' sizes (§4.1).

This module places each rise, and sizes its column, under a mixture likelihood in which
every star may lie on either side of the rise:

* a star's true distance ``d`` has the posterior ``p(d | x_i) ~ N(1/x_i | 1/d, s_i)
  n(d)``: the Gaussian parallax error ``s_i = err_i / x_i^2`` of its measured distance
  ``x_i`` (kpc) times the distance distribution of the sightline's stars, ``n(d)``, taken
  to be the histogram of their measured distances (the stars show where stars are);
* given the side(s) of the rises a star lies on, its residual from the smooth part of the
  model (bubble and diffuse dust) is Laplace-distributed about the columns of the rises
  in front of it, with a small uniform outlier floor;
* the log-likelihood of the sightline is the weighted sum over the stars, with the
  weights rescaled to sum to Kish's effective number of stars.

Each rise is moved to the bin edge of highest likelihood between its neighbours and its
column rescanned; two neighbouring rises become one where one rise explains the stars
nearly as well as two (within ``log n_eff`` of the log-likelihood: the BIC of the two
parameters one rise fewer saves). A rise stays where it is unless the likelihood rises by
more than ``min_gain`` (a flat likelihood, as inside a gap between stars, leaves the
placement of :func:`.fit.place_components` alone).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["refine_rises"]

#: Bins of the distance grid per e-folding of distance (2.5% wide).
BINS_PER_E = 40
#: Uniform outlier floor of a star's residual density, as a fraction of the Laplace peak.
OUTLIER_FLOOR = 1e-3
#: How far (factor) a rise may move from where the L1 fit put it.
MAX_MOVE = 1.5
#: The column of a rise is rescanned over these factors of its current column (0.5-2.5,
#: 31% apart), then over 7 factors 9% apart around the best of them.
COLUMN_FACTORS = np.exp(np.linspace(math.log(0.5), math.log(2.5), 7))
_FINE_STEPS = np.exp(np.linspace(-1.0, 1.0, 7) * math.log(2.5 / 0.5) / 6)


class _Sightline:
    """The stars of one sightline on a log-distance grid: ``cum[i, g]`` is the posterior
    probability that star ``i`` lies beyond grid edge ``g``."""

    def __init__(self, x, resid, weight, x_err, scale):
        self.edges = np.exp(np.arange(math.log(x.min() / MAX_MOVE),
                                      math.log(x.max() * MAX_MOVE) + 1.0 / BINS_PER_E,
                                      1.0 / BINS_PER_E))
        prior, _ = np.histogram(x, bins=self.edges)
        s_plx = np.maximum(x_err / x ** 2, 1e-9)
        self.cum = _beyond_probabilities(x, s_plx, self.edges, prior.astype(np.float64))
        self.resid = resid
        self.weight = weight * weight.sum() / (weight * weight).sum()
        self.scale = scale

    def loglike(self, idx, cols):
        """Log-likelihood of sharp rises at grid edges ``idx`` with columns ``cols``."""
        return float(self.scan_position(idx, cols, 0, idx[:1])[0])

    def scan_position(self, idx, cols, k, cand):
        """Log-likelihood with rise ``k`` at each grid edge of ``cand`` (between its
        neighbours), the others fixed."""
        return _position_scan(self.cum, self.resid, self.weight, self.scale, idx, cols, k,
                              cand)

    def scan_column(self, idx, cols, k, factors):
        """Log-likelihood with the column of rise ``k`` times each of ``factors``."""
        return _column_scan(self.cum, self.resid, self.weight, self.scale, idx, cols, k,
                            factors)


@numba.njit(cache=True, nogil=True)
def _star_terms(cum_i, resid_i, scale, idx, level, share, dens):
    """Star ``i``: probability of each interval between the rises (``share``) and the
    residual density on each (``dens``)."""
    n_rises = idx.size
    for j in range(n_rises + 1):
        upper = 1.0 if j == 0 else cum_i[idx[j - 1]]
        lower = 0.0 if j == n_rises else cum_i[idx[j]]
        share[j] = max(upper - lower, 0.0)
        dens[j] = math.exp(-abs(resid_i - level[j]) / scale)


@numba.njit(cache=True, nogil=True)
def _workspace(cols):
    """The E(B-V) level behind each rise (0 in front of all) and scratch arrays for one
    star's :func:`_star_terms`."""
    level = np.zeros(cols.size + 1)
    for j in range(cols.size):
        level[j + 1] = level[j] + cols[j]
    return level, np.empty(cols.size + 1), np.empty(cols.size + 1)


@numba.njit(cache=True, nogil=True)
def _position_scan(cum, resid, weight, scale, idx, cols, k, cand):
    """Log-likelihood with rise ``k`` at each edge of ``cand``: a star's density is
    linear in the probability that it lies beyond rise ``k``."""
    n_rises = idx.size
    level, share, dens = _workspace(cols)
    out = np.zeros(cand.size)
    for i in range(resid.size):
        _star_terms(cum[i], resid[i], scale, idx, level, share, dens)
        rest = OUTLIER_FLOOR
        for j in range(n_rises + 1):
            if j != k and j != k + 1:
                rest += share[j] * dens[j]
        upper = 1.0 if k == 0 else cum[i, idx[k - 1]]
        lower = 0.0 if k + 1 == n_rises else cum[i, idx[k + 1]]
        a = rest + upper * dens[k] - lower * dens[k + 1]
        b = dens[k + 1] - dens[k]
        first, last = cum[i, cand[0]], cum[i, cand[-1]]
        if abs(first - last) < 1e-9:   # the star's side of rise k is the same everywhere
            out += weight[i] * math.log(max(a + b * first, OUTLIER_FLOOR))
            continue
        for m in range(cand.size):
            out[m] += weight[i] * math.log(max(a + b * cum[i, cand[m]], OUTLIER_FLOOR))
    return out


@numba.njit(cache=True, nogil=True)
def _column_scan(cum, resid, weight, scale, idx, cols, k, factors):
    """Log-likelihood with the column of rise ``k`` times each of ``factors``."""
    n_rises = idx.size
    level, share, dens = _workspace(cols)
    out = np.zeros(factors.size)
    for i in range(resid.size):
        _star_terms(cum[i], resid[i], scale, idx, level, share, dens)
        front = OUTLIER_FLOOR
        behind = 0.0
        for j in range(n_rises + 1):
            if j <= k:
                front += share[j] * dens[j]
            else:
                behind += share[j]
        if behind < 1e-12:     # in front of the rise: its column does not matter
            out += weight[i] * math.log(front)
            continue
        for m in range(factors.size):
            shift = (factors[m] - 1.0) * cols[k]
            tot = front
            for j in range(k + 1, n_rises + 1):
                tot += share[j] * math.exp(-abs(resid[i] - level[j] - shift) / scale)
            out[m] += weight[i] * math.log(tot)
    return out


@numba.njit(cache=True, nogil=True)
def _beyond_probabilities(x, s_plx, edges, prior):
    """``cum[i, g]``: posterior probability that star ``i`` lies beyond ``edges[g]``
    (Gaussian parallax error times the prior ``prior`` per bin, bins within 7 sigma)."""
    n, n_edges = x.size, edges.size
    cum = np.zeros((n, n_edges))
    mid = np.sqrt(edges[1:] * edges[:-1])
    for i in range(n):
        plx = 1.0 / x[i]
        d_lo = 1.0 / (plx + 7.0 * s_plx[i])
        d_hi = 1.0 / (plx - 7.0 * s_plx[i]) if plx > 7.0 * s_plx[i] else np.inf
        lo = np.searchsorted(mid, d_lo)
        hi = np.searchsorted(mid, d_hi)            # bins lo .. hi - 1
        home = min(max(np.searchsorted(edges, x[i]) - 1, 0), mid.size - 1)
        post = np.zeros(max(hi - lo, 0))
        total = 0.0
        for g in range(lo, hi):
            z = (plx - 1.0 / mid[g]) / s_plx[i]
            post[g - lo] = math.exp(-0.5 * z * z) * prior[g]
            total += post[g - lo]
        if total <= 0.0:       # no star within the errors: the measured distance stands
            lo, hi = home, home + 1
            post = np.ones(1)
            total = 1.0
        for g in range(lo + 1):
            cum[i, g] = 1.0
        run = 0.0
        for g in range(hi - 1, lo, -1):
            run += post[g - lo] / total
            cum[i, g] = run
    return cum


def refine_rises(x, resid, weight, x_err, centres, columns, scale, *, min_gain=1.0,
                 max_rounds=3):
    """Rises (centres, columns) placed and sized under the stars' distance errors.

    Parameters
    ----------
    x, resid, weight, x_err : numpy.ndarray, shape (n,)
        Measured distances (kpc), residuals of E(B-V) from the model without its clouds
        (mag), fit weights (positive) and distance errors (kpc) of the sightline's stars.
    centres, columns : numpy.ndarray, shape (K,)
        The rises of the fit (kpc, mag), sorted by centre.
    scale : float
        Laplace scale of a star's residual about the model (mag).
    min_gain : float
        A rise moves, changes its column or merges with its neighbour only when the
        log-likelihood rises by more than this.
    max_rounds : int
        Passes over the rises at most.

    Returns
    -------
    centres, columns : numpy.ndarray
        The refined rises, sorted by centre (fewer than ``K`` when rises merged).
    groups : list of tuple of int
        For each refined rise, the input rises it replaces (one, or the neighbours merged
        into it).

    Raises
    ------
    ValueError
        Arrays of different lengths, non-finite values, non-positive distances or weights,
        negative distance errors, or centres not sorted.
    """
    x, resid, weight, x_err = (np.ascontiguousarray(a, dtype=np.float64)
                               for a in (x, resid, weight, x_err))
    centres = np.asarray(centres, dtype=np.float64).copy()
    columns = np.asarray(columns, dtype=np.float64).copy()
    if not (x.ndim == 1 and resid.shape == weight.shape == x_err.shape == x.shape):
        raise ValueError("x, resid, weight and x_err must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(x)) and np.all(x > 0) and np.all(np.isfinite(resid))
            and np.all(weight > 0) and np.all(np.isfinite(x_err)) and np.all(x_err >= 0)):
        raise ValueError("x and weight must be positive, x_err non-negative, all finite")
    if centres.shape != columns.shape or centres.ndim != 1 or np.any(np.diff(centres) < 0):
        raise ValueError("centres and columns must be 1-D of the same length, centres sorted")
    if centres.size == 0 or x.size < 2:
        return centres, columns, [(k,) for k in range(centres.size)]
    s = _Sightline(x, resid, weight, x_err, max(float(scale), 1e-3))
    edges = s.edges
    idx = np.clip(np.searchsorted(edges, centres), 0, edges.size - 1)
    pos = centres.copy()   # a rise that never moves keeps its centre
    cols = columns.copy()
    groups = [(k,) for k in range(centres.size)]
    best = s.loglike(idx, cols)
    penalty = math.log(max(s.weight.sum(), 2.0))
    rescan = np.ones(idx.size, bool)    # columns to rescan: all, then those that moved
    for _ in range(max_rounds):
        changed = False
        for k in range(idx.size):
            lo = idx[k - 1] + 1 if k > 0 else 0
            hi = idx[k + 1] - 1 if k + 1 < idx.size else edges.size - 1
            lo = max(lo, int(np.searchsorted(edges, pos[k] / MAX_MOVE)))
            hi = min(hi, int(np.searchsorted(edges, pos[k] * MAX_MOVE)))
            if hi >= lo:
                cand = np.arange(lo, hi + 1)
                val = s.scan_position(idx, cols, k, cand)
                j = int(np.argmax(val))
                if val[j] > best + min_gain:
                    idx[k], pos[k], best, changed = cand[j], edges[cand[j]], float(val[j]), True
                    rescan[k] = True
            if not rescan[k]:
                continue
            rescan[k] = False
            coarse = COLUMN_FACTORS[int(np.argmax(s.scan_column(idx, cols, k, COLUMN_FACTORS)))]
            factors = coarse * _FINE_STEPS
            val = s.scan_column(idx, cols, k, factors)
            j = int(np.argmax(val))
            if val[j] > best + min_gain:
                cols[k], best, changed = cols[k] * factors[j], float(val[j]), True
        # merge neighbours that one rise explains nearly as well as two
        k = 0
        while k + 1 < idx.size:
            if pos[k + 1] > pos[k] * MAX_MOVE:
                k += 1
                continue
            m_idx = np.r_[idx[:k], idx[k], idx[k + 2:]]
            m_cols = np.r_[cols[:k], cols[k] + cols[k + 1], cols[k + 2:]]
            cand = np.arange(idx[k], idx[k + 1] + 1)
            val = s.scan_position(m_idx, m_cols, k, cand)
            j = int(np.argmax(val))
            if val[j] >= best - penalty:
                m_idx[k] = cand[j]
                idx, cols = m_idx, m_cols
                pos = np.r_[pos[:k], edges[cand[j]], pos[k + 2:]]
                rescan = np.r_[rescan[:k], True, rescan[k + 2:]]
                groups[k:k + 2] = [groups[k] + groups[k + 1]]
                best, changed = float(val[j]), True
            else:
                k += 1
        if not changed:
            break
    return pos, cols, groups
