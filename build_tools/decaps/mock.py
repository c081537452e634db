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
def _box_limits(mu_c, e_c, s_mu, s_e, wt, slope, lo, hi, n_sigma):
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
            # the mode times its prior exp(slope * mu) is a Gaussian moved by slope * s^2
            centre = mu_c[k, j] + slope[k, j] * s_mu[k, j] * s_mu[k, j]
            cell_lo = int(math.ceil((lo[k, j] - DM_MIN) / DM_STEP - 1e-9))
            cell_hi = int(math.floor((hi[k, j] - DM_MIN) / DM_STEP + 1e-9))
            a = max(int(math.floor((centre - n_sigma * s_mu[k, j] - DM_MIN) / DM_STEP)), cell_lo)
            bb = min(int(math.ceil((centre + n_sigma * s_mu[k, j] - DM_MIN) / DM_STEP)), cell_hi)
            a = min(a, cell_hi)  # a mode beyond its limits keeps the nearest allowed cells
            bb = max(bb, a)
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
def _mode_value(mu, e, mu_c, e_c, s_mu, s_e, slope, height, lo, hi):
    """A mode's unnormalised density at (mu, e): Gaussian times its distance prior."""
    if mu < lo - 1e-9 or mu > hi + 1e-9:
        return 0.0
    zm = (mu - mu_c) / s_mu
    ze = (e - e_c) / s_e
    d_kpc = 10.0 ** (mu / 5.0 - 2.0)
    return math.exp(-0.5 * (zm * zm + ze * ze) + slope * (mu - mu_c) - height * d_kpc)


@numba.njit(cache=True, nogil=True)
def _fill_boxes(mu_c, e_c, s_mu, s_e, wt, slope, height, lo, hi, x0, nx, y0, ny, off, total):
    n, m = mu_c.shape
    data = np.zeros(total, np.float32)
    mass = np.zeros(m)
    for k in range(n):
        p = off[k]
        # each mode holds its weight's share of the star's mass on the grid
        for j in range(m):
            mass[j] = 0.0
            if wt[k, j] <= 0:
                continue
            for i in range(nx[k]):
                mu = DM_MIN + DM_STEP * (x0[k] + i)
                for jj in range(ny[k]):
                    mass[j] += _mode_value(mu, E_STEP * (y0[k] + jj), mu_c[k, j], e_c[k, j],
                                           s_mu[k, j], s_e[k, j], slope[k, j], height[k, j],
                                           lo[k, j], hi[k, j])
        tot = 0.0
        for i in range(nx[k]):
            mu = DM_MIN + DM_STEP * (x0[k] + i)
            for jj in range(ny[k]):
                e = E_STEP * (y0[k] + jj)
                v = 0.0
                for j in range(m):
                    if wt[k, j] <= 0 or mass[j] <= 0:
                        continue
                    v += wt[k, j] / mass[j] * _mode_value(
                        mu, e, mu_c[k, j], e_c[k, j], s_mu[k, j], s_e[k, j], slope[k, j],
                        height[k, j], lo[k, j], hi[k, j])
                data[p + i * ny[k] + jj] = v
                tot += v
        if tot > 0:
            for q in range(nx[k] * ny[k]):
                data[p + q] = data[p + q] / tot
    return data


def gaussian_mixture_boxes(mu_c, ebv_c, sigma_mu, sigma_ebv, weights=None, n_sigma: float = 4.0,
                           *, prior_slope=0.0, prior_height=0.0, mu_limits=(-np.inf, np.inf)):
    """Bounding-box images of Gaussian mixtures in (mu, E), each normalised to sum 1.

    Each mode is a Gaussian likelihood times an optional distance prior,
    ``exp(prior_slope * mu - prior_height * d_kpc(mu))`` for ``mu`` inside ``mu_limits``
    and zero outside; on the grid (``E >= 0``) each mode holds the share ``weights`` of
    the star's mass. The stellar distance law of
    :func:`dustmaps_ext_build.galaxy.draw_stars`, ``p(d) ~ d^2 exp(-|z| / h)`` between two
    distances, is ``prior_slope = 3 ln(10) / 5``, ``prior_height = |sin b| / h`` and the
    limits the distance moduli of the range.

    Parameters
    ----------
    mu_c, ebv_c, sigma_mu, sigma_ebv : array_like, shape (n_star,) or (n_star, n_modes)
        Centres and widths of each mode's Gaussian (mag).
    weights : array_like, same shape, optional
        Mode weights (default equal).
    n_sigma : float
        Half-size of each mode's box in sigmas.
    prior_slope, prior_height : array_like, broadcast to the modes' shape
        The distance prior of each mode (default none: 0).
    mu_limits : (array_like, array_like)
        Lowest and highest distance modulus of each mode (default unbounded).

    Returns
    -------
    tuple
        ``(x0, nx, y0, ny, offsets, data)`` as in :class:`.inputs.StarPosteriors`.
    """
    arrs = [np.atleast_1d(np.asarray(v, np.float64)) for v in (mu_c, ebv_c, sigma_mu, sigma_ebv)]
    arrs = [a[:, None] if a.ndim == 1 else a for a in arrs]
    mu_c, ebv_c, sigma_mu, sigma_ebv = np.broadcast_arrays(*arrs)
    shape = mu_c.shape
    wt = np.ones(shape) if weights is None else np.broadcast_to(
        np.asarray(weights, np.float64).reshape(shape[0], -1), shape)
    if np.any(sigma_mu <= 0) or np.any(sigma_ebv <= 0):
        raise ValueError("widths must be positive")

    def per_mode(v):
        v = np.asarray(v, np.float64)
        return np.broadcast_to(v.reshape(shape[0], -1) if v.ndim == 1 else v, shape)

    slope, height = per_mode(prior_slope), per_mode(prior_height)
    lo, hi = per_mode(mu_limits[0]), per_mode(mu_limits[1])
    if np.any(lo > hi) or np.any(~np.isfinite(slope)) or np.any(~np.isfinite(height)):
        raise ValueError("mu_limits must be ordered and the prior finite")
    args = [np.ascontiguousarray(a) for a in (mu_c, ebv_c, sigma_mu, sigma_ebv, wt)]
    lims = [np.ascontiguousarray(np.clip(a, DM_MIN - 1.0, DM_MIN + DM_STEP * N_DM + 1.0))
            for a in (lo, hi)]
    x0, nx, y0, ny = _box_limits(*args, np.ascontiguousarray(slope), *lims, float(n_sigma))
    sizes = nx.astype(np.int64) * ny
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    data = _fill_boxes(*args, np.ascontiguousarray(slope), np.ascontiguousarray(height), *lims,
                       x0, nx, y0, ny, off, int(sizes.sum()))
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
                   p_far: float = 0.01, p_unphysical: float = 0.02, n_sigma: float = 4.0,
                   stellar_scale_height_kpc: float = 0.3):
    """Stars drawn from the simulated galaxy with realistic per-star posteriors.

    Each star's posterior is its likelihood times the prior that the stars were drawn from.
    The likelihood is a Gaussian in (mu, E) centred on the star's true distance modulus and
    reddening scattered by its widths (sigma_mu uniform in ``sigma_mu`` growing with
    distance, sigma_E uniform in ``sigma_ebv``); the prior is the stellar distance law of
    :func:`dustmaps_ext_build.galaxy.draw_stars`, ``p(d) ~ d^2 exp(-|z| / h)`` inside
    ``d_range_kpc`` and zero outside, and flat in ``E >= 0``. (So the posterior of a star
    near the far end of the range does not reach beyond it: a posterior moved by the
    volume prior as if the stars went on, ``+ 3 ln(10) / 5 sigma_mu^2``, places the stars
    there too far, and the recovered profiles too low by the profile's slope times that
    shift.) With probability ``p_giant`` a second,
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
                   d_range_kpc=d_range_kpc, stellar_scale_height_kpc=stellar_scale_height_kpc)
    mu = 5.0 * np.log10(s["d"] * 100.0)
    ebv = s["ebv_true"]
    frac = np.clip((mu - 6.0) / 10.0, 0.0, 1.0)
    s_mu = sigma_mu[0] + (sigma_mu[1] - sigma_mu[0]) * np.clip(frac + 0.2 * rng.random(n), 0, 1)
    s_e = rng.uniform(*sigma_ebv, n)
    # The likelihood's centre; the posterior is it times the distance law the stars were
    # drawn from: p(mu) ~ d^3 exp(-d |sin b| / h) = exp(slope mu - height d) inside the range.
    mu_meas = mu + s_mu * rng.standard_normal(n)
    e_obs = ebv + s_e * rng.standard_normal(n)  # the grid's E >= 0 is the flat prior's edge
    slope = 3.0 * np.log(10.0) / 5.0
    height = np.abs(np.sin(np.radians(s["b"]))) / stellar_scale_height_kpc
    # centre of the posterior's Gaussian factor (for the giant mode and the metadata)
    mu_obs = mu_meas + slope * s_mu ** 2
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
    good = kind == 0
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
    # good stars: likelihood x distance law (first mode); the contaminants and the giant
    # mode keep a plain Gaussian at the moved centre
    zero = np.zeros(n)
    centres_mu = np.stack([np.where(good, mu_meas, mu_obs), mode_mu], axis=1)
    centres_e = np.stack([e_obs, mode_e], axis=1)
    widths_mu = np.stack([s_mu, s_mu], axis=1)
    widths_e = np.stack([s_e, s_e], axis=1)
    weights = np.stack([np.ones(n), w2], axis=1)
    mu_lo, mu_hi = 5.0 * np.log10(np.asarray(d_range_kpc, np.float64) * 100.0)
    x0, nx, y0, ny, off, data = gaussian_mixture_boxes(
        centres_mu, centres_e, widths_mu, widths_e, weights, n_sigma=n_sigma,
        prior_slope=np.stack([np.where(good, slope, 0.0), zero], axis=1),
        prior_height=np.stack([np.where(good, height, 0.0), zero], axis=1),
        mu_limits=(np.stack([np.where(good, mu_lo, -np.inf), zero - np.inf], axis=1),
                   np.stack([np.where(good, mu_hi, np.inf), zero + np.inf], axis=1)))
    d_p2_5 = 10.0 ** ((mu_obs - 2.0 * s_mu) / 5.0 - 2.0)
    stars = StarPosteriors(s["l"], s["b"], x0, nx, y0, ny, off, data, chi2_best, n_bands,
                           m_init, d_p2_5)
    truth = {"l": s["l"], "b": s["b"], "d": s["d"], "mu": mu, "ebv_true": ebv, "kind": kind}
    return stars, truth
