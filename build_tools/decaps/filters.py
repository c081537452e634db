"""Per-star posterior smoothing (§4.1.2) and quality cuts (§4.2.1).

* :func:`smooth_posteriors` -- Gaussian smoothing of each binned posterior with a standard
  deviation of 1% of the grid's range on each axis (0.15 mag = 1.2 cells in distance modulus,
  0.07 mag = 7 cells in reddening), truncated at 4 sigma and reflected at the grid's edges
  (no bias at E = 0), narrowed in distance for stars with good parallaxes as brutus does;
  each star's bounding box grows to hold the smoothed image (clipped to the grid), keeps
  the star's total probability, and is shrunk again to the cells above ``threshold`` times
  its peak.
* :func:`quality_mask` -- the cuts: chi-square survival ``P(chi2_{n_bands} > chi2_best) <
  0.01``, median initial mass < 0.5 Msun (M dwarfs), 2.5th-percentile distance > 30 kpc,
  and the unphysical nearby high-reddening mode: stars with more than half of their
  probability at ``mu <= 10.4375`` and above the supplied maximum reddening curve. A cut
  whose inputs a star lacks (NaN metadata, no curve) is not applied to it, with a logged
  warning.
* :func:`remove_unphysical` -- zero that unphysical part of the surviving stars and
  renormalise every posterior to unit sum.
* :func:`max_reddening_curve` -- the maximum reddening at each distance edge from a supplied
  maximum-density curve (the paper took the maximum over the sky and the samples of the
  Edenhofer et al. 2023 map), integrated from the Sun.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np
from scipy.stats import chi2 as _chi2

from .inputs import DM_MIN, DM_STEP, E_STEP, N_DM, N_E, StarPosteriors

log = logging.getLogger(__name__)

__all__ = ["smooth_posteriors", "distance_smoothing_mag", "quality_mask", "remove_unphysical", "max_reddening_curve",
           "filter_stars", "DM_LIMIT_UNPHYSICAL"]

#: Limit of the Edenhofer et al. (2023) map in distance modulus (1.25 kpc).
DM_LIMIT_UNPHYSICAL = 10.4375


def max_reddening_curve(d_kpc, rho_max, dm_edges=None,
                        dm_limit: float = DM_LIMIT_UNPHYSICAL) -> np.ndarray:
    """Maximum cumulative reddening (mag) at each distance edge from a max-density curve.

    Parameters
    ----------
    d_kpc, rho_max : array_like, shape (m,)
        Distances (kpc, increasing, from 0) and the maximum density there (E(B-V) mag/kpc).
    dm_edges : array_like, optional
        Distance-modulus edges (default the 120-bin grid).
    dm_limit : float
        Beyond this distance modulus the curve is ``inf`` (no cut).

    Returns
    -------
    numpy.ndarray, shape (n_dist,)
    """
    d = np.asarray(d_kpc, np.float64)
    rho = np.asarray(rho_max, np.float64)
    if d.shape != rho.shape or d.ndim != 1 or d.size < 2 or np.any(np.diff(d) <= 0):
        raise ValueError("d_kpc must be increasing and match rho_max")
    if np.any(rho < 0) or not np.all(np.isfinite(rho)):
        raise ValueError("rho_max must be finite and non-negative")
    edges = DM_MIN + DM_STEP * np.arange(N_DM) if dm_edges is None else np.asarray(dm_edges)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (rho[1:] + rho[:-1]) * np.diff(d))])
    d_edges = 10.0 ** (edges / 5.0 - 2.0)
    out = np.interp(d_edges, d, cum, left=0.0, right=cum[-1])
    out[edges > dm_limit] = np.inf
    return out


@numba.njit(cache=True, nogil=True)
def _reflect(i, n):
    """Index ``i`` reflected into ``[0, n)`` about the grid's outer cell edges."""
    if i < 0:
        return -i - 1
    if i >= n:
        return 2 * n - i - 1
    return i


@numba.njit(cache=True, nogil=True)
def _kernel_1d(sigma_cells, truncate):
    if sigma_cells < 1e-3:
        return np.ones(1)
    r = int(math.ceil(truncate * sigma_cells))
    k = np.empty(2 * r + 1)
    for t in range(-r, r + 1):
        k[t + r] = math.exp(-0.5 * (t / sigma_cells) ** 2)
    return k / k.sum()


@numba.njit(cache=True, nogil=True)
def _smooth_kernel(x0, nx, y0, ny, off, data, sx, sy, truncate, threshold):
    """Smooth each box with Gaussians of ``sx[k]`` x ``sy`` cells, reflecting at the grid's
    edges (probability that would leave the grid is folded back at the edge it crosses)."""
    n = x0.size
    nx2 = np.empty(n, np.int32)
    ny2 = np.empty(n, np.int32)
    x02 = np.empty(n, np.int32)
    y02 = np.empty(n, np.int32)
    ky = _kernel_1d(sy, truncate)
    ry = ky.size // 2
    boxes = []
    for k in range(n):
        kx = _kernel_1d(sx[k], truncate)
        rx = kx.size // 2
        ax = max(0, x0[k] - rx)
        bx = min(N_DM, x0[k] + nx[k] + rx)
        ay = max(0, y0[k] - ry)
        by = min(N_E, y0[k] + ny[k] + ry)
        src = data[off[k]:off[k] + nx[k] * ny[k]].reshape((nx[k], ny[k]))
        tmp = np.zeros((bx - ax, ny[k]))
        for i in range(nx[k]):
            xi = x0[k] + i
            for t in range(-rx, rx + 1):
                xo = _reflect(xi + t, N_DM) - ax
                wgt = kx[t + rx]
                for j in range(ny[k]):
                    tmp[xo, j] += wgt * src[i, j]
        out = np.zeros((bx - ax, by - ay))
        for i in range(bx - ax):
            for j in range(ny[k]):
                v = tmp[i, j]
                if v == 0.0:
                    continue
                yj = y0[k] + j
                for t in range(-ry, ry + 1):
                    out[i, _reflect(yj + t, N_E) - ay] += ky[t + ry] * v
        peak = out.max()
        # shrink to the cells above threshold * peak
        il, ih, jl, jh = bx - ax, -1, by - ay, -1
        for i in range(bx - ax):
            for j in range(by - ay):
                if out[i, j] > threshold * peak:
                    il = min(il, i)
                    ih = max(ih, i)
                    jl = min(jl, j)
                    jh = max(jh, j)
        if ih < 0:
            il, ih, jl, jh = 0, 0, 0, 0
        box = np.zeros((ih - il + 1, jh - jl + 1), np.float32)
        for i in range(il, ih + 1):
            for j in range(jl, jh + 1):
                v = out[i, j]
                box[i - il, j - jl] = v if v > threshold * peak else 0.0
        x02[k] = ax + il
        nx2[k] = ih - il + 1
        y02[k] = ay + jl
        ny2[k] = jh - jl + 1
        boxes.append(box.ravel())
    sizes = nx2.astype(np.int64) * ny2
    off2 = np.zeros(n, np.int64)
    total = 0
    for k in range(n):
        off2[k] = total
        total += sizes[k]
    data2 = np.empty(total, np.float32)
    for k in range(n):
        b = boxes[k]
        for q in range(b.size):
            data2[off2[k] + q] = b[q]
    return x02, nx2, y02, ny2, off2, data2


def distance_smoothing_mag(stars: StarPosteriors, fraction: float = 0.01) -> np.ndarray:
    """Standard deviation (mag) of each star's distance-modulus smoothing kernel.

    ``fraction`` of the grid's range (0.15 mag), narrowed for a star with a parallax to
    half the spread in distance modulus of its parallax +- 1 sigma,
    ``2.5 log10((p + s) / max(p - s, 1e-10))``, when that is smaller (the rule of brutus'
    ``bin_pdfs_distred``). Stars without a finite parallax and error get the default.
    """
    base = fraction * N_DM * DM_STEP
    p = np.asarray(stars.parallax_mas, np.float64)
    e = np.asarray(stars.parallax_err_mas, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = 2.5 * np.log10((p + e) / np.maximum(p - e, 1e-10))
    ok = np.isfinite(spread) & (e > 0)
    return np.where(ok, np.minimum(np.abs(spread), base), base)


def smooth_posteriors(stars: StarPosteriors, fraction: float = 0.01,
                      threshold: float = 1e-4, truncate: float = 4.0) -> StarPosteriors:
    """Smooth each star's posterior with a Gaussian of sigma = ``fraction`` of each axis range.

    The distance-modulus width is narrowed for stars with a good parallax
    (:func:`distance_smoothing_mag`). At the grid's edges the kernel is reflected: the
    probability that would leave the grid is folded back at the edge it crosses, as
    scipy's ``gaussian_filter`` (which brutus uses) does by default, so that a posterior
    that is flat up to E = 0 stays flat there. Clipping the kernel at the edge and
    renormalising instead lowers the density next to E = 0 and biases the map high in
    front of clouds.

    Parameters
    ----------
    stars : StarPosteriors
    fraction : float
        Sigma as a fraction of the axis range (0.01 in the paper: 0.15 mag in mu, 0.07 mag
        in E).
    threshold : float
        Cells below this fraction of a star's smoothed peak are dropped from its box.
    truncate : float
        Kernel half-width in sigmas.

    Returns
    -------
    StarPosteriors
        A new object; each star keeps its total probability.
    """
    if fraction <= 0:
        return stars
    sx = distance_smoothing_mag(stars, fraction) / DM_STEP
    sy = fraction * (N_E * E_STEP) / E_STEP
    x0, nx, y0, ny, off, data = _smooth_kernel(
        stars.x0.astype(np.int64), stars.nx.astype(np.int64), stars.y0.astype(np.int64),
        stars.ny.astype(np.int64), stars.offsets, stars.data, sx, float(sy), float(truncate),
        float(threshold))
    return stars.replace_boxes(x0, nx, y0, ny, off, data)


@numba.njit(cache=True, nogil=True)
def _unphysical_fraction(x0, nx, y0, ny, off, data, emax_rows):
    n = x0.size
    frac = np.zeros(n)
    for k in range(n):
        tot = 0.0
        bad = 0.0
        p = off[k]
        for i in range(nx[k]):
            lim = emax_rows[x0[k] + i]
            for j in range(ny[k]):
                v = data[p]
                tot += v
                if y0[k] + j > lim:
                    bad += v
                p += 1
        frac[k] = bad / tot if tot > 0 else 1.0
    return frac


@numba.njit(cache=True, nogil=True)
def _zero_and_renormalise(x0, nx, y0, ny, off, data, emax_rows):
    for k in range(x0.size):
        p = off[k]
        tot = 0.0
        for i in range(nx[k]):
            lim = emax_rows[x0[k] + i]
            for j in range(ny[k]):
                if y0[k] + j > lim:
                    data[p] = 0.0
                tot += data[p]
                p += 1
        if tot > 0:
            p = off[k]
            for q in range(nx[k] * ny[k]):
                data[p + q] = data[p + q] / tot


def _emax_rows(max_ebv) -> np.ndarray:
    if max_ebv is None:
        return np.full(N_DM, N_E + 1, np.int64)
    m = np.asarray(max_ebv, np.float64)
    if m.shape != (N_DM,):
        raise ValueError(f"max_ebv must have shape ({N_DM},)")
    if np.any(np.isnan(m)):
        raise ValueError("max_ebv must not contain NaN (use inf for no limit)")
    rows = np.where(np.isfinite(m), np.floor(m / E_STEP + 0.5), N_E + 1)
    return rows.astype(np.int64)


def quality_mask(stars: StarPosteriors, max_ebv=None, *, p_chi2: float = 0.01,
                 m_init_min: float = 0.5, d_p2_5_max_kpc: float = 30.0,
                 max_unphysical: float = 0.5) -> dict:
    """Boolean masks of the stars that pass each §4.2.1 cut.

    Parameters
    ----------
    stars : StarPosteriors
    max_ebv : array_like, shape (120,), optional
        Maximum physical reddening at each distance edge (:func:`max_reddening_curve`);
        ``inf`` where there is no limit. ``None`` skips that cut.
    p_chi2, m_init_min, d_p2_5_max_kpc, max_unphysical : float
        Thresholds (the paper's values by default).

    Returns
    -------
    dict of numpy.ndarray of bool
        ``chi2``, ``m_dwarf``, ``distance``, ``unphysical`` (True = kept) and ``keep``.
        A star whose metadata for a cut is NaN (``n_bands`` 0 for the chi-square cut)
        passes that cut; each such cut logs a warning with the number of stars.
    """
    chi2b = np.asarray(stars.chi2_best, np.float64)
    nb = np.asarray(stars.n_bands, np.float64)
    with np.errstate(invalid="ignore"):
        p = _chi2.sf(chi2b, nb)
    known = {"chi2": np.isfinite(chi2b) & (nb > 0),
             "m_dwarf": np.isfinite(np.asarray(stars.m_init_median, np.float64)),
             "distance": np.isfinite(np.asarray(stars.dist_p2_5_kpc, np.float64))}
    with np.errstate(invalid="ignore"):
        ok_chi2 = ~known["chi2"] | (np.isfinite(p) & (p >= p_chi2))
        ok_mass = ~known["m_dwarf"] | (np.asarray(stars.m_init_median) >= m_init_min)
        ok_dist = ~known["distance"] | (np.asarray(stars.dist_p2_5_kpc) <= d_p2_5_max_kpc)
    for name, k in known.items():
        lacking = int(np.count_nonzero(~k))
        if lacking:
            log.warning("quality cut %r skipped for %d of %d stars that lack its inputs",
                        name, lacking, k.size)
    if max_ebv is None and stars.n_star:
        log.warning("unphysical nearby high-reddening cut skipped: no maximum-density curve "
                    "given (max_ebv / --max-density)")
    frac = _unphysical_fraction(stars.x0.astype(np.int64), stars.nx.astype(np.int64),
                                stars.y0.astype(np.int64), stars.ny.astype(np.int64),
                                stars.offsets, stars.data, _emax_rows(max_ebv))
    ok_phys = frac <= max_unphysical
    return {"chi2": ok_chi2, "m_dwarf": ok_mass, "distance": ok_dist, "unphysical": ok_phys,
            "keep": ok_chi2 & ok_mass & ok_dist & ok_phys}


def remove_unphysical(stars: StarPosteriors, max_ebv=None) -> StarPosteriors:
    """Zero each star's probability above ``max_ebv`` and renormalise to unit sum (in place)."""
    _zero_and_renormalise(stars.x0.astype(np.int64), stars.nx.astype(np.int64),
                          stars.y0.astype(np.int64), stars.ny.astype(np.int64), stars.offsets,
                          stars.data, _emax_rows(max_ebv))
    return stars


def filter_stars(stars: StarPosteriors, max_ebv=None, *, smooth: bool = True,
                 **cuts) -> tuple[StarPosteriors, dict]:
    """Smooth, cut and renormalise: the full §4.1.2 + §4.2.1 treatment.

    Returns the surviving stars and the masks of :func:`quality_mask` (on the input stars).
    """
    if smooth:
        stars = smooth_posteriors(stars)
    masks = quality_mask(stars, max_ebv, **cuts)
    kept = stars.subset(masks["keep"])
    return remove_unphysical(kept, max_ebv), masks
