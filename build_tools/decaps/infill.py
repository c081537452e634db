"""Infilling of pixels with too few stars (Zucker et al. 2025 §4.2.4).

Pixels with fewer than 10 stars are *missing*. Everything happens on a 2D image made from the
HEALPix RING ordering: row = ring, column = position in the ring (counted from an origin
placed outside the footprint, :func:`ring_origin`). In the equatorial belt
(|b| < 41.8 deg; every ring holds ``4 nside`` pixels) a shift of this image is a simple,
nearly rigid translation on the sky, so translated copies of a patch are samples of "the same
kind of patch". Each distance slice (the cumulative reddening to one distance edge) is treated
separately; the mean map and each sample map are infilled independently.

1. Moving-median first pass: every missing cell (and every cell outside the map) gets the
   median of the known cells in the ``median_width`` (11) wide square around it, when more than
   5% of that square is known; repeated 7 times to close larger holes. This only prepares the
   training data.
2. Conditional Gaussian infill: missing pixels are visited in order of their great-circle
   distance from (l, b) = (301, 0) deg (ties by pixel index). For the first pixel still
   missing, the ``window`` (21) wide square around it is the region of interest; every
   translate of that square inside the ``train`` (51) wide square around it whose cells are all
   known after step 1 is a training sample. Their mean and covariance (plus ``ridge`` times the
   mean variance on the diagonal) give the Gaussian law of the region; the missing cells of the
   region are predicted conditionally on its known cells (original or previously infilled):
   the conditional mean for the mean map, and a conditional draw for each sample map. Every
   missing cell of the region is then known, and the loop continues with the next missing
   pixel. The standard-normal draws of a region are seeded from (seed, pixel, sample index)
   only, so they are the same in every distance slice (consistent draws along distance).
   A region without at least ``min_train`` training samples keeps its first-pass values.
"""

from __future__ import annotations

import math

import healpy as hp
import numba
import numpy as np

__all__ = ["ring_grid", "ring_origin", "moving_median_fill", "infill_maps", "tile_halo"]

#: Passes of the moving-median first fill (step 1).
MEDIAN_ITERATIONS = 7


def ring_grid(pixels, nside: int, col_origin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ring number and position within the ring of NESTED pixels in the equatorial belt.

    Parameters
    ----------
    pixels : array_like of int
        NESTED pixels.
    nside : int
    col_origin : int
        Position in the ring that becomes column 0 (positions wrap around), so that the
        image's seam (column ``4 nside - 1`` next to column 0) can be put outside the
        footprint; see :func:`ring_origin`.

    Returns
    -------
    row, col : numpy.ndarray of int64

    Raises
    ------
    ValueError
        Pixels outside the belt (|b| > 41.8 deg), where rings shrink.
    """
    pixels = np.asarray(pixels, np.int64)
    ring = hp.nest2ring(nside, pixels)
    ncap = 2 * nside * (nside - 1)
    npix_belt = 4 * nside * (2 * nside + 1)
    if np.any(ring < ncap) or np.any(ring >= ncap + npix_belt):
        raise ValueError("infill works in the HEALPix equatorial belt only (|b| < 41.8 deg)")
    rel = ring - ncap
    return rel // (4 * nside), (rel - int(col_origin)) % (4 * nside)


def ring_origin(l_range_deg, nside: int, seam_deg: float | None = None) -> int:
    """Ring position to use as column 0 for a footprint spanning ``l_range_deg``.

    The ring image is not periodic: cells on either side of its seam are far apart in it.
    Putting the seam in the middle of the longitudes the footprint leaves out keeps a
    footprint that crosses l = 0 (DECaPS: 239 to 366 deg) in one piece. Rolling every ring
    by the same number of positions is an exact symmetry of the HEALPix belt, so nothing
    else changes.

    Parameters
    ----------
    l_range_deg : (float, float)
        Longitude range of the footprint (deg), ``l_lo < l_hi``; ``l_hi`` may exceed 360.
    nside : int
    seam_deg : float, optional
        Longitude of the seam (deg), overriding the middle of the gap.

    Returns
    -------
    int
        A position in ``[0, 4 nside)``.
    """
    if seam_deg is not None:
        seam = float(seam_deg)
    else:
        l_lo, l_hi = (float(v) for v in l_range_deg)
        gap = 360.0 - (l_hi - l_lo)
        seam = l_lo if gap <= 0 else l_hi + 0.5 * gap
    return int(round((seam % 360.0) / 360.0 * 4 * nside)) % (4 * nside)


@numba.njit(cache=True, nogil=True)
def _moving_median(img, known, width, min_frac, n_iter):
    R, C, D = img.shape
    h = width // 2
    need = min_frac * width * width
    buf = np.empty(width * width)
    for _ in range(n_iter):
        new_img = img.copy()
        new_known = known.copy()
        for r in range(R):
            for c in range(C):
                if known[r, c]:
                    continue
                cnt = 0
                for rr in range(max(0, r - h), min(R, r + h + 1)):
                    for cc in range(max(0, c - h), min(C, c + h + 1)):
                        if known[rr, cc]:
                            cnt += 1
                if cnt <= need:
                    continue
                for d in range(D):
                    m = 0
                    for rr in range(max(0, r - h), min(R, r + h + 1)):
                        for cc in range(max(0, c - h), min(C, c + h + 1)):
                            if known[rr, cc]:
                                buf[m] = img[rr, cc, d]
                                m += 1
                    new_img[r, c, d] = np.median(buf[:m])
                new_known[r, c] = True
        img[:] = new_img
        known[:] = new_known
    return img, known


def moving_median_fill(img, known, width: int = 11, min_frac: float = 0.05,
                       n_iter: int = MEDIAN_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """First-pass fill of a (rows, cols, n_dist) image; returns (image, known) copies."""
    img = np.array(img, np.float64)
    known = np.array(known, bool)
    return _moving_median(img, known, int(width), float(min_frac), int(n_iter))


def tile_halo(window: int = 21, train: int = 51, median_width: int = 11,
              n_iter: int = MEDIAN_ITERATIONS) -> int:
    """Halo (in cells of the ring image) that a tile of the infill needs around its core.

    A missing core cell is filled by the region of some missing pixel ``q`` at most
    ``window // 2`` cells away (its own region, or an earlier one that covered it). That
    region is predicted from training translates whose cells lie at most ``train // 2``
    from ``q``, and their first-pass values depend on the input cells at most
    ``n_iter * (median_width // 2)`` further away (each median pass reaches
    ``median_width // 2`` cells). Hence::

        halo = n_iter * (median_width // 2) + train // 2 + window // 2

    (70 cells with the paper's widths 21, 51, 11). Infills made earlier in the order by
    regions outside the tile are *not* within reach of this bound (see
    ``dustmaps_ext_build.decaps.assemble``).
    """
    return int(n_iter) * (int(median_width) // 2) + int(train) // 2 + int(window) // 2


def _great_circle_order(pixels, nside, centre_lb):
    l, b = hp.pix2ang(nside, pixels, nest=True, lonlat=True)
    l0, b0 = np.radians(centre_lb[0]), np.radians(centre_lb[1])
    lr, br = np.radians(l), np.radians(b)
    cosd = np.sin(br) * math.sin(b0) + np.cos(br) * math.cos(b0) * np.cos(lr - l0)
    dist = np.arccos(np.clip(cosd, -1, 1))
    return np.lexsort((pixels, dist))


def infill_maps(pixels, nside: int, maps, missing, *, window: int = 21, train: int = 51,
                median_width: int = 11, seed: int = 0, centre_lb=(301.0, 0.0),
                ridge: float = 1e-3, min_train: int | None = None, col_origin: int = 0):
    """Infill the missing pixels of a mean map and its sample maps.

    Parameters
    ----------
    pixels : array_like of int, shape (n_pix,)
        NESTED pixels of the map (any order).
    nside : int
    maps : array_like, shape (n_maps, n_pix, n_dist)
        ``maps[0]`` is the mean map (conditional mean), ``maps[1:]`` are sample maps
        (conditional draws). Values of missing pixels are ignored.
    missing : array_like of bool, shape (n_pix,)
        Pixels to infill (fewer than 10 stars).
    window, train, median_width : int
        Widths (odd, in pixels) of the region of interest, the training region and the
        first-pass median.
    seed : int
        Seed of the draws.
    centre_lb : (float, float)
        Infill order: increasing great-circle distance from this point (deg).
    ridge : float
        Diagonal regularisation of the covariance, relative to its mean variance.
    min_train : int, optional
        Fewest training samples needed (default: ``window``).
    col_origin : int
        Ring position of the image's first column (:func:`ring_grid`, :func:`ring_origin`);
        the image must not cut the footprint there.

    Returns
    -------
    filled : numpy.ndarray, shape (n_maps, n_pix, n_dist)
    infilled : numpy.ndarray of bool, shape (n_pix,)
        Missing pixels that received a value (NaN is left where none could be given).
    """
    pixels = np.asarray(pixels, np.int64)
    maps = np.asarray(maps, np.float64)
    missing = np.asarray(missing, bool)
    if maps.ndim != 3 or maps.shape[1] != pixels.size:
        raise ValueError("maps must have shape (n_maps, n_pix, n_dist)")
    if missing.shape != pixels.shape:
        raise ValueError("missing must have one flag per pixel")
    for name, w in (("window", window), ("train", train), ("median_width", median_width)):
        if w < 1 or w % 2 == 0:
            raise ValueError(f"{name} must be a positive odd integer")
    if train < window:
        raise ValueError("train must be at least window")
    min_train = window if min_train is None else int(min_train)
    n_maps, n_pix, n_dist = maps.shape
    filled = maps.copy()
    if not missing.any():
        return filled, np.zeros(n_pix, bool)
    row, col = ring_grid(pixels, nside, col_origin)
    pad = train // 2 + window // 2
    r0, c0 = row.min() - pad, col.min() - pad
    R, C = row.max() - r0 + pad + 1, col.max() - c0 + pad + 1
    rr, cc = row - r0, col - c0
    known0 = np.zeros((R, C), bool)
    known0[rr, cc] = ~missing
    order = _great_circle_order(pixels[missing], nside, centre_lb)
    miss_idx = np.flatnonzero(missing)[order]
    hw, ht = window // 2, train // 2
    for m in range(n_maps):
        img = np.full((R, C, n_dist), np.nan)
        img[rr, cc] = np.where(missing[:, None], np.nan, maps[m])
        pre, pre_known = moving_median_fill(img, known0, median_width)
        cur = np.where(known0[..., None], img, np.nan)
        cur_known = known0.copy()
        for p in miss_idx:
            r, c = rr[p], cc[p]
            if cur_known[r, c]:
                continue
            reg = (slice(r - hw, r + hw + 1), slice(c - hw, c + hw + 1))
            k_mask = cur_known[reg].ravel()
            m_mask = ~k_mask
            # translates of the region inside the training square, all known after pass 1
            shifts = [(dr, dc) for dr in range(-(ht - hw), ht - hw + 1)
                      for dc in range(-(ht - hw), ht - hw + 1)
                      if pre_known[r + dr - hw:r + dr + hw + 1, c + dc - hw:c + dc + hw + 1].all()]
            n_miss = int(m_mask.sum())
            if len(shifts) >= min_train:
                X = np.stack([pre[r + dr - hw:r + dr + hw + 1, c + dc - hw:c + dc + hw + 1]
                              .reshape(-1, n_dist) for dr, dc in shifts])  # (S, P, D)
                rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(pixels[p]), m])
                z = rng.standard_normal(n_miss)  # the same draws in every distance slice
                vals = np.empty((n_miss, n_dist))
                known_vals = cur[reg].reshape(-1, n_dist)[k_mask]
                for d in range(n_dist):
                    vals[:, d] = _conditional(X[:, :, d], k_mask, known_vals[:, d],
                                              None if m == 0 else z, ridge)
            else:
                vals = pre[reg].reshape(-1, n_dist)[m_mask]
            block = cur[reg].reshape(-1, n_dist)
            block[m_mask] = vals
            cur[reg] = block.reshape(cur[reg].shape)
            kb = cur_known[reg].ravel()
            kb[m_mask] = np.all(np.isfinite(vals), axis=1)
            cur_known[reg] = kb.reshape(cur_known[reg].shape)
        filled[m, missing] = cur[rr[missing], cc[missing]]
    infilled = missing & np.all(np.isfinite(filled[0]), axis=1)
    return filled, infilled


def _conditional(X, k_mask, x_known, z, ridge):
    """Conditional mean (z None) or draw of the missing entries of a Gaussian vector."""
    mu = X.mean(axis=0)
    Xc = X - mu
    cov = Xc.T @ Xc / max(1, X.shape[0] - 1)
    scale = float(np.mean(np.diag(cov)))
    cov[np.diag_indices_from(cov)] += ridge * scale + 1e-12
    m_mask = ~k_mask
    if not k_mask.any():
        cond_mu = mu[m_mask]
        cond_cov = cov[np.ix_(m_mask, m_mask)]
    else:
        Ckk = cov[np.ix_(k_mask, k_mask)]
        Cmk = cov[np.ix_(m_mask, k_mask)]
        Lk = np.linalg.cholesky(Ckk)
        A = np.linalg.solve(Lk, Cmk.T)          # Lk^-1 Ckm
        r = np.linalg.solve(Lk, x_known - mu[k_mask])
        cond_mu = mu[m_mask] + A.T @ r
        cond_cov = cov[np.ix_(m_mask, m_mask)] - A.T @ A
    if z is None:
        return cond_mu
    cond_cov = 0.5 * (cond_cov + cond_cov.T)
    w, V = np.linalg.eigh(cond_cov)
    return cond_mu + V @ (np.sqrt(np.clip(w, 0, None)) * (V.T @ z))
