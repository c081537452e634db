"""Minimum and maximum reliable distance modulus of a pixel (Zucker et al. 2025, Appendix B).

The pixel's star posteriors (as used in its line-of-sight fit, i.e. multiplied by their pixel
weights) are summed over stars and reddening to give a distribution in distance modulus.
Its cumulative sum stepping forward from the first bin (mu = 4) gives the minimum reliable
distance modulus, the first bin where it exceeds ``p_min = 0.5``; stepping backward from the
last bin gives the maximum, the first bin (from the far end) where it exceeds ``p_max = 5``.
When a threshold is never reached the value is NaN.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["distance_probability", "reliable_distance_range"]


@numba.njit(cache=True, nogil=True)
def _dm_prob(x0, nx, ny, off, data, star, weight, n_dist):
    out = np.zeros(n_dist)
    for i in range(star.size):
        k = star[i]
        w = weight[i]
        p = off[k]
        for xi in range(nx[k]):
            s = 0.0
            for j in range(ny[k]):
                s += data[p]
                p += 1
            out[x0[k] + xi] += w * s
    return out


def distance_probability(stars, star_index, weights=None, n_dist: int = 120) -> np.ndarray:
    """Weighted sum of the stars' posteriors over reddening, per distance bin."""
    idx = np.asarray(star_index, np.int64)
    w = np.ones(idx.size) if weights is None else np.asarray(weights, np.float64)
    if w.shape != idx.shape:
        raise ValueError("weights must have one value per star")
    return _dm_prob(stars.x0.astype(np.int64), stars.nx.astype(np.int64),
                    stars.ny.astype(np.int64), stars.offsets, stars.data, idx, w, n_dist)


def reliable_distance_range(p_dm, dm_edges, p_min: float = 0.5,
                            p_max: float = 5.0) -> tuple[float, float]:
    """Minimum and maximum reliable distance modulus from the distance distribution.

    Parameters
    ----------
    p_dm : array_like, shape (n_dist,)
        Summed probability in each distance bin (:func:`distance_probability`).
    dm_edges : array_like, shape (n_dist,)
        Distance modulus of each bin.
    p_min, p_max : float
        Forward and backward cumulative thresholds (0.5 and 5 in the paper).

    Returns
    -------
    (float, float)
        ``(dm_min, dm_max)``; NaN where the threshold is never exceeded.
    """
    p = np.asarray(p_dm, np.float64)
    edges = np.asarray(dm_edges, np.float64)
    if p.shape != edges.shape:
        raise ValueError("p_dm and dm_edges must have the same shape")
    fwd = np.cumsum(p)
    bwd = np.cumsum(p[::-1])
    i = np.flatnonzero(fwd > p_min)
    j = np.flatnonzero(bwd > p_max)
    dm_min = float(edges[i[0]]) if i.size else float("nan")
    dm_max = float(edges[::-1][j[0]]) if j.size else float("nan")
    return dm_min, dm_max
