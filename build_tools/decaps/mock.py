"""Per-star posteriors for tests, benchmarks and validation.

* :func:`gaussian_mixture_boxes` -- bounding-box images of Gaussian mixtures on the grid;
* :func:`synthetic_step_pixel` -- one pixel whose stars sit on a known step profile;
* :func:`mock_catalogue` -- stars drawn from the simulated galaxy of :mod:`dustmaps_ext_build.galaxy`
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


def mock_catalogue(galaxy, n: int, rng: np.random.Generator, *, l_range_deg, b_range_deg,
                   d_range_kpc=(0.1, 8.0), sigma_mu=(0.2, 0.6), sigma_ebv=(0.03, 0.08),
                   p_giant: float = 0.25, p_bad_fit: float = 0.03, p_m_dwarf: float = 0.05,
                   p_far: float = 0.01, p_unphysical: float = 0.02, n_sigma: float = 4.0):
    """Stars drawn from the simulated galaxy with realistic per-star posteriors.

    Each star's posterior is a Gaussian in (mu, E) centred on its true distance modulus and
    reddening scattered by the posterior's widths (sigma_mu uniform in ``sigma_mu`` growing
    with distance, sigma_E uniform in ``sigma_ebv``), the distance centre moved by the volume
    prior of the stellar distance law (+ 3 ln(10) / 5 sigma_mu^2). With probability ``p_giant`` a second,
    weaker mode (weight 0.1-0.4) sits 3-5 mag further at the same reddening: the dwarf/giant
    degeneracy. Contaminants that the §4.2.1 cuts must remove: bad fits (chi2 far in the
    tail, posterior at a random place), M dwarfs (median initial mass < 0.5 Msun, posterior
    biased), spurious far fits (2.5th percentile distance > 30 kpc) and stars with the
    unphysical nearby high-reddening mode (70% of the mass at mu ~ 6, E ~ 3.5).

    Returns
    -------
    (StarPosteriors, dict)
        The stars and the truth: ``l``, ``b``, ``d``, ``mu``, ``ebv_true``, ``kind``
        (0 good, 1 bad fit, 2 M dwarf, 3 far, 4 unphysical).
    """
    from dustmaps_ext_build.galaxy import draw_stars

    s = draw_stars(galaxy, n, rng, l_range_deg=l_range_deg, b_range_deg=b_range_deg,
                   d_range_kpc=d_range_kpc)
    mu = 5.0 * np.log10(s["d"] * 100.0)
    ebv = s["ebv_true"]
    frac = np.clip((mu - 6.0) / 10.0, 0.0, 1.0)
    s_mu = sigma_mu[0] + (sigma_mu[1] - sigma_mu[0]) * np.clip(frac + 0.2 * rng.random(n), 0, 1)
    s_e = rng.uniform(*sigma_ebv, n)
    # A posterior, not a likelihood: with the volume prior p(mu) ~ d^3 ~ exp(3 ln10 / 5 mu)
    # of the stellar distance law, a Gaussian measurement centred on mu_meas gives a posterior
    # centred on mu_meas + (3 ln10 / 5) sigma^2 (without it the recovered profiles are biased
    # high by the slope of the profile times that shift).
    mu_obs = mu + s_mu * rng.standard_normal(n) + (3.0 * np.log(10.0) / 5.0) * s_mu ** 2
    e_obs = np.maximum(ebv + s_e * rng.standard_normal(n), 0.0)
    giant = rng.random(n) < p_giant
    w2 = np.where(giant, rng.uniform(0.1, 0.4, n), 0.0)
    mu2 = mu_obs + rng.uniform(3.0, 5.0, n)
    kind = np.zeros(n, np.int64)
    u = rng.random(n)
    edges = np.cumsum([p_bad_fit, p_m_dwarf, p_far, p_unphysical])
    kind[u < edges[3]] = 4
    kind[u < edges[2]] = 3
    kind[u < edges[1]] = 2
    kind[u < edges[0]] = 1
    n_bands = rng.integers(4, 14, n)
    chi2_best = rng.chisquare(n_bands).astype(np.float64)
    m_init = rng.uniform(0.6, 3.0, n)
    bad = kind == 1
    chi2_best[bad] = n_bands[bad] * rng.uniform(5.0, 20.0, bad.sum())
    mu_obs[bad] = rng.uniform(5.0, 16.0, bad.sum())
    e_obs[bad] = rng.uniform(0.0, 4.0, bad.sum())
    dwarf = kind == 2
    m_init[dwarf] = rng.uniform(0.2, 0.5, dwarf.sum())
    mu_obs[dwarf] -= 1.0  # the isochrone bias puts them too close
    far = kind == 3
    mu_obs[far] = rng.uniform(18.6, 18.85, far.sum())
    s_mu[far] = 0.2
    unphys = kind == 4
    mode_mu = np.where(unphys, rng.uniform(5.5, 7.0, n), mu2)
    mode_e = np.where(unphys, rng.uniform(3.0, 4.0, n), e_obs)
    w2 = np.where(unphys, 2.33, w2)  # 70% of the mass in the unphysical mode
    mu_obs = np.clip(mu_obs, DM_MIN, DM_MIN + DM_STEP * (N_DM - 1))
    mode_mu = np.clip(mode_mu, DM_MIN, DM_MIN + DM_STEP * (N_DM - 1))
    centres_mu = np.stack([mu_obs, mode_mu], axis=1)
    centres_e = np.stack([e_obs, mode_e], axis=1)
    widths_mu = np.stack([s_mu, s_mu], axis=1)
    widths_e = np.stack([s_e, s_e], axis=1)
    weights = np.stack([np.ones(n), w2], axis=1)
    x0, nx, y0, ny, off, data = gaussian_mixture_boxes(centres_mu, centres_e, widths_mu,
                                                        widths_e, weights, n_sigma=n_sigma)
    d_p2_5 = 10.0 ** ((mu_obs - 2.0 * s_mu) / 5.0 - 2.0)
    stars = StarPosteriors(s["l"], s["b"], x0, nx, y0, ny, off, data, chi2_best, n_bands,
                           m_init, d_p2_5)
    truth = {"l": s["l"], "b": s["b"], "d": s["d"], "mu": mu, "ebv_true": ebv, "kind": kind}
    return stars, truth
