"""Per-star posteriors for tests, benchmarks and validation.

* :func:`gaussian_mixture_boxes` -- bounding-box images of Gaussian mixtures on the grid;
* :func:`synthetic_step_pixel` -- one pixel whose stars sit on a known step profile;
* :func:`mock_catalogue` -- stars drawn from the simulated galaxy of :mod:`build_tools.galaxy`
  with realistic posteriors: a measured (mu, E) scattered from the truth, Gaussian widths that
  grow with distance, and for a fraction of stars a second, "giant" mode further away (the
  dwarf/giant degeneracy), plus the metadata that the quality cuts use (including a few bad
  fits and M dwarfs that the cuts must remove).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .inputs import DM_MIN, DM_STEP, E_STEP, N_DM, N_E, StarPosteriors

__all__ = ["gaussian_mixture_boxes", "synthetic_step_pixel", "mock_catalogue"]


@numba.njit(cache=True, nogil=True)
def _box_limits(mu_c, e_c, s_mu, s_e, wt, n_sigma):
    n, m = mu_c.shape
    x0 = np.zeros(n, np.int32)
    nx = np.zeros(n, np.int32)
    y0 = np.zeros(n, np.int32)
    ny = np.zeros(n, np.int32)
    for k in range(n):
        xl, xh, yl, yh = N_DM, -1, N_E, -1
        for j in range(m):
            if wt[k, j] <= 0:
                continue
            a = int(math.floor((mu_c[k, j] - n_sigma * s_mu[k, j] - DM_MIN) / DM_STEP))
            bb = int(math.ceil((mu_c[k, j] + n_sigma * s_mu[k, j] - DM_MIN) / DM_STEP))
            c = int(math.floor((e_c[k, j] - n_sigma * s_e[k, j]) / E_STEP))
            d = int(math.ceil((e_c[k, j] + n_sigma * s_e[k, j]) / E_STEP))
            xl = min(xl, a)
            xh = max(xh, bb)
            yl = min(yl, c)
            yh = max(yh, d)
        xl = max(0, min(xl, N_DM - 1))
        xh = max(xl, min(xh, N_DM - 1))
        yl = max(0, min(yl, N_E - 1))
        yh = max(yl, min(yh, N_E - 1))
        x0[k] = xl
        nx[k] = xh - xl + 1
        y0[k] = yl
        ny[k] = yh - yl + 1
    return x0, nx, y0, ny


@numba.njit(cache=True, nogil=True)
def _fill_boxes(mu_c, e_c, s_mu, s_e, wt, x0, nx, y0, ny, off, total):
    n, m = mu_c.shape
    data = np.zeros(total, np.float32)
    for k in range(n):
        p = off[k]
        tot = 0.0
        for i in range(nx[k]):
            mu = DM_MIN + DM_STEP * (x0[k] + i)
            for jj in range(ny[k]):
                e = E_STEP * (y0[k] + jj)
                v = 0.0
                for j in range(m):
                    if wt[k, j] <= 0:
                        continue
                    zm = (mu - mu_c[k, j]) / s_mu[k, j]
                    ze = (e - e_c[k, j]) / s_e[k, j]
                    v += wt[k, j] / (s_mu[k, j] * s_e[k, j]) * math.exp(-0.5 * (zm * zm + ze * ze))
                data[p + i * ny[k] + jj] = v
                tot += v
        if tot > 0:
            for q in range(nx[k] * ny[k]):
                data[p + q] = data[p + q] / tot
    return data


def gaussian_mixture_boxes(mu_c, ebv_c, sigma_mu, sigma_ebv, weights=None, n_sigma: float = 4.0):
    """Bounding-box images of Gaussian mixtures in (mu, E), each normalised to sum 1.

    Parameters
    ----------
    mu_c, ebv_c, sigma_mu, sigma_ebv : array_like, shape (n_star,) or (n_star, n_modes)
        Centres and widths of each mode (mag).
    weights : array_like, same shape, optional
        Mode weights (default equal).
    n_sigma : float
        Half-size of each mode's box in sigmas.

    Returns
    -------
    tuple
        ``(x0, nx, y0, ny, offsets, data)`` as in :class:`.inputs.StarPosteriors`.
    """
    arrs = [np.atleast_1d(np.asarray(v, np.float64)) for v in (mu_c, ebv_c, sigma_mu, sigma_ebv)]
    arrs = [a[:, None] if a.ndim == 1 else a for a in arrs]
    mu_c, ebv_c, sigma_mu, sigma_ebv = np.broadcast_arrays(*arrs)
    wt = np.ones_like(mu_c) if weights is None else np.broadcast_to(
        np.asarray(weights, np.float64).reshape(mu_c.shape[0], -1), mu_c.shape)
    if np.any(sigma_mu <= 0) or np.any(sigma_ebv <= 0):
        raise ValueError("widths must be positive")
    args = [np.ascontiguousarray(a) for a in (mu_c, ebv_c, sigma_mu, sigma_ebv, wt)]
    x0, nx, y0, ny = _box_limits(*args, float(n_sigma))
    sizes = nx.astype(np.int64) * ny
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    data = _fill_boxes(*args, x0, nx, y0, ny, off, int(sizes.sum()))
    return x0, nx, y0, ny, off, data


def synthetic_step_pixel(n_star: int, y_true, rng: np.random.Generator, *,
                         sigma_mu=(0.2, 0.6), sigma_ebv=(0.03, 0.08), mu_range=(5.0, 17.0),
                         n_sigma: float = 4.0, l_deg: float = 300.0, b_deg: float = 0.0):
    """A pixel of stars with 2D Gaussian posteriors around a known step profile.

    Each star's true distance modulus is uniform in ``mu_range``, its true reddening is the
    profile at the nearest distance edge (``0.01 * y_true``), and its posterior is a Gaussian
    whose centre is the truth scattered by the posterior's own widths (drawn uniformly in the
    given ranges).

    Returns
    -------
    tuple
        ``(StarPosteriors, truth)`` with ``truth`` a dict of ``mu`` and ``ebv`` per star.
    """
    y_true = np.asarray(y_true, np.int64)
    mu = rng.uniform(*mu_range, n_star)
    ix = np.clip(np.rint((mu - DM_MIN) / DM_STEP).astype(np.int64), 0, N_DM - 1)
    ebv = 0.01 * y_true[ix]
    s_mu = rng.uniform(*sigma_mu, n_star)
    s_e = rng.uniform(*sigma_ebv, n_star)
    mu_obs = mu + s_mu * rng.standard_normal(n_star)
    e_obs = np.maximum(ebv + s_e * rng.standard_normal(n_star), 0.0)
    x0, nx, y0, ny, off, data = gaussian_mixture_boxes(mu_obs, e_obs, s_mu, s_e,
                                                        n_sigma=n_sigma)
    stars = StarPosteriors(np.full(n_star, l_deg), np.full(n_star, b_deg), x0, nx, y0, ny, off,
                           data, np.ones(n_star), np.full(n_star, 8), np.ones(n_star),
                           np.full(n_star, 0.1))
    return stars, {"mu": mu, "ebv": ebv}
