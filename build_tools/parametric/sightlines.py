"""Adaptive HEALPix sightlines, their neighbouring stars and the weights of Wang et al. (2025).

* :func:`adaptive_sightlines` splits the sky into HEALPix pixels of nside 64 to 1024 so
  that every pixel holds at least ``threshold`` stars (paper §3.1, bottom-up scheme).
* :func:`decentration_weight` is eq. 1, ``1 / (1 + exp(alpha theta / A_r + beta))``.
* :func:`uncertainty_weights` is eq. 10-13; the total weight (eq. 14) is their product
  with the decentration weight.

Pixels are identified by (nside, NESTED index) and, where one integer is handier, by the
NUNIQ number ``4 nside^2 + ipix``.
"""

from __future__ import annotations

import math

import healpy as hp
import numpy as np

from dustmaps_ext.healpix import check_nside

__all__ = [
    "adaptive_sightlines", "nuniq", "from_nuniq", "resolution_deg", "decentration_weight",
    "uncertainty_weights", "stars_nested_index", "sightline_centres",
]


def nuniq(nside, ipix) -> np.ndarray:
    """NUNIQ numbers ``4 nside^2 + ipix`` of NESTED pixels."""
    nside = np.asarray(nside, dtype=np.int64)
    return 4 * nside * nside + np.asarray(ipix, dtype=np.int64)


def from_nuniq(uniq) -> tuple[np.ndarray, np.ndarray]:
    """(nside, NESTED ipix) of NUNIQ numbers."""
    uniq = np.asarray(uniq, dtype=np.int64)
    order = (np.floor(np.log2(uniq / 4.0)) // 2).astype(np.int64)
    nside = np.left_shift(np.int64(1), order)
    return nside, uniq - 4 * nside * nside


def resolution_deg(nside) -> np.ndarray:
    """Angular resolution A_r (deg): the square root of the pixel area."""
    return np.degrees(np.sqrt(4.0 * math.pi / (12.0 * np.asarray(nside, dtype=np.float64) ** 2)))


def stars_nested_index(l_deg, b_deg, nside: int) -> np.ndarray:
    """NESTED pixel index of each star at ``nside``."""
    return hp.ang2pix(check_nside(nside), np.asarray(l_deg, float), np.asarray(b_deg, float),
                      nest=True, lonlat=True).astype(np.int64)


def adaptive_sightlines(ipix_max, *, threshold: int = 20, nside_max: int = 1024,
                        nside_min: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive multi-resolution pixels holding at least ``threshold`` stars where possible.

    The paper's bottom-up rule: a pixel with fewer than ``threshold`` stars is merged with its
    three siblings into their parent, level by level from ``nside_max`` to ``nside_min``.
    Because merging a parent absorbs the pixels already kept below it, the outcome is the
    same as the top-down reading used here: starting from the ``nside_min`` pixels that hold
    stars, a pixel is split into its four children when every child holds at least
    ``threshold`` stars, and kept as one sightline otherwise. ``nside_min`` pixels with fewer
    stars than the threshold stay as they are (they still get neighbouring stars).

    Parameters
    ----------
    ipix_max : array_like of int
        NESTED pixel index of every star at ``nside_max``.
    threshold : int
        Minimum number of stars per sightline (20 in the paper).
    nside_max, nside_min : int
        Finest and coarsest resolutions (1024 and 64 in the paper).

    Returns
    -------
    nside : numpy.ndarray of int64
        Resolution of each sightline.
    ipix : numpy.ndarray of int64
        NESTED index of each sightline at its own nside.
    n_stars : numpy.ndarray of int64
        Stars inside each sightline pixel.
        Sightlines are sorted by NESTED position (equivalently by NUNIQ within a level).
    """
    nside_max = check_nside(nside_max, "nside_max")
    nside_min = check_nside(nside_min, "nside_min")
    if nside_min > nside_max:
        raise ValueError("nside_min must not exceed nside_max")
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    ipix_max = np.asarray(ipix_max, dtype=np.int64)
    if ipix_max.size and (ipix_max.min() < 0 or ipix_max.max() >= 12 * nside_max ** 2):
        raise ValueError(f"pixel indices out of range for nside {nside_max}")
    n_levels = int(round(math.log2(nside_max // nside_min)))
    # star counts per occupied pixel at every level, as sorted (pixels, counts)
    counts = {}
    for lev in range(n_levels + 1):
        pix, cnt = np.unique(ipix_max >> (2 * (n_levels - lev)), return_counts=True)
        counts[lev] = (pix, cnt)

    def count_of(lev, pix):
        upix, ucnt = counts[lev]
        pos = np.searchsorted(upix, pix)
        pos_c = np.minimum(pos, upix.size - 1)
        found = (pos < upix.size) & (upix[pos_c] == pix)
        return np.where(found, ucnt[pos_c], 0)

    out_nside, out_pix, out_n = [], [], []
    active = counts[0][0]
    for lev in range(n_levels + 1):
        nside = nside_min << lev
        if lev == n_levels:
            split = np.zeros(active.size, dtype=bool)
        else:
            children = (active[:, None] << 2) + np.arange(4)[None, :]
            split = np.all(count_of(lev + 1, children) >= threshold, axis=1)
        keep = active[~split]
        out_nside.append(np.full(keep.size, nside, dtype=np.int64))
        out_pix.append(keep)
        out_n.append(count_of(lev, keep))
        if lev < n_levels:
            active = ((active[split][:, None] << 2) + np.arange(4)[None, :]).ravel()
    nside = np.concatenate(out_nside)
    ipix = np.concatenate(out_pix)
    n = np.concatenate(out_n).astype(np.int64)
    # sort by position on the sky: the first nside_max child of each pixel
    first_child = ipix << (2 * np.round(np.log2(nside_max // nside)).astype(np.int64))
    order = np.argsort(first_child, kind="stable")
    return nside[order], ipix[order], n[order]


def sightline_centres(nside, ipix) -> tuple[np.ndarray, np.ndarray]:
    """Galactic (l, b) in deg of the centres of NESTED pixels of mixed nside."""
    nside = np.asarray(nside, dtype=np.int64)
    ipix = np.asarray(ipix, dtype=np.int64)
    l = np.empty(ipix.size)
    b = np.empty(ipix.size)
    for ns in np.unique(nside):
        sel = nside == ns
        l[sel], b[sel] = hp.pix2ang(int(ns), ipix[sel], nest=True, lonlat=True)
    return l, b


def decentration_weight(theta_deg, resolution: float, alpha: float = 7.5,
                        beta: float = -5.0) -> np.ndarray:
    """Eq. 1 of Wang et al. (2025): ``1 / (1 + exp(alpha theta / A_r + beta))``.

    Parameters
    ----------
    theta_deg : array_like
        Angular distance of each star from the sightline centre (deg).
    resolution : float
        Angular resolution A_r of the sightline pixel (deg).
    alpha, beta : float
        Shape parameters (7.5 and -5 in the paper, which balance the weight inside and
        outside one resolution element).
    """
    if resolution <= 0:
        raise ValueError("resolution must be positive")
    t = alpha * np.asarray(theta_deg, dtype=np.float64) / resolution + beta
    return 0.5 * (1.0 - np.tanh(0.5 * t))  # = 1/(1+exp(t)) without overflow


def uncertainty_weights(ebv_err, distance, distance_err_lo, distance_err_hi) -> np.ndarray:
    """Product of the normalised E(B-V)- and distance-error weights (eq. 10-13).

    * E(B-V): ``1 / err^2`` clipped to the values of err = 0.1 and 0.01 mag, mapped
      linearly onto [0.1, 1] (eq. 10-11).
    * distance: ``1 / (relative error)`` with relative error ``(lo + hi) / 2 / d``, clipped
      to the values of 50% and 0.5%, mapped linearly onto [0.1, 1] (eq. 12). The paper's
      printed eq. 13 normalises with the *squared* limits (1/0.5^2 and 1/0.005^2), which
      would put every weight near 0.1 (and some below it) and contradicts its text ("the
      weights ... normalized to a range between 10% and 100%"); the text is followed here.

    Returns
    -------
    numpy.ndarray
        ``w_ebv * w_distance``, each factor in [0.1, 1].
    """
    err = np.asarray(ebv_err, dtype=np.float64)
    w_e = np.clip(1.0 / err ** 2, 1.0 / 0.1 ** 2, 1.0 / 0.01 ** 2)
    w_e = (w_e - 1.0 / 0.1 ** 2) / (1.0 / 0.01 ** 2 - 1.0 / 0.1 ** 2) * 0.9 + 0.1
    d = np.asarray(distance, dtype=np.float64)
    rel = 0.5 * (np.asarray(distance_err_lo, float) + np.asarray(distance_err_hi, float)) / d
    with np.errstate(divide="ignore"):
        w_d = np.clip(1.0 / rel, 1.0 / 0.5, 1.0 / 0.005)
    w_d = (w_d - 1.0 / 0.5) / (1.0 / 0.005 - 1.0 / 0.5) * 0.9 + 0.1
    return w_e * w_d
